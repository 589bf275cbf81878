// Package boltstore is an asyncflow.Store kept in one bbolt file: what a
// Flow records survives a crash of the process or of the machine.
//
// Every call that changes a record returns only after its transaction is
// synced to disk. Concurrent calls share transactions and fsyncs (group
// commit), so durable throughput grows with the number of callers. A file
// is used by one process at a time: Open fails with ErrInUse when another
// process holds it.
package boltstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
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
)

// DefaultLockTimeout is how long Open waits for another process to
// release the file before it fails with ErrInUse.
const DefaultLockTimeout = 2 * time.Second

// Options tunes Open. The zero value selects the defaults.
type Options struct {
	// LockTimeout is how long Open waits for the file's lock. Default
	// DefaultLockTimeout.
	LockTimeout time.Duration

	// ReadOnly opens the store for reading: it takes a shared lock, so
	// several readers may hold it while no writer does, and every call
	// that would change a record fails with ErrReadOnly. The file must
	// already be a store.
	ReadOnly bool
}

// Store is an asyncflow.Store in a bbolt file. It is safe for concurrent
// use by the goroutines of one process.
type Store struct {
	db       *bolt.DB
	file     *os.File // the file db opened, for Close to release when db cannot
	readOnly bool

	// broken is set when a fault hit bbolt while it held its own locks,
	// which then stay held: every later call fails with the error, and
	// Close releases the file without bbolt.
	broken atomic.Pointer[error]

	// mu guards closed and the sends on changes, which Close closes.
	mu      sync.RWMutex
	closed  bool
	changes chan change
	stopped chan struct{}
}

var _ asyncflow.Store = (*Store)(nil)

// Open opens the store in the file at path, creating it if it does not
// exist. It reads only the file's header and schema version, however many
// records the store holds.
func Open(path string, opts *Options) (*Store, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.ReadOnly {
		info, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("boltstore: %w", err)
		}
		// bbolt would try to write a new file's header, and fail.
		if info.Size() == 0 {
			return nil, fmt.Errorf("%w: %s is empty, and read-only", ErrNotStore, path)
		}
	}

	db, file, err := openDB(path, o)
	if err != nil {
		return nil, err
	}
	if err := checkSchema(db, o.ReadOnly); err != nil {
		if errors.Is(err, ErrCorrupt) {
			// A fault may have left bbolt's locks held, and its Close
			// would wait for them: release the file without it.
			_ = unlock(file)
			_ = file.Close()
		} else {
			_ = db.Close()
		}
		return nil, fmt.Errorf("%w: %s", err, path)
	}

	s := &Store{db: db, file: file, readOnly: o.ReadOnly,
		changes: make(chan change, maxBatch), stopped: make(chan struct{})}
	go s.commitLoop()
	return s, nil
}

// openDB opens the bbolt file, naming what went wrong in terms of a store.
// It also returns the file bbolt opened.
//
// A panic inside bbolt's Open, on pages it cannot read, loses the DB
// with the file still open: openDB releases its lock and closes it. bbolt
// gives no way to unmap the file, so the map stays until the process
// exits.
func openDB(path string, o Options) (db *bolt.DB, file *os.File, err error) {
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
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: o.LockTimeout,
		ReadOnly: o.ReadOnly, OpenFile: openFile})

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

// Path returns the file the store is kept in.
func (s *Store) Path() string {
	return s.db.Path()
}

// Close waits for the changes under way, then closes the file. Calls
// after Close fail with an error wrapping asyncflow.ErrClosed. Close is
// idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.changes)
	s.mu.Unlock()

	<-s.stopped
	if s.broken.Load() != nil {
		// bbolt's Close would wait for the locks the fault left held. As
		// after a panic in Open, the map stays until the process exits.
		return errors.Join(unlock(s.file), s.file.Close())
	}
	return s.db.Close()
}

var errClosed = fmt.Errorf("%w: bolt store", asyncflow.ErrClosed)

// write commits apply in the next batch and waits until it is synced. The
// context is checked only before the change is queued: once queued, the
// change may commit, and the call waits to report whether it did.
func (s *Store) write(ctx context.Context, apply func(tx *bolt.Tx) error) error {
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
	s.changes <- change{apply: apply, done: done}
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
		*err = fmt.Errorf("%w: %v", ErrCorrupt, r)
	}
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

// PutOutgoing implements asyncflow.Store.
func (s *Store) PutOutgoing(ctx context.Context, m asyncflow.Outgoing) error {
	if err := checkPrincipal(m.To); err != nil {
		return err
	}
	val := encodeOutgoing(m)
	return s.write(ctx, func(tx *bolt.Tx) error {
		out, due, state := tx.Bucket(bucketOut), tx.Bucket(bucketOutDue),
			tx.Bucket(bucketOutState)
		if err := unindexOutgoing(out, due, state, m.MsgID); err != nil {
			return err
		}
		if err := out.Put(outKey(m.MsgID), val); err != nil {
			return err
		}
		if err := state.Put(stateKey(m.State, m.MsgID), nil); err != nil {
			return err
		}
		if m.State == asyncflow.OutPending {
			return due.Put(dueKey(m.NextSend, outKey(m.MsgID)), nil)
		}
		return nil
	})
}

