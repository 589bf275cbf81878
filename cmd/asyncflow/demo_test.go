package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/bits"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// runDemo runs the demo command in-process with a bound on its run time.
func runDemo(t *testing.T, limit time.Duration, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()

	var stdout, stderr bytes.Buffer
	code := run(ctx, append([]string{"demo"}, args...), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestDemoDeliversEveryMessageExactlyOnceThroughFaultyProxies(t *testing.T) {
	code, stdout, stderr := runDemo(t, 2*time.Minute,
		"--messages", "200", "--seed", "7", "--window", "20", "--timeout", "90s")
	require.Equal(t, 0, code, stderr)

	require.Equal(t, 1, strings.Count(stdout, "\n"), "stdout carries the summary line only")
	var summary struct {
		Event           string `json:"event"`
		OK              bool   `json:"ok"`
		Delivered       int    `json:"delivered"`
		ProcessedOnce   int    `json:"processed_once"`
		ProcessedTwice  int    `json:"processed_twice"`
		ProxyDropped    uint64 `json:"proxy_dropped"`
		ProxyDuplicated uint64 `json:"proxy_duplicated"`
		Seed            uint64 `json:"seed"`
		StateDir        string `json:"state_dir"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &summary))
	require.Equal(t, "summary", summary.Event)
	require.True(t, summary.OK)
	require.Equal(t, 200, summary.Delivered)
	require.Equal(t, 200, summary.ProcessedOnce)
	require.Zero(t, summary.ProcessedTwice)
	require.Positive(t, summary.ProxyDropped, "the proxies dropped nothing")
	require.Positive(t, summary.ProxyDuplicated, "the proxies duplicated nothing")
	require.Equal(t, uint64(7), summary.Seed)
	require.Contains(t, stderr, "scaled from 5m30s to 300ms for the demo")
	require.Contains(t, stderr, "keep their state in bbolt files in "+summary.StateDir)
	require.NoDirExists(t, summary.StateDir, "the stores are removed with their folder")
}

func TestDemoRefusesBadFlagsWithOneLineAndExitTwo(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"drop above one", []string{"--drop", "1.5"}, "--drop 1.5 is not a probability"},
		{"negative corrupt", []string{"--corrupt", "-0.1"}, "--corrupt -0.1 is not a"},
		{"no messages", []string{"--messages", "0"}, "--messages 0"},
		{"drop everything", []string{"--drop", "1"}, "nothing can arrive"},
		{"unknown flag", []string{"--bogus"}, "flag provided but not defined: -bogus"},
		{"no window", []string{"--window", "0"}, "--window 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := runDemo(t, 10*time.Second, c.args...)
			require.Equal(t, 2, code)
			require.Empty(t, stdout)
			require.Equal(t, 1, strings.Count(stderr, "\n"), stderr)
			require.Contains(t, stderr, c.want)
		})
	}
}

func TestDemoTimesOutSayingHowManyAreMissing(t *testing.T) {
	// With 99% of requests dropped, five messages cannot all make the
	// round trip in one second.
	code, stdout, stderr := runDemo(t, time.Minute,
		"--messages", "5", "--drop", "0.99", "--timeout", "1s", "--seed", "1")
	require.Equal(t, 1, code)
	require.Equal(t, 1, strings.Count(stdout, "\n"))
	require.Contains(t, stdout, `"ok":false`)

	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	last := lines[len(lines)-1]
	require.Contains(t, last, "demo: timed out after 1s: ")
	require.Contains(t, last, "of 5 messages not delivered")
}

func TestDemoStopsCleanlyWhenInterrupted(t *testing.T) {
	// The context ends long before the 99% dropped requests let five
	// messages through; goleak then checks that nothing was left running.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()

	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"demo", "--messages", "5", "--drop", "0.99", "--seed", "1"},
		&stdout, &stderr)
	require.Equal(t, 1, code)
	require.Contains(t, stdout.String(), `"ok":false`)
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	require.Contains(t, lines[len(lines)-1], "demo: interrupted: ")
}

// backend is an endpoint stand-in that records the bodies it receives
// and answers each with a fixed status.
type backend struct {
	status int

	mu     sync.Mutex
	bodies [][]byte
}

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	b.mu.Lock()
	b.bodies = append(b.bodies, body)
	b.mu.Unlock()

	w.WriteHeader(b.status)
	_, _ = io.WriteString(w, "answer from the endpoint")
}

func (b *backend) received() [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()

	return b.bodies
}

// throughProxy posts body through a proxy with the given rates in front
// of an endpoint answering status, and returns the proxy's answer.
func throughProxy(t *testing.T, rates faultRates, status int, body []byte) (
	*faultyProxy, *backend, int, string) {
	t.Helper()
	be := &backend{status: status}
	server := httptest.NewServer(be)
	t.Cleanup(server.Close)

	p, err := listenProxy(rates, 1, 1)
	require.NoError(t, err)
	p.start(server.URL)
	t.Cleanup(func() { require.NoError(t, p.close()) })

	client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	resp, err := client.Post(p.url()+"/api/v2/canister/aaaaa-aa/call", "application/cbor",
		bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return p, be, resp.StatusCode, string(answer)
}

func TestDemoProxyDropAnswersAcceptedWithoutForwarding(t *testing.T) {
	p, be, status, _ := throughProxy(t, faultRates{drop: 1}, http.StatusAccepted,
		[]byte("call"))

	require.Equal(t, http.StatusAccepted, status)
	require.Empty(t, be.received())
	require.Equal(t, uint64(1), p.counts.requests.Load())
	require.Equal(t, uint64(1), p.counts.dropped.Load())
}

func TestDemoProxyDuplicateForwardsTheSameBodyTwice(t *testing.T) {
	p, be, status, _ := throughProxy(t, faultRates{duplicate: 1}, http.StatusAccepted,
		[]byte("call"))

	require.Equal(t, http.StatusAccepted, status)
	require.Equal(t, [][]byte{[]byte("call"), []byte("call")}, be.received())
	require.Equal(t, uint64(1), p.counts.duplicated.Load())
}

func TestDemoProxyCorruptFlipsOneBitAndPassesTheRefusalBack(t *testing.T) {
	sent := bytes.Repeat([]byte{0x5a}, 100)
	p, be, status, answer := throughProxy(t, faultRates{corrupt: 1}, http.StatusBadRequest,
		bytes.Clone(sent))

	require.Equal(t, http.StatusBadRequest, status)
	require.Equal(t, "answer from the endpoint", answer)
	got := be.received()
	require.Len(t, got, 1)
	require.Len(t, got[0], len(sent))
	flipped := 0
	for i := range sent {
		flipped += bits.OnesCount8(sent[i] ^ got[0][i])
	}
	require.Equal(t, 1, flipped)
	require.Equal(t, uint64(1), p.counts.corrupted.Load())
	require.Equal(t, uint64(1), p.counts.caught.Load())
	require.Equal(t, uint64(1), p.counts.refused.Load())
}

func TestDemoProxyForwardsUnchangedWithoutFaults(t *testing.T) {
	p, be, status, answer := throughProxy(t, faultRates{}, http.StatusAccepted, []byte("call"))

	require.Equal(t, http.StatusAccepted, status)
	require.Equal(t, "answer from the endpoint", answer)
	require.Equal(t, [][]byte{[]byte("call")}, be.received())
	require.Zero(t, p.counts.dropped.Load()+p.counts.duplicated.Load()+
		p.counts.corrupted.Load())
}
