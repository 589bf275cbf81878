package asyncflow

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// candidVector is one row of testdata/candid-args.tsv, encoded by the
// reference JavaScript implementation.
type candidVector struct {
	method  string
	name    string
	msgID   MsgID
	payload []byte
	hash    Hash
	candid  []byte
}

// readCandidVectors parses testdata/candid-args.tsv.
func readCandidVectors(t *testing.T) []candidVector {
	t.Helper()
	f, err := os.Open("testdata/candid-args.tsv")
	require.NoError(t, err)
	defer f.Close()

	var vectors []candidVector
	s := bufio.NewScanner(f)
	s.Buffer(nil, 1<<20)
	for line := 0; s.Scan(); line++ {
		if line == 0 {
			continue
		}
		cols := strings.Split(s.Text(), "\t")
		require.Len(t, cols, 6, "line %d", line+1)
		vectors = append(vectors, parseCandidVector(t, cols))
	}
	require.NoError(t, s.Err())
	require.NotEmpty(t, vectors)
	return vectors
}

// parseCandidVector parses the six columns of one vector.
func parseCandidVector(t *testing.T, cols []string) candidVector {
	t.Helper()
	v := candidVector{method: cols[0], name: cols[1]}

	n, ok := new(big.Int).SetString(cols[2], 10)
	require.True(t, ok, "%s: msg_id %q", v.name, cols[2])
	id, err := MsgIDFromNat(n)
	require.NoError(t, err, v.name)
	v.msgID = id

	if cols[3] != "-" {
		v.payload, err = hex.DecodeString(cols[3])
		require.NoError(t, err, v.name)
	}

	switch cols[4] {
	case "-", "null":
	default:
		h, err := strconv.ParseUint(cols[4], 10, 32)
		require.NoError(t, err, v.name)
		v.hash = SomeHash(uint32(h))
	}

	v.candid, err = hex.DecodeString(cols[5])
	require.NoError(t, err, v.name)
	return v
}

// candidValue is one of the three records, as encoded and decoded.
type candidValue interface {
	AppendCandid(dst []byte) []byte
}

// value returns the record a vector describes.
func (v candidVector) value(t *testing.T) candidValue {
	switch v.method {
	case "newMessage":
		return NewMessage{MsgID: v.msgID, Payload: v.payload}
	case "ack":
		return Ack{MsgID: v.msgID, Hash: v.hash, Payload: v.payload}
	case "ackack":
		return AckAck{MsgID: v.msgID, Hash: v.hash}
	}
	t.Fatalf("%s: unknown method %q", v.name, v.method)
	return nil
}

// candidDecodeAs decodes arg into a fresh value of the same type as like.
func candidDecodeAs(like candidValue, arg []byte) (candidValue, error) {
	switch like.(type) {
	case NewMessage:
		var m NewMessage
		err := m.UnmarshalCandid(arg)
		return m, err
	case Ack:
		var m Ack
		err := m.UnmarshalCandid(arg)
		return m, err
	default:
		var m AckAck
		err := m.UnmarshalCandid(arg)
		return m, err
	}
}

func TestCandidVectorsEncode(t *testing.T) {
	for _, v := range readCandidVectors(t) {
		got := v.value(t).AppendCandid(nil)
		require.Equal(t, hex.EncodeToString(v.candid), hex.EncodeToString(got), v.name)
	}
}

func TestCandidVectorsDecode(t *testing.T) {
	for _, v := range readCandidVectors(t) {
		want := v.value(t)
		got, err := candidDecodeAs(want, v.candid)
		require.NoError(t, err, v.name)
		require.Equal(t, candidNormalize(want), got, v.name)
	}
}

// candidNormalize returns v with a nil payload made empty: decoding never
// returns a nil payload.
func candidNormalize(v candidValue) candidValue {
	switch m := v.(type) {
	case NewMessage:
		if m.Payload == nil {
			m.Payload = []byte{}
		}
		return m
	case Ack:
		if m.Payload == nil {
			m.Payload = []byte{}
		}
		return m
	}
	return v
}

// candidRandomMsgID returns a random id, sometimes the smallest or largest one.
func candidRandomMsgID(r *rand.Rand) MsgID {
	var id MsgID
	switch r.IntN(4) {
	case 0:
		return id
	case 1:
		for i := range id {
			id[i] = 0xff
		}
		return id
	}
	for i := range id[r.IntN(16):] {
		id[i] = byte(r.Uint32())
	}
	return id
}

