package asyncflow

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aviate-labs/agent-go/principal"
)

// CallAsync sends payload to the principal target as a new message and
// returns its id. The message is in the store before CallAsync returns and
// before its first send; the send itself happens in the background, and is
// repeated every RetryAfter until the target's ack arrives. When it does,
// OnAck (or, on a hash mismatch, OnCorrupt) runs. If it does not come
// within GiveUpAfter or MaxAttempts sends, OnGiveUp runs.
//
// While target has MaxInFlight messages pending, CallAsync waits for one
// of them to settle, in the order the calls came, until ctx ends; with
// the option FailWhenFull it does not wait. Either way it then returns an
// error wrapping ErrTooManyInFlight, and, if ctx ended, ctx's error too.
//
// CallAsync refuses an empty or anonymous target (ErrInvalidPrincipal), a
// payload over MaxPayload (ErrPayloadTooLarge), and a target the transport
// has no route to (ErrNoRoute), before storing anything.
func (f *Flow) CallAsync(ctx context.Context, target principal.Principal,
	payload []byte, opts ...CallOption) (MsgID, error) {
	if err := CheckPeer(target); err != nil {
		return MsgID{}, err
	}
	if err := f.checkPayload("payload", payload); err != nil {
		return MsgID{}, err
	}
	var o callOptions
	for _, opt := range opts {
		opt(&o)
	}
	call, err := f.enter(ctx)
	if err != nil {
		return MsgID{}, err
	}
	defer f.leave(call)
	ctx = call

	if r, ok := f.cfg.Transport.(Router); ok {
		if err := r.Route(target); err != nil {
			return MsgID{}, err
		}
	}

	if err := f.inFlight.reserve(ctx, target, !o.failWhenFull); err != nil {
		if f.ctx.Err() != nil {
			return MsgID{}, ErrClosed
		}
		return MsgID{}, err
	}
	rec, err := f.storeNew(ctx, target, payload)
	if err != nil {
		return MsgID{}, err
	}
	f.poke()

	f.stats.sent.Add(1)
	f.sendMessage(rec, true)
	return rec.MsgID, nil
}

// CallOption changes how one CallAsync behaves.
type CallOption func(*callOptions)

type callOptions struct {
	failWhenFull bool
}

// FailWhenFull makes CallAsync fail at once with ErrTooManyInFlight when
// the target has MaxInFlight messages pending, instead of waiting for one
// of them to settle.
func FailWhenFull() CallOption {
	return func(o *callOptions) { o.failWhenFull = true }
}

// storeNew stores a new message to target in the in-flight slot reserved
// for it, and returns its record. On failure the slot is given back.
func (f *Flow) storeNew(ctx context.Context, target principal.Principal,
	payload []byte) (Outgoing, error) {
	now := time.Now()
	id, err := NewMsgID(now)
	if err != nil {
		f.inFlight.unreserve(target)
		return Outgoing{}, err
	}
	rec := Outgoing{
		MsgID:    id,
		To:       target,
		Payload:  payload,
		State:    OutPending,
		Attempts: 1,
		NextSend: f.nextSend(id, now),
	}

	// Under the record's lock, so that a Forget of the id, which releases
	// its slot, comes before the slot is held or after the record exists.
	lock := f.lockFor(id)
	lock.Lock()
	defer lock.Unlock()

	f.inFlight.hold(id, target)
	if err := f.store.PutOutgoing(ctx, rec); err != nil {
		f.inFlight.release(id)
		return Outgoing{}, fmt.Errorf("asyncflow: storing message %s: %w", id, err)
	}
	return rec, nil
}

// sendMessage queues the newMessage of rec unless its last send has not
// left yet; it reports whether it queued it.
func (f *Flow) sendMessage(rec Outgoing, first bool) bool {
	return f.sendFor(outKey(rec.MsgID), first, rec.To, MethodNewMessage, func() []byte {
		return NewMessage{MsgID: rec.MsgID, Payload: rec.Payload}.AppendCandid(nil)
	})
}

// CheckPeer reports whether p can take part in an exchange: it must be a
// principal of 1 to 29 bytes other than the anonymous one. It returns an
// error wrapping ErrInvalidPrincipal otherwise.
func CheckPeer(p principal.Principal) error {
	switch {
	case len(p.Raw) == 0:
		return fmt.Errorf("%w: empty principal", ErrInvalidPrincipal)
	case p.Equal(principal.AnonymousID):
		return fmt.Errorf("%w: the anonymous principal cannot take part", ErrInvalidPrincipal)
	case len(p.Raw) > maxPrincipalBytes:
		return fmt.Errorf("%w: %d bytes is longer than a principal", ErrInvalidPrincipal,
			len(p.Raw))
	}
	return nil
}

