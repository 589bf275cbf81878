package asyncflow

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/aviate-labs/agent-go/principal"
)

// Faults sets how an in-memory Network mistreats each call. Each
// probability is between 0 and 1 and applies to every call independently.
type Faults struct {
	// Drop loses the call after it was accepted: Send returns nil.
	Drop float64
	// Duplicate delivers the call a second time.
	Duplicate float64
	// Corrupt flips one random bit of the argument.
	Corrupt float64
	// Delay holds the call back for a random time up to MaxDelay, so that
	// calls overtake each other.
	Delay    float64
	MaxDelay time.Duration
}

func (f Faults) validate() error {
	for _, p := range []float64{f.Drop, f.Duplicate, f.Corrupt, f.Delay} {
		if p < 0 || p > 1 {
			return fmt.Errorf("%w: fault probability %v is outside [0, 1]", ErrInvalidConfig, p)
		}
	}
	if f.Delay > 0 && f.MaxDelay <= 0 {
		return fmt.Errorf("%w: Delay needs a positive MaxDelay", ErrInvalidConfig)
	}
	return nil
}

// NetworkStats counts what a Network did to the calls it carried.
type NetworkStats struct {
	// Calls counts submissions to attached principals.
	Calls uint64
	// Dropped counts calls lost: by the Drop fault or to a principal that
	// was down.
	Dropped uint64
	// Duplicated counts calls delivered twice.
	Duplicated uint64
	// Corrupted counts copies delivered with a flipped bit.
	Corrupted uint64
	// Delayed counts copies held back.
	Delayed uint64
	// Refused counts copies whose Deliver returned an error.
	Refused uint64
}

// Network is an in-memory network between Flows in one process, for tests
// and examples. Its faults are drawn from a seeded generator, so a run is
// repeatable when the calls arrive in the same order; delays use timers,
// so under testing/synctest they cost no real time. It is safe for
// concurrent use.
type Network struct {
	mu     sync.Mutex
	rng    *rand.Rand
	faults Faults
	nodes  map[string]Inbound
	down   map[string]bool
	stats  NetworkStats
	timers map[*time.Timer]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewNetwork returns a network whose faults are drawn from seed.
func NewNetwork(seed uint64, faults Faults) (*Network, error) {
	if err := faults.validate(); err != nil {
		return nil, err
	}
	return &Network{
		rng:    rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		faults: faults,
		nodes:  make(map[string]Inbound),
		down:   make(map[string]bool),
		timers: make(map[*time.Timer]struct{}),
	}, nil
}

// Attach makes calls to p arrive at in.
func (n *Network) Attach(p principal.Principal, in Inbound) {
	n.mu.Lock()
	defer n.mu.Unlock()

	n.nodes[string(p.Raw)] = in
	delete(n.down, string(p.Raw))
}

// Down makes p unreachable until the next Attach, as if its process had
// stopped: calls to it are accepted and lost.
func (n *Network) Down(p principal.Principal) {
	n.mu.Lock()
	defer n.mu.Unlock()

	n.down[string(p.Raw)] = true
}

// Transport returns the transport through which the principal from sends;
// receivers see from as the caller.
func (n *Network) Transport(from principal.Principal) Transport {
	return &netTransport{net: n, from: from}
}

// Stats returns the network's counters.
func (n *Network) Stats() NetworkStats {
	n.mu.Lock()
	defer n.mu.Unlock()

	return n.stats
}

// Close stops delayed calls that have not arrived and waits for those
// being delivered. Calls sent after Close are lost.
func (n *Network) Close() {
	n.mu.Lock()
	n.closed = true
	for t := range n.timers {
		if t.Stop() {
			n.wg.Done()
		}
	}
	clear(n.timers)
	n.mu.Unlock()

	n.wg.Wait()
}

// delivery is one copy of a call on its way.
type delivery struct {
	to    Inbound
	key   string // the receiver's principal, to find who is attached when it lands
	delay time.Duration
	arg   []byte
}

// plan draws the faults for one call and returns the copies to deliver.
func (n *Network) plan(to principal.Principal, arg []byte) ([]delivery, error) {
	n.mu.Lock()
	defer n.mu.Unlock()

	in, ok := n.nodes[string(to.Raw)]
	if !ok {
		return nil, fmt.Errorf("%w: %s is not on the network", ErrNoRoute, to)
	}
	n.stats.Calls++
	if n.closed || n.down[string(to.Raw)] || n.chance(n.faults.Drop) {
		n.stats.Dropped++
		return nil, nil
	}

	copies := 1
	if n.chance(n.faults.Duplicate) {
		n.stats.Duplicated++
		copies = 2
	}
	plan := make([]delivery, copies)
	for i := range plan {
		plan[i] = delivery{to: in, key: string(to.Raw), arg: arg}
		if n.chance(n.faults.Corrupt) && len(arg) > 0 {
			n.stats.Corrupted++
			plan[i].arg = n.flipBit(arg)
		}
		if n.chance(n.faults.Delay) {
			n.stats.Delayed++
			plan[i].delay = time.Duration(n.rng.Int64N(int64(n.faults.MaxDelay)))
		}
	}
	return plan, nil
}

func (n *Network) chance(p float64) bool {
	return p > 0 && n.rng.Float64() < p
}

func (n *Network) flipBit(arg []byte) []byte {
	c := append([]byte(nil), arg...)
	i := n.rng.IntN(len(c) * 8)
	c[i/8] ^= 1 << (i % 8)
	return c
}

// later delivers d after its delay on a timer the network tracks, to the
// Inbound attached when it lands: a peer restarted meanwhile gets it.
func (n *Network) later(from principal.Principal, method string, d delivery) {
	n.mu.Lock()
	defer n.mu.Unlock()

	if n.closed {
		return
	}
	n.wg.Add(1)
	var t *time.Timer
	t = time.AfterFunc(d.delay, func() {
		defer n.wg.Done()

		n.mu.Lock()
		delete(n.timers, t)
		to := n.nodes[d.key]
		n.mu.Unlock()
		if err := to.Deliver(context.Background(), from, method, d.arg); err != nil {
			n.refused()
		}
	})
	n.timers[t] = struct{}{}
}

func (n *Network) refused() {
	n.mu.Lock()
	defer n.mu.Unlock()

	n.stats.Refused++
}

type netTransport struct {
	net  *Network
	from principal.Principal
}

// Send implements Transport. Calls without delay arrive before Send
// returns, and an error the receiver returns for the first copy is
// returned, as an endpoint would refuse the submission.
func (t *netTransport) Send(ctx context.Context, to principal.Principal, method string,
	arg []byte) error {
	plan, err := t.net.plan(to, arg)
	if err != nil {
		return err
	}

	var first error
	for i, d := range plan {
		if d.delay > 0 {
			t.net.later(t.from, method, d)
			continue
		}
		err := d.to.Deliver(ctx, t.from, method, d.arg)
		if err != nil {
			t.net.refused()
		}
		if i == 0 {
			first = err
		}
	}
	return first
}

// Route implements Router.
func (t *netTransport) Route(to principal.Principal) error {
	t.net.mu.Lock()
	defer t.net.mu.Unlock()

	if _, ok := t.net.nodes[string(to.Raw)]; !ok {
		return fmt.Errorf("%w: %s is not on the network", ErrNoRoute, to)
	}
	return nil
}
