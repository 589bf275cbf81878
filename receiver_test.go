package asyncflow

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/stretchr/testify/require"
)

// newMessageTo delivers a newMessage to f as caller.
func newMessageTo(t *testing.T, f *Flow, caller principal.Principal, m NewMessage) {
	t.Helper()
	require.NoError(t, f.Deliver(t.Context(), caller, MethodNewMessage, m.AppendCandid(nil)))
}

func TestHandlerGetsCallerIDAndPayloadAndItsAnswerIsTheAck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, _, b := newPair(t, nil)
		net.Down(alice)
		id, err := NewMsgID(time.Now())
		require.NoError(t, err)
		var gotFrom principal.Principal
		b.flow.cfg.Handler = func(_ context.Context, from principal.Principal, got MsgID,
			p []byte) ([]byte, error) {
			gotFrom = from
			require.Equal(t, id, got)
			return append([]byte("re:"), p...), nil
		}

		newMessageTo(t, b.flow, alice, NewMessage{MsgID: id, Payload: []byte("hi")})
		synctest.Wait()

		require.Equal(t, alice, gotFrom)
		acks := b.probe.sent(MethodAck)
		require.Len(t, acks, 1)
		require.Equal(t, alice, acks[0].to)
		var ack Ack
		require.NoError(t, ack.UnmarshalCandid(acks[0].arg))
		require.Equal(t, Ack{MsgID: id, Hash: HashOf([]byte("hi")), Payload: []byte("re:hi")},
			ack)
	})
}

func TestAckLeavesOnlyAfterTheRecordIsCommitted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, a, b := newPair(t, nil)
		checked := 0
		b.probe.check = func(c call) {
			if c.method != MethodAck {
				return
			}
			var ack Ack
			require.NoError(t, ack.UnmarshalCandid(c.arg))
			rec, err := b.store.Incoming(context.Background(), c.to, ack.MsgID)
			require.NoError(t, err, "processed means committed, before the ack")
			require.Equal(t, ack.Payload, rec.Ack)
			checked++
		}

		_, err := a.flow.CallAsync(t.Context(), bob, []byte("x"))
		require.NoError(t, err)
		synctest.Wait()
		require.Equal(t, 1, checked)
		require.Len(t, b.rec.snapshot().processed, 1)
	})
}

func TestHandlerErrorRecordsNothingAndTheRetryBringsItBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, a, b := newPair(t, nil)
		var calls atomic.Int32
		b.flow.cfg.Handler = func(_ context.Context, _ principal.Principal, _ MsgID,
			p []byte) ([]byte, error) {
			if calls.Add(1) == 1 {
				return nil, errors.New("not now")
			}
			return p, nil
		}

		id, err := a.flow.CallAsync(t.Context(), bob, []byte("x"))
		require.NoError(t, err)
		synctest.Wait()
		_, err = b.store.Incoming(t.Context(), alice, id)
		require.ErrorIs(t, err, ErrNotFound, "a failed handler leaves no record")
		require.Empty(t, b.probe.sent(MethodAck))
		require.Equal(t, uint64(1), b.flow.Stats().HandlerErrors)

		time.Sleep(DefaultRetryAfter)
		synctest.Wait()
		require.Equal(t, int32(2), calls.Load())
		require.Len(t, a.rec.snapshot().deliveries, 1)
	})
}

func TestDuplicateNewMessageIsNotProcessedAgainButReacked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, _, b := newPair(t, nil)
		net.Down(alice)
		id, err := NewMsgID(time.Now())
		require.NoError(t, err)
		m := NewMessage{MsgID: id, Payload: []byte("once")}

		for range 3 {
			newMessageTo(t, b.flow, alice, m)
			synctest.Wait()
		}

		require.Len(t, b.rec.snapshot().handled, 1)
		acks := b.probe.sent(MethodAck)
		require.Len(t, acks, 3, "every copy is answered with the stored ack")
		for _, c := range acks[1:] {
			require.Equal(t, acks[0].arg, c.arg)
		}
		require.Equal(t, uint64(2), b.flow.Stats().Duplicates)
	})
}

func TestDuplicatesWhileTheAckIsOnItsWayShareOneAck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, _, b := newPair(t, nil)
		net.Down(alice)
		release := make(chan struct{})
		b.probe.check = func(c call) {
			if c.method == MethodAck {
				<-release
			}
		}
		id, err := NewMsgID(time.Now())
		require.NoError(t, err)
		m := NewMessage{MsgID: id, Payload: []byte("once")}

		for range 3 {
			newMessageTo(t, b.flow, alice, m)
			synctest.Wait()
		}
		close(release)
		synctest.Wait()

		require.Len(t, b.rec.snapshot().handled, 1)
		require.Len(t, b.probe.sent(MethodAck), 1, "the queued ack answers them all")
	})
}

