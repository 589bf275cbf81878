package boltstore_test

// These tests feed the store bad files and faults: a file that is not a
// store, damaged pages and records, a file cut short under the memory
// map, an unknown schema, a held lock, a read-only store, a full disk,
// and Close racing with writes. Each must end in a clear error at Open or
// at the failing call: never a panic, never a hang, never a record that
// was acknowledged and then lost.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/asyncflow/asyncflow"
	"github.com/asyncflow/asyncflow/boltstore"
)

// records is how many records of each side the tests that damage pages
// write: enough that the buckets are not inline in their parent's page.
const records = 40

// lockTimeout keeps the tests that meet a held lock short.
const lockTimeout = 200 * time.Millisecond

// patience bounds every wait for something that must happen: a call that
// hangs fails the test after it instead of stalling the run.
const patience = 10 * time.Second

// short opens stores with a short lock timeout, so that a failed Open
// that left the file locked shows up as ErrInUse quickly.
var short = &boltstore.Options{LockTimeout: lockTimeout}

// quietOpts is short without the logs of damaged records that the tests
// cause on purpose.
var quietOpts = &boltstore.Options{LockTimeout: lockTimeout,
	Logger: slog.New(slog.DiscardHandler)}

var (
	base = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	peer = principal.Principal{Raw: []byte{0, 0, 0, 0, 0, 0, 0, 1, 1, 1}}
)

// msgID returns the n-th message id: its time is base plus n
// milliseconds, so ids sort by n.
func msgID(n int) asyncflow.MsgID {
	var id asyncflow.MsgID
	ms := uint64(base.UnixMilli()) + uint64(n)
	for i := range 6 {
		id[i] = byte(ms >> (40 - 8*i))
	}
	binary.BigEndian.PutUint32(id[12:], uint32(n))
	return id
}

// outgoing returns the n-th sender's record, pending, with a payload of
// size bytes (at least one).
func outgoing(n, size int) asyncflow.Outgoing {
	return asyncflow.Outgoing{MsgID: msgID(n), To: peer,
		Payload: bytes.Repeat([]byte{byte(n) | 1}, max(size, 1)),
		State:   asyncflow.OutPending, Attempts: 1,
		NextSend: base.Add(time.Duration(n) * time.Second)}
}

// incoming returns the n-th receiver's record, acking.
func incoming(n int) asyncflow.Incoming {
	return asyncflow.Incoming{From: peer, MsgID: msgID(n), PayloadHash: uint32(n),
		Ack: fmt.Appendf(nil, "ack %d", n), State: asyncflow.InAcking, Attempts: 1,
		NextSend: base.Add(time.Duration(n) * time.Second)}
}

// putRecords stores outgoing and incoming records 0..n-1.
func putRecords(t *testing.T, st *boltstore.Store, n, size int) {
	t.Helper()
	for i := range n {
		require.NoError(t, st.PutOutgoing(t.Context(), outgoing(i, size)))
		require.NoError(t, st.PutIncoming(t.Context(), incoming(i)))
	}
}

// fill creates a store at path holding records 0..n-1 and closes it.
func fill(t *testing.T, path string, n, size int) {
	t.Helper()
	st, err := boltstore.Open(path, short)
	require.NoError(t, err)

	putRecords(t, st, n, size)
	require.NoError(t, st.Close())
}

// requireOutgoing checks that st holds the n-th outgoing record as
// outgoing(n, size) wrote it.
func requireOutgoing(t *testing.T, st *boltstore.Store, n, size int) {
	t.Helper()
	got, err := st.Outgoing(t.Context(), msgID(n))
	require.NoError(t, err, "outgoing record %d", n)
	got.NextSend = got.NextSend.UTC()
	require.Equal(t, outgoing(n, size), got, "outgoing record %d", n)
}

// requireRecords checks that st holds records 0..n-1 as putRecords wrote
// them.
func requireRecords(t *testing.T, st *boltstore.Store, n, size int) {
	t.Helper()
	for i := range n {
		requireOutgoing(t, st, i, size)
		got, err := st.Incoming(t.Context(), peer, msgID(i))
		require.NoError(t, err, "incoming record %d", i)
		got.NextSend = got.NextSend.UTC()
		require.Equal(t, incoming(i), got, "incoming record %d", i)
	}
}

// reopenAndCheck opens the store at path and checks that it holds
// records 0..n-1 unchanged.
func reopenAndCheck(t *testing.T, path string, n, size int) {
	t.Helper()
	st, err := boltstore.Open(path, short)
	require.NoError(t, err, "reopening after the fault is removed")
	defer func() { require.NoError(t, st.Close()) }()

	requireRecords(t, st, n, size)
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, b, 0o600))
}

// requireUnchanged checks that the file at path still holds want.
func requireUnchanged(t *testing.T, path string, want []byte, why string) {
	t.Helper()
	got := readFile(t, path)
	require.Equal(t, len(want), len(got), "file size changed: %s", why)
	require.True(t, bytes.Equal(want, got), "file bytes changed: %s", why)
}

// garbage returns n bytes of repeatable noise.
func garbage(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// editBolt changes the bbolt file at path directly, bypassing the store.
func editBolt(t *testing.T, path string, edit func(tx *bolt.Tx) error) {
	t.Helper()
	editBoltWith(t, path, &bolt.Options{Timeout: patience}, edit)
}

// editBoltWith is editBolt with bbolt opened with opts.
func editBoltWith(t *testing.T, path string, opts *bolt.Options,
	edit func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, opts)
	require.NoError(t, err)

	require.NoError(t, db.Update(edit))
	require.NoError(t, db.Close())
}

// pageOf returns the page size of the bbolt file at path and the page
// holding the root of bucket name, which must not be inline.
func pageOf(t *testing.T, path string, name string) (size, page int) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: patience, ReadOnly: true})
	require.NoError(t, err)
	defer func() { require.NoError(t, db.Close()) }()

	err = db.View(func(tx *bolt.Tx) error {
		page = int(tx.Bucket([]byte(name)).Root())
		return nil
	})
	require.NoError(t, err)
	require.NotZero(t, page, "bucket %q is inline: write more records", name)
	return db.Info().PageSize, page
}

