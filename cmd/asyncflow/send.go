package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"

	"github.com/asyncflow/asyncflow"
	"github.com/asyncflow/asyncflow/ic"
)

// sendJob is one run of the send command.
type sendJob struct {
	id      identity.Identity
	target  principal.Principal
	url     string
	listen  string
	payload []byte
	wait    time.Duration
	retry   time.Duration
	// store is where the messages are kept; storePath names its file, and
	// is empty for a memory store.
	store     asyncflow.Store
	storePath string
	ev        *events
	log       *slog.Logger
	stderr    io.Writer
}

// ackackWait bounds how long send waits for its ackacks to be submitted.
const ackackWait = 5 * time.Second

// sendCmd sends one message, waits for its ack on --listen, prints the
// "delivered" line, submits the ackack and exits. Before it sends, it
// resumes what an earlier send left in the same store: messages still
// pending to the same target are resent, and waited for like its own.
// A resumed message the target cannot accept any more is forgotten with
// a warning instead of failing the run: see leftOver and forgetRefused.
func sendCmd(ctx context.Context, args []string, ev *events, stderr io.Writer) error {
	fs := newFlags("send", stderr)
	idPath := fs.String("identity", "", "PEM identity file (required)")
	listen := fs.String("listen", "",
		"address to receive the ack on (required); the receiver needs a --peer route to it")
	to := fs.String("to", "", "principal of the receiver (required)")
	url := fs.String("url", "", "base URL of the receiver's endpoint (required)")
	payloadHex := fs.String("payload-hex", "", "payload as hex")
	payloadFile := fs.String("payload-file", "",
		"file holding the payload bytes, - for standard input (instead of --payload-hex)")
	wait := fs.Duration("wait", 30*time.Second,
		"give up when a message is not acked by then (a --store keeps it for the next send)")
	retry := fs.Duration("retry-after", 5*time.Second,
		"resend the message when no ack arrived after this long")
	verbose := fs.Bool("v", false, "log debug detail to stderr")
	storage := addStoreFlags(fs)
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if err := storage.check(); err != nil {
		return err
	}

	job := sendJob{url: *url, listen: *listen, wait: *wait, retry: *retry, ev: ev,
		log: newLogger(stderr, *verbose, slog.LevelWarn), stderr: stderr}
	var err error
	if job.target, err = sendTarget(*to, *url); err != nil {
		return err
	}
	if *listen == "" {
		return usagef("send: --listen is required: the receiver sends its ack there, " +
			"and needs a route to it (serve --peer <this principal>=http://<listen>)")
	}
	if !given(fs, "payload-hex") && !given(fs, "payload-file") {
		return usagef("send: give the payload with --payload-hex or --payload-file " +
			"(--payload-hex '' sends an empty one)")
	}
	if job.payload, err = readPayload(*payloadHex, *payloadFile); err != nil {
		return err
	}
	if *wait <= 0 {
		return usagef("send: --wait must be positive")
	}
	if err := checkRetryAfter("send", *retry); err != nil {
		return err
	}
	if job.id, err = loadIdentity(*idPath); err != nil {
		return err
	}

	if job.store, job.storePath, err = storage.open(job.id.Sender()); err != nil {
		return err
	}
	return job.run(ctx)
}

// given reports whether the command line set the flag name.
func given(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// readPayload reads the payload from --payload-hex or --payload-file: a
// command line holds at most some 100 KiB, a payload up to 2 MiB.
func readPayload(hexText, file string) ([]byte, error) {
	switch {
	case hexText != "" && file != "":
		return nil, usagef("send: give --payload-hex or --payload-file, not both")
	case file == "":
		p, err := hex.DecodeString(hexText)
		if err != nil {
			return nil, usagef("send: --payload-hex is not hex: %v", err)
		}
		return p, nil
	}

	r := io.Reader(os.Stdin)
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("send: --payload-file: %w", err)
		}
		defer f.Close()
		r = f
	}
	p, err := io.ReadAll(io.LimitReader(r, asyncflow.DefaultMaxPayload+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("send: --payload-file: %w", err)
	case len(p) > asyncflow.DefaultMaxPayload:
		return nil, usagef("send: --payload-file holds more than %d bytes",
			asyncflow.DefaultMaxPayload)
	}
	return p, nil
}

func sendTarget(to, url string) (principal.Principal, error) {
	if to == "" || url == "" {
		return principal.Principal{}, usagef("send: --to and --url are required")
	}
	target, err := ic.ParsePrincipal(to)
	if err != nil {
		return principal.Principal{}, usagef("send: --to: %v", err)
	}
	if err := checkURL(url); err != nil {
		return principal.Principal{}, usagef("send: --url: %v", err)
	}
	return target, nil
}

