package main

import (
	"bytes"
	"slices"
	"sync"
	"time"

	"github.com/asyncflow/asyncflow"
)

// tally records what the peers reported, per message id. It is safe for
// concurrent use.
type tally struct {
	n    int
	done chan struct{} // closed once every message is settled

	mu          sync.Mutex
	sentAt      map[asyncflow.MsgID]time.Time
	ackedAt     map[asyncflow.MsgID]time.Time
	acks        map[asyncflow.MsgID]int
	processes   map[asyncflow.MsgID]int
	corrupt     map[asyncflow.MsgID]bool // held as corrupt by the sender
	mismatched  int                      // echoes that differ from the payload
	flowCorrupt int
	finished    bool
}

func newTally(n int) *tally {
	return &tally{
		n:         n,
		done:      make(chan struct{}),
		sentAt:    make(map[asyncflow.MsgID]time.Time),
		ackedAt:   make(map[asyncflow.MsgID]time.Time),
		acks:      make(map[asyncflow.MsgID]int),
		processes: make(map[asyncflow.MsgID]int),
		corrupt:   make(map[asyncflow.MsgID]bool),
	}
}

// sent records when CallAsync of id began. An ack may be recorded before.
func (t *tally) sent(id asyncflow.MsgID, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()

	t.sentAt[id] = at
}

// acked records a delivery and reports whether it is the first of its id.
func (t *tally) acked(d asyncflow.Delivery) bool {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()

	t.acks[d.MsgID]++
	if !bytes.Equal(d.Received, d.Sent) {
		t.mismatched++
	}
	if t.acks[d.MsgID] > 1 {
		return false
	}
	t.ackedAt[d.MsgID] = now
	t.check()
	return true
}

// processed records that B committed a message.
func (t *tally) processed(p asyncflow.Processed) {
	t.mu.Lock()
	defer t.mu.Unlock()

	t.processes[p.MsgID]++
	t.check()
}

// corrupted records a hash mismatch and reports whether it settles a
// message on the sender's side for the first time.
func (t *tally) corrupted(c asyncflow.Corruption) bool {
	t.mu.Lock()
	defer t.mu.Unlock()

	t.flowCorrupt++
	if c.Side != asyncflow.SideSender || t.corrupt[c.MsgID] {
		return false
	}
	t.corrupt[c.MsgID] = true
	t.check()
	return true
}

// check closes done once every message was settled on the sender's side
// and processed on the receiver's. Call with mu held.
func (t *tally) check() {
	if !t.finished && len(t.ackedAt)+len(t.corrupt) >= t.n && len(t.processes) >= t.n {
		t.finished = true
		close(t.done)
	}
}

// progress returns how many messages were delivered and processed.
func (t *tally) progress() (delivered, processed int) {
	t.mu.Lock()
	defer t.mu.Unlock()

	return len(t.ackedAt), len(t.processes)
}

// outcome is the tally's verdict on the messages.
type outcome struct {
	sent, delivered, processedOnce, processedTwice int
	ackedTwice, mismatched, flowCorrupt            int
	// corruptOnce counts messages the sender holds as corrupt that were
	// nonetheless processed once: not a failure.
	corruptOnce int
	latencies   []time.Duration
}

// outcome sums up the tally.
func (t *tally) outcome() outcome {
	t.mu.Lock()
	defer t.mu.Unlock()

	o := outcome{sent: len(t.sentAt), delivered: len(t.ackedAt), mismatched: t.mismatched,
		flowCorrupt: t.flowCorrupt}
	for id, n := range t.processes {
		switch {
		case n > 1:
			o.processedTwice++
		case t.corrupt[id]:
			o.corruptOnce++
			o.processedOnce++
		default:
			o.processedOnce++
		}
	}
	for id, at := range t.ackedAt {
		if t.acks[id] > 1 {
			o.ackedTwice++
		}
		if start, ok := t.sentAt[id]; ok {
			o.latencies = append(o.latencies, at.Sub(start))
		}
	}
	slices.Sort(o.latencies)
	return o
}
