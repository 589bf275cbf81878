package boltstore_test

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/asyncflow/asyncflow"
	"github.com/asyncflow/asyncflow/boltstore"
	"github.com/asyncflow/asyncflow/storetest"
)

// TestMain runs the tests, or, in a child process that a test started
// (see runChild), that child's job alone.
func TestMain(m *testing.M) {
	if job := os.Getenv(childEnv); job != "" {
		os.Exit(runChildJob(job))
	}
	goleak.VerifyTestMain(m)
}

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Suite{
		Open: func(_ *testing.T, path string) (asyncflow.Store, error) {
			return boltstore.Open(path, nil)
		},
		Durable: true,
	})
}

// Path is the store's file while Close runs beside it, and after it: the
// store logs it after its reads, which may race with Close.
func TestPathIsTheFileDuringAndAfterClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	st, err := boltstore.Open(path, short)
	require.NoError(t, err)

	during := make(chan string)
	go func() { during <- st.Path() }()
	require.NoError(t, st.Close())

	require.Equal(t, path, <-during, "Path beside Close")
	require.Equal(t, path, st.Path(), "Path after Close")
}

// openAllocs returns the bytes the heap grew by over an Open and Close of
// the store at path, the least of three tries.
func openAllocs(t *testing.T, path string) uint64 {
	t.Helper()
	least := ^uint64(0)
	for range 3 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		st, err := boltstore.Open(path, nil)
		require.NoError(t, err)
		runtime.ReadMemStats(&after)
		require.NoError(t, st.Close())
		least = min(least, after.TotalAlloc-before.TotalAlloc)
	}
	return least
}

// Open reads the file's header, and none of the pages that hold records:
// with a hundred times the pending messages, it allocates about as much.
func TestOpenCostDoesNotFollowThePendingCount(t *testing.T) {
	if testing.Short() {
		t.Skip("filling a store with 100,000 messages takes seconds")
	}
	small := filepath.Join(t.TempDir(), "small")
	big := filepath.Join(t.TempDir(), "big")
	fillPending(t, small, 1_000)
	fillPending(t, big, 100_000)

	a, b := openAllocs(t, small), openAllocs(t, big)
	t.Logf("Open allocates %d bytes with 1,000 pending, %d with 100,000", a, b)
	require.Less(t, b, 2*a, "Open with 100 times the pending messages allocates %.1f "+
		"times as much", float64(b)/float64(a))
}
