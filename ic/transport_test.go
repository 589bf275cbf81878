package ic

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/asyncflow/asyncflow"
	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pemIdentities returns identities of every key type, each written as a
// PEM file by agent-go and loaded back by this package.
func pemIdentities(t *testing.T) map[keyAlgorithm]identity.Identity {
	t.Helper()
	loaded := make(map[keyAlgorithm]identity.Identity)
	for alg, id := range testIdentities(t) {
		data, err := id.ToPEM()
		require.NoError(t, err)
		back, err := ParseIdentityPEM(data)
		require.NoError(t, err, "%s", alg)
		require.Equal(t, id.Sender(), back.Sender())
		loaded[alg] = back
	}
	return loaded
}

func newTestTransport(t *testing.T, id identity.Identity, cfg TransportConfig) *Transport {
	t.Helper()
	tr, err := NewTransport(id, cfg)
	require.NoError(t, err)
	return tr
}

func TestTransportSubmitsToEndpoint(t *testing.T) {
	for alg, id := range pemIdentities(t) {
		t.Run(string(alg), func(t *testing.T) {
			h := newHarness(t, EndpointConfig{})
			tr := newTestTransport(t, id, TransportConfig{
				Routes: map[string]string{h.self.Encode(): h.srv.URL},
			})
			arg := candidArg(t, "newMessage")
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()

			err := tr.Send(ctx, h.self, asyncflow.MethodNewMessage, arg)

			require.NoError(t, err)
			accepted, _ := h.in.calls()
			require.Equal(t, []delivered{{id.Sender(), asyncflow.MethodNewMessage, arg}},
				accepted)
			require.Empty(t, h.rejections())
		})
	}
}

func TestTransportUsesDefaultURL(t *testing.T) {
	h := newHarness(t, EndpointConfig{})
	id, err := identity.NewRandomEd25519Identity()
	require.NoError(t, err)
	tr := newTestTransport(t, id, TransportConfig{DefaultURL: h.srv.URL})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()

	require.NoError(t, tr.Route(h.self))
	require.NoError(t, tr.Send(ctx, h.self, asyncflow.MethodAck, candidArg(t, "ack")))

	accepted, _ := h.in.calls()
	require.Len(t, accepted, 1)
}

func TestTransportWithoutRouteReturnsErrNoRoute(t *testing.T) {
	id, err := identity.NewRandomEd25519Identity()
	require.NoError(t, err)
	tr := newTestTransport(t, id, TransportConfig{})
	to := principal.NewSelfAuthenticating([]byte("unreachable"))

	routeErr := tr.Route(to)
	sendErr := tr.Send(context.Background(), to, asyncflow.MethodAck, candidArg(t, "ack"))

	for _, err := range []error{routeErr, sendErr} {
		require.ErrorIs(t, err, asyncflow.ErrNoRoute)
		require.ErrorContains(t, err, to.Encode())
	}
}

func TestTransportReturnsRefusal(t *testing.T) {
	h := newHarness(t, EndpointConfig{})
	id, err := identity.NewRandomEd25519Identity()
	require.NoError(t, err)
	tr := newTestTransport(t, id, TransportConfig{})
	require.NoError(t, tr.AddRoute(h.self, h.srv.URL))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()

	err = tr.Send(ctx, h.self, "transfer", candidArg(t, "ack"))

	var refused *RefusedError
	require.ErrorAs(t, err, &refused)
	require.Equal(t, http.StatusBadRequest, refused.Status)
	require.Equal(t, `method "transfer" is not an asyncflow method`, refused.Reason)
	require.Equal(t, h.self, refused.To)
	require.ErrorContains(t, err, "status 400")
}

func TestTransportSendStopsWhenContextEnds(t *testing.T) {
	arrived := make(chan struct{})
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })

	id, err := identity.NewRandomEd25519Identity()
	require.NoError(t, err)
	tr := newTestTransport(t, id, TransportConfig{DefaultURL: srv.URL})
	arg := candidArg(t, "ack")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	result := make(chan error, 1)
	go func() {
		result <- tr.Send(ctx, principal.NewRandomPrincipal(), asyncflow.MethodAck, arg)
	}()
	waitFor(t, arrived)
	cancel()

	select {
	case err := <-result:
		require.ErrorIs(t, err, context.Canceled)
		var refused *RefusedError
		require.False(t, errors.As(err, &refused))
	case <-timeout(t):
		t.Fatal("send did not return after its context ended")
	}
}

