package asyncflow

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
)

// MsgID identifies one message. It is a ULID: its first 48 bits are the
// creation time in Unix milliseconds and the rest is random, increasing
// monotonically within a process while its clock does not step back. On
// the wire it travels as a Candid nat, the 128-bit unsigned integer formed
// by its bytes, most significant first.
type MsgID ulid.ULID

// maxMsgID is 2^128: a nat at or above it cannot be a MsgID.
var maxMsgID = new(big.Int).Lsh(big.NewInt(1), 128)

var (
	entropyMu sync.Mutex
	entropy   = ulid.Monotonic(rand.Reader, 0)
)

// NewMsgID returns an id for a message created at t. Ids made by one
// process for non-decreasing times are strictly increasing, even within
// one millisecond. It is safe for concurrent use.
func NewMsgID(t time.Time) (MsgID, error) {
	entropyMu.Lock()
	defer entropyMu.Unlock()

	id, err := ulid.New(ulid.Timestamp(t), entropy)
	if err != nil {
		return MsgID{}, fmt.Errorf("asyncflow: new message id: %w", err)
	}
	return MsgID(id), nil
}

// ParseMsgID reads a message id from its ULID text (26 characters of
// Crockford base32) or from its decimal Nat form.
func ParseMsgID(s string) (MsgID, error) {
	if len(s) == ulid.EncodedSize {
		id, err := ulid.ParseStrict(s)
		if err == nil {
			return MsgID(id), nil
		}
	}
	n, ok := new(big.Int).SetString(s, 10)
	if !ok {
		return MsgID{}, fmt.Errorf("%w: %q is neither a ULID nor a decimal nat",
			ErrInvalidMsgID, s)
	}
	return MsgIDFromNat(n)
}

// MsgIDFromNat converts a Candid nat to a message id. It refuses negative
// numbers and numbers of more than 128 bits.
func MsgIDFromNat(n *big.Int) (MsgID, error) {
	switch {
	case n.Sign() < 0:
		return MsgID{}, fmt.Errorf("%w: %s is negative, and a msg_id is a nat",
			ErrInvalidMsgID, n)
	case n.Cmp(maxMsgID) >= 0:
		return MsgID{}, fmt.Errorf("%w: %s does not fit in 128 bits", ErrInvalidMsgID, n)
	}
	var id MsgID
	n.FillBytes(id[:])
	return id, nil
}

// Nat returns the id as the unsigned integer that travels on the wire.
func (id MsgID) Nat() *big.Int {
	return new(big.Int).SetBytes(id[:])
}

// String returns the ULID text form of the id.
func (id MsgID) String() string {
	return ulid.ULID(id).String()
}

// Decimal returns the id's Nat in decimal, the form the CLI prints.
func (id MsgID) Decimal() string {
	return id.Nat().String()
}

// Time returns the creation time held in the id's first 48 bits.
func (id MsgID) Time() time.Time {
	return ulid.Time(ulid.ULID(id).Time())
}

// Compare orders ids by their bytes, which is creation order for ids made
// by one process.
func (id MsgID) Compare(other MsgID) int {
	return ulid.ULID(id).Compare(ulid.ULID(other))
}
