package main

import (
	"encoding/hex"
	"encoding/json"
	"io"
	"sync"

	"github.com/asyncflow/asyncflow"
)

// events writes standard output: event lines, one JSON object per line,
// each written with one Write so that concurrent events never interleave;
// or the one plain result line of a utility command.
type events struct {
	mu sync.Mutex
	w  io.Writer
}

func newEvents(w io.Writer) *events {
	return &events{w: w}
}

// emit writes v as one line.
func (e *events) emit(v any) {
	line, err := json.Marshal(v)
	if err != nil {
		panic(err) // the event types below always marshal
	}
	e.write(append(line, '\n'))
}

// line writes one plain line: the single result of a utility command.
func (e *events) line(s string) {
	e.write([]byte(s + "\n"))
}

func (e *events) write(b []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()

	_, _ = e.w.Write(b)
}

type processedEvent struct {
	Event   string `json:"event"`
	From    string `json:"from"`
	MsgID   string `json:"msg_id"`
	Payload string `json:"payload"`
}

func (e *events) processed(p asyncflow.Processed) {
	e.emit(processedEvent{"processed", p.From.String(), p.MsgID.Decimal(),
		hex.EncodeToString(p.Payload)})
}

type deliveredEvent struct {
	Event    string         `json:"event"`
	To       string         `json:"to"`
	MsgID    string         `json:"msg_id"`
	Sent     string         `json:"sent"`
	Received string         `json:"received"`
	Hash     asyncflow.Hash `json:"hash"`
}

func (e *events) delivered(d asyncflow.Delivery) {
	e.emit(deliveredEvent{"delivered", d.To.String(), d.MsgID.Decimal(),
		hex.EncodeToString(d.Sent), hex.EncodeToString(d.Received), d.Hash})
}

type corruptEvent struct {
	Event    string         `json:"event"`
	Peer     string         `json:"peer"`
	MsgID    string         `json:"msg_id"`
	Side     string         `json:"side"`
	Expected asyncflow.Hash `json:"expected"`
	Got      asyncflow.Hash `json:"got"`
}

func (e *events) corrupt(c asyncflow.Corruption) {
	e.emit(corruptEvent{"corrupt", c.Peer.String(), c.MsgID.Decimal(), string(c.Side),
		c.Expected, c.Got})
}

type rejectedEvent struct {
	Event  string  `json:"event"`
	From   *string `json:"from"`
	MsgID  *string `json:"msg_id"`
	Reason string  `json:"reason"`
}

func (e *events) rejected(r asyncflow.Rejection) {
	ev := rejectedEvent{Event: "rejected", Reason: r.Reason}
	if len(r.From.Raw) > 0 {
		from := r.From.String()
		ev.From = &from
	}
	if r.HasMsgID {
		id := r.MsgID.Decimal()
		ev.MsgID = &id
	}
	e.emit(ev)
}
