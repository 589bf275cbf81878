package asyncflow_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/stretchr/testify/require"

	"github.com/asyncflow/asyncflow"
	"github.com/asyncflow/asyncflow/boltstore"
)

var quietLog = slog.New(slog.DiscardHandler)

// nopTransport is a Transport that accepts every call and delivers nothing.
type nopTransport struct{}

func (nopTransport) Send(context.Context, principal.Principal, string, []byte) error { return nil }

var caller = principal.Principal{Raw: []byte{0xa1, 0x01, 0x01}}

func newMessageArg(t *testing.T, at time.Time) (asyncflow.MsgID, []byte) {
	t.Helper()
	id, err := asyncflow.NewMsgID(at)
	require.NoError(t, err)
	return id, asyncflow.NewMessage{MsgID: id, Payload: []byte("pay")}.AppendCandid(nil)
}

func storeKinds(t *testing.T) map[string]func() asyncflow.Store {
	return map[string]func() asyncflow.Store{
		"memory": func() asyncflow.Store { return asyncflow.NewMemoryStore() },
		"bolt": func() asyncflow.Store {
			st, err := boltstore.Open(filepath.Join(t.TempDir(), "s.db"), nil)
			require.NoError(t, err)
			return st
		},
	}
}

// The sender's request (Deliver's ctx) ends while the handler runs, and
// the handler still succeeds: its result is committed all the same, so the
// sender's retry finds it and the handler does not run again.
func TestHandlerResultIsCommittedWhenTheCallerGivesUp(t *testing.T) {
	for name, open := range storeKinds(t) {
		t.Run(name, func(t *testing.T) {
			st := open()
			defer st.Close()
			var runs atomic.Int32
			var cancelRequest context.CancelFunc
			f, err := asyncflow.New(asyncflow.Config{Transport: nopTransport{}, Store: st,
				Logger: quietLog,
				Handler: func(_ context.Context, _ principal.Principal, _ asyncflow.MsgID,
					p []byte) ([]byte, error) {
					if runs.Add(1) == 1 {
						cancelRequest() // the client gave up; the work is done anyway
					}
					return p, nil
				}})
			require.NoError(t, err)
			defer f.Close()

			_, arg := newMessageArg(t, time.Now())
			ctx, cancel := context.WithCancel(context.Background())
			cancelRequest = cancel
			_ = f.Deliver(ctx, caller, asyncflow.MethodNewMessage, arg)
			// The sender's retry.
			_ = f.Deliver(context.Background(), caller, asyncflow.MethodNewMessage, arg)

			require.Equal(t, int32(1), runs.Load(),
				"a handler that returned successfully ran again without any crash")
		})
	}
}

// A Flow closing while a handler runs cancels the handler's ctx; a handler
// that succeeds anyway has its result committed, and the next Flow on the
// store does not run it again: only a crash may do that.
func TestHandlerResultIsCommittedWhenTheFlowClosesDuringIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st, err := boltstore.Open(path, nil)
	require.NoError(t, err)
	defer st.Close()

	var runs atomic.Int32
	started := make(chan struct{}, 2)
	handler := func(ctx context.Context, _ principal.Principal, _ asyncflow.MsgID,
		p []byte) ([]byte, error) {
		runs.Add(1)
		started <- struct{}{}
		<-ctx.Done() // finishes its (already made) side effect, then returns
		return p, nil
	}
	cfg := asyncflow.Config{Transport: nopTransport{}, Store: st, Logger: quietLog,
		Handler: handler}
	f, err := asyncflow.New(cfg)
	require.NoError(t, err)

	_, arg := newMessageArg(t, time.Now())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Deliver(context.Background(), caller, asyncflow.MethodNewMessage, arg)
	}()
	<-started
	require.NoError(t, f.Close())
	<-done

	cfg.Handler = func(ctx context.Context, from principal.Principal, id asyncflow.MsgID,
		p []byte) ([]byte, error) {
		runs.Add(1)
		return p, nil
	}
	f2, err := asyncflow.New(cfg)
	require.NoError(t, err)
	defer f2.Close()
	_ = f2.Deliver(context.Background(), caller, asyncflow.MethodNewMessage, arg)

	require.Equal(t, int32(1), runs.Load(),
		"the handler returned successfully once, then ran again after a clean Close")
}

// slowLookup delays the receiver's duplicate lookup (Deliver's Incoming
// call, marked through ctx) until the retry loop's expiry pass has removed
// a record: a pause between the window check and the lookup.
type slowLookup struct {
	asyncflow.Store
	expired chan struct{}
}

type slowMark struct{}

func (s *slowLookup) ExpireIncoming(ctx context.Context, before time.Time,
	limit int) (int, error) {
	n, err := s.Store.ExpireIncoming(ctx, before, limit)
	if n > 0 {
		select {
		case s.expired <- struct{}{}:
		default:
		}
	}
	return n, err
}

func (s *slowLookup) Incoming(ctx context.Context, from principal.Principal,
	id asyncflow.MsgID) (asyncflow.Incoming, error) {
	if ctx.Value(slowMark{}) != nil {
		select {
		case <-s.expired:
		case <-time.After(3 * time.Second):
		}
	}
	return s.Store.Incoming(ctx, from, id)
}

// A duplicate near the window's edge passes the window check, then loses
// a race with the expiry pass, which removes its record before the lookup:
// it is refused, not processed a second time.
func TestDuplicateThatLosesARaceWithExpiryIsRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &slowLookup{Store: asyncflow.NewMemoryStore(), expired: make(chan struct{}, 1)}
		defer st.Close()
		var runs atomic.Int32
		f, err := asyncflow.New(asyncflow.Config{Transport: nopTransport{}, Store: st,
			Logger: quietLog, RetryAfter: 20 * time.Millisecond,
			DedupWindow: 400 * time.Millisecond, MaxClockSkew: 10 * time.Millisecond,
			Handler: func(_ context.Context, _ principal.Principal, _ asyncflow.MsgID,
				p []byte) ([]byte, error) {
				runs.Add(1)
				return p, nil
			}})
		require.NoError(t, err)
		defer f.Close()

		// 300 ms old: inside the 400 ms window, which it leaves 100 ms later.
		_, arg := newMessageArg(t, time.Now().Add(-300*time.Millisecond))
		require.NoError(t, f.Deliver(context.Background(), caller,
			asyncflow.MethodNewMessage, arg))
		require.Equal(t, int32(1), runs.Load())

		ctx := context.WithValue(context.Background(), slowMark{}, true)
		err = f.Deliver(ctx, caller, asyncflow.MethodNewMessage, arg)
		require.ErrorIs(t, err, asyncflow.ErrOutsideWindow)
		require.Equal(t, int32(1), runs.Load(), "the duplicate was not processed again")
	})
}
