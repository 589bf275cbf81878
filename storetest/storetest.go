// Package storetest is the conformance suite for asyncflow.Store
// implementations. A store's tests call Run with a way to open it; the
// suite checks every transition of both sides' records, the due and
// expiry scans and their order, copies in and out, concurrent callers,
// Close, and, for a durable store, that a reopened store holds what was
// committed.
package storetest

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/asyncflow/asyncflow"
)

// Suite says how to open the store under test.
type Suite struct {
	// Open opens the store kept at path, creating it if needed. A store
	// held in memory may ignore path.
	Open func(t *testing.T, path string) (asyncflow.Store, error)

	// Durable says that a store opened again at the same path after Close
	// holds every record committed before.
	Durable bool
}

// Run runs the suite as subtests of t.
func Run(t *testing.T, s Suite) {
	tests := []struct {
		name string
		run  func(*testing.T, Suite)
	}{
		{"OutgoingRoundTrip", testOutgoingRoundTrip},
		{"OutgoingTransitions", testOutgoingTransitions},
		{"ListOutgoingByStateInIDOrder", testListOutgoing},
		{"DueOutgoingEarliestFirstWithinLimit", testDueOutgoing},
		{"IncomingRoundTripPerCaller", testIncomingRoundTrip},
		{"IncomingTransitions", testIncomingTransitions},
		{"DueIncomingEarliestFirstWithinLimit", testDueIncoming},
		{"NextDueIsTheEarliestOfBothSides", testNextDue},
		{"DueTimesKeepTheirOrderAcross1970", testDueAcross1970},
		{"ExpireIncomingOldestFirstWithinLimit", testExpireIncoming},
		{"RecordsAreCopiedInAndOut", testCopies},
		{"ConcurrentCallers", testConcurrent},
		{"CallsAfterCloseFail", testClosed},
		{"ReopenKeepsEveryRecord", testReopen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, s) })
	}
}

