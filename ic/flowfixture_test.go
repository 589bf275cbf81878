package ic

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncflow/asyncflow"
	agent "github.com/aviate-labs/agent-go"
	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/stretchr/testify/require"
)

// recordingStore is a MemoryStore that records every change made to it,
// so that a test can tell that a request changed nothing.
type recordingStore struct {
	*asyncflow.MemoryStore
	mu      sync.Mutex
	changes []string
}

func newRecordingStore() *recordingStore {
	return &recordingStore{MemoryStore: asyncflow.NewMemoryStore()}
}

func (s *recordingStore) record(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.changes = append(s.changes, fmt.Sprintf(format, args...))
}

// changeLog returns the changes so far, oldest first.
func (s *recordingStore) changeLog() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.changes)
}

func (s *recordingStore) PutOutgoing(ctx context.Context, m asyncflow.Outgoing) error {
	s.record("put outgoing %s to %s, %s", m.MsgID, m.To, m.State)
	return s.MemoryStore.PutOutgoing(ctx, m)
}

func (s *recordingStore) DeleteOutgoing(ctx context.Context, id asyncflow.MsgID) error {
	s.record("delete outgoing %s", id)
	return s.MemoryStore.DeleteOutgoing(ctx, id)
}

func (s *recordingStore) PutIncoming(ctx context.Context, m asyncflow.Incoming) error {
	s.record("put incoming %s from %s, %s", m.MsgID, m.From, m.State)
	return s.MemoryStore.PutIncoming(ctx, m)
}

func (s *recordingStore) ExpireIncoming(ctx context.Context, before time.Time,
	limit int) (int, error) {
	n, err := s.MemoryStore.ExpireIncoming(ctx, before, limit)
	if n > 0 {
		s.record("expire %d incoming before %s", n, before)
	}
	return n, err
}

// sentCall is one call a Flow handed its transport.
type sentCall struct {
	to     principal.Principal
	method string
	arg    []byte
}

// recordingTransport records every call before the Transport under it
// submits it.
type recordingTransport struct {
	*Transport
	mu      sync.Mutex
	sent    []sentCall
	changed chan struct{}
}

func (r *recordingTransport) Send(ctx context.Context, to principal.Principal, method string,
	arg []byte) error {
	r.mu.Lock()
	r.sent = append(r.sent, sentCall{to, method, bytes.Clone(arg)})
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
	return r.Transport.Send(ctx, to, method, arg)
}

func (r *recordingTransport) calls() []sentCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sent)
}

// logBuffer collects the JSON lines of a slog handler.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// records parses every line logged so far.
func (b *logBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	text := b.buf.String()
	b.mu.Unlock()

	var out []map[string]any
	for line := range strings.Lines(text) {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec), "log line %q", line)
		out = append(out, rec)
	}
	return out
}

// flowFixture is a Flow of the principal self on a MemoryStore, behind an
// Endpoint served over HTTP. Its peer and another service have endpoints
// of their own; the Flow has a route to the peer only. Every log line of
// the Flow and of its endpoint goes to logs, as JSON, from debug level;
// every change to the store and every call the Flow sends is recorded,
// and so is every run of the handler.
type flowFixture struct {
	self, peer, stranger, other identity.Identity

	store *recordingStore
	out   *recordingTransport
	flow  *asyncflow.Flow
	srv   *httptest.Server
	logs  *logBuffer

	handled atomic.Int32

	// otherBodies receives the bodies the other service is sent.
	otherBodies chan []byte
	otherURL    string
}

func newFlowFixture(t *testing.T) *flowFixture {
	t.Helper()
	f := &flowFixture{store: newRecordingStore(), logs: &logBuffer{},
		otherBodies: make(chan []byte, 1)}
	t.Cleanup(func() { require.NoError(t, f.store.Close()) })
	for _, id := range []*identity.Identity{&f.self, &f.peer, &f.stranger, &f.other} {
		var err error
		*id, err = identity.NewRandomEd25519Identity()
		require.NoError(t, err)
	}
	quiet := slog.New(slog.DiscardHandler)
	logger := slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{
		Level: slog.LevelDebug}))

	peerURL := serveEndpoint(t, f.peer.Sender(), nil)
	f.otherURL = serveEndpoint(t, f.other.Sender(), f.otherBodies)

	tr, err := NewTransport(f.self, TransportConfig{
		Routes: map[string]string{f.peer.Sender().Encode(): peerURL},
		Logger: quiet,
	})
	require.NoError(t, err)
	f.out = &recordingTransport{Transport: tr, changed: make(chan struct{}, 1)}

	f.flow, err = asyncflow.New(asyncflow.Config{
		Transport: f.out,
		Store:     f.store,
		Handler: func(_ context.Context, _ principal.Principal, _ asyncflow.MsgID,
			payload []byte) ([]byte, error) {
			f.handled.Add(1)
			return append([]byte("answer to "), payload...), nil
		},
		// One worker sends in queue order, so that settle can tell when
		// every earlier call has left.
		SendWorkers: 1,
		Logger:      logger,
	})
	require.NoError(t, err)

	endpoint, err := NewEndpoint(f.self.Sender(), f.flow, EndpointConfig{Logger: logger})
	require.NoError(t, err)
	f.srv = httptest.NewServer(endpoint)
	t.Cleanup(func() {
		f.srv.Close()
		require.NoError(t, f.flow.Close())
	})
	return f
}