// candidRandomPayload returns a payload of a random length up to max.
func candidRandomPayload(r *rand.Rand, max int) []byte {
	p := make([]byte, r.IntN(max+1))
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

// candidRandomHash returns an absent or random hash.
func candidRandomHash(r *rand.Rand) Hash {
	if r.IntN(3) == 0 {
		return Hash{}
	}
	return SomeHash(r.Uint32())
}

// randomCandidValues returns n random records of each kind.
func randomCandidValues(seed uint64, n int) []candidValue {
	r := rand.New(rand.NewPCG(seed, 1))
	var vs []candidValue
	for i := range n {
		max := 300
		if i%50 == 0 {
			max = 70000
		}
		vs = append(vs,
			NewMessage{MsgID: candidRandomMsgID(r), Payload: candidRandomPayload(r, max)},
			Ack{MsgID: candidRandomMsgID(r), Hash: candidRandomHash(r),
				Payload: candidRandomPayload(r, max)},
			AckAck{MsgID: candidRandomMsgID(r), Hash: candidRandomHash(r)})
	}
	return vs
}

func TestCandidRoundTrip(t *testing.T) {
	maxID := MsgID{}
	for i := range maxID {
		maxID[i] = 0xff
	}
	fixed := []candidValue{
		NewMessage{MsgID: maxID, Payload: []byte{}},
		NewMessage{MsgID: maxID, Payload: bytes.Repeat([]byte{7}, 1<<20)},
		Ack{MsgID: maxID, Hash: SomeHash(0xffffffff), Payload: []byte{0}},
		AckAck{MsgID: maxID, Hash: SomeHash(0)},
	}

	for _, v := range append(fixed, randomCandidValues(1, 300)...) {
		enc := v.AppendCandid(nil)
		got, err := candidDecodeAs(v, enc)
		require.NoError(t, err)
		require.Equal(t, candidNormalize(v), got)

		prefixed := v.AppendCandid([]byte("prefix"))
		require.Equal(t, enc, prefixed[len("prefix"):])
	}
}

func TestCandidFieldIDsAreNameHashes(t *testing.T) {
	require.Equal(t, candidTestHash("msg_id"), uint32(candidFieldMsgID))
	require.Equal(t, candidTestHash("hash"), uint32(candidFieldHash))
	require.Equal(t, candidTestHash("payload"), uint32(candidFieldPayload))
}

func TestCandidDecodedPayloadDoesNotAliasInput(t *testing.T) {
	payload := []byte("answer")
	enc := Ack{MsgID: MsgID{1}, Payload: payload}.AppendCandid(nil)

	var m Ack
	require.NoError(t, m.UnmarshalCandid(enc))
	for i := range enc {
		enc[i] = 0
	}
	require.Equal(t, payload, m.Payload)
}

func TestCandidAllocations(t *testing.T) {
	m := Ack{MsgID: MsgID{1, 2, 3}, Hash: SomeHash(9), Payload: make([]byte, 100)}
	dst := make([]byte, 0, 256)
	enc := m.AppendCandid(nil)
	general := candidRecordArg(
		[]didlField{didl.msgID(candidNat), didl.hash(1), didl.payload(0)},
		didlOne, didlHash5, didlABC)
	require.NotEqual(t, candidAckHeader, string(general[:len(candidAckHeader)]))

	require.Zero(t, testing.AllocsPerRun(100, func() { m.AppendCandid(dst[:0]) }))
	require.Equal(t, 1.0, testing.AllocsPerRun(100, func() { m.AppendCandid(nil) }))
	require.Equal(t, 1.0, testing.AllocsPerRun(100, func() {
		var got Ack
		_ = got.UnmarshalCandid(enc)
	}))
	require.Equal(t, 1.0, testing.AllocsPerRun(100, func() {
		var got Ack
		_ = got.UnmarshalCandid(general)
	}))
}

// Test-only builder of Candid messages, written from the spec and
// independent of the codec under test.

// didlBuilder builds Candid messages by hand, one piece at a time.
type didlBuilder struct{}

// didl is the builder the tests use: didl.arg(table, args, values...).
var didl didlBuilder

// didlField is one field of a record or variant type.
type didlField struct {
	id uint64
	t  int64
}

// Pieces most test messages share.
var (
	didlOne   = didl.nat(big.NewInt(1))  // msg_id 1
	didlABC   = didl.blob([]byte("abc")) // payload "abc"
	didlHash5 = []byte{1, 5, 0, 0, 0}    // hash ?5

	// didlAckTable is Ack's canonical type table; the record is entry 2.
	didlAckTable = [][]byte{didl.opt(candidNat32), didl.vec(candidNat8),
		didl.record(didl.msgID(candidNat), didl.hash(0), didl.payload(1))}

	// candidAck is the value that didlOne, didlHash5 and didlABC encode.
	candidAck = Ack{MsgID: MsgID{15: 1}, Hash: SomeHash(5), Payload: []byte("abc")}
)

// candidTestHash is the Candid hash of a field name.
func candidTestHash(name string) uint32 {
	var h uint32
	for _, c := range []byte(name) {
		h = h*223 + uint32(c)
	}
	return h
}

// uleb returns the minimal unsigned LEB128 encoding of v.
func (didlBuilder) uleb(v uint64) []byte {
	var b []byte
	for ; v >= 0x80; v >>= 7 {
		b = append(b, byte(v)|0x80)
	}
	return append(b, byte(v))
}

// sleb returns the minimal signed LEB128 encoding of v.
func (didlBuilder) sleb(v int64) []byte {
	var b []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// nat returns the LEB128 encoding of a nat of any size.
func (didlBuilder) nat(n *big.Int) []byte {
	n = new(big.Int).Set(n)
	var b []byte
	for {
		c := byte(n.Uint64() & 0x7f)
		n.Rsh(n, 7)
		if n.Sign() == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// overlong returns the LEB128 encoding of v padded to n bytes.
func (didlBuilder) overlong(v uint64, n int) []byte {
	b := didl.uleb(v)
	b[len(b)-1] |= 0x80
	for len(b) < n-1 {
		b = append(b, 0x80)
	}
	return append(b, 0)
}

// cat concatenates byte slices.
func (didlBuilder) cat(parts ...[]byte) []byte {
	return bytes.Join(parts, nil)
}

// blob encodes a vec nat8 value.
func (didlBuilder) blob(p []byte) []byte {
	return didl.cat(didl.uleb(uint64(len(p))), p)
}

// field returns a field of type t.
func (didlBuilder) field(id uint64, t int64) didlField {
	return didlField{id, t}
}

// msgID returns the msg_id field at type t.
func (didlBuilder) msgID(t int64) didlField {
	return didlField{uint64(candidTestHash("msg_id")), t}
}

// hash returns the hash field at type t.
func (didlBuilder) hash(t int64) didlField {
	return didlField{uint64(candidTestHash("hash")), t}
}

// payload returns the payload field at type t.
func (didlBuilder) payload(t int64) didlField {
	return didlField{uint64(candidTestHash("payload")), t}
}

// opt encodes an opt type table entry of element type t.
func (didlBuilder) opt(t int64) []byte { return didl.cat(didl.sleb(candidOpt), didl.sleb(t)) }

// vec encodes a vec type table entry of element type t.
func (didlBuilder) vec(t int64) []byte { return didl.cat(didl.sleb(candidVec), didl.sleb(t)) }

// record encodes a record type table entry with fields in the given
// order, sorted or not.
func (didlBuilder) record(fs ...didlField) []byte { return didl.fields(candidRecord, fs) }

// variant encodes a variant type table entry like record.
func (didlBuilder) variant(fs ...didlField) []byte { return didl.fields(candidVariant, fs) }

// fields encodes a record or variant type table entry.
func (didlBuilder) fields(op int64, fs []didlField) []byte {
	b := didl.cat(didl.sleb(op), didl.uleb(uint64(len(fs))))
	for _, f := range fs {
		b = append(b, didl.uleb(f.id)...)
		b = append(b, didl.sleb(f.t)...)
	}
	return b
}

// fn encodes a func type of no results with the given argument types and
// annotation bytes.
func (didlBuilder) fn(args []int64, annotations ...byte) []byte {
	b := didl.cat(didl.sleb(candidFunc), didl.uleb(uint64(len(args))))
	for _, a := range args {
		b = append(b, didl.sleb(a)...)
	}
	b = append(b, 0)
	b = append(b, didl.uleb(uint64(len(annotations)))...)
	return append(b, annotations...)
}

// service encodes a service type whose method names[i] has types[i].
func (didlBuilder) service(names []string, types []int64) []byte {
	b := didl.cat(didl.sleb(candidService), didl.uleb(uint64(len(names))))
	for i, name := range names {
		b = append(b, didl.blob([]byte(name))...)
		b = append(b, didl.sleb(types[i])...)
	}
	return b
}

// arg assembles a message: magic, type table, argument types, values.
func (didlBuilder) arg(table [][]byte, args []int64, values ...[]byte) []byte {
	b := didl.cat([]byte("DIDL"), didl.uleb(uint64(len(table))))
	b = append(b, didl.cat(table...)...)
	b = append(b, didl.uleb(uint64(len(args)))...)
	for _, a := range args {
		b = append(b, didl.sleb(a)...)
	}
	return append(b, didl.cat(values...)...)
}

// candidArg2 assembles a message whose one argument is table entry 2.
func candidArg2(table [][]byte, values ...[]byte) []byte {
	return didl.arg(table, []int64{2}, values...)
}

// candidExtraFieldID is the id of the field candidAckWithExtra adds: it
// sits between hash and payload, and so does its value.
const candidExtraFieldID = 2000000000

// candidAckWithExtra encodes candidAck with an extra field of type
// extraType holding extraValue; extra table entries start at index 3.
func candidAckWithExtra(extraType int64, extra [][]byte, extraValue []byte) []byte {
	d := didl
	table := [][]byte{d.opt(candidNat32), d.vec(candidNat8), d.record(d.msgID(candidNat),
		d.hash(0), d.field(candidExtraFieldID, extraType), d.payload(1))}
	return candidArg2(append(table, extra...), didlOne, didlHash5, extraValue, didlABC)
}

// candidAckWithExtraLast encodes an Ack whose extra field, of type
// extraType, holds extraValue, which ends the message: it has no payload.
func candidAckWithExtraLast(extraType int64, extraValue []byte) []byte {
	d := didl
	table := [][]byte{d.opt(candidNat32), d.vec(candidNat8), d.record(d.msgID(candidNat),
		d.hash(0), d.field(candidExtraFieldID, extraType), d.payload(1))}
	return candidArg2(table, didlOne, []byte{0}, extraValue)
}

// candidAckWithHash encodes candidAck with a hash field of type hashType
// holding hashValue; extra table entries start at index 3.
func candidAckWithHash(extra [][]byte, hashType int64, hashValue []byte) []byte {
	d := didl
	table := [][]byte{d.opt(candidNat32), d.vec(candidNat8),
		d.record(d.msgID(candidNat), d.hash(hashType), d.payload(1))}
	return candidArg2(append(table, extra...), didlOne, hashValue, didlABC)
}

// candidAckWithID encodes candidAck with msg_id given as LEB128 bytes.
func candidAckWithID(id []byte) []byte {
	return candidArg2(didlAckTable, id, didlHash5, didlABC)
}

// candidRecordArg encodes a message whose argument is record { fs } with
// table entries 0 = vec nat8 and 1 = opt nat32.
func candidRecordArg(fs []didlField, values ...[]byte) []byte {
	table := [][]byte{didl.vec(candidNat8), didl.opt(candidNat32), didl.record(fs...)}
	return candidArg2(table, values...)
}

// candidPow128 returns 2^128.
func candidPow128() *big.Int { return new(big.Int).Lsh(big.NewInt(1), 128) }

func TestCandidBuilderMatchesCanonical(t *testing.T) {
	want := candidAck.AppendCandid(nil)
	require.Equal(t, want, candidArg2(didlAckTable, didlOne, didlHash5, didlABC))
}

// candidCase is a non-canonical encoding and the record it decodes to.
type candidCase struct {
	name string
	arg  []byte
	want candidValue
}

// checkCandidCases decodes each case and checks its value.
func checkCandidCases(t *testing.T, cases []candidCase) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := candidDecodeAs(c.want, c.arg)
			require.NoError(t, err)
			require.Equal(t, c.want, got)
		})
	}
}