// within runs call and fails the test if it does not return in patience.
func within(t *testing.T, what string, call func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		call()
	}()
	select {
	case <-done:
	case <-time.After(patience):
		t.Fatalf("%s did not return within %s", what, patience)
	}
}

// requireOpenFails checks that Open of path fails with want, both for
// writing and read-only, and that the failed Open released the file: a
// second try meets the same error, not ErrInUse.
func requireOpenFails(t *testing.T, path string, want error) {
	t.Helper()
	for _, readOnly := range []bool{false, true, false} {
		st, err := boltstore.Open(path, &boltstore.Options{LockTimeout: lockTimeout,
			ReadOnly: readOnly})
		if err == nil {
			_ = st.Close()
		}
		require.ErrorIs(t, err, want, "read-only %t", readOnly)
	}
}

func TestOpenRefusesAFileThatIsNotAStore(t *testing.T) {
	text := []byte("hello, this is a text file and not a store\n")
	tests := []struct {
		name string
		file []byte
	}{
		{"short text", text},
		// bbolt takes the page size to be one page of the file, and
		// finds the file too short to hold the two meta pages.
		{"one page of text", bytes.Repeat(text, 4096/len(text)+1)[:4096]},
		{"many pages of text", bytes.Repeat(text, 1000)},
		{"noise", garbage(64<<10, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store")
			writeFile(t, path, tt.file)

			requireOpenFails(t, path, boltstore.ErrNotStore)
			requireUnchanged(t, path, tt.file, "Open of a file that is not a store")
		})
	}
}

func TestOpenRefusesABoltFileOfAnotherProgram(t *testing.T) {
	path := filepath.Join(t.TempDir(), "other.db")
	editBolt(t, path, func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("users"))
		if err != nil {
			return err
		}
		return b.Put([]byte("alice"), []byte("admin"))
	})
	before := readFile(t, path)

	requireOpenFails(t, path, boltstore.ErrNotStore)
	requireUnchanged(t, path, before, "Open of another program's bbolt file")
}

func TestOpenMakesAnEmptyFileAStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	writeFile(t, path, nil)

	fill(t, path, 3, 10)

	reopenAndCheck(t, path, 3, 10)
}

func TestOpenRefusesDamagedMetaPages(t *testing.T) {
	tests := []struct {
		name string
		// damage changes a meta page in place.
		damage func(page []byte)
	}{
		{"noise", func(page []byte) { copy(page, garbage(len(page), 2)) }},
		// A bit flipped in the transaction id fails the checksum.
		{"one bit", func(page []byte) { page[16+48] ^= 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store")
			fill(t, path, records, 100)
			size, _ := pageOf(t, path, "out")
			good := readFile(t, path)
			bad := bytes.Clone(good)
			tt.damage(bad[:size])
			tt.damage(bad[size : 2*size])
			writeFile(t, path, bad)

			requireOpenFails(t, path, boltstore.ErrNotStore)
			requireUnchanged(t, path, bad, "Open of a file with damaged meta pages")

			writeFile(t, path, good)
			reopenAndCheck(t, path, records, 100)
		})
	}
}

func TestOpenRefusesDamagedDataPages(t *testing.T) {
	tests := []struct {
		name   string
		damage func(file []byte, pageSize int) []byte
	}{
		{"noise", func(file []byte, size int) []byte {
			copy(file[2*size:], garbage(len(file)-2*size, 3))
			return file
		}},
		// What is mapped past the end of a file faults when read.
		{"cut to the meta pages", func(file []byte, size int) []byte {
			return file[:2*size]
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store")
			fill(t, path, records, 100)
			size, _ := pageOf(t, path, "out")
			good := readFile(t, path)
			bad := tt.damage(bytes.Clone(good), size)
			writeFile(t, path, bad)

			// The meta pages are whole, so bbolt maps the file; reading
			// the freelist page they name then meets the damage inside
			// bbolt's Open, where it cannot be told from a file of another
			// kind. A child process opens it, as a panic in bbolt's Open
			// leaves the file locked until the process exits.
			out, code := runChild(t, "open", path)
			require.Equal(t, exitRefused, code, "child output:\n%s", out)
			require.Contains(t, out, boltstore.ErrNotStore.Error())
			requireUnchanged(t, path, bad, "Open of a file with damaged data pages")

			writeFile(t, path, good)
			reopenAndCheck(t, path, records, 100)
		})
	}
}

// An Open that bbolt gave up on with a panic releases the file's lock: a
// second Open, read-only or not, meets the damage again, not ErrInUse.
func TestFailedOpenReleasesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	fill(t, path, records, 100)
	size, _ := pageOf(t, path, "out")
	require.NoError(t, os.Truncate(path, int64(2*size)))

	for _, readOnly := range []bool{false, true, false} {
		st, err := boltstore.Open(path, &boltstore.Options{LockTimeout: lockTimeout,
			ReadOnly: readOnly})
		if err == nil {
			_ = st.Close()
		}
		require.NotErrorIs(t, err, boltstore.ErrInUse, "read-only %t", readOnly)
		require.True(t, errors.Is(err, boltstore.ErrNotStore) ||
			errors.Is(err, boltstore.ErrCorrupt), "read-only %t: %v", readOnly, err)
	}
}

// mapsOf counts the memory maps of this process that map the file path.
func mapsOf(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		t.Skip("no /proc/self/maps here")
	}
	defer f.Close()

	n := 0
	lines := bufio.NewScanner(f)
	for lines.Scan() {
		if strings.HasSuffix(lines.Text(), " "+path) {
			n++
		}
	}
	require.NoError(t, lines.Err())
	return n
}