// run resumes what an earlier send left in the store, starts a node on
// it, sends the message and waits until every message it is responsible
// for is settled. The node closes the store.
func (j sendJob) run(ctx context.Context) (err error) {
	resumed, err := j.leftOver(ctx)
	if err != nil {
		return errors.Join(err, j.store.Close())
	}

	w := newWatch(j.target, resumed)
	n, err := startNode(nodeConfig{
		id: j.id, listen: j.listen, routes: map[string]string{j.target.String(): j.url},
		store: w.wrapStore(j.store), log: j.log, onReject: j.ev.rejected,
		wrap: w.wrapTransport,
		flow: asyncflow.Config{
			OnAck: func(_ context.Context, d asyncflow.Delivery) {
				j.ev.delivered(d)
				w.delivered(d.MsgID)
			},
			OnCorrupt: func(_ context.Context, c asyncflow.Corruption) {
				j.ev.corrupt(c)
				w.corrupted(c)
			},
			OnReject:    j.ev.rejected,
			RetryAfter:  j.retry,
			SendTimeout: sendTimeout(j.retry),
		},
	})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := n.close(); err == nil && cerr != nil {
			err = fmt.Errorf("send: shutting down: %w", cerr)
		}
	}()

	msgID, err := n.flow.CallAsync(ctx, j.target, j.payload)
	if err != nil {
		return err
	}
	w.expect(msgID)
	j.log.Info("sent", "msg_id", msgID.String(), "to", j.target.String(), "ack_url", n.url())

	if err := j.awaitSettled(ctx, w, msgID, n.flow.Forget); err != nil {
		return err
	}
	j.awaitAckAcks(ctx, w)
	return w.corruptErr()
}

// leftOver reads what an earlier send left in the store, before a Flow
// starts on it, and returns the messages this send is responsible for:
// the acked ones, whose ack callbacks the Flow runs again when it starts,
// and the pending ones to the target, which it makes due at once. Pending
// messages to other principals stay as they are, with a warning: this
// send has no route to them.
//
// A pending message to the target whose id is older than the default
// dedup window is forgotten with a warning, not resumed: a receiver with
// that window refuses it for good, so resending it could only end in
// forgetRefused. Forgetting it here saves the round trip and keeps one
// rule, that a message the receiver cannot accept any more is dropped.
// A receiver with a longer window would still have accepted it; the
// CLI's serve always has the default.
func (j sendJob) leftOver(ctx context.Context) ([]asyncflow.MsgID, error) {
	acked, err := j.store.ListOutgoing(ctx, asyncflow.OutAcked)
	if err != nil {
		return nil, fmt.Errorf("send: reading acked messages: %w", err)
	}
	pending, err := j.store.ListOutgoing(ctx, asyncflow.OutPending)
	if err != nil {
		return nil, fmt.Errorf("send: reading pending messages: %w", err)
	}

	var ids []asyncflow.MsgID
	for _, m := range acked {
		ids = append(ids, m.MsgID)
	}
	elsewhere := map[string]int{}
	now := time.Now()
	for _, m := range pending {
		if !m.To.Equal(j.target) {
			elsewhere[m.To.String()]++
			continue
		}
		if stale(m.MsgID, now) {
			if err := j.forgetStale(ctx, m.MsgID, now); err != nil {
				return nil, err
			}
			continue
		}
		// Left due when it was, the message would wait for the retry delay
		// of the send that left it, which may be longer than --wait.
		m.NextSend = now
		if err := j.store.PutOutgoing(ctx, m); err != nil {
			return nil, fmt.Errorf("send: resuming message %s: %w", m.MsgID.Decimal(), err)
		}
		ids = append(ids, m.MsgID)
	}

	for _, to := range slices.Sorted(maps.Keys(elsewhere)) {
		j.log.Warn("messages an earlier send left for another principal stay pending; "+
			"a send --to that principal with this store resumes them",
			"count", elsewhere[to], "to", to, "store", j.storePath)
	}
	if len(ids) > 0 {
		fmt.Fprintf(j.stderr, "asyncflow: resuming %s left in %s by an earlier send\n",
			count(len(ids), "message"), j.storePath)
	}
	return ids, nil
}

// stale reports whether a receiver with the default dedup window refuses
// the message id at now, as too old.
func stale(id asyncflow.MsgID, now time.Time) bool {
	return id.Time().Before(now.Add(-asyncflow.DefaultDedupWindow))
}

