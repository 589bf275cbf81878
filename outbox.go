package asyncflow

import (
	"sync"

	"github.com/aviate-labs/agent-go/principal"
)

// outCall is one call waiting for a send worker. A newMessage or an ack
// names its record in rec, so that the retry loop can tell that the
// record's send is still on its way; an ackack belongs to no record.
type outCall struct {
	to     principal.Principal
	method string
	arg    []byte
	rec    recordKey
	// first marks the first send of a record, whose failure is worth a
	// warning: a wrong route shows up there.
	first bool
}

// tracked reports whether c belongs to a record. The zero key names no
// record: the Flow never sends a message of id zero.
func (c outCall) tracked() bool {
	return c.rec != recordKey{}
}

// recordKey names a record of either side: the sender's by its id, the
// receiver's by (caller, id), since the receiver keeps records per caller.
type recordKey struct {
	incoming bool
	from     string
	id       MsgID
}

func outKey(id MsgID) recordKey {
	return recordKey{id: id}
}

func inKey(from principal.Principal, id MsgID) recordKey {
	return recordKey{incoming: true, from: string(from.Raw), id: id}
}

// keySet is a set of record keys, safe for concurrent use.
type keySet struct {
	mu   sync.Mutex
	keys map[recordKey]struct{}
}

// add puts k in the set; it reports false if k was there already.
func (s *keySet) add(k recordKey) bool {
	s.mu.Lock()
	defer s.mu.Unlock()

	if _, ok := s.keys[k]; ok {
		return false
	}
	if s.keys == nil {
		s.keys = make(map[recordKey]struct{})
	}
	s.keys[k] = struct{}{}
	return true
}

func (s *keySet) remove(k recordKey) {
	s.mu.Lock()
	defer s.mu.Unlock()

	delete(s.keys, k)
}

// sendQueue is an unbounded FIFO of calls between the protocol and the
// send workers. Pushing never blocks, so a Deliver that answers with an
// ack can never wait on a worker that waits on the peer. Its length is
// bounded by the messages in flight: each queued call belongs to a record
// in the store or answers one inbound message.
type sendQueue struct {
	mu     sync.Mutex
	cond   *sync.Cond
	calls  []outCall
	head   int
	closed bool
}

func newSendQueue() *sendQueue {
	q := &sendQueue{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// push appends c; after close it drops c.
func (q *sendQueue) push(c outCall) {
	q.mu.Lock()
	defer q.mu.Unlock()

	if q.closed {
		return
	}
	q.calls = append(q.calls, c)
	q.cond.Signal()
}

// pop waits for a call; ok is false once the queue is closed.
func (q *sendQueue) pop() (c outCall, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()

	for q.head == len(q.calls) && !q.closed {
		q.cond.Wait()
	}
	if q.closed {
		return outCall{}, false
	}

	c = q.calls[q.head]
	q.calls[q.head] = outCall{}
	q.head++
	q.compact()
	return c, true
}

// compact moves the waiting calls to the front of the slice once the
// taken ones fill half of it, so that a queue that never quite drains
// does not grow its backing array forever.
func (q *sendQueue) compact() {
	switch {
	case q.head == len(q.calls):
		q.calls, q.head = q.calls[:0], 0
	case q.head >= 64 && 2*q.head >= len(q.calls):
		n := copy(q.calls, q.calls[q.head:])
		clear(q.calls[n:])
		q.calls, q.head = q.calls[:n], 0
	}
}

// close wakes every waiting worker and drops the calls still queued: they
// belong to records the store keeps, and are sent again when due.
func (q *sendQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()

	q.closed = true
	q.calls, q.head = nil, 0
	q.cond.Broadcast()
}