// An Open refused for what the file holds closes bbolt's map of the file
// along with the file: a service that retries Open on such a file does
// not gather maps of it.
func TestRefusedOpenLeavesNoMapOfTheFile(t *testing.T) {
	alice := principal.Principal{Raw: []byte{0, 0, 0, 0, 0, 0, 0, 0xa, 1, 1}}
	tests := []struct {
		name  string
		edit  func(tx *bolt.Tx) error
		owner principal.Principal
		want  error
	}{
		{"a bucket missing", func(tx *bolt.Tx) error {
			return tx.DeleteBucket([]byte("in-due"))
		}, principal.Principal{}, boltstore.ErrCorrupt},
		{"a newer schema", func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("meta")).Put([]byte("schema"),
				binary.BigEndian.AppendUint32(nil, boltstore.SchemaVersion+1))
		}, principal.Principal{}, boltstore.ErrSchema},
		{"no schema version", func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("meta")).Delete([]byte("schema"))
		}, principal.Principal{}, boltstore.ErrNotStore},
		{"another owner", func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("meta")).Put([]byte("owner"), peer.Raw)
		}, alice, boltstore.ErrOwner},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store")
			fill(t, path, records, 100)
			editBolt(t, path, tt.edit)
			path, err := filepath.EvalSymlinks(path)
			require.NoError(t, err)

			before := mapsOf(t, path)
			const tries = 10
			for i := range tries {
				_, err := boltstore.Open(path, &boltstore.Options{LockTimeout: lockTimeout,
					Owner: tt.owner, ReadOnly: i%2 == 1})
				require.ErrorIs(t, err, tt.want)
			}
			require.Equal(t, before, mapsOf(t, path), "maps of the file left by %d refused "+
				"Opens", tries)
		})
	}
}

// A leaf page holds records, which Open does not read: damage there fails
// the calls that meet it, and only those.
func TestDamagedLeafPageFailsTheCallsThatMeetIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	fill(t, path, records, 100)
	size, root := pageOf(t, path, "out")
	good := readFile(t, path)
	require.Equal(t, uint16(0x01), binary.NativeEndian.Uint16(good[root*size+8:]),
		"the root of out must be a branch page")
	children := int(binary.NativeEndian.Uint16(good[root*size+10:]))
	page := int(binary.NativeEndian.Uint64(good[branchChild(size, root, children-1):]))
	bad := bytes.Clone(good)
	copy(bad[page*size:(page+1)*size], garbage(size, 4))
	writeFile(t, path, bad)

	const last = records - 1 // in the last leaf
	st, err := boltstore.Open(path, short)
	require.NoError(t, err, "Open reads no leaf page")
	ctx := t.Context()

	_, err = st.Outgoing(ctx, msgID(last))
	require.ErrorIs(t, err, boltstore.ErrCorrupt, "Outgoing")
	_, err = st.ListOutgoing(ctx, asyncflow.OutPending)
	require.ErrorIs(t, err, boltstore.ErrCorrupt, "ListOutgoing")
	_, err = st.DueOutgoing(ctx, base.Add(time.Hour), records)
	require.ErrorIs(t, err, boltstore.ErrCorrupt, "DueOutgoing")
	err = st.PutOutgoing(ctx, outgoing(last, 5))
	require.ErrorIs(t, err, boltstore.ErrCorrupt, "PutOutgoing")
	err = st.PutOutgoing(ctx, outgoing(1000, 5))
	require.ErrorIs(t, err, boltstore.ErrCorrupt, "PutOutgoing of a new record")
	require.ErrorIs(t, st.DeleteOutgoing(ctx, msgID(last)), boltstore.ErrCorrupt,
		"DeleteOutgoing")

	// The receiver's side is in other pages, and reads as before.
	got, err := st.Incoming(ctx, peer, msgID(last))
	require.NoError(t, err, "an undamaged bucket")
	assert.Equal(t, incoming(last).Ack, got.Ack)
	require.NoError(t, st.Close())
	requireUnchanged(t, path, bad, "failed calls on a damaged page")

	writeFile(t, path, good)
	reopenAndCheck(t, path, records, 100)
}

// valueDamage is a way to spoil one stored record's value.
type valueDamage struct {
	name   string
	damage func(v []byte) []byte
}

var valueDamages = []valueDamage{
	{"empty", func([]byte) []byte { return []byte{} }},
	{"cut short", func(v []byte) []byte { return v[:len(v)-1] }},
	{"trailing byte", func(v []byte) []byte { return append(v, 0) }},
	{"state zero", func(v []byte) []byte { v[0] = 0; return v }},
	{"unknown state", func(v []byte) []byte { v[0] = 99; return v }},
	{"length past the end", func(v []byte) []byte {
		return append(v[:len(v)-1], 0xff, 0xff, 0xff, 0xff, 0x0f)
	}},
}

// spoil replaces the value under key in bucket with damage of it.
func spoil(t *testing.T, path, bucket string, key []byte, damage func([]byte) []byte) {
	t.Helper()
	editBolt(t, path, func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		v := b.Get(key)
		require.NotNil(t, v, "no record at %x", key)
		return b.Put(key, damage(bytes.Clone(v)))
	})
}

// dueIDs returns the ids a due scan of st returns, failing on an error.
func dueIDs(t *testing.T, st *boltstore.Store) []asyncflow.MsgID {
	t.Helper()
	list, err := st.DueOutgoing(t.Context(), base.Add(time.Hour), 100)
	require.NoError(t, err, "a damaged record does not fail the scan")
	var ids []asyncflow.MsgID
	for _, m := range list {
		ids = append(ids, m.MsgID)
	}
	return ids
}

// A damaged outgoing record fails the calls that read it, and only those:
// the due scans skip it, so the other messages are still resent, and it
// can be replaced or deleted.
func TestDamagedOutgoingRecordFailsOnlyItsOwnReads(t *testing.T) {
	damages := append(valueDamages, valueDamage{"ack-hash flag", func(v []byte) []byte {
		v[14] = 7
		return v
	}})
	for _, tt := range damages {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store")
			fill(t, path, 5, 10)
			id := msgID(2)
			spoil(t, path, "out", id[:], tt.damage)

			st, err := boltstore.Open(path, quietOpts)
			require.NoError(t, err)
			defer st.Close()
			ctx := t.Context()
			_, err = st.Outgoing(ctx, id)
			require.ErrorIs(t, err, boltstore.ErrCorrupt, "Outgoing")
			want := []asyncflow.MsgID{msgID(0), msgID(1), msgID(3), msgID(4)}
			require.Equal(t, want, dueIDs(t, st), "the others are still due")
			require.Equal(t, want, dueIDs(t, st), "and the damaged one stays out")
			pending, err := st.ListOutgoing(ctx, asyncflow.OutPending)
			require.NoError(t, err, "ListOutgoing")
			require.Len(t, pending, 4)

			require.NoError(t, st.PutOutgoing(ctx, outgoing(2, 10)), "replacing it")
			requireOutgoing(t, st, 2, 10)
			require.Equal(t, []asyncflow.MsgID{msgID(0), msgID(1), id, msgID(3), msgID(4)},
				dueIDs(t, st), "a replaced record is due once, at its new time")
		})
	}
}

