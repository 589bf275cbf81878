package asyncflow

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAnswersForgetTheOldestBeyondTheirBound(t *testing.T) {
	var a answers
	id := func(n int) MsgID {
		var id MsgID
		binary.BigEndian.PutUint64(id[8:], uint64(n))
		return id
	}

	for n := range maxAnswers + 10 {
		a.remember(id(n), bob, SomeHash(uint32(n)))
	}

	for n := range 10 {
		_, ok := a.lookup(id(n), bob)
		require.False(t, ok, "answer %d is among the oldest, pushed out", n)
	}
	for _, n := range []int{10, maxAnswers, maxAnswers + 9} {
		h, ok := a.lookup(id(n), bob)
		require.True(t, ok, "answer %d is among the newest", n)
		require.Equal(t, SomeHash(uint32(n)), h)
	}
	_, ok := a.lookup(id(maxAnswers), carol)
	require.False(t, ok, "an answer is only told to its peer")
	require.Len(t, a.byID, maxAnswers)
	require.Len(t, a.ring, maxAnswers)
}

func TestAnswersKeepTheNewestOfARememberedID(t *testing.T) {
	var a answers
	var id MsgID
	a.remember(id, bob, SomeHash(1))
	a.remember(id, bob, SomeHash(2))

	h, ok := a.lookup(id, bob)
	require.True(t, ok)
	require.Equal(t, SomeHash(2), h)
}
