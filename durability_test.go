package asyncflow_test

import (
	"context"
	"errors"
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

// failingCommits is a store whose PutIncoming fails while failing is set,
// as a boltstore's does on a full disk, without a crash.
type failingCommits struct {
	*asyncflow.MemoryStore
	failing atomic.Bool
}

func (s *failingCommits) PutIncoming(ctx context.Context, m asyncflow.Incoming) error {
	if s.failing.Load() {
		return errors.New("write receiver.db: no space left on device")
	}
	return s.MemoryStore.PutIncoming(ctx, m)
}

// countingFlow starts a Flow on st whose handler answers "done:" and the
// payload, counting its runs, and whose OnProcessed counts the commits.
func countingFlow(t *testing.T, st asyncflow.Store) (f *asyncflow.Flow, runs,
	processed *atomic.Int32) {
	t.Helper()
	runs, processed = new(atomic.Int32), new(atomic.Int32)
	f, err := asyncflow.New(asyncflow.Config{Transport: nopTransport{}, Store: st,
		Logger: quietLog,
		Handler: func(_ context.Context, _ principal.Principal, _ asyncflow.MsgID,
			p []byte) ([]byte, error) {
			runs.Add(1)
			return append([]byte("done:"), p...), nil
		},
		OnProcessed: func(asyncflow.Processed) { processed.Add(1) }})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, f.Close()) })
	return f, runs, processed
}

// A commit that fails without a crash keeps the handler's result: the
// sender's next attempt commits it, and the handler does not run again.
func TestAFailedCommitIsRetriedWithoutRunningTheHandlerAgain(t *testing.T) {
	st := &failingCommits{MemoryStore: asyncflow.NewMemoryStore()}
	defer st.Close()
	f, runs, processed := countingFlow(t, st)
	id, arg := newMessageArg(t, time.Now())

	st.failing.Store(true)
	err := f.Deliver(t.Context(), caller, asyncflow.MethodNewMessage, arg)
	require.ErrorContains(t, err, "no space left on device")
	_, err = st.Incoming(t.Context(), caller, id)
	require.ErrorIs(t, err, asyncflow.ErrNotFound)
	require.Zero(t, processed.Load(), "nothing is processed before its commit")

	st.failing.Store(false)
	require.NoError(t, f.Deliver(t.Context(), caller, asyncflow.MethodNewMessage, arg))
	require.Equal(t, int32(1), runs.Load())
	require.Equal(t, int32(1), processed.Load())
	rec, err := st.Incoming(t.Context(), caller, id)
	require.NoError(t, err)
	require.Equal(t, "done:pay", string(rec.Ack))
	require.Equal(t, uint64(1), f.Stats().Processed)
}

// A kept result was computed from its payload's bytes: an attempt that
// brings other bytes under the same id runs the handler on those.
func TestAKeptResultIsNotUsedForOtherBytes(t *testing.T) {
	st := &failingCommits{MemoryStore: asyncflow.NewMemoryStore()}
	defer st.Close()
	f, runs, _ := countingFlow(t, st)
	id, arg := newMessageArg(t, time.Now())

	st.failing.Store(true)
	require.Error(t, f.Deliver(t.Context(), caller, asyncflow.MethodNewMessage, arg))
	st.failing.Store(false)
	other := asyncflow.NewMessage{MsgID: id, Payload: []byte("paz")}.AppendCandid(nil)
	require.NoError(t, f.Deliver(t.Context(), caller, asyncflow.MethodNewMessage, other))

	require.Equal(t, int32(2), runs.Load())
	rec, err := st.Incoming(t.Context(), caller, id)
	require.NoError(t, err)
	require.Equal(t, "done:paz", string(rec.Ack))
	require.Equal(t, asyncflow.HashOf([]byte("paz")).Value, rec.PayloadHash)
}

// The results kept for failed commits are bounded: one past the bound is
// dropped and its handler runs again, and results whose ids left the dedup
// window make room for new ones.
func TestKeptResultsAreBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &failingCommits{MemoryStore: asyncflow.NewMemoryStore()}
		defer st.Close()
		f, runs, _ := countingFlow(t, st)
		const bound = 4096
		args := make([][]byte, bound+1)
		st.failing.Store(true)
		for i := range args {
			_, args[i] = newMessageArg(t, time.Now())
			require.Error(t, f.Deliver(t.Context(), caller, asyncflow.MethodNewMessage,
				args[i]))
		}

		st.failing.Store(false)
		for _, arg := range args {
			require.NoError(t, f.Deliver(t.Context(), caller, asyncflow.MethodNewMessage,
				arg))
		}
		require.Equal(t, int32(bound+2), runs.Load(), "only the result past the bound ran twice")

		st.failing.Store(true)
		for range bound {
			_, arg := newMessageArg(t, time.Now())
			require.Error(t, f.Deliver(t.Context(), caller, asyncflow.MethodNewMessage, arg))
		}
		time.Sleep(asyncflow.DefaultDedupWindow + time.Second)
		_, late := newMessageArg(t, time.Now())
		require.Error(t, f.Deliver(t.Context(), caller, asyncflow.MethodNewMessage, late))
		st.failing.Store(false)
		before := runs.Load()
		require.NoError(t, f.Deliver(t.Context(), caller, asyncflow.MethodNewMessage, late))
		require.Equal(t, before, runs.Load(), "the expired results made room for this one")
	})
}
