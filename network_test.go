package asyncflow

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/stretchr/testify/require"
)

// inbox is an Inbound that records what arrives, and when.
type inbox struct {
	mu      sync.Mutex
	arrived []arrival
}

type arrival struct {
	from principal.Principal
	arg  []byte
	at   time.Time
}

func (in *inbox) Deliver(_ context.Context, from principal.Principal, _ string,
	arg []byte) error {
	in.mu.Lock()
	defer in.mu.Unlock()

	in.arrived = append(in.arrived, arrival{from: from, arg: arg, at: time.Now()})
	return nil
}

func (in *inbox) all() []arrival {
	in.mu.Lock()
	defer in.mu.Unlock()

	return append([]arrival(nil), in.arrived...)
}

// sendAll sends n one-byte calls from alice to bob and returns bob's inbox.
func sendAll(t *testing.T, faults Faults, seed uint64, n int) (*inbox, NetworkStats) {
	t.Helper()
	net, err := NewNetwork(seed, faults)
	require.NoError(t, err)
	in := &inbox{}
	net.Attach(bob, in)
	tr := net.Transport(alice)

	for i := range n {
		require.NoError(t, tr.Send(t.Context(), bob, MethodNewMessage, []byte{byte(i)}))
	}
	time.Sleep(faults.MaxDelay)
	synctest.Wait()
	net.Close()
	return in, net.Stats()
}

func TestNetworkDeliversFaithfullyWithoutFaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		in, stats := sendAll(t, Faults{}, 1, 100)

		got := in.all()
		require.Len(t, got, 100)
		for i, a := range got {
			require.Equal(t, alice, a.from, "the receiver sees the sender")
			require.Equal(t, []byte{byte(i)}, a.arg, "in order, unchanged")
		}
		require.Equal(t, NetworkStats{Calls: 100}, stats)
	})
}

func TestNetworkFaults(t *testing.T) {
	cases := []struct {
		name   string
		faults Faults
		check  func(t *testing.T, got []arrival, s NetworkStats)
	}{
		{"drop", Faults{Drop: 0.5}, func(t *testing.T, got []arrival, s NetworkStats) {
			require.Positive(t, s.Dropped)
			require.Len(t, got, int(s.Calls-s.Dropped))
		}},
		{"duplicate", Faults{Duplicate: 0.5}, func(t *testing.T, got []arrival, s NetworkStats) {
			require.Positive(t, s.Duplicated)
			require.Len(t, got, int(s.Calls+s.Duplicated))
		}},
		{"corrupt", Faults{Corrupt: 0.5}, func(t *testing.T, got []arrival, s NetworkStats) {
			require.Positive(t, s.Corrupted)
			changed := 0
			for i, a := range got {
				if a.arg[0] != byte(i) {
					changed++
					diff := a.arg[0] ^ byte(i)
					require.Equal(t, 0, int(diff&(diff-1)), "exactly one bit flipped")
				}
			}
			require.Equal(t, int(s.Corrupted), changed)
		}},
		{"delay and reorder", Faults{Delay: 0.5, MaxDelay: time.Minute},
			func(t *testing.T, got []arrival, s NetworkStats) {
				require.Positive(t, s.Delayed)
				require.Len(t, got, 100)
				reordered := false
				for i := 1; i < len(got); i++ {
					reordered = reordered || got[i].arg[0] < got[i-1].arg[0]
				}
				require.True(t, reordered, "delayed calls are overtaken")
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				in, stats := sendAll(t, tc.faults, 7, 100)
				tc.check(t, in.all(), stats)
			})
		})
	}
}

func TestNetworkFaultsAreRepeatableFromTheSeed(t *testing.T) {
	faults := Faults{Drop: 0.2, Duplicate: 0.1, Corrupt: 0.1, Delay: 0.3, MaxDelay: time.Second}
	run := func(seed uint64) ([]arrival, NetworkStats) {
		var got []arrival
		var stats NetworkStats
		synctest.Test(t, func(t *testing.T) {
			in, s := sendAll(t, faults, seed, 200)
			got, stats = in.all(), s
		})
		return got, stats
	}

	first, firstStats := run(42)
	again, againStats := run(42)
	other, otherStats := run(43)

	require.Equal(t, firstStats, againStats)
	require.Equal(t, len(first), len(again))
	for i := range first {
		require.Equal(t, first[i].arg, again[i].arg)
	}
	require.NotEqual(t, firstStats, otherStats, "another seed, other faults")
	_ = other
}

func TestNetworkRefusesBadFaultsAndUnknownPrincipals(t *testing.T) {
	for _, f := range []Faults{{Drop: -0.1}, {Duplicate: 1.1}, {Corrupt: 2}, {Delay: 0.5}} {
		_, err := NewNetwork(1, f)
		require.ErrorIs(t, err, ErrInvalidConfig, "%+v", f)
	}

	net, err := NewNetwork(1, Faults{})
	require.NoError(t, err)
	err = net.Transport(alice).Send(t.Context(), carol, MethodNewMessage, []byte{1})
	require.ErrorIs(t, err, ErrNoRoute)
	require.ErrorIs(t, net.Transport(alice).(Router).Route(carol), ErrNoRoute)
}

func TestNetworkLosesCallsToAPeerThatIsDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, err := NewNetwork(1, Faults{})
		require.NoError(t, err)
		defer net.Close()
		in := &inbox{}
		net.Attach(bob, in)
		tr := net.Transport(alice)

		net.Down(bob)
		require.NoError(t, tr.Send(t.Context(), bob, MethodNewMessage, []byte{1}))
		net.Attach(bob, in)
		require.NoError(t, tr.Send(t.Context(), bob, MethodNewMessage, []byte{2}))

		got := in.all()
		require.Len(t, got, 1)
		require.Equal(t, []byte{2}, got[0].arg)
	})
}

func TestADelayedCallReachesThePeerAttachedWhenItLands(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, err := NewNetwork(1, Faults{Delay: 1, MaxDelay: time.Second})
		require.NoError(t, err)
		defer net.Close()
		before, after := &inbox{}, &inbox{}
		net.Attach(bob, before)

		require.NoError(t, net.Transport(alice).Send(t.Context(), bob, MethodAckAck, []byte("x")))
		net.Attach(bob, after) // bob restarted while the call was on its way
		time.Sleep(time.Second)
		synctest.Wait()

		require.Empty(t, before.all())
		require.Len(t, after.all(), 1)
	})
}
