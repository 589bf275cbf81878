// Package boltstore is an asyncflow.Store kept in one bbolt file: what a
// Flow records survives a crash of the process or of the machine.
//
// Every call that changes a record returns only after its transaction is
// synced to disk. Concurrent calls share transactions and fsyncs (group
// commit), so durable throughput grows with the number of callers. A file
// is used by one process at a time: Open fails with ErrInUse when another
// process holds it.
//
// Open reads the file's header, freelist, schema version and owner, and
// none of the pages that hold records, so its cost does not grow with
// them. Damage to those pages shows at the calls that meet it, except the
// damage described at Open; Check, or Options.Check, reads the structure
// of the whole file to find that too.
package boltstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/asyncflow/asyncflow"
)

// Errors returned by this package, for use with errors.Is.
var (
	// ErrInUse is returned by Open when another process holds the file.
	ErrInUse = errors.New("boltstore: store in use by another process")

	// ErrNotStore is returned by Open for a file that is not a bbolt file,
	// or a bbolt file that is not an asyncflow store.
	ErrNotStore = errors.New("boltstore: not an asyncflow store")

	// ErrSchema is returned by Open for a store written by a newer version
	// of this package, whose schema it does not know.
	ErrSchema = errors.New("boltstore: unknown schema version")

	// ErrCorrupt is returned when the file's pages or records are damaged.
	// The call that met the damage fails; nothing is changed by it. A
	// fault on the file's header pages, as when the file is cut short,
	// fails that call and every later one.
	ErrCorrupt = errors.New("boltstore: store is corrupt")

	// ErrReadOnly is returned by a call that would change a store opened
	// with Options.ReadOnly.
	ErrReadOnly = errors.New("boltstore: store is read-only")

	// ErrOwner is returned by Open when Options.Owner names a principal
	// other than the one the store belongs to.
	ErrOwner = errors.New("boltstore: store belongs to another principal")

	// ErrInvalidRecord is returned for a record the store would not read
	// back as it was given, such as one in an unknown state. Nothing is
	// written.
	ErrInvalidRecord = errors.New("boltstore: invalid record")
)

// DefaultLockTimeout is how long Open waits for another process to
// release the file before it fails with ErrInUse.
const DefaultLockTimeout = 2 * time.Second

// Options tunes Open. The zero value selects the defaults.
type Options struct {
	// LockTimeout is how long Open waits, in all, for the file's lock.
	// Default DefaultLockTimeout.
	LockTimeout time.Duration

	// ReadOnly opens the store for reading: it takes a shared lock, so
	// several readers may hold it while no writer does, and every call
	// that would change a record fails with ErrReadOnly. The file must
	// already be a store.
	ReadOnly bool

	// Owner, when set, ties the store to one principal: the first Open
	// with an Owner records it, and an Open with another fails with
	// ErrOwner. A store's messages are its principal's: sent again under
	// another identity, they would be new messages to their receivers,
	// which keep their records per caller, and be processed again.
	Owner principal.Principal

	// Check makes Open run Store.Check before bbolt reads the freelist or
	// any tree of the file, and refuse a file it finds damaged with
	// ErrCorrupt. Open then reads the header of every page the file uses:
	// its cost grows with the file.
	Check bool

	// Logger receives what the store reports on its own: damaged records
	// that a scan skipped. Default: slog.Default().
	Logger *slog.Logger
}

// Store is an asyncflow.Store in a bbolt file. It is safe for concurrent
// use by the goroutines of one process.
type Store struct {
	db       *bolt.DB
	file     *os.File // the file db opened, for Close to release when db cannot
	path     string   // kept here: bbolt's own copy is cleared by its Close
	readOnly bool
	log      *slog.Logger

	// broken is set when a fault hit bbolt while it held its own locks,
	// which then stay held: every later call fails with the error, and
	// Close releases the file without bbolt.
	broken atomic.Pointer[error]

	// mu guards closed and the sends on changes, which Close closes.
	mu      sync.RWMutex
	closed  bool
	changes chan change
	stopped chan struct{}

	// released is closed once Close released the file; closeErr is what
	// that Close returned.
	released chan struct{}
	closeErr error
}

var _ asyncflow.Store = (*Store)(nil)

