package asyncflow

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aviate-labs/agent-go/principal"
)

// Deliver implements Inbound: a transport hands it each call it accepted,
// with the caller it authenticated. It decodes the argument and applies
// the protocol.
//
// It returns an error, having changed nothing and run no handler, when:
// the Flow is closed (ErrClosed); the caller cannot be a peer
// (ErrInvalidPrincipal); the method is not one of the three
// (ErrUnknownMethod); the argument does not decode (ErrInvalidCandid,
// ErrInvalidMsgID); a payload is over MaxPayload (ErrPayloadTooLarge); a
// new message's id is outside the dedup window (ErrOutsideWindow); a new
// message arrives with no Handler configured (ErrNoHandler) or from a
// caller the transport has no route back to (ErrNoRoute); an ack comes
// from a principal other than the message's target (ErrNotPeer); or the
// store fails, so that the transport can refuse the call and the peer
// sends it again. Each refusal but the last is also reported to OnReject.
//
// Handler errors are not returned: the call was valid, and the sender's
// retry will bring the message back.
//
// The handler and the callbacks get ctx's values but not its cancellation:
// a transport's request context ends when the peer stops waiting, and the
// work a valid call started is finished and recorded all the same. Close
// cancels them.
func (f *Flow) Deliver(ctx context.Context, caller principal.Principal, method string,
	arg []byte) error {
	call, err := f.enter(context.WithoutCancel(ctx))
	if err != nil {
		return err
	}
	defer f.leave(call)
	ctx = call

	if err := CheckPeer(caller); err != nil {
		return f.refuse(Rejection{Method: method}, err)
	}

	switch method {
	case MethodNewMessage:
		var m NewMessage
		err := m.UnmarshalCandid(arg)
		if err == nil {
			err = f.checkPayload("payload", m.Payload)
		}
		if err != nil {
			return f.refuse(Rejection{From: caller, Method: method}, err)
		}
		return f.handleNewMessage(ctx, caller, m)
	case MethodAck:
		var m Ack
		err := m.UnmarshalCandid(arg)
		if err == nil {
			err = f.checkPayload("ack payload", m.Payload)
		}
		if err != nil {
			return f.refuse(Rejection{From: caller, Method: method}, err)
		}
		return f.handleAck(ctx, caller, m)
	case MethodAckAck:
		var m AckAck
		if err := m.UnmarshalCandid(arg); err != nil {
			return f.refuse(Rejection{From: caller, Method: method}, err)
		}
		return f.handleAckAck(ctx, caller, m)
	}
	err = fmt.Errorf("%w: %q", ErrUnknownMethod, method)
	return f.refuse(Rejection{From: caller, Method: method}, err)
}

// refuse reports the refusal r for err and returns err.
func (f *Flow) refuse(r Rejection, err error) error {
	r.Reason = err.Error()
	f.reject(r)
	return err
}

// handleNewMessage processes a new message once per (caller, id): an id
// already processed gets its stored ack again, and an id being processed
// right now is left to the call that is processing it.
func (f *Flow) handleNewMessage(ctx context.Context, caller principal.Principal,
	m NewMessage) error {
	err := checkWindow(m.MsgID, time.Now(), f.cfg.DedupWindow, f.cfg.MaxClockSkew)
	if err != nil {
		return f.refuse(Rejection{From: caller, MsgID: m.MsgID, HasMsgID: true,
			Method: MethodNewMessage}, err)
	}

	if r, ok := f.cfg.Transport.(Router); ok {
		if err := r.Route(caller); err != nil {
			err = fmt.Errorf("no route back to the caller for the ack: %w", err)
			return f.refuse(Rejection{From: caller, MsgID: m.MsgID, HasMsgID: true,
				Method: MethodNewMessage}, err)
		}
	}

	key := inKey(caller, m.MsgID)
	if !f.processing.add(key) {
		f.stats.duplicates.Add(1)
		return nil
	}
	defer f.processing.remove(key)

	rec, err := f.store.Incoming(ctx, caller, m.MsgID)
	switch {
	case errors.Is(err, ErrNotFound):
		// The retry loop may have expired the record since the window was
		// checked: a second look, after the lookup, sees it left.
		err := checkWindow(m.MsgID, time.Now(), f.cfg.DedupWindow, f.cfg.MaxClockSkew)
		if err != nil {
			return f.refuse(Rejection{From: caller, MsgID: m.MsgID, HasMsgID: true,
				Method: MethodNewMessage}, err)
		}
		return f.process(ctx, caller, m)
	case err != nil:
		return fmt.Errorf("asyncflow: reading message %s from %s: %w", m.MsgID, caller, err)
	}

	if decideNewMessage(&rec) == newDuplicate {
		f.stats.duplicates.Add(1)
		f.sendAck(rec, false)
	}
	return nil
}