// unindexOutgoing removes the index entries of id's current record, if
// there is one.
func unindexOutgoing(out, due, state *bolt.Bucket, id asyncflow.MsgID) error {
	v := out.Get(outKey(id))
	if v == nil {
		return nil
	}
	old, err := decodeOutgoing(id, v)
	if err != nil {
		return err
	}
	if err := state.Delete(stateKey(old.State, id)); err != nil {
		return err
	}
	return due.Delete(dueKey(old.NextSend, outKey(id)))
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

// DeleteOutgoing implements asyncflow.Store.
func (s *Store) DeleteOutgoing(ctx context.Context, id asyncflow.MsgID) error {
	return s.write(ctx, func(tx *bolt.Tx) error {
		out := tx.Bucket(bucketOut)
		err := unindexOutgoing(out, tx.Bucket(bucketOutDue), tx.Bucket(bucketOutState), id)
		if err != nil {
			return err
		}
		return out.Delete(outKey(id))
	})
}

// ListOutgoing implements asyncflow.Store. It reads only the records in
// state st, through the state index.
func (s *Store) ListOutgoing(
	ctx context.Context, st asyncflow.OutState,
) ([]asyncflow.Outgoing, error) {
	var list []asyncflow.Outgoing
	err := s.read(ctx, func(tx *bolt.Tx) error {
		out := tx.Bucket(bucketOut)
		c := tx.Bucket(bucketOutState).Cursor()
		prefix := []byte{byte(st)}
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			m, err := s.outgoingAt(out, k[1:])
			if err != nil {
				return err
			}
			list = append(list, m)
		}
		return nil
	})
	return list, err
}

// outgoingAt reads the record an index entry names.
func (s *Store) outgoingAt(out *bolt.Bucket, key []byte) (asyncflow.Outgoing, error) {
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
func (s *Store) DueOutgoing(
	ctx context.Context, now time.Time, limit int,
) ([]asyncflow.Outgoing, error) {
	var list []asyncflow.Outgoing
	err := s.read(ctx, func(tx *bolt.Tx) error {
		out := tx.Bucket(bucketOut)
		return scanDue(tx.Bucket(bucketOutDue), now, limit, func(rec []byte) error {
			m, err := s.outgoingAt(out, rec)
			list = append(list, m)
			return err
		})
	})
	return list, err
}

// scanDue visits the records of up to limit due entries not after now,
// earliest first.
func scanDue(due *bolt.Bucket, now time.Time, limit int, visit func(rec []byte) error) error {
	c := due.Cursor()
	for k, _ := c.First(); k != nil && limit > 0; k, _ = c.Next() {
		at, rec, ok := splitDueKey(k)
		switch {
		case !ok:
			return fmt.Errorf("%w: due key of %d bytes", ErrCorrupt, len(k))
		case at.After(now):
			return nil
		}
		if err := visit(rec); err != nil {
			return err
		}
		limit--
	}
	return nil
}

// PutIncoming implements asyncflow.Store.
func (s *Store) PutIncoming(ctx context.Context, m asyncflow.Incoming) error {
	if err := checkPrincipal(m.From); err != nil {
		return err
	}
	key, val := inKey(m.From, m.MsgID), encodeIncoming(m)
	return s.write(ctx, func(tx *bolt.Tx) error {
		in, due := tx.Bucket(bucketIn), tx.Bucket(bucketInDue)
		if err := unindexIncoming(in, due, key); err != nil {
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

// unindexIncoming removes the due entry of the record at key, if any.
func unindexIncoming(in, due *bolt.Bucket, key []byte) error {
	v := in.Get(key)
	if v == nil {
		return nil
	}
	old, err := decodeIncoming(key, v)
	if err != nil {
		return err
	}
	return due.Delete(dueKey(old.NextSend, key))
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

// DueIncoming implements asyncflow.Store. It reads only the due entries.
func (s *Store) DueIncoming(
	ctx context.Context, now time.Time, limit int,
) ([]asyncflow.Incoming, error) {
	var list []asyncflow.Incoming
	err := s.read(ctx, func(tx *bolt.Tx) error {
		in := tx.Bucket(bucketIn)
		return scanDue(tx.Bucket(bucketInDue), now, limit, func(rec []byte) error {
			v := in.Get(rec)
			if v == nil {
				return fmt.Errorf("%w: due index names a missing record", ErrCorrupt)
			}
			m, err := decodeIncoming(rec, v)
			list = append(list, m)
			return err
		})
	})
	return list, err
}

// ExpireIncoming implements asyncflow.Store: a range scan from the oldest
// key, which reads nothing but the records it removes.
func (s *Store) ExpireIncoming(ctx context.Context, before time.Time, limit int) (int, error) {
	var n int
	err := s.write(ctx, func(tx *bolt.Tx) error {
		n = 0
		in, due := tx.Bucket(bucketIn), tx.Bucket(bucketInDue)
		c := in.Cursor()
		for k, v := c.First(); k != nil && n < limit; k, v = c.First() {
			m, err := decodeIncoming(k, v)
			if err != nil {
				return err
			}
			if !m.MsgID.Time().Before(before) {
				return nil
			}
			if err := due.Delete(dueKey(m.NextSend, k)); err != nil {
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
