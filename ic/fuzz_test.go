package ic

// Fuzz targets of the endpoint's input handling. Their seed corpora under
// testdata/fuzz are built by fuzzSeeds from fixed keys, ids and times, so
// that they keep verifying: FuzzEndpoint's clock is fuzzClock.
// TestFuzzSeedsAreCurrent checks them; -update rewrites them.
//
//	go test -run '^$' -fuzz '^FuzzParseSubmission$' -fuzztime 10s ./ic/
//	go test -run '^$' -fuzz '^FuzzEndpoint$' -fuzztime 10s ./ic/

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncflow/asyncflow"
	agent "github.com/aviate-labs/agent-go"
	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/aviate-labs/secp256k1"
	"github.com/fxamacker/cbor/v2"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
)

// fuzzClock is FuzzEndpoint's clock and the time of every seed.
var fuzzClock = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// fuzzKeys are the fixed identities the seeds are signed with.
type fuzzKeys struct {
	self, peer identity.Identity // Ed25519
	secp       identity.Identity // secp256k1, signing deterministically
	p256       identity.Identity // P-256, used for its key only
}

func newFuzzKeys(tb testing.TB) fuzzKeys {
	tb.Helper()
	ed := func(seed byte) identity.Identity {
		priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
		id, err := identity.NewEd25519Identity(priv.Public().(ed25519.PublicKey), priv)
		require.NoError(tb, err)
		return id
	}
	k1, _ := secp256k1.PrivKeyFromBytes(secp256k1.S256(), bytes.Repeat([]byte{3}, 32))
	secp, err := identity.NewSecp256k1Identity(k1)
	require.NoError(tb, err)
	p256Key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), bytes.Repeat([]byte{4}, 32))
	require.NoError(tb, err)
	return fuzzKeys{self: ed(1), peer: ed(2), secp: secp,
		p256: identity.NewPrime256v1Identity(p256Key)}
}

// fuzzMsgID is a fixed message id of fuzzClock.
func fuzzMsgID(n byte) asyncflow.MsgID {
	id := ulid.ULID{15: n}
	if err := id.SetTime(ulid.Timestamp(fuzzClock)); err != nil {
		panic(err)
	}
	return asyncflow.MsgID(id)
}

// fuzzCall is a call from id to the fuzz endpoint at fuzzClock, with a
// fixed nonce.
func fuzzCall(keys fuzzKeys, id identity.Identity, method string, arg []byte) agent.Request {
	return agent.Request{
		Type:          agent.RequestTypeCall,
		Sender:        id.Sender(),
		CanisterID:    keys.self.Sender(),
		MethodName:    method,
		Arguments:     arg,
		IngressExpiry: uint64(fuzzClock.Add(4 * time.Minute).UnixNano()),
		Nonce:         []byte("fuzz seed nonce"),
	}
}

// fuzzSeed is one seed of a fuzz target's corpus.
type fuzzSeed struct {
	name string
	path string
	body []byte
}