// A damaged acked record is left out of the acked list, with an error in
// the log, so that a Flow starts on the store and resumes the intact acked
// messages: their callbacks run, and the damaged record stays for
// deletion.
func TestDamagedAckedRecordDoesNotStopAFlow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	st, err := boltstore.Open(path, quietOpts)
	require.NoError(t, err)
	ctx := t.Context()
	for n := range 3 {
		m := outgoing(n, 10)
		if n < 2 {
			m.State, m.Ack, m.AckHash = asyncflow.OutAcked, []byte("ack"), asyncflow.SomeHash(1)
			m.NextSend = time.Time{}
		}
		require.NoError(t, st.PutOutgoing(ctx, m))
	}
	require.NoError(t, st.Close())
	damaged := msgID(0)
	spoil(t, path, "out", damaged[:], func(v []byte) []byte { return v[:len(v)-1] })

	var logs syncBuffer
	st, err = boltstore.Open(path, &boltstore.Options{LockTimeout: lockTimeout,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	defer st.Close()
	acked := make(chan asyncflow.MsgID, 4)
	f, err := asyncflow.New(asyncflow.Config{Transport: nopTransport{}, Store: st,
		Logger: slog.New(slog.DiscardHandler),
		OnAck:  func(_ context.Context, d asyncflow.Delivery) { acked <- d.MsgID }})
	require.NoError(t, err, "a Flow on a store with one damaged acked record")
	defer f.Close()

	select {
	case got := <-acked:
		require.Equal(t, msgID(1), got, "the intact acked message is resumed")
	case <-time.After(patience):
		t.Fatal("the intact acked message was not resumed")
	}
	require.Contains(t, logs.String(), "left out of the list")
	require.Contains(t, logs.String(), fmt.Sprintf("%x", damaged[:]))
	_, err = st.Outgoing(ctx, damaged)
	require.ErrorIs(t, err, boltstore.ErrCorrupt, "the damaged record stays")
}

// nopTransport accepts every call and delivers none.
type nopTransport struct{}

func (nopTransport) Send(context.Context, principal.Principal, string, []byte) error {
	return nil
}

func TestDamagedOutgoingRecordCanBeDeleted(t *testing.T) {
	for _, tt := range valueDamages {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store")
			fill(t, path, 5, 10)
			id := msgID(2)
			spoil(t, path, "out", id[:], tt.damage)

			st, err := boltstore.Open(path, quietOpts)
			require.NoError(t, err)
			defer st.Close()
			require.NoError(t, st.DeleteOutgoing(t.Context(), id))

			_, err = st.Outgoing(t.Context(), id)
			require.ErrorIs(t, err, asyncflow.ErrNotFound)
			require.Equal(t, []asyncflow.MsgID{msgID(0), msgID(1), msgID(3), msgID(4)},
				dueIDs(t, st))
			next, ok, err := st.NextDue(t.Context())
			require.NoError(t, err)
			require.True(t, ok)
			require.True(t, next.Equal(outgoing(0, 10).NextSend), "no entry of it is left")
		})
	}
}

// Every value carries a checksum of its key and bytes: one flipped bit
// anywhere in a record, where every length still reads, is ErrCorrupt,
// never a record with other bytes. A payload changed on disk would
// otherwise be sent, and the receiver's hash of it would match.
func TestAFlippedBitAnywhereInARecordIsErrCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	fill(t, path, 1, 24)
	id := msgID(0)
	kinds := []struct {
		bucket string
		key    []byte
		read   func(st *boltstore.Store) error
	}{
		{"out", id[:], func(st *boltstore.Store) error {
			_, err := st.Outgoing(t.Context(), id)
			return err
		}},
		{"in", append(id[:], peer.Raw...), func(st *boltstore.Store) error {
			_, err := st.Incoming(t.Context(), peer, id)
			return err
		}},
	}
	for _, r := range kinds {
		var size int
		editBolt(t, path, func(tx *bolt.Tx) error {
			size = len(tx.Bucket([]byte(r.bucket)).Get(r.key))
			return nil
		})
		require.Positive(t, size)
		for i := range size * 8 {
			flip := func(v []byte) []byte { v[i/8] ^= 1 << (i % 8); return v }
			spoil(t, path, r.bucket, r.key, flip)
			st, err := boltstore.Open(path, quietOpts)
			require.NoError(t, err)
			err = r.read(st)
			require.NoError(t, st.Close())
			require.ErrorIs(t, err, boltstore.ErrCorrupt, "%s record, bit %d of %d", r.bucket,
				i, size*8)
			spoil(t, path, r.bucket, r.key, flip)
		}
	}
	reopenAndCheck(t, path, 1, 24)
}

// A record moved under another key, as a damaged key would leave it, is
// ErrCorrupt: the checksum covers the key too.
func TestARecordUnderAnotherKeyIsErrCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	fill(t, path, 2, 10)
	from, to := msgID(0), msgID(1)
	editBolt(t, path, func(tx *bolt.Tx) error {
		out := tx.Bucket([]byte("out"))
		return out.Put(to[:], bytes.Clone(out.Get(from[:])))
	})

	st, err := boltstore.Open(path, quietOpts)
	require.NoError(t, err)
	defer st.Close()
	_, err = st.Outgoing(t.Context(), to)
	require.ErrorIs(t, err, boltstore.ErrCorrupt)
	requireOutgoing(t, st, 0, 10)
}

// A damaged incoming record fails its own lookup; its ack is no longer
// resent, it can be replaced, and it expires like the others.
func TestDamagedIncomingRecordFailsOnlyItsOwnReads(t *testing.T) {
	for _, tt := range valueDamages {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store")
			fill(t, path, 5, 10)
			id := msgID(2)
			spoil(t, path, "in", append(id[:], peer.Raw...), tt.damage)

			st, err := boltstore.Open(path, quietOpts)
			require.NoError(t, err)
			defer st.Close()
			ctx := t.Context()
			_, err = st.Incoming(ctx, peer, id)
			require.ErrorIs(t, err, boltstore.ErrCorrupt, "Incoming")
			due, err := st.DueIncoming(ctx, base.Add(time.Hour), 10)
			require.NoError(t, err, "a damaged record does not fail the scan")
			require.Len(t, due, 4)
			for _, m := range due {
				require.NotEqual(t, id, m.MsgID)
			}

			require.NoError(t, st.PutIncoming(ctx, incoming(2)), "replacing it")
			due, err = st.DueIncoming(ctx, base.Add(time.Hour), 10)
			require.NoError(t, err)
			require.Len(t, due, 5, "a replaced record is due once")

			n, err := st.ExpireIncoming(ctx, base.Add(time.Hour), 10)
			require.NoError(t, err)
			require.Equal(t, 5, n)
		})
	}
}

