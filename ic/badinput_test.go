package ic

// The bad-input table: what a Flow behind an Endpoint does with each kind
// of hostile or mistaken submission. Every row posts over real HTTP to a
// real Flow on a MemoryStore and checks the answer, that the store and
// the handler were left alone (or, where the protocol answers, what it
// did), and every line logged. The README's table is rendered from these
// rows into testdata/badinput.md; run the tests with -update to refresh it.

import (
	"bytes"
	"cmp"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/asyncflow/asyncflow"
	agent "github.com/aviate-labs/agent-go"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
	"github.com/stretchr/testify/require"
)

// logLine is one expected log record: its level, its message and its
// attributes, each holding the given text. A record has no other
// attributes than those listed (besides time, level and msg).
type logLine struct {
	level string
	msg   string
	attrs []logAttr
}

// logAttr is an attribute of an expected record. has is a fragment of its
// value, or a fixture principal ("$peer"), which the value must equal.
type logAttr struct{ key, has string }

// endpointRefused is the endpoint's line for a submission it refused
// before the signature verified.
func endpointRefused(status int, reason string) logLine {
	return logLine{"DEBUG", "ic: call refused", []logAttr{
		{"status", strconv.Itoa(status)}, {"reason", reason}, {"remote", "127.0.0.1:"}}}
}

// inboundRefused is the endpoint's line for a signed call the Flow
// refused; the Flow's own line comes first.
func inboundRefused(status int, reason, from, method string) logLine {
	line := endpointRefused(status, reason)
	line.attrs = append(line.attrs, logAttr{"from", from}, logAttr{"method", method})
	return line
}

// flowRejected is the Flow's line for a message it refused.
func flowRejected(from, method, reason string, withID bool) logLine {
	attrs := []logAttr{{"from", from}, {"method", method}, {"reason", reason}}
	if withID {
		attrs = append(attrs, logAttr{"msg_id", ""})
	}
	return logLine{"INFO", "asyncflow: message rejected", attrs}
}

// accepted is the endpoint's line for a call it accepted.
func accepted(from, method string) logLine {
	return logLine{"DEBUG", "ic: call accepted", []logAttr{{"from", from},
		{"method", method}}}
}

// badInput is one row of the table.
type badInput struct {
	// name names the subtest.
	name string
	// in says what comes in, in the README's table.
	in string
	// build prepares the Flow if the row needs it and returns the request.
	build func(t *testing.T, f *flowFixture) (path string, body []byte)
	// httpMethod is the request's method; default POST.
	httpMethod string

	status int
	reason string // a fragment of the one-line answer
	logs   []logLine

	// answer is the method the Flow sends back to the caller, if any.
	answer string
	// repeated is set when the answer is, byte for byte, one the Flow
	// sent before the request.
	repeated bool
	// processed is set when the handler runs once and its result is
	// committed; otherwise neither may happen.
	processed bool
	// note adds to the README's "gets back" column.
	note string
}

// newMessageWithID returns a row builder of a newMessage from the peer
// whose id has the time at().
func newMessageWithID(at func() time.Time) func(*testing.T, *flowFixture) (string, []byte) {
	return func(t *testing.T, f *flowFixture) (string, []byte) {
		id, err := asyncflow.NewMsgID(at())
		require.NoError(t, err)
		arg := asyncflow.NewMessage{MsgID: id, Payload: payload("hello")}.AppendCandid(nil)
		return f.path(), f.signedCall(t, f.peer, asyncflow.MethodNewMessage, arg)
	}
}

// withArg returns a row builder of a call of method from the peer whose
// argument is arg(t).
func withArg(method string, arg func(*testing.T) []byte) func(*testing.T,
	*flowFixture) (string, []byte) {
	return func(t *testing.T, f *flowFixture) (string, []byte) {
		return f.path(), f.signedCall(t, f.peer, method, arg(t))
	}
}

