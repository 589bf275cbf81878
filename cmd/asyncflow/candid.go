package main

import (
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/asyncflow/asyncflow"
)

// candidCmd runs "asyncflow candid encode|decode".
func candidCmd(args []string, ev *events, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("candid: say encode or decode")
	}
	if isHelp(args[0]) {
		fmt.Fprintln(stderr, "usage: asyncflow candid encode|decode [flags]; "+
			"asyncflow candid encode -h for the flags")
		return flag.ErrHelp
	}
	switch args[0] {
	case "encode":
		return candidEncode(args[1:], ev, stderr)
	case "decode":
		return candidDecode(args[1:], ev, stderr)
	}
	return usagef("candid: unknown subcommand %q (encode or decode)", args[0])
}

// candidValue is a decoded argument; fields a method lacks are omitted.
type candidValue struct {
	MsgID   string          `json:"msg_id"`
	Payload *string         `json:"payload,omitempty"`
	Hash    *asyncflow.Hash `json:"hash,omitempty"`
}

func candidDecode(args []string, ev *events, stderr io.Writer) error {
	fs := newFlags("candid decode", stderr)
	method := fs.String("method", "", "newMessage, ack or ackack (required)")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	if *method == "" {
		return usagef("candid decode: --method is required: newMessage, ack or ackack")
	}
	full, err := asyncflow.ParseMethod(*method)
	if err != nil {
		return usagef("candid decode: --method: %v", err)
	}
	if fs.NArg() != 1 {
		return usagef("candid decode: give the argument as one hex string")
	}
	arg, err := hex.DecodeString(strings.TrimSpace(fs.Arg(0)))
	if err != nil {
		return usagef("candid decode: the argument is not hex: %v", err)
	}

	v, err := decodeArg(full, arg)
	if err != nil {
		return fmt.Errorf("candid decode: %w", err)
	}
	ev.emit(v)
	return nil
}

func decodeArg(method string, arg []byte) (candidValue, error) {
	var v candidValue
	payload := func(p []byte) *string { s := hex.EncodeToString(p); return &s }
	switch method {
	case asyncflow.MethodNewMessage:
		var m asyncflow.NewMessage
		if err := m.UnmarshalCandid(arg); err != nil {
			return v, err
		}
		v.MsgID, v.Payload = m.MsgID.Decimal(), payload(m.Payload)
	case asyncflow.MethodAck:
		var m asyncflow.Ack
		if err := m.UnmarshalCandid(arg); err != nil {
			return v, err
		}
		v.MsgID, v.Payload, v.Hash = m.MsgID.Decimal(), payload(m.Payload), &m.Hash
	case asyncflow.MethodAckAck:
		var m asyncflow.AckAck
		if err := m.UnmarshalCandid(arg); err != nil {
			return v, err
		}
		v.MsgID, v.Hash = m.MsgID.Decimal(), &m.Hash
	}
	return v, nil
}

func candidEncode(args []string, ev *events, stderr io.Writer) error {
	fs := newFlags("candid encode", stderr)
	method := fs.String("method", "", "newMessage, ack or ackack (required)")
	msgID := fs.String("msg-id", "", "message id: decimal nat or ULID text (required)")
	hash := fs.String("hash", "null", "hash: a nat32, or null (ack and ackack)")
	payloadHex := fs.String("payload-hex", "", "payload as hex (newMessage and ack)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}

	if *method == "" {
		return usagef("candid encode: --method is required: newMessage, ack or ackack")
	}
	full, err := asyncflow.ParseMethod(*method)
	if err != nil {
		return usagef("candid encode: --method: %v", err)
	}
	if *msgID == "" {
		return usagef("candid encode: --msg-id is required")
	}
	id, err := asyncflow.ParseMsgID(*msgID)
	if err != nil {
		return usagef("candid encode: --msg-id: %v", oneLine(err))
	}
	h, err := parseHash(*hash)
	if err != nil {
		return err
	}
	payload, err := hex.DecodeString(*payloadHex)
	if err != nil {
		return usagef("candid encode: --payload-hex is not hex: %v", err)
	}
	if err := checkFlagsFit(fs, full); err != nil {
		return err
	}

	var arg []byte
	switch full {
	case asyncflow.MethodNewMessage:
		arg = asyncflow.NewMessage{MsgID: id, Payload: payload}.AppendCandid(nil)
	case asyncflow.MethodAck:
		arg = asyncflow.Ack{MsgID: id, Hash: h, Payload: payload}.AppendCandid(nil)
	case asyncflow.MethodAckAck:
		arg = asyncflow.AckAck{MsgID: id, Hash: h}.AppendCandid(nil)
	}
	ev.line(hex.EncodeToString(arg))
	return nil
}

// checkFlagsFit refuses flags the method's record has no field for.
func checkFlagsFit(fs *flag.FlagSet, method string) error {
	var bad string
	fs.Visit(func(f *flag.Flag) {
		switch {
		case f.Name == "hash" && method == asyncflow.MethodNewMessage,
			f.Name == "payload-hex" && method == asyncflow.MethodAckAck:
			bad = f.Name
		}
	})
	if bad != "" {
		return usagef("candid encode: %s has no field for --%s", asyncflow.ShortMethod(method), bad)
	}
	return nil
}

func parseHash(s string) (asyncflow.Hash, error) {
	if s == "null" || s == "" {
		return asyncflow.Hash{}, nil
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return asyncflow.Hash{}, usagef("--hash %q is neither a nat32 nor null", s)
	}
	return asyncflow.SomeHash(uint32(v)), nil
}
