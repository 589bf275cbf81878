package asyncflow

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

func TestUnackedNewMessageIsResentEveryRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, a, _ := newPair(t, nil)
		net.Down(bob)
		start := time.Now()

		_, err := a.flow.CallAsync(t.Context(), bob, []byte("x"))
		require.NoError(t, err)
		time.Sleep(3*DefaultRetryAfter + time.Second)
		synctest.Wait()

		sends := a.probe.sent(MethodNewMessage)
		require.Len(t, sends, 4)
		for i, c := range sends {
			require.Equal(t, time.Duration(i)*DefaultRetryAfter, c.at.Sub(start))
			require.Equal(t, sends[0].arg, c.arg, "the same message every time")
		}
		require.Equal(t, uint64(3), a.flow.Stats().Resent)
	})
}

func TestRetryAfterIsConfigurable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, a, _ := newPair(t, func(c *Config) { c.RetryAfter = time.Second })
		net.Down(bob)
		start := time.Now()

		_, err := a.flow.CallAsync(t.Context(), bob, []byte("x"))
		require.NoError(t, err)
		time.Sleep(2500 * time.Millisecond)
		synctest.Wait()

		sends := a.probe.sent(MethodNewMessage)
		require.Len(t, sends, 3)
		require.Equal(t, 2*time.Second, sends[2].at.Sub(start))
	})
}

func TestUnackackedAckIsResentUntilTheAckAckArrives(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, a, b := newPair(t, nil)
		a.probe.setDrop(func(c call) bool { return c.method == MethodAckAck })

		_, err := a.flow.CallAsync(t.Context(), bob, []byte("x"))
		require.NoError(t, err)
		time.Sleep(2*DefaultRetryAfter + time.Second)
		synctest.Wait()
		require.Len(t, b.probe.sent(MethodAck), 3, "first ack and two resends")
		require.Len(t, a.rec.snapshot().deliveries, 1, "the callback ran once")

		a.probe.setDrop(nil)
		time.Sleep(5 * DefaultRetryAfter)
		synctest.Wait()
		require.Len(t, b.probe.sent(MethodAck), 4, "one more, answered, then silence")
	})
}

func TestEveryMessageArrivesOnceThroughAFaultyNetwork(t *testing.T) {
	for seed := range uint64(5) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				net, err := NewNetwork(seed, Faults{Drop: 0.2, Duplicate: 0.1,
					Corrupt: 0.01, Delay: 0.3, MaxDelay: 2 * time.Minute})
				require.NoError(t, err)
				defer net.Close()
				a := newPeer(t, net, alice, nil)
				b := newPeer(t, net, bob, nil)

				const n = 300
				sent := make(map[MsgID]bool)
				for i := range n {
					id, err := a.flow.CallAsync(t.Context(), bob, fmt.Appendf(nil, "m%d", i))
					require.NoError(t, err)
					sent[id] = true
				}
				time.Sleep(20 * DefaultRetryAfter)
				synctest.Wait()

				processed := map[MsgID]int{}
				for _, p := range b.rec.snapshot().processed {
					processed[p.MsgID]++
				}
				settled := map[MsgID]bool{}
				for _, d := range a.rec.snapshot().deliveries {
					settled[d.MsgID] = true
				}
				corrupt, err := a.flow.Messages(t.Context(), OutCorrupt)
				require.NoError(t, err)
				for _, c := range corrupt {
					settled[c.MsgID] = true
				}
				for id := range sent {
					require.Equal(t, 1, processed[id], "processed exactly once")
					require.True(t, settled[id], "delivered or reported corrupt")
				}
				pending, err := a.flow.Messages(t.Context(), OutPending)
				require.NoError(t, err)
				require.Empty(t, pending)
				require.Positive(t, net.Stats().Dropped)
				require.Positive(t, net.Stats().Duplicated)
			})
		})
	}
}