func badInputs() []badInput {
	tooLarge := "larger than " + strconv.Itoa(DefaultMaxBodyBytes)
	const (
		newMessage = asyncflow.MethodNewMessage
		ack        = asyncflow.MethodAck
		ackack     = asyncflow.MethodAckAck
	)
	return []badInput{
		{
			name: "malformed CBOR",
			in:   "malformed CBOR (a signed envelope cut in half)",
			build: func(t *testing.T, f *flowFixture) (string, []byte) {
				body := f.request(t, func(*agent.Request) {})
				return f.path(), body[:len(body)/2]
			},
			status: 400, reason: "malformed cbor envelope",
			logs: []logLine{endpointRefused(400, "malformed cbor envelope")},
		},
		{
			name: "duplicate keys in a CBOR map",
			in:   "duplicate keys in a CBOR map (two method_name in content)",
			build: func(t *testing.T, f *flowFixture) (string, []byte) {
				req := callRequest(t, f.peer, f.self.Sender(), newMessage,
					asyncflow.NewMessage{MsgID: freshID(t)}.AppendCandid(nil))
				env := signed(f.peer, req)
				pairs := append(contentPairs(req), "method_name", ackack)
				return f.path(), rawMap(t,
					"content", cbor.RawMessage(rawMap(t, pairs...)),
					"sender_pubkey", env.SenderPubKey,
					"sender_sig", env.SenderSig)
			},
			status: 400, reason: "duplicate map key",
			logs: []logLine{endpointRefused(400, "duplicate map key")},
		},
		{
			name:       "GET instead of POST",
			in:         "GET instead of POST",
			httpMethod: http.MethodGet,
			build: func(t *testing.T, f *flowFixture) (string, []byte) {
				return f.path(), nil
			},
			status: 405, reason: "method GET is not allowed, use POST",
			logs: []logLine{endpointRefused(405, "method GET is not allowed")},
		},
		{
			name: "path not a call endpoint",
			in:   "a path that is not a call endpoint (`.../query`)",
			build: func(t *testing.T, f *flowFixture) (string, []byte) {
				return "/api/v2/canister/" + f.self.Sender().Encode() + "/query",
					f.request(t, func(*agent.Request) {})
			},
			status: 404, reason: "is not a call endpoint",
			logs: []logLine{endpointRefused(404, "is not a call endpoint")},
		},
		{
			name: "body over MaxBodyBytes",
			in:   "body over MaxBodyBytes (3 MiB by default)",
			build: func(t *testing.T, f *flowFixture) (string, []byte) {
				return f.path(), f.request(t, func(r *agent.Request) {
					r.Arguments = make([]byte, DefaultMaxBodyBytes)
				})
			},
			status: 413, reason: tooLarge,
			logs: []logLine{endpointRefused(413, tooLarge)},
		},
		{
			name: "bad signature",
			in:   "bad signature (one bit flipped)",
			build: func(t *testing.T, f *flowFixture) (string, []byte) {
				req := callRequest(t, f.peer, f.self.Sender(), newMessage,
					asyncflow.NewMessage{MsgID: freshID(t)}.AppendCandid(nil))
				env := signed(f.peer, req)
				env.SenderSig[10] ^= 0x01
				return f.path(), encode(t, env)
			},
			status: 403, reason: "invalid signature: ed25519 signature does not verify",
			logs: []logLine{endpointRefused(403, "signature does not verify")},
		},
		{
			name: "sender not matching the key",
			in:   "sender not matching the key that signed",
			build: func(t *testing.T, f *flowFixture) (string, []byte) {
				return f.path(), f.request(t, func(r *agent.Request) {
					r.Sender = f.stranger.Sender()
				})
			},
			status: 403, reason: "is not the principal",
			logs: []logLine{endpointRefused(403, "is not the principal")},
		},
		{
			name: "anonymous caller",
			in:   "anonymous caller (unsigned, sender 2vxsx-fae)",
			build: func(t *testing.T, f *flowFixture) (string, []byte) {
				req := callRequest(t, f.peer, f.self.Sender(), newMessage,
					asyncflow.NewMessage{MsgID: freshID(t)}.AppendCandid(nil))
				req.Sender = principal.AnonymousID
				return f.path(), encode(t, agent.Envelope{Content: req})
			},
			status: 403, reason: "anonymous callers are not accepted",
			logs: []logLine{endpointRefused(403, "anonymous callers are not accepted")},
		},
		{
			name: "sender delegation",
			in:   "sender delegation (an Internet Identity session key)",
			build: func(t *testing.T, f *flowFixture) (string, []byte) {
				req := callRequest(t, f.peer, f.self.Sender(), newMessage,
					asyncflow.NewMessage{MsgID: freshID(t)}.AppendCandid(nil))
				env := signed(f.peer, req)
				return f.path(), encode(t, map[string]any{
					"content":       contentMap(req),
					"sender_pubkey": env.SenderPubKey,
					"sender_sig":    env.SenderSig,
					"sender_delegation": []any{map[string]any{
						"delegation": map[string]any{
							"pubkey":     env.SenderPubKey,
							"expiration": uint64(time.Now().Add(time.Hour).UnixNano()),
						},
						"signature": env.SenderSig,
					}},
				})
			},
			status: 400, reason: "sender delegations are not supported",
			logs: []logLine{endpointRefused(400, "sender delegations are not supported")},
		},
		{
			name: "expired ingress expiry",
			in:   "ingress expiry passed more than PermittedDrift (30 s) ago",
			build: func(t *testing.T, f *flowFixture) (string, []byte) {
				return f.path(), f.request(t, func(r *agent.Request) {
					r.IngressExpiry = uint64(time.Now().Add(-time.Minute).UnixNano())
				})
			},
			status: 400, reason: "has expired",
			logs: []logLine{endpointRefused(400, "has expired")},
		},
		{
			name: "far-future ingress expiry",
			in:   "ingress expiry more than 5 min + PermittedDrift ahead",
			build: func(t *testing.T, f *flowFixture) (string, []byte) {
				return f.path(), f.request(t, func(r *agent.Request) {
					r.IngressExpiry = uint64(time.Now().Add(6 * time.Minute).UnixNano())
				})
			},
			status: 400, reason: "too far in the future",
			logs: []logLine{endpointRefused(400, "too far in the future")},
		},
		{
			name: "wrong canister id in the path",
			in:   "another principal's canister id in the path",
			build: func(t *testing.T, f *flowFixture) (string, []byte) {
				return callPath(f.other.Sender()), f.request(t, func(*agent.Request) {})
			},
			status: 400, reason: "in path is not this endpoint's",
			logs: []logLine{endpointRefused(400, "in path is not this endpoint's")},
		},
		{
			name: "wrong canister id in the content",
			in:   "another principal's canister id in the signed content",
			build: func(t *testing.T, f *flowFixture) (string, []byte) {
				return f.path(), f.request(t, func(r *agent.Request) {
					r.CanisterID = f.stranger.Sender()
				})
			},
			status: 400, reason: "in content is not this endpoint's",
			logs: []logLine{endpointRefused(400, "in content is not this endpoint's")},
		},
		{
			name: "envelope signed for another service",
			in:   "an envelope the peer signed for another service, replayed here",
			build: func(t *testing.T, f *flowFixture) (string, []byte) {
				tr, err := NewTransport(f.peer, TransportConfig{
					Routes: map[string]string{f.other.Sender().Encode(): f.otherURL}})
				require.NoError(t, err)
				arg := asyncflow.NewMessage{MsgID: freshID(t), Payload: payload("for other")}
				require.NoError(t, tr.Send(t.Context(), f.other.Sender(), newMessage,
					arg.AppendCandid(nil)))
				return f.path(), <-f.otherBodies
			},
			status: 400, reason: "in content is not this endpoint's",
			logs: []logLine{endpointRefused(400, "in content is not this endpoint's")},
		},
		{
			name: "unknown method",
			in:   "unknown method (`transfer`)",
			build: withArg("transfer", func(t *testing.T) []byte {
				return asyncflow.NewMessage{MsgID: freshID(t)}.AppendCandid(nil)
			}),
			status: 400, reason: `method "transfer" is not an asyncflow method`,
			logs: []logLine{endpointRefused(400, "is not an asyncflow method")},
		},
		{
			name: "oversized argument",
			in:   "oversized argument (payload over MaxPayload, 2 MiB)",
			build: withArg(newMessage, func(t *testing.T) []byte {
				return asyncflow.NewMessage{MsgID: freshID(t),
					Payload: make([]byte, asyncflow.DefaultMaxPayload+1)}.AppendCandid(nil)
			}),
			status: 413, reason: "payload too large",
			logs: []logLine{
				flowRejected("$peer", "newMessage", "payload too large", false),
				inboundRefused(413, "payload too large", "$peer", newMessage),
			},
		},
		{
			name:   "invalid Candid",
			in:     "invalid Candid (`DIDL` and no argument)",
			build:  withArg(newMessage, func(*testing.T) []byte { return []byte("DIDL\x00\x00") }),
			status: 400, reason: "call refused: asyncflow: invalid candid argument",
			logs: []logLine{
				flowRejected("$peer", "newMessage", "invalid candid argument", false),
				inboundRefused(400, "invalid candid argument", "$peer", newMessage),
			},
		},
		{
			name: "AckAck record to newMessage",
			in:   "wrong record type: an AckAck record to newMessage (no payload)",
			build: withArg(newMessage, func(t *testing.T) []byte {
				return asyncflow.AckAck{MsgID: freshID(t)}.AppendCandid(nil)
			}),
			status: 400, reason: "call refused: asyncflow: invalid candid argument",
			logs: []logLine{
				flowRejected("$peer", "newMessage", "invalid candid argument", false),
				inboundRefused(400, "invalid candid argument", "$peer", newMessage),
			},
		},
		{
			name: "AckAck record to ack",
			in:   "wrong record type: an AckAck record to ack (no payload)",
			build: withArg(ack, func(t *testing.T) []byte {
				return asyncflow.AckAck{MsgID: freshID(t)}.AppendCandid(nil)
			}),
			status: 400, reason: "call refused: asyncflow: invalid candid argument",
			logs: []logLine{
				flowRejected("$peer", "ack", "invalid candid argument", false),
				inboundRefused(400, "invalid candid argument", "$peer", ack),
			},
		},
		{
			name: "Ack record to newMessage",
			in:   "wrong record type: an Ack record to newMessage",
			build: withArg(newMessage, func(t *testing.T) []byte {
				return asyncflow.Ack{MsgID: freshID(t), Payload: payload("hello"),
					Hash: asyncflow.HashOf(payload("x"))}.AppendCandid(nil)
			}),
			status: 202, processed: true, answer: ack,
			note: "; Candid subtyping drops the extra `hash` field, so it is " +
				"processed as a new message and acked",
			logs: []logLine{accepted("$peer", newMessage)},
		},
		{
			name: "too-old msg_id",
			in:   "newMessage whose msg_id is older than DedupWindow (24 h)",
			build: newMessageWithID(func() time.Time {
				return time.Now().Add(-asyncflow.DefaultDedupWindow - time.Minute)
			}),
			status: 400, reason: "outside the dedup window",
			logs: []logLine{
				flowRejected("$peer", "newMessage", "older than the dedup window", true),
				inboundRefused(400, "outside the dedup window", "$peer", newMessage),
			},
		},
		{
			name: "future msg_id",
			in:   "newMessage whose msg_id is more than MaxClockSkew (5 min) ahead",
			build: newMessageWithID(func() time.Time {
				return time.Now().Add(asyncflow.DefaultMaxClockSkew + time.Minute)
			}),
			status: 400, reason: "outside the dedup window",
			logs: []logLine{
				flowRejected("$peer", "newMessage", "ahead of this clock", true),
				inboundRefused(400, "outside the dedup window", "$peer", newMessage),
			},
		},
		{
			name:   "newMessage without a route back",
			in:     "newMessage from a principal the Flow has no route back to",
			build:  strangerNewMessage,
			status: 400, reason: "no route back to the caller",
			logs: []logLine{
				flowRejected("$stranger", "newMessage", "no route back to the caller", true),
				inboundRefused(400, "no route to principal", "$stranger", newMessage),
			},
		},
		{
			name: "ack from a non-peer",
			in:   "ack from a principal that is not the message's peer",
			build: func(t *testing.T, f *flowFixture) (string, []byte) {
				id, err := f.flow.CallAsync(t.Context(), f.peer.Sender(), payload("hello"))
				require.NoError(t, err)
				arg := asyncflow.Ack{MsgID: id, Hash: asyncflow.HashOf(payload("hello")),
					Payload: payload("forged answer")}.AppendCandid(nil)
				return f.path(), f.signedCall(t, f.stranger, ack, arg)
			},
			status: 400, reason: "caller is not the message's peer",
			logs: []logLine{
				flowRejected("$stranger", "ack", "which is not its target", true),
				inboundRefused(400, "caller is not the message's peer", "$stranger", ack),
			},
		},
		{
			name: "ackack from a non-peer",
			in:   "ackack from a principal that is not the message's peer",
			build: func(t *testing.T, f *flowFixture) (string, []byte) {
				id, _ := f.process(t, payload("hello"))
				answer := append([]byte("answer to "), payload("hello")...)
				arg := asyncflow.AckAck{MsgID: id, Hash: asyncflow.HashOf(answer)}
				return f.path(), f.signedCall(t, f.stranger, ackack, arg.AppendCandid(nil))
			},
			status: 202,
			note:   "; the Flow holds no such message from that caller and changes nothing",
			logs: []logLine{
				{"DEBUG", "asyncflow: ackack for no acking message",
					[]logAttr{{"from", "$stranger"}, {"msg_id", ""}}},
				accepted("$stranger", ackack),
			},
		},
		{
			name: "ack for an unknown id",
			in:   "ack for an id the Flow does not hold",
			build: withArg(ack, func(t *testing.T) []byte {
				return asyncflow.Ack{MsgID: freshID(t), Payload: payload("late")}.AppendCandid(nil)
			}),
			status: 202, answer: ackack,
			note: "; the Flow answers with an ackack without a hash (it took no " +
				"answer) and changes nothing",
			logs: []logLine{accepted("$peer", ack)},
		},
		{
			name: "replayed submission",
			in:   "a replayed newMessage submission (the same bytes again)",
			build: func(t *testing.T, f *flowFixture) (string, []byte) {
				_, body := f.process(t, payload("hello"))
				return f.path(), body
			},
			status: 202, answer: ack, repeated: true,
			note: "; the handler does not run again: the stored ack is sent again " +
				"and nothing changes",
			logs: []logLine{accepted("$peer", newMessage)},
		},
	}
}

