//go:build unix

// The benchmarks count page faults with getrusage, which only Unix
// systems have.

package boltstore_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	bolt "go.etcd.io/bbolt"

	"github.com/asyncflow/asyncflow"
	"github.com/asyncflow/asyncflow/boltstore"
)

// The benchmarks below measure the durable store against the targets of
// a 2-core machine: durable round trips per second with many messages in
// flight, asyncflow's durable writes per second next to raw bbolt Batch
// puts of records of the same size, the bytes a pending message takes on
// disk, and the cost of opening a store that holds many pending messages.
// Every write is synced: the store has no way to turn fsync off.

// inFlight is how many messages, or writers, run at once.
const inFlight = 256

// payloadSize is the size of every benchmark message's payload.
const payloadSize = 100

// The two peers have principals of 10 bytes, as canisters do.
var (
	benchSender   = principal.Principal{Raw: []byte{0, 0, 0, 0, 1, 0x70, 0, 1, 1, 1}}
	benchReceiver = principal.Principal{Raw: []byte{0, 0, 0, 0, 1, 0x70, 0, 2, 1, 1}}
)

var quiet = slog.New(slog.DiscardHandler)

// countingStore counts the store calls that succeeded and changed a
// record: the durable writes, each synced before it returns. It counts
// the calls of ExpireIncoming apart: in a run shorter than the dedup
// window they find nothing to expire, and then write nothing.
type countingStore struct {
	asyncflow.Store
	writes  atomic.Int64
	expires atomic.Int64
}

func (s *countingStore) count(err error) error {
	if err == nil {
		s.writes.Add(1)
	}
	return err
}

func (s *countingStore) PutOutgoing(ctx context.Context, m asyncflow.Outgoing) error {
	return s.count(s.Store.PutOutgoing(ctx, m))
}

func (s *countingStore) DeleteOutgoing(ctx context.Context, id asyncflow.MsgID) error {
	return s.count(s.Store.DeleteOutgoing(ctx, id))
}

func (s *countingStore) PutIncoming(ctx context.Context, m asyncflow.Incoming) error {
	return s.count(s.Store.PutIncoming(ctx, m))
}

func (s *countingStore) ExpireIncoming(ctx context.Context, before time.Time,
	limit int) (int, error) {
	n, err := s.Store.ExpireIncoming(ctx, before, limit)
	if err == nil {
		s.expires.Add(1)
	}
	return n, err
}

// BenchmarkDurableRoundTrip runs b.N exchanges between two Flows, each on
// its own store file, over a network without faults, with inFlight
// messages in flight. An op is one round trip: CallAsync to the sender's
// record being deleted, with the ackack stored on the receiver's side.
// It runs with the default SendWorkers and with one worker per message
// in flight: over the in-memory network a send holds its worker until the
// peer's durable writes for that call are done.
func BenchmarkDurableRoundTrip(b *testing.B) {
	for _, workers := range []int{0, inFlight} {
		name := fmt.Sprintf("sendWorkers=%d", workers)
		if workers == 0 {
			name = "sendWorkers=default"
		}
		b.Run(name, func(b *testing.B) { benchRoundTrip(b, workers) })
	}
}

func benchRoundTrip(b *testing.B, workers int) {
	net, err := asyncflow.NewNetwork(1, asyncflow.Faults{})
	if err != nil {
		b.Fatal(err)
	}
	defer net.Close()

	slots := make(chan struct{}, inFlight)
	var acked atomic.Int64
	allAcked := make(chan struct{})
	onAck := func(context.Context, asyncflow.Delivery) {
		<-slots
		if acked.Add(1) == int64(b.N) {
			close(allAcked)
		}
	}
	ack := []byte("ok")
	handler := func(context.Context, principal.Principal, asyncflow.MsgID,
		[]byte) ([]byte, error) {
		return ack, nil
	}

	sendStore := openCounting(b, "sender")
	recvStore := openCounting(b, "receiver")
	sender := newBenchFlow(b, net, benchSender, sendStore, workers, func(c *asyncflow.Config) {
		c.OnAck = onAck
	})
	receiver := newBenchFlow(b, net, benchReceiver, recvStore, workers,
		func(c *asyncflow.Config) { c.Handler = handler })
	defer closeAll(b, sender, receiver, sendStore, recvStore)

	payload := make([]byte, payloadSize)
	_, _ = rand.Read(payload)

	b.ResetTimer()
	var next atomic.Int64
	var callers sync.WaitGroup
	for range inFlight {
		callers.Go(func() {
			for next.Add(1) <= int64(b.N) {
				slots <- struct{}{}
				if _, err := sender.CallAsync(context.Background(), benchReceiver,
					payload); err != nil {
					b.Error(err)
					<-slots
					return
				}
			}
		})
	}
	callers.Wait()
	if b.Failed() {
		return
	}
	select {
	case <-allAcked:
	case <-time.After(time.Minute):
		b.Fatalf("%d of %d messages acked after a minute", acked.Load(), b.N)
	}
	waitSettled(b, sendStore, recvStore)
	b.StopTimer()

	writes := sendStore.writes.Load() + recvStore.writes.Load()
	expires := sendStore.expires.Load() + recvStore.expires.Load()
	secs := b.Elapsed().Seconds()
	b.ReportMetric(float64(b.N)/secs, "roundtrips/s")
	b.ReportMetric(float64(writes)/secs, "writes/s")
	b.ReportMetric(float64(writes)/float64(b.N), "writes/op")
	b.ReportMetric(float64(expires)/float64(b.N), "expires/op")
	if s := sender.Stats().Resent + receiver.Stats().Resent; s > 0 {
		b.Errorf("%d resends: RetryAfter is too short for the run", s)
	}
}

