package boltstore

import (
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
)

// maxBatch bounds the changes one transaction commits, so that one batch
// of large payloads cannot hold the writer for long.
const maxBatch = 1024

// change is one store call's write, applied inside a shared transaction.
// A failed batch is rolled back and run again one change at a time, so
// apply must give the same result when run again on the same data.
type change struct {
	apply func(tx *bolt.Tx) error
	done  chan error
}

// commitLoop is the store's only writer. It takes the changes that queued
// while the previous transaction was syncing and commits them together:
// concurrent calls share one fsync, and each returns only after its own
// change is on disk. A batch that fails is retried one change at a time,
// so one bad change fails alone.
func (s *Store) commitLoop() {
	debug.SetPanicOnFault(true)
	defer close(s.stopped)

	batch := make([]change, 0, maxBatch)
	for c := range s.changes {
		batch = append(batch[:0], c)
	drain:
		for len(batch) < maxBatch {
			select {
			case c, ok := <-s.changes:
				if !ok {
					break drain
				}
				batch = append(batch, c)
			default:
				break drain
			}
		}

		err := s.update(batch)
		if err == nil || len(batch) == 1 {
			for _, c := range batch {
				c.done <- err
			}
			continue
		}
		for _, c := range batch {
			c.done <- s.update([]change{c})
		}
	}
}

// update applies changes in one transaction and commits it, turning a
// panic in bbolt (a damaged page, or a fault on a file cut short under
// its memory map) into an error.
//
// It does not use bbolt's Update: on a panic, that rolls back by reading
// the freelist page again, which faults again on a file cut short and
// leaves the writer lock held, so that every later write and Close hang.
// tx.Rollback reads no page.
func (s *Store) update(changes []change) (err error) {
	tx, err := s.begin(true)
	if err != nil {
		return err
	}

	defer func() {
		if err != nil {
			// After a failed Commit, bbolt has already rolled back.
			_ = tx.Rollback()
		}
	}()
	defer recoverFault(&err)
	for _, c := range changes {
		if err := c.apply(tx); err != nil {
			return err
		}
	}
	return tx.Commit()
}