// maxPrincipalBytes is the length of the longest principal the IC defines.
const maxPrincipalBytes = 29

// handleAck applies an ack from caller.
func (f *Flow) handleAck(ctx context.Context, caller principal.Principal, ack Ack) error {
	verdict, rec, err := f.settleAck(ctx, caller, ack)
	if err != nil {
		return err
	}

	switch verdict {
	case ackNotPeer:
		err := fmt.Errorf("%w: ack for message %s from %s, which is not its target",
			ErrNotPeer, ack.MsgID, caller)
		f.reject(Rejection{From: caller, MsgID: ack.MsgID, HasMsgID: true,
			Method: MethodAck, Reason: err.Error()})
		return err
	case ackAccept:
		f.finishAcked(ctx, rec)
		return nil
	case ackCorrupt:
		f.send(caller, MethodAckAck, ackackFor(ack).AppendCandid(nil))
		f.reportCorrupt(ctx, Corruption{Side: SideSender, Peer: rec.To, MsgID: rec.MsgID,
			Sent: rec.Payload, Received: rec.Ack, Expected: HashOf(rec.Payload),
			Got: ack.Hash})
		return nil
	}

	// Unknown or already settled: the receiver is still resending, so
	// answer again and change nothing.
	var held *Outgoing
	if verdict == ackRepeat {
		held = &rec
	}
	took, remembered := f.answers.lookup(ack.MsgID, caller)
	again := ackackAgain(ack.MsgID, held, took, remembered)
	f.send(caller, MethodAckAck, again.AppendCandid(nil))
	return nil
}

// settleAck decides on an ack under its record's lock and stores what the
// decision changes: the message becomes acked or corrupt.
func (f *Flow) settleAck(ctx context.Context, caller principal.Principal,
	ack Ack) (ackVerdict, Outgoing, error) {
	lock := f.lockFor(ack.MsgID)
	lock.Lock()
	defer lock.Unlock()

	rec, err := f.store.Outgoing(ctx, ack.MsgID)
	var held *Outgoing
	switch {
	case err == nil:
		held = &rec
	case !errors.Is(err, ErrNotFound):
		return 0, rec, fmt.Errorf("asyncflow: reading message %s: %w", ack.MsgID, err)
	}

	verdict := decideAck(held, caller, ack, f.cfg.StrictHash)
	if verdict == ackAccept || verdict == ackCorrupt {
		if rec.State == OutGivenUp {
			f.log.Info("asyncflow: an ack came for a message given up; it was processed",
				"to", rec.To.String(), "msg_id", rec.MsgID.String())
		}
		rec = rec.acked(ack, verdict == ackCorrupt)
		if err := f.store.PutOutgoing(ctx, rec); err != nil {
			return 0, rec, fmt.Errorf("asyncflow: storing ack of %s: %w", ack.MsgID, err)
		}
		f.inFlight.release(rec.MsgID)
		// Remembered before the lock is released: a Forget, even from
		// OnAck, must not leave a moment in which the answer is unknown.
		f.answers.remember(rec.MsgID, rec.To, HashOf(rec.Ack))
	}
	return verdict, rec, nil
}

// finishAcked runs the ack callback of an acked message, sends the ackack
// and forgets the message. A message whose callback panicked is kept in
// the acked state, so that the next Flow on the store runs it again.
func (f *Flow) finishAcked(ctx context.Context, rec Outgoing) {
	f.stats.delivered.Add(1)
	var failed error
	if f.cfg.OnAck != nil {
		failed = guard("OnAck", func() {
			f.cfg.OnAck(ctx, Delivery{To: rec.To, MsgID: rec.MsgID, Sent: rec.Payload,
				Received: rec.Ack, Hash: rec.AckHash})
		})
		f.logPanic(failed)
	}

	ack := Ack{MsgID: rec.MsgID, Hash: rec.AckHash, Payload: rec.Ack}
	f.send(rec.To, MethodAckAck, ackackFor(ack).AppendCandid(nil))

	if failed != nil {
		return
	}
	// The callback ran: forget the message even if ctx ended meanwhile,
	// or the next Flow would run the callback again.
	if err := f.store.DeleteOutgoing(context.WithoutCancel(ctx), rec.MsgID); err != nil {
		f.log.Error("asyncflow: forgetting delivered message failed",
			"msg_id", rec.MsgID.String(), "to", rec.To.String(), "err", err)
	}
}

// reportCorrupt counts, logs and reports a hash mismatch.
func (f *Flow) reportCorrupt(ctx context.Context, c Corruption) {
	f.stats.corrupt.Add(1)
	f.log.Warn("asyncflow: hash mismatch", "side", string(c.Side), "peer", c.Peer.String(),
		"msg_id", c.MsgID.String(), "expected", c.Expected.String(), "got", c.Got.String())
	if f.cfg.OnCorrupt != nil {
		f.logPanic(guard("OnCorrupt", func() { f.cfg.OnCorrupt(ctx, c) }))
	}
}

