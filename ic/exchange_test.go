package ic

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/stretchr/testify/require"

	"github.com/asyncflow/asyncflow"
)

// service is one Go service: a Flow behind a real HTTP endpoint, sending
// through agent-go.
type service struct {
	id        identity.Identity
	flow      *asyncflow.Flow
	transport *Transport
	server    *httptest.Server

	mu        sync.Mutex
	processed map[asyncflow.MsgID]int
	acked     map[asyncflow.MsgID]asyncflow.Delivery
	changed   chan struct{}
}

func newService(t *testing.T, id identity.Identity, retry time.Duration) *service {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	s := &service{id: id, processed: map[asyncflow.MsgID]int{},
		acked: map[asyncflow.MsgID]asyncflow.Delivery{}, changed: make(chan struct{}, 1)}

	tr, err := NewTransport(id, TransportConfig{Logger: quiet})
	require.NoError(t, err)
	s.transport = tr
	s.flow, err = asyncflow.New(asyncflow.Config{
		Transport:   tr,
		RetryAfter:  retry,
		Logger:      quiet,
		Handler:     s.handle,
		OnProcessed: s.onProcessed,
		OnAck:       s.onAck,
	})
	require.NoError(t, err)
	ep, err := NewEndpoint(id.Sender(), s.flow, EndpointConfig{Logger: quiet})
	require.NoError(t, err)
	s.server = httptest.NewServer(ep)
	t.Cleanup(func() {
		s.server.Close()
		require.NoError(t, s.flow.Close())
	})
	return s
}

func (s *service) handle(_ context.Context, from principal.Principal, _ asyncflow.MsgID,
	payload []byte) ([]byte, error) {
	return append([]byte("seen by "+s.id.Sender().String()+": "), payload...), nil
}

func (s *service) onProcessed(p asyncflow.Processed) {
	s.mu.Lock()
	s.processed[p.MsgID]++
	s.mu.Unlock()
	s.notify()
}

func (s *service) onAck(_ context.Context, d asyncflow.Delivery) {
	s.mu.Lock()
	s.acked[d.MsgID] = d
	s.mu.Unlock()
	s.notify()
}

func (s *service) notify() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// waitAcked waits until every id in ids has been acked.
func (s *service) waitAcked(t *testing.T, ids []asyncflow.MsgID) {
	t.Helper()
	deadline := time.After(wait)
	for {
		s.mu.Lock()
		n := 0
		for _, id := range ids {
			if _, ok := s.acked[id]; ok {
				n++
			}
		}
		s.mu.Unlock()
		if n == len(ids) {
			return
		}
		select {
		case <-s.changed:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%d of %d messages acked within %s", n, len(ids), wait)
		}
	}
}

func connect(t *testing.T, a, b *service) {
	t.Helper()
	require.NoError(t, a.transport.AddRoute(b.id.Sender(), b.server.URL))
	require.NoError(t, b.transport.AddRoute(a.id.Sender(), a.server.URL))
}

func TestTwoServicesExchangeMessagesBothWaysOverSignedHTTP(t *testing.T) {
	edA, err := identity.NewRandomEd25519Identity()
	require.NoError(t, err)
	kB, err := identity.NewRandomSecp256k1Identity()
	require.NoError(t, err)
	a := newService(t, edA, time.Second)
	b := newService(t, kB, time.Second)
	connect(t, a, b)

	const n = 25
	var fromA, fromB []asyncflow.MsgID
	for i := range n {
		id, err := a.flow.CallAsync(t.Context(), b.id.Sender(), fmt.Appendf(nil, "a%d", i))
		require.NoError(t, err)
		fromA = append(fromA, id)
		id, err = b.flow.CallAsync(t.Context(), a.id.Sender(), fmt.Appendf(nil, "b%d", i))
		require.NoError(t, err)
		fromB = append(fromB, id)
	}
	a.waitAcked(t, fromA)
	b.waitAcked(t, fromB)

	a.mu.Lock()
	defer a.mu.Unlock()
	for i, id := range fromA {
		d := a.acked[id]
		require.Equal(t, fmt.Sprintf("seen by %s: a%d", b.id.Sender(), i), string(d.Received))
		require.Equal(t, asyncflow.HashOf(d.Sent), d.Hash, "the receiver checked")
		b.mu.Lock()
		require.Equal(t, 1, b.processed[id])
		b.mu.Unlock()
	}
	for _, id := range fromB {
		require.Equal(t, 1, a.processed[id])
	}
}

func TestAMessageToAServiceThatIsDownArrivesWhenItComesUp(t *testing.T) {
	idA, err := identity.NewRandomEd25519Identity()
	require.NoError(t, err)
	idB, err := identity.NewRandomPrime256v1Identity()
	require.NoError(t, err)
	a := newService(t, idA, 200*time.Millisecond)
	b := newService(t, idB, 200*time.Millisecond)
	connect(t, a, b)

	up := b.server.Config.Handler
	down := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	})
	var mu sync.Mutex
	current := http.Handler(down)
	b.server.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		h := current
		mu.Unlock()
		h.ServeHTTP(w, r)
	})

	id, err := a.flow.CallAsync(t.Context(), b.id.Sender(), []byte("patience"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return a.flow.Stats().SendErrors >= 2 }, wait,
		10*time.Millisecond, "the first sends are refused")

	mu.Lock()
	current = up
	mu.Unlock()
	a.waitAcked(t, []asyncflow.MsgID{id})
	require.Positive(t, a.flow.Stats().Resent)
	b.mu.Lock()
	require.Equal(t, 1, b.processed[id])
	b.mu.Unlock()
}

func TestCallAsyncRefusesAPrincipalWithoutARoute(t *testing.T) {
	id, err := identity.NewRandomEd25519Identity()
	require.NoError(t, err)
	a := newService(t, id, time.Second)
	stranger := principal.NewSelfAuthenticating([]byte("some other key"))

	_, err = a.flow.CallAsync(t.Context(), stranger, []byte("x"))
	require.ErrorIs(t, err, asyncflow.ErrNoRoute)
	require.ErrorContains(t, err, stranger.String())

	pending, err := a.flow.Messages(t.Context(), asyncflow.OutPending)
	require.NoError(t, err)
	require.Empty(t, pending, "nothing was stored")
}
