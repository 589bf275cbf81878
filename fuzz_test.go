package asyncflow

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"runtime"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/stretchr/testify/require"
)

// FuzzDeliver hands a Flow's inbound dispatch any caller, method and
// argument, on a store that holds records in every state, and checks that
// it does not panic, that it takes only the three methods from a caller
// that can be a peer, that a call it refuses changes nothing in the
// store, and that what it allocates is bounded by the size of the call.
//
// The records belong to fuzzPeer and have ids made by fuzzID, at the time
// a synctest bubble starts, so that inputs can name them:
//
//	go test -run '^$' -fuzz '^FuzzDeliver$' -fuzztime 60s .
func FuzzDeliver(f *testing.F) {
	for _, in := range fuzzDeliverSeeds() {
		f.Add(in.caller, in.method, in.arg)
	}

	f.Fuzz(func(t *testing.T, caller []byte, method string, arg []byte) {
		synctest.Test(t, func(t *testing.T) {
			fuzzDeliverOnce(t, caller, method, arg)
		})
	})
}

// The records FuzzDeliver's store holds, by the entropy of their ids.
const (
	fuzzPending    = 1 // a message to fuzzPeer waiting for its ack
	fuzzAcked      = 2 // a message to fuzzPeer acked, its callback not yet run
	fuzzCorrupt    = 3 // a message to fuzzPeer whose ack did not match
	fuzzAcking     = 4 // a message from fuzzPeer processed, its ack resent
	fuzzDone       = 5 // a message from fuzzPeer processed and settled
	fuzzOtherPeers = 6 // a message to fuzzOther waiting for its ack
	fuzzUnknown    = 7 // an id with no record
)

var (
	fuzzPeer  = principal.Principal{Raw: []byte{0xf0, 0x01}}
	fuzzOther = principal.Principal{Raw: []byte{0xf0, 0x02}}
)

// fuzzMaxPayload is the Flow's MaxPayload: small, so that short inputs
// reach the limit.
const fuzzMaxPayload = 64

// fuzzID returns the id of entropy n at the time a synctest bubble starts.
func fuzzID(n byte) MsgID {
	var id MsgID
	epoch := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := binary.BigEndian.AppendUint64(nil, uint64(epoch.UnixMilli()))
	copy(id[:6], ms[2:])
	id[15] = n
	return id
}

// fuzzRecords returns the store's records, the acked one last: it goes in
// after New, which would otherwise run its callback and forget it.
func fuzzRecords(now time.Time) ([]Outgoing, []Incoming) {
	due := now.Add(DefaultRetryAfter)
	out := []Outgoing{
		{MsgID: fuzzID(fuzzPending), To: fuzzPeer, Payload: []byte("pending"),
			State: OutPending, Attempts: 1, NextSend: due},
		{MsgID: fuzzID(fuzzCorrupt), To: fuzzPeer, Payload: []byte("corrupt"),
			State: OutCorrupt, Ack: []byte("answer"), AckHash: SomeHash(7)},
		{MsgID: fuzzID(fuzzOtherPeers), To: fuzzOther, Payload: []byte("other"),
			State: OutPending, Attempts: 1, NextSend: due},
		{MsgID: fuzzID(fuzzAcked), To: fuzzPeer, Payload: []byte("acked"),
			State: OutAcked, Ack: []byte("answer"), AckHash: HashOf([]byte("acked"))},
	}
	in := []Incoming{
		{From: fuzzPeer, MsgID: fuzzID(fuzzAcking), PayloadHash: HashOf([]byte("four")).Value,
			Ack: []byte("re:four"), State: InAcking, Attempts: 1, NextSend: due},
		{From: fuzzPeer, MsgID: fuzzID(fuzzDone), PayloadHash: HashOf([]byte("five")).Value,
			Ack: []byte("re:five"), State: InDone, Attempts: 1},
	}
	return out, in
}

// fuzzTransport reaches every principal and delivers nothing.
type fuzzTransport struct{}

func (fuzzTransport) Send(context.Context, principal.Principal, string, []byte) error {
	return nil
}

func (fuzzTransport) Route(principal.Principal) error { return nil }

// fuzzSnapshot is everything a store holds.
type fuzzSnapshot struct {
	out  []Outgoing
	in   []Incoming
	next time.Time
	due  bool
}

func takeFuzzSnapshot(t *testing.T, d *simDisk) fuzzSnapshot {
	var s fuzzSnapshot
	var err error
	s.out, err = d.outgoing()
	require.NoError(t, err)
	s.in, err = d.incoming()
	require.NoError(t, err)
	s.next, s.due, err = d.NextDue(context.Background())
	require.NoError(t, err)
	return s
}

// Allocation bound of one Deliver: a base for the work any call does,
// and a factor for the copies, encodings and log lines of its bytes.
const (
	fuzzAllocBase    = 16 << 10
	fuzzAllocPerByte = 32
)

