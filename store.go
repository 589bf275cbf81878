package asyncflow

import (
	"bytes"
	"container/heap"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
	"unique"

	"github.com/aviate-labs/agent-go/principal"
)

// OutState is the state of a message on the sender's side.
type OutState uint8

const (
	// OutPending: sent and waiting for the ack; resent when due, until
	// the ack arrives or the Flow gives up on it.
	OutPending OutState = iota + 1
	// OutAcked: the ack arrived and matched; the ack callback and the
	// ackack are still to run. A Flow that restarts runs them again.
	OutAcked
	// OutCorrupt: the ack's hash did not match the payload that was sent.
	// The message stays for inspection until the user forgets it.
	OutCorrupt
	// OutGivenUp: no ack came within Config.GiveUpAfter or
	// Config.MaxAttempts sends, and the message is no longer resent. The
	// receiver may have processed it all the same. It stays for
	// inspection until the user forgets it, or until a late ack settles it
	// as acked.
	OutGivenUp
)

// String names the state.
func (s OutState) String() string {
	switch s {
	case OutPending:
		return "pending"
	case OutAcked:
		return "acked"
	case OutCorrupt:
		return "corrupt"
	case OutGivenUp:
		return "given-up"
	}
	return "unknown"
}

// Outgoing is the sender's record of a message.
type Outgoing struct {
	// MsgID is the message's id, the record's key.
	MsgID MsgID
	// To is the target principal.
	To principal.Principal
	// Payload is what is sent.
	Payload []byte
	// State is where the message is in the exchange.
	State OutState
	// Ack and AckHash hold what the ack carried, once one arrived.
	Ack     []byte
	AckHash Hash
	// Attempts counts the sends of the newMessage so far.
	Attempts uint32
	// NextSend is when a pending message is due to be resent.
	NextSend time.Time
}

// InState is the state of a processed message on the receiver's side.
type InState uint8

const (
	// InAcking: processed and committed; the ack is resent when due until
	// the ackack arrives.
	InAcking InState = iota + 1
	// InDone: the ackack arrived. The record stays so that a duplicate
	// newMessage is not processed again, until its id leaves the Flow's
	// DedupWindow.
	InDone
)

// String names the state.
func (s InState) String() string {
	switch s {
	case InAcking:
		return "acking"
	case InDone:
		return "done"
	}
	return "unknown"
}

// Incoming is the receiver's record of a processed message: its existence
// is what "processed" means.
type Incoming struct {
	// From is the caller, and with MsgID the record's key.
	From principal.Principal
	// MsgID is the message's id.
	MsgID MsgID
	// PayloadHash is the CRC-32 of the payload that was processed; the ack
	// carries it.
	PayloadHash uint32
	// Ack is the handler's answer, sent in every ack.
	Ack []byte
	// State is where the record is in the exchange.
	State InState
	// Attempts counts the sends of the ack so far.
	Attempts uint32
	// NextSend is when the ack is due to be resent while State is InAcking.
	NextSend time.Time
}

// Store keeps the state of both sides of the protocol.
//
// Each method is one atomic change: when it returns nil the change is as
// durable as the implementation promises (a memory store: until the
// process exits). Records passed in and returned are copies; neither side
// may keep references into the other's byte slices. Lookups of a missing
// record return an error wrapping ErrNotFound. Implementations must be
// safe for concurrent use.
type Store interface {
	// PutOutgoing creates or replaces the sender's record of m.MsgID.
	PutOutgoing(ctx context.Context, m Outgoing) error
	// Outgoing returns the sender's record of id.
	Outgoing(ctx context.Context, id MsgID) (Outgoing, error)
	// DeleteOutgoing removes the sender's record of id; removing a missing
	// record is not an error.
	DeleteOutgoing(ctx context.Context, id MsgID) error
	// ListOutgoing returns the sender's records in state s, in id order.
	ListOutgoing(ctx context.Context, s OutState) ([]Outgoing, error)
	// DueOutgoing returns up to limit pending records whose NextSend is not
	// after now, earliest first.
	DueOutgoing(ctx context.Context, now time.Time, limit int) ([]Outgoing, error)

	// PutIncoming creates or replaces the receiver's record of
	// (m.From, m.MsgID).
	PutIncoming(ctx context.Context, m Incoming) error
	// Incoming returns the receiver's record of id from the caller from.
	Incoming(ctx context.Context, from principal.Principal, id MsgID) (Incoming, error)
	// DueIncoming returns up to limit acking records whose NextSend is not
	// after now, earliest first.
	DueIncoming(ctx context.Context, now time.Time, limit int) ([]Incoming, error)

	// ExpireIncoming removes up to limit receiver records, in any state,
	// whose MsgID time is before before, oldest first, and returns how
	// many it removed. Its cost follows the records removed, not the
	// records kept.
	ExpireIncoming(ctx context.Context, before time.Time, limit int) (int, error)

	// NextDue returns the earliest NextSend of any pending or acking
	// record; ok is false when there is none.
	NextDue(ctx context.Context) (next time.Time, ok bool, err error)

	// Close releases the store. Calls after Close fail.
	Close() error
}