func TestCandidSubtyping(t *testing.T) {
	checkCandidCases(t, candidSubtypingCases())
}

// candidSubtypingCases are encodings that differ from the canonical one
// and decode by the Candid subtyping rules.
func candidSubtypingCases() []candidCase {
	d, ack := didl, candidAck
	null := Ack{MsgID: ack.MsgID, Payload: ack.Payload}
	nat32 := didlHash5[1:]
	text := d.field(1, candidText)
	maxID := MsgID(bytes.Repeat([]byte{0xff}, 16))

	return []candidCase{
		{"types listed in another order with unused entries", d.arg([][]byte{
			d.record(d.msgID(candidNat), d.hash(3), d.payload(2)), d.opt(candidText),
			d.vec(candidNat8), d.opt(candidNat32), d.vec(0)},
			[]int64{0}, didlOne, didlHash5, didlABC), ack},
		{"extra field before msg_id", candidArg2([][]byte{d.opt(candidNat32),
			d.vec(candidNat8), d.record(d.field(0, candidText), d.msgID(candidNat),
				d.hash(0), d.payload(1))},
			d.blob([]byte("skip")), didlOne, didlHash5, didlABC), ack},
		{"extra fields of every kind", candidExtraFieldsOfEveryKind(), ack},
		{"missing hash is null", d.arg([][]byte{d.vec(candidNat8),
			d.record(d.msgID(candidNat), d.payload(0))}, []int64{1}, didlOne, didlABC),
			null},
		{"hash of type opt nat is null", candidAckWithHash(
			[][]byte{d.opt(candidNat)}, 3, []byte{1, 5}), null},
		{"hash of type opt text is null", candidAckWithHash(
			[][]byte{d.opt(candidText)}, 3, d.cat([]byte{1}, didlABC)), null},
		{"hash of type opt opt nat32 is null", candidAckWithHash(
			[][]byte{d.opt(4), d.opt(candidNat32)}, 3, d.cat([]byte{1}, didlHash5)), null},
		{"hash of type opt reserved is null", candidAckWithHash(
			[][]byte{d.opt(candidReserved)}, 3, []byte{1}), null},
		{"hash of type opt nat32 absent is null", candidAckWithHash(nil, 0, []byte{0}),
			null},
		{"hash of bare nat32 is its value", candidAckWithHash(nil, candidNat32, nat32),
			ack},
		{"hash of type null is null", candidAckWithHash(nil, candidNull, nil), null},
		{"hash of type reserved is null", candidAckWithHash(nil, candidReserved, nil),
			null},
		{"hash of type nat is null", candidAckWithHash(nil, candidNat, []byte{0x85, 1}),
			null},
		{"hash of type record is null", candidAckWithHash([][]byte{d.record(text)}, 3,
			didlABC), null},
		{"extra arguments are ignored", d.arg(append(didlAckTable, d.record(text)),
			[]int64{2, candidText, 3, candidNat},
			didlOne, didlHash5, didlABC, didlABC, didlABC, didlOne), ack},
		{"zero-sized extra argument", d.arg(append(didlAckTable, d.record()),
			[]int64{2, 3, candidNull}, didlOne, didlHash5, didlABC), ack},
		{"overlong LEB128 everywhere", candidOverlongAck(), ack},
		{"overlong msg_id after the canonical header", d.cat([]byte(candidAckHeader),
			d.overlong(1, 30), didlHash5, didlABC), ack},
		{"msg_id of 2^128-1", candidAckWithID(d.nat(new(big.Int).Sub(candidPow128(),
			big.NewInt(1)))), Ack{MsgID: maxID, Hash: ack.Hash, Payload: ack.Payload}},
		{"new message skips a hash field", d.arg([][]byte{d.vec(candidNat8),
			d.record(d.msgID(candidNat), d.hash(candidText), d.payload(0))},
			[]int64{1}, didlOne, d.blob([]byte("not a hash")), didlABC),
			NewMessage{MsgID: ack.MsgID, Payload: ack.Payload}},
		{"ackack skips a payload field", d.arg([][]byte{d.vec(candidNat16),
			d.record(d.msgID(candidNat), d.hash(candidNat32), d.payload(0))},
			[]int64{1}, didlOne, nat32, []byte{1, 9, 9}),
			AckAck{MsgID: ack.MsgID, Hash: ack.Hash}},
		{"recursive list in an extra field", candidAckWithExtra(3, [][]byte{d.opt(4),
			d.record(d.field(0, candidNat), d.field(1, 3))},
			[]byte{1, 7, 1, 8, 1, 9, 0}), ack},
		{"billion-element vec of zero-sized records is skipped", candidAckWithExtra(3,
			[][]byte{d.vec(4), d.record(d.field(0, candidNull), d.field(1, 5)),
				d.record()}, d.uleb(1e9)), ack},
		{"payload of type vec empty is an empty blob", candidArg2([][]byte{
			d.opt(candidNat32), d.vec(candidEmpty), d.record(d.msgID(candidNat),
				d.hash(0), d.payload(1))}, didlOne, didlHash5, d.uleb(0)),
			Ack{MsgID: ack.MsgID, Hash: ack.Hash, Payload: []byte{}}},
		{"billion-element vec null is skipped", candidAckWithExtra(3,
			[][]byte{d.vec(candidNull)}, d.uleb(1e9)), ack},
		{"billion-element vec reserved is skipped", candidAckWithExtra(3,
			[][]byte{d.vec(candidReserved)}, d.uleb(1e9)), ack},
	}
}

