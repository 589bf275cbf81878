package ic

import (
	"bytes"
	"cmp"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncflow/asyncflow"
	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/stretchr/testify/require"
)

// bigPeer is a Flow with a payload limit of maxPayload behind an Endpoint
// with default limits, whose handler answers every message with a payload
// of the Flow's largest size.
type bigPeer struct {
	id        identity.Identity
	flow      *asyncflow.Flow
	transport *Transport
	srv       *httptest.Server
	processed chan []byte
	acked     chan asyncflow.Delivery
}

func newBigPeer(t *testing.T, maxPayload int) *bigPeer {
	t.Helper()
	id, err := identity.NewRandomEd25519Identity()
	require.NoError(t, err)
	quiet := slog.New(slog.DiscardHandler)
	p := &bigPeer{id: id, processed: make(chan []byte, 1),
		acked: make(chan asyncflow.Delivery, 1)}

	p.transport, err = NewTransport(id, TransportConfig{Logger: quiet})
	require.NoError(t, err)
	p.flow, err = asyncflow.New(asyncflow.Config{
		Transport:  p.transport,
		Logger:     quiet,
		MaxPayload: maxPayload,
		Handler: func(_ context.Context, _ principal.Principal, _ asyncflow.MsgID,
			payload []byte) ([]byte, error) {
			p.processed <- payload
			return bytes.Repeat([]byte{'a'}, p.flow.MaxPayload()), nil
		},
		OnAck: func(_ context.Context, d asyncflow.Delivery) { p.acked <- d },
	})
	require.NoError(t, err)
	endpoint, err := NewEndpoint(id.Sender(), p.flow, EndpointConfig{Logger: quiet})
	require.NoError(t, err)
	p.srv = httptest.NewServer(endpoint)
	t.Cleanup(func() {
		p.srv.Close()
		require.NoError(t, p.flow.Close())
	})
	return p
}

// A payload of the Flow's limit, and an ack payload of the same size, both
// fit in the endpoint's default body limit, with the Candid record and the
// signed envelope around them: 2 MiB by default, and a larger limit set on
// the Flow raises the endpoint's.
func TestThePayloadLimitFitsInTheDefaultBodyLimitBothWays(t *testing.T) {
	for _, limit := range []int{asyncflow.DefaultMaxPayload, 3 << 20} {
		t.Run(strconv.Itoa(limit), func(t *testing.T) {
			a, b := newBigPeer(t, limit), newBigPeer(t, limit)
			require.NoError(t, a.transport.AddRoute(b.id.Sender(), b.srv.URL))
			require.NoError(t, b.transport.AddRoute(a.id.Sender(), a.srv.URL))
			payload := bytes.Repeat([]byte{'p'}, limit)

			id, err := a.flow.CallAsync(t.Context(), b.id.Sender(), payload)
			require.NoError(t, err)

			select {
			case got := <-b.processed:
				require.Equal(t, payload, got)
			case <-time.After(wait):
				t.Fatal("the receiver's handler did not run")
			}
			select {
			case d := <-a.acked:
				require.Equal(t, id, d.MsgID)
				require.Len(t, d.Received, limit)
				require.Equal(t, asyncflow.HashOf(payload), d.Hash)
			case <-time.After(wait):
				t.Fatal("the ack did not arrive")
			}
		})
	}
}

// countingBody counts the bytes the endpoint reads from a request body.
type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// A body over the limit is refused with 413: at once when its length is
// announced, after at most the limit and one byte when it comes chunked.
// The rest is never read and nothing is delivered.
func TestEndpointRefusesABodyOverTheLimitWithoutReadingIt(t *testing.T) {
	for _, tc := range []struct {
		name    string
		limit   int64 // 0 for the default
		chunked bool
	}{
		{name: "default limit, length announced"},
		{name: "default limit, chunked", chunked: true},
		{name: "4 KiB limit, length announced", limit: 4096},
		{name: "4 KiB limit, chunked", limit: 4096, chunked: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			limit := cmp.Or(tc.limit, DefaultMaxBodyBytes)
			var read atomic.Int64
			h := newWrappedHarness(t, EndpointConfig{MaxBodyBytes: tc.limit},
				func(endpoint http.Handler) http.Handler {
					return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						r.Body = countingBody{r.Body, &read}
						endpoint.ServeHTTP(w, r)
					})
				})
			id, err := identity.NewRandomEd25519Identity()
			require.NoError(t, err)
			arg := make([]byte, limit+1<<20)
			body := encode(t, signed(id, callRequest(t, id, h.self,
				asyncflow.MethodNewMessage, arg)))

			var reader io.Reader = bytes.NewReader(body)
			if tc.chunked {
				reader = struct{ io.Reader }{reader} // hides the length
			}
			status, reason := h.post(t, callPath(h.self), reader)

			h.requireRefused(t, status, reason, http.StatusRequestEntityTooLarge,
				"larger than")
			if tc.chunked {
				require.LessOrEqual(t, read.Load(), limit+1)
			} else {
				require.Zero(t, read.Load())
			}
			_, attempts := h.in.calls()
			require.Zero(t, attempts)
		})
	}
}
