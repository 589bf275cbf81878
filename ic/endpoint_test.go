package ic

import (
	"bytes"
	"context"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/asyncflow/asyncflow"
	agent "github.com/aviate-labs/agent-go"
	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
	"github.com/stretchr/testify/require"
)

// selfDescribeTag is CBOR tag 55799, which agent-js puts before a body.
var selfDescribeTag = []byte{0xd9, 0xd9, 0xf7}

func TestEndpointAcceptsSubmissionOnV3Path(t *testing.T) {
	h := newHarness(t, EndpointConfig{})
	id, err := identity.NewRandomSecp256k1Identity()
	require.NoError(t, err)
	arg := candidArg(t, "ackack")

	req := callRequest(t, id, h.self, asyncflow.MethodAckAck, arg)
	body := encode(t, signed(id, req))
	status, reason := h.post(t, "/api/v3/canister/"+h.self.Encode()+"/call",
		bytes.NewReader(body))

	require.Equal(t, http.StatusAccepted, status, reason)
	require.Empty(t, reason)
	accepted, _ := h.in.calls()
	require.Equal(t, []delivered{{id.Sender(), asyncflow.MethodAckAck, arg}}, accepted)
	require.Empty(t, h.rejections())
}

func TestEndpointAcceptsSelfDescribeTag(t *testing.T) {
	h := newHarness(t, EndpointConfig{})
	id, err := identity.NewRandomPrime256v1Identity()
	require.NoError(t, err)
	arg := candidArg(t, "newMessage")

	req := callRequest(t, id, h.self, asyncflow.MethodNewMessage, arg)
	body := append(bytes.Clone(selfDescribeTag), encode(t, signed(id, req))...)
	status, reason := h.post(t, callPath(h.self), bytes.NewReader(body))

	require.Equal(t, http.StatusAccepted, status, reason)
	accepted, _ := h.in.calls()
	require.Equal(t, []delivered{{id.Sender(), asyncflow.MethodNewMessage, arg}}, accepted)
}

// TestEndpointAcceptsIndefiniteLengthEnvelope: CBOR lets a map be sent
// without its length; the same element limits apply to it.
func TestEndpointAcceptsIndefiniteLengthEnvelope(t *testing.T) {
	h := newHarness(t, EndpointConfig{})
	id, err := identity.NewRandomEd25519Identity()
	require.NoError(t, err)
	path, req := valid(t, h, id)
	env := signed(id, req)

	body := []byte{0xbf} // map of indefinite length
	for _, v := range []any{
		"content", contentMap(req),
		"sender_pubkey", env.SenderPubKey,
		"sender_sig", env.SenderSig,
	} {
		body = append(body, encode(t, v)...)
	}
	body = append(body, 0xff) // break
	status, reason := h.post(t, path, bytes.NewReader(body))

	require.Equal(t, http.StatusAccepted, status, reason)
}

// TestEndpointRefusesUnknownContentFields shows that a content field a
// call does not have is refused, even when the signature covers it: an
// unknown field could hold a large value that nobody signed.
func TestEndpointRefusesUnknownContentFields(t *testing.T) {
	h := newHarness(t, EndpointConfig{})
	id, err := identity.NewRandomEd25519Identity()
	require.NoError(t, err)
	req := callRequest(t, id, h.self, asyncflow.MethodAck, candidArg(t, "ack"))

	fields := contentMap(req)
	fields["x_extension"] = []any{uint64(7), "seven", map[string]any{"n": int64(-7)}}
	full, err := requestID(fields)
	require.NoError(t, err)
	body := encode(t, map[string]any{
		"content":       fields,
		"sender_pubkey": id.PublicKey(),
		"sender_sig":    agent.RequestID(full).Sign(id),
	})

	status, reason := h.post(t, callPath(h.self), bytes.NewReader(body))
	h.requireRefused(t, status, reason, http.StatusBadRequest,
		`content field "x_extension" is not a field of a call`)
}

// contentMap is the content map agent-go encodes for req.
func contentMap(req agent.Request) map[string]any {
	return map[string]any{
		"request_type":   req.Type,
		"sender":         req.Sender.Raw,
		"canister_id":    req.CanisterID.Raw,
		"method_name":    req.MethodName,
		"arg":            req.Arguments,
		"ingress_expiry": req.IngressExpiry,
		"nonce":          req.Nonce,
	}
}