// fuzzSeeds returns the seed submissions, the same on every call.
func fuzzSeeds(t testing.TB) []fuzzSeed {
	t.Helper()
	k := newFuzzKeys(t)
	self := callPath(k.self.Sender())
	newMessage := asyncflow.NewMessage{MsgID: fuzzMsgID(1),
		Payload: []byte("hello")}.AppendCandid(nil)
	ack := asyncflow.Ack{MsgID: fuzzMsgID(2), Hash: asyncflow.HashOf([]byte("x")),
		Payload: []byte("answer")}.AppendCandid(nil)
	ackack := asyncflow.AckAck{MsgID: fuzzMsgID(3)}.AppendCandid(nil)
	env := func(id identity.Identity, req agent.Request) []byte {
		return canonical(t, signed(id, req))
	}

	valid := env(k.peer, fuzzCall(k, k.peer, asyncflow.MethodNewMessage, newMessage))
	seeds := []fuzzSeed{
		{"newmessage", self, valid},
		{"ack-secp256k1", self, env(k.secp, fuzzCall(k, k.secp, asyncflow.MethodAck, ack))},
		{"ackack-v3", "/api/v3/canister/" + k.self.Sender().Encode() + "/call",
			env(k.peer, fuzzCall(k, k.peer, asyncflow.MethodAckAck, ackack))},
		{"self-describe-tag", self, append(bytes.Clone(selfDescribeTag), valid...)},
		{"truncated", self, valid[:len(valid)/2]},
		{"empty-map", self, []byte{0xa0}},
		{"indefinite-empty-map", self, []byte{0xbf, 0xff}},
		{"not-a-map", self, []byte("\x81dcall")},
		{"other-path", "/api/v2/canister/aaaaa-aa/call", valid},
		{"query-path", "/api/v2/canister/" + k.self.Sender().Encode() + "/query", valid},
	}

	req := fuzzCall(k, k.peer, asyncflow.MethodNewMessage, newMessage)
	p256 := signed(k.peer, req)
	p256.SenderPubKey = k.p256.PublicKey()
	p256.Content.Sender = k.p256.Sender()
	seeds = append(seeds, fuzzSeed{"p256-wrong-signature", self, canonical(t, p256)})

	anonymous := req
	anonymous.Sender = principal.AnonymousID
	seeds = append(seeds, fuzzSeed{"anonymous", self,
		canonical(t, agent.Envelope{Content: anonymous})})

	expired := req
	expired.IngressExpiry = uint64(fuzzClock.Add(-time.Minute).UnixNano())
	seeds = append(seeds, fuzzSeed{"expired", self, env(k.peer, expired)})

	wrongType := req
	wrongType.Arguments = ack
	seeds = append(seeds, fuzzSeed{"ack-record-to-newmessage", self, env(k.peer, wrongType)})

	signedEnv := signed(k.peer, req)
	seeds = append(seeds,
		fuzzSeed{"duplicate-content-key", self, rawMap(t,
			"content", cbor.RawMessage(rawMap(t, append(contentPairs(req),
				"method_name", asyncflow.MethodAckAck)...)),
			"sender_pubkey", signedEnv.SenderPubKey,
			"sender_sig", signedEnv.SenderSig)},
		fuzzSeed{"delegation", self, canonicalMap(t, map[string]any{
			"content":       contentMap(req),
			"sender_pubkey": signedEnv.SenderPubKey,
			"sender_sig":    signedEnv.SenderSig,
			"sender_delegation": []any{map[string]any{
				"delegation": map[string]any{"pubkey": signedEnv.SenderPubKey,
					"expiration": uint64(fuzzClock.Add(time.Hour).UnixNano())},
				"signature": signedEnv.SenderSig,
			}},
		})},
		fuzzSeed{"nested-content-field", self, canonicalMap(t, map[string]any{
			"content": map[string]any{"request_type": "call",
				"nonce": []any{[]any{uint64(1)}, map[string]any{"n": int64(-1)}}},
		})},
	)
	return seeds
}

// canonical encodes an envelope with its map keys sorted: agent-go
// encodes the content map in Go's random map order, and a seed must be
// the same on every run.
func canonical(t testing.TB, env agent.Envelope) []byte {
	t.Helper()
	m := map[string]any{"content": contentMap(env.Content)}
	if env.SenderPubKey != nil {
		m["sender_pubkey"] = env.SenderPubKey
	}
	if env.SenderSig != nil {
		m["sender_sig"] = env.SenderSig
	}
	return canonicalMap(t, m)
}

// canonicalMap encodes m, and the maps in it, with sorted keys.
func canonicalMap(t testing.TB, m map[string]any) []byte {
	t.Helper()
	mode, err := cbor.CanonicalEncOptions().EncMode()
	require.NoError(t, err)
	data, err := mode.Marshal(m)
	require.NoError(t, err)
	return data
}

// corpusFile renders values in the format of go test's fuzz corpus.
func corpusFile(values ...any) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, v := range values {
		switch v := v.(type) {
		case string:
			fmt.Fprintf(&b, "string(%q)\n", v)
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		default:
			panic(fmt.Sprintf("no corpus form for %T", v))
		}
	}
	return b.Bytes()
}

// TestFuzzSeedsAreCurrent checks that the committed corpora hold every
// seed fuzzSeeds builds, byte for byte; -update writes them.
func TestFuzzSeedsAreCurrent(t *testing.T) {
	bodies := map[string]bool{}
	for _, seed := range fuzzSeeds(t) {
		files := map[string][]byte{"FuzzEndpoint": corpusFile(seed.path, seed.body)}
		if !bodies[string(seed.body)] {
			bodies[string(seed.body)] = true
			files["FuzzParseSubmission"] = corpusFile(seed.body)
		}
		for target, want := range files {
			name := filepath.Join("testdata", "fuzz", target, seed.name)
			if *update {
				require.NoError(t, os.MkdirAll(filepath.Dir(name), 0o755))
				require.NoError(t, os.WriteFile(name, want, 0o644))
			}
			got, err := os.ReadFile(name)
			require.NoError(t, err, "run go test ./ic/ -run %s -update", t.Name())
			require.Equal(t, string(want), string(got), "%s is stale; run with -update", name)
		}
	}
}

// allocated returns the bytes the process allocated while fn ran.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// allocationBound is the most a submission of n bytes may cost in
// allocations: a fixed allowance for the request, the answer and the
// Flow's work (a whole accepted call costs about 16 KiB), and a few
// copies of the body.
func allocationBound(n int) uint64 {
	return 64<<10 + 16*uint64(n)
}

