package asyncflow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aviate-labs/agent-go/principal"
)

// DefaultRetryAfter is how long a side waits for the next step of an
// exchange before it sends again. The IC drops a request that waited five
// minutes in a full queue, so resending earlier mostly duplicates traffic.
const DefaultRetryAfter = 5*time.Minute + 30*time.Second

// MinRetryAfter is the smallest RetryAfter New accepts: a shorter delay
// cannot be told from a resend loop.
const MinRetryAfter = 10 * time.Millisecond

// DefaultMaxPayload is the default limit on a message payload and on an
// ack payload: the IC's limit on an ingress message, 2 MiB.
const DefaultMaxPayload = 2 << 20

// DefaultDedupWindow is how long a receiver remembers that it processed an
// id, counted from the id's ULID time: the transaction window of ICRC-1
// ledgers.
const DefaultDedupWindow = 24 * time.Hour

// DefaultMaxClockSkew is how far ahead of the receiver's clock a message
// id's time may be: ICRC-1's permitted drift.
const DefaultMaxClockSkew = 5 * time.Minute

// DefaultGiveUpAfter is how long after a message's id time a sender
// stops resending it, when the dedup window leaves room for it. The hour
// it leaves of DefaultDedupWindow covers MaxClockSkew and a last send that
// waits in the IC's queues: every send reaches a receiver that still
// remembers whether it processed the id.
const DefaultGiveUpAfter = 23 * time.Hour

// DefaultSendWorkers is how many sends a Flow runs at once by default. A
// send to a peer on a durable store lasts about that peer's fsync, so
// fewer workers would leave its group commit with small batches.
const DefaultSendWorkers = 64

// Handler processes a new message from the principal from and returns the
// ack payload: the answer the sender's ack callback receives. An error, a
// panic or an answer over MaxPayload records nothing and sends no ack; the
// sender's next retry brings the message back, and the handler runs again.
// The Flow runs a handler at most once at a time for one (from, id), and
// it returns successfully at most once for it in the life of the store,
// except after a crash between its return and the commit of its result. A
// result whose commit failed is kept in memory and committed by the next
// attempt, without running the handler again; only Close or a crash
// before that attempt loses it.
type Handler func(ctx context.Context, from principal.Principal, id MsgID,
	payload []byte) ([]byte, error)

