package asyncflow

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// giveUps collects what OnGiveUp reports.
type giveUps struct {
	mu   sync.Mutex
	list []GiveUp
}

func (g *giveUps) onGiveUp(_ context.Context, u GiveUp) {
	g.mu.Lock()
	defer g.mu.Unlock()

	g.list = append(g.list, u)
}

func (g *giveUps) snapshot() []GiveUp {
	g.mu.Lock()
	defer g.mu.Unlock()

	return append([]GiveUp(nil), g.list...)
}

func TestNewRefusesAGiveUpTheDedupWindowCannotCover(t *testing.T) {
	net, err := NewNetwork(1, Faults{})
	require.NoError(t, err)
	tr := net.Transport(alice)

	cases := []struct {
		name string
		cfg  Config
	}{
		{"negative give-up", Config{Transport: tr, GiveUpAfter: -time.Second}},
		{"give-up plus skew is the window", Config{Transport: tr,
			GiveUpAfter: DefaultDedupWindow - DefaultMaxClockSkew}},
		{"give-up is the window", Config{Transport: tr, GiveUpAfter: DefaultDedupWindow}},
		{"give-up fits a default window, not a shorter one", Config{Transport: tr,
			GiveUpAfter: 2 * time.Hour, DedupWindow: time.Hour}},
		{"negative max attempts", Config{Transport: tr, MaxAttempts: -1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			require.ErrorIs(t, err, ErrInvalidConfig)
		})
	}
}

func TestGiveUpAfterDefaultsInsideTheDedupWindow(t *testing.T) {
	cases := []struct {
		name         string
		window, skew time.Duration
		want         time.Duration
	}{
		{"default window", 0, 0, DefaultGiveUpAfter},
		{"longer window", 48 * time.Hour, 0, DefaultGiveUpAfter},
		{"window too short for the default", time.Hour, 12 * time.Minute, 46 * time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				net, err := NewNetwork(1, Faults{})
				require.NoError(t, err)
				f, err := New(Config{Transport: net.Transport(alice), Logger: quiet,
					DedupWindow: tc.window, MaxClockSkew: tc.skew})
				require.NoError(t, err)
				defer f.Close()

				require.Equal(t, tc.want, f.cfg.GiveUpAfter)
				require.Less(t, f.cfg.GiveUpAfter+f.cfg.MaxClockSkew, f.cfg.DedupWindow)
				require.Zero(t, f.cfg.MaxAttempts, "no limit on attempts by default")
			})
		})
	}
}

func TestSenderGivesUpGiveUpAfterTheIDTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var got giveUps
		net, a, _ := newPair(t, func(c *Config) { c.OnGiveUp = got.onGiveUp })
		net.Down(bob)
		start := time.Now()

		payload := []byte("hello")
		id, err := a.flow.CallAsync(t.Context(), bob, payload)
		require.NoError(t, err)
		time.Sleep(DefaultGiveUpAfter - time.Millisecond)
		synctest.Wait()
		require.Empty(t, got.snapshot(), "still resent just before")

		time.Sleep(time.Millisecond)
		synctest.Wait()
		sends := len(a.probe.sent(MethodNewMessage))
		want := int((DefaultGiveUpAfter-1)/DefaultRetryAfter) + 1
		require.Equal(t, want, sends, "sent every RetryAfter until then")
		g := got.snapshot()
		require.Len(t, g, 1)
		require.True(t, g[0].FirstSent.Equal(start), "first sent %s", g[0].FirstSent)
		g[0].FirstSent = time.Time{}
		require.Equal(t, GiveUp{To: bob, MsgID: id, Payload: payload,
			Attempts: uint32(sends), Reason: GiveUpTooOld}, g[0])

		rec, err := a.store.Outgoing(t.Context(), id)
		require.NoError(t, err)
		require.Equal(t, OutGivenUp, rec.State)
		require.EqualValues(t, 1, a.flow.Stats().GivenUp)

		time.Sleep(10 * DefaultRetryAfter)
		synctest.Wait()
		require.Len(t, a.probe.sent(MethodNewMessage), sends, "no longer resent")
		require.Len(t, got.snapshot(), 1, "reported once")
	})
}

