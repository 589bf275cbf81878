package asyncflow

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

func newID(t *testing.T) MsgID {
	t.Helper()
	id, err := NewMsgID(time.Now())
	require.NoError(t, err)
	return id
}

func TestMemoryStoreKeepsCopies(t *testing.T) {
	s := NewMemoryStore()
	defer s.Close()
	payload := []byte("payload")
	rec := Outgoing{MsgID: newID(t), To: bob, Payload: payload, State: OutPending}

	require.NoError(t, s.PutOutgoing(t.Context(), rec))
	payload[0] = 'X'
	got, err := s.Outgoing(t.Context(), rec.MsgID)
	require.NoError(t, err)
	require.Equal(t, []byte("payload"), got.Payload, "the store copied what it was given")

	got.Payload[0] = 'Y'
	again, err := s.Outgoing(t.Context(), rec.MsgID)
	require.NoError(t, err)
	require.Equal(t, []byte("payload"), again.Payload, "and hands out copies")
}

func TestMemoryStoreOutgoingLifecycle(t *testing.T) {
	s := NewMemoryStore()
	defer s.Close()
	ctx := t.Context()
	a := Outgoing{MsgID: newID(t), To: bob, State: OutPending}
	b := Outgoing{MsgID: newID(t), To: bob, State: OutCorrupt}

	_, err := s.Outgoing(ctx, a.MsgID)
	require.ErrorIs(t, err, ErrNotFound)
	require.NoError(t, s.PutOutgoing(ctx, b))
	require.NoError(t, s.PutOutgoing(ctx, a))

	list, err := s.ListOutgoing(ctx, OutCorrupt)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, b.MsgID, list[0].MsgID)

	require.NoError(t, s.DeleteOutgoing(ctx, a.MsgID))
	require.NoError(t, s.DeleteOutgoing(ctx, a.MsgID), "deleting twice is fine")
	_, err = s.Outgoing(ctx, a.MsgID)
	require.ErrorIs(t, err, ErrNotFound)
}

func TestMemoryStoreKeepsIncomingPerCaller(t *testing.T) {
	s := NewMemoryStore()
	defer s.Close()
	id := newID(t)

	require.NoError(t, s.PutIncoming(t.Context(),
		Incoming{From: alice, MsgID: id, Ack: []byte("a"), State: InAcking}))
	_, err := s.Incoming(t.Context(), carol, id)
	require.ErrorIs(t, err, ErrNotFound)
	got, err := s.Incoming(t.Context(), alice, id)
	require.NoError(t, err)
	require.Equal(t, []byte("a"), got.Ack)
}

func TestMemoryStoreDueIndex(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewMemoryStore()
		defer s.Close()
		ctx := t.Context()
		now := time.Now()

		_, ok, err := s.NextDue(ctx)
		require.NoError(t, err)
		require.False(t, ok, "nothing pending")

		late := Outgoing{MsgID: newID(t), To: bob, State: OutPending, NextSend: now.Add(3)}
		early := Outgoing{MsgID: newID(t), To: bob, State: OutPending, NextSend: now.Add(1)}
		settled := Outgoing{MsgID: newID(t), To: bob, State: OutAcked, NextSend: now}
		ack := Incoming{From: alice, MsgID: newID(t), State: InAcking, NextSend: now.Add(2)}
		for _, r := range []Outgoing{late, early, settled} {
			require.NoError(t, s.PutOutgoing(ctx, r))
		}
		require.NoError(t, s.PutIncoming(ctx, ack))

		next, ok, err := s.NextDue(ctx)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, early.NextSend, next)

		outs, err := s.DueOutgoing(ctx, now.Add(5), 10)
		require.NoError(t, err)
		require.Equal(t, []MsgID{early.MsgID, late.MsgID}, ids(outs), "earliest first")
		outs, err = s.DueOutgoing(ctx, now.Add(5), 1)
		require.NoError(t, err)
		require.Len(t, outs, 1, "limit holds")
		outs, err = s.DueOutgoing(ctx, now, 10)
		require.NoError(t, err)
		require.Empty(t, outs, "not yet due")
		ins, err := s.DueIncoming(ctx, now.Add(5), 10)
		require.NoError(t, err)
		require.Len(t, ins, 1)

		early.NextSend = now.Add(9)
		require.NoError(t, s.PutOutgoing(ctx, early))
		require.NoError(t, s.DeleteOutgoing(ctx, late.MsgID))
		ack.State = InDone
		require.NoError(t, s.PutIncoming(ctx, ack))
		next, ok, err = s.NextDue(ctx)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, now.Add(9), next, "moved, removed and settled records left the index")
	})
}

func ids(recs []Outgoing) []MsgID {
	var out []MsgID
	for _, r := range recs {
		out = append(out, r.MsgID)
	}
	return out
}

func TestMemoryStoreRefusesCallsAfterClose(t *testing.T) {
	s := NewMemoryStore()
	require.NoError(t, s.Close())
	ctx := t.Context()

	require.ErrorIs(t, s.PutOutgoing(ctx, Outgoing{}), ErrClosed)
	_, err := s.Outgoing(ctx, MsgID{})
	require.ErrorIs(t, err, ErrClosed)
	_, err = s.DueOutgoing(ctx, time.Now(), 1)
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, s.PutIncoming(ctx, Incoming{}), ErrClosed)
	_, _, err = s.NextDue(ctx)
	require.ErrorIs(t, err, ErrClosed)
}
