package asyncflow

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/stretchr/testify/require"
)

// fill sends n messages from a to bob, who is down, and returns their ids.
func fill(t *testing.T, net *Network, a *peer, n int) []MsgID {
	t.Helper()
	net.Down(bob)
	var ids []MsgID
	for i := range n {
		id, err := a.flow.CallAsync(t.Context(), bob, fmt.Appendf(nil, "m%d", i))
		require.NoError(t, err)
		ids = append(ids, id)
	}
	synctest.Wait()
	return ids
}

// waitingCall runs CallAsync to bob in the background; its result arrives
// on the returned channel. It waits an hour at most, so that a slot that
// is never freed fails the test instead of hanging it.
func waitingCall(t *testing.T, f *Flow) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
		defer cancel()
		_, err := f.CallAsync(ctx, bob, []byte("next"))
		done <- err
	}()
	return done
}

// requireBlocked checks that the call behind done has not returned.
func requireBlocked(t *testing.T, done <-chan error, msg string) {
	t.Helper()
	synctest.Wait()
	select {
	case err := <-done:
		require.FailNow(t, msg, "returned %v", err)
	default:
	}
}

func TestMaxInFlightDefaultsToTheICQueueCapacity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, a, _ := newPair(t, nil)
		require.Equal(t, 500, a.flow.cfg.MaxInFlight)
		_, err := New(Config{Transport: a.probe, MaxInFlight: -1})
		require.ErrorIs(t, err, ErrInvalidConfig)
	})
}

func TestFailWhenFullRefusesAtOnceAndStoresNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, a, _ := newPair(t, func(c *Config) { c.MaxInFlight = 3 })
		fill(t, net, a, 3)

		_, err := a.flow.CallAsync(t.Context(), bob, []byte("x"), FailWhenFull())
		require.ErrorIs(t, err, ErrTooManyInFlight)
		pending, err := a.flow.Messages(t.Context(), OutPending)
		require.NoError(t, err)
		require.Len(t, pending, 3, "nothing stored")
		require.Len(t, a.probe.sent(MethodNewMessage), 3, "nothing sent")
	})
}

func TestCallAsyncWaitsUntilItsContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, a, _ := newPair(t, func(c *Config) { c.MaxInFlight = 1 })
		fill(t, net, a, 1)
		start := time.Now()

		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		_, err := a.flow.CallAsync(ctx, bob, []byte("x"))
		require.ErrorIs(t, err, ErrTooManyInFlight)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Equal(t, time.Minute, time.Since(start), "it waited as long as ctx allowed")
		require.Equal(t, 1, a.flow.inFlight.count(bob), "a waiter that left takes no slot")
	})
}

func TestASlotIsFreedWhenAMessageSettles(t *testing.T) {
	cases := []struct {
		name        string
		maxAttempts int
		settle      func(t *testing.T, a *peer, id MsgID)
	}{
		{"acked", 0, func(t *testing.T, a *peer, id MsgID) {
			ackFrom(t, a.flow, bob, Ack{MsgID: id, Hash: HashOf([]byte("m0")),
				Payload: []byte("r")})
		}},
		{"corrupt", 0, func(t *testing.T, a *peer, id MsgID) {
			ackFrom(t, a.flow, bob, Ack{MsgID: id, Hash: SomeHash(1), Payload: []byte("r")})
		}},
		{"forgotten", 0, func(t *testing.T, a *peer, id MsgID) {
			require.NoError(t, a.flow.Forget(t.Context(), id))
		}},
		{"given up", 3, func(_ *testing.T, _ *peer, _ MsgID) {
			time.Sleep(3*DefaultRetryAfter - time.Second)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				net, a, _ := newPair(t, func(c *Config) {
					c.MaxInFlight, c.MaxAttempts = 2, tc.maxAttempts
				})
				ids := fill(t, net, a, 1)
				time.Sleep(time.Second) // so that the next is given up later
				fill(t, net, a, 1)
				done := waitingCall(t, a.flow)
				requireBlocked(t, done, "the target is full")

				tc.settle(t, a, ids[0])
				synctest.Wait()
				require.NoError(t, <-done, "the waiting call got the freed slot")
				require.Equal(t, 2, a.flow.inFlight.count(bob))
			})
		})
	}
}

func TestWaitingCallsGetFreedSlotsInTheOrderTheyCame(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, a, _ := newPair(t, func(c *Config) { c.MaxInFlight = 2 })
		ids := fill(t, net, a, 2)
		first := waitingCall(t, a.flow)
		synctest.Wait()
		second := waitingCall(t, a.flow)
		requireBlocked(t, second, "the target is full")

		require.NoError(t, a.flow.Forget(t.Context(), ids[0]))
		synctest.Wait()
		require.NoError(t, <-first)
		requireBlocked(t, second, "the second waits for the next slot")

		_, err := a.flow.CallAsync(t.Context(), bob, []byte("x"), FailWhenFull())
		require.ErrorIs(t, err, ErrTooManyInFlight, "no call jumps the line")
		require.NoError(t, a.flow.Forget(t.Context(), ids[1]))
		require.NoError(t, <-second)
	})
}