// open opens a fresh store in a temporary folder and closes it at the end
// of the test.
func open(t *testing.T, s Suite) (asyncflow.Store, string) {
	path := filepath.Join(t.TempDir(), "store")
	st, err := s.Open(t, path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	return st, path
}

// base is a fixed instant, so that ids and times are repeatable.
var base = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// id returns the id with time base + ms milliseconds and entropy n.
func id(ms int, n byte) asyncflow.MsgID {
	var m asyncflow.MsgID
	t := uint64(base.Add(time.Duration(ms) * time.Millisecond).UnixMilli())
	for i := range 6 {
		m[i] = byte(t >> (40 - 8*i))
	}
	m[15] = n
	return m
}

var (
	peerA = principal.Principal{Raw: []byte{0, 0, 0, 0, 0, 0, 0, 1, 1, 1}}
	peerB = principal.Principal{Raw: []byte{0, 0, 0, 0, 0, 0, 0, 2, 1, 1}}
)

func pending(id asyncflow.MsgID, next time.Time) asyncflow.Outgoing {
	return asyncflow.Outgoing{MsgID: id, To: peerA, Payload: []byte("payload " + id.String()),
		State: asyncflow.OutPending, Attempts: 1, NextSend: next}
}

func acking(from principal.Principal, id asyncflow.MsgID, next time.Time) asyncflow.Incoming {
	return asyncflow.Incoming{From: from, MsgID: id, PayloadHash: 0xdeadbeef,
		Ack: []byte("ack " + id.String()), State: asyncflow.InAcking, Attempts: 1,
		NextSend: next}
}

// equalOut checks two outgoing records field by field; an empty and a
// nil slice are the same record, and times compare as instants.
func equalOut(t *testing.T, want, got asyncflow.Outgoing) {
	t.Helper()
	assert.Equal(t, want.MsgID, got.MsgID, "MsgID")
	assert.Equal(t, want.To.String(), got.To.String(), "To")
	assert.True(t, bytes.Equal(want.Payload, got.Payload), "Payload")
	assert.Equal(t, want.State, got.State, "State")
	assert.True(t, bytes.Equal(want.Ack, got.Ack), "Ack")
	assert.Equal(t, want.AckHash, got.AckHash, "AckHash")
	assert.Equal(t, want.Attempts, got.Attempts, "Attempts")
	assert.True(t, want.NextSend.Equal(got.NextSend), "NextSend: want %s, got %s",
		want.NextSend, got.NextSend)
}

func equalIn(t *testing.T, want, got asyncflow.Incoming) {
	t.Helper()
	assert.Equal(t, want.From.String(), got.From.String(), "From")
	assert.Equal(t, want.MsgID, got.MsgID, "MsgID")
	assert.Equal(t, want.PayloadHash, got.PayloadHash, "PayloadHash")
	assert.True(t, bytes.Equal(want.Ack, got.Ack), "Ack")
	assert.Equal(t, want.State, got.State, "State")
	assert.Equal(t, want.Attempts, got.Attempts, "Attempts")
	assert.True(t, want.NextSend.Equal(got.NextSend), "NextSend: want %s, got %s",
		want.NextSend, got.NextSend)
}

func ids[T any](list []T, key func(T) asyncflow.MsgID) []asyncflow.MsgID {
	out := make([]asyncflow.MsgID, 0, len(list))
	for _, m := range list {
		out = append(out, key(m))
	}
	return out
}

func outID(m asyncflow.Outgoing) asyncflow.MsgID { return m.MsgID }
func inID(m asyncflow.Incoming) asyncflow.MsgID  { return m.MsgID }

func testOutgoingRoundTrip(t *testing.T, s Suite) {
	st, _ := open(t, s)
	ctx := t.Context()

	_, err := st.Outgoing(ctx, id(1, 1))
	require.ErrorIs(t, err, asyncflow.ErrNotFound)

	full := asyncflow.Outgoing{MsgID: id(1, 1), To: peerB,
		Payload: bytes.Repeat([]byte{0xa5}, asyncflow.DefaultMaxPayload),
		State:   asyncflow.OutCorrupt, Ack: []byte("answer"),
		AckHash: asyncflow.SomeHash(42), Attempts: 7, NextSend: base.Add(time.Hour)}
	empty := asyncflow.Outgoing{MsgID: id(2, 1), To: peerA, State: asyncflow.OutPending,
		NextSend: base}
	for _, m := range []asyncflow.Outgoing{full, empty} {
		require.NoError(t, st.PutOutgoing(ctx, m))
		got, err := st.Outgoing(ctx, m.MsgID)
		require.NoError(t, err)
		equalOut(t, m, got)
	}

	// Due times as far as Unix nanoseconds reach, either side of 1970.
	for i, at := range []time.Time{time.Date(1969, 7, 20, 20, 17, 0, 0, time.UTC),
		time.Unix(0, 0), time.Unix(0, 1), time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)} {
		m := pending(id(3+i, 1), at)
		require.NoError(t, st.PutOutgoing(ctx, m))
		got, err := st.Outgoing(ctx, m.MsgID)
		require.NoError(t, err)
		equalOut(t, m, got)
	}

	require.NoError(t, st.DeleteOutgoing(ctx, full.MsgID))
	_, err = st.Outgoing(ctx, full.MsgID)
	require.ErrorIs(t, err, asyncflow.ErrNotFound)
	require.NoError(t, st.DeleteOutgoing(ctx, full.MsgID), "deleting a missing record")
}