// Config configures a Flow. The zero value of each optional field selects
// its default; New refuses values that make no sense.
type Config struct {
	// Transport carries outgoing calls. Required.
	Transport Transport

	// Store keeps both sides' state. A Store given here is not closed by
	// the Flow. Default: a new MemoryStore, which the Flow closes on Close
	// and which loses every message and processed id when the process
	// exits; New logs a warning when it picks it. The boltstore package
	// keeps them in a file.
	Store Store

	// Handler processes new messages. A Flow without one only sends: it
	// refuses every new message (ErrNoHandler), and its peers keep
	// resending theirs until they give up.
	Handler Handler

	// OnAck runs when a target confirmed a message with a matching (or
	// absent) hash, after the "acked" state is stored and before the
	// ackack leaves. It runs once per message while the process lives, and
	// again after a restart if the process stopped before forgetting it:
	// at least once across crashes. If it panics, the message stays in the
	// OutAcked state, and the next Flow on the store runs it again.
	OnAck func(ctx context.Context, d Delivery)

	// OnCorrupt runs when a peer reports a hash other than the CRC-32 of
	// what this side sent. On the sender side the message is kept in the
	// OutCorrupt state; to try again, send the payload under a new id with
	// CallAsync and then Forget the old one.
	OnCorrupt func(ctx context.Context, c Corruption)

	// OnGiveUp runs when the sender gives up on a message: no ack came
	// within GiveUpAfter of its id time, or within RetryAfter of its
	// MaxAttempts-th send. The message is stored as OutGivenUp first, is
	// no longer resent, and stays listed by Messages until Forget.
	//
	// A give-up says only that no ack came: the receiver may have
	// processed the message, and may still process a send that is on its
	// way. If its ack arrives later, while the record is kept, the
	// message is settled as usual: OnAck runs, the ackack leaves, and the
	// record is forgotten. Sending the payload again under a new id may
	// therefore have it processed twice; only the receiver can tell.
	//
	// OnGiveUp runs on the Flow's retry loop, which waits for it: it
	// should be quick. It runs once per message while the process lives;
	// a crash between the store and the call loses the call, not the
	// record.
	OnGiveUp func(ctx context.Context, g GiveUp)

	// OnProcessed runs after a new message's record is committed, before
	// its ack leaves.
	OnProcessed func(p Processed)

	// OnReject runs for each inbound message the Flow refuses.
	OnReject func(r Rejection)

	// RetryAfter is how long to wait for the next step before sending
	// again. Default DefaultRetryAfter; at least MinRetryAfter.
	RetryAfter time.Duration

	// DedupWindow is how long a processed id is remembered, counted from
	// its ULID time; the record is removed within RetryAfter after that,
	// and the ack, if still unconfirmed, is no longer resent. A new message
	// whose id is older than the window is refused without running the
	// Handler, since its record may be gone. Default DefaultDedupWindow.
	DedupWindow time.Duration

	// MaxClockSkew is how far ahead of this clock a new message's id time
	// may be; one further ahead is refused. Default DefaultMaxClockSkew;
	// less than DedupWindow.
	MaxClockSkew time.Duration

	// GiveUpAfter is how long after a message's id time the sender keeps
	// resending it; then it gives up (see OnGiveUp). New refuses a value
	// for which GiveUpAfter + MaxClockSkew >= DedupWindow: while the
	// sender still resends, a receiver whose clock runs up to MaxClockSkew
	// ahead must still accept the message and remember whether it
	// processed it. The rule is checked against this Flow's own window and
	// skew, so peers should use the same ones. Default
	// DefaultGiveUpAfter, or, if that breaks the rule, 23/24 of
	// DedupWindow - MaxClockSkew.
	GiveUpAfter time.Duration

	// MaxAttempts is how many times the sender sends a message before it
	// gives up on it, RetryAfter after the last send. Default 0: no limit,
	// only GiveUpAfter.
	MaxAttempts int

	// MaxInFlight is how many messages to one target may be pending, sent
	// and waiting for their ack, at once. CallAsync to a target that has
	// that many waits until one of them is acked, found corrupt, given up
	// or forgotten, or until its context ends; with FailWhenFull it fails
	// at once. Either error wraps ErrTooManyInFlight. Pending messages an
	// earlier Flow left in the store count too, and may exceed the limit
	// if it was lowered. Default DefaultMaxInFlight.
	MaxInFlight int

	// MaxPayload limits the payloads CallAsync accepts, the payloads of
	// new messages that arrive, and the ack payloads a Handler returns.
	// Default DefaultMaxPayload.
	MaxPayload int

	// StrictHash treats an ack or ackack whose hash is absent as a
	// mismatch: OnCorrupt runs and, on the sender, the message moves to
	// OutCorrupt. By default an absent hash is accepted, and a Delivery
	// shows it as absent. A sender answers an ack it can no longer check
	// (after a restart, for a message forgotten before an ack came, or for
	// an id it never sent) with an ackack without a hash, so a strict
	// receiver reports those too.
	StrictHash bool

	// SendWorkers is how many sends run at once. Default
	// DefaultSendWorkers.
	SendWorkers int

	// SendTimeout bounds one submission to the transport. Default 30 s.
	SendTimeout time.Duration

	// Logger receives the Flow's logs. Default: slog.Default().
	Logger *slog.Logger
}

// Processed describes a new message whose processing was committed.
type Processed struct {
	// From is the caller that sent the message.
	From principal.Principal
	// MsgID is the message's id.
	MsgID MsgID
	// Payload is what the handler processed.
	Payload []byte
	// Ack is the handler's answer, which the ack carries.
	Ack []byte
}