func TestAFullTargetDoesNotHoldUpAnother(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, a, _ := newPair(t, func(c *Config) { c.MaxInFlight = 1 })
		newPeer(t, net, carol, nil)
		fill(t, net, a, 1)

		_, err := a.flow.CallAsync(t.Context(), carol, []byte("x"), FailWhenFull())
		require.NoError(t, err)
	})
}

func TestCloseEndsAWaitingCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, a, _ := newPair(t, func(c *Config) { c.MaxInFlight = 1 })
		fill(t, net, a, 1)
		done := waitingCall(t, a.flow)
		requireBlocked(t, done, "the target is full")

		require.NoError(t, a.flow.Close())
		require.ErrorIs(t, <-done, ErrClosed)
	})
}

// Pending messages an earlier Flow left count; corrupt and given-up ones
// do not.
func TestPendingMessagesInTheStoreCountAfterARestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, err := NewNetwork(1, Faults{})
		require.NoError(t, err)
		defer net.Close()
		newPeer(t, net, bob, nil)
		net.Down(bob)
		store := NewMemoryStore()
		defer store.Close()

		now := time.Now()
		for i, state := range []OutState{OutPending, OutPending, OutCorrupt, OutGivenUp} {
			rec := Outgoing{MsgID: idAt(t, now), To: bob, Payload: []byte{byte(i)},
				State: state, Attempts: 1}
			if state == OutPending {
				rec.NextSend = now.Add(DefaultRetryAfter)
			}
			require.NoError(t, store.PutOutgoing(t.Context(), rec))
		}
		f, err := New(Config{Transport: net.Transport(alice), Store: store, MaxInFlight: 3,
			Logger: quiet})
		require.NoError(t, err)
		defer f.Close()

		require.Equal(t, 2, f.inFlight.count(bob))
		_, err = f.CallAsync(t.Context(), bob, []byte("x"), FailWhenFull())
		require.NoError(t, err, "two pending of three")
		_, err = f.CallAsync(t.Context(), bob, []byte("y"), FailWhenFull())
		require.ErrorIs(t, err, ErrTooManyInFlight)
	})
}

// pendingWatch is a store that watches the pending records per target, and remembers the
// most it ever held for one target.
type pendingWatch struct {
	*MemoryStore

	mu      sync.Mutex
	pending map[MsgID]string
	most    int
}

func (s *pendingWatch) PutOutgoing(ctx context.Context, m Outgoing) error {
	if err := s.MemoryStore.PutOutgoing(ctx, m); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()

	delete(s.pending, m.MsgID)
	if m.State == OutPending {
		s.pending[m.MsgID] = string(m.To.Raw)
	}
	per := map[string]int{}
	for _, to := range s.pending {
		per[to]++
		s.most = max(s.most, per[to])
	}
	return nil
}

func (s *pendingWatch) DeleteOutgoing(ctx context.Context, id MsgID) error {
	if err := s.MemoryStore.DeleteOutgoing(ctx, id); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()

	delete(s.pending, id)
	return nil
}

func TestConcurrentCallersNeverExceedMaxInFlightAndLeaveNoSlotTaken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit, callers, each = 8, 20, 15
		net, err := NewNetwork(3, Faults{Drop: 0.2, Duplicate: 0.1, Corrupt: 0.01,
			Delay: 0.3, MaxDelay: 2 * time.Minute})
		require.NoError(t, err)
		defer net.Close()
		st := &pendingWatch{MemoryStore: NewMemoryStore(), pending: map[MsgID]string{}}
		a := newPeer(t, net, alice, func(c *Config) {
			c.Store, c.MaxInFlight, c.MaxAttempts = st, limit, 4
		})
		newPeer(t, net, bob, nil)
		newPeer(t, net, carol, nil)

		// A slot that leaks makes a call fail here instead of hanging.
		ctx, cancel := context.WithTimeout(t.Context(), 24*time.Hour)
		defer cancel()
		var wg sync.WaitGroup
		for i := range callers {
			to := []principal.Principal{bob, carol}[i%2]
			wg.Go(func() {
				for j := range each {
					_, err := a.flow.CallAsync(ctx, to, fmt.Appendf(nil, "%d/%d", i, j))
					if err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		time.Sleep(10 * DefaultRetryAfter)
		synctest.Wait()

		require.Equal(t, limit, st.most, "the limit was reached, never passed")
		pending, err := a.flow.Messages(t.Context(), OutPending)
		require.NoError(t, err)
		require.Empty(t, pending, "every message settled or was given up")
		require.Zero(t, a.flow.inFlight.count(bob))
		require.Zero(t, a.flow.inFlight.count(carol))
		require.Empty(t, a.flow.inFlight.ids, "no slot leaked")
		require.Empty(t, a.flow.inFlight.targets)
	})
}