// MemoryStore is a Store held in memory: fast, and lost when the process
// exits. It suits tests and services that can afford to lose state on a
// restart. The zero value is not usable; call NewMemoryStore.
type MemoryStore struct {
	mu     sync.Mutex
	closed bool
	out    map[MsgID]*memOut
	in     map[recordKey]memIn
	// dueOut and dueIn index pending and acking records by NextSend.
	// dueOut holds the sender's records, which know their place in it;
	// dueIn holds entries for the receiver's, which a map holds by value
	// because they are many and live long, so that an entry goes stale
	// when its record changes (its seq differs) and is dropped lazily.
	dueOut outDueHeap
	dueIn  inDueHeap
	seq    uint64
	// byID holds the receiver's record keys in id order, for expiry.
	byID idHeap
}

// memOut is the memory store's copy of a sender's record. The map holds
// a pointer to it, since a map's slots stand half empty after it grows
// and a slot the size of a record would double its cost. It keeps what
// only an ack brings out of line, and interns the target, which the
// messages pending to one target share.
type memOut struct {
	id       MsgID
	to       unique.Handle[string]
	payload  []byte
	ack      *memAck
	nextSend time.Time
	attempts uint32
	state    OutState
	due      duePos
}

// memAck is what an ack brought to a sender's record.
type memAck struct {
	payload []byte
	hash    Hash
}

// newMemOut copies m into a new memOut. Where m repeats what old, the
// copy it replaces, holds, it shares old's bytes, which no one changes: a
// record stored again as its exchange moves on costs no second copy of
// its payload.
func newMemOut(m Outgoing, old *memOut) *memOut {
	e := &memOut{
		id:       m.MsgID,
		payload:  sameOrClone(old, m.Payload),
		nextSend: m.NextSend,
		attempts: m.Attempts,
		state:    m.State,
		due:      notDue,
	}
	if old != nil && string(m.To.Raw) == old.to.Value() {
		e.to = old.to
	} else {
		e.to = unique.Make(string(m.To.Raw))
	}
	if m.Ack != nil || m.AckHash != (Hash{}) {
		e.ack = &memAck{payload: bytes.Clone(m.Ack), hash: m.AckHash}
	}
	return e
}

// sameOrClone returns old's payload if p has the same bytes (and is nil
// if it is), or a copy of p.
func sameOrClone(old *memOut, p []byte) []byte {
	if old != nil && (p == nil) == (old.payload == nil) && bytes.Equal(old.payload, p) {
		return old.payload
	}
	return bytes.Clone(p)
}

// record returns a copy of the record e holds.
func (e *memOut) record() Outgoing {
	m := Outgoing{
		MsgID:    e.id,
		To:       principal.Principal{Raw: []byte(e.to.Value())},
		Payload:  bytes.Clone(e.payload),
		State:    e.state,
		Attempts: e.attempts,
		NextSend: e.nextSend,
	}
	if e.ack != nil {
		m.Ack, m.AckHash = bytes.Clone(e.ack.payload), e.ack.hash
	}
	return m
}

// memIn is the memory store's copy of a receiver's record, and the seq of
// its last change. It leaves out the caller and the id, which its key
// holds: the map keeps every id processed in the dedup window, by value.
type memIn struct {
	ack         []byte
	nextSend    time.Time
	seq         uint64
	payloadHash uint32
	attempts    uint32
	state       InState
}

func newMemIn(m Incoming, seq uint64) memIn {
	return memIn{ack: bytes.Clone(m.Ack), nextSend: m.NextSend, seq: seq,
		payloadHash: m.PayloadHash, attempts: m.Attempts, state: m.State}
}

// record returns a copy of the record of k that e holds.
func (e memIn) record(k recordKey) Incoming {
	return Incoming{
		From:        principal.Principal{Raw: []byte(k.from)},
		MsgID:       k.id,
		PayloadHash: e.payloadHash,
		Ack:         bytes.Clone(e.ack),
		State:       e.state,
		Attempts:    e.attempts,
		NextSend:    e.nextSend,
	}
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{
		out: make(map[MsgID]*memOut),
		in:  make(map[recordKey]memIn),
	}
}

var errStoreClosed = fmt.Errorf("%w: memory store", ErrClosed)