// resendMessage sends the newMessage of due, a record the due scan
// returned, again and moves its due time, or gives up on it. A message
// whose previous send has not left yet is not queued twice. It
// reports whether the record was due and moved, and the give-up to report
// once the record's lock is released.
func (f *Flow) resendMessage(ctx context.Context, due Outgoing,
	now time.Time) (bool, *GiveUp, error) {
	id := due.MsgID
	lock := f.lockFor(id)
	lock.Lock()
	defer lock.Unlock()

	rec, ok, err := f.stillDue(ctx, due, now)
	if err != nil || !ok {
		return false, nil, err
	}

	reason, giveUp := decideDue(rec, now, f.cfg.GiveUpAfter, f.cfg.MaxAttempts)
	if giveUp {
		if err := f.store.PutOutgoing(ctx, rec.givenUp()); err != nil {
			return false, nil, fmt.Errorf("asyncflow: giving up on %s: %w", id, err)
		}
		f.inFlight.release(id)
		return true, &GiveUp{To: rec.To, MsgID: id, Payload: rec.Payload,
			Attempts: rec.Attempts, FirstSent: id.Time(), Reason: reason}, nil
	}

	if f.sendMessage(rec, false) {
		rec.Attempts++
		f.stats.resent.Add(1)
	}
	rec.NextSend = f.nextSend(id, now)
	return true, nil, f.store.PutOutgoing(ctx, rec)
}

// stillDue returns the current record of due, a message the due scan
// returned, if it is still pending and due at now; the caller holds its
// lock. A message counted in flight is pending, since whatever settles it
// frees its slot under the same lock, and only the retry loop moves its
// due time: the scanned copy is current, and the store is not read again.
// Any other is read, and counted if it is pending after all.
func (f *Flow) stillDue(ctx context.Context, due Outgoing,
	now time.Time) (Outgoing, bool, error) {
	if f.inFlight.holds(due.MsgID) {
		return due, true, nil
	}

	rec, err := f.store.Outgoing(ctx, due.MsgID)
	switch {
	case errors.Is(err, ErrNotFound):
		return rec, false, nil
	case err != nil:
		return rec, false, err
	case rec.State != OutPending || rec.NextSend.After(now):
		return rec, false, nil
	}
	f.inFlight.adopt(rec.MsgID, rec.To)
	return rec, true, nil
}

// nextSend returns when the message id, sent at now, is due again.
func (f *Flow) nextSend(id MsgID, now time.Time) time.Time {
	return nextSend(id, now, f.cfg.RetryAfter, f.cfg.GiveUpAfter)
}

// reportGiveUp counts, logs and reports a message the sender gave up on.
func (f *Flow) reportGiveUp(ctx context.Context, g GiveUp) {
	f.stats.givenUp.Add(1)
	f.log.Warn("asyncflow: gave up on a message; the receiver may have processed it",
		"to", g.To.String(), "msg_id", g.MsgID.String(), "reason", g.Reason.String(),
		"attempts", g.Attempts, "first_sent", g.FirstSent)
	if f.cfg.OnGiveUp != nil {
		f.logPanic(guard("OnGiveUp", func() { f.cfg.OnGiveUp(ctx, g) }))
	}
}

// resumeAcked finishes messages a previous Flow recorded as acked but did
// not forget: their callbacks run again.
func (f *Flow) resumeAcked(recs []Outgoing) {
	for _, rec := range recs {
		if f.ctx.Err() != nil {
			return
		}
		f.answers.remember(rec.MsgID, rec.To, HashOf(rec.Ack))
		f.finishAcked(f.ctx, rec)
	}
}

// Messages returns the sender's records in state s, in id order: for
// example the corrupt or given-up messages waiting for the user's
// decision.
func (f *Flow) Messages(ctx context.Context, s OutState) ([]Outgoing, error) {
	call, err := f.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer f.leave(call)
	ctx = call

	return f.store.ListOutgoing(ctx, s)
}

// Forget removes the sender's record of id, whatever its state: a pending
// message is no longer resent, no longer counts against MaxInFlight, and
// a late ack for it is answered with ackack and nothing else (an ackack
// without a hash, unless an earlier ack was taken). Forgetting an unknown
// id is not an error.
func (f *Flow) Forget(ctx context.Context, id MsgID) error {
	call, err := f.enter(ctx)
	if err != nil {
		return err
	}
	defer f.leave(call)
	ctx = call

	lock := f.lockFor(id)
	lock.Lock()
	defer lock.Unlock()

	if err := f.store.DeleteOutgoing(ctx, id); err != nil {
		return err
	}
	f.inFlight.release(id)
	return nil
}