// process runs the handler on an unseen message, commits the result and
// only then sends the ack.
func (f *Flow) process(ctx context.Context, caller principal.Principal, m NewMessage) error {
	if f.cfg.Handler == nil {
		err := fmt.Errorf("%w for message %s", ErrNoHandler, m.MsgID)
		return f.refuse(Rejection{From: caller, MsgID: m.MsgID, HasMsgID: true,
			Method: MethodNewMessage}, err)
	}

	key, hash := inKey(caller, m.MsgID), HashOf(m.Payload).Value
	rec, ok := f.unsaved.take(key, hash)
	if !ok {
		ack, err := f.runHandler(ctx, caller, m)
		if err != nil {
			f.stats.handlerErrors.Add(1)
			f.log.Warn("asyncflow: handler failed; the message stays unprocessed",
				"from", caller.String(), "msg_id", m.MsgID.String(), "err", err)
			return nil
		}
		rec = Incoming{From: caller, MsgID: m.MsgID, PayloadHash: hash, Ack: ack,
			State: InAcking, Attempts: 1}
	}

	// The handler succeeded: its result is committed even if the caller
	// gave up or the Flow is closing meanwhile, or the next retry would
	// run the handler again. A failed commit keeps the result for the
	// next attempt.
	rec.NextSend = time.Now().Add(f.cfg.RetryAfter)
	if err := f.commit(context.WithoutCancel(ctx), rec); err != nil {
		if !f.unsaved.keep(key, rec, f.windowStart()) {
			f.log.Warn("asyncflow: too many results wait for their commit; this one is "+
				"dropped and its handler will run again", "from", caller.String(),
				"msg_id", m.MsgID.String())
		}
		return err
	}
	f.poke()

	f.stats.processed.Add(1)
	if f.cfg.OnProcessed != nil {
		f.logPanic(guard("OnProcessed", func() {
			f.cfg.OnProcessed(Processed{From: caller, MsgID: m.MsgID, Payload: m.Payload,
				Ack: rec.Ack})
		}))
	}
	f.sendAck(rec, true)
	return nil
}

// windowStart returns the oldest id time inside the dedup window now.
func (f *Flow) windowStart() time.Time {
	return time.Now().Add(-f.cfg.DedupWindow)
}

// maxUnsaved bounds how many handler results a Flow keeps while their
// commits fail: a store that fails for long then costs at most that many
// results' memory, and the handlers of the rest run again.
const maxUnsaved = 4096

// unsavedResults holds handler results whose commit failed, so that the
// sender's next attempt commits them instead of running the handler again.
// It is safe for concurrent use.
type unsavedResults struct {
	// n is len(recs), read without mu so that take can skip the lock in
	// the common case of no failed commit. A result kept for a key is
	// seen: its keep ended before the processing of the key's next
	// attempt began.
	n    atomic.Int32
	mu   sync.Mutex
	recs map[recordKey]Incoming
}

// take removes and returns the result kept for key, if it was computed
// from a payload of the hash payloadHash; a result from other bytes is
// dropped, and the handler runs on the bytes that came now.
func (u *unsavedResults) take(key recordKey, payloadHash uint32) (Incoming, bool) {
	if u.n.Load() == 0 {
		return Incoming{}, false
	}

	u.mu.Lock()
	defer u.mu.Unlock()

	rec, ok := u.recs[key]
	if !ok {
		return Incoming{}, false
	}
	delete(u.recs, key)
	u.n.Store(int32(len(u.recs)))
	return rec, rec.PayloadHash == payloadHash
}

// keep holds rec under key. When full, it first drops the results whose
// ids are older than oldest, which no sender can bring back; it reports
// false if rec did not fit all the same.
func (u *unsavedResults) keep(key recordKey, rec Incoming, oldest time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()

	if len(u.recs) >= maxUnsaved {
		for k, r := range u.recs {
			if r.MsgID.Time().Before(oldest) {
				delete(u.recs, k)
			}
		}
		u.n.Store(int32(len(u.recs)))
	}
	if len(u.recs) >= maxUnsaved {
		return false
	}
	if u.recs == nil {
		u.recs = make(map[recordKey]Incoming)
	}
	u.recs[key] = rec
	u.n.Store(int32(len(u.recs)))
	return true
}