// Stats counts what a Flow did since it started. Counters only grow.
type Stats struct {
	// Sent counts first sends of new messages.
	Sent uint64
	// Resent counts retries: newMessages and acks sent again when due.
	Resent uint64
	// Delivered counts acks accepted: ack callbacks started.
	Delivered uint64
	// Processed counts new messages whose processing was committed.
	Processed uint64
	// Duplicates counts newMessages not processed because their id was
	// already processed or being processed.
	Duplicates uint64
	// Corrupt counts hash mismatches detected on either side.
	Corrupt uint64
	// Rejected counts inbound messages refused.
	Rejected uint64
	// HandlerErrors counts handler calls that returned an error.
	HandlerErrors uint64
	// SendErrors counts submissions the transport failed or refused.
	SendErrors uint64
	// GivenUp counts messages the sender gave up on.
	GivenUp uint64
}

type counters struct {
	sent, resent, delivered, processed, duplicates atomic.Uint64
	corrupt, rejected, handlerErrors, sendErrors   atomic.Uint64
	givenUp                                        atomic.Uint64
}

// Flow runs both sides of the asyncflow protocol for one principal: it
// sends messages with CallAsync and processes the ones that Deliver hands
// it. All methods are safe for concurrent use.
type Flow struct {
	cfg       Config
	store     Store
	ownsStore bool
	log       *slog.Logger
	stats     counters

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	queue  *sendQueue
	wake   chan struct{}

	// inFlight counts the pending messages per target.
	inFlight *inFlight

	// locks serialise the read-modify-write of one record; a record's
	// lock is chosen by its id's last two bytes, which are random. A lock
	// is held across a durable write, so there are enough of them that
	// unrelated records rarely wait for each other's fsync.
	locks [4096]sync.Mutex

	// mu guards closed; active counts the calls under way, which Close
	// waits for.
	mu     sync.RWMutex
	closed bool
	active sync.WaitGroup

	// processing holds the incoming records whose handler is running, so
	// that a duplicate arriving meanwhile does not run it again.
	processing keySet

	// unsaved holds the handler results whose commit failed.
	unsaved unsavedResults

	// answers remembers the answers of the messages this Flow settled.
	answers answers

	// sending holds the records whose newMessage or ack is queued or
	// being submitted. The retry loop does not queue them again: under a
	// backlog longer than RetryAfter that would only lengthen it.
	sending keySet
}

// New validates cfg, fills in its defaults and starts a Flow: its send
// workers and its retry loop. Messages left pending or acked in the store
// by an earlier Flow are picked up: acked ones have their callbacks run
// again, pending ones count against MaxInFlight and are resent when due.
func New(cfg Config) (*Flow, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}

	ctx, cancel := context.WithCancel(context.Background())
	f := &Flow{
		cfg:      cfg,
		store:    cfg.Store,
		log:      cfg.Logger,
		ctx:      ctx,
		cancel:   cancel,
		queue:    newSendQueue(),
		wake:     make(chan struct{}, 1),
		inFlight: newInFlight(cfg.MaxInFlight),
	}
	if f.store == nil {
		f.store, f.ownsStore = NewMemoryStore(), true
		f.log.Warn("asyncflow: no Store configured; using a MemoryStore, which loses " +
			"unacked messages and processed ids when the process exits")
	}

	// Only messages acked by an earlier Flow are resumed: listing them in
	// the background could also catch one this Flow acks meanwhile, and
	// run its callback twice.
	acked, err := f.store.ListOutgoing(ctx, OutAcked)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("asyncflow: reading acked messages: %w", err)
	}
	if err := f.countPending(ctx); err != nil {
		cancel()
		return nil, err
	}

	for range cfg.SendWorkers {
		f.wg.Go(f.sendWorker)
	}
	f.wg.Go(f.retryLoop)
	f.wg.Go(func() { f.resumeAcked(acked) })
	return f, nil
}

// countPending counts the pending messages an earlier Flow left against
// their targets' MaxInFlight. The Store has no way to list ids without
// their payloads, so this reads every pending payload once.
func (f *Flow) countPending(ctx context.Context) error {
	pending, err := f.store.ListOutgoing(ctx, OutPending)
	if err != nil {
		return fmt.Errorf("asyncflow: reading pending messages: %w", err)
	}
	for _, rec := range pending {
		f.inFlight.adopt(rec.MsgID, rec.To)
	}
	return nil
}