// PutOutgoing implements Store.
func (s *MemoryStore) PutOutgoing(_ context.Context, m Outgoing) error {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.closed {
		return errStoreClosed
	}
	old, ok := s.out[m.MsgID]
	if ok {
		s.dueOut.remove(old)
	}
	e := newMemOut(m, old)
	s.out[m.MsgID] = e
	if m.State == OutPending {
		heap.Push(&s.dueOut, e)
	}
	return nil
}

// Outgoing implements Store.
func (s *MemoryStore) Outgoing(_ context.Context, id MsgID) (Outgoing, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.closed {
		return Outgoing{}, errStoreClosed
	}
	e, ok := s.out[id]
	if !ok {
		return Outgoing{}, newNotFound(principal.Principal{}, id)
	}
	return e.record(), nil
}

// DeleteOutgoing implements Store.
func (s *MemoryStore) DeleteOutgoing(_ context.Context, id MsgID) error {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.closed {
		return errStoreClosed
	}
	if e, ok := s.out[id]; ok {
		s.dueOut.remove(e)
		delete(s.out, id)
	}
	return nil
}

// ListOutgoing implements Store.
func (s *MemoryStore) ListOutgoing(_ context.Context, st OutState) ([]Outgoing, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.closed {
		return nil, errStoreClosed
	}
	var list []Outgoing
	for _, e := range s.out {
		if e.state == st {
			list = append(list, e.record())
		}
	}
	slices.SortFunc(list, func(a, b Outgoing) int { return a.MsgID.Compare(b.MsgID) })
	return list, nil
}

// DueOutgoing implements Store.
func (s *MemoryStore) DueOutgoing(_ context.Context, now time.Time,
	limit int) ([]Outgoing, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.closed {
		return nil, errStoreClosed
	}
	var list []Outgoing
	for _, e := range s.dueOut.upTo(now, limit) {
		list = append(list, e.record())
	}
	return list, nil
}

// PutIncoming implements Store.
func (s *MemoryStore) PutIncoming(_ context.Context, m Incoming) error {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.closed {
		return errStoreClosed
	}
	s.seq++
	k := inKey(m.From, m.MsgID)
	if _, ok := s.in[k]; !ok {
		heapPush(&s.byID, k)
	}
	s.in[k] = newMemIn(m, s.seq)
	if m.State == InAcking {
		heapPush(&s.dueIn, inDue{at: m.NextSend, key: k, seq: s.seq})
	}
	return nil
}

// Incoming implements Store.
func (s *MemoryStore) Incoming(
	_ context.Context, from principal.Principal, id MsgID,
) (Incoming, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.closed {
		return Incoming{}, errStoreClosed
	}
	k := inKey(from, id)
	e, ok := s.in[k]
	if !ok {
		return Incoming{}, newNotFound(from, id)
	}
	return e.record(k), nil
}

// DueIncoming implements Store.
func (s *MemoryStore) DueIncoming(_ context.Context, now time.Time,
	limit int) ([]Incoming, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.closed {
		return nil, errStoreClosed
	}
	var list []Incoming
	var kept []inDue
	for len(list) < limit && len(s.dueIn) > 0 && !s.dueIn[0].at.After(now) {
		e := heapPop(&s.dueIn)
		if s.liveIn(e) {
			kept = append(kept, e)
			list = append(list, s.in[e.key].record(e.key))
		}
	}
	for _, e := range kept {
		heapPush(&s.dueIn, e)
	}
	return list, nil
}

// ExpireIncoming implements Store.
func (s *MemoryStore) ExpireIncoming(_ context.Context, before time.Time, limit int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.closed {
		return 0, errStoreClosed
	}
	n := 0
	for n < limit && s.byID.Len() > 0 && s.byID[0].id.Time().Before(before) {
		delete(s.in, heapPop(&s.byID))
		n++
	}
	return n, nil
}

// NextDue implements Store.
func (s *MemoryStore) NextDue(context.Context) (time.Time, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.closed {
		return time.Time{}, false, errStoreClosed
	}
	out, okOut := s.dueOut.first()
	in, okIn := s.firstIn()
	switch {
	case okOut && (!okIn || out.Before(in)):
		return out, true, nil
	case okIn:
		return in, true, nil
	}
	return time.Time{}, false, nil
}

// Close implements Store. The records are dropped.
func (s *MemoryStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()

	s.closed = true
	s.out, s.in, s.dueOut, s.dueIn, s.byID = nil, nil, nil, nil, nil
	return nil
}

// notFoundError is a lookup that found no record. It wraps ErrNotFound
// and writes its text only when asked: a receiver looks up the id of
// every new message before it has a record of it, so a miss is the common
// case and formatting it each time would cost more than the lookup.
type notFoundError struct {
	id MsgID
	// from is the caller of an incoming record, copied so that the error
	// keeps no reference into the caller's bytes; n is its length, 0 for an
	// outgoing record.
	from [maxPrincipalBytes]byte
	n    uint8
}

