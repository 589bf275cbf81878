package boltstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
)

// bbolt trusts the structure of its file. It follows the page ids in its
// branch pages wherever they lead: an id that leads back to a page above
// it sends its cursor round a loop, until the stack overflows, which
// kills the process and cannot be recovered, or for ever in a scan. It
// hands out the ids in its freelist to new pages: a free id that a tree
// still holds has a later write overwrite the records there, and nothing
// reports it. bbolt's own tx.Check follows the ids the same way, and loops
// too.
//
// Open checks none of this structure, so that its cost does not grow with
// the file. Check reads all of it, straight from the file rather than
// through bbolt's memory map: the branch pages of every tree, level by
// level, the header of every page on a tree's lowest level, which must be
// a leaf, and the freelist. Every page must be named once, inside the
// file: by a tree, as a page or an overflow page of one, or by the
// freelist. It walks the trees of the root bucket and of the buckets in
// it, which the store nests no deeper. Check does not read the leaves'
// records, nor what bbolt does not reach: a page named nowhere is only
// space lost.

// The parts of bbolt's page format (version 2) that Check reads. A page
// starts with id u64, flags u16, count u16, overflow u32. The elements of
// branch and leaf pages follow, 16 bytes each; a branch element ends with
// the child's id u64. A freelist page holds count ids u64; a count of
// 0xFFFF means the real count is in the first u64, and the ids follow it.
// A meta page holds, after the header, magic u32, version u32, page size
// u32, flags u32, the root bucket's root u64 and sequence u64, the
// freelist's page u64, the high-water mark u64, the transaction id u64,
// and a checksum u64: FNV-64a of the fields before it.
const (
	pageHeaderLen    = 16
	elementLen       = 16
	pageIDLen        = 8
	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	freelistPageFlag = 0x10
	freelistCountMax = 0xFFFF
	metaRootAt       = pageHeaderLen + 16
	metaFreelistAt   = metaRootAt + 16
	metaTxIDAt       = metaFreelistAt + 16
	metaChecksumAt   = metaTxIDAt + 8
	noFreelist       = ^uint64(0)
)

// maxDepth bounds the depth of a tree: every branch page holds at least
// two children, so a deeper tree would need more pages than a file has.
const maxDepth = 64

// checkTries is how many transactions Check tries before it gives up on
// finding the meta page of one in the file: a store that commits twice
// between the start of a transaction and the read of its meta page
// overwrites that page.
const checkTries = 10

// errMetaGone is the error of a check whose transaction's meta page was
// overwritten before the check read it.
var errMetaGone = errors.New("boltstore: the meta page of the checked transaction " +
	"was overwritten")

// Check reads the structure of the whole file as one transaction sees it,
// as Open does with Options.Check, and returns an error wrapping
// ErrCorrupt if it is damaged: a page named twice or outside the file, a
// tree whose pages loop or whose lowest level holds a page that is not a
// leaf, a freelist that names a page in use. It reads the header of every
// page that holds records, but not the records. It runs beside the
// store's other calls, which go on meanwhile, and changes nothing; its
// cost grows with the file, Close waits for it, and ctx ends it early.
func (s *Store) Check(ctx context.Context) error {
	for range checkTries {
		err := s.read(ctx, func(tx *bolt.Tx) error {
			return checkPages(ctx, tx, s.file)
		})
		if !errors.Is(err, errMetaGone) {
			return err
		}
	}
	return fmt.Errorf("%w, %d times: %s", errMetaGone, checkTries, s.path)
}

// checkFile checks the pages of db at Open, when on is set and db is no
// longer at the transaction checked, whose pages passed already. It
// returns the transaction it saw.
func checkFile(db *bolt.DB, file *os.File, on bool, checked uint64) (txid uint64,
	err error) {
	if !on {
		return 0, nil
	}
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer recoverFault(&err)
	tx, err := db.Begin(false)
	if err != nil {
		return 0, err
	}

	defer func() { _ = tx.Rollback() }()
	txid = uint64(tx.ID())
	if txid == checked {
		return txid, nil
	}
	return txid, checkPages(context.Background(), tx, file)
}

// checkPages checks the structure of the file as the read transaction tx
// sees it, reading the pages from file. The root bucket's tree is checked
// before bbolt reads it for the other buckets' roots.
func checkPages(ctx context.Context, tx *bolt.Tx, file *os.File) error {
	size := tx.DB().Info().PageSize
	high := uint64(tx.Size()) / uint64(size)
	w := pageWalker{ctx: ctx, file: file, size: size, high: high,
		seen: make(pageSet, (high+63)/64)}
	w.seen.add(0)
	w.seen.add(1)
	root, freelist, err := w.meta(uint64(tx.ID()))
	if err != nil {
		return err
	}
	var free freeIDs
	if freelist != noFreelist {
		if free, err = w.freelist(freelist); err != nil {
			return err
		}
	}

	if err := w.tree("the root bucket", root); err != nil {
		return err
	}
	err = tx.ForEach(func(name []byte, b *bolt.Bucket) error {
		return w.tree(fmt.Sprintf("bucket %q", name), uint64(b.Root()))
	})
	if err != nil {
		return err
	}

	return w.claimFree(free)
}

