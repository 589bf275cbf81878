package ic

import (
	"errors"
	"fmt"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
)

// maxPrincipalSize is the largest principal the IC defines, in bytes.
const maxPrincipalSize = 29

// decoder decodes request envelopes. Its limits keep a hostile body from
// costing more than its size: duplicate map keys are refused (two values
// for one field would let the signed and the delivered value differ),
// nesting, array and map sizes are bounded, indefinite-length items fall
// under the same bounds, text must be valid UTF-8 and unknown envelope
// fields are refused. The self-describe tag (55799) is accepted and
// skipped.
var decoder = mustDecoder()

func mustDecoder() cbor.DecMode {
	mode, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		FieldNameMatching: cbor.FieldNameMatchingCaseSensitive,
		MaxNestedLevels:   16,
		MaxArrayElements:  1024,
		MaxMapPairs:       64,
		IndefLength:       cbor.IndefLengthAllowed,
		UTF8:              cbor.UTF8RejectInvalid,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
	if err != nil {
		panic(fmt.Sprintf("ic: cbor decoder options: %v", err))
	}
	return mode
}

// envelope is the outer map of a submission. Content stays raw so that its
// fields can be checked before they are decoded, and hashed as received.
type envelope struct {
	Content          cbor.RawMessage `cbor:"content"`
	SenderPubKey     []byte          `cbor:"sender_pubkey"`
	SenderSig        []byte          `cbor:"sender_sig"`
	SenderDelegation cbor.RawMessage `cbor:"sender_delegation"`
}

// content holds the fields of a call's content map that the endpoint
// reads, next to the map itself, which is what the request id covers.
type content struct {
	fields        map[string]any
	requestType   string
	method        string
	canisterID    principal.Principal
	sender        principal.Principal
	arg           []byte
	ingressExpiry uint64
}

// decodeEnvelope decodes a submission body, with or without the
// self-describe tag.
func decodeEnvelope(body []byte) (envelope, error) {
	var env envelope
	if err := decoder.Unmarshal(body, &env); err != nil {
		return envelope{}, fmt.Errorf("malformed cbor envelope: %w", err)
	}
	if len(env.Content) == 0 {
		return envelope{}, errors.New("envelope has no content")
	}
	return env, nil
}

// contentFields are the fields a call's content map may hold, with the
// CBOR major type of each: 0 for an unsigned integer, 2 for a byte string,
// 3 for a text string. A content map with any other field is refused
// before anything in it is decoded, so that an unsigned body cannot make
// the endpoint build a large generic value.
var contentFields = map[string]byte{
	"request_type":   3,
	"method_name":    3,
	"canister_id":    2,
	"sender":         2,
	"arg":            2,
	"nonce":          2,
	"ingress_expiry": 0,
}

// decodeContent decodes the content map and reads the fields of a call.
// Every field must have the type the IC interface gives it.
func decodeContent(raw cbor.RawMessage) (content, error) {
	var fields map[string]cbor.RawMessage
	if err := decoder.Unmarshal(raw, &fields); err != nil {
		return content{}, fmt.Errorf("malformed content map: %w", err)
	}

	c := content{fields: make(map[string]any, len(fields))}
	for name, value := range fields {
		v, err := decodeContentField(name, value)
		if err != nil {
			return content{}, err
		}
		c.fields[name] = v
	}

	var err error
	if c.requestType, err = textField(c.fields, "request_type"); err != nil {
		return content{}, err
	}
	if c.method, err = textField(c.fields, "method_name"); err != nil {
		return content{}, err
	}
	if c.canisterID, err = principalField(c.fields, "canister_id"); err != nil {
		return content{}, err
	}
	if c.sender, err = principalField(c.fields, "sender"); err != nil {
		return content{}, err
	}
	if c.arg, err = blobField(c.fields, "arg"); err != nil {
		return content{}, err
	}
	if c.ingressExpiry, err = natField(c.fields, "ingress_expiry"); err != nil {
		return content{}, err
	}
	return c, nil
}

// decodeContentField decodes one field of the content map after checking
// that the field is known and holds the CBOR type the IC gives it.
func decodeContentField(name string, raw cbor.RawMessage) (any, error) {
	major, known := contentFields[name]
	if !known {
		return nil, fmt.Errorf("content field %s is not a field of a call", quoteShort(name))
	}
	if len(raw) == 0 || raw[0]>>5 != major {
		return nil, fmt.Errorf("content field %s has the wrong cbor type", name)
	}

	var v any
	if err := decoder.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("content field %s: %w", name, err)
	}
	return v, nil
}

// field returns a required field of the content map.
func field(fields map[string]any, name string) (any, error) {
	value, ok := fields[name]
	if !ok {
		return nil, fmt.Errorf("content has no %s", name)
	}
	return value, nil
}

func textField(fields map[string]any, name string) (string, error) {
	value, err := field(fields, name)
	if err != nil {
		return "", err
	}
	text, ok := value.(string)
	if !ok {
		return "", fmt.Errorf("content field %s is %T, want text", name, value)
	}
	return text, nil
}

func blobField(fields map[string]any, name string) ([]byte, error) {
	value, err := field(fields, name)
	if err != nil {
		return nil, err
	}
	blob, ok := value.([]byte)
	if !ok {
		return nil, fmt.Errorf("content field %s is %T, want blob", name, value)
	}
	return blob, nil
}

func natField(fields map[string]any, name string) (uint64, error) {
	value, err := field(fields, name)
	if err != nil {
		return 0, err
	}
	nat, ok := value.(uint64)
	if !ok {
		return 0, fmt.Errorf("content field %s is %T, want a 64-bit nat", name, value)
	}
	return nat, nil
}

func principalField(fields map[string]any, name string) (principal.Principal, error) {
	blob, err := blobField(fields, name)
	if err != nil {
		return principal.Principal{}, err
	}
	if len(blob) > maxPrincipalSize {
		return principal.Principal{}, fmt.Errorf("content field %s has %d bytes, "+
			"more than a principal's %d", name, len(blob), maxPrincipalSize)
	}
	return principal.Principal{Raw: blob}, nil
}

// expiryTime describes an ingress expiry in nanoseconds for a reason.
func expiryTime(ns uint64) string {
	if ns > 1<<63-1 {
		return fmt.Sprintf("%d ns", ns)
	}
	return time.Unix(0, int64(ns)).UTC().Format(time.RFC3339Nano)
}
