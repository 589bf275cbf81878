package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/aviate-labs/agent-go/identity"

	"github.com/asyncflow/asyncflow"
	"github.com/asyncflow/asyncflow/boltstore"
	"github.com/asyncflow/asyncflow/ic"
)

// progressEvery is how often the progress bar is redrawn.
const progressEvery = 100 * time.Millisecond

// demoOptions are the demo's flags.
type demoOptions struct {
	messages   int
	window     int
	rates      faultRates
	seed       uint64
	retryAfter time.Duration
	timeout    time.Duration
	verbose    bool
}

// demoCmd runs two peers in one process, A sending messages to B through
// faulty proxies and B echoing them back, and checks that every message
// was delivered and processed exactly once. The summary goes to stderr as
// a table and to stdout as one "summary" event line.
func demoCmd(ctx context.Context, args []string, ev *events, stderr io.Writer) (err error) {
	opts, err := parseDemo(args, stderr)
	if err != nil {
		return err
	}

	// The demo's faults are expected: their warnings would only drown the
	// progress bar, so it logs errors alone unless -v is given.
	d, err := startDemo(opts, newLogger(stderr, opts.verbose, slog.LevelError))
	if err != nil {
		return err
	}
	defer func() {
		if cerr := d.close(); err == nil && cerr != nil {
			err = fmt.Errorf("demo: shutting down: %w", cerr)
		}
	}()

	d.announce(stderr)
	start := time.Now()
	cause := d.run(ctx, stderr)
	s := d.summarize(time.Since(start))
	s.print(stderr)
	ev.emit(s)
	return s.verdict(cause)
}

// parseDemo reads and checks the demo's flags.
func parseDemo(args []string, stderr io.Writer) (demoOptions, error) {
	var o demoOptions
	fs := newFlags("demo", stderr)
	fs.IntVar(&o.messages, "messages", 1000, "how many messages A sends to B")
	fs.IntVar(&o.window, "window", 100, "at most this many messages sent and not yet acked")
	fs.Float64Var(&o.rates.drop, "drop", 0.2,
		"probability that a proxy drops a request yet answers 202 Accepted")
	fs.Float64Var(&o.rates.duplicate, "duplicate", 0.1,
		"probability that a proxy forwards a request twice")
	fs.Float64Var(&o.rates.corrupt, "corrupt", 0.01,
		"probability that a proxy flips one bit of a request body")
	fs.Uint64Var(&o.seed, "seed", 0, "seed of the proxies' decisions (0: from the clock)")
	fs.DurationVar(&o.retryAfter, "retry-after", 300*time.Millisecond,
		"retry delay of both peers, scaled down from "+asyncflow.DefaultRetryAfter.String())
	fs.DurationVar(&o.timeout, "timeout", 3*time.Minute,
		"fail if not every message was delivered and processed by then")
	fs.BoolVar(&o.verbose, "v", false, "log debug detail to stderr")
	if err := parse(fs, args, 0); err != nil {
		return o, err
	}

	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixMicro())
	}
	return o, o.check()
}

// check refuses options that leave nothing to demonstrate.
func (o demoOptions) check() error {
	probabilities := []struct {
		name string
		p    float64
	}{{"drop", o.rates.drop}, {"duplicate", o.rates.duplicate}, {"corrupt", o.rates.corrupt}}
	for _, f := range probabilities {
		if !(f.p >= 0 && f.p <= 1) {
			return usagef("demo: --%s %v is not a probability in [0, 1]", f.name, f.p)
		}
	}

	switch {
	case o.rates.drop == 1:
		return usagef("demo: --drop 1 drops every request, so nothing can arrive")
	case o.rates.corrupt == 1:
		return usagef("demo: --corrupt 1 corrupts every request, so nothing can arrive")
	case o.messages < 1:
		return usagef("demo: --messages %d: send at least 1", o.messages)
	case o.window < 1:
		return usagef("demo: --window %d: allow at least 1", o.window)
	case o.retryAfter < asyncflow.MinRetryAfter:
		return usagef("demo: --retry-after %s is below the minimum %s", o.retryAfter,
			asyncflow.MinRetryAfter)
	case o.timeout <= 0:
		return usagef("demo: --timeout %s must be positive", o.timeout)
	}
	return nil
}