func openCounting(b *testing.B, name string) *countingStore {
	st, err := boltstore.Open(filepath.Join(b.TempDir(), name), nil)
	if err != nil {
		b.Fatal(err)
	}
	return &countingStore{Store: st}
}

// newBenchFlow starts a Flow for p on st, attached to net, with a
// RetryAfter long enough that nothing is resent during a run.
func newBenchFlow(b *testing.B, net *asyncflow.Network, p principal.Principal,
	st asyncflow.Store, workers int, set func(*asyncflow.Config)) *asyncflow.Flow {
	cfg := asyncflow.Config{
		Transport:   net.Transport(p),
		Store:       st,
		RetryAfter:  time.Hour,
		SendWorkers: workers,
		Logger:      quiet,
	}
	set(&cfg)
	f, err := asyncflow.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	net.Attach(p, f)
	return f
}

// waitSettled waits until the sender's store holds no pending or acked
// message and the receiver's no ack still to confirm: every round trip
// has made all its writes.
func waitSettled(b *testing.B, sender, receiver asyncflow.Store) {
	ctx := context.Background()
	deadline := time.Now().Add(time.Minute)
	for {
		_, sendDue, err1 := sender.NextDue(ctx)
		acked, err2 := sender.ListOutgoing(ctx, asyncflow.OutAcked)
		_, recvDue, err3 := receiver.NextDue(ctx)
		for _, err := range []error{err1, err2, err3} {
			if err != nil {
				b.Fatal(err)
			}
		}
		if !sendDue && len(acked) == 0 && !recvDue {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("stores not settled: sender due %t, %d acked; receiver due %t",
				sendDue, len(acked), recvDue)
		}
		time.Sleep(time.Millisecond)
	}
}

// closeAll closes flows before stores, as a program would.
func closeAll(b *testing.B, sender, receiver *asyncflow.Flow, stores ...asyncflow.Store) {
	for _, f := range []*asyncflow.Flow{sender, receiver} {
		if err := f.Close(); err != nil {
			b.Error(err)
		}
	}
	for _, st := range stores {
		if err := st.Close(); err != nil {
			b.Error(err)
		}
	}
}

// pendingRecord is a sender's record as CallAsync stores it, for a payload
// of payloadSize bytes.
func pendingRecord(now time.Time) asyncflow.Outgoing {
	id, err := asyncflow.NewMsgID(now)
	if err != nil {
		panic(err)
	}
	payload := make([]byte, payloadSize)
	_, _ = rand.Read(payload)
	return asyncflow.Outgoing{
		MsgID:    id,
		To:       benchReceiver,
		Payload:  payload,
		State:    asyncflow.OutPending,
		Attempts: 1,
		NextSend: now.Add(time.Hour),
	}
}

// recordSize returns the key and value sizes the store gives a pending
// record of payloadSize bytes, read back from its file: from the bucket
// "out", where the store keeps the sender's records.
func recordSize(b *testing.B) (key, value int) {
	path := filepath.Join(b.TempDir(), "one")
	st, err := boltstore.Open(path, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := st.PutOutgoing(context.Background(), pendingRecord(time.Now())); err != nil {
		b.Fatal(err)
	}
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}

	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("out")).ForEach(func(k, v []byte) error {
			key, value = len(k), len(v)
			return nil
		})
	})
	if err != nil || key == 0 {
		b.Fatalf("reading the record's size: %v (key %d bytes)", err, key)
	}
	return key, value
}

