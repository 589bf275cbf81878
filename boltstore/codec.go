package boltstore

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/asyncflow/asyncflow"
)

// The records are kept in a compact binary form of schema version 1:
//
//	outgoing: state u8 | attempts u32 | next-send i64 | ack-hash u8 u32 |
//	          to (uvarint length, bytes) | payload (same) | ack (same)
//	incoming: state u8 | attempts u32 | next-send i64 | payload-hash u32 |
//	          ack (uvarint length, bytes)
//
// Integers are big-endian; next-send is Unix nanoseconds. The key holds the
// id (and the caller), so the value does not repeat it. Decoding checks
// every length, so a damaged value is an ErrCorrupt, never a panic.

// maxPrincipal is the longest principal the IC defines.
const maxPrincipal = 29

// idLen is the length of a message id in keys.
const idLen = 16

func encodeOutgoing(m asyncflow.Outgoing) []byte {
	b := make([]byte, 0, 23+3*binary.MaxVarintLen32+len(m.To.Raw)+len(m.Payload)+len(m.Ack))
	b = append(b, byte(m.State))
	b = binary.BigEndian.AppendUint32(b, m.Attempts)
	b = binary.BigEndian.AppendUint64(b, uint64(unixNano(m.NextSend)))
	b = append(b, boolByte(m.AckHash.Valid))
	b = binary.BigEndian.AppendUint32(b, m.AckHash.Value)
	b = appendBytes(b, m.To.Raw)
	b = appendBytes(b, m.Payload)
	return appendBytes(b, m.Ack)
}

func decodeOutgoing(id asyncflow.MsgID, v []byte) (asyncflow.Outgoing, error) {
	d := decoder{b: v}
	m := asyncflow.Outgoing{MsgID: id}
	m.State = asyncflow.OutState(d.byte())
	m.Attempts = d.uint32()
	m.NextSend = fromUnixNano(int64(d.uint64()))
	m.AckHash.Valid = d.bool()
	m.AckHash.Value = d.uint32()
	m.To = principal.Principal{Raw: d.bytes(maxPrincipal)}
	m.Payload = d.bytes(len(v))
	m.Ack = d.bytes(len(v))

	switch {
	case d.err != nil:
	case len(d.b) != 0:
		d.err = fmt.Errorf("%d bytes after the record", len(d.b))
	case m.State < asyncflow.OutPending || m.State > asyncflow.OutCorrupt:
		d.err = fmt.Errorf("unknown state %d", m.State)
	}
	if d.err != nil {
		return asyncflow.Outgoing{}, fmt.Errorf("%w: outgoing message %s: %v", ErrCorrupt, id,
			d.err)
	}
	return m, nil
}

func encodeIncoming(m asyncflow.Incoming) []byte {
	b := make([]byte, 0, 17+binary.MaxVarintLen32+len(m.Ack))
	b = append(b, byte(m.State))
	b = binary.BigEndian.AppendUint32(b, m.Attempts)
	b = binary.BigEndian.AppendUint64(b, uint64(unixNano(m.NextSend)))
	b = binary.BigEndian.AppendUint32(b, m.PayloadHash)
	return appendBytes(b, m.Ack)
}

func decodeIncoming(key, v []byte) (asyncflow.Incoming, error) {
	id, from := splitInKey(key)
	d := decoder{b: v}
	m := asyncflow.Incoming{MsgID: id, From: principal.Principal{Raw: from}}
	m.State = asyncflow.InState(d.byte())
	m.Attempts = d.uint32()
	m.NextSend = fromUnixNano(int64(d.uint64()))
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

// dueKey is next-send | record key.
func dueKey(at time.Time, rec []byte) []byte {
	k := make([]byte, 0, 8+len(rec))
	k = binary.BigEndian.AppendUint64(k, uint64(unixNano(at)))
	return append(k, rec...)
}

// dueTime and dueRecord split a due key; ok is false for a damaged one.
func splitDueKey(k []byte) (at time.Time, rec []byte, ok bool) {
	if len(k) < 8+idLen {
		return time.Time{}, nil, false
	}
	return fromUnixNano(int64(binary.BigEndian.Uint64(k))), k[8:], true
}

// stateKey is state | id: the index that lists outgoing records by state.
func stateKey(s asyncflow.OutState, id asyncflow.MsgID) []byte {
	return append([]byte{byte(s)}, id[:]...)
}

// unixNano maps a time to Unix nanoseconds, clamping times before 1970 to
// zero so that due keys stay in order as unsigned numbers. Times after
// 2262 do not fit and are clamped to the last nanosecond that does.
func unixNano(t time.Time) int64 {
	switch {
	case t.IsZero() || t.Unix() < 0:
		return 0
	case t.Unix() >= math.MaxInt64/int64(time.Second):
		return math.MaxInt64
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
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
