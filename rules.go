package asyncflow

import (
	"fmt"
	"time"

	"github.com/aviate-labs/agent-go/principal"
)

// The protocol's decisions, kept apart from all I/O: each function takes
// the record a side holds (or none) and what arrived, and says what to do.
// The Flow reads and writes the store and sends; it decides nothing itself.

// ackVerdict is the sender's decision on an ack.
type ackVerdict uint8

const (
	// ackUnknown: no record of the id. Answer with ackack, change nothing.
	ackUnknown ackVerdict = iota + 1
	// ackNotPeer: the caller is not the message's target. Change nothing.
	ackNotPeer
	// ackAccept: record acked, run the callback, send ackack, forget. A
	// message the sender gave up on is accepted too: the receiver did
	// process it, and the user learns so.
	ackAccept
	// ackCorrupt: the receiver processed other bytes. Record corrupt,
	// report, and still send ackack so the receiver stops resending.
	ackCorrupt
	// ackRepeat: the message was already settled by an earlier ack.
	// Answer with ackack again, change nothing.
	ackRepeat
)

// decideAck applies the sender's rules to an ack from caller. rec is the
// sender's record of the ack's id, or nil.
func decideAck(rec *Outgoing, caller principal.Principal, ack Ack, strict bool) ackVerdict {
	switch {
	case rec == nil:
		return ackUnknown
	case !rec.To.Equal(caller):
		return ackNotPeer
	case rec.State != OutPending && rec.State != OutGivenUp:
		return ackRepeat
	case !ack.Hash.Matches(rec.Payload, strict):
		return ackCorrupt
	}
	return ackAccept
}

// acked returns rec moved to the acked or corrupt state with what the ack
// carried.
func (rec Outgoing) acked(ack Ack, corrupt bool) Outgoing {
	rec.State = OutAcked
	if corrupt {
		rec.State = OutCorrupt
	}
	rec.Ack = ack.Payload
	rec.AckHash = ack.Hash
	rec.NextSend = time.Time{}
	return rec
}

// decideDue applies the sender's rules to a pending message that is due
// at now: it says whether to give up on it, and why, instead of resending.
// maxAttempts 0 sets no limit.
func decideDue(rec Outgoing, now time.Time, giveUpAfter time.Duration,
	maxAttempts int) (GiveUpReason, bool) {
	switch {
	case !now.Before(giveUpAt(rec.MsgID, giveUpAfter)):
		return GiveUpTooOld, true
	case maxAttempts > 0 && int64(rec.Attempts) >= int64(maxAttempts):
		return GiveUpTooManyAttempts, true
	}
	return 0, false
}

// giveUpAt returns when the sender gives up on id if no ack came.
func giveUpAt(id MsgID, giveUpAfter time.Duration) time.Time {
	return id.Time().Add(giveUpAfter)
}

// nextSend returns when a message of id sent at now is due again: after
// retryAfter, or earlier, when the sender gives up on it.
func nextSend(id MsgID, now time.Time, retryAfter, giveUpAfter time.Duration) time.Time {
	next := now.Add(retryAfter)
	if end := giveUpAt(id, giveUpAfter); end.Before(next) {
		return end
	}
	return next
}

// givenUp returns rec moved to the given-up state, no longer due.
func (rec Outgoing) givenUp() Outgoing {
	rec.State = OutGivenUp
	rec.NextSend = time.Time{}
	return rec
}

// ackackVerdict is the receiver's decision on an ackack.
type ackackVerdict uint8

const (
	// ackackIgnore: no acking record from this caller. Change nothing.
	ackackIgnore ackackVerdict = iota + 1
	// ackackDone: stop resending the ack; keep the record for dedup.
	ackackDone
	// ackackCorrupt: the sender got other ack bytes. Stop resending (it
	// cannot help: the sender has forgotten the id) and report.
	ackackCorrupt
)

// decideAckAck applies the receiver's rules to an ackack. rec is the
// receiver's record of (caller, id), or nil. Records are looked up per
// caller, so an ackack from anyone but the sender finds none.
func decideAckAck(rec *Incoming, ackack AckAck, strict bool) ackackVerdict {
	switch {
	case rec == nil || rec.State != InAcking:
		return ackackIgnore
	case !ackack.Hash.Matches(rec.Ack, strict):
		return ackackCorrupt
	}
	return ackackDone
}

// newMessageVerdict is the receiver's decision on a newMessage.
type newMessageVerdict uint8

const (
	// newProcess: unseen id: run the handler, commit, send the ack.
	newProcess newMessageVerdict = iota + 1
	// newDuplicate: already processed: send the stored ack again.
	newDuplicate
)

// decideNewMessage applies the receiver's rules to a newMessage. rec is
// the receiver's record of (caller, id), or nil.
func decideNewMessage(rec *Incoming) newMessageVerdict {
	if rec == nil {
		return newProcess
	}
	return newDuplicate
}

// checkWindow applies the dedup window to the id of a newMessage that
// arrives at now. A receiver forgets an id once its ULID time is older than
// window, so it must refuse such an id rather than process it a second
// time; an id more than skew ahead of now would be remembered for longer
// than the window promises, so it is refused too.
func checkWindow(id MsgID, now time.Time, window, skew time.Duration) error {
	t := id.Time()
	switch {
	case t.Before(now.Add(-window)):
		return fmt.Errorf("%w: message %s is from %s, older than the dedup window of %s",
			ErrOutsideWindow, id, t.UTC().Format(time.RFC3339Nano), window)
	case t.After(now.Add(skew)):
		return fmt.Errorf("%w: message %s is from %s, more than %s ahead of this clock",
			ErrOutsideWindow, id, t.UTC().Format(time.RFC3339Nano), skew)
	}
	return nil
}

// ackFor returns the ack a receiver sends for its record.
func ackFor(rec Incoming) Ack {
	return Ack{MsgID: rec.MsgID, Hash: SomeHash(rec.PayloadHash), Payload: rec.Ack}
}

// ackackFor returns the ackack a sender sends for an ack it settles.
func ackackFor(ack Ack) AckAck {
	return AckAck{MsgID: ack.MsgID, Hash: HashOf(ack.Payload)}
}

// ackackAgain returns the ackack a sender sends for an ack of id that it
// does not settle, because an earlier ack did: rec is its record of id, or
// nil once forgotten; took is the hash of the answer it took then, if it
// still remembers it. The ackack confirms the answer the sender took, never
// the copy that arrived now, so that the receiver learns when the two
// differ; a sender that knows neither says so with an absent hash.
func ackackAgain(id MsgID, rec *Outgoing, took Hash, remembered bool) AckAck {
	switch {
	case rec != nil && (rec.State == OutAcked || rec.State == OutCorrupt):
		return AckAck{MsgID: id, Hash: HashOf(rec.Ack)}
	case rec == nil && remembered:
		return AckAck{MsgID: id, Hash: took}
	}
	return AckAck{MsgID: id}
}