// Expiry reads a record's time from its key: a damaged record expires like
// any other, and takes its due entry with it.
func TestDamagedIncomingRecordExpires(t *testing.T) {
	for _, tt := range valueDamages {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store")
			fill(t, path, 5, 10)
			id := msgID(2)
			spoil(t, path, "in", append(id[:], peer.Raw...), tt.damage)

			st, err := boltstore.Open(path, quietOpts)
			require.NoError(t, err)
			defer st.Close()
			n, err := st.ExpireIncoming(t.Context(), base.Add(time.Hour), 10)
			require.NoError(t, err)
			require.Equal(t, 5, n, "all five expired, the damaged one too")
			_, ok, err := st.NextDue(t.Context())
			require.NoError(t, err)
			require.True(t, ok, "the outgoing records are still due")
			due, err := st.DueIncoming(t.Context(), base.Add(time.Hour), 10)
			require.NoError(t, err)
			require.Empty(t, due, "no ack is resent")
		})
	}
}

// Index entries that name no record, or that cannot be read, are skipped
// by the scans that meet them and then dropped, without failing the
// scans: they would otherwise stop every resend.
func TestDamagedIndexEntriesAreSkippedAndDropped(t *testing.T) {
	dropRecord := func(tx *bolt.Tx) error {
		id := msgID(2)
		return tx.Bucket([]byte("out")).Delete(id[:])
	}
	tests := []struct {
		name string
		edit func(tx *bolt.Tx) error
		call func(ctx context.Context, st *boltstore.Store) error
	}{
		{"due entry of a missing record", dropRecord,
			func(ctx context.Context, st *boltstore.Store) error {
				_, err := st.DueOutgoing(ctx, base.Add(time.Hour), 10)
				return err
			}},
		{"stale due entry", func(tx *bolt.Tx) error {
			id := msgID(1)
			key := binary.BigEndian.AppendUint64(nil, uint64(base.UnixNano()))
			return tx.Bucket([]byte("out-due")).Put(append(key, id[:]...), nil)
		}, func(ctx context.Context, st *boltstore.Store) error {
			_, err := st.DueOutgoing(ctx, base.Add(time.Hour), 10)
			return err
		}},
		{"short due key", func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("out-due")).Put([]byte{0, 0, 1}, nil)
		}, func(ctx context.Context, st *boltstore.Store) error {
			_, err := st.DueOutgoing(ctx, base.Add(time.Hour), 10)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store")
			fill(t, path, 5, 10)
			editBolt(t, path, tt.edit)

			st, err := boltstore.Open(path, quietOpts)
			require.NoError(t, err)
			defer st.Close()
			require.NoError(t, tt.call(t.Context(), st))
			next, ok, err := st.NextDue(t.Context())
			require.NoError(t, err)
			require.True(t, ok)
			require.True(t, next.Equal(outgoing(0, 10).NextSend),
				"the damaged entry is gone from the front of the index: %s", next)
			requireOutgoing(t, st, 1, 10)
		})
	}
}

// A short incoming key, which no Put writes, is expired by its time like
// the others rather than failing expiry.
func TestShortIncomingKeyExpires(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	fill(t, path, 5, 10)
	editBolt(t, path, func(tx *bolt.Tx) error {
		in := tx.Bucket([]byte("in"))
		_, v := in.Cursor().First()
		return in.Put([]byte{0, 0, 0}, bytes.Clone(v))
	})

	st, err := boltstore.Open(path, quietOpts)
	require.NoError(t, err)
	defer st.Close()
	n, err := st.ExpireIncoming(t.Context(), base.Add(time.Hour), 10)
	require.NoError(t, err)
	require.Equal(t, 6, n)
}

func TestFileCutShortWhileOpenIsErrCorrupt(t *testing.T) {
	tests := []struct {
		name  string
		pages int
	}{
		{"to one page", 1},
		// Both meta pages stay: transactions begin, then fault on the
		// pages they read.
		{"to the meta pages", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store")
			st, err := boltstore.Open(path, short)
			require.NoError(t, err)
			putRecords(t, st, records, 200)
			size := os.Getpagesize()
			require.NoError(t, os.Truncate(path, int64(tt.pages*size)))
			ctx := t.Context()

			within(t, "reads and writes after the file was cut", func() {
				_, err := st.Outgoing(ctx, msgID(5))
				assert.ErrorIs(t, err, boltstore.ErrCorrupt, "Outgoing")
				_, err = st.ListOutgoing(ctx, asyncflow.OutPending)
				assert.ErrorIs(t, err, boltstore.ErrCorrupt, "ListOutgoing")
				err = st.PutOutgoing(ctx, outgoing(5, 10))
				assert.ErrorIs(t, err, boltstore.ErrCorrupt, "PutOutgoing")
				_, err = st.Incoming(ctx, peer, msgID(5))
				assert.ErrorIs(t, err, boltstore.ErrCorrupt, "Incoming after a failed write")
				err = st.PutIncoming(ctx, incoming(5))
				assert.ErrorIs(t, err, boltstore.ErrCorrupt, "a second write")
			})
			within(t, "Close", func() { assert.NoError(t, st.Close()) })

			_, err = st.Outgoing(ctx, msgID(5))
			require.ErrorIs(t, err, asyncflow.ErrClosed, "a call after Close")
		})
	}
}

