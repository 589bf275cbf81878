package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
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
	ev      *events
	log     *slog.Logger
}

// ackackWait bounds how long send waits for its ackack to be submitted.
const ackackWait = 5 * time.Second

// sendCmd sends one message, waits for its ack on --listen, prints the
// "delivered" line, submits the ackack and exits.
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
	wait := fs.Duration("wait", 30*time.Second, "give up when no ack arrived by then")
	retry := fs.Duration("retry-after", 5*time.Second,
		"resend the message when no ack arrived after this long")
	verbose := fs.Bool("v", false, "log debug detail to stderr")
	if err := parse(fs, args, 0); err != nil {
		return err
	}

	job := sendJob{url: *url, listen: *listen, wait: *wait, retry: *retry, ev: ev,
		log: newLogger(stderr, *verbose, slog.LevelWarn)}
	var err error
	if job.target, err = sendTarget(*to, *url); err != nil {
		return err
	}
	if *listen == "" {
		return usagef("send: --listen is required: the receiver sends its ack there, " +
			"and needs a route to it (serve --peer <this principal>=http://<listen>)")
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
	return job.run(ctx)
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

type sendOutcome struct {
	delivered *asyncflow.Delivery
	corrupt   *asyncflow.Corruption
}

// run starts a node, sends the message and waits for its outcome.
func (j sendJob) run(ctx context.Context) error {
	watch := newWatchTransport()
	outcome := make(chan sendOutcome, 1)
	n, err := startNode(nodeConfig{
		id: j.id, listen: j.listen, routes: map[string]string{j.target.String(): j.url},
		log: j.log, onReject: j.ev.rejected,
		wrap: func(t asyncflow.Transport) asyncflow.Transport {
			watch.next = t
			return watch
		},
		flow: asyncflow.Config{
			OnAck: func(_ context.Context, d asyncflow.Delivery) {
				outcome <- sendOutcome{delivered: &d}
			},
			OnCorrupt: func(_ context.Context, c asyncflow.Corruption) {
				outcome <- sendOutcome{corrupt: &c}
			},
			OnReject:    j.ev.rejected,
			RetryAfter:  j.retry,
			SendTimeout: sendTimeout(j.retry),
		},
	})
	if err != nil {
		return err
	}
	defer n.close()

	msgID, err := n.flow.CallAsync(ctx, j.target, j.payload)
	if err != nil {
		return err
	}
	j.log.Info("sent", "msg_id", msgID.String(), "to", j.target.String(), "ack_url", n.url())

	timer := time.NewTimer(j.wait)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("send: interrupted before message %s was acked", msgID.Decimal())
	case <-timer.C:
		return fmt.Errorf("send: no ack for message %s from %s within %s%s",
			msgID.Decimal(), j.target, j.wait, watch.lastError())
	case err := <-watch.refused:
		return fmt.Errorf("send: %s refused message %s, and would refuse it again: %s",
			j.target, msgID.Decimal(), err.Reason)
	case o := <-outcome:
		if o.corrupt != nil {
			j.ev.corrupt(*o.corrupt)
			_ = watch.awaitAckAck(ctx, ackackWait)
			return fmt.Errorf("send: message %s was corrupted: hash %s expected, %s reported",
				msgID.Decimal(), o.corrupt.Expected, o.corrupt.Got)
		}
		j.ev.delivered(*o.delivered)
	}

	if err := watch.awaitAckAck(ctx, ackackWait); err != nil {
		j.log.Warn("the ackack was not submitted; the receiver will resend its ack",
			"msg_id", msgID.String(), "err", err)
	}
	return nil
}

// watchTransport passes calls on and notes what the send command waits
// for: the submission of its ackack (send sends one message, so any
// ackack is its), a refusal of its newMessage that a retry cannot change,
// and the last error of its newMessage. The Flow itself warns of the
// first.
type watchTransport struct {
	next    asyncflow.Transport
	ackack  chan error
	refused chan *ic.RefusedError

	mu      sync.Mutex
	lastErr error
}

func newWatchTransport() *watchTransport {
	return &watchTransport{ackack: make(chan error, 1),
		refused: make(chan *ic.RefusedError, 1)}
}

func (w *watchTransport) Route(to principal.Principal) error {
	if r, ok := w.next.(asyncflow.Router); ok {
		return r.Route(to)
	}
	return nil
}

func (w *watchTransport) Send(ctx context.Context, to principal.Principal, method string,
	arg []byte) error {
	err := w.next.Send(ctx, to, method, arg)

	switch method {
	case asyncflow.MethodNewMessage:
		if err != nil {
			w.mu.Lock()
			w.lastErr = err
			w.mu.Unlock()
		}
		if r, ok := errors.AsType[*ic.RefusedError](err); ok && permanent(r.Status) {
			select {
			case w.refused <- r:
			default:
			}
		}
	case asyncflow.MethodAckAck:
		select {
		case w.ackack <- err:
		default:
		}
	}
	return err
}

// permanent reports whether an HTTP status refuses a call for good: a
// client error other than a timeout or a rate limit.
func permanent(status int) bool {
	return status >= 400 && status < 500 &&
		status != http.StatusRequestTimeout && status != http.StatusTooManyRequests
}

func (w *watchTransport) lastError() string {
	w.mu.Lock()
	defer w.mu.Unlock()

	if w.lastErr == nil {
		return ""
	}
	return fmt.Sprintf(" (last send: %v)", w.lastErr)
}

// awaitAckAck waits for the ackack's submission and returns its error.
func (w *watchTransport) awaitAckAck(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()

	select {
	case err := <-w.ackack:
		return err
	case <-ctx.Done():
		return errors.New("the ackack was not submitted in time")
	}
}