func (cfg Config) withDefaults() (Config, error) {
	if cfg.Transport == nil {
		return cfg, fmt.Errorf("%w: a Transport is required", ErrInvalidConfig)
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = DefaultRetryAfter
	}
	if cfg.MaxPayload == 0 {
		cfg.MaxPayload = DefaultMaxPayload
	}
	if cfg.DedupWindow == 0 {
		cfg.DedupWindow = DefaultDedupWindow
	}
	if cfg.MaxClockSkew == 0 {
		cfg.MaxClockSkew = DefaultMaxClockSkew
	}
	if cfg.SendWorkers == 0 {
		cfg.SendWorkers = DefaultSendWorkers
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.SendTimeout == 0 {
		cfg.SendTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}

	switch {
	case cfg.RetryAfter < MinRetryAfter:
		return cfg, fmt.Errorf("%w: RetryAfter %s is below the minimum %s", ErrInvalidConfig,
			cfg.RetryAfter, MinRetryAfter)
	case cfg.MaxClockSkew < 0 || cfg.DedupWindow <= cfg.MaxClockSkew:
		return cfg, fmt.Errorf("%w: DedupWindow %s must be longer than MaxClockSkew %s, "+
			"and neither negative", ErrInvalidConfig, cfg.DedupWindow, cfg.MaxClockSkew)
	case cfg.MaxPayload < 0:
		return cfg, fmt.Errorf("%w: MaxPayload %d is negative", ErrInvalidConfig,
			cfg.MaxPayload)
	case cfg.SendWorkers < 0:
		return cfg, fmt.Errorf("%w: SendWorkers %d is negative", ErrInvalidConfig,
			cfg.SendWorkers)
	case cfg.SendTimeout < 0:
		return cfg, fmt.Errorf("%w: SendTimeout %s is negative", ErrInvalidConfig,
			cfg.SendTimeout)
	case cfg.MaxInFlight < 0:
		return cfg, fmt.Errorf("%w: MaxInFlight %d is negative", ErrInvalidConfig,
			cfg.MaxInFlight)
	case cfg.MaxAttempts < 0:
		return cfg, fmt.Errorf("%w: MaxAttempts %d is negative", ErrInvalidConfig,
			cfg.MaxAttempts)
	}
	return cfg.withGiveUp()
}

// withGiveUp fills in GiveUpAfter and checks it against the dedup window,
// which must be valid already.
func (cfg Config) withGiveUp() (Config, error) {
	room := cfg.DedupWindow - cfg.MaxClockSkew
	if cfg.GiveUpAfter == 0 {
		cfg.GiveUpAfter = DefaultGiveUpAfter
		if cfg.GiveUpAfter >= room {
			cfg.GiveUpAfter = room / 24 * 23
		}
	}
	if cfg.GiveUpAfter <= 0 || cfg.GiveUpAfter >= room {
		return cfg, fmt.Errorf("%w: GiveUpAfter %s must be positive, and shorter than "+
			"DedupWindow %s - MaxClockSkew %s", ErrInvalidConfig, cfg.GiveUpAfter,
			cfg.DedupWindow, cfg.MaxClockSkew)
	}
	return cfg, nil
}

// Close stops the Flow: it cancels sends in flight and the contexts of
// running handlers and callbacks, waits for them and for every goroutine
// the Flow started, and closes the store if the Flow created it. State in
// a durable store is kept for the next Flow. Close is idempotent. Calling
// it from a Handler or a callback deadlocks, since Close waits for them to
// return.
func (f *Flow) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	f.mu.Unlock()

	f.cancel()
	f.active.Wait()
	f.queue.close()
	f.wg.Wait()

	if f.ownsStore {
		return f.store.Close()
	}
	return nil
}

// Stats returns the Flow's counters.
func (f *Flow) Stats() Stats {
	c := &f.stats
	return Stats{
		Sent: c.sent.Load(), Resent: c.resent.Load(), Delivered: c.delivered.Load(),
		Processed: c.processed.Load(), Duplicates: c.duplicates.Load(),
		Corrupt: c.corrupt.Load(), Rejected: c.rejected.Load(),
		HandlerErrors: c.handlerErrors.Load(), SendErrors: c.sendErrors.Load(),
		GivenUp: c.givenUp.Load(),
	}
}