// runWriters calls write b.N times in total from inFlight goroutines.
func runWriters(b *testing.B, write func() error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range inFlight {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := write(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkRawBboltBatch is the baseline: inFlight goroutines putting
// records the size of asyncflow's pending records with db.Batch, with
// bbolt's default batch settings and with batches that fill as soon as
// every writer waits. An op is one put.
func BenchmarkRawBboltBatch(b *testing.B) {
	keySize, valueSize := recordSize(b)
	for _, size := range []int{0, inFlight} {
		name := fmt.Sprintf("maxBatchSize=%d", size)
		if size == 0 {
			name = "defaults"
		}
		b.Run(name, func(b *testing.B) {
			db, err := bolt.Open(filepath.Join(b.TempDir(), "raw"), 0o600, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			if size > 0 {
				db.MaxBatchSize = size
			}
			bucket := []byte("out")
			err = db.Update(func(tx *bolt.Tx) error {
				_, err := tx.CreateBucket(bucket)
				return err
			})
			if err != nil {
				b.Fatal(err)
			}

			b.ResetTimer()
			runWriters(b, func() error {
				id, err := asyncflow.NewMsgID(time.Now())
				if err != nil {
					return err
				}
				value := make([]byte, valueSize)
				return db.Batch(func(tx *bolt.Tx) error {
					return tx.Bucket(bucket).Put(id[:keySize], value)
				})
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
			b.ReportMetric(float64(keySize+valueSize), "bytes/record")
		})
	}
}

// BenchmarkStorePutOutgoing is the same load through the store: inFlight
// goroutines storing new pending records with PutOutgoing. An op is one
// put.
func BenchmarkStorePutOutgoing(b *testing.B) {
	st, err := boltstore.Open(filepath.Join(b.TempDir(), "store"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()

	b.ResetTimer()
	runWriters(b, func() error {
		return st.PutOutgoing(context.Background(), pendingRecord(time.Now()))
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
}

// fillPending stores n pending records in the store at path from inFlight
// goroutines, and closes it.
func fillPending(tb testing.TB, path string, n int) {
	st, err := boltstore.Open(path, nil)
	if err != nil {
		tb.Fatal(err)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range inFlight {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				err := st.PutOutgoing(context.Background(), pendingRecord(time.Now()))
				if err != nil {
					tb.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := st.Close(); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkBytesPerPending stores 100,000 pending messages of payloadSize
// bytes and reports the file's size per message, and the part of it
// bbolt's pages fill (the rest is growth the file was given ahead).
func BenchmarkBytesPerPending(b *testing.B) {
	const n = 100_000
	var fileSize, pagesSize int64
	for b.Loop() {
		path := filepath.Join(b.TempDir(), "store")
		fillPending(b, path, n)

		fi, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		fileSize = fi.Size()
		pagesSize = usedPages(b, path)
	}
	b.ReportMetric(float64(fileSize)/n, "bytes/pending")
	b.ReportMetric(float64(pagesSize)/n, "page-bytes/pending")
}

// usedPages returns the bytes of the pages below the file's high-water
// mark: what the file needs, without the room it was grown by ahead.
func usedPages(b *testing.B, path string) int64 {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()

	var size int64
	err = db.View(func(tx *bolt.Tx) error {
		size = tx.Size()
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return size
}

// BenchmarkOpenWithManyPending opens a store holding many pending
// messages and does what a starting Flow does with it: read the next due
// time, list the acked messages and take the first batch of due ones. An
// op is that whole start; its cost must not follow the pending count.
// The page faults per op show how much of the file a start touched.
func BenchmarkOpenWithManyPending(b *testing.B) {
	for _, n := range []int{1_000, 1_000_000} {
		b.Run(fmt.Sprintf("pending=%d", n), func(b *testing.B) {
			if n > 100_000 && testing.Short() {
				b.Skip("filling a store with a million messages takes 20 to 30 s")
			}
			path := filepath.Join(b.TempDir(), "store")
			start := time.Now()
			fillPending(b, path, n)
			b.Logf("%d pending messages stored in %s", n,
				time.Since(start).Round(time.Millisecond))

			ctx := context.Background()
			faults := pageFaults()
			for b.Loop() {
				st, err := boltstore.Open(path, nil)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := st.NextDue(ctx); err != nil {
					b.Fatal(err)
				}
				if _, err := st.ListOutgoing(ctx, asyncflow.OutAcked); err != nil {
					b.Fatal(err)
				}
				if _, err := st.DueOutgoing(ctx, time.Now(), 256); err != nil {
					b.Fatal(err)
				}
				if err := st.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(pageFaults()-faults)/float64(b.N), "faults/op")
		})
	}
}

// pageFaults returns the page faults of the process so far: a page of
// the store's memory map touched for the first time after it was mapped
// counts one.
func pageFaults() int64 {
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		return 0
	}
	return u.Minflt + u.Majflt
}