func TestARetryDoesNotQueueAMessageWhoseSendHasNotLeft(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, err := NewNetwork(1, Faults{})
		require.NoError(t, err)
		defer net.Close()
		b := newPeer(t, net, bob, nil)
		release := make(chan struct{})
		slow := &probe{from: alice, next: net.Transport(alice)}
		slow.check = func(c call) {
			if c.method == MethodNewMessage {
				<-release
			}
		}
		a := newPeer(t, net, alice, func(c *Config) {
			c.Transport = slow
			c.SendWorkers = 1
			c.RetryAfter = time.Second
		})

		for range 5 {
			_, err := a.flow.CallAsync(t.Context(), bob, []byte("x"))
			require.NoError(t, err)
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		require.Len(t, slow.sent(MethodNewMessage), 1, "one send stuck, four queued")
		require.Zero(t, a.flow.Stats().Resent, "nothing queued twice")

		close(release)
		synctest.Wait()
		require.Len(t, slow.sent(MethodNewMessage), 5)
		require.Len(t, b.rec.snapshot().processed, 5)
	})
}

// readCountingStore counts the reads of single outgoing records.
type readCountingStore struct {
	*MemoryStore
	reads atomic.Int32
}

func (s *readCountingStore) Outgoing(ctx context.Context, id MsgID) (Outgoing, error) {
	s.reads.Add(1)
	return s.MemoryStore.Outgoing(ctx, id)
}

// The due scan already copied the record out of the store; a resend uses
// that copy rather than reading the record once more.
func TestAResendUsesTheRecordTheDueScanReturned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, err := NewNetwork(1, Faults{})
		require.NoError(t, err)
		defer net.Close()
		st := &readCountingStore{MemoryStore: NewMemoryStore()}
		a := newPeer(t, net, alice, func(c *Config) { c.Store = st })
		newPeer(t, net, bob, nil)
		net.Down(bob)

		id, err := a.flow.CallAsync(t.Context(), bob, []byte("x"))
		require.NoError(t, err)
		time.Sleep(3 * DefaultRetryAfter)
		synctest.Wait()

		require.EqualValues(t, 3, a.flow.Stats().Resent)
		require.Zero(t, st.reads.Load(), "no record read again")
		rec, err := st.MemoryStore.Outgoing(t.Context(), id)
		require.NoError(t, err)
		require.EqualValues(t, 4, rec.Attempts)
		require.True(t, rec.NextSend.Equal(time.Now().Add(DefaultRetryAfter)))
	})
}

// A pending record the Flow does not count, because something else put
// it in the store, is read before it is resent, and counted from then on.
func TestAPendingRecordTheFlowDidNotCountIsResentAndCounted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, a, _ := newPair(t, nil)
		net.Down(bob)
		id := newID(t)
		require.NoError(t, a.store.PutOutgoing(t.Context(), Outgoing{MsgID: id, To: bob,
			Payload: []byte("x"), State: OutPending, Attempts: 1, NextSend: time.Now()}))

		time.Sleep(DefaultRetryAfter)
		synctest.Wait()
		require.NotEmpty(t, a.probe.sent(MethodNewMessage))
		require.Equal(t, 1, a.flow.inFlight.count(bob))

		require.NoError(t, a.flow.Forget(t.Context(), id))
		require.Zero(t, a.flow.inFlight.count(bob))
	})
}

// The due scan's copy may be stale by the time the retry takes the
// record's lock: an ack settled the message meanwhile. The retry must not
// bring the settled message back to pending.
func TestAResendOfAStaleCopyLeavesASettledMessageAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, a, _ := newPair(t, nil)
		id := pendingMessage(t, net, a, []byte("x"))
		stale, err := a.store.Outgoing(t.Context(), id)
		require.NoError(t, err)

		ackFrom(t, a.flow, bob, Ack{MsgID: id, Hash: SomeHash(1), Payload: []byte("r")})
		moved, giveUp, err := a.flow.resendMessage(t.Context(), stale,
			time.Now().Add(DefaultRetryAfter))
		require.NoError(t, err)
		require.False(t, moved)
		require.Nil(t, giveUp)

		rec, err := a.store.Outgoing(t.Context(), id)
		require.NoError(t, err)
		require.Equal(t, OutCorrupt, rec.State, "still corrupt, not pending")
		require.Len(t, a.probe.sent(MethodNewMessage), 1, "and not resent")
	})
}
