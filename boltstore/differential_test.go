package boltstore_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/stretchr/testify/require"

	"github.com/asyncflow/asyncflow"
	"github.com/asyncflow/asyncflow/boltstore"
)

var diffBase = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// diffID returns the id with time diffBase + ms milliseconds and entropy n.
func diffID(ms int, n byte) asyncflow.MsgID {
	var m asyncflow.MsgID
	t := uint64(diffBase.Add(time.Duration(ms) * time.Millisecond).UnixMilli())
	for i := range 6 {
		m[i] = byte(t >> (40 - 8*i))
	}
	m[15] = n
	return m
}

func outString(m asyncflow.Outgoing) string {
	return fmt.Sprintf("%s to=%x pay=%x st=%s ack=%x h=%x att=%d next=%d", m.MsgID, m.To.Raw,
		m.Payload, m.State, m.Ack, m.AckHash, m.Attempts, m.NextSend.UnixNano())
}

func inString(m asyncflow.Incoming) string {
	return fmt.Sprintf("%x/%s ph=%x ack=%x st=%s att=%d next=%d", m.From.Raw, m.MsgID,
		m.PayloadHash, m.Ack, m.State, m.Attempts, m.NextSend.UnixNano())
}

func outStrings(l []asyncflow.Outgoing) []string {
	var s []string
	for _, m := range l {
		s = append(s, outString(m))
	}
	return s
}

func inStrings(l []asyncflow.Incoming) []string {
	var s []string
	for _, m := range l {
		s = append(s, inString(m))
	}
	return s
}

// The memory store and the bolt store answer every call alike over a
// long random sequence of changes and scans; every due time is distinct,
// so that "earliest first" leaves no choice. Callers scribble over what
// they pass in and get back, which neither store may notice.
func TestMemoryStoreMatchesBoltStore(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { diffRun(t, seed) })
	}
}

