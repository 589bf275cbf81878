package asyncflow

import (
	"sync"

	"github.com/aviate-labs/agent-go/principal"
)

// outCall is one call waiting for a send worker. A call that belongs to a
// record (a newMessage or an ack) names it in rec, so that the retry loop
// can tell the record's send is still on its way.
type outCall struct {
	to     principal.Principal
	method string
	arg    []byte
	rec    recordKey
	track  bool
}

// recordKey names a record of either side: the sender's by id alone, the
// receiver's by (caller, id).
type recordKey struct {
	out bool
	in  inKey
}

func outKey(id MsgID) recordKey { return recordKey{out: true, in: inKey{id: id}} }
func inKeyOf(k inKey) recordKey { return recordKey{in: k} }

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
	if q.head == len(q.calls) {
		q.calls, q.head = q.calls[:0], 0
	}
	return c, true
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
