package asyncflow

import (
	"context"
	"hash/crc32"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/stretchr/testify/require"
)

func TestCallAsyncReturnsMonotonicIDUsableAsNatAndText(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, a, _ := newPair(t, nil)

		var prev MsgID
		for i := range 50 {
			id, err := a.flow.CallAsync(t.Context(), bob, []byte{byte(i)})
			require.NoError(t, err)
			require.Positive(t, id.Compare(prev), "ids increase")
			prev = id

			fromNat, err := MsgIDFromNat(id.Nat())
			require.NoError(t, err)
			require.Equal(t, id, fromNat)
			fromText, err := ParseMsgID(id.String())
			require.NoError(t, err)
			require.Equal(t, id, fromText)
			fromDecimal, err := ParseMsgID(id.Decimal())
			require.NoError(t, err)
			require.Equal(t, id, fromDecimal)
			require.Equal(t, time.Now().UnixMilli(), id.Time().UnixMilli())
		}
	})
}

func TestCallAsyncStoresBeforeTheFirstSend(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, a, _ := newPair(t, nil)
		var seen []OutState
		a.probe.check = func(c call) {
			if c.method != MethodNewMessage {
				return
			}
			var m NewMessage
			require.NoError(t, m.UnmarshalCandid(c.arg))
			rec, err := a.store.Outgoing(context.Background(), m.MsgID)
			require.NoError(t, err, "stored before it is sent")
			seen = append(seen, rec.State)
		}

		_, err := a.flow.CallAsync(t.Context(), bob, []byte("hello"))
		require.NoError(t, err)
		synctest.Wait()
		require.Equal(t, []OutState{OutPending}, seen)
	})
}

func TestCallAsyncRefusesBadTargets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, a, _ := newPair(t, nil)
		cases := []struct {
			name   string
			target principal.Principal
			want   error
		}{
			{"empty", principal.Principal{}, ErrInvalidPrincipal},
			{"anonymous", principal.AnonymousID, ErrInvalidPrincipal},
			{"too long", principal.Principal{Raw: make([]byte, 30)}, ErrInvalidPrincipal},
			{"no route", carol, ErrNoRoute},
		}
		for _, tc := range cases {
			_, err := a.flow.CallAsync(t.Context(), tc.target, []byte("x"))
			require.ErrorIs(t, err, tc.want, tc.name)
		}

		synctest.Wait()
		pending, err := a.flow.Messages(t.Context(), OutPending)
		require.NoError(t, err)
		require.Empty(t, pending, "a refused call stores nothing")
		require.Empty(t, a.probe.sent(MethodNewMessage))
	})
}

func TestAckWithMatchingHashRunsCallbackSendsAckAckAndForgets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, a, b := newPair(t, nil)
		payload := []byte("hello")

		id, err := a.flow.CallAsync(t.Context(), bob, payload)
		require.NoError(t, err)
		synctest.Wait()

		got := a.rec.snapshot().deliveries
		require.Len(t, got, 1)
		want := []byte("ack:hello")
		require.Equal(t, Delivery{To: bob, MsgID: id, Sent: payload, Received: want,
			Hash: SomeHash(crc32.ChecksumIEEE(payload))}, got[0])

		ackacks := a.probe.sent(MethodAckAck)
		require.Len(t, ackacks, 1)
		var aa AckAck
		require.NoError(t, aa.UnmarshalCandid(ackacks[0].arg))
		require.Equal(t, AckAck{MsgID: id, Hash: SomeHash(crc32.ChecksumIEEE(want))}, aa)
		require.Equal(t, bob, ackacks[0].to)

		_, err = a.store.Outgoing(t.Context(), id)
		require.ErrorIs(t, err, ErrNotFound, "the sender forgets a delivered message")
		rec, err := b.store.Incoming(t.Context(), alice, id)
		require.NoError(t, err)
		require.Equal(t, InDone, rec.State)
	})
}

