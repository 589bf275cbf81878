package asyncflow

import (
	"encoding/binary"
	"fmt"
	"math"
	"unicode/utf8"
)

// The general Candid decoder: any valid type table, the subtyping rules
// for records and options, and skipping of every value the records do not
// need. Its bounds on time and memory are described in candid.go.

// candidType is one type table entry, parsed and checked once so that
// values can be read against it without checking it again.
type candidType struct {
	off   int32 // offset of the entry's opcode, for errors
	body  int32 // record, variant, service: offset of the first field or method
	op    int32 // opcode; candidFuture for every future type
	arg   int32 // opt, vec: element type; record, variant, service: length
	first int32 // record, variant: index of the first field in fieldTypes
	zero  int8  // record: memo of candidDecoder.zeroSized
}

// Values of candidType.zero.
const (
	zeroUnknown int8 = iota
	zeroVisiting
	zeroYes
	zeroNo
)

// candidDecoder is the general decoder: it reads a type table of any shape
// and the values against it.
type candidDecoder struct {
	candidReader
	types []candidType

	// fieldTypes holds the field types of every record and variant entry,
	// in table order, so that skipping a value walks no table bytes and
	// finds a variant's arm in one step.
	fieldTypes []int32

	work *int64 // units of work left
}

// candidWorkBudget returns the units of work a message of n bytes may
// spend (see the top of candid.go).
func candidWorkBudget(n int) int64 {
	return candidWorkBase + int64(n)/candidBytesPerWork
}

// decodeGeneralCandid decodes an argument list whose header is not the
// canonical one: it checks the whole message, decodes the first argument
// as the record s describes and skips the other arguments.
func decodeGeneralCandid(arg []byte, s *candidShape) (candidFields, error) {
	work := candidWorkBudget(len(arg))
	return decodeGeneralCandidWithin(arg, s, &work)
}

// decodeGeneralCandidWithin is decodeGeneralCandid with a work budget of
// *work units, which it decreases by the units it spends.
func decodeGeneralCandidWithin(arg []byte, s *candidShape, work *int64) (
	candidFields, error) {
	if len(arg) > candidMaxLen {
		return candidFields{}, invalidCandid("argument of %d bytes is too long", len(arg))
	}
	d := candidDecoder{candidReader: candidReader{buf: arg}, work: work}

	if err := d.readMagic(); err != nil {
		return candidFields{}, err
	}

	var small [8]candidType
	types, err := d.readTypeTable(small[:0])
	if err != nil {
		return candidFields{}, err
	}
	d.types = types

	var smallFields [24]int32
	if d.fieldTypes, err = d.collectFieldTypes(smallFields[:0]); err != nil {
		return candidFields{}, err
	}
	if err := d.checkMethodTypes(); err != nil {
		return candidFields{}, err
	}

	argTypes, err := d.readArgTypes()
	if err != nil {
		return candidFields{}, err
	}

	first, err := argTypes.readSLEB128("argument type")
	if err != nil {
		return candidFields{}, err
	}
	f, err := d.readRecord(first, s)
	if err != nil {
		return candidFields{}, err
	}

	for argTypes.left() > 0 {
		t, err := argTypes.readSLEB128("argument type")
		if err != nil {
			return candidFields{}, err
		}
		if err := d.skipValue(t, 1); err != nil {
			return candidFields{}, err
		}
	}

	if err := d.expectEnd(); err != nil {
		return candidFields{}, err
	}
	return f, nil
}

// readMagic reads the "DIDL" that starts every Candid message.
func (d *candidDecoder) readMagic() error {
	if d.left() < 4 || string(d.buf[:4]) != "DIDL" {
		return invalidCandid("missing DIDL magic at offset 0")
	}
	d.pos = 4
	return nil
}