func testOutgoingTransitions(t *testing.T, s Suite) {
	st, _ := open(t, s)
	ctx := t.Context()
	m := pending(id(1, 1), base)

	require.NoError(t, st.PutOutgoing(ctx, m))
	due, err := st.DueOutgoing(ctx, base, 10)
	require.NoError(t, err)
	require.Equal(t, []asyncflow.MsgID{m.MsgID}, ids(due, outID))

	// A resend moves the record later: it is no longer due now.
	m.Attempts, m.NextSend = 2, base.Add(time.Minute)
	require.NoError(t, st.PutOutgoing(ctx, m))
	due, err = st.DueOutgoing(ctx, base, 10)
	require.NoError(t, err)
	assert.Empty(t, due, "a resent record is due at its new time only")
	due, err = st.DueOutgoing(ctx, base.Add(time.Minute), 10)
	require.NoError(t, err)
	require.Len(t, due, 1)
	equalOut(t, m, due[0])

	// Acked, corrupt and given-up records are not resent.
	for _, state := range []asyncflow.OutState{asyncflow.OutAcked, asyncflow.OutCorrupt,
		asyncflow.OutGivenUp} {
		m.State, m.Ack, m.AckHash = state, []byte("ack"), asyncflow.SomeHash(9)
		require.NoError(t, st.PutOutgoing(ctx, m))
		due, err = st.DueOutgoing(ctx, base.Add(time.Hour), 10)
		require.NoError(t, err)
		assert.Empty(t, due, "a record in state %s is not due", state)
		got, err := st.Outgoing(ctx, m.MsgID)
		require.NoError(t, err)
		equalOut(t, m, got)
	}

	// Back to pending (a store must not assume the Flow's order), then gone.
	m.State = asyncflow.OutPending
	require.NoError(t, st.PutOutgoing(ctx, m))
	due, err = st.DueOutgoing(ctx, base.Add(time.Hour), 10)
	require.NoError(t, err)
	require.Len(t, due, 1)
	require.NoError(t, st.DeleteOutgoing(ctx, m.MsgID))
	due, err = st.DueOutgoing(ctx, base.Add(time.Hour), 10)
	require.NoError(t, err)
	assert.Empty(t, due, "a deleted record is not due")
	for _, state := range []asyncflow.OutState{asyncflow.OutPending, asyncflow.OutAcked,
		asyncflow.OutCorrupt, asyncflow.OutGivenUp} {
		list, err := st.ListOutgoing(ctx, state)
		require.NoError(t, err)
		assert.Empty(t, list, "a deleted record is not listed as %s", state)
	}
}

func testListOutgoing(t *testing.T, s Suite) {
	st, _ := open(t, s)
	ctx := t.Context()
	states := []asyncflow.OutState{asyncflow.OutPending, asyncflow.OutAcked,
		asyncflow.OutCorrupt, asyncflow.OutGivenUp}

	// Put in reverse id order, so that insertion order cannot pass for id order.
	want := map[asyncflow.OutState][]asyncflow.MsgID{}
	for i := 39; i >= 0; i-- {
		m := pending(id(i, byte(i)), base.Add(-time.Duration(i)*time.Second))
		m.State = states[i%len(states)]
		require.NoError(t, st.PutOutgoing(ctx, m))
		want[m.State] = append([]asyncflow.MsgID{m.MsgID}, want[m.State]...)
	}

	for _, state := range states {
		list, err := st.ListOutgoing(ctx, state)
		require.NoError(t, err)
		assert.Equal(t, want[state], ids(list, outID), "records in state %s", state)
		for _, m := range list {
			assert.Equal(t, state, m.State)
		}
	}
}

func testDueOutgoing(t *testing.T, s Suite) {
	st, _ := open(t, s)
	ctx := t.Context()

	// Ids in one order, due times in the opposite one.
	var want []asyncflow.MsgID
	for i := range 10 {
		m := pending(id(i, 1), base.Add(time.Duration(10-i)*time.Second))
		require.NoError(t, st.PutOutgoing(ctx, m))
		want = append([]asyncflow.MsgID{m.MsgID}, want...)
	}

	due, err := st.DueOutgoing(ctx, base, 10)
	require.NoError(t, err)
	assert.Empty(t, due, "nothing is due before its time")

	due, err = st.DueOutgoing(ctx, base.Add(5*time.Second), 10)
	require.NoError(t, err)
	assert.Equal(t, want[:5], ids(due, outID), "due at or before now, earliest first")

	due, err = st.DueOutgoing(ctx, base.Add(time.Hour), 3)
	require.NoError(t, err)
	assert.Equal(t, want[:3], ids(due, outID), "no more than the limit")
}

func testIncomingRoundTrip(t *testing.T, s Suite) {
	st, _ := open(t, s)
	ctx := t.Context()

	_, err := st.Incoming(ctx, peerA, id(1, 1))
	require.ErrorIs(t, err, asyncflow.ErrNotFound)

	// One id from two callers is two records.
	a := acking(peerA, id(1, 1), base)
	b := acking(peerB, id(1, 1), base.Add(time.Second))
	b.Ack, b.State, b.PayloadHash = nil, asyncflow.InDone, 0
	require.NoError(t, st.PutIncoming(ctx, a))
	require.NoError(t, st.PutIncoming(ctx, b))

	got, err := st.Incoming(ctx, peerA, a.MsgID)
	require.NoError(t, err)
	equalIn(t, a, got)
	got, err = st.Incoming(ctx, peerB, b.MsgID)
	require.NoError(t, err)
	equalIn(t, b, got)

	big := acking(peerA, id(2, 1), base)
	big.Ack = bytes.Repeat([]byte{0x5a}, asyncflow.DefaultMaxPayload)
	require.NoError(t, st.PutIncoming(ctx, big))
	got, err = st.Incoming(ctx, peerA, big.MsgID)
	require.NoError(t, err)
	equalIn(t, big, got)
}

