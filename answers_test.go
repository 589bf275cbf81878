package asyncflow

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/stretchr/testify/require"
)

func TestAnswersForgetTheOldestBeyondTheirBound(t *testing.T) {
	var a answers
	id := func(n int) MsgID {
		var id MsgID
		binary.BigEndian.PutUint64(id[8:], uint64(n))
		return id
	}

	for n := range maxAnswers + 10 {
		a.remember(id(n), bob, SomeHash(uint32(n)))
	}

	for n := range 10 {
		_, ok := a.lookup(id(n), bob)
		require.False(t, ok, "answer %d is among the oldest, pushed out", n)
	}
	for _, n := range []int{10, maxAnswers, maxAnswers + 9} {
		h, ok := a.lookup(id(n), bob)
		require.True(t, ok, "answer %d is among the newest", n)
		require.Equal(t, SomeHash(uint32(n)), h)
	}
	_, ok := a.lookup(id(maxAnswers), carol)
	require.False(t, ok, "an answer is only told to its peer")
	require.Len(t, a.byID, maxAnswers)
	require.Len(t, a.ring, maxAnswers)
}

func TestAnswersKeepTheNewestOfARememberedID(t *testing.T) {
	var a answers
	var id MsgID
	a.remember(id, bob, SomeHash(1))
	a.remember(id, bob, SomeHash(2))

	h, ok := a.lookup(id, bob)
	require.True(t, ok)
	require.Equal(t, SomeHash(2), h)
}

// ackacksFor decodes every ackack p sent for id.
func ackacksFor(t *testing.T, p *probe, id MsgID) []AckAck {
	t.Helper()
	var out []AckAck
	for _, c := range p.sent(MethodAckAck) {
		var aa AckAck
		require.NoError(t, aa.UnmarshalCandid(c.arg))
		if aa.MsgID == id {
			out = append(out, aa)
		}
	}
	return out
}

// Many copies of an ack, each with another answer, race each other and the
// settling of the message: exactly one answer is taken (one OnAck), and
// every ackack the sender sends, before or after it forgot the message,
// confirms that answer and no other.
func TestConcurrentAcksAllConfirmTheAnswerTaken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, a, _ := newPair(t, nil)
		payload := []byte("p")
		id := pendingMessage(t, net, a, payload)

		const n = 32
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				ack := Ack{MsgID: id, Hash: HashOf(payload),
					Payload: fmt.Appendf(nil, "answer-%d", i)}
				require.NoError(t, a.flow.Deliver(context.Background(), bob, MethodAck,
					ack.AppendCandid(nil)))
			})
		}
		wg.Wait()
		synctest.Wait()

		got := a.rec.snapshot()
		require.Len(t, got.deliveries, 1, "one answer is taken")
		took := HashOf(got.deliveries[0].Received)
		aas := ackacksFor(t, a.probe, id)
		require.Len(t, aas, n, "every ack is answered")
		for _, aa := range aas {
			require.Equal(t, took, aa.Hash, "each ackack confirms the answer taken")
		}

		// And later, once forgotten.
		ackFrom(t, a.flow, bob, Ack{MsgID: id, Hash: HashOf(payload), Payload: []byte("x")})
		synctest.Wait()
		aas = ackacksFor(t, a.probe, id)
		require.Equal(t, took, aas[len(aas)-1].Hash)
	})
}

// The same race with a corrupt first ack, and a Forget racing the acks.
func TestConcurrentCorruptAcksAndAForgetConfirmOneAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, a, _ := newPair(t, nil)
		id := pendingMessage(t, net, a, []byte("p"))

		const n = 16
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				ack := Ack{MsgID: id, Hash: SomeHash(7), Payload: fmt.Appendf(nil, "a-%d", i)}
				require.NoError(t, a.flow.Deliver(context.Background(), bob, MethodAck,
					ack.AppendCandid(nil)))
			})
			if i == n/2 {
				wg.Go(func() { require.NoError(t, a.flow.Forget(context.Background(), id)) })
			}
		}
		wg.Wait()
		synctest.Wait()

		got := a.rec.snapshot()
		require.Empty(t, got.deliveries)
		if len(got.corrupt) == 0 {
			// Forget won the race before any ack: every ackack is hashless.
			for _, aa := range ackacksFor(t, a.probe, id) {
				require.False(t, aa.Hash.Valid)
			}
			return
		}
		require.Len(t, got.corrupt, 1)
		took := HashOf(got.corrupt[0].Received)
		for _, aa := range ackacksFor(t, a.probe, id) {
			require.True(t, aa.Hash.Valid, "the sender took an answer and remembers it")
			require.Equal(t, took, aa.Hash)
		}
	})
}

// A sender that gave up on a message (MaxAttempts), and whose user
// forgot it, took no answer: it answers the receiver's late ack with an
// ackack without a hash, and a StrictHash receiver reports that its answer
// was never checked, even on a clean network.
func TestAStrictReceiverReportsAnAnswerItsSenderForgotUnchecked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		_, a, b := newPair(t, func(c *Config) {
			c.StrictHash = true
			c.MaxAttempts = 1
			c.OnGiveUp = func(ctx context.Context, g GiveUp) {}
			// The receiver's handler is slow: it outlasts the sender's patience.
			slow := c.Handler
			c.Handler = func(ctx context.Context, from principal.Principal, id MsgID,
				p []byte) ([]byte, error) {
				<-release
				return slow(ctx, from, id, p)
			}
		})

		id, err := a.flow.CallAsync(t.Context(), bob, []byte("x"))
		require.NoError(t, err)
		synctest.Wait()
		time.Sleep(DefaultRetryAfter)
		synctest.Wait()
		given, err := a.flow.Messages(t.Context(), OutGivenUp)
		require.NoError(t, err)
		require.Len(t, given, 1)
		require.NoError(t, a.flow.Forget(t.Context(), id))

		close(release)
		synctest.Wait()

		require.Len(t, b.rec.snapshot().processed, 1)
		require.Equal(t, []Corruption{{Side: SideReceiver, Peer: alice, MsgID: id,
			Sent: []byte("ack:x"), Expected: HashOf([]byte("ack:x"))}},
			b.rec.snapshot().corrupt, "reported as unchecked: Got is null")
	})
}

// OnAck may Forget its message. While OnAck still runs, a resent copy of
// the ack arrives with another answer: its ackack still confirms the
// answer taken, although the record is already gone.
func TestForgetInOnAckKeepsTheAnswerTaken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inOnAck := make(chan struct{})
		release := make(chan struct{})
		var a *peer
		net, err := NewNetwork(1, Faults{})
		require.NoError(t, err)
		t.Cleanup(net.Close)
		a = newPeer(t, net, alice, func(c *Config) {
			c.OnAck = func(ctx context.Context, d Delivery) {
				require.NoError(t, a.flow.Forget(ctx, d.MsgID))
				close(inOnAck)
				<-release
			}
		})
		newPeer(t, net, bob, nil)
		payload := []byte("p")
		id := pendingMessage(t, net, a, payload)
		took := Ack{MsgID: id, Hash: HashOf(payload), Payload: []byte("answer")}
		other := Ack{MsgID: id, Hash: HashOf(payload), Payload: []byte("ANSWER")}

		go ackFrom(t, a.flow, bob, took)
		<-inOnAck
		ackFrom(t, a.flow, bob, other)
		close(release)
		synctest.Wait()

		for _, aa := range ackacksFor(t, a.probe, id) {
			require.Equal(t, HashOf(took.Payload), aa.Hash,
				"every ackack confirms the answer taken, %x", took.Payload)
		}
	})
}
