package asyncflow

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// idAt returns a fresh id whose ULID time is t.
func idAt(t *testing.T, at time.Time) MsgID {
	t.Helper()
	id, err := NewMsgID(at)
	require.NoError(t, err)
	return id
}

func TestNewMessageOutsideTheDedupWindowIsRefusedWithoutRunningTheHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, _, b := newPair(t, func(c *Config) {
			c.DedupWindow, c.MaxClockSkew = time.Hour, time.Minute
		})
		now := time.Now()
		cases := map[string]time.Time{
			"older than the window":     now.Add(-time.Hour - time.Millisecond),
			"further ahead than a skew": now.Add(time.Minute + time.Millisecond),
		}

		for name, at := range cases {
			id := idAt(t, at)
			err := b.flow.Deliver(t.Context(), alice, MethodNewMessage,
				NewMessage{MsgID: id, Payload: []byte("x")}.AppendCandid(nil))
			require.ErrorIs(t, err, ErrOutsideWindow, name)
			_, err = b.store.Incoming(t.Context(), alice, id)
			require.ErrorIs(t, err, ErrNotFound, "%s: nothing recorded", name)
		}
		synctest.Wait()

		got := b.rec.snapshot()
		require.Empty(t, got.handled, "the handler never ran")
		require.Len(t, got.rejections, 2, "each refusal is reported")
		for _, r := range got.rejections {
			require.Contains(t, r.Reason, "dedup window")
			require.True(t, r.HasMsgID)
		}
		require.Empty(t, b.probe.sent(MethodAck), "and no ack left")
		require.EqualValues(t, 2, b.flow.Stats().Rejected)
	})
}

func TestNewMessageAtTheEdgesOfTheWindowIsProcessed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, _, b := newPair(t, func(c *Config) {
			c.DedupWindow, c.MaxClockSkew = time.Hour, time.Minute
		})
		now := time.Now()

		// ULID times have millisecond precision: stay a millisecond inside.
		for _, at := range []time.Time{now.Add(-time.Hour + time.Millisecond),
			now.Add(time.Minute)} {
			newMessageTo(t, b.flow, alice, NewMessage{MsgID: idAt(t, at), Payload: []byte("x")})
		}
		synctest.Wait()

		require.Len(t, b.rec.snapshot().processed, 2)
	})
}

func TestProcessedIDsAreForgottenAfterTheWindowAndTheirRepeatsRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const window, retry = time.Hour, time.Minute
		_, a, b := newPair(t, func(c *Config) {
			c.DedupWindow, c.MaxClockSkew, c.RetryAfter = window, time.Minute, retry
		})
		id, err := a.flow.CallAsync(t.Context(), bob, []byte("once"))
		require.NoError(t, err)
		synctest.Wait()
		_, err = b.store.Incoming(t.Context(), alice, id)
		require.NoError(t, err, "processed and remembered")

		time.Sleep(window - time.Second)
		synctest.Wait()
		_, err = b.store.Incoming(t.Context(), alice, id)
		require.NoError(t, err, "still inside the window")

		time.Sleep(time.Second + retry)
		synctest.Wait()
		_, err = b.store.Incoming(t.Context(), alice, id)
		require.ErrorIs(t, err, ErrNotFound, "forgotten within RetryAfter of leaving the window")

		err = b.flow.Deliver(t.Context(), alice, MethodNewMessage,
			NewMessage{MsgID: id, Payload: []byte("once")}.AppendCandid(nil))
		require.ErrorIs(t, err, ErrOutsideWindow, "a late repeat is refused, not processed")
		require.Len(t, b.rec.snapshot().handled, 1)
	})
}

func TestAckResendsStopWhenTheRecordExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const window, retry = time.Hour, 10 * time.Minute
		_, a, b := newPair(t, func(c *Config) {
			c.DedupWindow, c.MaxClockSkew, c.RetryAfter = window, time.Minute, retry
		})

		// The sender goes away for good once its message is processed: no
		// ack reaches it, and the receiver resends its ack.
		b.probe.setDrop(func(c call) bool { return c.method == MethodAck })
		_, err := a.flow.CallAsync(t.Context(), bob, []byte("x"))
		require.NoError(t, err)
		synctest.Wait()
		require.Len(t, b.rec.snapshot().processed, 1)
		require.NoError(t, a.flow.Close())

		time.Sleep(window / 2)
		synctest.Wait()
		resent := len(b.probe.sent(MethodAck))
		require.Greater(t, resent, 2, "acks are resent inside the window")

		time.Sleep(window/2 + retry)
		synctest.Wait()
		settled := len(b.probe.sent(MethodAck))
		time.Sleep(10 * window)
		synctest.Wait()
		require.Equal(t, settled, len(b.probe.sent(MethodAck)), "no ack resent after expiry")
		_, ok, err := b.store.NextDue(t.Context())
		require.NoError(t, err)
		require.False(t, ok, "nothing left to resend")
	})
}
