package asyncflow

import (
	"hash/crc32"
	"strconv"
)

// Hash is the optional CRC-32 that ack and ackack carry (Candid
// `opt nat32`).
type Hash struct {
	// Value is the CRC-32; it means nothing unless Valid is set.
	Value uint32
	// Valid is false when the peer sent null: it did not check.
	Valid bool
}

// HashOf returns the CRC-32 (IEEE polynomial) of a payload. It equals
// Motoko's Blob.hash of the same bytes.
func HashOf(payload []byte) Hash {
	return Hash{Value: crc32.ChecksumIEEE(payload), Valid: true}
}

// SomeHash returns a present hash of value v.
func SomeHash(v uint32) Hash {
	return Hash{Value: v, Valid: true}
}

// Matches reports whether h, as sent by a peer, agrees with the CRC-32 of
// payload. An absent hash matches unless strict is set; a Delivery still
// shows it as absent, never as checked.
func (h Hash) Matches(payload []byte, strict bool) bool {
	if !h.Valid {
		return !strict
	}
	return h.Value == crc32.ChecksumIEEE(payload)
}

// String returns the decimal value, or "null" when the hash is absent.
func (h Hash) String() string {
	if !h.Valid {
		return "null"
	}
	return strconv.FormatUint(uint64(h.Value), 10)
}

// MarshalJSON writes the hash as a JSON number, or null when absent.
func (h Hash) MarshalJSON() ([]byte, error) {
	return []byte(h.String()), nil
}