// warmUpVerifiers verifies one signature of every key type, so that
// tables the curve libraries build on first use are not counted against
// the first input that reaches them.
func warmUpVerifiers(tb testing.TB) {
	tb.Helper()
	k := newFuzzKeys(tb)
	for _, id := range []identity.Identity{k.peer, k.secp, k.p256} {
		var rid agent.RequestID
		_, err := verifyRequest(id.PublicKey(), rid, rid.Sign(id))
		require.NoError(tb, err)
	}
}

// FuzzParseSubmission checks the decoding and verification of a body:
// no input panics, allocations stay within allocationBound, and every
// content map the decoder admits has a request id.
func FuzzParseSubmission(f *testing.F) {
	warmUpVerifiers(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		var idErr error
		used := allocated(func() {
			env, err := decodeEnvelope(body)
			if err != nil {
				return
			}
			c, err := decodeContent(env.Content)
			if err != nil {
				return
			}
			var id [32]byte
			if id, idErr = requestID(c.fields); idErr != nil {
				return
			}
			_, _ = verifyRequest(env.SenderPubKey, id, env.SenderSig)
		})

		require.NoError(t, idErr, "an admitted content map has no request id")
		require.LessOrEqual(t, used, allocationBound(len(body)),
			"a %d-byte body allocated %d bytes", len(body), used)
	})
}

// fuzzEndpoint is a Flow on a recording store behind an Endpoint whose
// clock is fuzzClock; the Flow can answer the fuzz keys' peer.
type fuzzEndpoint struct {
	endpoint *Endpoint
	store    *recordingStore
	handled  atomic.Int32
}

func newFuzzEndpoint(f *testing.F) *fuzzEndpoint {
	f.Helper()
	keys := newFuzzKeys(f)
	quiet := slog.New(slog.DiscardHandler)
	fe := &fuzzEndpoint{store: newRecordingStore()}
	f.Cleanup(func() { require.NoError(f, fe.store.Close()) })

	net, err := asyncflow.NewNetwork(1, asyncflow.Faults{})
	require.NoError(f, err)
	f.Cleanup(net.Close)
	net.Attach(keys.peer.Sender(), noopInbound{})

	flow, err := asyncflow.New(asyncflow.Config{
		Transport: net.Transport(keys.self.Sender()),
		Store:     fe.store,
		Handler: func(context.Context, principal.Principal, asyncflow.MsgID,
			[]byte) ([]byte, error) {
			fe.handled.Add(1)
			return []byte("ok"), nil
		},
		Logger: quiet,
	})
	require.NoError(f, err)
	f.Cleanup(func() { require.NoError(f, flow.Close()) })

	fe.endpoint, err = NewEndpoint(keys.self.Sender(), flow, EndpointConfig{
		Now:    func() time.Time { return fuzzClock },
		Logger: quiet,
	})
	require.NoError(f, err)
	return fe
}

// acceptedStatuses are the answers the endpoint may give.
var acceptedStatuses = []int{
	http.StatusAccepted, http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound,
	http.StatusRequestEntityTooLarge,
}

// FuzzEndpoint drives the whole http.Handler, in front of a Flow, with
// arbitrary paths and bodies. No input panics; each costs allocations
// within allocationBound; the answer is a known status, and when it is a
// refusal, a single bounded line; and a refused input changes nothing:
// the store records no change and the handler does not run.
func FuzzEndpoint(f *testing.F) {
	warmUpVerifiers(f)
	fe := newFuzzEndpoint(f)
	keys := newFuzzKeys(f)
	// A call of today's id is processed (the committed seeds' ids are
	// outside the Flow's dedup window by now), so that the accepting path
	// is fuzzed too.
	today, err := asyncflow.NewMsgID(time.Now())
	require.NoError(f, err)
	arg := asyncflow.NewMessage{MsgID: today, Payload: []byte("hi")}.AppendCandid(nil)
	f.Add(callPath(keys.self.Sender()), encode(f, signed(keys.peer,
		fuzzCall(keys, keys.peer, asyncflow.MethodNewMessage, arg))))

	f.Fuzz(func(t *testing.T, path string, body []byte) {
		changes, handled := len(fe.store.changeLog()), fe.handled.Load()
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		r.URL.Path = path
		w := httptest.NewRecorder()

		used := allocated(func() { fe.endpoint.ServeHTTP(w, r) })

		require.LessOrEqual(t, used, allocationBound(len(path)+len(body)),
			"a %d-byte request allocated %d bytes", len(path)+len(body), used)
		require.Contains(t, acceptedStatuses, w.Code)
		if w.Code == http.StatusAccepted {
			return
		}
		reason := w.Body.String()
		require.NotContains(t, reason, "\n")
		require.LessOrEqual(t, len(reason), maxReasonBytes+len("..."))
		require.Len(t, fe.store.changeLog(), changes, "a refused input changed the store")
		require.Equal(t, handled, fe.handled.Load(), "a refused input ran the handler")
	})
}