func fuzzDeliverOnce(t *testing.T, caller []byte, method string, arg []byte) {
	require.NoError(t, checkWindow(fuzzID(0), time.Now(), DefaultDedupWindow,
		DefaultMaxClockSkew), "the bubble starts at another time than fuzzID's")
	disk := newSimDisk()
	defer disk.Close()
	ctx := context.Background()
	out, in := fuzzRecords(time.Now())
	for _, m := range out[:len(out)-1] {
		require.NoError(t, disk.PutOutgoing(ctx, m))
	}
	for _, m := range in {
		require.NoError(t, disk.PutIncoming(ctx, m))
	}

	f, err := New(Config{
		Transport: fuzzTransport{},
		Store:     disk,
		Handler: func(_ context.Context, _ principal.Principal, _ MsgID,
			payload []byte) ([]byte, error) {
			if bytes.HasPrefix(payload, []byte("fail")) {
				return nil, errors.New("the handler fails on this payload")
			}
			return append([]byte("re:"), payload...), nil
		},
		MaxPayload:  fuzzMaxPayload,
		SendWorkers: 1,
		Logger:      quiet,
	})
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, disk.PutOutgoing(ctx, out[len(out)-1]))
	synctest.Wait()
	before := takeFuzzSnapshot(t, disk)

	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	err = f.Deliver(ctx, principal.Principal{Raw: caller}, method, arg)
	synctest.Wait()
	runtime.ReadMemStats(&m1)

	switch {
	case err != nil:
		require.Equal(t, before, takeFuzzSnapshot(t, disk),
			"Deliver refused the call (%v) and changed the store", err)
	case !IsMethod(method) || CheckPeer(principal.Principal{Raw: caller}) != nil:
		t.Fatalf("Deliver took a call of %q from %x", method, caller)
	}
	size := uint64(len(caller) + len(method) + len(arg))
	require.LessOrEqual(t, m1.TotalAlloc-m0.TotalAlloc, fuzzAllocBase+fuzzAllocPerByte*size,
		"Deliver of %d bytes allocated too much", size)
}

// fuzzInput is one call FuzzDeliver starts from.
type fuzzInput struct {
	caller []byte
	method string
	arg    []byte
}

// fuzzDeliverSeeds returns a call of each kind the dispatch tells apart.
func fuzzDeliverSeeds() []fuzzInput {
	peer, other := fuzzPeer.Raw, fuzzOther.Raw
	newMessage := func(n byte, payload string) []byte {
		return NewMessage{MsgID: fuzzID(n), Payload: []byte(payload)}.AppendCandid(nil)
	}
	ack := func(n byte, h Hash, payload string) []byte {
		return Ack{MsgID: fuzzID(n), Hash: h, Payload: []byte(payload)}.AppendCandid(nil)
	}
	ackack := func(n byte, h Hash) []byte {
		return AckAck{MsgID: fuzzID(n), Hash: h}.AppendCandid(nil)
	}
	old := NewMessage{MsgID: MsgID{0x00, 0x00, 0x01}, Payload: []byte("old")}

	return []fuzzInput{
		{peer, MethodNewMessage, newMessage(fuzzUnknown, "new")},
		{peer, MethodNewMessage, newMessage(fuzzUnknown, "fail: the handler errs")},
		{peer, MethodNewMessage, newMessage(fuzzAcking, "four")},
		{peer, MethodNewMessage, newMessage(fuzzDone, "five")},
		{peer, MethodNewMessage, newMessage(fuzzUnknown, string(make([]byte, 65)))},
		{peer, MethodNewMessage, old.AppendCandid(nil)},
		{other, MethodNewMessage, newMessage(fuzzAcking, "four")},
		{peer, MethodAck, ack(fuzzPending, HashOf([]byte("pending")), "answer")},
		{peer, MethodAck, ack(fuzzPending, SomeHash(1), "answer")},
		{peer, MethodAck, ack(fuzzPending, Hash{}, "answer")},
		{peer, MethodAck, ack(fuzzAcked, HashOf([]byte("acked")), "answer")},
		{peer, MethodAck, ack(fuzzCorrupt, SomeHash(7), "answer")},
		{peer, MethodAck, ack(fuzzOtherPeers, HashOf([]byte("other")), "answer")},
		{peer, MethodAck, ack(fuzzUnknown, SomeHash(1), "")},
		{other, MethodAck, ack(fuzzPending, HashOf([]byte("pending")), "answer")},
		{peer, MethodAckAck, ackack(fuzzAcking, HashOf([]byte("re:four")))},
		{peer, MethodAckAck, ackack(fuzzAcking, SomeHash(1))},
		{peer, MethodAckAck, ackack(fuzzAcking, Hash{})},
		{peer, MethodAckAck, ackack(fuzzDone, HashOf([]byte("re:five")))},
		{other, MethodAckAck, ackack(fuzzAcking, HashOf([]byte("re:four")))},
		{peer, "com_asyncFlow_other", ackack(fuzzAcking, Hash{})},
		{peer, "ackack", ackack(fuzzAcking, Hash{})},
		{nil, MethodAckAck, ackack(fuzzAcking, Hash{})},
		{principal.AnonymousID.Raw, MethodNewMessage, newMessage(fuzzUnknown, "x")},
		{make([]byte, 30), MethodNewMessage, newMessage(fuzzUnknown, "x")},
		{peer, MethodNewMessage, []byte("DIDL\x00\x00")},
		{peer, MethodAck, nil},
	}
}