func testIncomingTransitions(t *testing.T, s Suite) {
	st, _ := open(t, s)
	ctx := t.Context()
	m := acking(peerA, id(1, 1), base)

	require.NoError(t, st.PutIncoming(ctx, m))
	m.Attempts, m.NextSend = 2, base.Add(time.Minute)
	require.NoError(t, st.PutIncoming(ctx, m))
	due, err := st.DueIncoming(ctx, base, 10)
	require.NoError(t, err)
	assert.Empty(t, due, "a resent ack is due at its new time only")
	due, err = st.DueIncoming(ctx, base.Add(time.Minute), 10)
	require.NoError(t, err)
	require.Len(t, due, 1)
	equalIn(t, m, due[0])

	m.State = asyncflow.InDone
	require.NoError(t, st.PutIncoming(ctx, m))
	due, err = st.DueIncoming(ctx, base.Add(time.Hour), 10)
	require.NoError(t, err)
	assert.Empty(t, due, "a done record is not resent")
	got, err := st.Incoming(ctx, peerA, m.MsgID)
	require.NoError(t, err)
	equalIn(t, m, got)
}

func testDueIncoming(t *testing.T, s Suite) {
	st, _ := open(t, s)
	ctx := t.Context()

	var want []string
	for i := range 10 {
		from := []principal.Principal{peerA, peerB}[i%2]
		m := acking(from, id(i, 1), base.Add(time.Duration(10-i)*time.Second))
		require.NoError(t, st.PutIncoming(ctx, m))
		want = append([]string{from.String() + "/" + m.MsgID.String()}, want...)
	}
	keys := func(list []asyncflow.Incoming) []string {
		var out []string
		for _, m := range list {
			out = append(out, m.From.String()+"/"+m.MsgID.String())
		}
		return out
	}

	due, err := st.DueIncoming(ctx, base, 10)
	require.NoError(t, err)
	assert.Empty(t, due, "nothing is due before its time")
	due, err = st.DueIncoming(ctx, base.Add(5*time.Second), 10)
	require.NoError(t, err)
	assert.Equal(t, want[:5], keys(due), "due at or before now, earliest first")
	due, err = st.DueIncoming(ctx, base.Add(time.Hour), 3)
	require.NoError(t, err)
	assert.Equal(t, want[:3], keys(due), "no more than the limit")
}