func TestSenderGivesUpRetryAfterTheLastOfMaxAttempts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var got giveUps
		net, a, _ := newPair(t, func(c *Config) {
			c.MaxAttempts = 3
			c.OnGiveUp = got.onGiveUp
		})
		net.Down(bob)

		id, err := a.flow.CallAsync(t.Context(), bob, []byte("x"))
		require.NoError(t, err)
		time.Sleep(3*DefaultRetryAfter - time.Nanosecond)
		synctest.Wait()
		require.Len(t, a.probe.sent(MethodNewMessage), 3)
		require.Empty(t, got.snapshot(), "the last send still has its RetryAfter")

		time.Sleep(time.Nanosecond)
		synctest.Wait()
		g := got.snapshot()
		require.Len(t, g, 1)
		require.Equal(t, id, g[0].MsgID)
		require.Equal(t, GiveUpTooManyAttempts, g[0].Reason)
		require.EqualValues(t, 3, g[0].Attempts)

		time.Sleep(10 * DefaultRetryAfter)
		synctest.Wait()
		require.Len(t, a.probe.sent(MethodNewMessage), 3, "never a fourth send")
	})
}

func TestGiveUpAfterShorterThanRetryAfterSendsOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var got giveUps
		net, a, _ := newPair(t, func(c *Config) {
			c.GiveUpAfter = time.Minute
			c.OnGiveUp = got.onGiveUp
		})
		net.Down(bob)

		_, err := a.flow.CallAsync(t.Context(), bob, []byte("x"))
		require.NoError(t, err)
		time.Sleep(time.Minute)
		synctest.Wait()

		require.Len(t, got.snapshot(), 1, "given up on time, not at the next RetryAfter")
		require.Len(t, a.probe.sent(MethodNewMessage), 1)
	})
}

// A give-up says only that no ack came: the receiver did process the
// message, and its ack, when it gets through, settles it like any ack.
func TestLateAckForAGivenUpMessageIsDeliveredAndForgotten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var got giveUps
		_, a, b := newPair(t, func(c *Config) {
			c.MaxAttempts = 1
			c.OnGiveUp = got.onGiveUp
		})
		b.probe.setDrop(func(c call) bool { return c.method == MethodAck })

		id, err := a.flow.CallAsync(t.Context(), bob, []byte("x"))
		require.NoError(t, err)
		time.Sleep(DefaultRetryAfter)
		synctest.Wait()
		require.Len(t, got.snapshot(), 1)
		require.Len(t, b.rec.snapshot().processed, 1, "processed all the same")

		b.probe.setDrop(nil)
		time.Sleep(DefaultRetryAfter)
		synctest.Wait()

		deliveries := a.rec.snapshot().deliveries
		require.Len(t, deliveries, 1, "OnAck runs for the late ack")
		require.Equal(t, id, deliveries[0].MsgID)
		require.Equal(t, []byte("ack:x"), deliveries[0].Received)
		_, err = a.store.Outgoing(t.Context(), id)
		require.ErrorIs(t, err, ErrNotFound, "the record is forgotten")
		rec, err := b.store.Incoming(t.Context(), alice, id)
		require.NoError(t, err)
		require.Equal(t, InDone, rec.State, "the ackack stopped the receiver's resends")
		require.EqualValues(t, 1, a.flow.Stats().Delivered)
	})
}

func TestLateAckWithAWrongHashMarksAGivenUpMessageCorrupt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, a, _ := newPair(t, func(c *Config) { c.MaxAttempts = 1 })
		id := pendingMessage(t, net, a, []byte("x"))
		time.Sleep(DefaultRetryAfter)
		synctest.Wait()

		ackFrom(t, a.flow, bob, Ack{MsgID: id, Hash: SomeHash(1), Payload: []byte("r")})
		synctest.Wait()

		require.Len(t, a.rec.snapshot().corrupt, 1)
		require.Empty(t, a.rec.snapshot().deliveries)
		require.Len(t, a.probe.sent(MethodAckAck), 1)
		rec, err := a.store.Outgoing(t.Context(), id)
		require.NoError(t, err)
		require.Equal(t, OutCorrupt, rec.State)
	})
}

