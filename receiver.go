package asyncflow

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aviate-labs/agent-go/principal"
)

// Deliver implements Inbound: a transport hands it each call it accepted,
// with the caller it authenticated. It decodes the argument and applies
// the protocol. It returns an error, having changed nothing, when the
// method is not one of the three, the argument does not decode, the caller
// is not a valid peer, or the Flow is closed; an error from the store is
// returned too, so that the transport can refuse the call and the peer
// sends it again. Handler errors are not returned: the call was valid, and
// the sender's retry will bring the message back.
func (f *Flow) Deliver(ctx context.Context, caller principal.Principal, method string,
	arg []byte) error {
	ctx, done, err := f.enter(ctx)
	if err != nil {
		return err
	}
	defer done()

	if err := checkPeer(caller); err != nil {
		f.reject(Rejection{Method: method, Reason: err.Error()})
		return err
	}

	switch method {
	case MethodNewMessage:
		var m NewMessage
		if err := m.UnmarshalCandid(arg); err != nil {
			return f.refuseArg(caller, method, err)
		}
		if err := f.checkPayload("payload", m.Payload); err != nil {
			return f.refuseArg(caller, method, err)
		}
		return f.handleNewMessage(ctx, caller, m)
	case MethodAck:
		var m Ack
		if err := m.UnmarshalCandid(arg); err != nil {
			return f.refuseArg(caller, method, err)
		}
		if err := f.checkPayload("ack payload", m.Payload); err != nil {
			return f.refuseArg(caller, method, err)
		}
		return f.handleAck(ctx, caller, m)
	case MethodAckAck:
		var m AckAck
		if err := m.UnmarshalCandid(arg); err != nil {
			return f.refuseArg(caller, method, err)
		}
		return f.handleAckAck(ctx, caller, m)
	}
	err = fmt.Errorf("%w: %q", ErrUnknownMethod, method)
	f.reject(Rejection{From: caller, Method: method, Reason: err.Error()})
	return err
}

func (f *Flow) refuseArg(caller principal.Principal, method string, err error) error {
	f.reject(Rejection{From: caller, Method: method, Reason: err.Error()})
	return err
}

// handleNewMessage processes a new message once per (caller, id): an id
// already processed gets its stored ack again, and an id being processed
// right now is left to the call that is processing it.
func (f *Flow) handleNewMessage(ctx context.Context, caller principal.Principal,
	m NewMessage) error {
	if r, ok := f.cfg.Transport.(Router); ok {
		if err := r.Route(caller); err != nil {
			err = fmt.Errorf("no route back to the caller for the ack: %w", err)
			f.reject(Rejection{From: caller, MsgID: m.MsgID, HasMsgID: true,
				Method: MethodNewMessage, Reason: err.Error()})
			return err
		}
	}

	key := keyOf(caller, m.MsgID)
	if !f.claim(key) {
		f.stats.duplicates.Add(1)
		return nil
	}
	defer f.release(key)

	rec, err := f.store.Incoming(ctx, caller, m.MsgID)
	switch {
	case err == nil:
	case errors.Is(err, ErrNotFound):
		return f.process(ctx, caller, m)
	default:
		return fmt.Errorf("asyncflow: reading message %s from %s: %w", m.MsgID, caller, err)
	}

	if decideNewMessage(&rec) == newDuplicate {
		f.stats.duplicates.Add(1)
		f.sendFor(inKeyOf(key), caller, MethodAck, ackFor(rec).AppendCandid(nil))
	}
	return nil
}

