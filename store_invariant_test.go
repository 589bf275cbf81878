package asyncflow

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"
)

// checkOutHeap checks that every pending record sits in the due heap at
// the index it believes, that nothing else does, and the heap order.
func checkOutHeap(t *testing.T, s *MemoryStore) {
	t.Helper()
	inHeap := 0
	for i, e := range s.dueOut {
		if int(e.due) != i {
			t.Fatalf("heap[%d] believes it is at %d", i, e.due)
		}
		if s.out[e.id] != e {
			t.Fatalf("heap[%d] (%s) is not the stored record", i, e.id)
		}
		if i > 0 && e.nextSend.Before(s.dueOut[(i-1)/2].nextSend) {
			t.Fatalf("heap order broken at %d", i)
		}
		inHeap++
	}
	pending := 0
	for _, e := range s.out {
		if e.state == OutPending {
			pending++
			if e.due == notDue {
				t.Fatalf("pending %s is not in the due heap", e.id)
			}
		} else if e.due != notDue {
			t.Fatalf("%s %s is in the due heap", e.state, e.id)
		}
	}
	if pending != inHeap {
		t.Fatalf("%d pending, %d in the heap", pending, inHeap)
	}
}

func TestMemoryStoreDueHeapInvariant(t *testing.T) {
	ctx := context.Background()
	s := NewMemoryStore()
	rng := rand.New(rand.NewPCG(7, 7))
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ids := make([]MsgID, 30)
	for i := range ids {
		ids[i][15] = byte(i)
		ids[i][5] = byte(rng.IntN(256))
	}
	to := principal.Principal{Raw: []byte{1, 2, 3}}
	for step := range 20000 {
		id := ids[rng.IntN(len(ids))]
		switch rng.IntN(5) {
		case 0, 1:
			st := OutState(1 + rng.IntN(4))
			if err := s.PutOutgoing(ctx, Outgoing{MsgID: id, To: to, State: st,
				NextSend: base.Add(time.Duration(rng.IntN(50)) * time.Second)}); err != nil {
				t.Fatal(err)
			}
		case 2:
			_ = s.DeleteOutgoing(ctx, id)
		case 3:
			due, _ := s.DueOutgoing(ctx, base.Add(time.Duration(rng.IntN(60))*time.Second),
				rng.IntN(10))
			for i := 1; i < len(due); i++ {
				if due[i].NextSend.Before(due[i-1].NextSend) {
					t.Fatalf("step %d: due out of order", step)
				}
			}
			for _, m := range due {
				if m.State != OutPending {
					t.Fatalf("step %d: due returned %s", step, m.State)
				}
			}
		case 4:
			next, ok, _ := s.NextDue(ctx)
			var want time.Time
			found := false
			for _, e := range s.out {
				if e.state == OutPending && (!found || e.nextSend.Before(want)) {
					want, found = e.nextSend, true
				}
			}
			if ok != found || !next.Equal(want) {
				t.Fatalf("step %d: NextDue = %v %v, want %v %v", step, next, ok, want, found)
			}
		}
		checkOutHeap(t, s)
	}
}

// Concurrent reservations, holds, adoptions and releases of the same ids
// leave nothing counted once every id is released.
func TestInFlightCountsReturnToZero(t *testing.T) {
	f := newInFlight(3)
	targets := []principal.Principal{{Raw: []byte{1}}, {Raw: []byte{2}}}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range 2000 {
				to := targets[rng.IntN(2)]
				var id MsgID
				id[0], id[1], id[2] = byte(w), byte(i), byte(i>>8)
				if err := f.reserve(context.Background(), to, true); err != nil {
					panic(err)
				}
				if rng.IntN(5) == 0 {
					f.unreserve(to)
					continue
				}
				f.hold(id, to)
				if rng.IntN(3) == 0 {
					f.adopt(id, to) // already counted: no change
				}
				f.release(id)
				f.release(id) // twice: no change
			}
		}()
	}
	wg.Wait()
	for _, to := range targets {
		if n := f.count(to); n != 0 {
			t.Errorf("count(%x) = %d after every id was released", to.Raw, n)
		}
	}
	if len(f.targets) != 0 || len(f.ids) != 0 {
		t.Errorf("left %d targets, %d ids", len(f.targets), len(f.ids))
	}
	_ = fmt.Sprint()
}