func TestDuplicateWhileHandlerRunsDoesNotRunItAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, _, b := newPair(t, nil)
		net.Down(alice)
		release := make(chan struct{})
		var runs atomic.Int32
		b.flow.cfg.Handler = func(_ context.Context, _ principal.Principal, _ MsgID,
			p []byte) ([]byte, error) {
			runs.Add(1)
			<-release
			return p, nil
		}
		id, err := NewMsgID(time.Now())
		require.NoError(t, err)
		m := NewMessage{MsgID: id, Payload: []byte("slow")}

		go newMessageTo(t, b.flow, alice, m)
		synctest.Wait()
		newMessageTo(t, b.flow, alice, m)
		close(release)
		synctest.Wait()

		require.Equal(t, int32(1), runs.Load())
		require.Equal(t, uint64(1), b.flow.Stats().Processed)
	})
}

func TestRecordsAreKeptPerCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, _, b := newPair(t, nil)
		newPeer(t, net, carol, nil)
		net.Down(alice)
		net.Down(carol)
		id, err := NewMsgID(time.Now())
		require.NoError(t, err)
		m := NewMessage{MsgID: id, Payload: []byte("same id")}

		newMessageTo(t, b.flow, alice, m)
		newMessageTo(t, b.flow, carol, m)
		synctest.Wait()

		require.Len(t, b.rec.snapshot().handled, 2)
		for _, from := range []principal.Principal{alice, carol} {
			_, err := b.store.Incoming(t.Context(), from, id)
			require.NoError(t, err)
		}
	})
}

// processedBy makes b process one message from alice, with alice down so
// that the test answers for her, and returns its id.
func processedBy(t *testing.T, net *Network, b *peer, payload []byte) MsgID {
	t.Helper()
	net.Down(alice)
	id, err := NewMsgID(time.Now())
	require.NoError(t, err)
	newMessageTo(t, b.flow, alice, NewMessage{MsgID: id, Payload: payload})
	synctest.Wait()
	return id
}

func TestAckAckStopsTheAckResends(t *testing.T) {
	cases := []struct {
		name        string
		hash        func(ack []byte) Hash
		strict      bool
		wantCorrupt bool
	}{
		{"matching hash", HashOf, false, false},
		{"null hash", func([]byte) Hash { return Hash{} }, false, false},
		{"null hash, strict", func([]byte) Hash { return Hash{} }, true, true},
		{"wrong hash", func([]byte) Hash { return SomeHash(7) }, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				net, _, b := newPair(t, func(c *Config) { c.StrictHash = tc.strict })
				id := processedBy(t, net, b, []byte("p"))
				ackPayload := []byte("ack:p")

				aa := AckAck{MsgID: id, Hash: tc.hash(ackPayload)}
				require.NoError(t, b.flow.Deliver(t.Context(), alice, MethodAckAck,
					aa.AppendCandid(nil)))
				time.Sleep(3 * DefaultRetryAfter)
				synctest.Wait()

				require.Len(t, b.probe.sent(MethodAck), 1, "no resend after the ackack")
				rec, err := b.store.Incoming(t.Context(), alice, id)
				require.NoError(t, err)
				require.Equal(t, InDone, rec.State, "kept as seen")

				corrupt := b.rec.snapshot().corrupt
				if !tc.wantCorrupt {
					require.Empty(t, corrupt)
					return
				}
				require.Equal(t, []Corruption{{Side: SideReceiver, Peer: alice, MsgID: id,
					Sent: ackPayload, Expected: HashOf(ackPayload), Got: aa.Hash}}, corrupt)
			})
		})
	}
}

func TestAckAckFromAnotherCallerChangesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, _, b := newPair(t, nil)
		id := processedBy(t, net, b, []byte("p"))

		aa := AckAck{MsgID: id, Hash: HashOf([]byte("ack:p"))}
		require.NoError(t, b.flow.Deliver(t.Context(), carol, MethodAckAck,
			aa.AppendCandid(nil)))
		time.Sleep(DefaultRetryAfter)
		synctest.Wait()

		rec, err := b.store.Incoming(t.Context(), alice, id)
		require.NoError(t, err)
		require.Equal(t, InAcking, rec.State)
		require.Len(t, b.probe.sent(MethodAck), 2, "the ack is still resent")
	})
}

func TestNewMessageFromACallerWithoutARouteBackIsRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, _, b := newPair(t, nil)
		id, err := NewMsgID(time.Now())
		require.NoError(t, err)

		err = b.flow.Deliver(t.Context(), carol, MethodNewMessage,
			NewMessage{MsgID: id, Payload: []byte("x")}.AppendCandid(nil))
		require.ErrorIs(t, err, ErrNoRoute)

		require.Empty(t, b.rec.snapshot().handled, "the handler does not run")
		_, err = b.store.Incoming(t.Context(), carol, id)
		require.ErrorIs(t, err, ErrNotFound)
		require.Len(t, b.rec.snapshot().rejections, 1)
	})
}
