package asyncflow

import (
	"time"

	"github.com/aviate-labs/agent-go/principal"
)

// Delivery is what the ack callback receives once a target confirmed a
// message whose hash matched (or was absent).
type Delivery struct {
	// To is the principal the message was sent to.
	To principal.Principal
	// MsgID is the message's id.
	MsgID MsgID
	// Sent is the payload that was sent.
	Sent []byte
	// Received is the ack payload: the receiver's answer.
	Received []byte
	// Hash is the hash the ack carried; not Valid if the receiver did not
	// check.
	Hash Hash
}

// Side says which end of an exchange detected a corruption.
type Side string

const (
	// SideSender: an ack's hash did not match the payload that was sent.
	SideSender Side = "sender"
	// SideReceiver: an ackack's hash did not match the ack that was sent.
	SideReceiver Side = "receiver"
)

// Corruption describes a hash mismatch: the peer got bytes other than the
// ones this side sent. It carries everything known about the exchange so
// the corruption handler can act.
type Corruption struct {
	// Side is the end that detected it: this Flow's role in the exchange.
	Side Side
	// Peer is the other principal of the exchange.
	Peer principal.Principal
	// MsgID is the message's id.
	MsgID MsgID
	// Sent is what this side sent: the message payload on the sender side,
	// the ack payload on the receiver side.
	Sent []byte
	// Received is the ack payload the sender got (sender side only).
	Received []byte
	// Expected is the CRC-32 of Sent.
	Expected Hash
	// Got is the hash the peer reported.
	Got Hash
}

// Rejection describes a refused submission or message: nothing was
// recorded or changed because of it.
type Rejection struct {
	// From is the caller, or empty when it is not known (for example when
	// the signature did not verify).
	From principal.Principal
	// MsgID is the message's id; valid only when HasMsgID is set.
	MsgID MsgID
	// HasMsgID says whether the refused call's argument decoded far enough
	// to know the id.
	HasMsgID bool
	// Method is the called method, when known.
	Method string
	// Reason is a one-line explanation.
	Reason string
}

// GiveUp describes a message the sender stopped resending because no ack
// came. The receiver may have processed it all the same.
type GiveUp struct {
	// To is the principal the message was sent to.
	To principal.Principal
	// MsgID is the message's id.
	MsgID MsgID
	// Payload is the payload that was sent.
	Payload []byte
	// Attempts is how many times the message was sent.
	Attempts uint32
	// FirstSent is when CallAsync stored the message: the time in its id,
	// to the millisecond.
	FirstSent time.Time
	// Reason says which limit was reached.
	Reason GiveUpReason
}

// GiveUpReason says why the sender gave up on a message.
type GiveUpReason uint8

const (
	// GiveUpTooOld: Config.GiveUpAfter passed since the message's id time.
	GiveUpTooOld GiveUpReason = iota + 1
	// GiveUpTooManyAttempts: the message was sent Config.MaxAttempts
	// times, and RetryAfter passed since the last send.
	GiveUpTooManyAttempts
)

// String names the reason.
func (r GiveUpReason) String() string {
	switch r {
	case GiveUpTooOld:
		return "too-old"
	case GiveUpTooManyAttempts:
		return "too-many-attempts"
	}
	return "unknown"
}