// readTypeTable reads and checks the type table and returns its entries,
// appended to types, which it replaces once if they do not fit. Types may
// be listed in any order and be unused.
func (d *candidDecoder) readTypeTable(types []candidType) ([]candidType, error) {
	n, err := d.readCount("type table length")
	if err != nil {
		return nil, err
	}
	if err := d.spendTypes(n); err != nil {
		return nil, err
	}

	if n > cap(types) {
		types = make([]candidType, 0, n)
	}

	for i := range n {
		t, err := d.readTypeEntry(i, n)
		if err != nil {
			return nil, err
		}
		types = append(types, t)
	}
	return types, nil
}

// readTypeEntry reads table entry i of n. The table holds constructed and
// future types only: a primitive type is never given an index.
func (d *candidDecoder) readTypeEntry(i, n int) (candidType, error) {
	t := candidType{off: int32(d.pos)}
	op, err := d.readSLEB128("type opcode")
	if err != nil {
		return t, err
	}

	switch {
	case op == candidOpt || op == candidVec:
		t.op = int32(op)
		elem, err := d.readTypeRef(n)
		t.arg = int32(elem)
		return t, err
	case op == candidRecord || op == candidVariant:
		t.op = int32(op)
		return d.readFieldTypes(t, n)
	case op == candidFunc:
		t.op = int32(op)
		return t, d.readFuncType(n)
	case op == candidService:
		t.op = int32(op)
		return d.readServiceType(t, n)
	case op < candidPrincipal:
		t.op = candidFuture
		return t, d.skipFutureType()
	}
	return t, invalidCandid("type table entry %d at offset %d: opcode %d is not a "+
		"constructed type", i, t.off, op)
}

// readTypeRef reads a reference to a type: an index into the table of n
// entries, or the opcode of a primitive type.
func (d *candidDecoder) readTypeRef(n int) (int64, error) {
	start := d.pos
	t, err := d.readSLEB128("type reference")
	if err != nil {
		return 0, err
	}

	if t >= int64(n) || (t < candidEmpty && t != candidPrincipal) {
		return 0, invalidCandid("type reference %d at offset %d is neither one of the "+
			"%d table entries nor a primitive type", t, start, n)
	}
	return t, nil
}

// readTypeRefs reads a count, what names it, and that many type references.
func (d *candidDecoder) readTypeRefs(what string, n int) error {
	count, err := d.readCount(what)
	if err != nil {
		return err
	}
	if err := d.spendTypes(count); err != nil {
		return err
	}

	for range count {
		if _, err := d.readTypeRef(n); err != nil {
			return err
		}
	}
	return nil
}

// readFieldTypes reads the fields of a record or variant type. Field ids
// must fit in 32 bits and strictly increase, which rules out duplicates.
func (d *candidDecoder) readFieldTypes(t candidType, n int) (candidType, error) {
	count, err := d.readCount("field count")
	if err != nil {
		return t, err
	}
	if err := d.spendTypes(count); err != nil {
		return t, err
	}
	t.arg = int32(count)
	t.body = int32(d.pos)

	prev := int64(-1)
	for range count {
		start := d.pos
		id, err := d.readULEB128("field id")
		if err != nil {
			return t, err
		}
		if err := checkFieldID(id, prev, start); err != nil {
			return t, err
		}
		prev = int64(id)

		if _, err := d.readTypeRef(n); err != nil {
			return t, err
		}
	}
	return t, nil
}

// collectFieldTypes appends the field types of every record and variant
// entry to fields, which it replaces once if they do not fit, and records
// where each entry's fields start. The work spent on the table bounds
// their number.
func (d *candidDecoder) collectFieldTypes(fields []int32) ([]int32, error) {
	total := 0
	for _, e := range d.types {
		if e.op == candidRecord || e.op == candidVariant {
			total += int(e.arg)
		}
	}
	if total > cap(fields) {
		fields = make([]int32, 0, total)
	}

	for i := range d.types {
		e := &d.types[i]
		if e.op != candidRecord && e.op != candidVariant {
			continue
		}
		e.first = int32(len(fields))

		w := d.fields(int64(i))
		for {
			_, t, ok, err := w.next()
			if err != nil {
				return nil, err
			}
			if !ok {
				break
			}
			fields = append(fields, int32(t))
		}
	}
	return fields, nil
}

