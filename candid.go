package asyncflow

// This file is a dedicated Candid codec for the three asyncflow records. It
// uses no reflection and no math/big: a message id travels as a 128-bit nat,
// which two uint64 halves encode and decode.
//
// Encoding always produces the canonical form that @dfinity/candid produces
// (see testdata/candid-args.tsv). Decoding takes a fast path when the type
// table is byte-identical to that form; any other type table goes through a
// general decoder that applies the Candid subtyping rules for records and
// options, and skips every value it does not need after checking that the
// value is well-formed.
//
// The general decoder bounds its time and memory by the input length, so
// that any argument the IC accepts (2 MiB at most) is decoded or refused
// within a few milliseconds:
//   - every step of decoding that may read no byte of its own costs work:
//     a value visited while skipping (each field of a record, each element
//     of a vector, the chosen arm of a variant) one unit; a type table
//     entry, a type reference in the table and an argument type
//     candidTypeWork units, as they are read more than once. A message may
//     spend candidWorkBase units plus one per candidBytesPerWork bytes,
//     and is refused once it has spent them;
//   - everything else reads each input byte at most a few times in tight
//     loops: LEB128 numbers of any length (overlong ones are valid Candid),
//     text, blobs, and vectors of nat, int, bool and fixed-size values,
//     which cost one unit whatever their length;
//   - a vector whose elements take no bytes (vec null, vec reserved, vec
//     record {}) costs one unit whatever its count, since skipping it reads
//     nothing and allocates nothing;
//   - counts (type table entries, fields, arguments, vector elements, bytes)
//     may not exceed the bytes left, because each item takes at least one
//     byte;
//   - skipped values may nest at most candidMaxDepth constructors deep;
//   - the type table costs 24 bytes per entry and 4 per record or variant
//     field, and the work budget caps both; the decoder does not allocate
//     for a table of up to 8 entries and 24 fields.

import (
	"encoding/binary"
	"math"
)

// Candid field ids of the record fields: the Candid hash of each name
// (h = h*223 + byte, modulo 2^32). Records list them in this order.
const (
	candidFieldMsgID   = 274232921  // "msg_id"
	candidFieldHash    = 1158164430 // "hash"
	candidFieldPayload = 3979722638 // "payload"
)

// Candid type opcodes, as the sleb128 values of the binary format.
const (
	candidNull      = -1
	candidBool      = -2
	candidNat       = -3
	candidInt       = -4
	candidNat8      = -5
	candidNat16     = -6
	candidNat32     = -7
	candidNat64     = -8
	candidInt8      = -9
	candidInt16     = -10
	candidInt32     = -11
	candidInt64     = -12
	candidFloat32   = -13
	candidFloat64   = -14
	candidText      = -15
	candidReserved  = -16
	candidEmpty     = -17
	candidOpt       = -18
	candidVec       = -19
	candidRecord    = -20
	candidVariant   = -21
	candidFunc      = -22
	candidService   = -23
	candidPrincipal = -24

	// candidFuture stands for every opcode below candidPrincipal: a type
	// added to Candid after this codec, which the format lets us skip.
	candidFuture = -25
)

// Limits of the general decoder (see the top of this file).
const (
	// candidMaxDepth is how many constructors deep a skipped value may nest.
	candidMaxDepth = 64

	// candidBytesPerWork is how many input bytes buy one unit of work
	// beyond candidWorkBase. The slowest units take about 25 ns (see
	// BenchmarkDecodeHostile), so a 2 MiB argument costs at most about
	// 3 ms. The price is that skipped values denser than one field or
	// element per 16 bytes are refused once past the base: extensions of
	// the three records are expected to be small.
	candidBytesPerWork = 16

	// candidTypeWork is the work an item of the type table or of the
	// argument list costs.
	candidTypeWork = 2

	// candidWorkBase is the work allowed to any input, however short: room
	// for a type table and extra fields far larger than asyncflow needs.
	candidWorkBase = 4096

	// candidMaxLen is the longest argument the decoder takes: type table
	// entries keep offsets in 32 bits. The IC caps messages at 2 MiB.
	candidMaxLen = math.MaxInt32
)

