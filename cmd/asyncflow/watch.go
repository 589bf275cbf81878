package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/asyncflow/asyncflow"
	"github.com/asyncflow/asyncflow/ic"
)

// watch follows the messages one send is responsible for, through the
// Flow's callbacks and the calls that its transport and store pass on, so
// that send can wait until each is settled. It is safe for concurrent use.
type watch struct {
	target principal.Principal
	// changed wakes the one goroutine that waits, after any note.
	changed chan struct{}

	mu       sync.Mutex
	expected []asyncflow.MsgID
	msgs     map[asyncflow.MsgID]*progress
	lastErr  error
}

// progress is what the watch saw of one message. It notes messages it
// does not expect too: an ack may arrive before CallAsync has returned
// the id that send then expects.
type progress struct {
	delivered bool                  // OnAck ran
	forgotten bool                  // the Flow deleted the record, or tried to
	corrupt   *asyncflow.Corruption // OnCorrupt ran
	refused   *ic.RefusedError      // a refusal of the newMessage for good
	dropped   bool                  // send forgot it after a refusal for good
	ackack    bool                  // the ackack was submitted, or failed
	ackackErr error
}

// settled reports whether the message needs nothing more but its ackack.
// A delivered message is settled once the Flow forgot it, so that the
// next send on the store does not report it again. A dropped message
// needs nothing more at all: no ack will come for it.
func (p *progress) settled() bool {
	return p.corrupt != nil || p.dropped || p.delivered && p.forgotten
}

// awaitsAckAck reports whether an ackack is still to be submitted for the
// message.
func (p *progress) awaitsAckAck() bool {
	return !p.ackack && !p.dropped
}

func newWatch(target principal.Principal, expected []asyncflow.MsgID) *watch {
	return &watch{target: target, changed: make(chan struct{}, 1),
		expected: slices.Clone(expected), msgs: make(map[asyncflow.MsgID]*progress)}
}

// expect adds id to the messages send waits for.
func (w *watch) expect(id asyncflow.MsgID) {
	w.mu.Lock()
	defer w.mu.Unlock()

	w.expected = append(w.expected, id)
}

// note applies change to the progress of id, under the lock, and wakes
// the waiting goroutine.
func (w *watch) note(id asyncflow.MsgID, change func(p *progress)) {
	w.mu.Lock()
	p := w.msgs[id]
	if p == nil {
		p = &progress{}
		w.msgs[id] = p
	}
	change(p)
	w.mu.Unlock()

	select {
	case w.changed <- struct{}{}:
	default:
	}
}

func (w *watch) delivered(id asyncflow.MsgID) {
	w.note(id, func(p *progress) { p.delivered = true })
}

func (w *watch) corrupted(c asyncflow.Corruption) {
	w.note(c.MsgID, func(p *progress) { p.corrupt = &c })
}

// progressOf returns the progress of id; the caller holds the lock.
func (w *watch) progressOf(id asyncflow.MsgID) progress {
	if p := w.msgs[id]; p != nil {
		return *p
	}
	return progress{}
}

// refusal is an expected message that the target refused for good.
type refusal struct {
	id  asyncflow.MsgID
	err *ic.RefusedError
}

// unsettled returns the expected messages not settled yet and, in the
// same order, those of them that the target refused for good.
func (w *watch) unsettled() ([]asyncflow.MsgID, []refusal) {
	w.mu.Lock()
	defer w.mu.Unlock()

	var open []asyncflow.MsgID
	var refusals []refusal
	for _, id := range w.expected {
		p := w.progressOf(id)
		if p.settled() {
			continue
		}
		open = append(open, id)
		if p.refused != nil {
			refusals = append(refusals, refusal{id, p.refused})
		}
	}
	return open, refusals
}

// dropped notes that send forgot id after a refusal for good.
func (w *watch) dropped(id asyncflow.MsgID) {
	w.note(id, func(p *progress) { p.dropped = true })
}

// ackacksDone reports whether the ackack of every expected message was
// submitted or failed.
func (w *watch) ackacksDone() bool {
	w.mu.Lock()
	defer w.mu.Unlock()

	for _, id := range w.expected {
		if p := w.progressOf(id); p.awaitsAckAck() {
			return false
		}
	}
	return true
}