// rawMap encodes a CBOR map from alternating keys and values, in order
// and without removing duplicates.
func rawMap(t testing.TB, kv ...any) []byte {
	t.Helper()
	require.Less(t, len(kv)/2, 24)
	out := []byte{0xa0 | byte(len(kv)/2)}
	for _, v := range kv {
		out = append(out, encode(t, v)...)
	}
	return out
}

// contentPairs lists req's content as rawMap arguments.
func contentPairs(req agent.Request) []any {
	return []any{
		"request_type", req.Type,
		"sender", req.Sender.Raw,
		"canister_id", req.CanisterID.Raw,
		"method_name", req.MethodName,
		"arg", req.Arguments,
		"ingress_expiry", req.IngressExpiry,
		"nonce", req.Nonce,
	}
}

// spki encodes a public key with the given algorithm identifier.
func spki(t *testing.T, alg pkix.AlgorithmIdentifier, key []byte) []byte {
	t.Helper()
	der, err := asn1.Marshal(struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}{alg, asn1.BitString{Bytes: key, BitLength: 8 * len(key)}})
	require.NoError(t, err)
	return der
}

func ecAlgorithm(t *testing.T, curve asn1.ObjectIdentifier) pkix.AlgorithmIdentifier {
	t.Helper()
	params, err := asn1.Marshal(curve)
	require.NoError(t, err)
	return pkix.AlgorithmIdentifier{
		Algorithm:  oidECPublicKey,
		Parameters: asn1.RawValue{FullBytes: params},
	}
}

// refusalCase builds a broken submission for the harness h.
type refusalCase struct {
	name   string
	build  func(t *testing.T, h *harness, id identity.Identity) (path string, body []byte)
	status int
	reason string
	// verified is set when the refusal comes after the signature verified,
	// so the Rejection names the sender.
	verified bool
	// method is the Rejection's method, when the content decoded.
	method string
}

// valid returns a valid call of newMessage and its path.
func valid(t *testing.T, h *harness, id identity.Identity) (string, agent.Request) {
	return callPath(h.self), callRequest(t, id, h.self, asyncflow.MethodNewMessage,
		candidArg(t, "newMessage"))
}

// withKey signs req with id but presents der as the key, with a sender
// derived from der so that only the key itself is wrong.
func withKey(t *testing.T, h *harness, id identity.Identity, der []byte) (string, []byte) {
	path, req := valid(t, h, id)
	req.Sender = principal.NewSelfAuthenticating(der)
	env := signed(id, req)
	env.SenderPubKey = der
	return path, encode(t, env)
}

// mutated builds a valid call, lets change alter the request, and signs
// the result properly.
func mutated(change func(*agent.Request)) func(*testing.T, *harness,
	identity.Identity) (string, []byte) {
	return func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
		path, req := valid(t, h, id)
		change(&req)
		return path, encode(t, signed(id, req))
	}
}

