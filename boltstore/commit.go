package boltstore

import (
	"runtime"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
)

// maxBatch and maxBatchBytes bound the changes one transaction commits,
// so that one batch cannot hold the writer, or memory, for long.
const (
	maxBatch      = 1024
	maxBatchBytes = 32 << 20
)

// fillPercent is how full bbolt fills a page it splits. Keys arrive in
// nearly rising order (ids and due times grow), so pages rarely take a
// key in their middle again, and bbolt's default of half full would
// waste half of every page.
const fillPercent = 0.9

// lingerRounds is how many times the writer yields to let callers that
// are about to queue a change join the batch, while the batch keeps
// growing.
const lingerRounds = 4

// change is one store call's write, applied inside a shared transaction.
// A failed batch is rolled back and run again one change at a time, so
// apply must give the same result when run again on the same data.
type change struct {
	apply func(tx *bolt.Tx) error
	done  chan error
	size  int
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
	var next *change // taken from the queue, but over the last batch's budget
	for {
		if next != nil {
			batch = append(batch[:0], *next)
			next = nil
		} else {
			c, ok := <-s.changes
			if !ok {
				return
			}
			batch = append(batch[:0], c)
		}
		next = s.fill(&batch)

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

// fill adds to batch the changes already queued, within the batch's
// budget, and returns a change it took that would exceed the budget.
func (s *Store) fill(batch *[]change) *change {
	size := (*batch)[0].size
	for round := 0; round <= lingerRounds; round++ {
		before := len(*batch)
	drain:
		for len(*batch) < maxBatch {
			select {
			case c, ok := <-s.changes:
				if !ok {
					return nil
				}
				if size+c.size > maxBatchBytes {
					return &c
				}
				*batch = append(*batch, c)
				size += c.size
			default:
				break drain
			}
		}
		if len(*batch) == before || len(*batch) == maxBatch {
			return nil
		}
		runtime.Gosched()
	}
	return nil
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
	for _, name := range allBuckets {
		tx.Bucket(name).FillPercent = fillPercent
	}
	for _, c := range changes {
		if err := c.apply(tx); err != nil {
			return err
		}
	}
	return tx.Commit()
}