func diffRun(t *testing.T, seed uint64) {
	ctx := t.Context()
	mem := asyncflow.NewMemoryStore()
	bolt, err := boltstore.Open(filepath.Join(t.TempDir(), "store"), short)
	require.NoError(t, err)
	defer bolt.Close()
	stores := []asyncflow.Store{mem, bolt}

	rng := rand.New(rand.NewPCG(seed, 2))
	peers := []principal.Principal{
		{Raw: []byte{0, 0, 0, 0, 0, 0, 0, 1, 1, 1}},
		{Raw: []byte{0, 0, 0, 0, 0, 0, 0, 2, 1, 1}},
		{Raw: []byte{0, 0, 0, 0, 0, 0, 0, 3, 1, 1, 7, 7}},
	}
	outIDs := make([]asyncflow.MsgID, 40)
	for i := range outIDs {
		outIDs[i] = diffID(rng.IntN(5000), byte(i))
	}
	// Each incoming id has its own millisecond and its own caller, so that
	// "oldest first" in ExpireIncoming leaves no choice between records.
	inIDs := make([]asyncflow.MsgID, 40)
	inFrom := make([]principal.Principal, 40)
	for i, ms := range rng.Perm(5000)[:len(inIDs)] {
		inIDs[i] = diffID(ms, byte(100+i))
		inFrom[i] = peers[i%len(peers)]
	}
	tick := 0
	nextTime := func() time.Time {
		tick++
		return diffBase.Add(time.Duration(rng.IntN(20000))*time.Millisecond +
			time.Duration(tick)*time.Nanosecond)
	}
	outStates := []asyncflow.OutState{asyncflow.OutPending, asyncflow.OutPending,
		asyncflow.OutPending, asyncflow.OutAcked, asyncflow.OutCorrupt, asyncflow.OutGivenUp}

	const steps = 1500
	for step := range steps {
		where := func() string { return fmt.Sprintf("step %d", step) }
		switch op := rng.IntN(12); op {
		case 0, 1, 2: // put outgoing
			m := asyncflow.Outgoing{
				MsgID:    outIDs[rng.IntN(len(outIDs))],
				To:       principal.Principal{Raw: bytes.Clone(peers[rng.IntN(len(peers))].Raw)},
				Payload:  []byte(fmt.Sprintf("p%d", step)),
				State:    outStates[rng.IntN(len(outStates))],
				Attempts: uint32(rng.IntN(9)),
				NextSend: nextTime(),
			}
			if m.State != asyncflow.OutPending && rng.IntN(2) == 0 {
				m.Ack = []byte(fmt.Sprintf("a%d", step))
				m.AckHash = asyncflow.HashOf(m.Ack)
			}
			for _, st := range stores {
				require.NoError(t, st.PutOutgoing(ctx, m), where())
			}
			m.Payload[0], m.To.Raw[0] = 'X', 0xff
			if m.Ack != nil {
				m.Ack[0] = 'X'
			}
		case 3: // delete outgoing
			id := outIDs[rng.IntN(len(outIDs))]
			for _, st := range stores {
				require.NoError(t, st.DeleteOutgoing(ctx, id), where())
			}
		case 4, 5: // put incoming
			k := rng.IntN(len(inIDs))
			m := asyncflow.Incoming{
				From:        principal.Principal{Raw: bytes.Clone(inFrom[k].Raw)},
				MsgID:       inIDs[k],
				PayloadHash: rng.Uint32(),
				Ack:         []byte(fmt.Sprintf("ia%d", step)),
				State:       []asyncflow.InState{asyncflow.InAcking, asyncflow.InDone}[rng.IntN(2)],
				Attempts:    uint32(rng.IntN(9)),
				NextSend:    nextTime(),
			}
			for _, st := range stores {
				require.NoError(t, st.PutIncoming(ctx, m), where())
			}
			m.Ack[0], m.From.Raw[0] = 'X', 0xff
		case 6: // expire
			before := diffBase.Add(time.Duration(rng.IntN(5000)) * time.Millisecond)
			limit := rng.IntN(4)
			var n [2]int
			for i, st := range stores {
				n[i], err = st.ExpireIncoming(ctx, before, limit)
				require.NoError(t, err, where())
			}
			require.Equal(t, n[0], n[1], "%s: ExpireIncoming(%s, %d)", where(), before, limit)
		case 7: // due outgoing
			now := diffBase.Add(time.Duration(rng.IntN(22000)) * time.Millisecond)
			limit := rng.IntN(8)
			var got [2][]string
			for i, st := range stores {
				l, err := st.DueOutgoing(ctx, now, limit)
				require.NoError(t, err, where())
				got[i] = outStrings(l)
				for _, m := range l {
					if len(m.Payload) > 0 {
						m.Payload[0] = 'Z'
					}
					if len(m.To.Raw) > 0 {
						m.To.Raw[0] = 0xee
					}
				}
			}
			require.Equal(t, got[1], got[0], "%s: DueOutgoing(%s, %d): bolt, memory",
				where(), now, limit)
		case 8: // due incoming
			now := diffBase.Add(time.Duration(rng.IntN(22000)) * time.Millisecond)
			limit := rng.IntN(8)
			var got [2][]string
			for i, st := range stores {
				l, err := st.DueIncoming(ctx, now, limit)
				require.NoError(t, err, where())
				got[i] = inStrings(l)
				for _, m := range l {
					if len(m.Ack) > 0 {
						m.Ack[0] = 'Z'
					}
					if len(m.From.Raw) > 0 {
						m.From.Raw[0] = 0xee
					}
				}
			}
			require.Equal(t, got[1], got[0], "%s: DueIncoming(%s, %d): bolt, memory",
				where(), now, limit)
		case 9: // next due
			var got [2]string
			for i, st := range stores {
				next, ok, err := st.NextDue(ctx)
				require.NoError(t, err, where())
				got[i] = fmt.Sprint(ok, next.UnixNano())
			}
			require.Equal(t, got[1], got[0], "%s: NextDue: bolt, memory", where())
		case 10: // list outgoing
			s := outStates[rng.IntN(len(outStates))]
			var got [2][]string
			for i, st := range stores {
				l, err := st.ListOutgoing(ctx, s)
				require.NoError(t, err, where())
				got[i] = outStrings(l)
				for _, m := range l {
					m.Payload[0] = 'Z'
				}
			}
			require.Equal(t, got[1], got[0], "%s: ListOutgoing(%s): bolt, memory", where(), s)
		case 11: // lookups
			id := outIDs[rng.IntN(len(outIDs))]
			var got [2]string
			for i, st := range stores {
				m, err := st.Outgoing(ctx, id)
				got[i] = fmt.Sprint(err != nil, outString(m))
			}
			require.Equal(t, got[1], got[0], "%s: Outgoing: bolt, memory", where())
			k := rng.IntN(len(inIDs))
			from, iid := inFrom[k], inIDs[k]
			for i, st := range stores {
				m, err := st.Incoming(ctx, from, iid)
				got[i] = fmt.Sprint(err != nil, inString(m))
			}
			require.Equal(t, got[1], got[0], "%s: Incoming: bolt, memory", where())
		}
	}

	// At the end, every record and every scan agree.
	for _, s := range outStates[2:] {
		var got [2][]string
		for i, st := range stores {
			l, err := st.ListOutgoing(ctx, s)
			require.NoError(t, err)
			got[i] = outStrings(l)
		}
		require.Equal(t, got[1], got[0], "final ListOutgoing(%s)", s)
	}
	var got [2][]string
	for i, st := range stores {
		l, err := st.DueOutgoing(ctx, diffBase.Add(time.Hour), 1000)
		require.NoError(t, err)
		got[i] = outStrings(l)
		require.True(t, slices.IsSortedFunc(l, func(a, b asyncflow.Outgoing) int {
			return a.NextSend.Compare(b.NextSend)
		}))
	}
	require.Equal(t, got[1], got[0], "final DueOutgoing")
	for i, st := range stores {
		l, err := st.DueIncoming(ctx, diffBase.Add(time.Hour), 1000)
		require.NoError(t, err)
		got[i] = inStrings(l)
	}
	require.Equal(t, got[1], got[0], "final DueIncoming")
}