// candidOverlongAck encodes candidAck with every number padded: counts,
// opcodes, field ids, type references, msg_id and payload length.
func candidOverlongAck() []byte {
	d := didl
	return d.cat([]byte("DIDL"), d.overlong(3, 4),
		[]byte{0xee, 0x7f, 0xf9, 0x7f},       // opt nat32
		[]byte{0xed, 0x7f, 0xfb, 0x7f},       // vec nat8
		[]byte{0xec, 0x7f}, d.overlong(3, 3), // record, 3 fields
		d.overlong(uint64(candidTestHash("msg_id")), 8), []byte{0xfd, 0x7f},
		d.overlong(uint64(candidTestHash("hash")), 8), []byte{0x80, 0x00},
		d.overlong(uint64(candidTestHash("payload")), 8), []byte{0x81, 0x00},
		d.overlong(1, 5), []byte{0x82, 0x80, 0x00}, // one argument: entry 2
		d.overlong(1, 19), didlHash5, d.overlong(3, 11), []byte("abc"))
}

// candidExtraFieldsOfEveryKind encodes candidAck with extra fields of
// every type before its own, each holding a value that must be skipped.
func candidExtraFieldsOfEveryKind() []byte {
	d := didl
	prims := []int64{candidNull, candidBool, candidInt, candidNat64, candidFloat64,
		candidText, candidReserved, candidPrincipal}
	var fs []didlField
	for i, t := range append(prims, 3, 4, 5, 6, 7, 8, 9) {
		fs = append(fs, d.field(uint64(i+1), t))
	}
	fs = append(fs, d.msgID(candidNat), d.hash(0), d.payload(1))

	table := [][]byte{d.opt(candidNat32), d.vec(candidNat8), d.record(fs...),
		d.record(d.field(0, candidNat8), d.field(1, 4)),           // 3
		d.variant(d.field(0, candidNull), d.field(1, candidText)), // 4
		d.vec(4),                              // 5
		d.opt(5),                              // 6
		d.fn([]int64{candidNat}, 2),           // 7: oneway
		d.service([]string{"go"}, []int64{7}), // 8
		d.cat(d.sleb(-40), d.blob([]byte{1, 2, 3})), // 9: future type
	}

	values := d.cat(
		[]byte{1},                        // bool
		[]byte{0xff, 0x7e},               // int
		make([]byte, 8), make([]byte, 8), // nat64, float64
		d.blob([]byte("héllo")),         // text
		[]byte{1}, d.blob([]byte{4, 2}), // principal
		[]byte{3, 1}, didlABC, // record { nat8; variant }
		[]byte{1}, didlABC, // variant
		d.uleb(2), []byte{0, 1}, didlABC, // vec variant
		[]byte{1}, d.uleb(1), []byte{0}, // opt vec variant
		[]byte{1, 1}, d.blob([]byte{9}), d.blob([]byte("m")), // func
		[]byte{1}, d.blob([]byte{8}), // service
		d.uleb(2), d.uleb(0), []byte{7, 7}, // future value
	)
	return candidArg2(table, values, didlOne, didlHash5, didlABC)
}

func TestCandidDecodesOtherRecordsBySubtyping(t *testing.T) {
	ack := candidAck.AppendCandid(nil)
	newMessage := NewMessage{MsgID: candidAck.MsgID, Payload: candidAck.Payload}

	var nm NewMessage
	require.NoError(t, nm.UnmarshalCandid(ack), "ack as new message: hash skipped")
	require.Equal(t, newMessage, nm)

	var aa AckAck
	require.NoError(t, aa.UnmarshalCandid(ack), "ack as ackack: payload skipped")
	require.Equal(t, AckAck{MsgID: candidAck.MsgID, Hash: candidAck.Hash}, aa)

	var a Ack
	require.NoError(t, a.UnmarshalCandid(newMessage.AppendCandid(nil)),
		"new message as ack: hash null")
	require.Equal(t, Ack{MsgID: candidAck.MsgID, Payload: candidAck.Payload}, a)

	ackack := AckAck{MsgID: candidAck.MsgID}.AppendCandid(nil)
	require.ErrorIs(t, a.UnmarshalCandid(ackack), ErrInvalidCandid,
		"ackack as ack: payload missing")
}

func TestCandidLEB128Readers(t *testing.T) {
	unsigned := []uint64{0, 1, 63, 64, 127, 128, 1<<63 - 1, 1 << 63, 1<<64 - 1}
	for bits := range 64 { // every length, and both edges of each group
		unsigned = append(unsigned, 1<<bits, 1<<bits|1<<bits-1, 0x5555555555555555>>bits)
	}
	for _, v := range unsigned {
		for _, enc := range [][]byte{didl.uleb(v), didl.overlong(v, 12)} {
			for _, after := range [][]byte{nil, bytes.Repeat([]byte{0xff}, 9)} {
				r := candidReader{buf: didl.cat(enc, after)}
				got, err := r.readULEB128("n")
				require.NoError(t, err, "%x", enc)
				require.Equal(t, v, got, "%x", enc)
				require.Equal(t, len(after), r.left(), "%x", enc)
			}
		}
	}

	signed := []int64{0, 1, -1, 63, 64, -64, -65, 1<<63 - 1, -1 << 63, -24, -1e12}
	for _, v := range signed {
		long := didl.sleb(v)
		long[len(long)-1] |= 0x80
		if v < 0 {
			long = append(long, 0xff, 0xff, 0x7f)
		} else {
			long = append(long, 0x80, 0x80, 0x00)
		}
		for _, enc := range [][]byte{didl.sleb(v), long} {
			r := candidReader{buf: enc}
			got, err := r.readSLEB128("n")
			require.NoError(t, err, "%x", enc)
			require.Equal(t, v, got, "%x", enc)
			require.Zero(t, r.left())
		}
	}

	tooBig := [][]byte{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02},
		append(bytes.Repeat([]byte{0x80}, 12), 0x01)}
	for _, enc := range tooBig {
		r := candidReader{buf: enc}
		_, err := r.readULEB128("n")
		require.ErrorContains(t, err, "exceeds 64 bits", "%x", enc)
	}
}

// candidRefusal is an argument that must be refused, the sentinel its
// error wraps and a part of its message naming what failed.
type candidRefusal struct {
	name     string
	arg      []byte
	sentinel error
	contains string
}

// checkCandidRefusals checks each refusal with assertCandidRefused.
func checkCandidRefusals(t *testing.T, cases []candidRefusal) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			assertCandidRefused(t, c.arg, c.sentinel, c.contains)
		})
	}
}

