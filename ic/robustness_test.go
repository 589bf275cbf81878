package ic

// Tests of what the Endpoint does with hostile bodies and with failures
// behind it: work bounded by what was signed, server faults answered as
// such, and paths that are not quite right.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncflow/asyncflow"
	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
	"github.com/stretchr/testify/require"
)

// unauthenticatedBomb is a body that needs no key: sender_pubkey is one
// junk byte, sender is its self-authenticating principal (so the owner
// check passes), and the content field named field holds about a million
// one-byte integers in nested arrays, within every decoder limit (1024
// elements per array, 64 pairs per map, 16 levels).
func unauthenticatedBomb(t *testing.T, self principal.Principal, field string) []byte {
	t.Helper()
	inner := make([]any, 1024)
	for i := range inner {
		inner[i] = uint64(1)
	}
	outer := make([]any, 1024)
	for i := range outer {
		outer[i] = inner
	}
	pub := []byte{0x01}
	content := map[string]any{
		"request_type":   "call",
		"method_name":    asyncflow.MethodNewMessage,
		"canister_id":    self.Raw,
		"sender":         principal.NewSelfAuthenticating(pub).Raw,
		"arg":            []byte("DIDL"),
		"ingress_expiry": uint64(time.Now().Add(time.Minute).UnixNano()),
	}
	content[field] = outer
	body, err := cbor.Marshal(map[string]any{
		"content":       content,
		"sender_pubkey": pub,
		"sender_sig":    bytes.Repeat([]byte{0}, 64),
	})
	require.NoError(t, err)
	require.Less(t, len(body), DefaultMaxBodyBytes)
	return body
}

// A refused, unauthenticated submission costs about its size: a million
// small values in a content field are refused before they are decoded,
// whether the field is unknown or a known one of another type.
func TestEndpointWorkOnAnUnauthenticatedBodyIsBoundedByItsSize(t *testing.T) {
	for _, field := range []string{"a", "nonce"} {
		t.Run(field, func(t *testing.T) {
			h := newHarness(t, EndpointConfig{})
			endpoint, err := NewEndpoint(h.self, h.in, EndpointConfig{})
			require.NoError(t, err)
			body := unauthenticatedBomb(t, h.self, field)

			// TotalAlloc counts every goroutine's allocations, so the
			// least of three measurements is the request's own.
			allocated := uint64(math.MaxUint64)
			for range 3 {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				w := httptest.NewRecorder()
				endpoint.ServeHTTP(w, httptest.NewRequest(http.MethodPost, callPath(h.self),
					bytes.NewReader(body)))
				runtime.ReadMemStats(&after)

				require.Equal(t, http.StatusBadRequest, w.Code, w.Body.String())
				require.Contains(t, w.Body.String(), "content field")
				allocated = min(allocated, after.TotalAlloc-before.TotalAlloc)
			}
			require.Less(t, allocated, uint64(8*len(body)),
				"a refused %d-byte body allocated %d MB", len(body), allocated>>20)
		})
	}
}

// failingStore is a MemoryStore whose reads of incoming records fail.
type failingStore struct {
	*asyncflow.MemoryStore
}

func (failingStore) Incoming(context.Context, principal.Principal, asyncflow.MsgID) (
	asyncflow.Incoming, error) {
	return asyncflow.Incoming{}, errors.New("store unavailable")
}

// noopInbound accepts and drops calls: a route back to the caller.
type noopInbound struct{}

func (noopInbound) Deliver(context.Context, principal.Principal, string, []byte) error {
	return nil
}

// newFlowEndpoint serves a real Flow of a fresh identity behind an HTTP
// server; the network routes acks back to sender (and drops them).
func newFlowEndpoint(t *testing.T, sender principal.Principal, store asyncflow.Store,
	handler asyncflow.Handler) (principal.Principal, *httptest.Server) {
	t.Helper()
	receiver, err := identity.NewRandomEd25519Identity()
	require.NoError(t, err)
	net, err := asyncflow.NewNetwork(1, asyncflow.Faults{})
	require.NoError(t, err)
	t.Cleanup(net.Close)
	net.Attach(sender, noopInbound{})

	flow, err := asyncflow.New(asyncflow.Config{
		Transport: net.Transport(receiver.Sender()),
		Store:     store,
		Handler:   handler,
		Logger:    slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, flow.Close()) })

	endpoint, err := NewEndpoint(receiver.Sender(), flow, EndpointConfig{})
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(endpoint)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Start()
	t.Cleanup(srv.Close)
	return receiver.Sender(), srv
}

// postNewMessage posts a valid signed newMessage from id to self.
func postNewMessage(t *testing.T, srv *httptest.Server, id identity.Identity,
	self principal.Principal, msgID asyncflow.MsgID) (int, string, error) {
	t.Helper()
	arg := asyncflow.NewMessage{MsgID: msgID, Payload: []byte("hello")}.AppendCandid(nil)
	body := encode(t, signed(id, callRequest(t, id, self, asyncflow.MethodNewMessage, arg)))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost,
		srv.URL+callPath(self), bytes.NewReader(body))
	require.NoError(t, err)
	resp, err := srv.Client().Do(hreq)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(answer), nil
}

