package ic

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"slices"
)

// requestID is the representation-independent hash of a request's content
// map, as the IC interface specification defines it: every field is hashed
// by its type, the pairs (hash of key, hash of value) are sorted and the
// hash of their concatenation is the id.
//
// It hashes the map exactly as it was received. The endpoint admits only
// the fields of a call; the other value types the specification defines
// (arrays, maps, signed integers) are hashed too, so that the function
// stays the specification's and is checked against agent-go as such.
func requestID(content map[string]any) ([32]byte, error) {
	return hashMap(content)
}

// hashMap hashes a map with text keys, the only kind the IC hashes.
func hashMap(m map[string]any) ([32]byte, error) {
	pairs := make([][]byte, 0, len(m))
	for key, value := range m {
		keyHash := sha256.Sum256([]byte(key))
		valueHash, err := hashValue(value)
		if err != nil {
			return [32]byte{}, fmt.Errorf("field %q: %w", key, err)
		}
		pairs = append(pairs, append(keyHash[:], valueHash[:]...))
	}

	slices.SortFunc(pairs, bytes.Compare)

	return sha256.Sum256(bytes.Join(pairs, nil)), nil
}

// hashValue hashes one value as decoded from CBOR into an interface:
// blobs and text by their bytes, naturals by their LEB128 encoding,
// negative integers by their signed LEB128 encoding, arrays by the
// concatenation of their elements' hashes and maps recursively. Anything
// else (floats, booleans, null, tags) has no defined hash and is refused.
func hashValue(value any) ([32]byte, error) {
	switch v := value.(type) {
	case []byte:
		return sha256.Sum256(v), nil
	case string:
		return sha256.Sum256([]byte(v)), nil
	case uint64:
		return sha256.Sum256(appendULEB128(nil, v)), nil
	case int64:
		return sha256.Sum256(appendSLEB128(nil, v)), nil
	case []any:
		return hashArray(v)
	case map[string]any:
		return hashMap(v)
	case map[any]any:
		return hashAnyMap(v)
	}
	return [32]byte{}, fmt.Errorf("value of type %T has no request id hash", value)
}

// hashArray hashes an array as the hash of its elements' hashes.
func hashArray(values []any) ([32]byte, error) {
	joined := make([]byte, 0, len(values)*sha256.Size)
	for i, value := range values {
		h, err := hashValue(value)
		if err != nil {
			return [32]byte{}, fmt.Errorf("element %d: %w", i, err)
		}
		joined = append(joined, h[:]...)
	}
	return sha256.Sum256(joined), nil
}

// hashAnyMap hashes a nested map, which the decoder returns with untyped
// keys; every key must be text.
func hashAnyMap(m map[any]any) ([32]byte, error) {
	typed := make(map[string]any, len(m))
	for key, value := range m {
		text, ok := key.(string)
		if !ok {
			return [32]byte{}, fmt.Errorf("map key of type %T is not text", key)
		}
		typed[text] = value
	}
	return hashMap(typed)
}

// appendULEB128 appends the unsigned LEB128 encoding of v to b.
func appendULEB128(b []byte, v uint64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// appendSLEB128 appends the signed LEB128 encoding of v to b.
func appendSLEB128(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		done := (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0)
		if done {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