// checkFieldID refuses a field id read at offset start that does not fit
// in 32 bits or does not follow prev.
func checkFieldID(id uint64, prev int64, start int) error {
	switch {
	case id > math.MaxUint32:
		return invalidCandid("field id %d at offset %d exceeds 32 bits", id, start)
	case int64(id) == prev:
		return invalidCandid("duplicate field id %d at offset %d", id, start)
	case int64(id) < prev:
		return invalidCandid("field id %d at offset %d follows field id %d: "+
			"ids must increase", id, start, prev)
	}
	return nil
}

// readFuncType reads a func type: argument types, result types and
// annotations (1 query, 2 oneway, 3 composite_query).
func (d *candidDecoder) readFuncType(n int) error {
	if err := d.readTypeRefs("func argument count", n); err != nil {
		return err
	}
	if err := d.readTypeRefs("func result count", n); err != nil {
		return err
	}

	count, err := d.readCount("func annotation count")
	if err != nil {
		return err
	}
	for i, a := range d.buf[d.pos : d.pos+count] {
		if a < 1 || a > 3 {
			return invalidCandid("func annotation %d at offset %d", a, d.pos+i)
		}
	}
	d.pos += count
	return nil
}

// readServiceType reads a service type: methods with UTF-8 names in
// strictly increasing order, each referring to a table entry (which
// checkMethodTypes checks is a func once the whole table is known).
func (d *candidDecoder) readServiceType(t candidType, n int) (candidType, error) {
	count, err := d.readCount("service method count")
	if err != nil {
		return t, err
	}
	if err := d.spendTypes(count); err != nil {
		return t, err
	}
	t.arg = int32(count)
	t.body = int32(d.pos)

	var prev []byte
	for i := range count {
		start := d.pos
		name, err := d.readMethodName()
		if err != nil {
			return t, err
		}
		if i > 0 && string(name) <= string(prev) {
			return t, invalidCandid("method name %q at offset %d is not after %q",
				string(name), start, string(prev))
		}
		prev = name

		ref, err := d.readTypeRef(n)
		if err != nil {
			return t, err
		}
		if ref < 0 {
			return t, invalidCandid("method %q at offset %d has type %s, want func",
				string(name), start, candidOpName(int32(ref)))
		}
	}
	return t, nil
}

// readMethodName reads a method name, which must be UTF-8.
func (d *candidDecoder) readMethodName() ([]byte, error) {
	start := d.pos
	name, err := d.readBlob("method name")
	if err != nil {
		return nil, err
	}

	if !utf8.Valid(name) {
		return nil, invalidCandid("method name at offset %d is not utf-8", start)
	}
	return name, nil
}

// checkMethodTypes checks that every service method refers to a func type,
// as the Candid spec requires. It walks service entries a second time
// because a method may refer to an entry further down the table.
func (d *candidDecoder) checkMethodTypes() error {
	for _, t := range d.types {
		if t.op != candidService {
			continue
		}

		r := candidReader{buf: d.buf, pos: int(t.body)}
		for range t.arg {
			name, err := r.readBlob("method name")
			if err != nil {
				return err
			}
			ref, err := r.readSLEB128("type reference")
			if err != nil {
				return err
			}
			if d.types[ref].op != candidFunc {
				return invalidCandid("method %q of the service at offset %d refers to "+
					"a %s, want func", string(name), t.off, d.typeName(ref))
			}
		}
	}
	return nil
}

// skipFutureType skips the body of a type added to Candid after this
// codec: a byte count and that many bytes.
func (d *candidDecoder) skipFutureType() error {
	n, err := d.readCount("future type length")
	if err != nil {
		return err
	}
	return d.skip(n, "future type")
}

// readArgTypes reads and checks the argument types, of which there must be
// at least one, and returns a reader over them.
func (d *candidDecoder) readArgTypes() (candidReader, error) {
	count, err := d.readCount("argument count")
	if err != nil {
		return candidReader{}, err
	}
	if count == 0 {
		return candidReader{}, invalidCandid("no arguments at offset %d", d.pos)
	}
	if err := d.spendTypes(count); err != nil {
		return candidReader{}, err
	}

	start := d.pos
	for range count {
		if _, err := d.readTypeRef(len(d.types)); err != nil {
			return candidReader{}, err
		}
	}
	return candidReader{buf: d.buf[:d.pos], pos: start}, nil
}

