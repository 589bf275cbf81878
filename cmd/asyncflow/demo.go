package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aviate-labs/agent-go/identity"

	"github.com/asyncflow/asyncflow"
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

	d, err := startDemo(opts, newLogger(stderr, opts.verbose))
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
	case o.messages < 1:
		return usagef("demo: --messages %d: send at least 1", o.messages)
	case o.window < 1:
		return usagef("demo: --window %d: allow at least 1", o.window)
	case o.retryAfter <= 0:
		return usagef("demo: --retry-after %s must be positive", o.retryAfter)
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
// routing calls to the other through the other's proxy.
func (d *demo) startPeers(idA, idB identity.Identity, log *slog.Logger) error {
	a, err := startNode(nodeConfig{
		id: idA, listen: "127.0.0.1:0", log: log,
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

	b, err := startNode(nodeConfig{
		id: idB, listen: "127.0.0.1:0", log: log,
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
// peers, then the peers, and removes the state folder.
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

// tally records what the peers reported, per message id. It is safe for
// concurrent use.
type tally struct {
	n    int
	done chan struct{} // closed once every message is settled

	mu          sync.Mutex
	sentAt      map[asyncflow.MsgID]time.Time
	ackedAt     map[asyncflow.MsgID]time.Time
	acks        map[asyncflow.MsgID]int
	processes   map[asyncflow.MsgID]int
	corrupt     map[asyncflow.MsgID]bool // held as corrupt by the sender
	mismatched  int                      // echoes that differ from the payload
	flowCorrupt int
	finished    bool
}

func newTally(n int) *tally {
	return &tally{
		n:         n,
		done:      make(chan struct{}),
		sentAt:    make(map[asyncflow.MsgID]time.Time),
		ackedAt:   make(map[asyncflow.MsgID]time.Time),
		acks:      make(map[asyncflow.MsgID]int),
		processes: make(map[asyncflow.MsgID]int),
		corrupt:   make(map[asyncflow.MsgID]bool),
	}
}

// sent records when CallAsync of id began. An ack may be recorded before.
func (t *tally) sent(id asyncflow.MsgID, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()

	t.sentAt[id] = at
}

// acked records a delivery and reports whether it is the first of its id.
func (t *tally) acked(d asyncflow.Delivery) bool {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()

	t.acks[d.MsgID]++
	if !bytes.Equal(d.Received, d.Sent) {
		t.mismatched++
	}
	if t.acks[d.MsgID] > 1 {
		return false
	}
	t.ackedAt[d.MsgID] = now
	t.check()
	return true
}

// processed records that B committed a message.
func (t *tally) processed(p asyncflow.Processed) {
	t.mu.Lock()
	defer t.mu.Unlock()

	t.processes[p.MsgID]++
	t.check()
}

// corrupted records a hash mismatch and reports whether it settles a
// message on the sender's side for the first time.
func (t *tally) corrupted(c asyncflow.Corruption) bool {
	t.mu.Lock()
	defer t.mu.Unlock()

	t.flowCorrupt++
	if c.Side != asyncflow.SideSender || t.corrupt[c.MsgID] {
		return false
	}
	t.corrupt[c.MsgID] = true
	t.check()
	return true
}

// check closes done once every message was settled on the sender's side
// and processed on the receiver's. Call with mu held.
func (t *tally) check() {
	if !t.finished && len(t.ackedAt)+len(t.corrupt) >= t.n && len(t.processes) >= t.n {
		t.finished = true
		close(t.done)
	}
}

// progress returns how many messages were delivered and processed.
func (t *tally) progress() (delivered, processed int) {
	t.mu.Lock()
	defer t.mu.Unlock()

	return len(t.ackedAt), len(t.processes)
}

// outcome is the tally's verdict on the messages.
type outcome struct {
	sent, delivered, processedOnce, processedTwice int
	ackedTwice, mismatched, flowCorrupt            int
	// corruptOnce counts messages the sender holds as corrupt that were
	// nonetheless processed once: not a failure.
	corruptOnce int
	latencies   []time.Duration
}

// outcome sums up the tally.
func (t *tally) outcome() outcome {
	t.mu.Lock()
	defer t.mu.Unlock()

	o := outcome{sent: len(t.sentAt), delivered: len(t.ackedAt), mismatched: t.mismatched,
		flowCorrupt: t.flowCorrupt}
	for id, n := range t.processes {
		switch {
		case n > 1:
			o.processedTwice++
		case t.corrupt[id]:
			o.corruptOnce++
			o.processedOnce++
		default:
			o.processedOnce++
		}
	}
	for id, at := range t.ackedAt {
		if t.acks[id] > 1 {
			o.ackedTwice++
		}
		if start, ok := t.sentAt[id]; ok {
			o.latencies = append(o.latencies, at.Sub(start))
		}
	}
	slices.Sort(o.latencies)
	return o
}

// demoSummary is the demo's result: the "summary" event line, and the
// numbers behind the table on stderr.
type demoSummary struct {
	Event                string  `json:"event"`
	OK                   bool    `json:"ok"`
	Messages             int     `json:"messages"`
	Sent                 int     `json:"sent"`
	Delivered            int     `json:"delivered"`
	ProcessedOnce        int     `json:"processed_once"`
	ProcessedTwice       int     `json:"processed_twice"`
	AckedTwice           int     `json:"acked_twice"`
	EchoMismatches       int     `json:"echo_mismatches"`
	DuplicatesSuppressed uint64  `json:"duplicates_suppressed"`
	Retries              uint64  `json:"retries"`
	ResentByA            uint64  `json:"resent_by_a"`
	ResentByB            uint64  `json:"resent_by_b"`
	CorruptionsDetected  uint64  `json:"corruptions_detected"`
	CorruptRefused       uint64  `json:"corrupt_refused"`
	CorruptByHash        uint64  `json:"corrupt_by_hash"`
	CorruptAccepted      uint64  `json:"corrupt_accepted"`
	ProxyRequests        uint64  `json:"proxy_requests"`
	ProxyDropped         uint64  `json:"proxy_dropped"`
	ProxyDuplicated      uint64  `json:"proxy_duplicated"`
	ProxyCorrupted       uint64  `json:"proxy_corrupted"`
	ProxyRefused         uint64  `json:"proxy_refused"`
	LatencyP50Ms         float64 `json:"latency_p50_ms"`
	LatencyP99Ms         float64 `json:"latency_p99_ms"`
	ElapsedMs            float64 `json:"elapsed_ms"`
	RatePerSecond        float64 `json:"rate_msgs_per_s"`
	StateDir             string  `json:"state_dir"`
	Seed                 uint64  `json:"seed"`
	RetryAfterMs         float64 `json:"retry_after_ms"`
	DefaultRetryAfterMs  float64 `json:"default_retry_after_ms"`

	// missing and unprocessed count the messages not settled; the verdict
	// names them.
	missing, unprocessed int
}

// summarize gathers the tally, the peers' and the proxies' counters.
func (d *demo) summarize(elapsed time.Duration) demoSummary {
	o := d.tally.outcome()
	sa, sb := d.a.flow.Stats(), d.b.flow.Stats()
	pa, pb := &d.proxyA.counts, &d.proxyB.counts

	s := demoSummary{
		Event: "summary", Messages: d.opts.messages, Sent: o.sent,
		Delivered: o.delivered, ProcessedOnce: o.processedOnce,
		ProcessedTwice: o.processedTwice, AckedTwice: o.ackedTwice,
		EchoMismatches: o.mismatched, DuplicatesSuppressed: sb.Duplicates,
		ResentByA: sa.Resent, ResentByB: sb.Resent, Retries: sa.Resent + sb.Resent,
		CorruptRefused:  pa.caught.Load() + pb.caught.Load(),
		CorruptByHash:   uint64(o.flowCorrupt),
		CorruptAccepted: pa.slipped.Load() + pb.slipped.Load(),
		ProxyRequests:   pa.requests.Load() + pb.requests.Load(),
		ProxyDropped:    pa.dropped.Load() + pb.dropped.Load(),
		ProxyDuplicated: pa.duplicated.Load() + pb.duplicated.Load(),
		ProxyCorrupted:  pa.corrupted.Load() + pb.corrupted.Load(),
		ProxyRefused:    pa.refused.Load() + pb.refused.Load(),
		LatencyP50Ms:    millis(percentile(o.latencies, 50)),
		LatencyP99Ms:    millis(percentile(o.latencies, 99)),
		ElapsedMs:       millis(elapsed),
		StateDir:        d.dir, Seed: d.opts.seed,
		RetryAfterMs:        millis(d.opts.retryAfter),
		DefaultRetryAfterMs: millis(asyncflow.DefaultRetryAfter),
	}
	s.CorruptionsDetected = s.CorruptRefused + s.CorruptByHash
	s.RatePerSecond = math.Round(float64(o.delivered) / elapsed.Seconds())
	s.missing = d.opts.messages - o.delivered - o.corruptOnce
	s.unprocessed = d.opts.messages - o.processedOnce - o.processedTwice
	s.OK = s.missing == 0 && s.unprocessed == 0 && o.processedTwice == 0 &&
		o.ackedTwice == 0 && o.mismatched == 0
	return s
}

// verdict returns nil when every message was delivered and processed
// exactly once, and otherwise a one-line error saying what went wrong;
// cause, if set, is why the demo stopped waiting.
func (s demoSummary) verdict(cause error) error {
	var problems []string
	add := func(n int, format string) {
		if n > 0 {
			problems = append(problems, fmt.Sprintf(format, n))
		}
	}
	add(s.missing, "%d of "+fmt.Sprint(s.Messages)+" messages not delivered")
	add(s.unprocessed, "%d not processed")
	add(s.ProcessedTwice, "%d processed more than once")
	add(s.AckedTwice, "%d acked more than once")
	add(s.EchoMismatches, "%d echoed back with other bytes")

	switch {
	case cause == nil && len(problems) == 0:
		return nil
	case cause == nil:
		return fmt.Errorf("demo: %s", strings.Join(problems, ", "))
	case len(problems) == 0:
		return fmt.Errorf("demo: %w", cause)
	}
	return fmt.Errorf("demo: %w: %s", cause, strings.Join(problems, ", "))
}

// print writes the summary table: counts right-aligned in one column,
// each with a note, then the settings needed to understand or replay the
// run.
func (s demoSummary) print(w io.Writer) {
	count := func(label string, n uint64, note string) {
		line := fmt.Sprintf("  %-22s %8d  %s", label, n, note)
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
	measure := func(label, value, note string) {
		line := fmt.Sprintf("  %-22s %8s  %s", label, value, note)
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
	text := func(label, value string) {
		fmt.Fprintf(w, "  %-22s %s\n", label, value)
	}
	share := func(n, of uint64) string {
		return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(max(of, 1)))
	}
	forwarded := s.ProxyRequests - s.ProxyDropped

	fmt.Fprintln(w)
	count("messages sent", uint64(s.Sent), "by A")
	count("delivered", uint64(s.Delivered), "acked to A, the echo matching what was sent")
	count("processed once", uint64(s.ProcessedOnce), s.twiceNote())
	count("duplicates suppressed", s.DuplicatesSuppressed, "by B, not processed again")
	count("retries", s.Retries,
		fmt.Sprintf("A resent %d messages, B resent %d acks", s.ResentByA, s.ResentByB))
	count("corruptions detected", s.CorruptionsDetected,
		fmt.Sprintf("%d refused by the endpoints, %d by hash checks",
			s.CorruptRefused, s.CorruptByHash))
	count("proxy requests", s.ProxyRequests, "")
	count("  dropped", s.ProxyDropped, share(s.ProxyDropped, s.ProxyRequests)+
		" of requests, answered 202 Accepted, not forwarded")
	count("  duplicated", s.ProxyDuplicated, share(s.ProxyDuplicated, forwarded)+
		" of the rest, forwarded twice")
	count("  corrupted", s.ProxyCorrupted, share(s.ProxyCorrupted, forwarded)+
		" of the rest, one bit flipped"+s.acceptedNote())
	count("  refused", s.ProxyRefused, "by the endpoints")
	measure("latency p50", formatMillis(s.LatencyP50Ms), "from CallAsync to OnAck")
	measure("latency p99", formatMillis(s.LatencyP99Ms), "")
	measure("elapsed", formatMillis(s.ElapsedMs), "")
	measure("rate", fmt.Sprint(s.RatePerSecond), "messages/s")
	text("seed", fmt.Sprintf("%d (give it to --seed to replay the proxies' decisions)", s.Seed))
	text("state folder", s.StateDir+" (the identities; messages stay in memory; removed on exit)")
	text("retry delay", fmt.Sprintf("scaled from %s to %s for the demo",
		asyncflow.DefaultRetryAfter, time.Duration(s.RetryAfterMs*float64(time.Millisecond))))
	if s.OK {
		text("result", "every message delivered and processed exactly once")
	}
}

func (s demoSummary) twiceNote() string {
	if s.ProcessedTwice == 0 {
		return "by B, none twice"
	}
	return fmt.Sprintf("by B, and %d more processed TWICE", s.ProcessedTwice)
}

// acceptedNote mentions corrupted requests an endpoint accepted: the
// flipped bit was outside what the signature covers.
func (s demoSummary) acceptedNote() string {
	if s.CorruptAccepted == 0 {
		return ""
	}
	return fmt.Sprintf("; %d of them accepted", s.CorruptAccepted)
}

// percentile returns the p-th percentile of sorted by nearest rank, or 0
// when it is empty.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := (p*len(sorted) + 99) / 100
	return sorted[max(rank, 1)-1]
}

// millis returns d in milliseconds, to a tenth.
func millis(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Millisecond)*10) / 10
}

// formatMillis writes a number of milliseconds as a duration.
func formatMillis(ms float64) string {
	d := time.Duration(ms * float64(time.Millisecond))
	if d >= time.Second {
		d = d.Round(10 * time.Millisecond)
	}
	return d.String()
}

// percent writes a probability as a percentage.
func percent(p float64) string {
	return fmt.Sprintf("%g%%", math.Round(p*1000)/10)
}