// enter marks the start of a call that uses the Flow's state; it fails
// once Close began. The returned context has ctx's values and deadline,
// and ends when ctx does, when Close begins or when leave ends the call.
func (f *Flow) enter(ctx context.Context) (*callContext, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()

	if f.closed {
		return nil, ErrClosed
	}
	f.active.Add(1)
	return &callContext{parent: ctx, also: f.ctx}, nil
}

// leave ends the call that enter started with ctx.
func (f *Flow) leave(ctx *callContext) {
	ctx.end()
	f.active.Done()
}

// lockFor returns the lock that guards the records of id.
func (f *Flow) lockFor(id MsgID) *sync.Mutex {
	n := int(id[len(id)-2])<<8 | int(id[len(id)-1])
	return &f.locks[n%len(f.locks)]
}

// send queues one call that belongs to no record; the send workers
// submit it.
func (f *Flow) send(to principal.Principal, method string, arg []byte) {
	f.queue.push(outCall{to: to, method: method, arg: arg})
}

// sendFor queues the call of the record k, built by arg, unless one is
// already queued or being submitted; it reports whether it queued it.
func (f *Flow) sendFor(k recordKey, first bool, to principal.Principal, method string,
	arg func() []byte) bool {
	if !f.sending.add(k) {
		return false
	}
	f.queue.push(outCall{to: to, method: method, arg: arg(), rec: k, first: first})
	return true
}

// sendWorker submits queued calls until the Flow closes. A failed
// submission is counted and logged, as a warning the first time a record
// is sent: the protocol's retries repair the rest.
func (f *Flow) sendWorker() {
	for {
		c, ok := f.queue.pop()
		if !ok {
			return
		}

		ctx := &callContext{parent: f.ctx, deadline: time.Now().Add(f.cfg.SendTimeout)}
		err := f.cfg.Transport.Send(ctx, c.to, c.method, c.arg)
		ctx.end()
		if c.tracked() {
			f.sending.remove(c.rec)
		}
		if err == nil || f.ctx.Err() != nil {
			continue
		}

		f.stats.sendErrors.Add(1)
		level := slog.LevelDebug
		if c.first {
			level = slog.LevelWarn
		}
		f.log.Log(f.ctx, level, "asyncflow: send failed; it is retried", "to", c.to.String(),
			"method", ShortMethod(c.method), "err", err)
	}
}

// reject counts, logs and reports an inbound message the Flow refused.
func (f *Flow) reject(r Rejection) {
	f.stats.rejected.Add(1)
	attrs := []any{"from", r.From.String(), "method", ShortMethod(r.Method), "reason", r.Reason}
	if r.HasMsgID {
		attrs = append(attrs, "msg_id", r.MsgID.String())
	}
	f.log.Info("asyncflow: message rejected", attrs...)
	if f.cfg.OnReject != nil {
		f.logPanic(guard("OnReject", func() { f.cfg.OnReject(r) }))
	}
}

// guard runs fn, code of the user's, and turns a panic in it into an
// error that carries the stack, so that one bad message cannot take the
// process down. The caller logs it.
func guard(what string, fn func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &panicError{what: what, value: r, stack: debug.Stack()}
		}
	}()

	fn()
	return nil
}

// panicError is a panic recovered from user code.
type panicError struct {
	what  string
	value any
	stack []byte
}

func (e *panicError) Error() string {
	return fmt.Sprintf("%s panicked: %v", e.what, e.value)
}

// logPanic logs what guard recovered, with its stack; other errors are
// left to the caller.
func (f *Flow) logPanic(err error) {
	if p, ok := errors.AsType[*panicError](err); ok {
		f.log.Error("asyncflow: "+p.Error(), "stack", string(p.stack))
	}
}

// checkPayload refuses a payload over the configured limit.
func (f *Flow) checkPayload(what string, p []byte) error {
	if len(p) > f.cfg.MaxPayload {
		return fmt.Errorf("%w: %s of %d bytes is over the limit of %d", ErrPayloadTooLarge,
			what, len(p), f.cfg.MaxPayload)
	}
	return nil
}

// MaxPayload returns the largest payload the Flow accepts and answers
// with: Config.MaxPayload, or its default.
func (f *Flow) MaxPayload() int {
	return f.cfg.MaxPayload
}