// typeName names type t in errors.
func (d *candidDecoder) typeName(t int64) string {
	if t >= 0 {
		return fmt.Sprintf("%s (type table entry %d)", candidOpName(d.types[t].op), t)
	}
	return candidOpName(int32(t))
}

// candidOpNames holds the Candid name of opcode -1-i at index i.
var candidOpNames = [...]string{"null", "bool", "nat", "int", "nat8", "nat16",
	"nat32", "nat64", "int8", "int16", "int32", "int64", "float32", "float64",
	"text", "reserved", "empty", "opt", "vec", "record", "variant", "func",
	"service", "principal"}

// candidOpName returns the Candid name of an opcode.
func candidOpName(op int32) string {
	if op < 0 && int(-op) <= len(candidOpNames) {
		return candidOpNames[-op-1]
	}
	return "future type"
}

// candidFieldWalker walks the (id, type) pairs of a record or variant entry
// that readTypeTable has already checked.
type candidFieldWalker struct {
	r    candidReader
	left int
}

// fields returns a walker over the fields of record or variant entry t.
func (d *candidDecoder) fields(t int64) candidFieldWalker {
	e := d.types[t]
	return candidFieldWalker{r: candidReader{buf: d.buf, pos: int(e.body)}, left: int(e.arg)}
}

// next returns the next field, or false after the last one. Reading cannot
// fail on a checked entry; if it did, next would end the walk and report
// the error.
func (w *candidFieldWalker) next() (id uint64, t int64, ok bool, err error) {
	if w.left == 0 {
		return 0, 0, false, nil
	}
	w.left--

	if id, err = w.r.readULEB128("field id"); err != nil {
		return 0, 0, false, err
	}
	if t, err = w.r.readSLEB128("field type"); err != nil {
		return 0, 0, false, err
	}
	return id, t, true, nil
}

// readRecord decodes the first argument, of type t, as the record s
// describes: expected fields are decoded at their types, the others are
// skipped, a missing hash is null, a missing msg_id or payload is an error.
func (d *candidDecoder) readRecord(t int64, s *candidShape) (candidFields, error) {
	if t < 0 || d.types[t].op != candidRecord {
		return candidFields{}, invalidCandid("first argument has type %s, want record",
			d.typeName(t))
	}

	var f candidFields
	var sawMsgID, sawPayload bool
	w := d.fields(t)
	for {
		id, ft, ok, err := w.next()
		if err != nil {
			return candidFields{}, err
		}
		if !ok {
			break
		}

		switch {
		case id == candidFieldMsgID:
			f.msgID, err = d.readMsgIDAt(ft)
			sawMsgID = true
		case id == candidFieldHash && s.hasHash:
			f.hash, err = d.readHashAt(ft)
		case id == candidFieldPayload && s.hasPayload:
			f.payloadStart, f.payloadEnd, err = d.readPayloadAt(ft)
			sawPayload = true
		default:
			err = d.skipValue(ft, 1)
		}
		if err != nil {
			return candidFields{}, err
		}
	}

	if err := checkRequiredFields(sawMsgID, sawPayload || !s.hasPayload); err != nil {
		return candidFields{}, err
	}
	return f, nil
}

// checkRequiredFields refuses a record without msg_id or payload: neither
// is optional, so the subtyping rules do not let them be missing.
func checkRequiredFields(msgID, payload bool) error {
	if !msgID {
		return invalidCandid("missing field msg_id")
	}
	if !payload {
		return invalidCandid("missing field payload")
	}
	return nil
}

// readMsgIDAt reads the msg_id field, whose type t must be nat: no other
// type decodes at nat.
func (d *candidDecoder) readMsgIDAt(t int64) (MsgID, error) {
	if t != candidNat {
		return MsgID{}, invalidCandid("field msg_id at offset %d has type %s, want nat",
			d.pos, d.typeName(t))
	}
	return d.readMsgID()
}

