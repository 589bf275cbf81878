package asyncflow

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSendQueueIsFIFOAndDropsCallsAfterClose(t *testing.T) {
	q := newSendQueue()
	for i := range 3 {
		q.push(outCall{method: string(rune('a' + i))})
	}

	for _, want := range []string{"a", "b", "c"} {
		c, ok := q.pop()
		require.True(t, ok)
		require.Equal(t, want, c.method)
	}
	q.push(outCall{method: "d"})
	q.close()
	q.push(outCall{method: "e"})
	_, ok := q.pop()
	require.False(t, ok, "a closed queue hands out nothing")
}

func TestSendQueueThatNeverDrainsStaysSmall(t *testing.T) {
	q := newSendQueue()
	for range 10 {
		q.push(outCall{})
	}

	for i := range 100_000 {
		q.push(outCall{method: "x"})
		_, ok := q.pop()
		require.True(t, ok, "pop %d", i)
	}
	require.Equal(t, 10, len(q.calls)-q.head, "ten calls still wait")
	require.Less(t, cap(q.calls), 1024, "the taken calls' room is reused")
}