// serveEndpoint serves an Endpoint of p that accepts every valid call,
// and sends each body it receives to bodies when that is not nil.
func serveEndpoint(t *testing.T, p principal.Principal, bodies chan<- []byte) string {
	t.Helper()
	endpoint, err := NewEndpoint(p, &recordingInbound{},
		EndpointConfig{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if bodies != nil {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			select {
			case bodies <- body:
			default:
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		endpoint.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// path is the Flow's call path.
func (f *flowFixture) path() string {
	return callPath(f.self.Sender())
}

// signedCall is the body of a call from id to the Flow, built and signed
// as agent-go does.
func (f *flowFixture) signedCall(t *testing.T, id identity.Identity, method string,
	arg []byte) []byte {
	t.Helper()
	return encode(t, signed(id, callRequest(t, id, f.self.Sender(), method, arg)))
}

// request builds a call from the peer that change alters before it is
// signed.
func (f *flowFixture) request(t *testing.T, change func(*agent.Request)) []byte {
	t.Helper()
	req := callRequest(t, f.peer, f.self.Sender(), asyncflow.MethodNewMessage,
		asyncflow.NewMessage{MsgID: freshID(t), Payload: payload("hello")}.AppendCandid(nil))
	change(&req)
	return encode(t, signed(f.peer, req))
}

// post submits body to path on the Flow's endpoint with the HTTP method
// method and returns the status and the answer.
func (f *flowFixture) post(t *testing.T, method, path string, body []byte) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()

	req, err := http.NewRequestWithContext(ctx, method, f.srv.URL+path,
		bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/cbor")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()

	answer, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(answer)
}

// process has the Flow process a new message from the peer and returns
// its id and the body that carried it.
func (f *flowFixture) process(t *testing.T, payload []byte) (asyncflow.MsgID, []byte) {
	t.Helper()
	id := freshID(t)
	arg := asyncflow.NewMessage{MsgID: id, Payload: payload}.AppendCandid(nil)
	body := f.signedCall(t, f.peer, asyncflow.MethodNewMessage, arg)
	status, reason := f.post(t, http.MethodPost, f.path(), body)
	require.Equal(t, http.StatusAccepted, status, reason)
	return id, body
}

// settle waits until every call the Flow queued so far has been sent: it
// has the peer send an ack for an id the Flow never sent, and waits for
// the ackack that answers it, which the Flow's single send worker sends
// after everything queued before it. It returns the number of calls sent
// before that ackack.
func (f *flowFixture) settle(t *testing.T) int {
	t.Helper()
	marker := freshID(t)
	arg := asyncflow.Ack{MsgID: marker, Payload: payload("marker")}.AppendCandid(nil)
	status, reason := f.post(t, http.MethodPost, f.path(),
		f.signedCall(t, f.peer, asyncflow.MethodAck, arg))
	require.Equal(t, http.StatusAccepted, status, reason)

	deadline := time.After(wait)
	for {
		for i, c := range f.out.calls() {
			var ackack asyncflow.AckAck
			if c.method == asyncflow.MethodAckAck && ackack.UnmarshalCandid(c.arg) == nil &&
				ackack.MsgID == marker {
				return i
			}
		}
		select {
		case <-f.out.changed:
		case <-deadline:
			t.Fatalf("the Flow did not answer the marker ack within %s", wait)
		}
	}
}

// principalOf names a fixture identity in expectations: "$peer",
// "$stranger" or "$other".
func (f *flowFixture) principalOf(name string) (string, bool) {
	switch name {
	case "$peer":
		return f.peer.Sender().Encode(), true
	case "$stranger":
		return f.stranger.Sender().Encode(), true
	case "$other":
		return f.other.Sender().Encode(), true
	}
	return "", false
}