// forgetStale deletes a stale pending message from the store, with a
// warning. It runs before the Flow starts, which would otherwise resend
// it, so it deletes the record itself.
func (j sendJob) forgetStale(ctx context.Context, id asyncflow.MsgID, now time.Time) error {
	if err := j.store.DeleteOutgoing(ctx, id); err != nil {
		return fmt.Errorf("send: forgetting stale message %s: %w", id.Decimal(), err)
	}
	j.log.Warn("forgot a message an earlier send left: it is older than the default "+
		"dedup window, and the receiver would refuse it; no ack will say whether "+
		"it was processed",
		"msg_id", id.Decimal(), "to", j.target.String(),
		"age", now.Sub(id.Time()).Round(time.Second),
		"window", asyncflow.DefaultDedupWindow)
	return nil
}

// awaitSettled waits until every message w expects is settled. It fails
// when --wait passes, ctx ends, or the target refuses own, this run's own
// message, for good; the messages not settled stay pending in the store.
// A resumed message that the target refuses for good does not fail the
// run once own got through: forget forgets it, as forgetRefused says.
func (j sendJob) awaitSettled(ctx context.Context, w *watch, own asyncflow.MsgID,
	forget func(context.Context, asyncflow.MsgID) error) error {
	timer := time.NewTimer(j.wait)
	defer timer.Stop()

	for {
		open, refusals := w.unsettled()
		if i := slices.IndexFunc(refusals, func(r refusal) bool { return r.id == own }); i >= 0 {
			return fmt.Errorf("send: %s refused message %s, and would refuse it again: %s%s",
				j.target, own.Decimal(), refusals[i].err.Reason, j.resumeNote(open))
		}
		if len(refusals) > 0 && !slices.Contains(open, own) {
			for _, r := range refusals {
				if err := j.forgetRefused(ctx, w, r, forget); err != nil {
					return err
				}
			}
			continue // open still holds the messages just forgotten
		}
		if len(open) == 0 {
			return nil
		}

		select {
		case <-w.changed:
		case <-ctx.Done():
			return fmt.Errorf("send: interrupted before an ack for %s%s", messages(open),
				j.resumeNote(open))
		case <-timer.C:
			return fmt.Errorf("send: no ack for %s from %s within %s%s%s", messages(open),
				j.target, j.wait, w.lastError(), j.resumeNote(open))
		}
	}
}

// forgetRefused forgets a resumed message that the target refused for
// good, with a warning, and notes it in w as settled. Keeping it would
// only block the store: every later send with it would resume it, meet
// the same refusal and fail, and no command removes it. Whether the
// target processed it on an earlier attempt, no ack will say.
//
// It runs only once this run's own message got through. A refusal that
// meets the own message too may come from this run's setup, such as a
// --url that names the wrong server or a receiver without the --peer
// route back, and the resumed messages then stay for the next send.
func (j sendJob) forgetRefused(ctx context.Context, w *watch, r refusal,
	forget func(context.Context, asyncflow.MsgID) error) error {
	if err := forget(ctx, r.id); err != nil {
		return fmt.Errorf("send: forgetting message %s, which %s refused for good: %w",
			r.id.Decimal(), j.target, err)
	}
	w.dropped(r.id)
	j.log.Warn("forgot a message an earlier send left: the receiver refused it, "+
		"and would refuse it again",
		"msg_id", r.id.Decimal(), "to", j.target.String(), "refusal", r.err.Reason)
	return nil
}

// resumeNote tells where the messages open stay pending, for an error
// that gives up on them. A memory store loses them.
func (j sendJob) resumeNote(open []asyncflow.MsgID) string {
	if j.storePath == "" || len(open) == 0 {
		return ""
	}
	they, them := "they stay", "them"
	if len(open) == 1 {
		they, them = "it stays", "it"
	}
	return fmt.Sprintf("; %s pending in %s, and the next send with that store resends %s",
		they, j.storePath, them)
}

// awaitAckAcks waits, at most ackackWait, until the ackack of every
// message w expects was submitted, and warns of each that was not: its
// receiver resends the ack until one arrives.
func (j sendJob) awaitAckAcks(ctx context.Context, w *watch) {
	ctx, cancel := context.WithTimeout(ctx, ackackWait)
	defer cancel()

	for !w.ackacksDone() && ctx.Err() == nil {
		select {
		case <-w.changed:
		case <-ctx.Done():
		}
	}

	for _, f := range w.ackackFailures() {
		j.log.Warn("the ackack was not submitted; the receiver will resend its ack",
			"msg_id", f.id.String(), "err", f.err)
	}
}

// messages names message ids in an error.
func messages(ids []asyncflow.MsgID) string {
	if len(ids) == 1 {
		return "message " + ids[0].Decimal()
	}
	names := make([]string, len(ids))
	for i, id := range ids {
		names[i] = id.Decimal()
	}
	return fmt.Sprintf("%d messages (%s)", len(ids), strings.Join(names, ", "))
}

// count renders n things, such as "1 message" or "2 messages".
func count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}