// demo is a running demo: two peers, a faulty proxy in front of each
// endpoint, and the tally of what the peers reported.
type demo struct {
	opts   demoOptions
	dir    string
	a, b   *node
	proxyA *faultyProxy // in front of A's endpoint: carries B's acks
	proxyB *faultyProxy // in front of B's endpoint: carries A's messages
	tally  *tally
	window chan struct{}
}

// startDemo makes the state folder and the identities, opens the proxies,
// starts both peers with routes through the proxies, and points each proxy
// at its peer. On error it undoes what it did.
func startDemo(opts demoOptions, log *slog.Logger) (*demo, error) {
	d := &demo{opts: opts, tally: newTally(opts.messages),
		window: make(chan struct{}, opts.window)}
	if err := d.start(log); err != nil {
		return nil, errors.Join(err, d.close())
	}
	return d, nil
}

func (d *demo) start(log *slog.Logger) error {
	dir, err := os.MkdirTemp("", "asyncflow-demo-")
	if err != nil {
		return fmt.Errorf("demo: state folder: %w", err)
	}
	d.dir = dir

	idA, err := demoIdentity(dir, "a.pem")
	if err != nil {
		return err
	}
	idB, err := demoIdentity(dir, "b.pem")
	if err != nil {
		return err
	}

	if d.proxyA, err = listenProxy(d.opts.rates, d.opts.seed, 1); err != nil {
		return err
	}
	if d.proxyB, err = listenProxy(d.opts.rates, d.opts.seed, 2); err != nil {
		return err
	}

	if err := d.startPeers(idA, idB, log); err != nil {
		return err
	}
	d.proxyA.start(d.a.url())
	d.proxyB.start(d.b.url())
	return nil
}

// demoIdentity makes a fresh Ed25519 identity, writes it into dir and
// reads it back, as a peer started from the file would.
func demoIdentity(dir, name string) (identity.Identity, error) {
	pem, _, err := ic.NewIdentityPEM()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, name)
	if err := ic.WriteIdentity(path, pem); err != nil {
		return nil, err
	}
	return ic.LoadIdentity(path)
}

// startPeers starts A, the sender, and B, the echoing receiver, each
// routing calls to the other through the other's proxy and keeping its
// state in a bbolt file in the state folder, as serve and send do.
func (d *demo) startPeers(idA, idB identity.Identity, log *slog.Logger) error {
	storeA, err := boltstore.Open(filepath.Join(d.dir, "a.db"), nil)
	if err != nil {
		return fmt.Errorf("demo: opening the store of peer A: %w", err)
	}
	a, err := startNode(nodeConfig{
		id: idA, listen: "127.0.0.1:0", log: log, store: storeA,
		routes: map[string]string{idB.Sender().String(): d.proxyB.url()},
		flow: asyncflow.Config{
			OnAck:      d.acked,
			OnCorrupt:  d.corrupted,
			RetryAfter: d.opts.retryAfter,
		},
	})
	if err != nil {
		return fmt.Errorf("demo: starting peer A: %w", err)
	}
	d.a = a

	storeB, err := boltstore.Open(filepath.Join(d.dir, "b.db"), nil)
	if err != nil {
		return fmt.Errorf("demo: opening the store of peer B: %w", err)
	}
	b, err := startNode(nodeConfig{
		id: idB, listen: "127.0.0.1:0", log: log, store: storeB,
		routes: map[string]string{idA.Sender().String(): d.proxyA.url()},
		flow: asyncflow.Config{
			Handler:     echo,
			OnProcessed: d.tally.processed,
			OnCorrupt:   d.corrupted,
			RetryAfter:  d.opts.retryAfter,
		},
	})
	if err != nil {
		return fmt.Errorf("demo: starting peer B: %w", err)
	}
	d.b = b
	return nil
}

// close stops the proxies first, so that no call is in flight between the
// peers, then the peers, which close their stores, and removes the state
// folder with the stores' files.
func (d *demo) close() error {
	var err error
	for _, p := range []*faultyProxy{d.proxyA, d.proxyB} {
		if p != nil {
			err = errors.Join(err, p.close())
		}
	}
	for _, n := range []*node{d.a, d.b} {
		if n != nil {
			err = errors.Join(err, n.close())
		}
	}
	if d.dir != "" {
		err = errors.Join(err, os.RemoveAll(d.dir))
	}
	return err
}