// readPayloadAt reads the payload field, whose type t must be vec nat8 or
// vec empty: empty is a subtype of every type, so an empty vec empty is an
// empty blob.
func (d *candidDecoder) readPayloadAt(t int64) (start, end int, err error) {
	if t >= 0 && d.types[t].op == candidVec {
		switch d.types[t].arg {
		case candidNat8:
			return d.readBlobBounds("payload")
		case candidEmpty:
			return d.readEmptyVec("payload")
		}
	}
	return 0, 0, invalidCandid("field payload at offset %d has type %s, want blob",
		d.pos, d.typeName(t))
}

// readEmptyVec reads a vec empty value, which must have no elements, and
// returns where its (no) bytes start and end.
func (d *candidDecoder) readEmptyVec(what string) (start, end int, err error) {
	at := d.pos
	n, err := d.readULEB128(what)
	if err != nil {
		return 0, 0, err
	}

	if n != 0 {
		return 0, 0, invalidCandid("%s at offset %d: %d values of type empty", what, at, n)
	}
	return d.pos, d.pos, nil
}

// readHashAt reads the hash field, of expected type opt nat32, at its
// wire type t. Following the Candid rules for opt: nat32 gives its value;
// null and reserved give null; opt nat32 gives its value or null; any
// other opt gives null; any other type gives null once its value has been
// skipped.
func (d *candidDecoder) readHashAt(t int64) (Hash, error) {
	switch {
	case t == candidNat32:
		v, err := d.readNat32("hash")
		return Hash{Value: v, Valid: err == nil}, err
	case t == candidNull || t == candidReserved:
		return Hash{}, nil
	case t >= 0 && d.types[t].op == candidOpt:
		return d.readOptHash(int64(d.types[t].arg))
	}
	return Hash{}, d.skipValue(t, 1)
}

// readOptHash reads an opt value whose element type is elem as a hash.
func (d *candidDecoder) readOptHash(elem int64) (Hash, error) {
	if elem == candidNat32 {
		return d.readOptNat32()
	}

	tag, err := d.readByte("hash")
	if err != nil {
		return Hash{}, err
	}
	switch tag {
	case 0:
		return Hash{}, nil
	case 1:
		return Hash{}, d.skipValue(elem, 2)
	}
	return Hash{}, invalidCandid("hash: opt tag %d at offset %d, want 0 or 1", tag, d.pos-1)
}

// spend charges n units of work and refuses the message when the budget
// for its length is spent.
func (d *candidDecoder) spend(n int) error {
	*d.work -= int64(n)
	if *d.work < 0 {
		return d.overBudget()
	}
	return nil
}

// spendTypes charges for n items of the type table or the argument list:
// each is read, checked and later walked again, at about twice the cost
// of skipping a value.
func (d *candidDecoder) spendTypes(n int) error {
	return d.spend(candidTypeWork * n)
}

// overBudget returns the error of a message that spent its work budget.
func (d *candidDecoder) overBudget() error {
	return invalidCandid("decoding up to offset %d costs more than the %d units "+
		"of work allowed for %d bytes", d.pos, candidWorkBudget(len(d.buf)), len(d.buf))
}

// skipValue checks and skips a value of type t nested depth constructors
// deep, for one unit of work. It allocates nothing unless it fails.
func (d *candidDecoder) skipValue(t int64, depth int) error {
	if err := d.spend(1); err != nil {
		return err
	}
	if t < 0 {
		return d.skipPrimitive(t)
	}
	if depth > candidMaxDepth {
		return invalidCandid("value at offset %d nests more than %d types deep", d.pos,
			candidMaxDepth)
	}

	e := d.types[t]
	switch e.op {
	case candidOpt:
		return d.skipOpt(int64(e.arg), depth)
	case candidVec:
		return d.skipVec(int64(e.arg), depth)
	case candidRecord:
		return d.skipRecord(t, depth)
	case candidVariant:
		return d.skipVariant(t, depth)
	case candidFunc:
		return d.skipFuncRef()
	case candidService:
		return d.skipReference("service")
	}
	return d.skipFutureValue()
}