// Open opens the store in the file at path, creating it if it does not
// exist; a file it creates is synced into its folder before Open returns.
// It reads the file's header, its freelist, its schema version and its
// owner, and none of the records or the pages that hold them, however
// many there are; only a file written without a freelist, which this
// package never writes, is read whole, by bbolt, to rebuild it. A file
// Open refuses is left as it was: bbolt opens it with its writes held
// back until Open has accepted it.
//
// With Options.Check, Open first opens the file read-only and checks it
// as Store.Check does, then opens it for writing. Both opens together
// wait for the file's lock for at most Options.LockTimeout.
//
// Known shortcoming: without Options.Check or Store.Check, damaged pages
// that Open does not read can send bbolt round a loop that kills or hangs
// the process, or make a later write overwrite records still in use.
func Open(path string, opts *Options) (*Store, error) {
	o, err := withDefaults(opts)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(o.LockTimeout)

	info, statErr := os.Stat(path)
	created := errors.Is(statErr, fs.ErrNotExist)
	switch {
	case o.ReadOnly && statErr != nil:
		return nil, fmt.Errorf("boltstore: %w", statErr)
	case o.ReadOnly && info.Size() == 0:
		// bbolt would try to write a new file's header, and fail.
		return nil, fmt.Errorf("%w: %s is empty, and read-only", ErrNotStore, path)
	}

	// With Check, the file is checked through a read-only open, as
	// bbolt's read-write open reads the freelist, and walks every tree of
	// a file that has none to rebuild it.
	var checked uint64
	if o.ReadOnly || (o.Check && statErr == nil && info.Size() > 0) {
		db, file, txid, err := openChecked(path, o, true, deadline, 0)
		switch {
		case err != nil:
			return nil, err
		case o.ReadOnly:
			return newStore(path, db, file, o), nil
		}
		if err := db.Close(); err != nil {
			return nil, fmt.Errorf("boltstore: closing %s after checking it: %w", path, err)
		}
		checked = txid
	}

	db, file, _, err := openChecked(path, o, false, deadline, checked)
	if err != nil {
		return nil, err
	}
	if created {
		if err := syncDir(filepath.Dir(path)); err != nil {
			_ = db.Close()
			return nil, err
		}
	}
	return newStore(path, db, file, o), nil
}

// withDefaults returns the options opts selects, with the defaults filled
// in.
func withDefaults(opts *Options) (Options, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if len(o.Owner.Raw) > maxPrincipal {
		return o, fmt.Errorf("%w: owner of %d bytes", asyncflow.ErrInvalidPrincipal,
			len(o.Owner.Raw))
	}
	return o, nil
}

// newStore starts the store on an opened and checked file.
func newStore(path string, db *bolt.DB, file *os.File, o Options) *Store {
	s := &Store{db: db, file: file, path: path, readOnly: o.ReadOnly, log: o.Logger,
		changes: make(chan change, maxBatch), stopped: make(chan struct{}),
		released: make(chan struct{})}
	go s.commitLoop()
	return s
}

// openChecked opens the bbolt file at path, read-only or not, waiting for
// its lock until deadline, and checks it: with Options.Check its pages,
// unless it is still at transaction checked, whose pages passed; then its
// schema version and owner. Opened for writing, a file that passed is
// given the buckets if it is empty, and the owner if it has none. It
// returns the transaction it checked, and on an error closes what it
// opened.
func openChecked(path string, o Options, readOnly bool, deadline time.Time,
	checked uint64) (*bolt.DB, *os.File, uint64, error) {
	db, file, err := openDB(path, o, readOnly, deadline)
	if err != nil {
		return nil, nil, 0, err
	}

	txid, err := checkFile(db, file, o.Check, checked)
	var version uint32
	if err == nil {
		version, err = checkSchema(db)
	}
	if err == nil && version == 0 && o.ReadOnly {
		err = fmt.Errorf("%w: the file is empty, and read-only", ErrNotStore)
	}
	owner := o.Owner
	if err == nil && version != 0 {
		var record bool
		record, err = checkOwner(db, o.Owner)
		if !record {
			owner = principal.Principal{}
		}
	}
	if err == nil && !readOnly {
		// Nothing refused the file: bbolt may write to it now, and
		// its next commit writes a freelist if the file had none.
		db.NoFreelistSync = false
		err = setUp(db, version == 0, owner)
	}
	if err != nil {
		release(db, file, err)
		return nil, nil, 0, fmt.Errorf("%w: %s", err, path)
	}
	return db, file, txid, nil
}

