package boltstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"time"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/asyncflow/asyncflow"
)

// The records are kept in a compact binary form of schema version 1:
//
//	outgoing: state u8 | attempts u32 | next-send u8 i64 | ack-hash u8 u32 |
//	          to (uvarint length, bytes) | payload (same) | ack (same)
//	incoming: state u8 | attempts u32 | next-send u8 i64 | payload-hash u32 |
//	          ack (uvarint length, bytes)
//
// Each value ends with a CRC-32C (Castagnoli) of its key and the bytes
// before it, so that a changed bit anywhere in a record, or a record
// found under another key, reads as ErrCorrupt instead of as a valid
// record: a payload damaged on disk would otherwise be sent, and its
// hash taken from the damaged bytes would match.
//
// Integers are big-endian. Next-send is a flag (0 for the zero time) and
// Unix nanoseconds, which hold any time from 1678 to 2262; times outside
// are clamped to those years. The key holds the id (and the caller), so
// the value does not repeat it. Decoding checks every length, so a damaged
// value is an ErrCorrupt, never a panic. The first 14 bytes, which the
// indexes depend on, are at fixed offsets: see peekIndex.

// maxPrincipal is the longest principal the IC defines.
const maxPrincipal = 29

// idLen is the length of a message id in keys.
const idLen = 16

// headLen is the length of the fixed head of both records: state,
// attempts and next-send.
const headLen = 14

func encodeOutgoing(m asyncflow.Outgoing) []byte {
	b := make([]byte, 0, headLen+5+3*binary.MaxVarintLen32+len(m.To.Raw)+len(m.Payload)+
		len(m.Ack)+sumLen)
	b = appendHead(b, byte(m.State), m.Attempts, m.NextSend)
	b = append(b, boolByte(m.AckHash.Valid))
	b = binary.BigEndian.AppendUint32(b, m.AckHash.Value)
	b = appendBytes(b, m.To.Raw)
	b = appendBytes(b, m.Payload)
	b = appendBytes(b, m.Ack)
	return seal(outKey(m.MsgID), b)
}

func decodeOutgoing(id asyncflow.MsgID, v []byte) (asyncflow.Outgoing, error) {
	body, err := unseal(outKey(id), v)
	if err != nil {
		return asyncflow.Outgoing{}, fmt.Errorf("%w: outgoing message %s: %v", ErrCorrupt, id,
			err)
	}
	d := decoder{b: body}
	m := asyncflow.Outgoing{MsgID: id}
	m.State = asyncflow.OutState(d.byte())
	m.Attempts = d.uint32()
	m.NextSend = d.time()
	m.AckHash.Valid = d.bool()
	m.AckHash.Value = d.uint32()
	m.To = principal.Principal{Raw: d.bytes(maxPrincipal)}
	m.Payload = d.bytes(len(v))
	m.Ack = d.bytes(len(v))

	switch {
	case d.err != nil:
	case len(d.b) != 0:
		d.err = fmt.Errorf("%d bytes after the record", len(d.b))
	case m.State < asyncflow.OutPending || m.State > asyncflow.OutGivenUp:
		d.err = fmt.Errorf("unknown state %d", m.State)
	}
	if d.err != nil {
		return asyncflow.Outgoing{}, fmt.Errorf("%w: outgoing message %s: %v", ErrCorrupt, id,
			d.err)
	}
	return m, nil
}

// encodeIncoming encodes m, whose key is key.
func encodeIncoming(key []byte, m asyncflow.Incoming) []byte {
	b := make([]byte, 0, headLen+4+binary.MaxVarintLen32+len(m.Ack)+sumLen)
	b = appendHead(b, byte(m.State), m.Attempts, m.NextSend)
	b = binary.BigEndian.AppendUint32(b, m.PayloadHash)
	b = appendBytes(b, m.Ack)
	return seal(key, b)
}

func decodeIncoming(key, v []byte) (asyncflow.Incoming, error) {
	id, from := splitInKey(key)
	body, err := unseal(key, v)
	if err != nil {
		return asyncflow.Incoming{}, fmt.Errorf("%w: incoming message %s from %s: %v",
			ErrCorrupt, id, principal.Principal{Raw: from}, err)
	}
	d := decoder{b: body}
	m := asyncflow.Incoming{MsgID: id, From: principal.Principal{Raw: from}}
	m.State = asyncflow.InState(d.byte())
	m.Attempts = d.uint32()
	m.NextSend = d.time()
	m.PayloadHash = d.uint32()
	m.Ack = d.bytes(len(v))

	switch {
	case d.err != nil:
	case len(d.b) != 0:
		d.err = fmt.Errorf("%d bytes after the record", len(d.b))
	case m.State < asyncflow.InAcking || m.State > asyncflow.InDone:
		d.err = fmt.Errorf("unknown state %d", m.State)
	}
	if d.err != nil {
		return asyncflow.Incoming{}, fmt.Errorf("%w: incoming message %s from %s: %v",
			ErrCorrupt, id, m.From, d.err)
	}
	return m, nil
}

// sumLen is the length of the checksum that ends every value.
const sumLen = 4

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// seal appends to the record b, kept under key, its checksum.
func seal(key, b []byte) []byte {
	sum := crc32.Update(crc32.Checksum(key, castagnoli), castagnoli, b)
	return binary.BigEndian.AppendUint32(b, sum)
}