// assertCandidRefused checks that every record type refuses arg with an
// error wrapping sentinel and containing contains, and stays unchanged.
// AckAck has no payload field: it skips a bad one or does without it, so
// errors about the payload are not expected from it.
func assertCandidRefused(t *testing.T, arg []byte, sentinel error, contains string) {
	t.Helper()
	id := MsgID{9, 9}
	nm := NewMessage{MsgID: id, Payload: []byte("keep")}
	ack := Ack{MsgID: id, Hash: SomeHash(77), Payload: []byte("keep")}
	ackack := AckAck{MsgID: id, Hash: SomeHash(77)}
	before := []candidValue{nm, ack, ackack}

	errs := []error{nm.UnmarshalCandid(arg), ack.UnmarshalCandid(arg),
		ackack.UnmarshalCandid(arg)}
	after := []candidValue{nm, ack, ackack}

	for i, err := range errs {
		if i == 2 && (contains == "want blob" || contains == "missing field payload") {
			continue
		}
		require.Error(t, err, "%T", after[i])
		require.ErrorIs(t, err, sentinel, "%T", after[i])
		require.Contains(t, err.Error(), contains, "%T", after[i])
		require.Equal(t, before[i], after[i], "%T changed", after[i])
	}
}

func TestCandidRefusals(t *testing.T) {
	checkCandidRefusals(t, candidRefusalCases())
}

// candidRefusalCases are malformed or ill-typed encodings.
func candidRefusalCases() []candidRefusal {
	d, inv, badID := didl, ErrInvalidCandid, ErrInvalidMsgID
	canon := Ack{MsgID: candidAck.MsgID, Payload: []byte("abc")}.AppendCandid(nil)
	msgID, hash, payload := d.msgID(candidNat), d.hash(1), d.payload(0)
	all := []didlField{msgID, hash, payload}
	withType := func(i int, t int64) []didlField {
		fs := append([]didlField{}, all...)
		fs[i].t = t
		return fs
	}
	extended := func(entries ...[]byte) [][]byte {
		return append(append([][]byte{}, didlAckTable...), entries...)
	}
	good := [][]byte{didlOne, didlHash5, didlABC}

	return []candidRefusal{
		{"msg_id of 2^128", candidRecordArg(all, d.nat(candidPow128()), didlHash5,
			didlABC), badID, "more than 128 bits"},
		{"msg_id of 2^128 after a canonical header", d.cat(
			[]byte(candidNewMessageHeader), d.nat(candidPow128()), didlABC),
			badID, "more than 128 bits"},
		{"msg_id with a bit set far past 128", candidRecordArg(all,
			d.cat(bytes.Repeat([]byte{0x80}, 40), []byte{1}), didlHash5, didlABC),
			badID, "more than 128 bits"},
		{"msg_id of type int", candidRecordArg(withType(0, candidInt), good...),
			inv, "field msg_id"},
		{"msg_id of type nat64", candidRecordArg(withType(0, candidNat64),
			make([]byte, 8), didlHash5, didlABC), inv, "want nat"},
		{"msg_id of type opt nat32", candidRecordArg(withType(0, 1),
			didlHash5, didlHash5, didlABC), inv, "want nat"},
		{"payload of type text", candidRecordArg(withType(2, candidText), good...),
			inv, "want blob"},
		{"payload of type vec nat16", candidArg2([][]byte{d.vec(candidNat16),
			d.opt(candidNat32), d.record(all...)}, didlOne, didlHash5, []byte{1, 1, 0}),
			inv, "want blob"},
		{"duplicate field id", candidRecordArg([]didlField{msgID, msgID, hash, payload},
			didlOne, didlOne, didlHash5, didlABC), inv, "duplicate field id"},
		{"field ids not increasing", candidRecordArg([]didlField{hash, msgID, payload},
			didlHash5, didlOne, didlABC), inv, "ids must increase"},
		{"duplicate variant tag in an unused entry", candidArg2(extended(d.variant(
			d.field(1, candidNull), d.field(1, candidNull))), good...),
			inv, "duplicate field id"},
		{"field id beyond 32 bits", candidRecordArg(append(all,
			d.field(1<<32, candidNull)), good...), inv, "exceeds 32 bits"},
		{"trailing garbage after canonical values", d.cat(canon, []byte{0}), inv,
			"trailing garbage"},
		{"trailing garbage after general values", candidRecordArg(all, didlOne,
			didlHash5, didlABC, []byte{1, 2}), inv, "trailing garbage"},
		{"missing msg_id", candidRecordArg([]didlField{hash, payload}, didlHash5,
			didlABC), inv, "missing field msg_id"},
		{"missing payload", d.arg([][]byte{d.opt(candidNat32),
			d.record(msgID, d.hash(0))}, []int64{1}, didlOne, didlHash5),
			inv, "missing field payload"},
		{"zero arguments", d.arg(didlAckTable, nil), inv, "no arguments"},
		{"wrong magic", d.cat([]byte("DIDM"), canon[4:]), inv, "magic"},
		{"empty input", nil, inv, "magic"},
		{"first argument is not a record", d.arg(nil, []int64{candidNat}, didlOne),
			inv, "want record"},
		{"first argument is an opt record", d.arg(extended(d.opt(2)), []int64{3},
			[]byte{0}), inv, "want record"},
		{"type reference out of range", candidArg2(extended(d.opt(7)), good...),
			inv, "type reference 7"},
		{"unknown primitive opcode", candidArg2(extended(d.opt(-30)), good...),
			inv, "type reference -30"},
		{"primitive type in the table", candidArg2(extended(d.sleb(candidNat)),
			good...), inv, "not a constructed type"},
		{"argument type out of range", d.arg(didlAckTable, []int64{3}), inv,
			"type reference 3"},
		{"service method of record type", candidArg2(extended(
			d.service([]string{"m"}, []int64{2})), good...), inv, "want func"},
		{"service methods not sorted", candidArg2(extended(
			d.service([]string{"b", "a"}, []int64{4, 4}), d.fn(nil)), good...),
			inv, "is not after"},
		{"func annotation unknown", candidArg2(extended(d.fn(nil, 9)), good...),
			inv, "func annotation 9"},
		{"hash opt tag 2 after a canonical header", d.cat([]byte(candidAckHeader),
			didlOne, []byte{2}, didlABC), inv, "opt tag 2"},
		{"opt tag 2 in an extra field", candidAckWithExtra(3,
			[][]byte{d.opt(candidNat)}, []byte{2}), inv, "opt tag 2"},
		{"bool 2 in an extra field", candidAckWithExtra(candidBool, nil, []byte{2}),
			inv, "bool 2"},
		{"invalid utf-8 text in an extra field", candidAckWithExtra(candidText, nil,
			d.blob([]byte{0xff, 0xfe})), inv, "not utf-8"},
		{"variant index out of range", candidAckWithExtra(3,
			[][]byte{d.variant(d.field(0, candidNull))}, d.uleb(1)),
			inv, "variant index 1"},
		{"value of type empty", candidAckWithExtra(candidEmpty, nil, nil), inv,
			"type empty"},
		{"payload of type vec empty with an element", candidArg2([][]byte{
			d.opt(candidNat32), d.vec(candidEmpty), d.record(msgID, d.hash(0),
				d.payload(1))}, didlOne, didlHash5, d.uleb(1), []byte{0}), inv,
			"of type empty"},
		{"vec empty with an element", candidAckWithExtra(3,
			[][]byte{d.vec(candidEmpty)}, d.uleb(1)), inv, "type empty"},
		{"principal flag 2", candidAckWithExtra(candidPrincipal, nil, []byte{2}),
			inv, "principal flag 2"},
		{"text longer than the input", candidAckWithExtra(candidText, nil,
			d.uleb(1e6)), inv, "truncated text"},
		{"future value longer than the input", candidAckWithExtra(3,
			[][]byte{d.cat(d.sleb(-30), d.uleb(0))}, d.cat(d.uleb(1e6), d.uleb(0))),
			inv, "future value length"},
		{"opcode beyond 64 bits", d.cat([]byte("DIDL\x01"),
			bytes.Repeat([]byte{0xff}, 10), []byte{0x01}), inv, "exceeds 64 bits"},
		{"count beyond 64 bits", d.cat([]byte("DIDL"),
			bytes.Repeat([]byte{0xff}, 10), []byte{0x7f}), inv, "exceeds 64 bits"},
	}
}

