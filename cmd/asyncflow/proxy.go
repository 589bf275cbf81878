package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asyncflow/asyncflow/ic"
)

// maxProxyAnswer bounds the endpoint answer the proxy copies back: a
// refusal is one short line, an acceptance is empty.
const maxProxyAnswer = 64 << 10

// faultRates are the probabilities, each in [0, 1], of what the faulty
// proxy does to one request.
type faultRates struct {
	// drop answers 202 Accepted without forwarding: the sender believes
	// the call arrived.
	drop float64
	// duplicate forwards the request twice.
	duplicate float64
	// corrupt flips one random bit of the body before forwarding.
	corrupt float64
}

// fate is what the proxy decided to do with one request.
type fate struct {
	drop      bool
	duplicate bool
	// flip is the index of the body bit to flip, or -1.
	flip int
}

// proxyCounts counts what the proxy did. Safe for concurrent use.
type proxyCounts struct {
	requests   atomic.Uint64
	dropped    atomic.Uint64
	duplicated atomic.Uint64
	corrupted  atomic.Uint64
	// refused counts forwards the endpoint answered with an error status.
	refused atomic.Uint64
	// caught counts corrupted requests the endpoint refused; slipped
	// counts corrupted requests it accepted anyway.
	caught  atomic.Uint64
	slipped atomic.Uint64
	// unreachable counts forwards that got no answer from the endpoint.
	unreachable atomic.Uint64
}

// faultyProxy is an http.Handler in front of one endpoint that drops,
// duplicates and corrupts the submissions passing through it, drawing its
// decisions from a seeded generator. It is safe for concurrent use; the
// seed fixes the sequence of decisions, not which request gets which,
// since requests arrive concurrently.
type faultyProxy struct {
	rates  faultRates
	client *http.Client
	counts proxyCounts

	mu  sync.Mutex
	rng *rand.Rand

	// target is the endpoint's base URL, set by start before serving.
	target string
	ln     net.Listener
	server *http.Server
	served chan error

	// handlers counts requests being served; closing, set under mu, stops
	// new ones from counting themselves in once close waits for them.
	handlers sync.WaitGroup
	closing  bool
}

// listenProxy opens the proxy's loopback listener, so that its URL is
// known before the endpoint behind it exists. stream tells apart the
// generators of proxies that share a seed.
func listenProxy(rates faultRates, seed, stream uint64) (*faultyProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy: listening on loopback: %w", err)
	}

	// The endpoint behind is one host: keep enough connections to it
	// alive that concurrent forwards do not open a new one each time.
	transport := &http.Transport{
		MaxIdleConns:        64,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
	}
	return &faultyProxy{
		rates:  rates,
		client: &http.Client{Transport: transport, Timeout: 30 * time.Second},
		rng:    rand.New(rand.NewPCG(seed, stream)),
		ln:     ln,
	}, nil
}

// url is the base URL senders use to reach the endpoint through the proxy.
func (p *faultyProxy) url() string {
	return "http://" + p.ln.Addr().String()
}

// start forwards to the endpoint at the base URL target from now on.
func (p *faultyProxy) start(target string) {
	p.target = target
	p.server = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	p.served = make(chan error, 1)
	go func() { p.served <- p.server.Serve(p.ln) }()
}

// close drops every connection at once, requests in flight included, and
// waits for their handlers. A graceful shutdown would wait five seconds
// for connections that the senders' HTTP clients opened and never used.
func (p *faultyProxy) close() error {
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
	defer p.client.CloseIdleConnections()

	if p.server == nil {
		return p.ln.Close()
	}
	err := p.server.Close()
	if serr := <-p.served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	p.handlers.Wait()
	return err
}

// enter counts a request in, unless the proxy is closing.
func (p *faultyProxy) enter() bool {
	p.mu.Lock()
	defer p.mu.Unlock()

	if p.closing {
		return false
	}
	p.handlers.Add(1)
	return true
}

// ServeHTTP reads one submission, decides its fate and carries it out.
func (p *faultyProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !p.enter() {
		http.Error(w, "proxy: closing", http.StatusServiceUnavailable)
		return
	}
	defer p.handlers.Done()

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, ic.DefaultMaxBodyBytes))
	if err != nil {
		http.Error(w, "proxy: body unreadable or too large", http.StatusRequestEntityTooLarge)
		return
	}
	p.counts.requests.Add(1)

	f := p.roll(len(body))
	if f.drop {
		p.counts.dropped.Add(1)
		w.WriteHeader(http.StatusAccepted)
		return
	}
	if f.flip >= 0 {
		p.counts.corrupted.Add(1)
		body[f.flip/8] ^= 1 << (f.flip % 8)
	}

	a := p.forward(r, body)
	p.noteCorruption(f, a)
	if f.duplicate {
		p.counts.duplicated.Add(1)
		p.forward(r, body)
	}
	a.write(w)
}

// roll draws the fate of a request whose body has size bytes. It draws
// the same three numbers for every request, so that one seed gives one
// sequence of decisions.
func (p *faultyProxy) roll(size int) fate {
	p.mu.Lock()
	defer p.mu.Unlock()

	f := fate{flip: -1}
	f.drop = p.rng.Float64() < p.rates.drop
	f.duplicate = p.rng.Float64() < p.rates.duplicate
	if p.rng.Float64() < p.rates.corrupt && size > 0 {
		f.flip = p.rng.IntN(8 * size)
	}
	return f
}

// noteCorruption counts whether the endpoint caught a corrupted body.
func (p *faultyProxy) noteCorruption(f fate, a proxyAnswer) {
	switch {
	case f.flip < 0:
	case a.status >= http.StatusBadRequest:
		p.counts.caught.Add(1)
	default:
		p.counts.slipped.Add(1)
	}
}

// proxyAnswer is the endpoint's answer, copied back to the sender.
type proxyAnswer struct {
	status      int
	contentType string
	body        []byte
}

// write copies the answer to the sender.
func (a proxyAnswer) write(w http.ResponseWriter) {
	if a.contentType != "" {
		w.Header().Set("Content-Type", a.contentType)
	}
	w.WriteHeader(a.status)
	_, _ = w.Write(a.body)
}

// forward submits body to the endpoint at the request's path and returns
// its answer, or a 502 when it could not be reached.
func (p *faultyProxy) forward(r *http.Request, body []byte) proxyAnswer {
	req, err := http.NewRequestWithContext(r.Context(), r.Method,
		p.target+r.URL.EscapedPath(), bytes.NewReader(body))
	if err != nil {
		return p.unreachable(err)
	}
	req.Header.Set("Content-Type", r.Header.Get("Content-Type"))

	resp, err := p.client.Do(req)
	if err != nil {
		return p.unreachable(err)
	}
	defer resp.Body.Close()

	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxProxyAnswer))
	if err != nil {
		return p.unreachable(err)
	}
	// Drain what the limit left, so that the connection can be reused.
	_, _ = io.Copy(io.Discard, resp.Body)

	if resp.StatusCode >= http.StatusBadRequest {
		p.counts.refused.Add(1)
	}
	return proxyAnswer{status: resp.StatusCode,
		contentType: resp.Header.Get("Content-Type"), body: answer}
}

// unreachable counts a forward that got no answer and makes the 502 the
// sender receives.
func (p *faultyProxy) unreachable(err error) proxyAnswer {
	p.counts.unreachable.Add(1)
	return proxyAnswer{status: http.StatusBadGateway, contentType: "text/plain; charset=utf-8",
		body: []byte("proxy: endpoint unreachable: " + err.Error())}
}