func refusalCases() []refusalCase {
	other := principal.NewSelfAuthenticating([]byte("another endpoint"))
	newMessage := asyncflow.MethodNewMessage
	return []refusalCase{
		{
			name: "malformed cbor",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				path, req := valid(t, h, id)
				body := encode(t, signed(id, req))
				return path, body[:len(body)/2]
			},
			status: 400, reason: "malformed cbor envelope",
		},
		{
			name: "not a map",
			build: func(t *testing.T, h *harness, _ identity.Identity) (string, []byte) {
				return callPath(h.self), encode(t, []string{"call"})
			},
			status: 400, reason: "malformed cbor envelope",
		},
		{
			name: "trailing bytes after the envelope",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				path, req := valid(t, h, id)
				return path, append(encode(t, signed(id, req)), 0x00)
			},
			status: 400, reason: "malformed cbor envelope",
		},
		{
			name: "duplicate key in content",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				path, req := valid(t, h, id)
				env := signed(id, req)
				pairs := append(contentPairs(req), "method_name", asyncflow.MethodAckAck)
				return path, rawMap(t,
					"content", cbor.RawMessage(rawMap(t, pairs...)),
					"sender_pubkey", env.SenderPubKey,
					"sender_sig", env.SenderSig)
			},
			status: 400, reason: "duplicate map key",
		},
		{
			name: "duplicate key in envelope",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				path, req := valid(t, h, id)
				env := signed(id, req)
				content := cbor.RawMessage(rawMap(t, contentPairs(req)...))
				return path, rawMap(t,
					"content", content,
					"sender_pubkey", env.SenderPubKey,
					"sender_sig", env.SenderSig,
					"sender_sig", env.SenderSig)
			},
			status: 400, reason: "duplicate map key",
		},
		{
			name: "unknown envelope field",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				path, req := valid(t, h, id)
				env := signed(id, req)
				return path, encode(t, map[string]any{
					"content":       contentMap(req),
					"sender_pubkey": env.SenderPubKey,
					"sender_sig":    env.SenderSig,
					"sender_extra":  []byte{1},
				})
			},
			status: 400, reason: "unknown field",
		},
		{
			name: "envelope key in another case",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				path, req := valid(t, h, id)
				env := signed(id, req)
				return path, encode(t, map[string]any{
					"Content":       contentMap(req),
					"sender_pubkey": env.SenderPubKey,
					"sender_sig":    env.SenderSig,
				})
			},
			status: 400, reason: "unknown field",
		},
		{
			name: "content map with too many fields",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				path, req := valid(t, h, id)
				fields := contentMap(req)
				for i := range 100 {
					fields[fmt.Sprintf("extra_%d", i)] = uint64(i)
				}
				return path, encode(t, map[string]any{"content": fields})
			},
			status: 400, reason: "exceeded max number of key-value pairs",
		},
		{
			name: "content field of the wrong type",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				path, req := valid(t, h, id)
				fields := contentMap(req)
				fields["ingress_expiry"] = "soon"
				return path, encode(t, map[string]any{"content": fields})
			},
			status: 400, reason: "content field ingress_expiry has the wrong cbor type",
		},
		{
			name: "request type query",
			build: mutated(func(r *agent.Request) {
				r.Type = agent.RequestTypeQuery
			}),
			status: 400, reason: `request type "query" is not accepted`,
			method: newMessage,
		},
		{
			name: "bad signature",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				path, req := valid(t, h, id)
				env := signed(id, req)
				env.SenderSig[10] ^= 0x01
				return path, encode(t, env)
			},
			status: 403, reason: "signature does not verify", method: newMessage,
		},
		{
			name: "content changed after signing",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				path, req := valid(t, h, id)
				env := signed(id, req)
				env.Content.Arguments = candidArg(t, "ackack")
				return path, encode(t, env)
			},
			status: 403, reason: "signature does not verify", method: newMessage,
		},
		{
			name: "short signature",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				path, req := valid(t, h, id)
				env := signed(id, req)
				env.SenderSig = env.SenderSig[:3]
				return path, encode(t, env)
			},
			status: 403, reason: "signature has 3 bytes, want 64", method: newMessage,
		},
		{
			name: "long signature",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				path, req := valid(t, h, id)
				env := signed(id, req)
				env.SenderSig = append(env.SenderSig, 0)
				return path, encode(t, env)
			},
			status: 403, reason: "signature has 65 bytes, want 64", method: newMessage,
		},
		{
			name: "missing signature",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				path, req := valid(t, h, id)
				env := signed(id, req)
				env.SenderSig = nil
				return path, encode(t, env)
			},
			status: 403, reason: "request is not signed", method: newMessage,
		},
		{
			name: "truncated der public key",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				return withKey(t, h, id, id.PublicKey()[:20])
			},
			status: 403, reason: "public key is not valid der", method: newMessage,
		},
		{
			name: "garbage public key",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				return withKey(t, h, id, []byte{0x30, 0x82, 0xff, 0xff, 0x01})
			},
			status: 403, reason: "public key is not valid der", method: newMessage,
		},
		{
			name: "public key with trailing bytes",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				return withKey(t, h, id, append(bytes.Clone(id.PublicKey()), 0))
			},
			status: 403, reason: "public key has 1 trailing bytes", method: newMessage,
		},
		{
			name: "oversized public key",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				return withKey(t, h, id, bytes.Repeat([]byte{0x30}, 4096))
			},
			status: 403, reason: "sender public key of 4096 bytes is too large",
			method: newMessage,
		},
		{
			name: "ed25519 key of the wrong length",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				alg := pkix.AlgorithmIdentifier{Algorithm: oidEd25519}
				return withKey(t, h, id, spki(t, alg, make([]byte, 31)))
			},
			status: 403, reason: "ed25519 public key has 31 bytes, want 32",
			method: newMessage,
		},
		{
			name: "unknown key algorithm",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				ed448 := pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 3, 101, 113}}
				return withKey(t, h, id, spki(t, ed448, make([]byte, 57)))
			},
			status: 403, reason: "public key algorithm 1.3.101.113 is not supported",
			method: newMessage,
		},
		{
			name: "unknown ecdsa curve",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				p384 := ecAlgorithm(t, asn1.ObjectIdentifier{1, 3, 132, 0, 34})
				return withKey(t, h, id, spki(t, p384, make([]byte, 97)))
			},
			status: 403, reason: "ecdsa curve 1.3.132.0.34 is not supported",
			method: newMessage,
		},
		{
			name: "ecdsa point not on the curve",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				point := append([]byte{0x04}, bytes.Repeat([]byte{0x01}, 64)...)
				return withKey(t, h, id, spki(t, ecAlgorithm(t, oidP256), point))
			},
			status: 403, reason: "not a curve point", method: newMessage,
		},
		{
			name: "sender not matching the key",
			build: mutated(func(r *agent.Request) {
				r.Sender = principal.NewSelfAuthenticating([]byte("someone else"))
			}),
			status: 403, reason: "is not the principal", method: newMessage,
		},
		{
			name: "anonymous sender",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				path, req := valid(t, h, id)
				req.Sender = principal.AnonymousID
				return path, encode(t, agent.Envelope{Content: req})
			},
			status: 403, reason: "anonymous callers are not accepted", method: newMessage,
		},
		{
			name: "delegation present",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				path, req := valid(t, h, id)
				env := signed(id, req)
				return path, encode(t, map[string]any{
					"content":       contentMap(req),
					"sender_pubkey": env.SenderPubKey,
					"sender_sig":    env.SenderSig,
					"sender_delegation": []any{map[string]any{
						"delegation": map[string]any{
							"pubkey":     env.SenderPubKey,
							"expiration": uint64(time.Now().Add(time.Hour).UnixNano()),
						},
						"signature": env.SenderSig,
					}},
				})
			},
			status: 400, reason: "sender delegations are not supported", method: newMessage,
		},
		{
			name: "expired",
			build: mutated(func(r *agent.Request) {
				r.IngressExpiry = uint64(time.Now().Add(-time.Minute).UnixNano())
			}),
			status: 400, reason: "has expired", method: newMessage,
		},
		{
			name: "far future expiry",
			build: mutated(func(r *agent.Request) {
				r.IngressExpiry = uint64(time.Now().Add(6 * time.Minute).UnixNano())
			}),
			status: 400, reason: "too far in the future", method: newMessage,
		},
		{
			name: "wrong canister id in content",
			build: mutated(func(r *agent.Request) {
				r.CanisterID = other
			}),
			status: 400,
			reason: "canister id " + other.Encode() + " in content is not this endpoint's",
			method: newMessage,
		},
		{
			name: "wrong canister id in path",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				_, req := valid(t, h, id)
				return callPath(other), encode(t, signed(id, req))
			},
			status: 400,
			reason: "canister id " + other.Encode() + " in path is not this endpoint's",
		},
		{
			name: "invalid canister id in path",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				_, req := valid(t, h, id)
				return "/api/v2/canister/not-a-principal/call", encode(t, signed(id, req))
			},
			status: 400, reason: `canister id "not-a-principal" in path is invalid`,
		},
		{
			name: "unknown path",
			build: func(t *testing.T, h *harness, id identity.Identity) (string, []byte) {
				_, req := valid(t, h, id)
				return "/api/v2/canister/" + h.self.Encode() + "/query",
					encode(t, signed(id, req))
			},
			status: 404, reason: "is not a call endpoint",
		},
		{
			name: "unknown method",
			build: mutated(func(r *agent.Request) {
				r.MethodName = "transfer"
			}),
			status: 400, reason: `method "transfer" is not an asyncflow method`,
			method: "transfer",
		},
	}
}

