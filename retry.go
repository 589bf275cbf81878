package asyncflow

import (
	"context"
	"time"
)

// retryBatch is how many due records one pass of the retry loop takes
// from the store per side before it looks again.
const retryBatch = 256

// retryLoop resends whatever is due: newMessages still waiting for their
// ack, and acks still waiting for their ackack. It sleeps until the
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

// resendDue resends every record due now and returns how long the loop
// may sleep before the next one is due.
func (f *Flow) resendDue() time.Duration {
	for f.ctx.Err() == nil {
		now := time.Now()
		n, err := f.resendDueOnce(f.ctx, now)
		if err != nil {
			f.log.Error("asyncflow: retry scan failed", "err", err)
			return f.cfg.RetryAfter
		}
		if n == 0 {
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

// resendDueOnce resends one batch of due records of each side and returns
// how many it resent.
func (f *Flow) resendDueOnce(ctx context.Context, now time.Time) (int, error) {
	outs, err := f.store.DueOutgoing(ctx, now, retryBatch)
	if err != nil {
		return 0, err
	}
	for _, m := range outs {
		if err := f.resendMessage(ctx, m.MsgID, now); err != nil {
			return 0, err
		}
	}

	ins, err := f.store.DueIncoming(ctx, now, retryBatch)
	if err != nil {
		return 0, err
	}
	for _, m := range ins {
		if err := f.resendAck(ctx, m, now); err != nil {
			return 0, err
		}
	}
	return len(outs) + len(ins), nil
}
