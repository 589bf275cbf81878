package asyncflow

import (
	"context"
	"sync"
	"time"
)

// callContext is the context of one call the Flow serves or makes. It has
// the values and deadline of parent, and it ends when parent ends, when
// also ends (if set), at deadline (if set), or when the call is over.
//
// Joining contexts takes a cancelCtx, and an AfterFunc or a timer, which
// cost a round trip about a sixth of its CPU when made for every call.
// Most calls never wait on their context, so callContext makes them only
// when something asks for Done; until then it answers Err by looking.
type callContext struct {
	parent   context.Context
	also     context.Context
	deadline time.Time

	mu sync.Mutex
	// joined, once Done was asked for, is parent joined with also and
	// the deadline; cancel and stop undo the joining.
	joined context.Context
	cancel context.CancelFunc
	stop   func() bool
	// ended is set, and err to why, when the call ended before joined
	// was made.
	ended bool
	err   error
}

// Deadline implements context.Context: the earlier of parent's deadline
// and c's own.
func (c *callContext) Deadline() (time.Time, bool) {
	d, ok := c.parent.Deadline()
	if !c.deadline.IsZero() && (!ok || c.deadline.Before(d)) {
		return c.deadline, true
	}
	return d, ok
}

// Done implements context.Context. The first call joins the contexts.
func (c *callContext) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()

	if c.joined == nil {
		c.join()
	}
	return c.joined.Done()
}

// Err implements context.Context.
func (c *callContext) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()

	switch {
	case c.ended:
		return c.err
	case c.joined != nil:
		return c.joined.Err()
	}
	return c.errNow()
}

// Value implements context.Context with parent's values. Once joined it
// asks joined, which has the same values and, for the context package,
// the cancellation that Done reports, so contexts derived from c attach
// to it without a goroutine of their own.
func (c *callContext) Value(key any) any {
	c.mu.Lock()
	j := c.joined
	c.mu.Unlock()

	if j != nil {
		return j.Value(key)
	}
	return c.parent.Value(key)
}

// end ends c: the call it served is over. The caller holds no lock.
func (c *callContext) end() {
	c.mu.Lock()
	defer c.mu.Unlock()

	if c.joined != nil {
		if c.stop != nil {
			c.stop()
		}
		c.cancel()
		return
	}
	c.ended = true
	if c.err = c.errNow(); c.err == nil {
		c.err = context.Canceled
	}
}

// join makes the joined context, ended at once if the call is over. The
// caller holds mu.
func (c *callContext) join() {
	if c.deadline.IsZero() {
		c.joined, c.cancel = context.WithCancel(c.parent)
	} else {
		c.joined, c.cancel = context.WithDeadline(c.parent, c.deadline)
	}

	// A context that already reported its end stays ended: AfterFunc
	// would cancel only later, from a goroutine of its own.
	if c.ended || c.errNow() != nil {
		c.cancel()
		return
	}
	if c.also != nil {
		c.stop = context.AfterFunc(c.also, c.cancel)
	}
}

// errNow returns why c would have ended by now, or nil, before it is
// joined. The caller holds mu.
func (c *callContext) errNow() error {
	if err := c.parent.Err(); err != nil {
		return err
	}
	if !c.deadline.IsZero() && !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	if c.also != nil && c.also.Err() != nil {
		return context.Canceled
	}
	return nil
}
