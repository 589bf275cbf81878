package asyncflow

import (
	"fmt"
	"strings"
)

// The three methods of the asyncflow service (see asyncflow.did).
const (
	// MethodNewMessage runs on the receiver: process a new message.
	MethodNewMessage = "com_asyncFlow_newMessage"
	// MethodAck runs on the sender: the receiver confirms, with its answer.
	MethodAck = "com_asyncFlow_ack"
	// MethodAckAck runs on the receiver: the sender confirms it got the ack.
	MethodAckAck = "com_asyncFlow_ackack"
)

const methodPrefix = "com_asyncFlow_"

// NewMessage is the argument of com_asyncFlow_newMessage:
// record { msg_id : nat; payload : blob }.
type NewMessage struct {
	// MsgID is the message's id.
	MsgID MsgID
	// Payload is the message: opaque bytes, by convention Candid.
	Payload []byte
}

// Ack is the argument of com_asyncFlow_ack:
// record { msg_id : nat; hash : opt nat32; payload : blob }.
// Hash is the CRC-32 of the payload the receiver got; Payload is the
// receiver's answer.
type Ack struct {
	// MsgID is the id of the message acknowledged.
	MsgID MsgID
	// Hash is the CRC-32 of the payload the receiver got.
	Hash Hash
	// Payload is the receiver's answer.
	Payload []byte
}

// AckAck is the argument of com_asyncFlow_ackack:
// record { msg_id : nat; hash : opt nat32 }.
// Hash is the CRC-32 of the ack payload the sender got.
type AckAck struct {
	// MsgID is the id of the message whose ack is confirmed.
	MsgID MsgID
	// Hash is the CRC-32 of the ack payload the sender got.
	Hash Hash
}

// IsMethod reports whether method is the full name of one of the three
// methods.
func IsMethod(method string) bool {
	switch method {
	case MethodNewMessage, MethodAck, MethodAckAck:
		return true
	}
	return false
}

// ParseMethod returns the full method name for name, which may be the full
// name or its short form ("newMessage", "ack", "ackack").
func ParseMethod(name string) (string, error) {
	full := name
	if !strings.HasPrefix(full, methodPrefix) {
		full = methodPrefix + name
	}
	if IsMethod(full) {
		return full, nil
	}
	return "", fmt.Errorf("%w: %q (the methods are newMessage, ack and ackack)",
		ErrUnknownMethod, name)
}

// ShortMethod returns the method name without its "com_asyncFlow_" prefix.
func ShortMethod(method string) string {
	return strings.TrimPrefix(method, methodPrefix)
}
