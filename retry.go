package asyncflow

import (
	"context"
	"time"
)

// retryBatch is how many due records one pass of the retry loop takes
// from the store per side before it looks again.
const retryBatch = 256

// retryLoop resends whatever is due: newMessages still waiting for their
// ack, unless it gives up on them, and acks still waiting for their ackack. It sleeps until the
// store's earliest due time, or until a new record may have moved it.
// One goroutine and one timer serve every pending message.
func (f *Flow) retryLoop() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()

	for {
		wait := f.resendDue()
		timer.Reset(wait)
		select {
		case <-f.ctx.Done():
			return
		case <-f.wake:
		case <-timer.C:
		}
	}
}

// poke tells the retry loop that a record with a new due time exists.
func (f *Flow) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// resendDue resends every record that was due when it started, and
// returns how long the loop may sleep before the next one is due. A
// record it resends is due again only after RetryAfter, so the pass ends
// however long it takes.
func (f *Flow) resendDue() time.Duration {
	now := time.Now()
	f.expire(now)
	for f.ctx.Err() == nil {
		more, err := f.resendDueOnce(f.ctx, now)
		if err != nil {
			f.log.Error("asyncflow: retry scan failed", "err", err)
			return f.cfg.RetryAfter
		}
		if !more {
			break
		}
	}

	next, ok, err := f.store.NextDue(f.ctx)
	switch {
	case err != nil:
		if f.ctx.Err() == nil {
			f.log.Error("asyncflow: reading next due time failed", "err", err)
		}
		return f.cfg.RetryAfter
	case !ok:
		return f.cfg.RetryAfter
	}
	return max(time.Until(next), 0)
}

// resendDueOnce resends one batch of due records of each side. It
// reports whether more may be due: a batch was full and moved on.
func (f *Flow) resendDueOnce(ctx context.Context, now time.Time) (bool, error) {
	outs, err := f.store.DueOutgoing(ctx, now, retryBatch)
	if err != nil {
		return false, err
	}
	moved := 0
	for _, m := range outs {
		ok, giveUp, err := f.resendMessage(ctx, m, now)
		if err != nil {
			return false, err
		}
		if giveUp != nil {
			f.reportGiveUp(ctx, *giveUp)
		}
		moved += btoi(ok)
	}

	ins, err := f.store.DueIncoming(ctx, now, retryBatch)
	if err != nil {
		return false, err
	}
	for _, m := range ins {
		ok, err := f.resendAck(ctx, m, now)
		if err != nil {
			return false, err
		}
		moved += btoi(ok)
	}

	full := len(outs) == retryBatch || len(ins) == retryBatch
	return full && moved > 0, nil
}

// expire removes the receiver's records whose ids left the dedup window.
// Their acks are no longer resent; a newMessage with such an id is refused
// before any lookup, so the record is not needed.
func (f *Flow) expire(now time.Time) {
	before := now.Add(-f.cfg.DedupWindow)
	for f.ctx.Err() == nil {
		n, err := f.store.ExpireIncoming(f.ctx, before, retryBatch)
		if err != nil {
			if f.ctx.Err() == nil {
				f.log.Error("asyncflow: expiring processed ids failed", "err", err)
			}
			return
		}
		if n < retryBatch {
			return
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