// pageWalker reads pages of one file and remembers which it met.
type pageWalker struct {
	ctx  context.Context
	file *os.File
	size int
	high uint64 // the file's pages are those below it
	seen pageSet
}

// pageSet is a set of page ids, one bit each.
type pageSet []uint64

// add adds id to the set, and reports whether it was not there yet.
func (s pageSet) add(id uint64) bool {
	word, bit := id/64, uint64(1)<<(id%64)
	if s[word]&bit != 0 {
		return false
	}
	s[word] |= bit
	return true
}

// treePage is the part of a tree's page that Check needs.
type treePage struct {
	leaf     bool
	overflow uint64
	children []uint64
}

// freeIDs is where the ids of a freelist page lie in the file.
type freeIDs struct {
	at    int64
	count uint64
}

// meta returns the root bucket's root page and the freelist page named by
// the meta page of transaction txid.
func (w *pageWalker) meta(txid uint64) (root, freelist uint64, err error) {
	b := make([]byte, metaChecksumAt+8)
	for id := range int64(2) {
		if err := w.readAt(b, id*int64(w.size)); err != nil {
			return 0, 0, err
		}
		sum := fnv.New64a()
		_, _ = sum.Write(b[pageHeaderLen:metaChecksumAt])
		if binary.NativeEndian.Uint64(b[metaTxIDAt:]) == txid &&
			binary.NativeEndian.Uint64(b[metaChecksumAt:]) == sum.Sum64() {
			root = binary.NativeEndian.Uint64(b[metaRootAt:])
			freelist = binary.NativeEndian.Uint64(b[metaFreelistAt:])
			return root, freelist, nil
		}
	}
	return 0, 0, errMetaGone
}

// tree checks the tree whose root is the page root; 0 is an inline
// bucket, which has no pages of its own.
func (w *pageWalker) tree(name string, root uint64) error {
	if root == 0 {
		return nil
	}
	if err := w.claim(name, root); err != nil {
		return err
	}

	depth, err := w.depth(name, root)
	if err != nil {
		return err
	}
	level := []uint64{root}
	for d := range depth + 1 {
		var next []uint64
		for _, id := range level {
			if err := w.ctx.Err(); err != nil {
				return err
			}
			p, err := w.page(name, id)
			switch {
			case err != nil:
				return err
			case d == depth && !p.leaf:
				return w.corrupt(name, id, "a branch page on the level of the leaves")
			case d < depth && p.leaf:
				return w.corrupt(name, id, "a leaf page above the level of the leaves")
			}
			if err := w.claimOverflow(name, id, p.overflow); err != nil {
				return err
			}
			for _, child := range p.children {
				if err := w.claim(name, child); err != nil {
					return err
				}
			}
			next = append(next, p.children...)
		}
		level = next
	}
	return nil
}

// depth returns the depth of the tree at root: how many branch pages lie
// on its first path down to a leaf. All leaves of a bbolt tree are at
// that depth.
func (w *pageWalker) depth(name string, root uint64) (int, error) {
	id := root
	path := map[uint64]bool{}
	for d := range maxDepth {
		if path[id] {
			return 0, fmt.Errorf("%w: %s: page %d names itself or a page above it",
				ErrCorrupt, name, id)
		}
		path[id] = true
		p, err := w.page(name, id)
		switch {
		case err != nil:
			return 0, err
		case p.leaf:
			return d, nil
		}
		id = p.children[0]
	}
	return 0, fmt.Errorf("%w: %s is deeper than %d pages", ErrCorrupt, name, maxDepth)
}

// claim notes that name names the page id, which must exist and be named
// nowhere else.
func (w *pageWalker) claim(name string, id uint64) error {
	if id < 2 || id >= w.high {
		return fmt.Errorf("%w: %s names page %d, outside the file's %d pages", ErrCorrupt,
			name, id, w.high)
	}
	if !w.seen.add(id) {
		return fmt.Errorf("%w: %s names page %d, which is named elsewhere too", ErrCorrupt,
			name, id)
	}
	return nil
}

// claimOverflow claims the overflow pages of the page id, which follow
// it.
func (w *pageWalker) claimOverflow(name string, id, overflow uint64) error {
	for n := range overflow {
		if err := w.claim(name, id+1+n); err != nil {
			return err
		}
	}
	return nil
}

