package asyncflow

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"
)

// Once Err reported that a call context ended, asking for Done must give
// a closed channel, and Err must keep its answer: the context.Context
// contract says "If Done is not yet closed, Err returns nil" and "After
// Err returns a non-nil error, successive calls to Err return the same
// error". Here the Flow's close context ("also") ended before anyone asked
// for Done: Err answers Canceled by looking, so the first Done must not
// join the contexts with an AfterFunc, which would cancel only later from
// its own goroutine and leave Done open and Err nil meanwhile.
func TestCallContextErrThenDoneStaysEnded(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))

	bad := 0
	for range 200 {
		also, cancelAlso := context.WithCancel(context.Background())
		cancelAlso()
		c := &callContext{parent: context.Background(), also: also}

		if err := c.Err(); !errors.Is(err, context.Canceled) {
			t.Fatalf("Err after also ended = %v, want Canceled", err)
		}
		done := c.Done()
		closed := false
		select {
		case <-done:
			closed = true
		default:
		}
		err := c.Err()
		if !closed || err == nil {
			bad++
			if bad == 1 {
				t.Errorf("after Err reported Canceled: Done closed = %v, Err = %v", closed, err)
			}
		}
		c.end()
	}
	if bad > 0 {
		t.Errorf("%d of 200 call contexts went from ended back to live", bad)
	}
}

// A context derived from a call context whose Flow was closed must be
// ended at once, as it would be for any ended parent.
func TestCallContextChildOfEndedIsEndedAtOnce(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))

	bad := 0
	for range 200 {
		also, cancelAlso := context.WithCancel(context.Background())
		cancelAlso()
		c := &callContext{parent: context.Background(), also: also}
		if c.Err() == nil {
			t.Fatal("Err is nil after also ended")
		}
		child, cancel := context.WithCancel(c)
		if child.Err() == nil {
			bad++
		}
		cancel()
		c.end()
	}
	if bad > 0 {
		t.Errorf("%d of 200 children of an ended call context were live", bad)
	}
}

// context.Cause of an ended context is non-nil ("If c has not been
// canceled, Cause returns nil" — and Err says it was). A callContext that
// ended before anyone asked for Done answers Value(&cancelCtxKey) with its
// parent's cancelCtx, so Cause reports the parent's cause: nil.
func TestCallContextCauseAfterEnd(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()

	for _, how := range []string{"end", "also"} {
		also, cancelAlso := context.WithCancel(context.Background())
		c := &callContext{parent: parent, also: also}
		if how == "end" {
			c.end()
		} else {
			cancelAlso()
		}
		if c.Err() == nil {
			t.Fatalf("%s: Err is nil", how)
		}
		if cause := context.Cause(c); cause == nil {
			t.Errorf("%s: Err = %v but context.Cause = nil", how, c.Err())
		}
		cancelAlso()
		c.end()
	}
}

// The same, as a Handler sees it: Close begins while the handler runs; the
// handler sees its context ended (Err), and a context it then derives
// from it must be ended too — here it is live, so a store or RPC call
// made with it would go ahead during Close.
func TestHandlerContextAfterCloseBegins(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))

	_, _, b := newPair(t, nil)
	entered := make(chan struct{})
	var childErr, errAfter error
	var doneClosed bool
	b.flow.cfg.Handler = func(ctx context.Context, _ principal.Principal, _ MsgID,
		p []byte) ([]byte, error) {
		close(entered)
		for ctx.Err() == nil {
			runtime.Gosched()
		}
		child, cancel := context.WithTimeout(ctx, time.Hour)
		childErr = child.Err()
		cancel()
		select {
		case <-ctx.Done():
			doneClosed = true
		default:
		}
		errAfter = ctx.Err()
		return p, nil
	}
	id, err := NewMsgID(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	delivered := make(chan error, 1)
	go func() {
		delivered <- b.flow.Deliver(context.Background(), alice, MethodNewMessage,
			NewMessage{MsgID: id, Payload: []byte("x")}.AppendCandid(nil))
	}()
	<-entered
	closed := make(chan error, 1)
	go func() { closed <- b.flow.Close() }()
	<-delivered
	<-closed

	if childErr == nil || !doneClosed || errAfter == nil {
		t.Errorf("after the handler saw Err = Canceled: derived context Err = %v, "+
			"Done closed = %v, Err again = %v", childErr, doneClosed, errAfter)
	}
}

// plainCtx is a context the context package does not know, so that
// joining it takes a goroutine.
type plainCtx struct{ context.Context }

func (p plainCtx) Done() <-chan struct{} { return p.Context.Done() }

// AfterFunc on a call context runs when the call ends, joined or not,
// and joining a foreign parent leaves no goroutine behind after end.
func TestCallContextAfterFuncAndNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	for _, early := range []bool{false, true} {
		parent, cancelParent := context.WithCancel(context.Background())
		also, cancelAlso := context.WithCancel(context.Background())
		c := &callContext{parent: plainCtx{parent}, also: plainCtx{also},
			deadline: time.Now().Add(time.Hour)}
		if early {
			_ = c.Err()
		}
		ran := make(chan struct{})
		context.AfterFunc(c, func() { close(ran) })
		c.end()
		select {
		case <-ran:
		case <-time.After(5 * time.Second):
			t.Fatalf("early=%v: AfterFunc did not run after end", early)
		}
		if !errors.Is(c.Err(), context.Canceled) {
			t.Fatalf("Err after end = %v", c.Err())
		}
		cancelParent()
		cancelAlso()
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines before, %d after", before, n)
	}
}
