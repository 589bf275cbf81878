package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// load is what every round-trip scenario runs with.
type load struct {
	// inFlight is how many round trips are under way at once: a new one
	// starts only when another has finished on both sides.
	inFlight int
	// payload is the message every round trip carries.
	payload []byte
	// warmup runs before the measured window and is not counted.
	warmup time.Duration
	// duration is the measured window.
	duration time.Duration
	// messages, when positive, replaces warmup and duration: the run
	// sends that many messages and is measured from start to the last
	// round trip's end. The smoke test runs this way.
	messages int64
}

// rig is one system under test, set up for round trips between two
// parties. It calls the done function it was built with once for every
// round trip that completed on both sides.
type rig interface {
	// send starts one round trip carrying payload. It returns once the
	// message is accepted: stored by the sender, or by the broker.
	send(ctx context.Context, payload []byte) error
	// check reports what went wrong during the run that the round trips
	// themselves do not show, such as resends or refused calls.
	check() error
	// close stops the rig and releases everything it holds.
	close() error
}

// buildRig makes a rig that calls done at the end of each round trip.
type buildRig func(done func()) (rig, error)

// result is what a round-trip run measured.
type result struct {
	roundTrips int64
	elapsed    time.Duration
	// cpu is the CPU time the whole process used meanwhile: on a shared
	// machine, what it got of the cores tells a slow run from a starved
	// one.
	cpu time.Duration
}

// cores returns how many cores the run kept busy on average.
func (r result) cores() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return r.cpu.Seconds() / r.elapsed.Seconds()
}

// rate returns the round trips per second.
func (r result) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.roundTrips) / r.elapsed.Seconds()
}

// drainTimeout bounds the wait for the round trips still under way when
// a run stops sending.
const drainTimeout = time.Minute

// runRoundTrips builds a rig and keeps l.inFlight round trips under way
// on it, from l.inFlight caller goroutines that each wait for a free slot
// before sending. A slot is freed only when a round trip completed on both
// sides, so the run measures whole exchanges, not submissions. Once it
// stops sending it waits for every round trip under way to complete, so
// that the rig closes clean.
func runRoundTrips(build buildRig, l load) (result, error) {
	slots := make(chan struct{}, l.inFlight)
	var completed atomic.Int64
	r, err := build(func() {
		<-slots
		completed.Add(1)
	})
	if err != nil {
		return result{}, err
	}

	res, runErr := drive(r, l, slots, &completed)
	runErr = errors.Join(runErr, r.check())
	return res, errors.Join(runErr, r.close())
}

// drive runs the callers and measures; see runRoundTrips.
func drive(r rig, l load, slots chan struct{}, completed *atomic.Int64) (result, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var failed firstError
	var sent, issued atomic.Int64
	var callers sync.WaitGroup
	for range l.inFlight {
		callers.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case slots <- struct{}{}:
				}
				if l.messages > 0 && issued.Add(1) > l.messages {
					<-slots
					return
				}
				if err := r.send(ctx, l.payload); err != nil {
					<-slots
					if ctx.Err() == nil {
						failed.set(fmt.Errorf("send: %w", err))
						cancel()
					}
					return
				}
				sent.Add(1)
			}
		})
	}

	start, cpu := time.Now(), cpuTime()
	var res result
	if l.messages > 0 {
		callers.Wait()
		err := waitCompleted(completed, &sent, &failed)
		res = result{roundTrips: completed.Load(), elapsed: time.Since(start),
			cpu: cpuTime() - cpu}
		return res, errors.Join(failed.get(), err)
	}

	sleep(ctx, l.warmup)
	c0, t0, cpu0 := completed.Load(), time.Now(), cpuTime()
	sleep(ctx, l.duration)
	res = result{roundTrips: completed.Load() - c0, elapsed: time.Since(t0),
		cpu: cpuTime() - cpu0}
	cancel()
	callers.Wait()
	return res, errors.Join(failed.get(), waitCompleted(completed, &sent, &failed))
}

// waitCompleted waits until every round trip sent has completed, or a
// failure was reported, or drainTimeout passed.
func waitCompleted(completed, sent *atomic.Int64, failed *firstError) error {
	deadline := time.Now().Add(drainTimeout)
	for completed.Load() < sent.Load() {
		if failed.get() != nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d round trips complete after %s",
				completed.Load(), sent.Load(), drainTimeout)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// firstError keeps the first error set; it is safe for concurrent use.
type firstError struct {
	mu  sync.Mutex
	err error
}

func (f *firstError) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

func (f *firstError) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// ends pairs the two ends of each round trip, which the two sides report
// in either order, and calls done when the second of a pair arrives. Its
// keys are spread over shards so that hundreds of reporting goroutines
// rarely wait for each other.
type ends[K comparable] struct {
	done   func()
	shard  func(K) uint8
	shards [64]endShard[K]
}

type endShard[K comparable] struct {
	mu   sync.Mutex
	half map[K]struct{}
	_    [40]byte // keeps neighbouring shards' locks off one cache line
}

func newEnds[K comparable](done func(), shard func(K) uint8) *ends[K] {
	e := &ends[K]{done: done, shard: shard}
	for i := range e.shards {
		e.shards[i].half = make(map[K]struct{})
	}
	return e
}

// see records one end of the round trip k.
func (e *ends[K]) see(k K) {
	s := &e.shards[int(e.shard(k))%len(e.shards)]
	s.mu.Lock()
	_, second := s.half[k]
	if second {
		delete(s.half, k)
	} else {
		s.half[k] = struct{}{}
	}
	s.mu.Unlock()

	if second {
		e.done()
	}
}