func TestCandidBadPayloadIsAnExtraFieldForAckAck(t *testing.T) {
	d := didl
	args := [][]byte{
		candidRecordArg([]didlField{d.msgID(candidNat), d.hash(1), d.payload(candidText)},
			didlOne, didlHash5, didlABC),
		candidArg2([][]byte{d.vec(candidNat16), d.opt(candidNat32),
			d.record(d.msgID(candidNat), d.hash(1), d.payload(0))},
			didlOne, didlHash5, []byte{1, 1, 0}),
	}
	for _, arg := range args {
		var m AckAck
		require.NoError(t, m.UnmarshalCandid(arg))
		require.Equal(t, AckAck{MsgID: candidAck.MsgID, Hash: candidAck.Hash}, m)
	}
}

func TestCandidResourceBounds(t *testing.T) {
	checkCandidRefusals(t, candidResourceRefusals())
}

// candidResourceRefusals are small arguments that claim more than they
// hold or nest too deep.
func candidResourceRefusals() []candidRefusal {
	d, inv := didl, ErrInvalidCandid
	mega := bytes.Repeat([]byte{0x80}, 1<<20)

	return []candidRefusal{
		{"vec nat claiming a billion elements", candidAckWithExtra(3,
			[][]byte{d.vec(candidNat)}, d.uleb(1e9)), inv, "vec length 1000000000"},
		{"vec nat32 claiming a billion elements", candidAckWithExtra(3,
			[][]byte{d.vec(candidNat32)}, d.uleb(1e9)), inv, "vec length 1000000000"},
		{"vec of uninhabited records claiming a billion elements", candidAckWithExtra(3,
			[][]byte{d.vec(4), d.record(d.field(0, 4))}, d.uleb(1e9)),
			inv, "vec length"},
		{"type table claiming 2^40 entries", d.cat([]byte("DIDL"), d.uleb(1<<40)),
			inv, "type table length"},
		{"record claiming a billion fields", d.cat([]byte("DIDL\x01"),
			d.sleb(candidRecord), d.uleb(1e9)), inv, "field count"},
		{"arguments claiming a billion entries", d.cat([]byte("DIDL\x00"),
			d.uleb(1e9)), inv, "argument count"},
		{"zero-sized record nested 100 deep in a billion-element vec", candidAckWithExtra(
			3, append([][]byte{d.vec(4)}, candidNestedEmptyRecords(100)...),
			d.uleb(1e9)), inv, "vec length 1000000000"},
		{"opt nested 100 deep", candidAckWithExtra(3, [][]byte{d.opt(3)},
			d.cat(bytes.Repeat([]byte{1}, 100), []byte{0})), inv, "nests more than 64"},
		{"record containing itself", candidAckWithExtra(3,
			[][]byte{d.record(d.field(0, 3))}, nil), inv, "nests more than 64"},
		{"record containing itself twice", candidAckWithExtra(3,
			[][]byte{d.record(d.field(0, 3), d.field(1, 3))}, nil),
			inv, "nests more than 64"},
		{"canonical header then a long msg_id", d.cat([]byte(candidAckHeader), mega,
			[]byte{0x02}, didlHash5, didlABC), ErrInvalidMsgID, "more than 128 bits"},
	}
}

func TestCandidResourceBoundsAccepted(t *testing.T) {
	checkCandidCases(t, candidResourceCases())
}

// candidResourceCases are small arguments near the resource bounds that
// decode.
func candidResourceCases() []candidCase {
	d, ack := didl, candidAck

	return []candidCase{
		{"opt nested 60 deep", candidAckWithExtra(3, [][]byte{d.opt(3)},
			d.cat(bytes.Repeat([]byte{1}, 60), []byte{0})), ack},
		{"vec of records ten fields wide", candidWideRecordVec(10, 300), ack},
		{"vec of variants picking arm 9", candidDeepVariantVec(10, 300), ack},
		{"zero-sized record nested 50 deep in a billion-element vec", candidAckWithExtra(
			3, append([][]byte{d.vec(4)}, candidNestedEmptyRecords(50)...),
			d.uleb(1e9)), ack},
	}
}

// candidHostile is an argument crafted to cost time or memory, built at
// about a given size, and what decoding it gives.
type candidHostile struct {
	name string
	arg  func(size int) []byte
	// want is the value the argument decodes to, or nil if it is refused
	// with an error that contains refusal.
	want    candidValue
	refusal string
}

// Sizes of hostile arguments: the largest message the IC accepts, and a
// smaller one for tests, which spend a fixed amount of work per byte too.
const (
	candidHostileSize     = 2 << 20
	candidHostileTestSize = 256 << 10
)

// candidHostileWork is the most work an accepted hostile argument costs:
// its bulk is numbers, text, blobs and vectors that cost one unit however
// long they are, and the rest is a small type table.
const candidHostileWork = 512

