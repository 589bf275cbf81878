package main

import (
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncflow/asyncflow"
)

// recordsPerMessage is how many Candid records one round trip sends:
// newMessage, ack and ackack.
const recordsPerMessage = 3

// floorResult is the cost of the work every round trip does whatever
// carries it.
type floorResult struct {
	// rate is messages per second with one goroutine per core.
	rate float64
	// perRecord and allocsPerRecord come from one goroutine, divided over
	// the three records of a message.
	perRecord       time.Duration
	allocsPerRecord float64
}

// floorMessage does the work of one message's round trip that no store or
// transport can avoid, as the Flows do it: a new id (one ULID), then
// encoding and decoding the three records into fresh buffers, with the
// CRC-32 of the payload carried by the ack and the CRC-32 of the ack
// payload carried by the ackack.
func floorMessage(payload []byte) error {
	id, err := asyncflow.NewMsgID(time.Now())
	if err != nil {
		return err
	}

	var m asyncflow.NewMessage
	arg := asyncflow.NewMessage{MsgID: id, Payload: payload}.AppendCandid(nil)
	if err := m.UnmarshalCandid(arg); err != nil {
		return err
	}

	var a asyncflow.Ack
	ack := asyncflow.Ack{MsgID: m.MsgID, Hash: asyncflow.HashOf(m.Payload),
		Payload: ackPayload}
	if err := a.UnmarshalCandid(ack.AppendCandid(nil)); err != nil {
		return err
	}

	var aa asyncflow.AckAck
	ackack := asyncflow.AckAck{MsgID: a.MsgID, Hash: asyncflow.HashOf(a.Payload)}
	if err := aa.UnmarshalCandid(ackack.AppendCandid(nil)); err != nil {
		return err
	}
	if aa.MsgID != id || !a.Hash.Matches(payload, true) {
		return errors.New("floor: a record did not decode to what was encoded")
	}
	return nil
}

// runFloor measures floorMessage: its rate on every core for l.duration
// (or l.messages per core), and its time and allocations on one
// goroutine.
func runFloor(l load) (floorResult, error) {
	perRecord, allocs, err := floorOneCore(l)
	if err != nil {
		return floorResult{}, err
	}

	var failed firstError
	var done atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	start := time.Now()
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for n := int64(0); !stop.Load() && (l.messages == 0 || n < l.messages); n++ {
				if err := floorMessage(l.payload); err != nil {
					failed.set(err)
					return
				}
				done.Add(1)
			}
		})
	}
	if l.messages == 0 {
		time.Sleep(l.duration)
		stop.Store(true)
	}
	wg.Wait()
	elapsed := time.Since(start)

	return floorResult{
		rate:            float64(done.Load()) / elapsed.Seconds(),
		perRecord:       perRecord,
		allocsPerRecord: allocs,
	}, failed.get()
}

// floorOneCore runs floorMessage on one goroutine and returns its time
// and heap allocations per record. The allocations are counted by
// testing.AllocsPerRun, which rounds down what other goroutines allocate
// meanwhile.
func floorOneCore(l load) (time.Duration, float64, error) {
	var failed error
	allocs := testing.AllocsPerRun(1000, func() {
		if err := floorMessage(l.payload); err != nil {
			failed = err
		}
	})
	if failed != nil {
		return 0, 0, failed
	}

	n := int64(0)
	start := time.Now()
	for l.messages == 0 && time.Since(start) < l.duration/2 ||
		l.messages > 0 && n < l.messages {
		for range 100 {
			if err := floorMessage(l.payload); err != nil {
				return 0, 0, err
			}
		}
		n += 100
	}
	elapsed := time.Since(start)

	records := float64(n * recordsPerMessage)
	return time.Duration(float64(elapsed) / records), allocs / recordsPerMessage, nil
}