func TestEndpointRefuses(t *testing.T) {
	for _, tc := range refusalCases() {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, EndpointConfig{})
			id, err := identity.NewRandomEd25519Identity()
			require.NoError(t, err)

			path, body := tc.build(t, h, id)
			status, reason := h.post(t, path, bytes.NewReader(body))

			rejection := h.requireRefused(t, status, reason, tc.status, tc.reason)
			require.Equal(t, tc.method, rejection.Method)
			if tc.verified {
				require.Equal(t, id.Sender(), rejection.From)
			} else {
				require.Empty(t, rejection.From.Raw)
			}
		})
	}
}

// An argument the Inbound cannot decode is refused with 400, reported by
// the Inbound rather than by the endpoint.
func TestEndpointRefusesAnArgumentTheInboundCannotDecode(t *testing.T) {
	h := newHarness(t, EndpointConfig{})
	id, err := identity.NewRandomEd25519Identity()
	require.NoError(t, err)
	path, body := mutated(func(r *agent.Request) {
		r.Arguments = []byte("DIDL\x00\x00")
	})(t, h, id)

	status, reason := h.post(t, path, bytes.NewReader(body))
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, reason, "invalid candid")
	require.Empty(t, h.rejections())
	accepted, attempts := h.in.calls()
	require.Empty(t, accepted)
	require.Equal(t, 1, attempts)
}