// ackFrom delivers an ack for id to f as caller.
func ackFrom(t *testing.T, f *Flow, caller principal.Principal, ack Ack) {
	t.Helper()
	require.NoError(t, f.Deliver(t.Context(), caller, MethodAck, ack.AppendCandid(nil)))
}

// pendingMessage sends one message from a to bob, with bob unreachable so
// that the test can answer for him.
func pendingMessage(t *testing.T, net *Network, a *peer, payload []byte) MsgID {
	t.Helper()
	net.Down(bob)
	id, err := a.flow.CallAsync(t.Context(), bob, payload)
	require.NoError(t, err)
	synctest.Wait()
	return id
}

func TestAckWithNullHashIsAcceptedUnlessStrict(t *testing.T) {
	for _, strict := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			net, a, _ := newPair(t, func(c *Config) { c.StrictHash = strict })
			id := pendingMessage(t, net, a, []byte("p"))

			ackFrom(t, a.flow, bob, Ack{MsgID: id, Payload: []byte("r")})
			synctest.Wait()

			got := a.rec.snapshot()
			if strict {
				require.Empty(t, got.deliveries)
				require.Len(t, got.corrupt, 1)
				require.False(t, got.corrupt[0].Got.Valid)
				return
			}
			require.Len(t, got.deliveries, 1)
			require.False(t, got.deliveries[0].Hash.Valid, "never reported as verified")
			require.Empty(t, got.corrupt)
		})
	}
}

func TestAckWithWrongHashIsCorruptYetAnsweredWithAckAck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, a, _ := newPair(t, nil)
		payload := []byte("payload")
		id := pendingMessage(t, net, a, payload)

		bad := Ack{MsgID: id, Hash: SomeHash(12345), Payload: []byte("answer")}
		ackFrom(t, a.flow, bob, bad)
		synctest.Wait()

		got := a.rec.snapshot()
		require.Empty(t, got.deliveries, "no ack callback for a corrupt exchange")
		require.Equal(t, []Corruption{{Side: SideSender, Peer: bob, MsgID: id, Sent: payload,
			Received: []byte("answer"), Expected: HashOf(payload), Got: SomeHash(12345)}},
			got.corrupt)
		require.Len(t, a.probe.sent(MethodAckAck), 1, "the receiver must stop resending")

		corrupt, err := a.flow.Messages(t.Context(), OutCorrupt)
		require.NoError(t, err)
		require.Len(t, corrupt, 1)
		require.Equal(t, id, corrupt[0].MsgID)
		require.Equal(t, []byte("answer"), corrupt[0].Ack)

		time.Sleep(3 * DefaultRetryAfter)
		synctest.Wait()
		require.Len(t, a.probe.sent(MethodNewMessage), 1, "a corrupt message is not resent")

		ackFrom(t, a.flow, bob, bad)
		synctest.Wait()
		require.Len(t, a.probe.sent(MethodAckAck), 2, "a repeated ack is answered again")
		require.Len(t, a.rec.snapshot().corrupt, 1, "and reported once")

		require.NoError(t, a.flow.Forget(t.Context(), id))
		corrupt, err = a.flow.Messages(t.Context(), OutCorrupt)
		require.NoError(t, err)
		require.Empty(t, corrupt)
	})
}

func TestAckForUnknownIDIsAnsweredWithAckAckOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, a, _ := newPair(t, nil)
		id, err := NewMsgID(time.Now())
		require.NoError(t, err)

		ackFrom(t, a.flow, bob, Ack{MsgID: id, Hash: SomeHash(1), Payload: []byte("z")})
		synctest.Wait()

		ackacks := a.probe.sent(MethodAckAck)
		require.Len(t, ackacks, 1)
		require.Equal(t, bob, ackacks[0].to)
		require.Equal(t, AckAck{MsgID: id}, lastAckAck(t, a.probe, id),
			"a sender that took no answer confirms none")

		got := a.rec.snapshot()
		require.Empty(t, got.deliveries)
		require.Empty(t, got.corrupt)
		require.Empty(t, got.rejections)
	})
}

