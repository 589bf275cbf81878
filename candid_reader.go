package asyncflow

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// The byte-level reading of the Candid binary format, shared by the fast
// path and the general decoder: LEB128 numbers, bounds, and the primitive
// values the three records hold.

// candidReader reads the binary format from buf, starting at pos. Every
// method checks bounds and reports the offset of what it could not read.
type candidReader struct {
	buf []byte
	pos int
}

// invalidCandid returns an error that wraps ErrInvalidCandid.
func invalidCandid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidCandid}, args...)...)
}

// left returns how many bytes follow the read position.
func (r *candidReader) left() int {
	return len(r.buf) - r.pos
}

// readByte reads one byte; what names it in the error.
func (r *candidReader) readByte(what string) (byte, error) {
	if r.pos >= len(r.buf) {
		return 0, invalidCandid("truncated %s at offset %d", what, r.pos)
	}
	b := r.buf[r.pos]
	r.pos++
	return b, nil
}

// skip advances over n bytes; what names them in the error.
func (r *candidReader) skip(n int, what string) error {
	if n > r.left() {
		return invalidCandid("truncated %s at offset %d: %d bytes, %d left",
			what, r.pos, n, r.left())
	}
	r.pos += n
	return nil
}

// expectEnd reports an error unless every byte has been read.
func (r *candidReader) expectEnd() error {
	if r.pos != len(r.buf) {
		return invalidCandid("%d bytes of trailing garbage at offset %d", r.left(), r.pos)
	}
	return nil
}

// readULEB128 reads an unsigned LEB128 number that fits in 64 bits.
// Overlong encodings are valid Candid and accepted; each byte is read once,
// so a long run of continuation bytes costs its length and no more.
func (r *candidReader) readULEB128(what string) (uint64, error) {
	if r.pos < len(r.buf) && r.buf[r.pos] < 0x80 {
		r.pos++
		return uint64(r.buf[r.pos-1]), nil
	}
	return r.readULEB128Slow(what)
}

// readULEB128Slow is readULEB128 for numbers of more than one byte. It
// takes their first eight bytes in one load, and the rest one by one.
func (r *candidReader) readULEB128Slow(what string) (uint64, error) {
	start := r.pos
	var v uint64
	shift := uint(0)

	if r.pos+8 <= len(r.buf) {
		w := binary.LittleEndian.Uint64(r.buf[r.pos:])
		if ends := ^w & highBits; ends != 0 {
			n := bits.TrailingZeros64(ends)/8 + 1
			r.pos += n
			return lebGroups(w, n), nil
		}
		v, shift = lebGroups(w, 8), 56
		r.pos += 8
	}

	for ; r.pos < len(r.buf); shift = min(shift+7, 70) {
		if shift == 70 {
			r.skipRun(0x80) // past bit 63 only padding can follow
			if r.pos == len(r.buf) {
				break
			}
		}
		b := r.buf[r.pos]
		r.pos++

		low := uint64(b & 0x7f)
		if shift > 56 && low != 0 && (shift > 63 || low > 1) {
			return 0, invalidCandid("%s at offset %d exceeds 64 bits", what, start)
		}
		v |= low << shift // a shift of 64 or more adds nothing

		if b < 0x80 {
			return v, nil
		}
	}
	return 0, invalidCandid("truncated %s at offset %d", what, start)
}

// lebGroups returns the number that the 7-bit groups of the first n bytes
// of w form, least significant first: at most 56 bits.
func lebGroups(w uint64, n int) uint64 {
	w &= ^uint64(0) >> (64 - 8*n) &^ highBits
	w = w&0x007f007f007f007f | w&0x7f007f007f007f00>>1
	w = w&0x00003fff00003fff | w&0x3fff00003fff0000>>2
	return w&0x000000000fffffff | w&0x0fffffff00000000>>4
}

// readSLEB128 reads a signed LEB128 number that fits in 64 bits. Overlong
// encodings are accepted: bytes past bit 63 must repeat the sign.
func (r *candidReader) readSLEB128(what string) (int64, error) {
	if r.pos < len(r.buf) && r.buf[r.pos] < 0x80 {
		r.pos++
		return int64(int8(r.buf[r.pos-1]<<1) >> 1), nil
	}
	return r.readSLEB128Slow(what)
}

// readSLEB128Slow is readSLEB128 for numbers of more than one byte.
func (r *candidReader) readSLEB128Slow(what string) (int64, error) {
	start := r.pos
	var v uint64
	ext := -1 // the sign extension seen past bit 63: -1 none, 0 or 0x7f

	for shift := uint(0); r.pos < len(r.buf); shift = min(shift+7, 70) {
		if shift == 70 && ext >= 0 {
			r.skipRun(0x80 | byte(ext)) // past bit 63 only padding can follow
			if r.pos == len(r.buf) {
				break
			}
		}
		b := r.buf[r.pos]
		r.pos++

		low := b & 0x7f
		switch {
		case shift < 63:
			v |= uint64(low) << shift
		case (low != 0 && low != 0x7f) || (ext >= 0 && int(low) != ext):
			return 0, invalidCandid("%s at offset %d exceeds 64 bits", what, start)
		default:
			ext = int(low)
		}

		if b < 0x80 {
			if b&0x40 != 0 && shift < 57 {
				v |= ^uint64(0) << (shift + 7)
			}
			if ext == 0x7f {
				v |= 1 << 63
			}
			return int64(v), nil
		}
	}
	return 0, invalidCandid("truncated %s at offset %d", what, start)
}

