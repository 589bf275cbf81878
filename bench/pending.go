package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/asyncflow/asyncflow"
)

// pendingResult is what a Flow on a MemoryStore costs while messages wait
// for their ack.
type pendingResult struct {
	// small and large are the pending counts measured.
	small, large int
	// bytesPerPending is the heap held per pending message at the large
	// count, beyond the payload's own bytes.
	bytesPerPending float64
	// scanSmall and scanLarge are the median times of one retry pass
	// that finds nothing due; nextDueSmall and nextDueLarge the part of
	// it spent in NextDue.
	scanSmall, scanLarge       time.Duration
	nextDueSmall, nextDueLarge time.Duration
}

// discard is a transport whose peer never answers: every message it
// carries stays pending.
type discard struct {
	sent atomic.Int64
}

func (d *discard) Send(context.Context, principal.Principal, string, []byte) error {
	d.sent.Add(1)
	return nil
}

// pass is the time of one retry pass and of its NextDue call.
type pass struct {
	total, nextDue time.Duration
}

// timedStore times the passes of a Flow's retry loop. A pass starts with
// ExpireIncoming and ends with NextDue, and only the retry loop calls
// them, so both run on its goroutine.
type timedStore struct {
	asyncflow.Store
	start  time.Time
	passes chan pass
}

func (s *timedStore) ExpireIncoming(ctx context.Context, before time.Time,
	limit int) (int, error) {
	s.start = time.Now()
	return s.Store.ExpireIncoming(ctx, before, limit)
}

func (s *timedStore) NextDue(ctx context.Context) (time.Time, bool, error) {
	t := time.Now()
	next, ok, err := s.Store.NextDue(ctx)
	end := time.Now()
	select {
	case s.passes <- pass{total: end.Sub(s.start), nextDue: end.Sub(t)}:
	default:
	}
	return next, ok, err
}

// runPending fills one sender Flow on a MemoryStore with small and then
// large pending messages to a peer that never answers. At each count it
// times retry passes, each started by one more message; at the large
// count it also weighs the heap.
func runPending(payload []byte, small, large, passes int) (pendingResult, error) {
	res := pendingResult{small: small, large: large}
	tr := &discard{}
	st := &timedStore{Store: asyncflow.NewMemoryStore(), passes: make(chan pass, 1)}
	f, err := asyncflow.New(asyncflow.Config{
		Transport:  tr,
		Store:      st,
		RetryAfter: retryAfter,
		// Every message stays pending, and the passes at the large count
		// add one each: the default would make CallAsync wait for a slot.
		MaxInFlight: large + passes,
		Logger:      quiet,
	})
	if err != nil {
		return res, err
	}
	defer st.Close()
	defer f.Close()

	base := heapInUse()
	if err := fill(f, tr, payload, small); err != nil {
		return res, err
	}
	if res.scanSmall, res.nextDueSmall, err = timePasses(f, st, payload, passes); err != nil {
		return res, err
	}

	if err := fill(f, tr, payload, large-small-passes); err != nil {
		return res, err
	}
	// The passes timed at the small count added one message each.
	held := float64(heapInUse()-base) / float64(large)
	res.bytesPerPending = held - float64(len(payload))

	res.scanLarge, res.nextDueLarge, err = timePasses(f, st, payload, passes)
	return res, err
}

// fill sends n messages from one goroutine per core and waits until the
// transport carried them all, so that no send is left queued.
func fill(f *asyncflow.Flow, tr *discard, payload []byte, n int) error {
	want := tr.sent.Load() + int64(n)
	var next atomic.Int64
	var failed firstError
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if _, err := f.CallAsync(context.Background(), receiverID, payload); err != nil {
					failed.set(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := failed.get(); err != nil {
		return err
	}

	deadline := time.Now().Add(drainTimeout)
	for tr.sent.Load() < want {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d sends done after %s", tr.sent.Load(), want,
				drainTimeout)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// timePasses starts n retry passes, one at a time, by sending a message
// of payload each (a new message wakes the retry loop), and returns the
// medians of the passes' times and of their NextDue calls.
func timePasses(f *asyncflow.Flow, st *timedStore, payload []byte,
	n int) (time.Duration, time.Duration, error) {
	time.Sleep(20 * time.Millisecond)
	select {
	case <-st.passes:
	default:
	}

	totals := make([]time.Duration, 0, n)
	nextDues := make([]time.Duration, 0, n)
	for range n {
		if _, err := f.CallAsync(context.Background(), receiverID, payload); err != nil {
			return 0, 0, err
		}
		select {
		case p := <-st.passes:
			totals = append(totals, p.total)
			nextDues = append(nextDues, p.nextDue)
		case <-time.After(5 * time.Second):
			return 0, 0, errors.New("no retry pass within 5 s of a new message")
		}
	}
	return median(totals), median(nextDues), nil
}

// median returns the middle of ds, which it sorts; zero for none.
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// heapInUse returns the bytes of live heap objects after a full
// collection.
func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