// release closes db after Open failed with err. A fault inside bbolt may
// have left its locks held, and its Close would wait for them: the file
// is then released without it, and its map stays until the process
// exits, as bbolt gives no way to unmap it.
func release(db *bolt.DB, file *os.File, err error) {
	var fault faultError
	if errors.As(err, &fault) {
		_ = unlock(file)
		_ = file.Close()
		return
	}
	_ = db.Close()
}

// openDB opens the bbolt file, read-only or not, naming what went wrong
// in terms of a store. It also returns the file bbolt opened.
//
// A panic inside bbolt's Open, on pages it cannot read, loses the DB
// with the file still open: openDB releases its lock and closes it. bbolt
// gives no way to unmap the file, so the map stays until the process
// exits.
func openDB(path string, o Options, readOnly bool, deadline time.Time) (db *bolt.DB,
	file *os.File, err error) {
	defer func() {
		if r := recover(); r != nil {
			if file != nil {
				_ = unlock(file)
				_ = file.Close()
			}
			db, file = nil, nil
			err = fmt.Errorf("%w: %s: %v", ErrNotStore, path, r)
		}
	}()
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)

	openFile := func(name string, flag int, perm os.FileMode) (*os.File, error) {
		f, err := os.OpenFile(name, flag, perm)
		if err == nil {
			file = f
		}
		return f, err
	}
	// bbolt takes a zero timeout to mean no limit; a tiny one tries once.
	timeout := max(time.Until(deadline), time.Nanosecond)
	// NoFreelistSync keeps bbolt's read-write open from writing: it would
	// commit a freelist into a file that has none, such as one a newer
	// version wrote with NoFreelistSync, before Open could refuse it.
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, ReadOnly: readOnly,
		NoFreelistSync: true, OpenFile: openFile})

	var errno syscall.Errno
	switch {
	case err == nil:
		return db, file, nil
	case errors.Is(err, berrors.ErrTimeout):
		return nil, nil, fmt.Errorf("%w: %s is locked (waited %s)", ErrInUse, path,
			o.LockTimeout)
	case errors.As(err, &errno):
		return nil, nil, fmt.Errorf("boltstore: opening %s: %w", path, err)
	}
	// bbolt's other errors are about what the file holds: no bbolt header
	// (ErrInvalid, ErrChecksum, ErrVersionMismatch), or fewer bytes than
	// the two header pages.
	return nil, nil, fmt.Errorf("%w: %s: %v", ErrNotStore, path, err)
}

// Path returns the file the store is kept in, also after Close.
func (s *Store) Path() string {
	return s.path
}

// Close waits for the changes under way, then closes the file and
// releases its lock. Calls after Close fail with an error wrapping
// asyncflow.ErrClosed. Close is idempotent: a later Close, or one that
// comes while another is under way, returns only once the file is
// released, with the first Close's result.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.released
		return s.closeErr
	}
	s.closed = true
	close(s.changes)
	s.mu.Unlock()

	<-s.stopped
	if s.broken.Load() != nil {
		// bbolt's Close would wait for the locks the fault left held. As
		// after a panic in Open, the map stays until the process exits.
		s.closeErr = errors.Join(unlock(s.file), s.file.Close())
	} else {
		s.closeErr = s.db.Close()
	}
	close(s.released)
	return s.closeErr
}

var errClosed = fmt.Errorf("%w: bolt store", asyncflow.ErrClosed)

// write commits apply, which writes about size bytes, in the next batch
// and waits until it is synced. The context counts only until the change
// is queued: once queued, the change may commit, and the call waits to
// report whether it did.
func (s *Store) write(ctx context.Context, size int, apply func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.readOnly {
		return ErrReadOnly
	}

	done := make(chan error, 1)
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return errClosed
	}
	// The queue has room for a batch, so the change mostly goes in at
	// once; ctx.Done is asked for only when it waits, since making it may
	// cost more than queueing.
	c := change{apply: apply, done: done, size: size}
	select {
	case s.changes <- c:
	default:
		select {
		case s.changes <- c:
		case <-ctx.Done():
			s.mu.RUnlock()
			return ctx.Err()
		}
	}
	s.mu.RUnlock()

	return wrapErr(<-done)
}