// readCount reads a LEB128 count of items that each take at least one
// byte, so a count above the bytes left cannot be valid.
func (r *candidReader) readCount(what string) (int, error) {
	start := r.pos
	n, err := r.readULEB128(what)
	if err != nil {
		return 0, err
	}

	if n > uint64(r.left()) {
		return 0, invalidCandid("%s %d at offset %d exceeds the %d bytes left",
			what, n, start, r.left())
	}
	return int(n), nil
}

// skipLEB128 skips a nat or int value of any size.
func (r *candidReader) skipLEB128(what string) error {
	return r.skipLEB128s(1, what)
}

// skipLEB128s skips n nat or int values of any size: each ends at its
// first byte below 0x80. It counts those bytes eight at a time while more
// than n remain to be found.
func (r *candidReader) skipLEB128s(n int, what string) error {
	i := r.pos
	for ; i+8 <= len(r.buf); i += 8 {
		ends := bits.OnesCount64(^binary.LittleEndian.Uint64(r.buf[i:]) & highBits)
		if ends >= n {
			break
		}
		n -= ends
	}
	for ; n > 0 && i < len(r.buf); i++ {
		if r.buf[i] < 0x80 {
			n--
		}
	}

	if n > 0 {
		return invalidCandid("truncated %s at offset %d", what, r.pos)
	}
	r.pos = i
	return nil
}

// highBits has the high bit of each of eight bytes set.
const highBits = 0x8080808080808080

// skipRun advances over a run of the byte b, the padding that an overlong
// LEB128 number may carry, eight bytes at a time.
func (r *candidReader) skipRun(b byte) {
	i := r.pos
	word := uint64(b) * lowBits
	for i+8 <= len(r.buf) && binary.LittleEndian.Uint64(r.buf[i:]) == word {
		i += 8
	}
	for i < len(r.buf) && r.buf[i] == b {
		i++
	}
	r.pos = i
}

// readMsgID reads msg_id: a LEB128 nat of at most 128 bits, overlong
// encodings included. A larger nat is refused with ErrInvalidMsgID as soon
// as its first bit past 128 is read.
func (r *candidReader) readMsgID() (MsgID, error) {
	start := r.pos
	var hi, lo uint64

	for shift := uint(0); r.pos < len(r.buf); shift = min(shift+7, 140) {
		if shift == 140 {
			r.skipRun(0x80) // past bit 127 only padding can follow
			if r.pos == len(r.buf) {
				break
			}
		}
		b := r.buf[r.pos]
		r.pos++

		if !addNat128Group(&hi, &lo, uint64(b&0x7f), shift) {
			return MsgID{}, fmt.Errorf("%w: msg_id at offset %d has more than 128 bits",
				ErrInvalidMsgID, start)
		}

		if b < 0x80 {
			var id MsgID
			binary.BigEndian.PutUint64(id[:8], hi)
			binary.BigEndian.PutUint64(id[8:], lo)
			return id, nil
		}
	}
	return MsgID{}, invalidCandid("truncated msg_id at offset %d", start)
}

// addNat128Group adds the 7-bit group g at bit shift to the 128-bit number
// hi:lo. It reports false if g has a set bit at or above bit 128.
func addNat128Group(hi, lo *uint64, g uint64, shift uint) bool {
	switch {
	case shift < 64:
		*lo |= g << shift
		if shift > 57 {
			*hi |= g >> (64 - shift)
		}
		return true
	case shift < 128:
		*hi |= g << (shift - 64)
		return shift <= 121 || g>>(128-shift) == 0
	default:
		return g == 0
	}
}

// readNat32 reads a little-endian nat32 value.
func (r *candidReader) readNat32(what string) (uint32, error) {
	if r.left() < 4 {
		return 0, invalidCandid("truncated %s at offset %d", what, r.pos)
	}
	v := binary.LittleEndian.Uint32(r.buf[r.pos:])
	r.pos += 4
	return v, nil
}

// readOptNat32 reads an opt nat32 value as a hash.
func (r *candidReader) readOptNat32() (Hash, error) {
	tag, err := r.readByte("hash")
	if err != nil {
		return Hash{}, err
	}

	switch tag {
	case 0:
		return Hash{}, nil
	case 1:
		v, err := r.readNat32("hash")
		return Hash{Value: v, Valid: err == nil}, err
	}
	return Hash{}, invalidCandid("hash: opt tag %d at offset %d, want 0 or 1", tag, r.pos-1)
}

// readBlob reads a vec nat8 value. The result aliases r's buffer.
func (r *candidReader) readBlob(what string) ([]byte, error) {
	start, end, err := r.readBlobBounds(what)
	if err != nil {
		return nil, err
	}
	return r.buf[start:end], nil
}

// readBlobBounds reads a vec nat8 value and returns where its bytes start
// and end in r's buffer.
func (r *candidReader) readBlobBounds(what string) (start, end int, err error) {
	at := r.pos
	n, err := r.readULEB128(what)
	if err != nil {
		return 0, 0, err
	}

	if n > uint64(r.left()) {
		return 0, 0, invalidCandid("truncated %s at offset %d: length %d, %d bytes left",
			what, at, n, r.left())
	}
	start = r.pos
	r.pos += int(n)
	return start, r.pos, nil
}
