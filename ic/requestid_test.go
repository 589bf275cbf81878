package ic

import (
	"encoding/hex"
	"testing"
	"time"

	agent "github.com/aviate-labs/agent-go"
	"github.com/aviate-labs/agent-go/certification/hashtree"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/stretchr/testify/require"
)

// decodedContent encodes env as agent-go does and decodes its content
// map as the endpoint does.
func decodedContent(t *testing.T, env agent.Envelope) map[string]any {
	t.Helper()
	decoded, err := decodeEnvelope(encode(t, env))
	require.NoError(t, err)
	var fields map[string]any
	require.NoError(t, decoder.Unmarshal(decoded.Content, &fields))
	return fields
}

func TestRequestIDMatchesSpecExample(t *testing.T) {
	// The example of the IC interface specification's request id section.
	fields := map[string]any{
		"request_type":   "call",
		"sender":         []byte{0x04},
		"ingress_expiry": uint64(1685570400000000000),
		"canister_id":    []byte{0, 0, 0, 0, 0, 0, 0x04, 0xd2},
		"method_name":    "hello",
		"arg":            []byte("DIDL\x00\xfd*"),
	}

	id, err := requestID(fields)

	require.NoError(t, err)
	require.Equal(t, "1d1091364d6bb8a6c16b203ee75467d59ead468f523eb058880ae8ec80e2b101",
		hex.EncodeToString(id[:]))
}

func TestRequestIDEqualsAgentGo(t *testing.T) {
	for i := range 50 {
		for alg, id := range testIdentities(t) {
			req := agent.Request{
				Type:          agent.RequestTypeCall,
				Sender:        id.Sender(),
				CanisterID:    principal.NewRandomPrincipal(),
				MethodName:    "com_asyncFlow_newMessage",
				Arguments:     randomBytes(t, 1+i*37),
				IngressExpiry: uint64(time.Now().Add(time.Duration(i) * time.Hour).UnixNano()),
				Nonce:         randomBytes(t, 1+i%32),
			}

			got, err := requestID(decodedContent(t, signed(id, req)))

			require.NoError(t, err)
			require.Equal(t, [32]byte(agent.NewRequestID(req)), got, "%s request %d", alg, i)
		}
	}
}

func TestRequestIDHashesNestedArrays(t *testing.T) {
	// agent-go hashes read_state paths, arrays of arrays of blobs.
	req := agent.Request{
		Type:          agent.RequestTypeReadState,
		Sender:        principal.AnonymousID,
		IngressExpiry: 1685570400000000000,
		Paths: [][]hashtree.Label{
			{hashtree.Label("request_status"), hashtree.Label("id")},
			{hashtree.Label("time")},
		},
	}

	got, err := requestID(decodedContent(t, agent.Envelope{Content: req}))

	require.NoError(t, err)
	require.Equal(t, [32]byte(agent.NewRequestID(req)), got)
}

func TestRequestIDRefusesValuesWithoutAHash(t *testing.T) {
	for name, value := range map[string]any{
		"float": 1.5,
		"bool":  true,
		"null":  nil,
		"key":   map[any]any{uint64(1): "x"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := requestID(map[string]any{"field": value})
			require.ErrorContains(t, err, `field "field"`)
		})
	}
}

func TestLEB128(t *testing.T) {
	require.Equal(t, []byte{0x00}, appendULEB128(nil, 0))
	require.Equal(t, []byte{0xe5, 0x8e, 0x26}, appendULEB128(nil, 624485))
	require.Equal(t, []byte{0x7f}, appendSLEB128(nil, -1))
	require.Equal(t, []byte{0xc0, 0xbb, 0x78}, appendSLEB128(nil, -123456))
	require.Equal(t, []byte{0x3f}, appendSLEB128(nil, 63))
	require.Equal(t, []byte{0xc0, 0x00}, appendSLEB128(nil, 64))
}