// unseal checks the checksum at the end of the value v kept under key, and
// returns the record before it.
func unseal(key, v []byte) ([]byte, error) {
	if len(v) < sumLen {
		return nil, fmt.Errorf("%d bytes, too short for a checksum", len(v))
	}
	body := v[:len(v)-sumLen]
	want := binary.BigEndian.Uint32(v[len(body):])
	if got := crc32.Update(crc32.Checksum(key, castagnoli), castagnoli, body); got != want {
		return nil, fmt.Errorf("checksum %08x does not match the record's %08x", want, got)
	}
	return body, nil
}

// appendHead appends the fixed head of a record.
func appendHead(b []byte, state byte, attempts uint32, next time.Time) []byte {
	b = append(b, state)
	b = binary.BigEndian.AppendUint32(b, attempts)
	if next.IsZero() {
		return append(b, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	}
	b = append(b, 1)
	return binary.BigEndian.AppendUint64(b, uint64(clampNano(next)))
}

// peekIndex reads what the indexes of a record depend on, its state and
// next-send time, from the fixed head alone: a record damaged further on
// can still be taken out of the indexes. ok is false for a head that is
// itself damaged.
func peekIndex(v []byte) (state byte, next time.Time, ok bool) {
	if len(v) < headLen || v[5] > 1 {
		return 0, time.Time{}, false
	}
	d := decoder{b: v[5:headLen]}
	return v[0], d.time(), true
}

// The keys. A message id is 16 bytes whose first six are its ULID time, so
// keys that start with the id sort by time: expiry is a range scan from the
// first key. A due key starts with the 8-byte next-send time, so a retry
// scan reads only the entries that are due.

func outKey(id asyncflow.MsgID) []byte {
	return id[:]
}

// inKey is id | caller: per caller, as the receiver keeps its records.
func inKey(from principal.Principal, id asyncflow.MsgID) []byte {
	k := make([]byte, 0, idLen+len(from.Raw))
	k = append(k, id[:]...)
	return append(k, from.Raw...)
}

// splitInKey returns copies of the parts of an incoming key.
func splitInKey(k []byte) (asyncflow.MsgID, []byte) {
	var id asyncflow.MsgID
	copy(id[:], k)
	return id, append([]byte(nil), k[idLen:]...)
}

// dueKey is next-send | record key. The time is Unix nanoseconds with the
// sign bit flipped, so that keys sort by time as unsigned bytes, before
// 1970 as after it.
func dueKey(at time.Time, rec []byte) []byte {
	k := make([]byte, 0, 8+len(rec))
	k = binary.BigEndian.AppendUint64(k, uint64(clampNano(at))^signBit)
	return append(k, rec...)
}

const signBit = 1 << 63

// splitDueKey splits a due key into its time and its record's key; ok is
// false for a damaged one.
func splitDueKey(k []byte) (at time.Time, rec []byte, ok bool) {
	if len(k) < 8+idLen {
		return time.Time{}, nil, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(k)^signBit)), k[8:], true
}

// keyTime returns the ULID time at the start of a record key.
func keyTime(k []byte) time.Time {
	var id asyncflow.MsgID
	copy(id[:], k)
	return id.Time()
}

// stateKey is state | id: the index that lists outgoing records by state.
func stateKey(s asyncflow.OutState, id asyncflow.MsgID) []byte {
	return append([]byte{byte(s)}, id[:]...)
}

// clampNano returns t in Unix nanoseconds, clamped to what an int64 holds.
func clampNano(t time.Time) int64 {
	switch {
	case t.Unix() <= math.MinInt64/int64(time.Second):
		return math.MinInt64
	case t.Unix() >= math.MaxInt64/int64(time.Second):
		return math.MaxInt64
	}
	return t.UnixNano()
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// decoder reads the fields of a record, remembering the first error.
// Slices it returns are copies: bbolt's memory is valid only inside the
// transaction that read it.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b) {
		d.err = fmt.Errorf("truncated: %d bytes wanted, %d left", n, len(d.b))
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if v := d.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (d *decoder) bool() bool {
	switch v := d.byte(); v {
	case 0, 1:
		return v == 1
	default:
		if d.err == nil {
			d.err = fmt.Errorf("flag byte %d", v)
		}
		return false
	}
}

func (d *decoder) uint32() uint32 {
	if v := d.take(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (d *decoder) uint64() uint64 {
	if v := d.take(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// time reads a next-send time: a flag byte, then Unix nanoseconds.
func (d *decoder) time() time.Time {
	set := d.bool()
	n := int64(d.uint64())
	if !set {
		if n != 0 && d.err == nil {
			d.err = fmt.Errorf("zero time with nanoseconds %d", n)
		}
		return time.Time{}
	}
	return time.Unix(0, n)
}

func (d *decoder) bytes(max int) []byte {
	if d.err != nil {
		return nil
	}
	n, k := binary.Uvarint(d.b)
	if k <= 0 || n > uint64(max) {
		d.err = fmt.Errorf("bad length at %d bytes from the end", len(d.b))
		return nil
	}
	d.b = d.b[k:]
	v := d.take(int(n))
	if v == nil || len(v) == 0 {
		return nil
	}
	return append([]byte(nil), v...)
}

// decodeAt decodes the record v at key rec of the bucket records, to see
// whether it reads.
func decodeAt(records, rec, v []byte) (any, error) {
	if bytes.Equal(records, bucketOut) {
		var id asyncflow.MsgID
		copy(id[:], rec)
		return decodeOutgoing(id, v)
	}
	return decodeIncoming(rec, v)
}