// The canonical headers: magic, type table and argument types, exactly as
// @dfinity/candid writes them. Each encoding starts with one of them and
// the values follow.
const (
	// type table: 0 = vec nat8; 1 = record { msg_id : nat; payload : 0 }.
	candidNewMessageHeader = "DIDL\x02\x6d\x7b" +
		"\x6c\x02\xd9\xec\xe1\x82\x01\x7d\x8e\xff\xd6\xe9\x0e\x00" +
		"\x01\x01"

	// type table: 0 = opt nat32; 1 = vec nat8;
	// 2 = record { msg_id : nat; hash : 0; payload : 1 }.
	candidAckHeader = "DIDL\x03\x6e\x79\x6d\x7b" +
		"\x6c\x03\xd9\xec\xe1\x82\x01\x7d\xce\xdf\xa0\xa8\x04\x00" +
		"\x8e\xff\xd6\xe9\x0e\x01" +
		"\x01\x02"

	// type table: 0 = opt nat32; 1 = record { msg_id : nat; hash : 0 }.
	candidAckAckHeader = "DIDL\x02\x6e\x79" +
		"\x6c\x02\xd9\xec\xe1\x82\x01\x7d\xce\xdf\xa0\xa8\x04\x00" +
		"\x01\x01"
)

// Longest encodings of the variable-length values.
const (
	candidMaxNat128Len = 19 // ceil(128 / 7)
	candidMaxLenLen    = 10 // ceil(64 / 7)
	candidOptNat32Len  = 5  // tag and four bytes
)

// candidShape describes one of the three records: its canonical header
// and which of the optional-in-this-codec fields it has.
type candidShape struct {
	header     string
	hasHash    bool
	hasPayload bool
}

var (
	newMessageShape = candidShape{header: candidNewMessageHeader, hasPayload: true}
	ackShape        = candidShape{header: candidAckHeader, hasHash: true, hasPayload: true}
	ackAckShape     = candidShape{header: candidAckAckHeader, hasHash: true}
)

// candidFields holds decoded fields until the whole argument has been
// checked. The payload is arg[payloadStart:payloadEnd]: offsets rather than
// a slice, so that no pointer flows from the decoder to its result and the
// decoder's type table can stay on the stack.
type candidFields struct {
	msgID        MsgID
	hash         Hash
	payloadStart int
	payloadEnd   int
}

// payload returns the decoded payload, which aliases arg.
func (f *candidFields) payload(arg []byte) []byte {
	return arg[f.payloadStart:f.payloadEnd]
}

// AppendCandid appends the canonical Candid encoding of the one-argument
// message (m) to dst and returns the extended slice. It allocates at most
// once, and not at all when dst has room for the result.
func (m NewMessage) AppendCandid(dst []byte) []byte {
	dst = growCandid(dst, len(candidNewMessageHeader)+candidMaxNat128Len+
		candidMaxLenLen+len(m.Payload))

	dst = append(dst, candidNewMessageHeader...)
	dst = appendCandidMsgID(dst, m.MsgID)
	return appendCandidBlob(dst, m.Payload)
}

// UnmarshalCandid decodes a Candid argument list whose first argument is a
// NewMessage, following the Candid subtyping rules (extra fields and extra
// arguments are skipped). The decoded Payload is a copy that never aliases
// arg. On error m is left unchanged and the error wraps ErrInvalidCandid,
// or ErrInvalidMsgID when msg_id does not fit in 128 bits.
func (m *NewMessage) UnmarshalCandid(arg []byte) error {
	f, err := decodeCandid(arg, &newMessageShape)
	if err != nil {
		return err
	}

	*m = NewMessage{MsgID: f.msgID, Payload: clonePayload(f.payload(arg))}
	return nil
}

// AppendCandid appends the canonical Candid encoding of the one-argument
// message (m) to dst and returns the extended slice. It allocates at most
// once, and not at all when dst has room for the result.
func (m Ack) AppendCandid(dst []byte) []byte {
	dst = growCandid(dst, len(candidAckHeader)+candidMaxNat128Len+
		candidOptNat32Len+candidMaxLenLen+len(m.Payload))

	dst = append(dst, candidAckHeader...)
	dst = appendCandidMsgID(dst, m.MsgID)
	dst = appendCandidHash(dst, m.Hash)
	return appendCandidBlob(dst, m.Payload)
}

// UnmarshalCandid decodes a Candid argument list whose first argument is an
// Ack, following the Candid subtyping rules (extra fields and extra
// arguments are skipped; a missing or undecodable hash is null). The
// decoded Payload is a copy that never aliases arg. On error m is left
// unchanged and the error wraps ErrInvalidCandid, or ErrInvalidMsgID when
// msg_id does not fit in 128 bits.
func (m *Ack) UnmarshalCandid(arg []byte) error {
	f, err := decodeCandid(arg, &ackShape)
	if err != nil {
		return err
	}

	*m = Ack{MsgID: f.msgID, Hash: f.hash, Payload: clonePayload(f.payload(arg))}
	return nil
}