// strangerNewMessage builds a newMessage from the stranger, to whom the
// Flow has no route.
func strangerNewMessage(t *testing.T, f *flowFixture) (string, []byte) {
	arg := asyncflow.NewMessage{MsgID: freshID(t), Payload: payload("hi")}
	return f.path(), f.signedCall(t, f.stranger, asyncflow.MethodNewMessage,
		arg.AppendCandid(nil))
}

func TestBadInput(t *testing.T) {
	for _, row := range badInputs() {
		t.Run(row.name, func(t *testing.T) {
			f := newFlowFixture(t)
			path, body := row.build(t, f)
			before := f.settle(t)
			changes, logs := f.store.changeLog(), len(f.logs.records(t))
			handled := f.handled.Load()

			status, reason := f.post(t, cmp.Or(row.httpMethod, http.MethodPost), path, body)

			require.Equal(t, row.status, status, "answer: %s", reason)
			require.NotContains(t, reason, "\n")
			if row.status == http.StatusAccepted {
				require.Empty(t, reason)
			} else {
				require.Contains(t, reason, row.reason)
			}
			requireLogs(t, f, row.logs, f.logs.records(t)[logs:])

			after := f.settle(t)
			sent := f.out.calls()
			answers := sent[before+1 : after]
			if row.answer == "" {
				require.Empty(t, answers, "the Flow sent nothing back")
			} else {
				require.Len(t, answers, 1)
				require.Equal(t, row.answer, answers[0].method)
				require.Equal(t, f.peer.Sender(), answers[0].to)
				require.Equal(t, row.repeated, slices.ContainsFunc(sent[:before],
					func(c sentCall) bool { return bytes.Equal(c.arg, answers[0].arg) }))
			}

			if row.processed {
				require.Equal(t, handled+1, f.handled.Load(), "the handler ran once")
				require.Len(t, f.store.changeLog(), len(changes)+1, "one record was committed")
			} else {
				require.Equal(t, handled, f.handled.Load(), "the handler did not run")
				require.Equal(t, changes, f.store.changeLog(), "the store did not change")
			}
			requireNoPayloadLogged(t, f)
		})
	}
}

