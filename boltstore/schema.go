package boltstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime/debug"

	"github.com/aviate-labs/agent-go/principal"
	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the layout of the buckets and records this package
// writes. It is stored in the file when the file is created.
//
// The rule for changing it: a new layout gets the next number, and Open
// migrates a file of any older number to it in one transaction before the
// store is used, so a crash during migration leaves the old layout whole.
// A file of a higher number than this package knows is refused with
// ErrSchema and left untouched: an older program must not write records it
// cannot read back.
const SchemaVersion = 1

// The buckets of schema version 1.
var (
	// bucketMeta holds the schema version under keySchema, and the
	// principal the store belongs to, if one was named, under keyOwner.
	bucketMeta = []byte("meta")
	keySchema  = []byte("schema")
	keyOwner   = []byte("owner")
	// bucketOut maps an id to the sender's record.
	bucketOut = []byte("out")
	// bucketOutDue indexes pending records by next-send time.
	bucketOutDue = []byte("out-due")
	// bucketOutState indexes the sender's acked and corrupt records by
	// state; pending ones are all in bucketOutDue.
	bucketOutState = []byte("out-state")
	// bucketIn maps id | caller to the receiver's record.
	bucketIn = []byte("in")
	// bucketInDue indexes acking records by next-send time.
	bucketInDue = []byte("in-due")
)

var allBuckets = [][]byte{bucketMeta, bucketOut, bucketOutDue, bucketOutState, bucketIn,
	bucketInDue}

// checkSchema returns the schema version of the file, or 0 for an empty
// file, one with no buckets at all, and refuses a version it does not
// know.
func checkSchema(db *bolt.DB) (version uint32, err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer recoverFault(&err)

	version, err = viewVersion(db)
	if err == nil && version > SchemaVersion {
		return 0, fmt.Errorf("%w: the file has version %d, this program knows up to %d",
			ErrSchema, version, SchemaVersion)
	}
	return version, err
}

// viewVersion reads the schema version in a read transaction that it
// rolls back itself: bbolt's View would read pages again after a fault.
func viewVersion(db *bolt.DB) (version uint32, err error) {
	tx, err := db.Begin(false)
	if err != nil {
		return 0, err
	}

	defer func() { _ = tx.Rollback() }()
	defer recoverFault(&err)
	return readVersion(tx)
}

// readVersion returns the schema version, or 0 for a file with no buckets
// at all: a new file.
func readVersion(tx *bolt.Tx) (uint32, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		empty := true
		_ = tx.ForEach(func([]byte, *bolt.Bucket) error {
			empty = false
			return nil
		})
		if !empty {
			return 0, fmt.Errorf("%w: the file holds other buckets", ErrNotStore)
		}
		return 0, nil
	}

	v := meta.Get(keySchema)
	if len(v) != 4 {
		return 0, fmt.Errorf("%w: no schema version", ErrNotStore)
	}
	version := binary.BigEndian.Uint32(v)
	if version == 0 {
		return 0, fmt.Errorf("%w: schema version 0", ErrNotStore)
	}
	if version <= SchemaVersion {
		for _, name := range allBuckets {
			if tx.Bucket(name) == nil {
				return 0, fmt.Errorf("%w: bucket %q is missing", ErrCorrupt, name)
			}
		}
	}
	return version, nil
}

// checkOwner refuses a store that belongs to a principal other than
// owner, and reports whether owner is to be recorded: the store has none
// yet. An empty owner checks nothing.
func checkOwner(db *bolt.DB, owner principal.Principal) (record bool, err error) {
	if len(owner.Raw) == 0 {
		return false, nil
	}
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer recoverFault(&err)

	var held []byte
	err = db.View(func(tx *bolt.Tx) error {
		held = bytes.Clone(tx.Bucket(bucketMeta).Get(keyOwner))
		return nil
	})
	switch {
	case err != nil:
		return false, err
	case held != nil && !bytes.Equal(held, owner.Raw):
		return false, fmt.Errorf("%w: it belongs to %s, not %s", ErrOwner,
			principal.Principal{Raw: held}, owner)
	}
	return held == nil, nil
}

// setUp gives an empty file the buckets and the schema version, and
// records owner, unless it is empty, as the store's principal, in one
// transaction. With nothing to do, it writes nothing.
func setUp(db *bolt.DB, empty bool, owner principal.Principal) (err error) {
	if !empty && len(owner.Raw) == 0 {
		return nil
	}
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer recoverFault(&err)

	return db.Update(func(tx *bolt.Tx) error {
		if empty {
			if err := create(tx); err != nil {
				return err
			}
		}
		if len(owner.Raw) == 0 {
			return nil
		}
		return tx.Bucket(bucketMeta).Put(keyOwner, owner.Raw)
	})
}

// create writes the buckets and the schema version into an empty file.
func create(tx *bolt.Tx) error {
	for _, name := range allBuckets {
		if _, err := tx.CreateBucket(name); err != nil {
			return err
		}
	}
	return tx.Bucket(bucketMeta).Put(keySchema, binary.BigEndian.AppendUint32(nil, SchemaVersion))
}
