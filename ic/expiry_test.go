package ic

import (
	"context"
	"errors"
	"math"
	"net/url"
	"testing"
	"time"

	"github.com/asyncflow/asyncflow"
	agent "github.com/aviate-labs/agent-go"
	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/stretchr/testify/require"
)

// submitAt submits a signed ackack from id to the harness through
// agent-go's client, with the ingress expiry agent-go sets (its clock's
// now plus ttl) from a sender whose clock reads now+ahead. It returns nil
// on 202, or the submission's error.
func submitAt(t *testing.T, h *harness, id identity.Identity, ahead, ttl time.Duration) error {
	t.Helper()
	req := callRequest(t, id, h.self, asyncflow.MethodAckAck, candidArg(t, "ackack"))
	req.IngressExpiry = uint64(time.Now().Add(ahead).Add(ttl).UnixNano())
	body := encode(t, signed(id, req))

	host, err := url.Parse(h.srv.URL)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, err = agent.NewClient(agent.ClientConfig{Host: host}).Call(ctx, h.self, body)
	if err != nil {
		return submitError(h.self, asyncflow.MethodAckAck, err)
	}
	return nil
}

// The ingress expiry is accepted from now - drift to now + 5 min + drift,
// as on the IC. agent-go sets exactly now + 5 min, so a sender whose clock
// runs ahead by less than the drift gets through. Every case keeps 15 s
// from the bound, so the test does not depend on how fast it runs.
func TestEndpointIngressExpiry(t *testing.T) {
	const ttl = DefaultMaxIngressExpiry // what agent-go v0.6.1 sets
	for _, tc := range []struct {
		name  string
		cfg   EndpointConfig
		ahead time.Duration // the sender's clock minus this one's
		ttl   time.Duration
		// refused is the reason's fragment; empty for 202 Accepted.
		refused string
	}{
		{name: "agent-go expiry from a clock on time", ttl: ttl},
		{name: "agent-go expiry from a clock 20s ahead", ahead: 20 * time.Second, ttl: ttl},
		{name: "agent-go expiry from a clock 45s ahead", ahead: 45 * time.Second, ttl: ttl,
			refused: "too far in the future"},
		{name: "expired 15s ago", ttl: -15 * time.Second},
		{name: "expired 45s ago", ttl: -45 * time.Second, refused: "has expired"},
		{name: "clock 90s ahead with a 2m drift", ahead: 90 * time.Second, ttl: ttl,
			cfg: EndpointConfig{PermittedDrift: 2 * time.Minute}},
		{name: "expired 90s ago with a 2m drift", ttl: -90 * time.Second,
			cfg: EndpointConfig{PermittedDrift: 2 * time.Minute}},
		{name: "clock 150s ahead with a 2m drift", ahead: 150 * time.Second, ttl: ttl,
			cfg:     EndpointConfig{PermittedDrift: 2 * time.Minute},
			refused: "too far in the future"},
		{name: "10m expiry with a 10m maximum", ttl: 10 * time.Minute,
			cfg: EndpointConfig{MaxIngressExpiry: 10 * time.Minute}},
		{name: "10m expiry with the default maximum", ttl: 10 * time.Minute,
			refused: "too far in the future"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.cfg)
			id, err := identity.NewRandomEd25519Identity()
			require.NoError(t, err)

			err = submitAt(t, h, id, tc.ahead, tc.ttl)

			if tc.refused == "" {
				require.NoError(t, err)
				accepted, _ := h.in.calls()
				require.Len(t, accepted, 1)
				return
			}
			var refused *RefusedError
			require.True(t, errors.As(err, &refused), "got %v", err)
			h.requireRefused(t, refused.Status, refused.Reason, 400, tc.refused)
		})
	}
}

// Limits whose sum does not fit in a time.Duration would wrap around and
// refuse every expiry; NewEndpoint refuses them instead.
func TestNewEndpointRefusesExpiryLimitsThatOverflow(t *testing.T) {
	self := principal.NewSelfAuthenticating([]byte("key"))

	_, err := NewEndpoint(self, &recordingInbound{}, EndpointConfig{
		MaxIngressExpiry: math.MaxInt64 - time.Second, PermittedDrift: time.Minute,
	})

	require.ErrorIs(t, err, asyncflow.ErrInvalidConfig)
}