func newNotFound(from principal.Principal, id MsgID) error {
	if len(from.Raw) > maxPrincipalBytes {
		return fmt.Errorf("%w: incoming message %s from %s", ErrNotFound, id, from)
	}
	e := &notFoundError{id: id}
	e.n = uint8(copy(e.from[:], from.Raw))
	return e
}

func (e *notFoundError) Error() string {
	if e.n == 0 {
		return fmt.Sprintf("%v: outgoing message %s", ErrNotFound, e.id)
	}
	from := principal.Principal{Raw: e.from[:e.n]}
	return fmt.Sprintf("%v: incoming message %s from %s", ErrNotFound, e.id, from)
}

func (e *notFoundError) Unwrap() error { return ErrNotFound }

// outDueHeap orders the sender's pending records by due time, earliest
// first. Each record knows its place in it, so that a record that
// changes or goes leaves it at once: no stale entries pile up behind the
// records that are due.
type outDueHeap []*memOut

// duePos is a record's index in its due heap, or notDue.
type duePos int

const notDue duePos = -1

func (h outDueHeap) Len() int           { return len(h) }
func (h outDueHeap) Less(i, j int) bool { return h[i].nextSend.Before(h[j].nextSend) }

func (h outDueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].due, h[j].due = duePos(i), duePos(j)
}

func (h *outDueHeap) Push(x any) {
	e := x.(*memOut)
	e.due = duePos(len(*h))
	*h = append(*h, e)
}

func (h *outDueHeap) Pop() any {
	e := popLast(h)
	e.due = notDue
	return e
}

// remove takes e out of h if it is there.
func (h *outDueHeap) remove(e *memOut) {
	if e.due != notDue {
		heap.Remove(h, int(e.due))
	}
}

// first returns the earliest due time in h.
func (h outDueHeap) first() (time.Time, bool) {
	if len(h) == 0 {
		return time.Time{}, false
	}
	return h[0].nextSend, true
}

// upTo returns up to limit records due at or before now, earliest first,
// and leaves them in h.
func (h *outDueHeap) upTo(now time.Time, limit int) []*memOut {
	var due []*memOut
	for len(due) < limit && h.Len() > 0 && !(*h)[0].nextSend.After(now) {
		due = append(due, heap.Pop(h).(*memOut))
	}
	for _, e := range due {
		heap.Push(h, e)
	}
	return due
}

// inDue is an entry of the receiver's due index: the record of key is
// due at at, if its seq is still seq.
type inDue struct {
	at  time.Time
	key recordKey
	seq uint64
}

type inDueHeap []inDue

func (h inDueHeap) Len() int           { return len(h) }
func (h inDueHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h inDueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *inDueHeap) Push(x any)        { *h = append(*h, x.(inDue)) }
func (h *inDueHeap) Pop() any          { return popLast(h) }

// liveIn reports whether e still describes its record: the record exists,
// has not changed since e was pushed, and its ack is resent.
func (s *MemoryStore) liveIn(e inDue) bool {
	r, ok := s.in[e.key]
	return ok && r.seq == e.seq && r.state == InAcking
}

// firstIn returns the earliest due time of a receiver's record, dropping
// the stale entries in front of it.
func (s *MemoryStore) firstIn() (time.Time, bool) {
	for len(s.dueIn) > 0 {
		if s.liveIn(s.dueIn[0]) {
			return s.dueIn[0].at, true
		}
		heapPop(&s.dueIn)
	}
	return time.Time{}, false
}

// idHeap orders the receiver's record keys by id, oldest first.
type idHeap []recordKey

func (h idHeap) Len() int           { return len(h) }
func (h idHeap) Less(i, j int) bool { return h[i].id.Compare(h[j].id) < 0 }
func (h idHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *idHeap) Push(x any)        { *h = append(*h, x.(recordKey)) }
func (h *idHeap) Pop() any          { return popLast(h) }

// heapPush and heapPop do what heap.Push and heap.Pop do, without passing
// the element through an interface, which would allocate a copy of it on
// every record stored.
func heapPush[H interface {
	heap.Interface
	*S
}, S ~[]E, E any](h H, e E) {
	*h = append(*h, e)
	heap.Fix(h, len(*h)-1)
}

func heapPop[H interface {
	heap.Interface
	*S
}, S ~[]E, E any](h H) E {
	s := *h
	e, n := s[0], len(s)-1
	s[0] = s[n]
	*h = s[:n]
	if n > 0 {
		heap.Fix(h, 0)
	}
	var zero E
	s[n] = zero
	return e
}

// popLast removes the last element of *h, as heap.Interface's Pop does.
func popLast[S ~[]E, E any](h *S) E {
	s := *h
	e, n := s[len(s)-1], len(s)-1
	var zero E
	s[n] = zero
	*h = s[:n]
	return e
}