// process runs the handler on an unseen message, commits the result and
// only then sends the ack.
func (f *Flow) process(ctx context.Context, caller principal.Principal, m NewMessage) error {
	if f.cfg.Handler == nil {
		err := fmt.Errorf("%w for message %s", ErrNoHandler, m.MsgID)
		f.reject(Rejection{From: caller, MsgID: m.MsgID, HasMsgID: true,
			Method: MethodNewMessage, Reason: err.Error()})
		return err
	}

	ack, err := f.runHandler(ctx, caller, m)
	if err != nil {
		f.stats.handlerErrors.Add(1)
		f.log.Warn("asyncflow: handler failed; the message stays unprocessed",
			"from", caller.String(), "msg_id", m.MsgID.String(), "err", err)
		return nil
	}

	now := time.Now()
	rec := Incoming{
		From:        caller,
		MsgID:       m.MsgID,
		PayloadHash: HashOf(m.Payload).Value,
		Ack:         ack,
		State:       InAcking,
		Attempts:    1,
		NextSend:    now.Add(f.cfg.RetryAfter),
	}
	lock := f.lockFor(m.MsgID)
	lock.Lock()
	err = f.store.PutIncoming(ctx, rec)
	lock.Unlock()
	if err != nil {
		return fmt.Errorf("asyncflow: committing message %s from %s: %w", m.MsgID, caller, err)
	}
	f.poke()

	f.stats.processed.Add(1)
	if f.cfg.OnProcessed != nil {
		_ = f.guard("OnProcessed", func() {
			f.cfg.OnProcessed(Processed{From: caller, MsgID: m.MsgID, Payload: m.Payload,
				Ack: ack})
		})
	}
	f.sendFor(inKeyOf(keyOf(caller, m.MsgID)), caller, MethodAck, ackFor(rec).AppendCandid(nil))
	return nil
}

// runHandler runs the handler, turning a panic or an answer over
// MaxPayload into an error.
func (f *Flow) runHandler(ctx context.Context, caller principal.Principal,
	m NewMessage) (ack []byte, err error) {
	panicked := f.guard("handler", func() {
		ack, err = f.cfg.Handler(ctx, caller, m.MsgID, m.Payload)
	})
	switch {
	case panicked != nil:
		return nil, panicked
	case err != nil:
		return nil, err
	}
	return ack, f.checkPayload("ack payload", ack)
}

// claim marks (caller, id) as being processed; it fails if it already is.
func (f *Flow) claim(k inKey) bool {
	f.inMu.Lock()
	defer f.inMu.Unlock()

	if _, busy := f.inflight[k]; busy {
		return false
	}
	f.inflight[k] = struct{}{}
	return true
}

func (f *Flow) release(k inKey) {
	f.inMu.Lock()
	defer f.inMu.Unlock()

	delete(f.inflight, k)
}

// handleAckAck stops the ack's resending once the sender confirmed it.
func (f *Flow) handleAckAck(ctx context.Context, caller principal.Principal, m AckAck) error {
	lock := f.lockFor(m.MsgID)
	lock.Lock()

	rec, err := f.store.Incoming(ctx, caller, m.MsgID)
	var held *Incoming
	switch {
	case err == nil:
		held = &rec
	case !errors.Is(err, ErrNotFound):
		lock.Unlock()
		return fmt.Errorf("asyncflow: reading message %s from %s: %w", m.MsgID, caller, err)
	}

	verdict := decideAckAck(held, m, f.cfg.StrictHash)
	if verdict == ackackIgnore {
		lock.Unlock()
		f.log.Debug("asyncflow: ackack for no acking message", "from", caller.String(),
			"msg_id", m.MsgID.String())
		return nil
	}

	rec.State = InDone
	rec.NextSend = time.Time{}
	err = f.store.PutIncoming(ctx, rec)
	lock.Unlock()
	if err != nil {
		return fmt.Errorf("asyncflow: storing ackack of %s: %w", m.MsgID, err)
	}

	if verdict == ackackCorrupt {
		f.reportCorrupt(ctx, Corruption{Side: SideReceiver, Peer: caller, MsgID: m.MsgID,
			Sent: rec.Ack, Expected: HashOf(rec.Ack), Got: m.Hash})
	}
	return nil
}

// resendAck sends a due ack again and moves its due time. An ack whose
// previous send has not left yet is not queued twice.
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

	k := inKeyOf(keyOf(rec.From, rec.MsgID))
	if f.sendFor(k, rec.From, MethodAck, ackFor(rec).AppendCandid(nil)) {
		rec.Attempts++
		f.stats.resent.Add(1)
	}
	rec.NextSend = now.Add(f.cfg.RetryAfter)
	return true, f.store.PutIncoming(ctx, rec)
}