// candidFixedSize returns the size of a primitive type whose values all
// take the same number of bytes and need no check, and false for others.
func candidFixedSize(t int64) (int, bool) {
	switch t {
	case candidNull, candidReserved:
		return 0, true
	case candidNat8, candidInt8:
		return 1, true
	case candidNat16, candidInt16:
		return 2, true
	case candidNat32, candidInt32, candidFloat32:
		return 4, true
	case candidNat64, candidInt64, candidFloat64:
		return 8, true
	}
	return 0, false
}

// skipPrimitive checks and skips a value of primitive type t.
func (d *candidDecoder) skipPrimitive(t int64) error {
	if size, ok := candidFixedSize(t); ok {
		return d.skip(size, candidOpName(int32(t)))
	}

	switch t {
	case candidBool:
		return d.skipBool()
	case candidNat, candidInt:
		return d.skipLEB128(candidOpName(int32(t)))
	case candidText:
		return d.skipText("text")
	case candidPrincipal:
		return d.skipReference("principal")
	}
	return invalidCandid("value of type empty at offset %d", d.pos)
}

// skipBools checks and skips n bool values.
func (d *candidDecoder) skipBools(n int) error {
	if n > d.left() {
		return invalidCandid("truncated bool at offset %d: %d values, %d bytes left",
			d.pos, n, d.left())
	}

	end := d.pos + n
	for d.pos+8 <= end && binary.LittleEndian.Uint64(d.buf[d.pos:])&^lowBits == 0 {
		d.pos += 8
	}
	for ; d.pos < end; d.pos++ {
		if b := d.buf[d.pos]; b > 1 {
			return invalidCandid("bool %d at offset %d, want 0 or 1", b, d.pos)
		}
	}
	return nil
}

// lowBits has the low bit of each of eight bytes set.
const lowBits = 0x0101010101010101

// skipBool checks and skips a bool: the byte 0 or 1.
func (d *candidDecoder) skipBool() error {
	b, err := d.readByte("bool")
	if err != nil {
		return err
	}
	if b > 1 {
		return invalidCandid("bool %d at offset %d, want 0 or 1", b, d.pos-1)
	}
	return nil
}

// skipText checks and skips a text value, which must be UTF-8.
func (d *candidDecoder) skipText(what string) error {
	start := d.pos
	s, err := d.readBlob(what)
	if err != nil {
		return err
	}
	if !utf8.Valid(s) {
		return invalidCandid("%s at offset %d is not utf-8", what, start)
	}
	return nil
}

// skipReference skips a principal or service reference: 0 for an opaque
// reference, or 1 and the id as a blob.
func (d *candidDecoder) skipReference(what string) error {
	flag, err := d.readByte(what)
	if err != nil {
		return err
	}

	switch flag {
	case 0:
		return nil
	case 1:
		_, err := d.readBlob(what)
		return err
	}
	return invalidCandid("%s flag %d at offset %d, want 0 or 1", what, flag, d.pos-1)
}

// skipFuncRef skips a func reference: 0 for an opaque reference, or 1, a
// service reference and a method name.
func (d *candidDecoder) skipFuncRef() error {
	flag, err := d.readByte("func")
	if err != nil {
		return err
	}

	switch flag {
	case 0:
		return nil
	case 1:
		if err := d.skipReference("service"); err != nil {
			return err
		}
		return d.skipText("method name")
	}
	return invalidCandid("func flag %d at offset %d, want 0 or 1", flag, d.pos-1)
}

// skipFutureValue skips a value of a future type: a byte count, a
// reference count, and that many bytes (references travel elsewhere).
func (d *candidDecoder) skipFutureValue() error {
	n, err := d.readCount("future value length")
	if err != nil {
		return err
	}
	if _, err := d.readULEB128("future value references"); err != nil {
		return err
	}
	return d.skip(n, "future value")
}