// page reads the page id, which must be a branch or a leaf page, and the
// children of a branch page.
func (w *pageWalker) page(name string, id uint64) (treePage, error) {
	flags, count, overflow, err := w.header(name, id)
	if err != nil {
		return treePage{}, err
	}
	switch {
	case flags != branchPageFlag && flags != leafPageFlag:
		return treePage{}, w.corrupt(name, id, "flags %#x, neither a branch nor a leaf",
			flags)
	case pageHeaderLen+count*elementLen > (overflow+1)*uint64(w.size):
		return treePage{}, w.corrupt(name, id, "%d elements do not fit its %d pages", count,
			overflow+1)
	case flags == leafPageFlag:
		return treePage{leaf: true, overflow: overflow}, nil
	case count == 0:
		return treePage{}, w.corrupt(name, id, "a branch page without children")
	}

	elems := make([]byte, count*elementLen)
	if err := w.readAt(elems, int64(id)*int64(w.size)+pageHeaderLen); err != nil {
		return treePage{}, err
	}
	p := treePage{overflow: overflow, children: make([]uint64, count)}
	for i := range p.children {
		p.children[i] = binary.NativeEndian.Uint64(elems[i*elementLen+8:])
	}
	return p, nil
}

// freelist reads the header of the freelist page id, claims its pages,
// and returns where its ids lie.
func (w *pageWalker) freelist(id uint64) (freeIDs, error) {
	const name = "the freelist"
	if err := w.claim(name, id); err != nil {
		return freeIDs{}, err
	}
	flags, count, overflow, err := w.header(name, id)
	switch {
	case err != nil:
		return freeIDs{}, err
	case flags != freelistPageFlag:
		return freeIDs{}, w.corrupt(name, id, "flags %#x, not a freelist page", flags)
	}

	start := int64(id) * int64(w.size)
	ids := freeIDs{at: start + pageHeaderLen, count: count}
	if count == freelistCountMax {
		b := make([]byte, pageIDLen)
		if err := w.readAt(b, ids.at); err != nil {
			return freeIDs{}, err
		}
		ids.at += pageIDLen
		ids.count = binary.NativeEndian.Uint64(b)
	}
	room := (overflow+1)*uint64(w.size) - uint64(ids.at-start)
	if ids.count > room/pageIDLen {
		return freeIDs{}, w.corrupt(name, id, "%d ids do not fit its %d pages", ids.count,
			overflow+1)
	}
	return ids, w.claimOverflow(name, id, overflow)
}

// claimFree claims the ids of the freelist, a page at a time.
func (w *pageWalker) claimFree(ids freeIDs) error {
	b := make([]byte, w.size)
	for ids.count > 0 {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		n := min(ids.count, uint64(len(b)/pageIDLen))
		chunk := b[:n*pageIDLen]
		if err := w.readAt(chunk, ids.at); err != nil {
			return err
		}
		for i := range n {
			id := binary.NativeEndian.Uint64(chunk[i*pageIDLen:])
			if err := w.claim("the freelist", id); err != nil {
				return err
			}
		}
		ids.at += int64(len(chunk))
		ids.count -= n
	}
	return nil
}

// header reads the header of the page id, which must lie inside the file,
// say it is that page, and have its overflow pages inside the file too.
func (w *pageWalker) header(name string, id uint64) (flags uint16, count,
	overflow uint64, err error) {
	if id < 2 || id >= w.high {
		return 0, 0, 0, w.corrupt(name, id, "outside the file's %d pages", w.high)
	}
	head := make([]byte, pageHeaderLen)
	if err := w.readAt(head, int64(id)*int64(w.size)); err != nil {
		return 0, 0, 0, err
	}
	flags = binary.NativeEndian.Uint16(head[8:])
	count = uint64(binary.NativeEndian.Uint16(head[10:]))
	overflow = uint64(binary.NativeEndian.Uint32(head[12:]))
	switch {
	case binary.NativeEndian.Uint64(head) != id:
		return 0, 0, 0, w.corrupt(name, id, "its header says page %d",
			binary.NativeEndian.Uint64(head))
	case id+overflow >= w.high:
		return 0, 0, 0, w.corrupt(name, id, "%d overflow pages run past the file's end",
			overflow)
	}
	return flags, count, overflow, nil
}

// corrupt returns an error wrapping ErrCorrupt about the page id of name.
func (w *pageWalker) corrupt(name string, id uint64, format string, args ...any) error {
	return fmt.Errorf("%w: %s: page %d: %s", ErrCorrupt, name, id,
		fmt.Sprintf(format, args...))
}

// readAt fills b from the file at off; a file too short for it is
// corrupt.
func (w *pageWalker) readAt(b []byte, off int64) error {
	_, err := w.file.ReadAt(b, off)
	switch {
	case errors.Is(err, io.EOF):
		return fmt.Errorf("%w: the file is cut short before byte %d", ErrCorrupt,
			off+int64(len(b)))
	case err != nil:
		return fmt.Errorf("boltstore: reading page structure: %w", err)
	}
	return nil
}
