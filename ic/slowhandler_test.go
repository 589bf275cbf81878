package ic

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/stretchr/testify/require"

	"github.com/asyncflow/asyncflow"
	"github.com/asyncflow/asyncflow/boltstore"
)

// The sender gives up on a submission after its SendTimeout, and the
// server then cancels the request's context while the receiver's handler
// runs. The handler finishes all the same: its result is committed to the
// durable store and acked, and the sender's retries do not run it again.
func TestAHandlerSlowerThanTheSendersTimeoutRunsOnceAndIsAcked(t *testing.T) {
	quiet := slog.New(slog.DiscardHandler)
	idA, err := identity.NewRandomEd25519Identity()
	require.NoError(t, err)
	idB, err := identity.NewRandomEd25519Identity()
	require.NoError(t, err)

	trA, err := NewTransport(idA, TransportConfig{Logger: quiet})
	require.NoError(t, err)
	acked := make(chan asyncflow.Delivery, 10)
	a, err := asyncflow.New(asyncflow.Config{Transport: trA, Logger: quiet,
		Store:      asyncflow.NewMemoryStore(),
		RetryAfter: 400 * time.Millisecond, SendTimeout: 200 * time.Millisecond,
		OnAck: func(_ context.Context, d asyncflow.Delivery) { acked <- d }})
	require.NoError(t, err)
	epA, err := NewEndpoint(idA.Sender(), a, EndpointConfig{Logger: quiet})
	require.NoError(t, err)
	srvA := httptest.NewServer(epA)
	defer func() { srvA.Close(); require.NoError(t, a.Close()) }()

	st, err := boltstore.Open(filepath.Join(t.TempDir(), "b.db"), nil)
	require.NoError(t, err)
	trB, err := NewTransport(idB, TransportConfig{Logger: quiet})
	require.NoError(t, err)
	var runs atomic.Int32
	b, err := asyncflow.New(asyncflow.Config{Transport: trB, Logger: quiet, Store: st,
		RetryAfter: time.Second,
		Handler: func(_ context.Context, _ principal.Principal, _ asyncflow.MsgID,
			p []byte) ([]byte, error) {
			runs.Add(1)
			time.Sleep(300 * time.Millisecond) // slower than A's SendTimeout
			return p, nil
		}})
	require.NoError(t, err)
	epB, err := NewEndpoint(idB.Sender(), b, EndpointConfig{Logger: quiet})
	require.NoError(t, err)
	srvB := httptest.NewServer(epB)
	defer func() { srvB.Close(); require.NoError(t, b.Close()); require.NoError(t, st.Close()) }()

	require.NoError(t, trA.AddRoute(idB.Sender(), srvB.URL))
	require.NoError(t, trB.AddRoute(idA.Sender(), srvA.URL))

	id, err := a.CallAsync(t.Context(), idB.Sender(), []byte("slow"))
	require.NoError(t, err)
	select {
	case d := <-acked:
		require.Equal(t, id, d.MsgID)
	case <-time.After(wait):
		t.Fatalf("no ack within %s; the handler ran %d times", wait, runs.Load())
	}

	require.Equal(t, int32(1), runs.Load(), "the handler ran once, not once per retry")
	_, err = st.Incoming(t.Context(), idA.Sender(), id)
	require.NoError(t, err, "its result is committed")
}
