package asyncflow

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/aviate-labs/agent-go/principal"
)

// DefaultMaxInFlight is how many messages to one target may wait for their
// ack at once by default: the IC queues at most 500 messages between two
// canisters.
const DefaultMaxInFlight = 500

// inFlight counts the sender's pending messages per target and makes
// CallAsync wait, or fail, while a target has max of them. It knows the
// ids it counts, so that releasing an id twice, or one it never counted,
// changes nothing. Waiters get freed slots in the order they came. It is
// safe for concurrent use.
type inFlight struct {
	max int

	mu sync.Mutex
	// ids maps each counted id to its target's share, which a million
	// ids to one target share.
	ids     map[MsgID]*slots
	targets map[string]*slots
}

// slots is one target's share: taken counts its pending messages and the
// slots reserved for messages being stored. key is the target's bytes.
type slots struct {
	key     string
	taken   int
	waiters []*slotWaiter
}

// slotWaiter is a CallAsync waiting for a slot; granted is set, and ready
// closed, when it gets one.
type slotWaiter struct {
	ready   chan struct{}
	granted bool
}

func newInFlight(max int) *inFlight {
	return &inFlight{max: max, ids: make(map[MsgID]*slots),
		targets: make(map[string]*slots)}
}

// reserve takes a slot for a message to target. When the target has none
// free it waits until one is, or fails at once if wait is false; it fails
// when ctx ends first. The slot is the caller's until it holds an id in
// it, or gives it back with unreserve.
func (s *inFlight) reserve(ctx context.Context, target principal.Principal, wait bool) error {
	s.mu.Lock()
	t := s.target(target)
	if t.taken < s.max && len(t.waiters) == 0 {
		t.taken++
		s.mu.Unlock()
		return nil
	}
	if !wait {
		s.mu.Unlock()
		return fmt.Errorf("%w: %d messages to %s wait for their ack", ErrTooManyInFlight,
			t.taken, target)
	}
	w := &slotWaiter{ready: make(chan struct{})}
	t.waiters = append(t.waiters, w)
	s.mu.Unlock()

	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if w.granted {
		s.free(t)
	} else {
		t.waiters = slices.DeleteFunc(t.waiters, func(o *slotWaiter) bool { return o == w })
		s.drop(t)
	}
	return fmt.Errorf("%w: waited for one of %d messages to %s to settle: %w",
		ErrTooManyInFlight, s.max, target, ctx.Err())
}

// unreserve gives back a slot that reserve took and no id holds.
func (s *inFlight) unreserve(target principal.Principal) {
	s.mu.Lock()
	defer s.mu.Unlock()

	s.free(s.targets[string(target.Raw)])
}

// hold records that id, a message to target, is pending in the slot that
// reserve took for it.
func (s *inFlight) hold(id MsgID, target principal.Principal) {
	s.mu.Lock()
	defer s.mu.Unlock()

	s.ids[id] = s.targets[string(target.Raw)]
}

// adopt counts id, a pending message to target found in the store, unless
// it is counted already. It may take a target past max: the store holds
// what it holds.
func (s *inFlight) adopt(id MsgID, target principal.Principal) {
	s.mu.Lock()
	defer s.mu.Unlock()

	if _, ok := s.ids[id]; ok {
		return
	}
	t := s.target(target)
	s.ids[id] = t
	t.taken++
}

// release frees the slot of id, which is no longer pending; an id not
// counted is ignored.
func (s *inFlight) release(id MsgID) {
	s.mu.Lock()
	defer s.mu.Unlock()

	t, ok := s.ids[id]
	if !ok {
		return
	}
	delete(s.ids, id)
	s.free(t)
}

// holds reports whether id is counted as pending.
func (s *inFlight) holds(id MsgID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()

	_, ok := s.ids[id]
	return ok
}

// count returns how many slots of target are taken.
func (s *inFlight) count(target principal.Principal) int {
	s.mu.Lock()
	defer s.mu.Unlock()

	if t, ok := s.targets[string(target.Raw)]; ok {
		return t.taken
	}
	return 0
}

// target returns the share of target, creating it. The caller holds mu.
func (s *inFlight) target(target principal.Principal) *slots {
	t, ok := s.targets[string(target.Raw)]
	if !ok {
		t = &slots{key: string(target.Raw)}
		s.targets[t.key] = t
	}
	return t
}

// free gives a slot of t back and hands free slots to the waiters first
// in line. The caller holds mu.
func (s *inFlight) free(t *slots) {
	t.taken--
	for t.taken < s.max && len(t.waiters) > 0 {
		w := t.waiters[0]
		t.waiters[0] = nil
		t.waiters = t.waiters[1:]
		w.granted = true
		close(w.ready)
		t.taken++
	}
	s.drop(t)
}

// drop forgets the share t once it holds nothing, so that targets written
// to once cost nothing later. The caller holds mu.
func (s *inFlight) drop(t *slots) {
	if t.taken == 0 && len(t.waiters) == 0 {
		delete(s.targets, t.key)
	}
}