// read runs fn in a read transaction, with the same protection from
// damaged pages as a write.
func (s *Store) read(ctx context.Context, fn func(tx *bolt.Tx) error) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errClosed
	}

	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	tx, err := s.begin(false)
	if err != nil {
		return err
	}

	// The rollback of a read reads no page, so it cannot fault.
	defer func() { _ = tx.Rollback() }()
	defer recoverFault(&err)
	return wrapErr(fn(tx))
}

// begin starts a transaction on a goroutine that panics on a fault. A
// fault while bbolt starts one, on header pages cut from the file, leaves
// bbolt's locks held: the store is then broken, and begin fails at once.
//
// Known shortcoming: a call that entered bbolt just before such a fault
// waits on those locks for ever, and Close waits for it.
func (s *Store) begin(writable bool) (tx *bolt.Tx, err error) {
	if broken := s.broken.Load(); broken != nil {
		return nil, *broken
	}

	defer func() {
		if r := recover(); r != nil {
			broken := fmt.Errorf("%w: %v (every later call fails)", ErrCorrupt, r)
			s.broken.Store(&broken)
			tx, err = nil, broken
		}
	}()
	tx, err = s.db.Begin(writable)
	return tx, wrapErr(err)
}

// recoverFault turns a panic inside bbolt into an ErrCorrupt: bbolt panics
// on a damaged page, and the runtime on a fault in a memory map whose file
// was cut short.
func recoverFault(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: %w", ErrCorrupt, faultError{r})
	}
}

// faultError is what bbolt panicked with. It marks an error after which
// bbolt may hold its own locks for ever.
type faultError struct{ cause any }

func (e faultError) Error() string {
	return fmt.Sprint(e.cause)
}

// wrapErr names bbolt's errors in terms of the store.
func wrapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, berrors.ErrDatabaseReadOnly), errors.Is(err, berrors.ErrTxNotWritable):
		return fmt.Errorf("%w: %v", ErrReadOnly, err)
	case errors.Is(err, berrors.ErrDatabaseNotOpen):
		return errClosed
	}
	return err
}

// PutOutgoing implements asyncflow.Store. A pending record is indexed by
// its due time, a record in any other state by its state.
func (s *Store) PutOutgoing(ctx context.Context, m asyncflow.Outgoing) error {
	if err := checkPrincipal(m.To); err != nil {
		return err
	}
	if m.State < asyncflow.OutPending || m.State > asyncflow.OutGivenUp {
		return fmt.Errorf("%w: outgoing message %s in state %d", ErrInvalidRecord, m.MsgID,
			m.State)
	}
	val := encodeOutgoing(m)
	return s.write(ctx, len(val), func(tx *bolt.Tx) error {
		out := tx.Bucket(bucketOut)
		if err := unindexOutgoing(tx, out.Get(outKey(m.MsgID)), m.MsgID); err != nil {
			return err
		}
		if err := out.Put(outKey(m.MsgID), val); err != nil {
			return err
		}
		if m.State == asyncflow.OutPending {
			return tx.Bucket(bucketOutDue).Put(dueKey(m.NextSend, outKey(m.MsgID)), nil)
		}
		return tx.Bucket(bucketOutState).Put(stateKey(m.State, m.MsgID), nil)
	})
}

// unindexOutgoing removes the index entries of the record v of id, if
// there is one. It reads only the record's head, so that a record damaged
// further on can still be replaced or deleted; with the head damaged too,
// it looks for the record's entries in every index.
func unindexOutgoing(tx *bolt.Tx, v []byte, id asyncflow.MsgID) error {
	if v == nil {
		return nil
	}
	state, next, ok := peekIndex(v)
	if !ok {
		states := tx.Bucket(bucketOutState)
		for _, st := range []asyncflow.OutState{asyncflow.OutAcked, asyncflow.OutCorrupt,
			asyncflow.OutGivenUp} {
			if err := states.Delete(stateKey(st, id)); err != nil {
				return err
			}
		}
		return dropDueOf(tx.Bucket(bucketOutDue), outKey(id))
	}
	if asyncflow.OutState(state) == asyncflow.OutPending {
		return tx.Bucket(bucketOutDue).Delete(dueKey(next, outKey(id)))
	}
	return tx.Bucket(bucketOutState).Delete(stateKey(asyncflow.OutState(state), id))
}

