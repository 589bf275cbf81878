package boltstore

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/asyncflow/asyncflow"
)

// holdWriter occupies the writer until release is closed.
func holdWriter(t *testing.T, s *Store) (release func(), wait func()) {
	entered, rel := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = s.write(context.Background(), 0, func(*bolt.Tx) error {
			close(entered)
			<-rel
			return nil
		})
	})
	<-entered
	var once sync.Once
	return func() { once.Do(func() { close(rel) }) }, wg.Wait
}

func waitQueued(t *testing.T, s *Store, n int) {
	require.Eventually(t, func() bool { return len(s.changes) >= n }, 10*time.Second,
		time.Millisecond, "queued changes")
}

// A batch is bounded in bytes as well as in changes: of 40 queued writes
// of 2 MiB, a batch takes what fits the budget and hands back the change
// that did not fit, for the next batch.
func TestABatchIsBoundedInBytes(t *testing.T) {
	s := &Store{changes: make(chan change, maxBatch)}
	const writers, size = 40, asyncflow.DefaultMaxPayload
	for i := range writers {
		s.changes <- change{size: size, done: make(chan error, i+1)}
	}

	batch := []change{<-s.changes}
	next := s.fill(&batch)

	require.NotNil(t, next, "a change over the budget is handed back")
	require.Len(t, batch, maxBatchBytes/size)
	total := 0
	for _, c := range batch {
		total += c.size
	}
	require.LessOrEqual(t, total, maxBatchBytes)
	require.Equal(t, writers-len(batch)-1, len(s.changes), "the rest stays queued")
	require.Equal(t, len(batch)+1, cap(next.done), "in order")
}

// A write waiting for room in a full queue gives up when its context
// ends: its change was not queued, so nothing of it can commit.
func TestAWriteWaitingToQueueHonoursItsContext(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "store"), nil)
	require.NoError(t, err)
	defer s.Close()
	release, waitHold := holdWriter(t, s)
	defer waitHold()
	defer release()

	var wg sync.WaitGroup
	defer wg.Wait()
	defer release()
	for range cap(s.changes) {
		wg.Go(func() {
			_ = s.write(context.Background(), 0, func(*bolt.Tx) error { return nil })
		})
	}
	waitQueued(t, s, cap(s.changes))

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	got := make(chan error, 1)
	start := time.Now()
	wg.Go(func() {
		got <- s.DeleteOutgoing(ctx, asyncflow.MsgID{1})
	})
	select {
	case err := <-got:
		assert.True(t, errors.Is(err, context.DeadlineExceeded), "got %v", err)
	case <-time.After(10 * time.Second):
		release()
		err := <-got
		t.Errorf("a write whose deadline passed before it was queued returned only "+
			"after the writer freed up, %s later, with %v", time.Since(start), err)
	}
}

// The Flow's retry loop runs an expiry pass on every wake: a pass with
// nothing to expire commits no transaction, and so costs no fsync.
func TestExpiryWithNothingToExpireWritesNothing(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "store"), nil)
	require.NoError(t, err)
	defer s.Close()
	txid := func() int {
		tx, err := s.db.Begin(false)
		require.NoError(t, err)
		defer tx.Rollback()
		return tx.ID()
	}
	before := txid()
	for range 10 {
		n, err := s.ExpireIncoming(t.Context(), time.Now(), 256)
		require.NoError(t, err)
		require.Zero(t, n)
	}
	assert.Equal(t, before, txid(), "empty expiry passes committed %d write "+
		"transactions", txid()-before)
}

// A Close that comes while another waits for the writer returns only once
// the file is released: its caller may open the file again at once.
func TestASecondCloseWaitsForTheFirst(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	s, err := Open(path, nil)
	require.NoError(t, err)
	release, waitHold := holdWriter(t, s)
	defer waitHold()
	defer release()
	first := make(chan error, 1)
	go func() { first <- s.Close() }()
	require.Eventually(t, func() bool {
		s.mu.RLock()
		defer s.mu.RUnlock()
		return s.closed
	}, 10*time.Second, time.Millisecond, "the first Close began")

	// The second Close, and an Open as soon as it returned. A Close that
	// returned early would meet the file still held, however soon the
	// writer is released; the timer only decides when that happens.
	second := make(chan error, 1)
	go func() {
		if err := s.Close(); err != nil {
			second <- err
			return
		}
		again, err := Open(path, &Options{LockTimeout: time.Millisecond})
		if err == nil {
			err = again.Close()
		}
		second <- err
	}()
	select {
	case err := <-second:
		t.Fatalf("the second Close returned while the first waits for the writer: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	release()
	require.NoError(t, <-second, "the file is released once the second Close returned")
	require.NoError(t, <-first)
}
