package asyncflow

// Tests of what a Flow does with input and conditions it should survive:
// oversized payloads, tiny retry delays, stuck sends, panicking handlers,
// failing stores and concurrent duplicates.

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/stretchr/testify/require"
)

// PROTOCOL.md: ingress messages are limited to 2 MiB, and ic.Endpoint
// refuses larger bodies with 413. CallAsync stores a payload that can
// never be delivered and the Flow resends it for ever; it should refuse it
// before storing anything, as it does for a target without a route.
func TestCallAsyncRefusesAPayloadLargerThanAnIngressMessage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, a, _ := newPair(t, nil)
		_, err := a.flow.CallAsync(t.Context(), bob, make([]byte, 4<<20))
		require.ErrorIs(t, err, ErrPayloadTooLarge, "4 MiB cannot be an IC ingress message")
		pending, err := a.flow.Messages(t.Context(), OutPending)
		require.NoError(t, err)
		require.Empty(t, pending)
	})
}

// A RetryAfter of 1 ns would make the retry loop indistinguishable from
// a busy loop; New refuses it.
func TestNewRefusesARetryAfterTooSmallToBeAProtocolDelay(t *testing.T) {
	net, err := NewNetwork(1, Faults{})
	require.NoError(t, err)
	defer net.Close()
	f, err := New(Config{Transport: net.Transport(alice), RetryAfter: time.Nanosecond,
		Logger: quiet})
	if err == nil {
		require.NoError(t, f.Close())
	}
	require.ErrorIs(t, err, ErrInvalidConfig, "RetryAfter of 1ns is accepted")
}

// countingStore counts PutOutgoing calls.
type countingStore struct {
	*MemoryStore
	puts atomic.Int64
}

func (s *countingStore) PutOutgoing(ctx context.Context, m Outgoing) error {
	s.puts.Add(1)
	return s.MemoryStore.PutOutgoing(ctx, m)
}

// blockingTransport holds every send until its context ends.
type blockingTransport struct{}

func (blockingTransport) Send(ctx context.Context, _ principal.Principal, _ string,
	_ []byte) error {
	<-ctx.Done()
	return ctx.Err()
}

// With one message whose send is stuck and the smallest RetryAfter, each
// pass of the retry loop ends, and the record is rewritten once per
// RetryAfter (its due time moves on), not continuously.
func TestRetryLoopDoesNotSpinWhileASendIsStuck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &countingStore{MemoryStore: NewMemoryStore()}
		defer store.Close()
		f, err := New(Config{Transport: blockingTransport{}, Store: store,
			RetryAfter: MinRetryAfter, SendTimeout: time.Hour, Logger: quiet})
		require.NoError(t, err)

		_, err = f.CallAsync(t.Context(), bob, []byte("x"))
		require.NoError(t, err)
		time.Sleep(20*MinRetryAfter + MinRetryAfter/2)
		synctest.Wait()
		require.NoError(t, f.Close())

		require.Equal(t, int64(1+20), store.puts.Load(), "stored once, then moved 20 times")
		require.Zero(t, f.Stats().Resent, "and never queued while its send is stuck")
	})
}

// A handler that panics would take the process down through the
// in-memory network, and drop the connection through net/http. Deliver
// turns it into a handler error: nothing recorded, the retry brings the
// message back.
func TestHandlerPanicDoesNotEscapeDeliver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, _, b := newPair(t, func(c *Config) {
			c.Handler = func(context.Context, principal.Principal, MsgID, []byte) ([]byte, error) {
				panic("handler bug")
			}
		})
		net.Down(alice)
		id, err := NewMsgID(time.Now())
		require.NoError(t, err)

		var panicked any
		func() {
			defer func() { panicked = recover() }()
			_ = b.flow.Deliver(t.Context(), alice, MethodNewMessage,
				NewMessage{MsgID: id, Payload: []byte("x")}.AppendCandid(nil))
		}()
		require.Nil(t, panicked, "a handler panic escapes Deliver")
		require.Equal(t, uint64(1), b.flow.Stats().HandlerErrors)
	})
}

// failingStore fails reads of incoming records after fail is set.
type failingStore struct {
	*MemoryStore
	mu   sync.Mutex
	fail bool
}

func (s *failingStore) Incoming(ctx context.Context, from principal.Principal,
	id MsgID) (Incoming, error) {
	s.mu.Lock()
	fail := s.fail
	s.mu.Unlock()
	if fail {
		return Incoming{}, errors.New("disk on fire")
	}
	return s.MemoryStore.Incoming(ctx, from, id)
}