func TestGivenUpMessageOutlivesTheFlowUntilForgotten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, err := NewNetwork(1, Faults{})
		require.NoError(t, err)
		defer net.Close()
		store := NewMemoryStore()
		defer store.Close()
		newPeer(t, net, bob, nil)
		net.Down(bob)
		var got giveUps
		start := func() (*Flow, *probe) {
			pr := &probe{from: alice, next: net.Transport(alice)}
			f, err := New(Config{Transport: pr, Store: store, MaxAttempts: 1,
				OnGiveUp: got.onGiveUp, Logger: quiet})
			require.NoError(t, err)
			return f, pr
		}

		f, _ := start()
		id, err := f.CallAsync(t.Context(), bob, []byte("x"))
		require.NoError(t, err)
		time.Sleep(DefaultRetryAfter)
		synctest.Wait()
		require.Len(t, got.snapshot(), 1)
		require.NoError(t, f.Close())

		f, pr := start()
		defer f.Close()
		time.Sleep(10 * DefaultRetryAfter)
		synctest.Wait()
		list, err := f.Messages(t.Context(), OutGivenUp)
		require.NoError(t, err)
		require.Len(t, list, 1, "the next Flow lists it")
		require.Equal(t, id, list[0].MsgID)
		require.Empty(t, pr.sent(MethodNewMessage), "and does not resend it")
		require.Len(t, got.snapshot(), 1, "nor report it again")

		require.NoError(t, f.Forget(t.Context(), id))
		list, err = f.Messages(t.Context(), OutGivenUp)
		require.NoError(t, err)
		require.Empty(t, list)
	})
}

// A pending message an earlier Flow left, with settings that let it live
// longer, is given up when it is next due rather than sent again.
func TestResumedMessagePastGiveUpAfterIsGivenUpNotResent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, err := NewNetwork(1, Faults{})
		require.NoError(t, err)
		defer net.Close()
		store := NewMemoryStore()
		defer store.Close()
		now := time.Now()
		id := idAt(t, now.Add(-DefaultGiveUpAfter-time.Minute))
		require.NoError(t, store.PutOutgoing(t.Context(), Outgoing{MsgID: id, To: bob,
			Payload: []byte("old"), State: OutPending, Attempts: 200, NextSend: now}))

		var got giveUps
		pr := &probe{from: alice, next: net.Transport(alice)}
		f, err := New(Config{Transport: pr, Store: store, OnGiveUp: got.onGiveUp,
			Logger: quiet})
		require.NoError(t, err)
		defer f.Close()
		synctest.Wait()

		g := got.snapshot()
		require.Len(t, g, 1)
		require.Equal(t, GiveUpTooOld, g[0].Reason)
		require.EqualValues(t, 200, g[0].Attempts)
		require.Empty(t, pr.sent(MethodNewMessage))
	})
}

// OnGiveUp runs without the record's lock, so it may act on the record.
func TestOnGiveUpMayForgetTheMessage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var a *peer
		net, a, _ := newPair(t, func(c *Config) {
			c.MaxAttempts = 1
			c.OnGiveUp = func(ctx context.Context, g GiveUp) {
				require.NoError(t, a.flow.Forget(ctx, g.MsgID))
			}
		})
		id := pendingMessage(t, net, a, []byte("x"))
		time.Sleep(DefaultRetryAfter)
		synctest.Wait()

		_, err := a.store.Outgoing(t.Context(), id)
		require.ErrorIs(t, err, ErrNotFound)
	})
}

// The sender gives up while the receiver still remembers the message, and
// the receiver's ack resends stop once the record expires: nothing is
// resent forever, and nothing is processed twice.
func TestGiveUpComesBeforeTheReceiverForgets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const window, skew, retry = time.Hour, time.Minute, time.Minute
		var got giveUps
		_, a, b := newPair(t, func(c *Config) {
			c.DedupWindow, c.MaxClockSkew, c.RetryAfter = window, skew, retry
			c.OnGiveUp = got.onGiveUp
		})
		b.probe.setDrop(func(c call) bool { return c.method == MethodAck })

		id, err := a.flow.CallAsync(t.Context(), bob, []byte("x"))
		require.NoError(t, err)
		time.Sleep(a.flow.cfg.GiveUpAfter)
		synctest.Wait()
		require.Len(t, got.snapshot(), 1, "given up")
		_, err = b.store.Incoming(t.Context(), alice, id)
		require.NoError(t, err, "while the receiver still remembers it")
		require.Len(t, b.rec.snapshot().handled, 1, "and processed it once")

		time.Sleep(window - a.flow.cfg.GiveUpAfter + retry)
		synctest.Wait()
		_, err = b.store.Incoming(t.Context(), alice, id)
		require.ErrorIs(t, err, ErrNotFound, "the receiver forgot it after the window")
		acks := len(b.probe.sent(MethodAck))
		time.Sleep(10 * window)
		synctest.Wait()
		require.Len(t, b.probe.sent(MethodAck), acks, "and stopped resending its ack")
		require.Len(t, b.rec.snapshot().handled, 1)
	})
}