// acked is A's ack callback: it records the delivery and frees a place in
// the window.
func (d *demo) acked(_ context.Context, dl asyncflow.Delivery) {
	if d.tally.acked(dl) {
		d.release()
	}
}

// corrupted is both peers' corruption callback. A message the sender
// holds as corrupt gets no ack, so it frees its place in the window too.
func (d *demo) corrupted(_ context.Context, c asyncflow.Corruption) {
	if d.tally.corrupted(c) {
		d.release()
	}
}

func (d *demo) release() {
	select {
	case <-d.window:
	default:
	}
}

// announce says what the demo is about to do.
func (d *demo) announce(w io.Writer) {
	r := d.opts.rates
	fmt.Fprintf(w, "asyncflow demo: A sends %d messages to B, which echoes each one back\n",
		d.opts.messages)
	for _, p := range []struct {
		name  string
		n     *node
		proxy *faultyProxy
	}{{"A", d.a, d.proxyA}, {"B", d.b, d.proxyB}} {
		fmt.Fprintf(w, "  %s  %s\n     endpoint %s, reached through proxy %s\n",
			p.name, p.n.id.Sender(), p.n.url(), p.proxy.url())
	}
	fmt.Fprintf(w, "  the proxies drop %s, duplicate %s and corrupt %s of requests\n",
		percent(r.drop), percent(r.duplicate), percent(r.corrupt))
	fmt.Fprintf(w, "  the peers keep their state in bbolt files in %s, removed at the end\n",
		d.dir)
}

// errTimedOut marks a demo that ran out of time.
var errTimedOut = errors.New("timed out")

// run sends the messages and waits until all of them were delivered and
// processed, ctx ends, or the timeout passes; it draws progress meanwhile.
// It returns nil, or why it stopped waiting.
func (d *demo) run(ctx context.Context, stderr io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var sendErr error
	var sending sync.WaitGroup
	sending.Go(func() {
		if sendErr = d.send(ctx); sendErr != nil {
			cancel()
		}
	})

	err := d.wait(ctx, stderr)
	cancel()
	sending.Wait()
	if sendErr != nil && !errors.Is(sendErr, context.Canceled) {
		return sendErr
	}
	return err
}

// send makes A send the messages, keeping at most --window of them
// unacknowledged, as a caller on the IC must (it allows 500 outstanding
// messages between two canisters). Without a window every message waits
// in A's send queue at once, and each one's latency includes the whole
// queue.
func (d *demo) send(ctx context.Context) error {
	to := d.b.id.Sender()
	for i := range d.opts.messages {
		select {
		case d.window <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}

		start := time.Now()
		id, err := d.a.flow.CallAsync(ctx, to, fmt.Appendf(nil, "message %d", i+1))
		if err != nil {
			return fmt.Errorf("sending message %d: %w", i+1, err)
		}
		d.tally.sent(id, start)
	}
	return nil
}

// wait waits for the tally to complete. On a terminal it redraws the
// progress line meanwhile; elsewhere it draws the last state only.
func (d *demo) wait(ctx context.Context, stderr io.Writer) error {
	timer := time.NewTimer(d.opts.timeout)
	defer timer.Stop()
	var tick <-chan time.Time
	if isTerminal(stderr) {
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		tick = t.C
	}
	defer func() {
		d.drawProgress(stderr)
		fmt.Fprintln(stderr)
	}()

	for {
		select {
		case <-d.tally.done:
			return nil
		case <-ctx.Done():
			return errors.New("interrupted")
		case <-timer.C:
			return fmt.Errorf("%w after %s", errTimedOut, d.opts.timeout)
		case <-tick:
			d.drawProgress(stderr)
		}
	}
}

// isTerminal reports whether w is a terminal, where a line redrawn in
// place reads as progress rather than as a pile of lines.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}

// drawProgress redraws the progress line in place.
func (d *demo) drawProgress(w io.Writer) {
	const width = 40
	delivered, processed := d.tally.progress()
	n := d.opts.messages
	filled := min(delivered, n) * width / n
	digits := len(fmt.Sprint(n))
	fmt.Fprintf(w, "\r  delivered %*d/%d [%s%s]  processed %*d", digits, delivered, n,
		strings.Repeat("#", filled), strings.Repeat(".", width-filled), digits, processed)
}