// candidHostileArgs returns arguments that a careless decoder would spend
// seconds or gigabytes on.
func candidHostileArgs() []candidHostile {
	d, ack := didl, candidAck
	over := "costs more than"

	return []candidHostile{
		{"vec null claiming 2^62 elements", func(int) []byte {
			return candidAckWithExtra(3, [][]byte{d.vec(candidNull)}, d.uleb(1<<62))
		}, ack, ""},
		{"vec of empty records nested 50 deep claiming 2^62 elements", func(int) []byte {
			table := append([][]byte{d.vec(4)}, candidNestedEmptyRecords(50)...)
			return candidAckWithExtra(3, table, d.uleb(1<<62))
		}, ack, ""},
		{"vec of vec null, each claiming 2^62 elements", func(size int) []byte {
			count := size / 9
			values := d.cat(d.uleb(uint64(count)), bytes.Repeat(d.uleb(1<<62), count))
			return candidAckWithExtra(3, [][]byte{d.vec(4), d.vec(candidNull)}, values)
		}, nil, over},
		{"vec of records of many null fields", func(size int) []byte {
			width := min(2000, size/64) // the type takes 2 or 3 bytes a field
			return candidWideRecordVec(width, size-width*4)
		}, nil, over},
		{"vec of variants picking the last of many arms", func(size int) []byte {
			width := min(5000, size/64)
			return candidDeepVariantVec(width, (size-width*4)/2)
		}, nil, over},
		{"vec of records nested 60 deep", func(size int) []byte {
			return candidNestedVec(candidRecord, 60, size)
		}, nil, over},
		{"vec of opts nested 60 deep", func(size int) []byte {
			return candidNestedVec(candidOpt, 60, size)
		}, nil, over},
		{"vec of empty texts", func(size int) []byte {
			return candidAckWithExtra(3, [][]byte{d.vec(candidText)},
				d.cat(d.uleb(uint64(size)), make([]byte, size)))
		}, nil, over},
		{"variant nested in itself to the end", func(size int) []byte {
			table := [][]byte{d.variant(d.field(0, 3), d.field(1, candidNull))}
			return candidAckWithExtra(3, table, make([]byte, size))
		}, nil, "nests more than 64"},
		{"type table of opt entries", func(size int) []byte {
			table := append([][]byte{}, didlAckTable...)
			for range size / 2 {
				table = append(table, d.opt(candidNull))
			}
			return candidArg2(table, didlOne, didlHash5, didlABC)
		}, nil, over},
		{"record type of null fields", func(size int) []byte {
			return candidAckWithExtra(3, [][]byte{candidNullRecord(size / 4)}, nil)
		}, nil, over},
		{"service type of methods", func(size int) []byte {
			table := append(append([][]byte{}, didlAckTable...), candidBigService(size/10)...)
			return candidArg2(table, didlOne, didlHash5, didlABC)
		}, nil, over},
		{"func type of many annotations", func(size int) []byte {
			fn := d.fn(nil, bytes.Repeat([]byte{2}, size)...)
			return candidArg2(append(append([][]byte{}, didlAckTable...), fn),
				didlOne, didlHash5, didlABC)
		}, ack, ""},
		{"null arguments", func(size int) []byte {
			args := append([]int64{2}, make([]int64, size)...)
			for i := range args[1:] {
				args[i+1] = candidNull
			}
			return d.arg(didlAckTable, args, didlOne, didlHash5, didlABC)
		}, nil, over},
		{"vec nat of small numbers", func(size int) []byte {
			return candidAckWithExtra(3, [][]byte{d.vec(candidNat)},
				d.cat(d.uleb(uint64(size/2)), bytes.Repeat([]byte{0x81, 0x01}, size/2)))
		}, ack, ""},
		{"vec bool", func(size int) []byte {
			return candidAckWithExtra(3, [][]byte{d.vec(candidBool)},
				d.cat(d.uleb(uint64(size)), bytes.Repeat([]byte{0, 1}, size/2)))
		}, ack, ""},
		{"long text", func(size int) []byte {
			return candidAckWithExtra(candidText, nil, d.blob(bytes.Repeat([]byte("é"),
				size/2)))
		}, ack, ""},
		{"long nat", func(size int) []byte {
			return candidAckWithExtra(candidNat, nil,
				d.cat(bytes.Repeat([]byte{0xff}, size), []byte{1}))
		}, ack, ""},
		{"msg_id with overlong padding", func(size int) []byte {
			return candidAckWithID(d.overlong(1, size))
		}, ack, ""},
		{"type table length with overlong padding", func(size int) []byte {
			return d.cat([]byte("DIDL"), d.overlong(3, size), d.cat(didlAckTable...),
				d.uleb(1), d.sleb(2), didlOne, didlHash5, didlABC)
		}, ack, ""},
		{"future type and value", func(size int) []byte {
			future := d.cat(d.sleb(-30), d.blob(make([]byte, size/2)))
			value := d.cat(d.uleb(uint64(size/2)), d.uleb(0), make([]byte, size/2))
			return candidAckWithExtra(3, [][]byte{future}, value)
		}, ack, ""},
		{"msg_id padding to the end", func(size int) []byte {
			return candidRecordArg([]didlField{d.msgID(candidNat), d.hash(1), d.payload(0)},
				bytes.Repeat([]byte{0x80}, size))
		}, nil, "truncated msg_id"},
		{"skipped nat padding to the end", func(size int) []byte {
			return candidAckWithExtraLast(candidNat, bytes.Repeat([]byte{0x80}, size))
		}, nil, "truncated nat"},
		{"type table length padding to the end", func(size int) []byte {
			return d.cat([]byte("DIDL"), bytes.Repeat([]byte{0x80}, size))
		}, nil, "truncated type table length"},
	}
}

// candidBudgetFillers returns arguments that decode but spend nearly all
// the work their length allows, padded to size with a blob argument: what
// is left of the time an argument may take once it is accepted.
func candidBudgetFillers() []candidHostile {
	d := didl
	fill := func(size int, table [][]byte, arg int64, value []byte) []byte {
		args := []int64{2, arg, 1}
		core := d.arg(table, args, didlOne, didlHash5, didlABC, value, d.uleb(0))
		padding := make([]byte, max(size-len(core)-8, 0))
		return d.arg(table, args, didlOne, didlHash5, didlABC, value, d.blob(padding))
	}
	units := func(size int) int { return int(candidWorkBudget(size)) - 1024 }

	return []candidHostile{
		{"type table of opt entries up to the budget", func(size int) []byte {
			table := append([][]byte{}, didlAckTable...)
			for range units(size) / candidTypeWork {
				table = append(table, d.opt(candidNull))
			}
			return fill(size, table, 3, []byte{0})
		}, candidAck, ""},
		{"record type of null fields up to the budget", func(size int) []byte {
			record := candidNullRecord(units(size) / candidTypeWork)
			return fill(size, append(append([][]byte{}, didlAckTable...), record), 3, nil)
		}, candidAck, ""},
		{"vec of records nested 60 deep up to the budget", func(size int) []byte {
			table := append(append([][]byte{}, didlAckTable...), didl.vec(4))
			for i := range 60 {
				table = append(table, didl.record(didl.field(0, int64(5+i))))
			}
			table[len(table)-1] = didl.record(didl.field(0, candidNat))
			count := units(size)/61 - 1
			return fill(size, table, 3, d.cat(d.uleb(uint64(count)), make([]byte, count)))
		}, candidAck, ""},
	}
}

// candidNestedVec encodes candidAck with an extra field holding a vec of
// records or opts nested depth deep around a nat, filling about size
// bytes: every byte of its values costs a unit of work or more.
func candidNestedVec(op int64, depth, size int) []byte {
	table := [][]byte{didl.vec(4)}
	for i := range depth {
		inner := int64(5 + i)
		if i == depth-1 {
			inner = candidNat
		}
		if op == candidOpt {
			table = append(table, didl.opt(inner))
		} else {
			table = append(table, didl.record(didl.field(0, inner)))
		}
	}

	element := []byte{0}
	if op == candidOpt {
		element = append(bytes.Repeat([]byte{1}, depth), 0)
	}
	count := max(size-1024, len(element)) / len(element)
	return candidAckWithExtra(3, table, didl.cat(didl.uleb(uint64(count)),
		bytes.Repeat(element, count)))
}

// candidNullRecord encodes a record type of n null fields.
func candidNullRecord(n int) []byte {
	fs := make([]didlField, n)
	for i := range fs {
		fs[i] = didl.field(uint64(i), candidNull)
	}
	return didl.record(fs...)
}

// candidBigService returns table entries 3 and 4: a service of n methods,
// all of type 4, a func of no arguments.
func candidBigService(n int) [][]byte {
	names := make([]string, n)
	types := make([]int64, n)
	for i := range names {
		names[i] = fmt.Sprintf("m%07d", i)
		types[i] = 4
	}
	return [][]byte{didl.service(names, types), didl.fn(nil)}
}

func TestCandidWorkBudgetOf2MiB(t *testing.T) {
	require.Equal(t, int64(4096+131072), candidWorkBudget(candidHostileSize))
}