// requireLogs checks the records logged against the expected lines, in
// order.
func requireLogs(t *testing.T, f *flowFixture, want []logLine, got []map[string]any) {
	t.Helper()
	require.Len(t, got, len(want), "logged: %v", got)
	for i, line := range want {
		rec := got[i]
		require.Equal(t, line.level, rec["level"], "record %d: %v", i, rec)
		require.Equal(t, line.msg, rec["msg"], "record %d: %v", i, rec)

		keys := []string{}
		for k := range rec {
			if k != "time" && k != "level" && k != "msg" {
				keys = append(keys, k)
			}
		}
		wantKeys := []string{}
		for _, a := range line.attrs {
			wantKeys = append(wantKeys, a.key)
			value := fmt.Sprint(rec[a.key])
			if p, ok := f.principalOf(a.has); ok {
				require.Equal(t, p, value, "record %d attribute %s", i, a.key)
			} else {
				require.Contains(t, value, a.has, "record %d attribute %s", i, a.key)
			}
		}
		require.ElementsMatch(t, wantKeys, keys, "record %d: %v", i, rec)
	}
}

// payloadMark begins every payload the rows send, so that a log line
// holding one can be found.
const payloadMark = "p4yl0ad "

// payload returns a payload that begins with payloadMark.
func payload(text string) []byte {
	return []byte(payloadMark + text)
}