// Outgoing implements asyncflow.Store.
func (s *Store) Outgoing(ctx context.Context, id asyncflow.MsgID) (asyncflow.Outgoing, error) {
	var m asyncflow.Outgoing
	err := s.read(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketOut).Get(outKey(id))
		if v == nil {
			return fmt.Errorf("%w: outgoing message %s", asyncflow.ErrNotFound, id)
		}
		var err error
		m, err = decodeOutgoing(id, v)
		return err
	})
	return m, err
}

// DeleteOutgoing implements asyncflow.Store. It removes a damaged record
// too: forgetting it is how a user clears one.
func (s *Store) DeleteOutgoing(ctx context.Context, id asyncflow.MsgID) error {
	return s.write(ctx, 0, func(tx *bolt.Tx) error {
		out := tx.Bucket(bucketOut)
		if err := unindexOutgoing(tx, out.Get(outKey(id)), id); err != nil {
			return err
		}
		return out.Delete(outKey(id))
	})
}

// ListOutgoing implements asyncflow.Store. Acked and corrupt records are
// read through the state index; pending ones through the due index, whose
// entries are then sorted by id. A damaged record is logged and left out,
// so that it cannot hide the others, or stop a Flow from starting on the
// store; it stays in the file until DeleteOutgoing removes it.
func (s *Store) ListOutgoing(
	ctx context.Context, st asyncflow.OutState,
) ([]asyncflow.Outgoing, error) {
	if st == asyncflow.OutPending {
		list, err := s.DueOutgoing(ctx, time.Unix(0, math.MaxInt64), math.MaxInt)
		slices.SortFunc(list, func(a, b asyncflow.Outgoing) int {
			return a.MsgID.Compare(b.MsgID)
		})
		return list, err
	}

	var list []asyncflow.Outgoing
	var damaged []damagedEntry
	err := s.read(ctx, func(tx *bolt.Tx) error {
		out := tx.Bucket(bucketOut)
		c := tx.Bucket(bucketOutState).Cursor()
		prefix := []byte{byte(st)}
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			m, err := outgoingAt(out, k[1:])
			if err == nil && m.State != st {
				err = fmt.Errorf("%w: the %s index names message %s, which is %s",
					ErrCorrupt, st, m.MsgID, m.State)
			}
			switch {
			case errors.Is(err, ErrCorrupt):
				damaged = append(damaged, damagedEntry{key: bytes.Clone(k), err: err})
			case err != nil:
				return err
			default:
				list = append(list, m)
			}
		}
		return nil
	})
	for _, d := range damaged {
		s.log.Error("boltstore: a damaged record is left out of the list; deleting it "+
			"clears it", "path", s.Path(), "index", string(bucketOutState),
			"key", fmt.Sprintf("%x", d.key), "err", d.err)
	}
	return list, err
}

// outgoingAt reads the record an index entry names.
func outgoingAt(out *bolt.Bucket, key []byte) (asyncflow.Outgoing, error) {
	var id asyncflow.MsgID
	if len(key) != idLen {
		return asyncflow.Outgoing{}, fmt.Errorf("%w: index key of %d bytes", ErrCorrupt,
			len(key))
	}
	copy(id[:], key)
	v := out.Get(key)
	if v == nil {
		return asyncflow.Outgoing{}, fmt.Errorf("%w: index names missing message %s",
			ErrCorrupt, id)
	}
	return decodeOutgoing(id, v)
}