// ackackFailure is a message whose ackack failed or was not submitted.
type ackackFailure struct {
	id  asyncflow.MsgID
	err error
}

// ackackFailures returns the expected messages whose ackack failed or was
// not submitted, in the order they were expected, with why.
func (w *watch) ackackFailures() []ackackFailure {
	w.mu.Lock()
	defer w.mu.Unlock()

	var failed []ackackFailure
	for _, id := range w.expected {
		switch p := w.progressOf(id); {
		case p.dropped:
			// Never acked, it owes no ackack.
		case !p.ackack:
			failed = append(failed, ackackFailure{id,
				errors.New("the ackack was not submitted in time")})
		case p.ackackErr != nil:
			failed = append(failed, ackackFailure{id, p.ackackErr})
		}
	}
	return failed
}

// corruptErr names the expected messages found corrupt, or returns nil.
func (w *watch) corruptErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()

	var found []string
	for _, id := range w.expected {
		if c := w.progressOf(id).corrupt; c != nil {
			found = append(found, fmt.Sprintf(
				"message %s was corrupted: hash %s expected, %s reported",
				id.Decimal(), c.Expected, c.Got))
		}
	}
	if len(found) == 0 {
		return nil
	}
	return errors.New("send: " + strings.Join(found, "; "))
}

// lastError describes the last failed submission of a newMessage to the
// target, for an error that says no ack arrived.
func (w *watch) lastError() string {
	w.mu.Lock()
	defer w.mu.Unlock()

	if w.lastErr == nil {
		return ""
	}
	return fmt.Sprintf(" (last send: %v)", w.lastErr)
}

// wrapTransport returns next, watched.
func (w *watch) wrapTransport(next asyncflow.Transport) asyncflow.Transport {
	return &watchTransport{w: w, next: next}
}

// wrapStore returns next, watched.
func (w *watch) wrapStore(next asyncflow.Store) asyncflow.Store {
	return watchStore{Store: next, w: w}
}

// watchTransport passes calls on and notes, for each message, the
// submission of its ackack, a refusal of its newMessage that a retry
// cannot change, and the last error of a newMessage to the target. The
// Flow itself warns of the first.
type watchTransport struct {
	w    *watch
	next asyncflow.Transport
}

func (t *watchTransport) Route(to principal.Principal) error {
	if r, ok := t.next.(asyncflow.Router); ok {
		return r.Route(to)
	}
	return nil
}

func (t *watchTransport) Send(ctx context.Context, to principal.Principal, method string,
	arg []byte) error {
	err := t.next.Send(ctx, to, method, arg)

	switch method {
	case asyncflow.MethodNewMessage:
		var m asyncflow.NewMessage
		if err != nil && m.UnmarshalCandid(arg) == nil {
			t.w.failedMessage(to, m.MsgID, err)
		}
	case asyncflow.MethodAckAck:
		var m asyncflow.AckAck
		if m.UnmarshalCandid(arg) == nil {
			t.w.note(m.MsgID, func(p *progress) { p.ackack, p.ackackErr = true, err })
		}
	}
	return err
}

// failedMessage notes a failed submission of the newMessage of id.
// Messages to other principals fail for want of a route, which says
// nothing about the target.
func (w *watch) failedMessage(to principal.Principal, id asyncflow.MsgID, err error) {
	w.note(id, func(p *progress) {
		if r, ok := errors.AsType[*ic.RefusedError](err); ok && permanent(r.Status) {
			p.refused = r
		}
		if to.Equal(w.target) {
			w.lastErr = err
		}
	})
}

// permanent reports whether an HTTP status refuses a call for good: a
// client error other than a timeout or a rate limit.
func permanent(status int) bool {
	return status >= 400 && status < 500 &&
		status != http.StatusRequestTimeout && status != http.StatusTooManyRequests
}

// watchStore passes calls on to the store and notes each message the
// Flow forgets.
type watchStore struct {
	asyncflow.Store
	w *watch
}

// DeleteOutgoing deletes the record of id and notes that the Flow forgot
// it, whatever the result: the Flow logs a failure itself.
func (s watchStore) DeleteOutgoing(ctx context.Context, id asyncflow.MsgID) error {
	err := s.Store.DeleteOutgoing(ctx, id)
	s.w.note(id, func(p *progress) { p.forgotten = true })
	return err
}