// requireNoPayloadLogged checks that no log line holds a payload.
func requireNoPayloadLogged(t *testing.T, f *flowFixture) {
	t.Helper()
	for _, rec := range f.logs.records(t) {
		for _, v := range rec {
			text := fmt.Sprint(v)
			require.NotContains(t, text, payloadMark, "a payload was logged: %v", rec)
		}
	}
}

// TestBadInputTableIsCurrent checks that testdata/badinput.md, the table
// the README shows, is the one these rows render.
func TestBadInputTableIsCurrent(t *testing.T) {
	const golden = "testdata/badinput.md"
	table := renderBadInputTable(badInputs())
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(golden, []byte(table), 0o644))
	}
	data, err := os.ReadFile(golden)
	require.NoError(t, err)
	require.Equal(t, table, string(data), "run go test ./ic/ -run %s -update", t.Name())
}

// renderBadInputTable renders the rows as the README's Markdown table.
func renderBadInputTable(rows []badInput) string {
	var b strings.Builder
	b.WriteString("| what comes in | what the caller gets back | what is logged |\n")
	b.WriteString("|---|---|---|\n")
	for _, row := range rows {
		back := fmt.Sprintf("%d %s", row.status, http.StatusText(row.status))
		if row.reason != "" {
			back += fmt.Sprintf(", reason `…%s…`", row.reason)
		}
		back += row.note
		if row.status != http.StatusAccepted {
			back += "; nothing changes"
		}

		var logged []string
		for _, line := range row.logs {
			keys := make([]string, 0, len(line.attrs))
			for _, a := range line.attrs {
				keys = append(keys, a.key)
			}
			logged = append(logged, fmt.Sprintf("%s `%s` (%s)",
				strings.ToLower(line.level), line.msg, strings.Join(keys, ", ")))
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", row.in, back, strings.Join(logged, "; then "))
	}
	return b.String()
}
