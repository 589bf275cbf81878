package main

import (
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/asyncflow/asyncflow"
)

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
	text("seed", fmt.Sprintf("%d (--seed fixes each proxy's sequence of decisions)", s.Seed))
	text("state folder", s.StateDir+" (identities and store files; removed on exit)")
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