// Held: a store failure while reading the dedup record is returned by
// Deliver (so a transport can refuse the call) and runs no handler.
func TestStoreFailureOnDedupReadRunsNoHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, err := NewNetwork(1, Faults{})
		require.NoError(t, err)
		defer net.Close()
		store := &failingStore{MemoryStore: NewMemoryStore(), fail: true}
		defer store.Close()
		var ran atomic.Int32
		f, err := New(Config{Transport: net.Transport(bob), Store: store, Logger: quiet,
			Handler: func(context.Context, principal.Principal, MsgID, []byte) ([]byte, error) {
				ran.Add(1)
				return nil, nil
			}})
		require.NoError(t, err)
		defer f.Close()
		net.Attach(alice, f) // a route back, so the store is reached
		id, err := NewMsgID(time.Now())
		require.NoError(t, err)

		err = f.Deliver(t.Context(), alice, MethodNewMessage,
			NewMessage{MsgID: id, Payload: []byte("x")}.AppendCandid(nil))
		require.ErrorContains(t, err, "disk on fire")
		require.Zero(t, ran.Load())
	})
}

// Held: concurrent duplicates of one newMessage, acks and ackacks from
// the right and the wrong principal, and Forget racing the ack, under
// -race: the handler runs once, OnAck at most once, nothing from carol
// moves anything.
func TestConcurrentDuplicatesAndForeignAcksProcessOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, a, b := newPair(t, nil)
		newPeer(t, net, carol, nil)
		a.probe.setDrop(func(c call) bool { return c.method == MethodNewMessage })

		id, err := a.flow.CallAsync(t.Context(), bob, []byte("p"))
		require.NoError(t, err)
		nm := NewMessage{MsgID: id, Payload: []byte("p")}.AppendCandid(nil)
		good := Ack{MsgID: id, Hash: HashOf([]byte("p")), Payload: []byte("ack:p")}.
			AppendCandid(nil)

		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() { _ = b.flow.Deliver(t.Context(), alice, MethodNewMessage, nm) })
			wg.Go(func() { _ = a.flow.Deliver(t.Context(), carol, MethodAck, good) })
			wg.Go(func() { _ = a.flow.Deliver(t.Context(), bob, MethodAck, good) })
			wg.Go(func() { _ = a.flow.Forget(t.Context(), id) })
		}
		wg.Wait()
		synctest.Wait()

		require.Len(t, b.rec.snapshot().handled, 1)
		require.LessOrEqual(t, len(a.rec.snapshot().deliveries), 1)
		for _, d := range a.rec.snapshot().deliveries {
			require.Equal(t, bob, d.To)
		}
	})
}

func TestOversizedPayloadsArriveRefusedAndOversizedAnswersAreHandlerErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, a, b := newPair(t, func(c *Config) { c.MaxPayload = 8 })
		net.Down(alice)
		big, small := []byte("nine bytes"), []byte("eight b!")

		err := b.flow.Deliver(t.Context(), alice, MethodNewMessage,
			NewMessage{MsgID: newID(t), Payload: big}.AppendCandid(nil))
		require.ErrorIs(t, err, ErrPayloadTooLarge)
		require.Empty(t, b.rec.snapshot().handled)

		err = a.flow.Deliver(t.Context(), bob, MethodAck,
			Ack{MsgID: newID(t), Payload: big}.AppendCandid(nil))
		require.ErrorIs(t, err, ErrPayloadTooLarge)

		id := newID(t)
		newMessageTo(t, b.flow, alice, NewMessage{MsgID: id, Payload: small})
		require.Len(t, b.rec.snapshot().handled, 1, "the handler ran")
		require.Equal(t, uint64(1), b.flow.Stats().HandlerErrors,
			"its 12-byte answer is over the limit")
		_, err = b.store.Incoming(t.Context(), alice, id)
		require.ErrorIs(t, err, ErrNotFound, "nothing recorded")
	})
}

func TestAPanickingAckCallbackLeavesTheMessageAckedForTheNextFlow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, a, _ := newPair(t, func(c *Config) {
			c.OnAck = func(context.Context, Delivery) { panic("callback bug") }
		})

		id, err := a.flow.CallAsync(t.Context(), bob, []byte("x"))
		require.NoError(t, err)
		synctest.Wait()

		rec, err := a.store.Outgoing(t.Context(), id)
		require.NoError(t, err)
		require.Equal(t, OutAcked, rec.State, "its callback runs again after a restart")
		require.Len(t, a.probe.sent(MethodAckAck), 1, "the receiver is still told")
	})
}