// AppendCandid appends the canonical Candid encoding of the one-argument
// message (m) to dst and returns the extended slice. It allocates at most
// once, and not at all when dst has room for the result.
func (m AckAck) AppendCandid(dst []byte) []byte {
	dst = growCandid(dst, len(candidAckAckHeader)+candidMaxNat128Len+
		candidOptNat32Len)

	dst = append(dst, candidAckAckHeader...)
	dst = appendCandidMsgID(dst, m.MsgID)
	return appendCandidHash(dst, m.Hash)
}

// UnmarshalCandid decodes a Candid argument list whose first argument is an
// AckAck, following the Candid subtyping rules (extra fields and extra
// arguments are skipped; a missing or undecodable hash is null). On error
// m is left unchanged and the error wraps ErrInvalidCandid, or
// ErrInvalidMsgID when msg_id does not fit in 128 bits.
func (m *AckAck) UnmarshalCandid(arg []byte) error {
	f, err := decodeCandid(arg, &ackAckShape)
	if err != nil {
		return err
	}

	*m = AckAck{MsgID: f.msgID, Hash: f.hash}
	return nil
}

// growCandid returns dst with room for n more bytes, allocating once if it
// has not, and at least doubling its capacity so that repeated appends stay
// linear. (slices.Grow allocates twice under the race detector.)
func growCandid(dst []byte, n int) []byte {
	if cap(dst)-len(dst) >= n {
		return dst
	}
	grown := make([]byte, len(dst), max(len(dst)+n, 2*cap(dst)))
	copy(grown, dst)
	return grown
}

// clonePayload copies a decoded payload so that callers may reuse the
// argument buffer. The copy of an empty payload is empty but not nil.
func clonePayload(p []byte) []byte {
	out := make([]byte, len(p))
	copy(out, p)
	return out
}

// appendCandidMsgID appends id as the minimal LEB128 encoding of the
// 128-bit nat its bytes form, most significant first.
func appendCandidMsgID(dst []byte, id MsgID) []byte {
	hi := binary.BigEndian.Uint64(id[:8])
	lo := binary.BigEndian.Uint64(id[8:])

	for hi != 0 || lo >= 0x80 {
		dst = append(dst, byte(lo)|0x80)
		lo = lo>>7 | hi<<57
		hi >>= 7
	}
	return append(dst, byte(lo))
}

// appendCandidHash appends h as an opt nat32 value.
func appendCandidHash(dst []byte, h Hash) []byte {
	if !h.Valid {
		return append(dst, 0)
	}
	dst = append(dst, 1)
	return binary.LittleEndian.AppendUint32(dst, h.Value)
}

// appendCandidBlob appends p as a vec nat8 value: its length, then its bytes.
func appendCandidBlob(dst []byte, p []byte) []byte {
	dst = appendULEB128(dst, uint64(len(p)))
	return append(dst, p...)
}

// appendULEB128 appends the minimal unsigned LEB128 encoding of v.
func appendULEB128(dst []byte, v uint64) []byte {
	for v >= 0x80 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v))
}

// decodeCandid decodes the first argument of arg as the record s describes.
// It never changes anything outside its result.
func decodeCandid(arg []byte, s *candidShape) (candidFields, error) {
	if len(arg) >= len(s.header) && string(arg[:len(s.header)]) == s.header {
		return decodeCanonicalCandid(arg, s)
	}
	return decodeGeneralCandid(arg, s)
}

// decodeCanonicalCandid decodes the values after a canonical header. The
// values may still be malformed or use overlong LEB128, which is valid.
func decodeCanonicalCandid(arg []byte, s *candidShape) (candidFields, error) {
	r := candidReader{buf: arg, pos: len(s.header)}
	var f candidFields
	var err error

	if f.msgID, err = r.readMsgID(); err != nil {
		return candidFields{}, err
	}

	if s.hasHash {
		if f.hash, err = r.readOptNat32(); err != nil {
			return candidFields{}, err
		}
	}

	if s.hasPayload {
		if f.payloadStart, f.payloadEnd, err = r.readBlobBounds("payload"); err != nil {
			return candidFields{}, err
		}
	}

	if err := r.expectEnd(); err != nil {
		return candidFields{}, err
	}
	return f, nil
}