func TestCandidHostileInputsCostBoundedWork(t *testing.T) {
	for _, h := range candidHostileArgs() {
		t.Run(h.name, func(t *testing.T) {
			arg := h.arg(candidHostileTestSize)
			require.Less(t, len(arg), candidHostileTestSize+100)
			spent, err := candidWorkSpent(arg)

			if h.want == nil {
				if h.refusal == "costs more than" {
					require.Greater(t, spent, candidWorkBudget(len(arg)))
				}
				assertCandidRefused(t, arg, ErrInvalidCandid, h.refusal)
				return
			}
			require.NoError(t, err)
			require.LessOrEqual(t, spent, int64(candidHostileWork))
			got, err := candidDecodeAs(h.want, arg)
			require.NoError(t, err)
			require.Equal(t, h.want, got)
		})
	}
}

func TestCandidBudgetFillersDecode(t *testing.T) {
	for _, h := range candidBudgetFillers() {
		t.Run(h.name, func(t *testing.T) {
			arg := h.arg(candidHostileTestSize)
			require.Less(t, len(arg), candidHostileTestSize+100)
			spent, err := candidWorkSpent(arg)

			require.NoError(t, err)
			require.Greater(t, spent, candidWorkBudget(len(arg))*3/4)
			got, err := candidDecodeAs(h.want, arg)
			require.NoError(t, err)
			require.Equal(t, h.want, got)
		})
	}
}

// candidWorkSpent returns the units of work the general decoder spends on
// arg as an Ack, and its error.
func candidWorkSpent(arg []byte) (int64, error) {
	budget := candidWorkBudget(len(arg))
	work := budget
	_, err := decodeGeneralCandidWithin(arg, &ackShape, &work)
	return budget - work, err
}

// BenchmarkDecodeHostile measures how long hostile arguments of 2 MiB take
// to decode or refuse, and the units of work each spends.
func BenchmarkDecodeHostile(b *testing.B) {
	for _, h := range append(candidHostileArgs(), candidBudgetFillers()...) {
		arg := h.arg(candidHostileSize)
		spent, _ := candidWorkSpent(arg)
		b.Run(h.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var m Ack
				_ = m.UnmarshalCandid(arg)
			}
			b.ReportMetric(float64(min(spent, candidWorkBudget(len(arg)))), "units/op")
		})
	}
}

// candidNestedEmptyRecords returns table entries 4 and on: record {
// record { ... } } nested depth deep, each level with a null field too.
func candidNestedEmptyRecords(depth int) [][]byte {
	var table [][]byte
	for i := range depth - 1 {
		inner := didl.field(0, int64(5+i))
		table = append(table, didl.record(inner, didl.field(1, candidNull)))
	}
	return append(table, didl.record())
}

// candidWideRecordVec encodes candidAck with an extra field holding a vec
// of count records with width null fields and one nat: each element
// takes one byte but costs width units of work to skip.
func candidWideRecordVec(width, count int) []byte {
	fs := make([]didlField, 0, width+1)
	for i := range width {
		fs = append(fs, didl.field(uint64(i), candidNull))
	}
	fs = append(fs, didl.field(uint64(width), candidNat))

	table := [][]byte{didl.vec(4), didl.record(fs...)}
	return candidAckWithExtra(3, table, didl.cat(didl.uleb(uint64(count)),
		make([]byte, count)))
}

// candidDeepVariantVec encodes candidAck with an extra field holding a vec
// of count values of a variant with width null arms, each picking the
// last arm.
func candidDeepVariantVec(width, count int) []byte {
	fs := make([]didlField, 0, width)
	for i := range width {
		fs = append(fs, didl.field(uint64(i), candidNull))
	}

	last := didl.uleb(uint64(width - 1))
	table := [][]byte{didl.vec(4), didl.variant(fs...)}
	return candidAckWithExtra(3, table, didl.cat(didl.uleb(uint64(count)),
		bytes.Repeat(last, count)))
}

func TestCandidTruncatedInputIsRefused(t *testing.T) {
	var args [][]byte
	for _, v := range readCandidVectors(t)[:40] {
		args = append(args, v.candid)
	}
	for _, c := range candidSubtypingCases() {
		if len(c.arg) < 2000 {
			args = append(args, c.arg)
		}
	}

	for _, arg := range args {
		for n := range len(arg) {
			var m Ack
			err := m.UnmarshalCandid(arg[:n])
			require.ErrorIs(t, err, ErrInvalidCandid, "prefix %d of %x", n, arg)
			require.Equal(t, Ack{}, m)
		}
	}
}

func TestCandidErrorsAreLowerCase(t *testing.T) {
	for _, c := range candidRefusalCases() {
		var m Ack
		err := m.UnmarshalCandid(c.arg)
		require.Error(t, err)

		var detail string
		for _, s := range []error{ErrInvalidCandid, ErrInvalidMsgID} {
			if errors.Is(err, s) {
				detail = strings.TrimPrefix(err.Error(), s.Error()+": ")
			}
		}
		require.NotEqual(t, err.Error(), detail, c.name)
		require.Equal(t, strings.ToLower(detail[:1]), detail[:1], c.name)
	}
}

// candidBenchPayload is the 100-byte payload of the benchmarks.
var candidBenchPayload = bytes.Repeat([]byte{0xab}, 100)

// candidBenchID is a realistic ULID.
var candidBenchID = MsgID{0x01, 0x56, 0x3e, 0x3a, 0xb5, 0xd3, 0xd6, 0x76,
	0x4c, 0x61, 0xef, 0xb9, 0x93, 0x02, 0xbd, 0x5b}

// benchmarkCandidEncode measures AppendCandid into a reused buffer.
func benchmarkCandidEncode(b *testing.B, v candidValue) {
	b.ReportAllocs()
	buf := make([]byte, 0, 256)
	for b.Loop() {
		buf = v.AppendCandid(buf[:0])
	}
}

func BenchmarkCodecEncodeNewMessage(b *testing.B) {
	benchmarkCandidEncode(b, NewMessage{MsgID: candidBenchID, Payload: candidBenchPayload})
}

func BenchmarkCodecEncodeAck(b *testing.B) {
	benchmarkCandidEncode(b, Ack{MsgID: candidBenchID, Hash: SomeHash(7),
		Payload: candidBenchPayload})
}

func BenchmarkCodecEncodeAckAck(b *testing.B) {
	benchmarkCandidEncode(b, AckAck{MsgID: candidBenchID, Hash: SomeHash(7)})
}

func BenchmarkCodecDecodeNewMessage(b *testing.B) {
	arg := NewMessage{MsgID: candidBenchID, Payload: candidBenchPayload}.AppendCandid(nil)
	b.ReportAllocs()
	for b.Loop() {
		var m NewMessage
		if err := m.UnmarshalCandid(arg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCodecDecodeAck(b *testing.B) {
	arg := Ack{MsgID: candidBenchID, Hash: SomeHash(7),
		Payload: candidBenchPayload}.AppendCandid(nil)
	b.ReportAllocs()
	for b.Loop() {
		var m Ack
		if err := m.UnmarshalCandid(arg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCodecDecodeAckAck(b *testing.B) {
	arg := AckAck{MsgID: candidBenchID, Hash: SomeHash(7)}.AppendCandid(nil)
	b.ReportAllocs()
	for b.Loop() {
		var m AckAck
		if err := m.UnmarshalCandid(arg); err != nil {
			b.Fatal(err)
		}
	}
}