// runHandler runs the handler, turning a panic or an answer over
// MaxPayload into an error. A panic is logged here with its stack.
func (f *Flow) runHandler(ctx context.Context, caller principal.Principal,
	m NewMessage) (ack []byte, err error) {
	panicked := guard("handler", func() {
		ack, err = f.cfg.Handler(ctx, caller, m.MsgID, m.Payload)
	})
	switch {
	case panicked != nil:
		f.logPanic(panicked)
		return nil, panicked
	case err != nil:
		return nil, err
	}
	return ack, f.checkPayload("ack payload", ack)
}

// commit stores the record that makes a message processed.
func (f *Flow) commit(ctx context.Context, rec Incoming) error {
	lock := f.lockFor(rec.MsgID)
	lock.Lock()
	defer lock.Unlock()

	if err := f.store.PutIncoming(ctx, rec); err != nil {
		return fmt.Errorf("asyncflow: committing message %s from %s: %w", rec.MsgID,
			rec.From, err)
	}
	return nil
}

// sendAck queues the ack of rec unless its last send has not left yet; it
// reports whether it queued it.
func (f *Flow) sendAck(rec Incoming, first bool) bool {
	return f.sendFor(inKey(rec.From, rec.MsgID), first, rec.From, MethodAck, func() []byte {
		return ackFor(rec).AppendCandid(nil)
	})
}

// handleAckAck stops the ack's resending once the sender confirmed it.
func (f *Flow) handleAckAck(ctx context.Context, caller principal.Principal, m AckAck) error {
	verdict, rec, err := f.settleAckAck(ctx, caller, m)
	switch {
	case err != nil:
		return err
	case verdict == ackackIgnore:
		f.log.Debug("asyncflow: ackack for no acking message", "from", caller.String(),
			"msg_id", m.MsgID.String())
	case verdict == ackackCorrupt:
		f.reportCorrupt(ctx, Corruption{Side: SideReceiver, Peer: caller, MsgID: m.MsgID,
			Sent: rec.Ack, Expected: HashOf(rec.Ack), Got: m.Hash})
	}
	return nil
}

// settleAckAck decides on an ackack under its record's lock and stores
// what the decision changes: the ack is no longer resent.
func (f *Flow) settleAckAck(ctx context.Context, caller principal.Principal,
	m AckAck) (ackackVerdict, Incoming, error) {
	lock := f.lockFor(m.MsgID)
	lock.Lock()
	defer lock.Unlock()

	rec, err := f.store.Incoming(ctx, caller, m.MsgID)
	var held *Incoming
	switch {
	case err == nil:
		held = &rec
	case !errors.Is(err, ErrNotFound):
		return 0, rec, fmt.Errorf("asyncflow: reading message %s from %s: %w", m.MsgID,
			caller, err)
	}

	verdict := decideAckAck(held, m, f.cfg.StrictHash)
	if verdict == ackackIgnore {
		return verdict, rec, nil
	}
	rec.State = InDone
	rec.NextSend = time.Time{}
	if err := f.store.PutIncoming(ctx, rec); err != nil {
		return 0, rec, fmt.Errorf("asyncflow: storing ackack of %s: %w", m.MsgID, err)
	}
	return verdict, rec, nil
}

// resendAck sends a due ack again and moves its due time. An ack whose
// previous send has not left yet is not queued twice. It reports whether
// the record was due and moved.
func (f *Flow) resendAck(ctx context.Context, due Incoming, now time.Time) (bool, error) {
	lock := f.lockFor(due.MsgID)
	lock.Lock()
	defer lock.Unlock()

	rec, err := f.store.Incoming(ctx, due.From, due.MsgID)
	switch {
	case errors.Is(err, ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	case rec.State != InAcking || rec.NextSend.After(now):
		return false, nil
	}

	if f.sendAck(rec, false) {
		rec.Attempts++
		f.stats.resent.Add(1)
	}
	rec.NextSend = now.Add(f.cfg.RetryAfter)
	return true, f.store.PutIncoming(ctx, rec)
}