// freshID returns a message id of now, inside every dedup window.
func freshID(t *testing.T) asyncflow.MsgID {
	t.Helper()
	id, err := asyncflow.NewMsgID(time.Now())
	require.NoError(t, err)
	return id
}

// A store failure is the server's fault: the caller gets a 5xx, which it
// may retry, and none of the store's own error text.
func TestEndpointAnswersAStoreFailureWithA5xx(t *testing.T) {
	sender, err := identity.NewRandomEd25519Identity()
	require.NoError(t, err)
	store := failingStore{asyncflow.NewMemoryStore()}
	defer store.Close()
	self, srv := newFlowEndpoint(t, sender.Sender(), store,
		func(context.Context, principal.Principal, asyncflow.MsgID, []byte) ([]byte, error) {
			return nil, nil
		})

	status, reason, err := postNewMessage(t, srv, sender, self, freshID(t))
	require.NoError(t, err)
	require.GreaterOrEqual(t, status, 500, "store failure answered %d: %s", status, reason)
	require.NotContains(t, reason, "store unavailable", "internal error text leaks")
}

// A handler that panics stays inside the Flow: it counts as a handler
// error, the call is still answered (202: it was a valid call, and the
// sender's retry brings it back), and nothing is recorded.
func TestEndpointSurvivesAPanickingHandler(t *testing.T) {
	sender, err := identity.NewRandomEd25519Identity()
	require.NoError(t, err)
	store := asyncflow.NewMemoryStore()
	defer store.Close()
	self, srv := newFlowEndpoint(t, sender.Sender(), store,
		func(context.Context, principal.Principal, asyncflow.MsgID, []byte) ([]byte, error) {
			panic("handler bug")
		})

	msgID := freshID(t)
	for range 2 {
		status, reason, err := postNewMessage(t, srv, sender, self, msgID)
		require.NoError(t, err, "the connection survives")
		require.Equal(t, http.StatusAccepted, status, reason)
	}
	_, err = store.Incoming(t.Context(), sender.Sender(), msgID)
	require.ErrorIs(t, err, asyncflow.ErrNotFound)
}

// Held: an upper-case principal in the path, percent-encoding and the v3
// path are accepted; doubled slashes, a trailing slash and HEAD are not.
func TestEndpointPathEdgeCases(t *testing.T) {
	id, err := identity.NewRandomEd25519Identity()
	require.NoError(t, err)
	for _, tc := range []struct {
		name   string
		method string
		path   func(principal.Principal) string
		status int
	}{
		{"upper case principal", http.MethodPost, func(p principal.Principal) string {
			return "/api/v2/canister/" + strings.ToUpper(p.Encode()) + "/call"
		}, http.StatusAccepted},
		{"percent-encoded", http.MethodPost, func(p principal.Principal) string {
			return "/api/v3/canister/%" + strings.ToUpper(
				hexByte(p.Encode()[0])) + p.Encode()[1:] + "/call"
		}, http.StatusAccepted},
		{"double slash", http.MethodPost, func(p principal.Principal) string {
			return "/api/v2//canister/" + p.Encode() + "/call"
		}, http.StatusNotFound},
		{"trailing slash", http.MethodPost, func(p principal.Principal) string {
			return callPath(p) + "/"
		}, http.StatusNotFound},
		{"HEAD", http.MethodHead, callPath, http.StatusMethodNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, EndpointConfig{})
			_, req := valid(t, h, id)
			status, reason := h.do(t, tc.method, tc.path(h.self),
				bytes.NewReader(encode(t, signed(id, req))))
			require.Equal(t, tc.status, status, reason)
		})
	}
}

func hexByte(b byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[b>>4], digits[b&0x0f]})
}

// A newMessage whose id left the receiver's dedup window is refused for
// good (400), so the sender's transport can tell it from a passing fault,
// and its handler does not run.
func TestEndpointRefusesAMessageOutsideTheDedupWindow(t *testing.T) {
	sender, err := identity.NewRandomEd25519Identity()
	require.NoError(t, err)
	store := asyncflow.NewMemoryStore()
	defer store.Close()
	var ran atomic.Bool
	self, srv := newFlowEndpoint(t, sender.Sender(), store,
		func(context.Context, principal.Principal, asyncflow.MsgID, []byte) ([]byte, error) {
			ran.Store(true)
			return nil, nil
		})
	old, err := asyncflow.NewMsgID(time.Now().Add(-asyncflow.DefaultDedupWindow - time.Minute))
	require.NoError(t, err)

	status, reason, err := postNewMessage(t, srv, sender, self, old)
	require.NoError(t, err)
	require.Equal(t, http.StatusBadRequest, status, reason)
	require.Contains(t, reason, "dedup window")
	require.False(t, ran.Load(), "the handler did not run")
	_, err = store.Incoming(t.Context(), sender.Sender(), old)
	require.ErrorIs(t, err, asyncflow.ErrNotFound)
}
