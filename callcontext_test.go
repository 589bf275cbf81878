package asyncflow

import (
	"context"
	"errors"
	"testing"
	"time"
)

type ctxKey struct{}

// awaitDone fails t unless ctx's Done closes soon.
func awaitDone(t *testing.T, ctx context.Context) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done did not close")
	}
}

func TestACallContextEndsWithWhicheverEndsFirst(t *testing.T) {
	for _, tc := range []struct {
		name string
		// end ends one of the three; join asks for Done before it does.
		end     func(parent, also context.CancelFunc, call *callContext)
		join    bool
		wantErr error
	}{
		{"parent, unjoined", func(p, _ context.CancelFunc, _ *callContext) { p() }, false,
			context.Canceled},
		{"parent, joined", func(p, _ context.CancelFunc, _ *callContext) { p() }, true,
			context.Canceled},
		{"also, unjoined", func(_, a context.CancelFunc, _ *callContext) { a() }, false,
			context.Canceled},
		{"also, joined", func(_, a context.CancelFunc, _ *callContext) { a() }, true,
			context.Canceled},
		{"the call, unjoined", func(_, _ context.CancelFunc, c *callContext) { c.end() },
			false, context.Canceled},
		{"the call, joined", func(_, _ context.CancelFunc, c *callContext) { c.end() },
			true, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent, cancelParent := context.WithCancel(
				context.WithValue(context.Background(), ctxKey{}, "v"))
			defer cancelParent()
			also, cancelAlso := context.WithCancel(context.Background())
			defer cancelAlso()
			c := &callContext{parent: parent, also: also}
			if tc.join {
				_ = c.Done()
			}
			if err := c.Err(); err != nil {
				t.Fatalf("Err before the end = %v", err)
			}

			tc.end(cancelParent, cancelAlso, c)
			awaitDone(t, c)
			if err := c.Err(); !errors.Is(err, tc.wantErr) {
				t.Fatalf("Err = %v, want %v", err, tc.wantErr)
			}
			if got := c.Value(ctxKey{}); got != "v" {
				t.Fatalf("Value = %v, want the parent's", got)
			}
			c.end()
		})
	}
}

func TestACallContextWithADeadlineEndsAtIt(t *testing.T) {
	for _, join := range []bool{false, true} {
		deadline := time.Now().Add(20 * time.Millisecond)
		c := &callContext{parent: context.Background(), deadline: deadline}
		if d, ok := c.Deadline(); !ok || !d.Equal(deadline) {
			t.Fatalf("Deadline = %v, %v; want %v", d, ok, deadline)
		}
		if join {
			awaitDone(t, c)
		} else {
			time.Sleep(time.Until(deadline))
		}
		if err := c.Err(); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("joined %v: Err = %v, want the deadline's", join, err)
		}
		c.end()
	}
}

func TestACallContextReportsTheEarlierDeadline(t *testing.T) {
	early := time.Now().Add(time.Hour)
	parent, cancel := context.WithDeadline(context.Background(), early)
	defer cancel()
	c := &callContext{parent: parent, deadline: early.Add(time.Hour)}
	defer c.end()

	if d, ok := c.Deadline(); !ok || !d.Equal(early) {
		t.Fatalf("Deadline = %v, %v; want the parent's %v", d, ok, early)
	}
}

func TestAContextDerivedFromACallContextEndsWithIt(t *testing.T) {
	also, cancelAlso := context.WithCancel(context.Background())
	c := &callContext{parent: context.Background(), also: also}
	child, cancelChild := context.WithCancel(c)
	defer cancelChild()

	cancelAlso()
	awaitDone(t, child)
	c.end()
}