// lastAckAck returns the last ackack p sent for id.
func lastAckAck(t *testing.T, p *probe, id MsgID) AckAck {
	t.Helper()
	aas := ackacksFor(t, p, id)
	require.NotEmpty(t, aas)
	return aas[len(aas)-1]
}

func TestAResentAckIsAnsweredWithTheAnswerTaken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, a, _ := newPair(t, nil)
		payload := []byte("p")
		id := pendingMessage(t, net, a, payload)
		took := Ack{MsgID: id, Hash: HashOf(payload), Payload: []byte("answer")}
		other := Ack{MsgID: id, Hash: HashOf(payload), Payload: []byte("ANSWER")}

		ackFrom(t, a.flow, bob, took)
		synctest.Wait()
		_, err := a.store.Outgoing(t.Context(), id)
		require.ErrorIs(t, err, ErrNotFound, "settled and forgotten")

		ackFrom(t, a.flow, bob, other)
		synctest.Wait()
		require.Equal(t, AckAck{MsgID: id, Hash: HashOf(took.Payload)}, lastAckAck(t, a.probe, id),
			"the ackack confirms the answer taken, not the copy that came")

		ackFrom(t, a.flow, carol, other)
		synctest.Wait()
		require.Equal(t, AckAck{MsgID: id}, lastAckAck(t, a.probe, id),
			"another principal learns nothing of the answer")
		require.Len(t, a.rec.snapshot().deliveries, 1)
		require.Empty(t, a.rec.snapshot().corrupt)
	})
}

func TestAResentAckOfACorruptMessageIsAnsweredWithItsAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, a, _ := newPair(t, nil)
		id := pendingMessage(t, net, a, []byte("p"))
		bad := Ack{MsgID: id, Hash: SomeHash(1), Payload: []byte("answer")}
		other := Ack{MsgID: id, Hash: SomeHash(1), Payload: []byte("ANSWER")}

		ackFrom(t, a.flow, bob, bad)
		ackFrom(t, a.flow, bob, other)
		synctest.Wait()
		require.Equal(t, AckAck{MsgID: id, Hash: HashOf(bad.Payload)}, lastAckAck(t, a.probe, id),
			"while kept as corrupt")

		require.NoError(t, a.flow.Forget(t.Context(), id))
		ackFrom(t, a.flow, bob, other)
		synctest.Wait()
		require.Equal(t, AckAck{MsgID: id, Hash: HashOf(bad.Payload)}, lastAckAck(t, a.probe, id),
			"and once forgotten")
		require.Len(t, a.rec.snapshot().corrupt, 1)
	})
}

func TestARestartedSenderConfirmsNoAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, a, _ := newPair(t, nil)
		id := pendingMessage(t, net, a, []byte("p"))
		ack := Ack{MsgID: id, Hash: HashOf([]byte("p")), Payload: []byte("answer")}
		ackFrom(t, a.flow, bob, ack)
		synctest.Wait()
		require.NoError(t, a.flow.Close())

		pr := &probe{from: alice, next: net.Transport(alice)}
		f, err := New(Config{Transport: pr, Store: a.store, Logger: quiet})
		require.NoError(t, err)
		defer f.Close()
		ackFrom(t, f, bob, ack)
		synctest.Wait()
		require.Equal(t, AckAck{MsgID: id}, lastAckAck(t, pr, id),
			"the answer taken is not kept across a restart")
	})
}

func TestAckFromAnotherPrincipalChangesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, a, _ := newPair(t, nil)
		payload := []byte("p")
		id := pendingMessage(t, net, a, payload)

		err := a.flow.Deliver(t.Context(), carol, MethodAck,
			Ack{MsgID: id, Hash: HashOf(payload), Payload: []byte("r")}.AppendCandid(nil))
		require.ErrorIs(t, err, ErrNotPeer)
		synctest.Wait()

		got := a.rec.snapshot()
		require.Empty(t, got.deliveries)
		require.Empty(t, a.probe.sent(MethodAckAck))
		require.Len(t, got.rejections, 1)
		require.Equal(t, carol, got.rejections[0].From)
		rec, err := a.store.Outgoing(t.Context(), id)
		require.NoError(t, err)
		require.Equal(t, OutPending, rec.State)

		ackFrom(t, a.flow, bob, Ack{MsgID: id, Hash: HashOf(payload), Payload: []byte("r")})
		synctest.Wait()
		require.Len(t, a.rec.snapshot().deliveries, 1, "the real peer still can")
	})
}

func TestAckedMessagesLeftByAnEarlierFlowRunTheirCallbackAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, err := NewNetwork(1, Faults{})
		require.NoError(t, err)
		defer net.Close()
		store := NewMemoryStore()
		defer store.Close()

		id, err := NewMsgID(time.Now())
		require.NoError(t, err)
		rec := Outgoing{MsgID: id, To: bob, Payload: []byte("p"), State: OutPending}
		rec = rec.acked(Ack{MsgID: id, Hash: HashOf([]byte("p")), Payload: []byte("r")}, false)
		require.NoError(t, store.PutOutgoing(t.Context(), rec))

		rc := &recorder{}
		pr := &probe{from: alice, next: net.Transport(alice)}
		f, err := New(Config{Transport: pr, Store: store, OnAck: rc.onAck, Logger: quiet})
		require.NoError(t, err)
		defer f.Close()
		synctest.Wait()

		require.Len(t, rc.snapshot().deliveries, 1)
		require.Len(t, pr.sent(MethodAckAck), 1)
		_, err = store.Outgoing(t.Context(), id)
		require.ErrorIs(t, err, ErrNotFound)
	})
}

// The request that carries an ack may end while the ack is handled: the
// peer stopped waiting. The callback still runs with a live context, and
// the message is forgotten; otherwise it would stay acked until a restart.
func TestAckWhoseRequestEndsIsStillSettledAndForgotten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, a, _ := newPair(t, nil)
		net.Down(bob)
		id, err := a.flow.CallAsync(t.Context(), bob, []byte("x"))
		require.NoError(t, err)
		synctest.Wait()

		var callbackErr error
		a.flow.cfg.OnAck = func(ctx context.Context, _ Delivery) { callbackErr = ctx.Err() }
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		ack := Ack{MsgID: id, Hash: HashOf([]byte("x")), Payload: []byte("ok")}
		require.NoError(t, a.flow.Deliver(ctx, bob, MethodAck, ack.AppendCandid(nil)))

		require.NoError(t, callbackErr, "the callback's context outlives the request")
		_, err = a.store.Outgoing(t.Context(), id)
		require.ErrorIs(t, err, ErrNotFound, "the message was forgotten")
	})
}

// A Flow may send to its own principal (CheckPeer allows it): both sides
// of the exchange then live in one Flow and one store, keyed apart.
func TestSendingToItselfCompletesOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, err := NewNetwork(1, Faults{})
		require.NoError(t, err)
		t.Cleanup(net.Close)
		a := newPeer(t, net, alice, nil)
		id, err := a.flow.CallAsync(t.Context(), alice, []byte("me"))
		require.NoError(t, err)
		synctest.Wait()
		time.Sleep(3 * DefaultRetryAfter)
		synctest.Wait()

		got := a.rec.snapshot()
		require.Len(t, got.handled, 1)
		require.Len(t, got.deliveries, 1)
		require.Empty(t, got.corrupt)
		_, err = a.store.Outgoing(t.Context(), id)
		require.ErrorIs(t, err, ErrNotFound)
		rec, err := a.store.Incoming(t.Context(), alice, id)
		require.NoError(t, err)
		require.Equal(t, InDone, rec.State)
	})
}