func testNextDue(t *testing.T, s Suite) {
	st, _ := open(t, s)
	ctx := t.Context()

	_, ok, err := st.NextDue(ctx)
	require.NoError(t, err)
	assert.False(t, ok, "an empty store has nothing due")

	out := pending(id(1, 1), base.Add(2*time.Second))
	in := acking(peerA, id(2, 1), base.Add(time.Second))
	require.NoError(t, st.PutOutgoing(ctx, out))
	require.NoError(t, st.PutIncoming(ctx, in))
	next, ok, err := st.NextDue(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	assert.True(t, next.Equal(in.NextSend), "the receiver's ack is due first: got %s", next)

	in.State = asyncflow.InDone
	require.NoError(t, st.PutIncoming(ctx, in))
	next, ok, err = st.NextDue(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	assert.True(t, next.Equal(out.NextSend), "then the sender's message: got %s", next)

	for _, state := range []asyncflow.OutState{asyncflow.OutAcked, asyncflow.OutGivenUp} {
		out.State = state
		require.NoError(t, st.PutOutgoing(ctx, out))
		_, ok, err = st.NextDue(ctx)
		require.NoError(t, err)
		assert.False(t, ok, "%s and done records are not due", state)
	}
}

// A due time is an instant like any other, before 1970 as after it: the
// scans and NextDue order them as times, whatever encoding a store uses.
func testDueAcross1970(t *testing.T, s Suite) {
	st, _ := open(t, s)
	ctx := t.Context()
	epoch := time.Unix(0, 0)
	times := []time.Time{ // earliest first
		time.Date(1950, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC),
		epoch.Add(-time.Nanosecond),
		epoch,
		epoch.Add(time.Nanosecond),
		base,
	}
	// Ids run against the times, so that an order by id shows.
	idAt := func(i int, n byte) asyncflow.MsgID { return id(len(times)-i, n) }
	for _, i := range []int{3, 5, 0, 4, 1, 2} {
		require.NoError(t, st.PutOutgoing(ctx, pending(idAt(i, 1), times[i])))
		require.NoError(t, st.PutIncoming(ctx, acking(peerA, idAt(i, 2), times[i])))
	}
	var want []asyncflow.MsgID
	for i := range times {
		want = append(want, idAt(i, 1))
	}
	wantIn := func(n int) []asyncflow.MsgID {
		var out []asyncflow.MsgID
		for i := range n {
			out = append(out, idAt(i, 2))
		}
		return out
	}

	far := base.Add(time.Hour)
	out, err := st.DueOutgoing(ctx, far, 10)
	require.NoError(t, err)
	assert.Equal(t, want, ids(out, outID), "outgoing, earliest first")
	in, err := st.DueIncoming(ctx, far, 10)
	require.NoError(t, err)
	assert.Equal(t, wantIn(len(times)), ids(in, inID), "incoming, earliest first")

	out, err = st.DueOutgoing(ctx, times[1].Add(-time.Hour), 10)
	require.NoError(t, err)
	assert.Equal(t, want[:1], ids(out, outID), "only the 1950 message is due in 1959")
	in, err = st.DueIncoming(ctx, epoch.Add(-time.Nanosecond), 10)
	require.NoError(t, err)
	assert.Equal(t, wantIn(3), ids(in, inID), "due up to the last instant before 1970")

	next, ok, err := st.NextDue(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	assert.True(t, next.Equal(times[0]), "NextDue: want %s, got %s", times[0], next)
}

func testExpireIncoming(t *testing.T, s Suite) {
	st, _ := open(t, s)
	ctx := t.Context()

	// Ten records, one per second of id time, put in scrambled order, half
	// of them still acking; and one outgoing record, which expiry leaves.
	for _, i := range []int{7, 2, 9, 0, 5, 3, 8, 1, 6, 4} {
		m := acking([]principal.Principal{peerA, peerB}[i%2], id(i*1000, 1), base)
		if i%2 == 0 {
			m.State = asyncflow.InDone
		}
		require.NoError(t, st.PutIncoming(ctx, m))
	}
	out := pending(id(0, 2), base)
	require.NoError(t, st.PutOutgoing(ctx, out))

	n, err := st.ExpireIncoming(ctx, base.Add(4*time.Second), 3)
	require.NoError(t, err)
	assert.Equal(t, 3, n, "no more than the limit")
	n, err = st.ExpireIncoming(ctx, base.Add(4*time.Second), 100)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "only the records older than the cut")
	n, err = st.ExpireIncoming(ctx, base.Add(4*time.Second), 100)
	require.NoError(t, err)
	assert.Zero(t, n, "nothing left to expire")

	for i := range 10 {
		_, err := st.Incoming(ctx, []principal.Principal{peerA, peerB}[i%2], id(i*1000, 1))
		if i < 4 {
			assert.ErrorIs(t, err, asyncflow.ErrNotFound, "record %d expired", i)
		} else {
			assert.NoError(t, err, "record %d kept", i)
		}
	}
	due, err := st.DueIncoming(ctx, base, 100)
	require.NoError(t, err)
	assert.Equal(t, []asyncflow.MsgID{id(5000, 1), id(7000, 1), id(9000, 1)},
		sorted(ids(due, inID)), "expired acks are no longer resent")
	_, err = st.Outgoing(ctx, out.MsgID)
	assert.NoError(t, err, "expiry leaves the sender's records")
}

func sorted(list []asyncflow.MsgID) []asyncflow.MsgID {
	for i := 1; i < len(list); i++ {
		for j := i; j > 0 && list[j].Compare(list[j-1]) < 0; j-- {
			list[j], list[j-1] = list[j-1], list[j]
		}
	}
	return list
}

func testCopies(t *testing.T, s Suite) {
	st, _ := open(t, s)
	ctx := t.Context()

	out := pending(id(1, 1), base)
	out.To = principal.Principal{Raw: bytes.Clone(peerA.Raw)}
	out.Ack = []byte("ack")
	require.NoError(t, st.PutOutgoing(ctx, out))
	out.Payload[0], out.To.Raw[0], out.Ack[0] = 'X', 9, 'X'
	got, err := st.Outgoing(ctx, out.MsgID)
	require.NoError(t, err)
	assert.Equal(t, byte('p'), got.Payload[0], "the store kept its own copy of the payload")
	assert.Equal(t, byte(0), got.To.Raw[0], "and of the target")
	assert.Equal(t, byte('a'), got.Ack[0], "and of the ack")
	got.Payload[0] = 'Y'
	again, err := st.Outgoing(ctx, out.MsgID)
	require.NoError(t, err)
	assert.Equal(t, byte('p'), again.Payload[0], "a returned record is the caller's copy")

	in := acking(principal.Principal{Raw: bytes.Clone(peerA.Raw)}, id(2, 1), base)
	require.NoError(t, st.PutIncoming(ctx, in))
	in.Ack[0], in.From.Raw[9] = 'X', 9
	gotIn, err := st.Incoming(ctx, peerA, in.MsgID)
	require.NoError(t, err)
	assert.Equal(t, byte('a'), gotIn.Ack[0], "the store kept its own copy of the ack")
	gotIn.Ack[0] = 'Y'
	due, err := st.DueIncoming(ctx, base, 1)
	require.NoError(t, err)
	require.Len(t, due, 1)
	assert.Equal(t, byte('a'), due[0].Ack[0], "a returned record is the caller's copy")
	assert.Equal(t, peerA.String(), due[0].From.String())
}

func testConcurrent(t *testing.T, s Suite) {
	st, _ := open(t, s)
	ctx := t.Context()
	const workers, each = 8, 40

	// Each worker walks its own records through both sides' transitions,
	// as a Flow would, while the others do the same.
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			errs <- walk(ctx, st, w, each)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	for _, state := range []asyncflow.OutState{asyncflow.OutPending, asyncflow.OutAcked} {
		list, err := st.ListOutgoing(ctx, state)
		require.NoError(t, err)
		assert.Empty(t, list, "every outgoing record was settled")
	}
	list, err := st.ListOutgoing(ctx, asyncflow.OutCorrupt)
	require.NoError(t, err)
	assert.Len(t, list, workers*each/2, "the corrupt half stays")
	due, err := st.DueIncoming(ctx, base.Add(time.Hour), workers*each)
	require.NoError(t, err)
	assert.Empty(t, due, "every ack was settled")
	n, err := st.ExpireIncoming(ctx, base.Add(time.Hour), 2*workers*each)
	require.NoError(t, err)
	assert.Equal(t, workers*each, n, "every incoming record was kept until expiry")
}

// walk runs worker w's records from pending to their end.
func walk(ctx context.Context, st asyncflow.Store, w, each int) error {
	for i := range each {
		mid := id(w*each+i, byte(w))
		out := pending(mid, base)
		in := acking(peerB, mid, base)
		steps := []func() error{
			func() error { return st.PutOutgoing(ctx, out) },
			func() error { return st.PutIncoming(ctx, in) },
			func() error {
				out.State = asyncflow.OutAcked
				if i%2 == 1 {
					out.State = asyncflow.OutCorrupt
				}
				return st.PutOutgoing(ctx, out)
			},
			func() error {
				in.State = asyncflow.InDone
				return st.PutIncoming(ctx, in)
			},
			func() error {
				if out.State == asyncflow.OutAcked {
					return st.DeleteOutgoing(ctx, mid)
				}
				return nil
			},
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return fmt.Errorf("worker %d, record %d: %w", w, i, err)
			}
		}
		got, err := st.Incoming(ctx, peerB, mid)
		if err != nil || got.State != asyncflow.InDone {
			return fmt.Errorf("worker %d, record %d: read back %v, %v", w, i, got.State, err)
		}
	}
	return nil
}

func testClosed(t *testing.T, s Suite) {
	path := filepath.Join(t.TempDir(), "store")
	st, err := s.Open(t, path)
	require.NoError(t, err)
	ctx := t.Context()
	require.NoError(t, st.PutOutgoing(ctx, pending(id(1, 1), base)))

	require.NoError(t, st.Close())
	require.NoError(t, st.Close(), "Close is idempotent")

	calls := map[string]func() error{
		"PutOutgoing": func() error { return st.PutOutgoing(ctx, pending(id(2, 1), base)) },
		"Outgoing": func() error {
			_, err := st.Outgoing(ctx, id(1, 1))
			return err
		},
		"DeleteOutgoing": func() error { return st.DeleteOutgoing(ctx, id(1, 1)) },
		"ListOutgoing": func() error {
			_, err := st.ListOutgoing(ctx, asyncflow.OutPending)
			return err
		},
		"DueOutgoing": func() error {
			_, err := st.DueOutgoing(ctx, base, 1)
			return err
		},
		"PutIncoming": func() error { return st.PutIncoming(ctx, acking(peerA, id(3, 1), base)) },
		"Incoming": func() error {
			_, err := st.Incoming(ctx, peerA, id(3, 1))
			return err
		},
		"DueIncoming": func() error {
			_, err := st.DueIncoming(ctx, base, 1)
			return err
		},
		"ExpireIncoming": func() error {
			_, err := st.ExpireIncoming(ctx, base, 1)
			return err
		},
		"NextDue": func() error {
			_, _, err := st.NextDue(ctx)
			return err
		},
	}
	for name, call := range calls {
		assert.ErrorIs(t, call(), asyncflow.ErrClosed, name)
	}
}

func testReopen(t *testing.T, s Suite) {
	if !s.Durable {
		t.Skip("the store is not durable")
	}
	path := filepath.Join(t.TempDir(), "store")
	ctx := t.Context()
	st, err := s.Open(t, path)
	require.NoError(t, err)

	out := pending(id(1, 1), base)
	acked := pending(id(2, 1), base)
	acked.State, acked.Ack, acked.AckHash = asyncflow.OutAcked, []byte("a"), asyncflow.SomeHash(1)
	givenUp := pending(id(5, 1), base)
	givenUp.State, givenUp.Attempts, givenUp.NextSend = asyncflow.OutGivenUp, 9, time.Time{}
	in := acking(peerA, id(3, 1), base.Add(time.Second))
	done := acking(peerB, id(4, 1), base)
	done.State = asyncflow.InDone
	require.NoError(t, st.PutOutgoing(ctx, out))
	require.NoError(t, st.PutOutgoing(ctx, acked))
	require.NoError(t, st.PutOutgoing(ctx, givenUp))
	require.NoError(t, st.PutIncoming(ctx, in))
	require.NoError(t, st.PutIncoming(ctx, done))
	require.NoError(t, st.Close())

	st, err = s.Open(t, path)
	require.NoError(t, err)
	defer st.Close()

	got, err := st.Outgoing(ctx, out.MsgID)
	require.NoError(t, err)
	equalOut(t, out, got)
	list, err := st.ListOutgoing(ctx, asyncflow.OutAcked)
	require.NoError(t, err)
	require.Len(t, list, 1)
	equalOut(t, acked, list[0])
	list, err = st.ListOutgoing(ctx, asyncflow.OutGivenUp)
	require.NoError(t, err)
	require.Len(t, list, 1, "a given-up record stays for inspection")
	equalOut(t, givenUp, list[0])
	gotIn, err := st.Incoming(ctx, peerB, done.MsgID)
	require.NoError(t, err)
	equalIn(t, done, gotIn)

	next, ok, err := st.NextDue(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	assert.True(t, next.Equal(base), "the due index survived: got %s", next)
	dueOut, err := st.DueOutgoing(ctx, base, 10)
	require.NoError(t, err)
	assert.Equal(t, []asyncflow.MsgID{out.MsgID}, ids(dueOut, outID))
	dueIn, err := st.DueIncoming(ctx, base.Add(time.Second), 10)
	require.NoError(t, err)
	assert.Equal(t, []asyncflow.MsgID{in.MsgID}, ids(dueIn, inID))
}