// skipOpt checks and skips an opt value whose element type is elem.
func (d *candidDecoder) skipOpt(elem int64, depth int) error {
	tag, err := d.readByte("opt")
	if err != nil {
		return err
	}

	switch tag {
	case 0:
		return nil
	case 1:
		return d.skipValue(elem, depth+1)
	}
	return invalidCandid("opt tag %d at offset %d, want 0 or 1", tag, d.pos-1)
}

// skipVec checks and skips a vec value whose element type is elem.
// Zero-sized elements are skipped in no step, whatever the count; fixed-
// size ones in one; nat, int and bool in one tight loop over their bytes;
// others one by one, for a unit of work each. Apart from zero-sized
// elements, the count cannot exceed the bytes left, since each element
// takes at least one byte.
func (d *candidDecoder) skipVec(elem int64, depth int) error {
	start := d.pos
	n, err := d.readULEB128("vec length")
	if err != nil {
		return err
	}

	size, fixed := candidFixedSize(elem)
	if size == 0 && (fixed || d.zeroSized(elem, 0)) {
		return nil
	}
	if fixed {
		if n > uint64(d.left()/size) {
			return invalidCandid("vec length %d at offset %d exceeds the %d bytes left",
				n, start, d.left())
		}
		d.pos += int(n) * size
		return nil
	}

	if n > uint64(d.left()) {
		return invalidCandid("vec length %d at offset %d exceeds the %d bytes left",
			n, start, d.left())
	}
	switch elem {
	case candidNat, candidInt:
		return d.skipLEB128s(int(n), candidOpName(int32(elem)))
	case candidBool:
		return d.skipBools(int(n))
	}
	for range n {
		if err := d.skipValue(elem, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// skipRecord checks and skips a value of record type t, field by field
// unless its values take no bytes at all. Each field, null ones too, costs
// a unit of work.
func (d *candidDecoder) skipRecord(t int64, depth int) error {
	if d.zeroSized(t, 0) {
		return nil
	}

	for _, ft := range d.fieldTypesOf(t) {
		if err := d.skipValue(int64(ft), depth+1); err != nil {
			return err
		}
	}
	return nil
}

// fieldTypesOf returns the field types of record or variant entry t.
func (d *candidDecoder) fieldTypesOf(t int64) []int32 {
	e := &d.types[t]
	return d.fieldTypes[e.first : e.first+e.arg]
}

// skipVariant checks and skips a value of variant type t: the index of
// its case, then a value of that case's type.
func (d *candidDecoder) skipVariant(t int64, depth int) error {
	start := d.pos
	i, err := d.readULEB128("variant index")
	if err != nil {
		return err
	}

	arms := d.fieldTypesOf(t)
	if i >= uint64(len(arms)) {
		return invalidCandid("variant index %d at offset %d, want less than %d", i,
			start, len(arms))
	}
	return d.skipValue(int64(arms[i]), depth+1)
}

// zeroSized reports whether every value of type t takes no bytes: null,
// reserved, and records of such fields. It remembers its answer for each
// record, so the whole table costs one walk. A record that contains
// itself through records only has no values; it, and any record nested
// deeper than candidMaxDepth, counts as not zero-sized. That is safe: such
// values are skipped field by field, within the depth limit and the work
// budget, and fail if they do not exist.
func (d *candidDecoder) zeroSized(t int64, depth int) bool {
	if t < 0 {
		return t == candidNull || t == candidReserved
	}
	e := &d.types[t]
	if e.op != candidRecord {
		return false
	}

	switch e.zero {
	case zeroYes:
		return true
	case zeroNo, zeroVisiting:
		return false
	}
	if depth > candidMaxDepth {
		return false
	}

	e.zero = zeroVisiting
	zero := true
	for _, ft := range d.fieldTypesOf(t) {
		if zero = d.zeroSized(int64(ft), depth+1); !zero {
			break
		}
	}

	e.zero = zeroNo
	if zero {
		e.zero = zeroYes
	}
	return zero
}