func TestOpenChecksTheSchemaVersion(t *testing.T) {
	version := func(v uint32) func(tx *bolt.Tx) error {
		return func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("meta")).Put([]byte("schema"),
				binary.BigEndian.AppendUint32(nil, v))
		}
	}
	tests := []struct {
		name string
		edit func(tx *bolt.Tx) error
		want error
	}{
		{"newer", version(boltstore.SchemaVersion + 1), boltstore.ErrSchema},
		{"much newer", version(1 << 31), boltstore.ErrSchema},
		{"zero", version(0), boltstore.ErrNotStore},
		{"missing", func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("meta")).Delete([]byte("schema"))
		}, boltstore.ErrNotStore},
		{"of two bytes", func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("meta")).Put([]byte("schema"), []byte{0, 1})
		}, boltstore.ErrNotStore},
		{"a bucket missing", func(tx *bolt.Tx) error {
			return tx.DeleteBucket([]byte("out-due"))
		}, boltstore.ErrCorrupt},
	}
	// A file written with bbolt's NoFreelistSync, as a newer version might
	// write it, holds no freelist, and bbolt's read-write open writes one:
	// a file Open refuses is left untouched all the same.
	for _, tt := range tests {
		for _, noFreelist := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, no freelist %t", tt.name, noFreelist), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "store")
				fill(t, path, 3, 10)
				editBoltWith(t, path, &bolt.Options{Timeout: patience,
					NoFreelistSync: noFreelist}, tt.edit)
				before := readFile(t, path)

				requireOpenFails(t, path, tt.want)
				requireUnchanged(t, path, before, "Open of a store it refuses")
			})
		}
	}
}

func TestOpenOfALockedFileIsErrInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	st, err := boltstore.Open(path, short)
	require.NoError(t, err)

	for _, readOnly := range []bool{false, true} {
		start := time.Now()
		_, err = boltstore.Open(path, &boltstore.Options{LockTimeout: lockTimeout,
			ReadOnly: readOnly})
		waited := time.Since(start)
		require.ErrorIs(t, err, boltstore.ErrInUse, "read-only %t", readOnly)
		// bbolt gives up one retry interval (50ms) before the timeout.
		assert.GreaterOrEqual(t, waited, lockTimeout/2, "Open waits for the lock")
		assert.Less(t, waited, patience, "Open gives up after about LockTimeout")
	}
	require.NoError(t, st.Close())

	// Readers share the file, and keep a writer out.
	ro := &boltstore.Options{LockTimeout: lockTimeout, ReadOnly: true}
	r1, err := boltstore.Open(path, ro)
	require.NoError(t, err)
	r2, err := boltstore.Open(path, ro)
	require.NoError(t, err, "a second reader")
	_, err = boltstore.Open(path, short)
	require.ErrorIs(t, err, boltstore.ErrInUse, "a writer while readers hold the file")
	require.NoError(t, r1.Close())
	require.NoError(t, r2.Close())
}

// With Options.Check, Open opens the file twice, read-only and then for
// writing; the two wait for the file's lock LockTimeout in all.
func TestOpenWithCheckWaitsLockTimeoutInAll(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	fill(t, path, 1, 10)
	other, err := os.Open(path)
	require.NoError(t, err)
	defer other.Close()
	const timeout = time.Second

	// Another holder of the file writes for most of the timeout, which
	// the read-only open waits for, then reads for the rest of it, which
	// the open for writing waits for.
	require.NoError(t, syscall.Flock(int(other.Fd()), syscall.LOCK_EX))
	reading := make(chan error, 1)
	go func() {
		time.Sleep(timeout * 6 / 10)
		reading <- syscall.Flock(int(other.Fd()), syscall.LOCK_SH)
	}()
	start := time.Now()
	_, err = boltstore.Open(path, &boltstore.Options{LockTimeout: timeout, Check: true})
	waited := time.Since(start)
	require.NoError(t, <-reading)

	require.ErrorIs(t, err, boltstore.ErrInUse)
	assert.GreaterOrEqual(t, waited, timeout*6/10, "Open waits for the writer")
	assert.Less(t, waited, timeout*13/10, "Open gives up after about LockTimeout")
}

// The environment of a child process: the job it runs instead of the
// tests, and the store file it works on. See TestMain.
const (
	childEnv     = "BOLTSTORE_TEST_CHILD"
	childPathEnv = "BOLTSTORE_TEST_PATH"
)

// Exit codes of child jobs, apart from those of a crash (2), a failed
// test binary (1) or a signal.
const (
	exitInUse    = 17 // Open failed with ErrInUse
	exitOpened   = 18 // Open, and Check if the job runs it, succeeded
	exitRefused  = 19 // Open or Check failed with another error of the package
	exitFailed   = 20 // the job itself failed; stderr says why
	exitFullDisk = 21 // the full-disk job ran to its end
)

// runChildJob runs the job a test started this process for, and returns
// its exit code.
func runChildJob(job string) int {
	path := os.Getenv(childPathEnv)
	switch job {
	case "open":
		return childOpen(path, short)
	case "open-checked":
		return childOpen(path, &boltstore.Options{LockTimeout: lockTimeout, Check: true})
	case "check":
		return childCheck(path)
	case "full-disk":
		return childFullDisk(path)
	}
	fmt.Fprintf(os.Stderr, "unknown child job %q\n", job)
	return exitFailed
}

// runChild runs job in a child process of this test binary and returns
// its standard output and exit code.
func runChild(t *testing.T, job, path string) (string, int) {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 6*patience)
	defer cancel()

	cmd := exec.CommandContext(ctx, self, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+job, childPathEnv+"="+path)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	require.NoError(t, ctx.Err(), "child job %s did not end; stderr:\n%s", job, &stderr)
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		require.NoError(t, err, "starting child job %s", job)
	}

	t.Logf("child job %s: exit %d, stderr:\n%s", job, cmd.ProcessState.ExitCode(), &stderr)
	return stdout.String(), cmd.ProcessState.ExitCode()
}

// childOpen opens the store at path with opts, and prints the error it
// met.
func childOpen(path string, opts *boltstore.Options) int {
	st, err := boltstore.Open(path, opts)
	if err == nil {
		err = st.Close()
	}
	return childResult(err)
}

// childCheck opens the store at path without Options.Check, runs Check on
// it, and prints the error it met.
func childCheck(path string) int {
	st, err := boltstore.Open(path, quietOpts)
	if err == nil {
		err = st.Check(context.Background())
		if cerr := st.Close(); err == nil {
			err = cerr
		}
	}
	return childResult(err)
}