// DueOutgoing implements asyncflow.Store. It reads only the due entries.
// An entry whose record is missing or damaged is logged, skipped and
// dropped from the index, so that it cannot stop the others' resends.
func (s *Store) DueOutgoing(
	ctx context.Context, now time.Time, limit int,
) ([]asyncflow.Outgoing, error) {
	var list []asyncflow.Outgoing
	var damaged []damagedEntry
	err := s.read(ctx, func(tx *bolt.Tx) error {
		out := tx.Bucket(bucketOut)
		var err error
		damaged, err = scanDue(tx.Bucket(bucketOutDue), now, limit, func(k, rec []byte) error {
			m, err := outgoingAt(out, rec)
			if err == nil && !liveDue(k, out.Get(rec), byte(asyncflow.OutPending)) {
				err = fmt.Errorf("%w: stale due entry of message %s", ErrCorrupt, m.MsgID)
			}
			if err == nil {
				list = append(list, m)
			}
			return err
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	s.dropDamaged(ctx, bucketOutDue, bucketOut, byte(asyncflow.OutPending), damaged)
	return list, nil
}

// dropDueOf removes every due entry of the record key rec. It reads the
// whole index, and serves only records whose head is damaged.
func dropDueOf(due *bolt.Bucket, rec []byte) error {
	c := due.Cursor()
	for k, _ := c.First(); k != nil; {
		if _, r, ok := splitDueKey(k); !ok || !bytes.Equal(r, rec) {
			k, _ = c.Next()
			continue
		}
		at := bytes.Clone(k)
		if err := c.Delete(); err != nil {
			return err
		}
		k, _ = c.Seek(at)
	}
	return nil
}

// liveDue reports whether the due entry k still describes its record v: v
// is in the resent state, and due at k's time.
func liveDue(k, v []byte, resent byte) bool {
	_, rec, okKey := splitDueKey(k)
	state, next, okHead := peekIndex(v)
	return okKey && okHead && state == resent && bytes.Equal(dueKey(next, rec), k)
}

// damagedEntry is a due entry whose record could not be read.
type damagedEntry struct {
	key []byte
	err error
}

// scanDue visits up to limit due entries not after now, earliest first,
// with their record keys. The entries whose visit fails with ErrCorrupt
// are returned, and not counted in the limit.
func scanDue(due *bolt.Bucket, now time.Time, limit int,
	visit func(k, rec []byte) error) ([]damagedEntry, error) {
	var damaged []damagedEntry
	c := due.Cursor()
	for k, _ := c.First(); k != nil && limit > 0; k, _ = c.Next() {
		at, rec, ok := splitDueKey(k)
		var err error
		switch {
		case !ok:
			err = fmt.Errorf("%w: due key of %d bytes", ErrCorrupt, len(k))
		case at.After(now):
			return damaged, nil
		default:
			err = visit(k, rec)
		}
		switch {
		case errors.Is(err, ErrCorrupt):
			damaged = append(damaged, damagedEntry{key: bytes.Clone(k), err: err})
		case err != nil:
			return damaged, err
		default:
			limit--
		}
	}
	return damaged, nil
}

// dropDamaged logs the due entries a scan could not read, and removes
// them from the index unless their record was meanwhile rewritten to
// match: a damaged record itself stays, for inspection and deletion.
func (s *Store) dropDamaged(ctx context.Context, index, records []byte, resent byte,
	damaged []damagedEntry) {
	if len(damaged) == 0 {
		return
	}
	for _, d := range damaged {
		s.log.Error("boltstore: a damaged record is no longer resent; deleting it clears it",
			"path", s.Path(), "index", string(index), "key", fmt.Sprintf("%x", d.key),
			"err", d.err)
	}

	err := s.write(ctx, 0, func(tx *bolt.Tx) error {
		due, recs := tx.Bucket(index), tx.Bucket(records)
		for _, d := range damaged {
			_, rec, ok := splitDueKey(d.key)
			if ok && liveDue(d.key, recs.Get(rec), resent) {
				if _, err := decodeAt(records, rec, recs.Get(rec)); err == nil {
					continue
				}
			}
			if err := due.Delete(d.key); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.log.Error("boltstore: dropping damaged index entries failed", "path", s.Path(),
			"err", err)
	}
}

// PutIncoming implements asyncflow.Store.
func (s *Store) PutIncoming(ctx context.Context, m asyncflow.Incoming) error {
	if err := checkPrincipal(m.From); err != nil {
		return err
	}
	if m.State < asyncflow.InAcking || m.State > asyncflow.InDone {
		return fmt.Errorf("%w: incoming message %s in state %d", ErrInvalidRecord, m.MsgID,
			m.State)
	}
	key := inKey(m.From, m.MsgID)
	val := encodeIncoming(key, m)
	return s.write(ctx, len(val), func(tx *bolt.Tx) error {
		in, due := tx.Bucket(bucketIn), tx.Bucket(bucketInDue)
		if err := unindexIncoming(due, key, in.Get(key)); err != nil {
			return err
		}
		if err := in.Put(key, val); err != nil {
			return err
		}
		if m.State == asyncflow.InAcking {
			return due.Put(dueKey(m.NextSend, key), nil)
		}
		return nil
	})
}

// unindexIncoming removes the due entry of the record v at key, if any,
// reading only the record's head; with the head damaged, it looks for the
// entry in the whole index.
func unindexIncoming(due *bolt.Bucket, key, v []byte) error {
	if v == nil {
		return nil
	}
	state, next, ok := peekIndex(v)
	switch {
	case !ok:
		return dropDueOf(due, key)
	case asyncflow.InState(state) != asyncflow.InAcking:
		return nil
	}
	return due.Delete(dueKey(next, key))
}

// Incoming implements asyncflow.Store.
func (s *Store) Incoming(
	ctx context.Context, from principal.Principal, id asyncflow.MsgID,
) (asyncflow.Incoming, error) {
	var m asyncflow.Incoming
	err := s.read(ctx, func(tx *bolt.Tx) error {
		key := inKey(from, id)
		v := tx.Bucket(bucketIn).Get(key)
		if v == nil {
			return fmt.Errorf("%w: incoming message %s from %s", asyncflow.ErrNotFound, id,
				from)
		}
		var err error
		m, err = decodeIncoming(key, v)
		return err
	})
	return m, err
}

// DueIncoming implements asyncflow.Store. It reads only the due entries,
// and handles damaged ones as DueOutgoing does.
func (s *Store) DueIncoming(
	ctx context.Context, now time.Time, limit int,
) ([]asyncflow.Incoming, error) {
	var list []asyncflow.Incoming
	var damaged []damagedEntry
	err := s.read(ctx, func(tx *bolt.Tx) error {
		in := tx.Bucket(bucketIn)
		var err error
		damaged, err = scanDue(tx.Bucket(bucketInDue), now, limit, func(k, rec []byte) error {
			v := in.Get(rec)
			if v == nil {
				return fmt.Errorf("%w: due index names a missing record", ErrCorrupt)
			}
			m, err := decodeIncoming(rec, v)
			if err == nil && !liveDue(k, v, byte(asyncflow.InAcking)) {
				err = fmt.Errorf("%w: stale due entry of message %s", ErrCorrupt, m.MsgID)
			}
			if err == nil {
				list = append(list, m)
			}
			return err
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	s.dropDamaged(ctx, bucketInDue, bucketIn, byte(asyncflow.InAcking), damaged)
	return list, nil
}

// ExpireIncoming implements asyncflow.Store: a range scan from the oldest
// key, which reads nothing but the records it removes, and whose times
// it takes from their keys, so a damaged record expires like the others.
// With nothing to expire it writes nothing.
func (s *Store) ExpireIncoming(ctx context.Context, before time.Time, limit int) (int, error) {
	expired := func(k []byte) bool { return k != nil && keyTime(k).Before(before) }
	var any bool
	err := s.read(ctx, func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketIn).Cursor().First()
		any = expired(k)
		return nil
	})
	if err != nil || !any || limit <= 0 {
		return 0, err
	}

	var n int
	err = s.write(ctx, 0, func(tx *bolt.Tx) error {
		n = 0
		due := tx.Bucket(bucketInDue)
		c := tx.Bucket(bucketIn).Cursor()
		for k, v := c.First(); expired(k) && n < limit; k, v = c.First() {
			if err := unindexIncoming(due, k, v); err != nil {
				return err
			}
			if err := c.Delete(); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// NextDue implements asyncflow.Store: it reads the first entry of each
// due index.
func (s *Store) NextDue(ctx context.Context) (time.Time, bool, error) {
	var next time.Time
	var found bool
	err := s.read(ctx, func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketOutDue, bucketInDue} {
			k, _ := tx.Bucket(name).Cursor().First()
			if k == nil {
				continue
			}
			at, _, ok := splitDueKey(k)
			if !ok {
				return fmt.Errorf("%w: due key of %d bytes", ErrCorrupt, len(k))
			}
			if !found || at.Before(next) {
				next, found = at, true
			}
		}
		return nil
	})
	return next, found, err
}

// checkPrincipal refuses a principal that cannot be a record's peer: the
// records would not read back as they were written.
func checkPrincipal(p principal.Principal) error {
	if len(p.Raw) == 0 || len(p.Raw) > maxPrincipal {
		return fmt.Errorf("%w: %d bytes", asyncflow.ErrInvalidPrincipal, len(p.Raw))
	}
	return nil
}