func TestTransportAddRouteIsSafeDuringSends(t *testing.T) {
	h := newHarness(t, EndpointConfig{})
	id, err := identity.NewRandomEd25519Identity()
	require.NoError(t, err)
	tr := newTestTransport(t, id, TransportConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	arg := candidArg(t, "ackack")

	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			assert.NoError(t, tr.AddRoute(h.self, h.srv.URL))
			assert.NoError(t, tr.Send(ctx, h.self, asyncflow.MethodAckAck, arg))
			assert.NoError(t, tr.AddRoute(principal.NewRandomPrincipal(), h.srv.URL))
		})
	}
	wg.Wait()

	accepted, _ := h.in.calls()
	require.Len(t, accepted, 8)
}

func TestTransportRefusesEmptyArgument(t *testing.T) {
	h := newHarness(t, EndpointConfig{})
	id, err := identity.NewRandomEd25519Identity()
	require.NoError(t, err)
	tr := newTestTransport(t, id, TransportConfig{DefaultURL: h.srv.URL})

	err = tr.Send(context.Background(), h.self, asyncflow.MethodAck, []byte{})

	require.ErrorIs(t, err, asyncflow.ErrInvalidCandid)
	_, attempts := h.in.calls()
	require.Zero(t, attempts)
	require.Empty(t, h.rejections())
}

func TestNewTransportRefusesInvalidConfig(t *testing.T) {
	id, err := identity.NewRandomEd25519Identity()
	require.NoError(t, err)
	peer := principal.NewSelfAuthenticating([]byte("peer")).Encode()

	for name, tc := range map[string]struct {
		id   identity.Identity
		cfg  TransportConfig
		want string
	}{
		"anonymous identity": {
			id: identity.AnonymousIdentity{}, want: "identity that signs",
		},
		"route principal": {
			id:   id,
			cfg:  TransportConfig{Routes: map[string]string{"not-a-principal": "http://x"}},
			want: `"not-a-principal" has a bad length or checksum`,
		},
		"route url": {
			id:   id,
			cfg:  TransportConfig{Routes: map[string]string{peer: "ftp://x"}},
			want: `url "ftp://x" is not an absolute http or https url`,
		},
		"default url": {
			id: id, cfg: TransportConfig{DefaultURL: "localhost:8080"},
			want: `url "localhost:8080"`,
		},
		"negative expiry": {
			id: id, cfg: TransportConfig{IngressExpiry: -1}, want: "ingress expiry -1ns",
		},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewTransport(tc.id, tc.cfg)
			require.ErrorIs(t, err, asyncflow.ErrInvalidConfig)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestSubmitErrorParsesAgentGoAnswers(t *testing.T) {
	to := principal.NewSelfAuthenticating([]byte("peer"))
	for _, tc := range []struct {
		msg    string
		status int
		reason string
	}{
		{"(413) 413 Request Entity Too Large: body is larger than 10", 413,
			"body is larger than 10"},
		{"(400) 400 Bad Request: first: line\nsecond line", 400, "first: line"},
		{"(3) canister not found: IC0301", 200, "reject code 3: canister not found: IC0301"},
	} {
		err := submitError(to, asyncflow.MethodAck, errors.New(tc.msg))

		var refused *RefusedError
		require.ErrorAs(t, err, &refused, tc.msg)
		require.Equal(t, tc.status, refused.Status)
		require.Equal(t, tc.reason, refused.Reason)
	}

	err := submitError(to, asyncflow.MethodAck, errors.New("cbor: unexpected EOF"))
	var refused *RefusedError
	require.False(t, errors.As(err, &refused))
}

func waitFor(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-timeout(t):
		t.Fatal("timed out waiting")
	}
}

// timeout returns a channel closed after the test's bounded wait.
func timeout(t *testing.T) <-chan struct{} {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx.Done()
}