// childResult prints err, the outcome of a child's job, and returns the
// exit code that says what it was.
func childResult(err error) int {
	switch {
	case errors.Is(err, boltstore.ErrInUse):
		fmt.Println(err)
		return exitInUse
	case errors.Is(err, boltstore.ErrNotStore), errors.Is(err, boltstore.ErrCorrupt),
		errors.Is(err, boltstore.ErrSchema):
		fmt.Println(err)
		return exitRefused
	case err != nil:
		fmt.Fprintln(os.Stderr, err)
		return exitFailed
	}
	fmt.Println("opened")
	return exitOpened
}

func TestOpenOfAFileLockedByAnotherProcessIsErrInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	st, err := boltstore.Open(path, short)
	require.NoError(t, err)

	out, code := runChild(t, "open", path)
	require.Equal(t, exitInUse, code, "child output:\n%s", out)
	assert.Contains(t, out, boltstore.ErrInUse.Error())
	require.NoError(t, st.Close())

	out, code = runChild(t, "open", path)
	require.Equal(t, exitOpened, code, "child output:\n%s", out)
}

func TestReadOnlyStoreReadsAndRefusesEveryWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	fill(t, path, 4, 10)
	before := readFile(t, path)

	st, err := boltstore.Open(path, &boltstore.Options{ReadOnly: true})
	require.NoError(t, err)
	requireRecords(t, st, 4, 10)
	ctx := t.Context()
	writes := map[string]func() error{
		"PutOutgoing":    func() error { return st.PutOutgoing(ctx, outgoing(9, 1)) },
		"DeleteOutgoing": func() error { return st.DeleteOutgoing(ctx, msgID(1)) },
		"PutIncoming":    func() error { return st.PutIncoming(ctx, incoming(9)) },
		"ExpireIncoming": func() error {
			_, err := st.ExpireIncoming(ctx, base.Add(time.Hour), 10)
			return err
		},
	}
	for name, write := range writes {
		require.ErrorIs(t, write(), boltstore.ErrReadOnly, name)
	}
	requireRecords(t, st, 4, 10)
	require.NoError(t, st.Close())

	requireUnchanged(t, path, before, "refused writes")
}

func TestOpenReadOnlyOfAMissingFileFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")

	_, err := boltstore.Open(path, &boltstore.Options{ReadOnly: true})
	require.ErrorIs(t, err, fs.ErrNotExist)

	_, err = os.Stat(path)
	require.ErrorIs(t, err, fs.ErrNotExist, "a read-only Open creates no file")
}

func TestOpenReadOnlyOfAnEmptyFileIsErrNotStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	writeFile(t, path, nil)

	_, err := boltstore.Open(path, &boltstore.Options{ReadOnly: true})
	require.ErrorIs(t, err, boltstore.ErrNotStore)

	requireUnchanged(t, path, nil, "a read-only Open")
}

// fullDiskLimit is the largest file the full-disk child may write.
const fullDiskLimit = 1 << 20

// fullDiskSize is the payload size of the n-th record the full-disk
// child writes: it grows, so the file fills in a few dozen writes.
func fullDiskSize(n int) int {
	return (n + 1) * 2 << 10
}

// childFullDisk fills a store under a file-size limit until a write
// fails, then reopens it and reads every record it acknowledged. Each
// line of its output is "acked N", "failed N: error" or "verified N".
func childFullDisk(path string) int {
	lim := syscall.Rlimit{Cur: fullDiskLimit, Max: fullDiskLimit}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		fmt.Fprintln(os.Stderr, "setrlimit:", err)
		return exitFailed
	}
	// A write past the limit then fails with EFBIG instead of killing us.
	signal.Ignore(syscall.SIGXFSZ)

	st, err := boltstore.Open(path, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return exitFailed
	}
	ctx := context.Background()
	acked := 0
	for ; acked < 1000; acked++ {
		err := st.PutOutgoing(ctx, outgoing(acked, fullDiskSize(acked)))
		if err != nil {
			fmt.Printf("failed %d: %v\n", acked, err)
			break
		}
		fmt.Printf("acked %d\n", acked)
	}
	if err := st.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close:", err)
		return exitFailed
	}

	st, err = boltstore.Open(path, &boltstore.Options{ReadOnly: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "reopen:", err)
		return exitFailed
	}
	defer st.Close()
	for n := range acked {
		m, err := st.Outgoing(ctx, msgID(n))
		if err != nil || !bytes.Equal(m.Payload, outgoing(n, fullDiskSize(n)).Payload) {
			fmt.Fprintf(os.Stderr, "record %d: %v\n", n, err)
			return exitFailed
		}
	}
	fmt.Printf("verified %d\n", acked)
	return exitFullDisk
}

func TestFullDiskFailsTheWriteAndKeepsEveryAcknowledgedRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")

	out, code := runChild(t, "full-disk", path)
	require.Equal(t, exitFullDisk, code, "child output:\n%s", out)

	acked, failed := 0, -1
	var failure string
	lines := bufio.NewScanner(strings.NewReader(out))
	for lines.Scan() {
		word, rest, _ := strings.Cut(lines.Text(), " ")
		switch word {
		case "acked":
			n, err := strconv.Atoi(rest)
			require.NoError(t, err)
			require.Equal(t, acked, n, "acknowledged in order")
			acked++
		case "failed":
			n, msg, _ := strings.Cut(rest, ": ")
			failed, _ = strconv.Atoi(n)
			failure = msg
		case "verified":
			require.Equal(t, strconv.Itoa(acked), rest, "the child read back what it wrote")
		}
	}
	t.Logf("%d writes acknowledged, then: %s", acked, failure)
	require.Equal(t, acked, failed, "a write failed, and it was the last one tried")
	assert.Contains(t, failure, "file too large")
	require.Greater(t, acked, 0, "the limit leaves room for some records")

	st, err := boltstore.Open(path, short)
	require.NoError(t, err)
	defer func() { require.NoError(t, st.Close()) }()
	for n := range acked {
		requireOutgoing(t, st, n, fullDiskSize(n))
	}
	_, err = st.Outgoing(t.Context(), msgID(failed))
	require.ErrorIs(t, err, asyncflow.ErrNotFound, "the failed write left nothing")

	// Without the limit, the store takes writes again.
	require.NoError(t, st.PutOutgoing(t.Context(), outgoing(failed, fullDiskSize(failed))))
	requireOutgoing(t, st, failed, fullDiskSize(failed))
}

