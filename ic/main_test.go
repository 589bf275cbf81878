package ic

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asyncflow/asyncflow"
	agent "github.com/aviate-labs/agent-go"
	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

var update = flag.Bool("update", false,
	"rewrite the files under testdata that the tests build")

// TestMain checks that no test leaves a goroutine behind. agent-go's
// client uses http.DefaultTransport, whose idle connections are closed
// first.
func TestMain(m *testing.M) {
	code := m.Run()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// wait bounds every blocking step of a test.
const wait = 10 * time.Second

// delivered is one call an Inbound accepted.
type delivered struct {
	caller principal.Principal
	method string
	arg    []byte
}

// recordingInbound decodes the argument with the root package's Candid
// decoders, as a Flow does, and records the calls it accepts.
type recordingInbound struct {
	mu       sync.Mutex
	accepted []delivered
	attempts int
	err      error // returned for every call when set
}

func (in *recordingInbound) Deliver(
	_ context.Context, caller principal.Principal, method string, arg []byte,
) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.attempts++
	if in.err != nil {
		return in.err
	}

	var err error
	switch method {
	case asyncflow.MethodNewMessage:
		err = new(asyncflow.NewMessage).UnmarshalCandid(arg)
	case asyncflow.MethodAck:
		err = new(asyncflow.Ack).UnmarshalCandid(arg)
	case asyncflow.MethodAckAck:
		err = new(asyncflow.AckAck).UnmarshalCandid(arg)
	default:
		err = fmt.Errorf("%w: %q", asyncflow.ErrUnknownMethod, method)
	}
	if err != nil {
		return err
	}
	in.accepted = append(in.accepted, delivered{caller, method, bytes.Clone(arg)})
	return nil
}

func (in *recordingInbound) calls() ([]delivered, int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]delivered(nil), in.accepted...), in.attempts
}

// harness is an Endpoint of the principal self behind a real HTTP server.
type harness struct {
	self    principal.Principal
	in      *recordingInbound
	srv     *httptest.Server
	mu      sync.Mutex
	rejects []asyncflow.Rejection
}

func newHarness(t *testing.T, cfg EndpointConfig) *harness {
	t.Helper()
	return newWrappedHarness(t, cfg, func(h http.Handler) http.Handler { return h })
}

// newWrappedHarness is newHarness with the endpoint served through wrap.
func newWrappedHarness(t *testing.T, cfg EndpointConfig,
	wrap func(http.Handler) http.Handler) *harness {
	t.Helper()
	receiver, err := identity.NewRandomEd25519Identity()
	require.NoError(t, err)

	h := &harness{self: receiver.Sender(), in: &recordingInbound{}}
	cfg.OnReject = func(r asyncflow.Rejection) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.rejects = append(h.rejects, r)
	}
	endpoint, err := NewEndpoint(h.self, h.in, cfg)
	require.NoError(t, err)

	h.srv = httptest.NewServer(wrap(endpoint))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *harness) rejections() []asyncflow.Rejection {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]asyncflow.Rejection(nil), h.rejects...)
}

// callPath is the v2 call path for a canister id.
func callPath(p principal.Principal) string {
	return "/api/v2/canister/" + p.Encode() + "/call"
}

// post sends body to path and returns the status and the answer body.
func (h *harness) post(t *testing.T, path string, body io.Reader) (int, string) {
	t.Helper()
	return h.do(t, http.MethodPost, path, body)
}

func (h *harness) do(t *testing.T, method, path string, body io.Reader) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()

	req, err := http.NewRequestWithContext(ctx, method, h.srv.URL+path, body)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/cbor")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()

	answer, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(answer)
}

// requireRefused checks a refusal: its status, a one-line reason holding
// want, one OnReject call with that reason, and nothing delivered.
func (h *harness) requireRefused(t *testing.T, status int, reason string,
	wantStatus int, want string) asyncflow.Rejection {
	t.Helper()
	require.Equal(t, wantStatus, status, "reason: %s", reason)
	require.Contains(t, reason, want)
	require.NotContains(t, reason, "\n")
	require.NotEmpty(t, reason)

	rejects := h.rejections()
	require.Len(t, rejects, 1)
	require.Equal(t, reason, rejects[0].Reason)

	accepted, _ := h.in.calls()
	require.Empty(t, accepted)
	return rejects[0]
}

// candidArg returns the first argument of method (short name) in the
// reference vectors encoded by @dfinity/candid.
func candidArg(t *testing.T, method string) []byte {
	t.Helper()
	f, err := os.Open("../testdata/candid-args.tsv")
	require.NoError(t, err)
	defer f.Close()

	scanner := bufio.NewScanner(f)
	scanner.Buffer(nil, 1<<20)
	for scanner.Scan() {
		cols := strings.Split(scanner.Text(), "\t")
		if len(cols) == 6 && cols[0] == method {
			arg, err := hex.DecodeString(cols[5])
			require.NoError(t, err)
			return arg
		}
	}
	require.NoError(t, scanner.Err())
	t.Fatalf("no vector for %s", method)
	return nil
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

// callRequest builds a call the way agent-go does.
func callRequest(t *testing.T, id identity.Identity, to principal.Principal, method string,
	arg []byte) agent.Request {
	t.Helper()
	return agent.Request{
		Type:          agent.RequestTypeCall,
		Sender:        id.Sender(),
		CanisterID:    to,
		MethodName:    method,
		Arguments:     arg,
		IngressExpiry: uint64(time.Now().Add(5 * time.Minute).UnixNano()),
		Nonce:         randomBytes(t, 10),
	}
}

// signed wraps req in an envelope signed by id over agent-go's request id.
func signed(id identity.Identity, req agent.Request) agent.Envelope {
	requestID := agent.NewRequestID(req)
	return agent.Envelope{
		Content:      req,
		SenderPubKey: id.PublicKey(),
		SenderSig:    requestID.Sign(id),
	}
}

func encode(t testing.TB, v any) []byte {
	t.Helper()
	data, err := cbor.Marshal(v)
	require.NoError(t, err)
	return data
}