func TestEndpointRefusesGet(t *testing.T) {
	h := newHarness(t, EndpointConfig{})

	status, reason := h.do(t, http.MethodGet, callPath(h.self), nil)

	h.requireRefused(t, status, reason, http.StatusMethodNotAllowed, "method GET is not allowed")
	_, attempts := h.in.calls()
	require.Zero(t, attempts)
}

func TestEndpointMapsDeliverErrors(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
	}{
		{fmt.Errorf("%w: truncated record", asyncflow.ErrInvalidCandid), 400},
		{fmt.Errorf("%w: %q", asyncflow.ErrUnknownMethod, "x"), 400},
		{fmt.Errorf("%w: of 3 MiB", asyncflow.ErrPayloadTooLarge), 413},
		{asyncflow.ErrClosed, 503},
		{errors.New("store is full"), 500},
		{context.Canceled, 503},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			h := newHarness(t, EndpointConfig{})
			h.in.err = tc.err
			id, err := identity.NewRandomEd25519Identity()
			require.NoError(t, err)

			path, req := valid(t, h, id)
			status, reason := h.post(t, path, bytes.NewReader(encode(t, signed(id, req))))

			require.Equal(t, tc.status, status, reason)
			require.NotContains(t, reason, "store is full", "no internal detail leaks")
			require.Empty(t, h.rejections(), "the Inbound reports its own refusals")
			_, attempts := h.in.calls()
			require.Equal(t, 1, attempts)
		})
	}
}

func TestEndpointReasonIsOneBoundedLine(t *testing.T) {
	h := newHarness(t, EndpointConfig{})
	id, err := identity.NewRandomEd25519Identity()
	require.NoError(t, err)

	path, req := valid(t, h, id)
	req.MethodName = strings.Repeat("line\n", 10000)
	status, reason := h.post(t, path, bytes.NewReader(encode(t, signed(id, req))))

	h.requireRefused(t, status, reason, http.StatusBadRequest, "is not an asyncflow method")
	require.LessOrEqual(t, len(reason), maxReasonBytes+len("..."))
}

func TestNewEndpointRefusesInvalidConfig(t *testing.T) {
	in := &recordingInbound{}
	self := principal.NewSelfAuthenticating([]byte("key"))
	for name, tc := range map[string]struct {
		self principal.Principal
		in   asyncflow.Inbound
		cfg  EndpointConfig
	}{
		"empty principal":     {principal.Principal{}, in, EndpointConfig{}},
		"anonymous principal": {principal.AnonymousID, in, EndpointConfig{}},
		"no inbound":          {self, nil, EndpointConfig{}},
		"negative drift":      {self, in, EndpointConfig{PermittedDrift: -time.Second}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewEndpoint(tc.self, tc.in, tc.cfg)
			require.Error(t, err)
		})
	}
}