func TestCloseDuringWritesKeepsEveryAcknowledgedRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	st, err := boltstore.Open(path, short)
	require.NoError(t, err)
	const writers, each = 16, 50

	// Close once some writes are in; the rest race with it.
	var acked sync.Map
	var count atomic.Int32
	someIn := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				n := w*each + i
				err := st.PutOutgoing(context.Background(), outgoing(n, 50))
				if err != nil {
					assert.ErrorIs(t, err, asyncflow.ErrClosed, "record %d", n)
					return
				}
				acked.Store(n, true)
				if count.Add(1) == writers {
					once.Do(func() { close(someIn) })
				}
			}
		})
	}
	select {
	case <-someIn:
	case <-time.After(patience):
		t.Fatalf("no writes were acknowledged within %s", patience)
	}
	within(t, "Close during writes", func() { assert.NoError(t, st.Close()) })
	within(t, "the writers", wg.Wait)

	st, err = boltstore.Open(path, short)
	require.NoError(t, err)
	defer func() { require.NoError(t, st.Close()) }()
	n := 0
	acked.Range(func(k, _ any) bool {
		requireOutgoing(t, st, k.(int), 50)
		n++
		return true
	})
	t.Logf("%d of %d writes were acknowledged before Close", n, writers*each)
}

func TestCancelledContextChangesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	fill(t, path, 2, 10)
	before := readFile(t, path)
	st, err := boltstore.Open(path, short)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	calls := map[string]func() error{
		"PutOutgoing":    func() error { return st.PutOutgoing(ctx, outgoing(5, 1)) },
		"DeleteOutgoing": func() error { return st.DeleteOutgoing(ctx, msgID(0)) },
		"PutIncoming":    func() error { return st.PutIncoming(ctx, incoming(5)) },
		"ExpireIncoming": func() error {
			_, err := st.ExpireIncoming(ctx, base.Add(time.Hour), 10)
			return err
		},
		"Outgoing": func() error {
			_, err := st.Outgoing(ctx, msgID(0))
			return err
		},
		"NextDue": func() error {
			_, _, err := st.NextDue(ctx)
			return err
		},
	}
	for name, call := range calls {
		require.ErrorIs(t, call(), context.Canceled, name)
	}
	require.NoError(t, st.Close())

	requireUnchanged(t, path, before, "calls with a cancelled context")
	reopenAndCheck(t, path, 2, 10)
}

// A record in a state the store would not read back is refused, and
// nothing is written: it would otherwise fail every read, and stop expiry.
func TestPutRefusesAnUnknownState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	fill(t, path, 2, 10)
	before := readFile(t, path)

	st, err := boltstore.Open(path, short)
	require.NoError(t, err)
	ctx := t.Context()
	for _, state := range []asyncflow.OutState{0, asyncflow.OutGivenUp + 1} {
		m := outgoing(5, 10)
		m.State = state
		require.ErrorIs(t, st.PutOutgoing(ctx, m), boltstore.ErrInvalidRecord)
	}
	for _, state := range []asyncflow.InState{0, asyncflow.InDone + 1} {
		m := incoming(5)
		m.State = state
		require.ErrorIs(t, st.PutIncoming(ctx, m), boltstore.ErrInvalidRecord)
	}
	require.NoError(t, st.Close())

	requireUnchanged(t, path, before, "refused puts")
}

// A store opened with an Owner belongs to that principal: another owner
// is refused before anything is read or written, while an Open that names
// no owner is not checked.
func TestOwnerTiesTheStoreToOnePrincipal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	alice := principal.Principal{Raw: []byte{0, 0, 0, 0, 0, 0, 0, 0xa, 1, 1}}
	bob := principal.Principal{Raw: []byte{0, 0, 0, 0, 0, 0, 0, 0xb, 1, 1}}
	open := func(owner principal.Principal, readOnly bool) error {
		st, err := boltstore.Open(path, &boltstore.Options{LockTimeout: lockTimeout,
			Owner: owner, ReadOnly: readOnly})
		if err == nil {
			require.NoError(t, st.Close())
		}
		return err
	}

	require.NoError(t, open(principal.Principal{}, false), "no owner yet, none named")
	require.NoError(t, open(alice, false), "the first owner is recorded")
	require.NoError(t, open(alice, false), "and accepted again")
	before := readFile(t, path)
	require.ErrorIs(t, open(bob, false), boltstore.ErrOwner)
	require.ErrorIs(t, open(bob, true), boltstore.ErrOwner, "read-only too")
	requireUnchanged(t, path, before, "refused opens")
	require.NoError(t, open(principal.Principal{}, false), "an Open naming no owner")
}

// A store created with an Owner belongs to it from its first commit.
func TestANewStoreBelongsToTheOwnerItIsCreatedWith(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	alice := principal.Principal{Raw: []byte{0, 0, 0, 0, 0, 0, 0, 0xa, 1, 1}}
	st, err := boltstore.Open(path, &boltstore.Options{LockTimeout: lockTimeout,
		Owner: alice})
	require.NoError(t, err)
	require.NoError(t, st.Close())

	_, err = boltstore.Open(path, &boltstore.Options{LockTimeout: lockTimeout,
		Owner: peer})
	require.ErrorIs(t, err, boltstore.ErrOwner)
}

// A store file without a freelist, as bbolt's NoFreelistSync leaves it, is
// opened, and given a freelist by its first write: the next Open need not
// rebuild it from every tree.
func TestAFileWithoutAFreelistGetsOneAtTheFirstWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	fill(t, path, records, 10)
	editBoltWith(t, path, &bolt.Options{Timeout: patience, NoFreelistSync: true},
		func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("meta")).Put([]byte("other"), []byte("x"))
		})
	size, _ := pageOf(t, path, "out")
	require.Equal(t, noFreelist, metaFreelist(readFile(t, path), size))

	st, err := boltstore.Open(path, short)
	require.NoError(t, err)
	require.NoError(t, st.PutOutgoing(t.Context(), outgoing(records, 10)))
	require.NoError(t, st.Close())

	require.NotEqual(t, noFreelist, metaFreelist(readFile(t, path), size))
	reopenChecked(t, path, records, 10)
}

// syncBuffer is a buffer that a store's logger and the test may use at
// once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
