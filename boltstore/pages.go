package boltstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
)

// bbolt follows the page ids in its branch pages without checking where
// they lead: a damaged id that points back at a page above it sends its
// cursor round the loop until the stack overflows, which kills the
// process and cannot be recovered. checkPages finds such damage at Open,
// before bbolt walks the trees, by reading the branch pages of every tree
// in the file straight from the file, not through bbolt's memory map.
//
// It reads only branch pages, about one page in a hundred: the leaves,
// which hold the records, are named by the lowest branch pages and never
// read. All leaves of a bbolt tree are at the same depth, which the first
// path down the tree gives.
//
// Known shortcoming: a leaf id damaged so that it names a page outside
// every tree, which itself names a page above it, still loops in bbolt.

// The parts of bbolt's page format (version 2) that checkPages reads. A
// page starts with id u64, flags u16, count u16, overflow u32; a branch
// page's elements follow, 16 bytes each, ending with the child's id u64.
// A meta page holds, after the header, magic u32, version u32, page size
// u32, flags u32, the root bucket's root u64 and sequence u64, the
// freelist's page u64, the high-water mark u64 and the transaction id u64.
const (
	pageHeaderLen    = 16
	branchElementLen = 16
	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	metaRootAt       = pageHeaderLen + 16
	metaFreelistAt   = metaRootAt + 16
	metaTxIDAt       = metaFreelistAt + 16
	noFreelist       = ^uint64(0)
)

// maxDepth bounds the depth of a tree: every branch page holds at least
// two children, so a deeper tree would need more pages than a file has.
const maxDepth = 64

// checkPages checks that the branch pages of the root bucket and of every
// bucket in it form trees: each page id in range, each page named once,
// each branch page a well-formed branch page. It returns an error
// wrapping ErrCorrupt otherwise.
func checkPages(db *bolt.DB, file *os.File) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	tx, err := db.Begin(false)
	if err != nil {
		return err
	}

	defer func() { _ = tx.Rollback() }()
	defer recoverFault(&err)

	size := db.Info().PageSize
	w := pageWalker{file: file, size: size, high: uint64(tx.Size()) / uint64(size),
		seen: map[uint64]struct{}{0: {}, 1: {}}}
	root, freelist, err := w.meta(uint64(tx.ID()))
	if err != nil {
		return err
	}
	if freelist != noFreelist {
		w.seen[freelist] = struct{}{}
	}
	if err := w.tree("the root bucket", root); err != nil {
		return err
	}

	// The root bucket's tree is sound, so bbolt can walk it for the
	// buckets' roots.
	return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
		return w.tree(fmt.Sprintf("bucket %q", name), uint64(b.Root()))
	})
}

// pageWalker reads pages of one file and remembers which it met.
type pageWalker struct {
	file *os.File
	size int
	high uint64 // the file's pages are those below it
	seen map[uint64]struct{}
}

// branchPage is the part of a page checkPages needs.
type branchPage struct {
	leaf     bool
	children []uint64
}

// meta returns the root bucket's root page and the freelist page named by
// the meta page of transaction txid, the one bbolt opened.
func (w *pageWalker) meta(txid uint64) (root, freelist uint64, err error) {
	b := make([]byte, metaTxIDAt+8)
	for id := range int64(2) {
		if err := w.readAt(b, id*int64(w.size)); err != nil {
			return 0, 0, err
		}
		if binary.NativeEndian.Uint64(b[metaTxIDAt:]) == txid {
			root = binary.NativeEndian.Uint64(b[metaRootAt:])
			freelist = binary.NativeEndian.Uint64(b[metaFreelistAt:])
			return root, freelist, nil
		}
	}
	return 0, 0, fmt.Errorf("%w: no meta page of transaction %d", ErrCorrupt, txid)
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
	for range depth {
		var next []uint64
		for _, id := range level {
			p, err := w.page(name, id)
			if err != nil {
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
// on its first path down to a leaf.
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

// claim notes that a tree names the page id, which must exist and be
// named nowhere else.
func (w *pageWalker) claim(name string, id uint64) error {
	if id < 2 || id >= w.high {
		return fmt.Errorf("%w: %s names page %d, outside the file's %d pages", ErrCorrupt,
			name, id, w.high)
	}
	if _, ok := w.seen[id]; ok {
		return fmt.Errorf("%w: %s names page %d, which is named elsewhere too", ErrCorrupt,
			name, id)
	}
	w.seen[id] = struct{}{}
	return nil
}

// page reads the page id, which must be a branch or a leaf page, and the
// children of a branch page.
func (w *pageWalker) page(name string, id uint64) (branchPage, error) {
	head := make([]byte, pageHeaderLen)
	if err := w.readAt(head, int64(id)*int64(w.size)); err != nil {
		return branchPage{}, err
	}
	corrupt := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: page %d: %s", ErrCorrupt, name, id,
			fmt.Sprintf(format, args...))
	}
	flags := binary.NativeEndian.Uint16(head[8:])
	count := uint64(binary.NativeEndian.Uint16(head[10:]))
	overflow := uint64(binary.NativeEndian.Uint32(head[12:]))
	switch {
	case binary.NativeEndian.Uint64(head) != id:
		return branchPage{}, corrupt("its header says page %d",
			binary.NativeEndian.Uint64(head))
	case flags == leafPageFlag:
		return branchPage{leaf: true}, nil
	case flags != branchPageFlag:
		return branchPage{}, corrupt("flags %#x, neither a branch nor a leaf", flags)
	case count == 0:
		return branchPage{}, corrupt("a branch page without children")
	case id+overflow >= w.high:
		return branchPage{}, corrupt("%d overflow pages run past the file's end", overflow)
	case pageHeaderLen+count*branchElementLen > (overflow+1)*uint64(w.size):
		return branchPage{}, corrupt("%d children do not fit its %d pages", count,
			overflow+1)
	}

	elems := make([]byte, count*branchElementLen)
	if err := w.readAt(elems, int64(id)*int64(w.size)+pageHeaderLen); err != nil {
		return branchPage{}, err
	}
	p := branchPage{children: make([]uint64, count)}
	for i := range p.children {
		p.children[i] = binary.NativeEndian.Uint64(elems[i*branchElementLen+8:])
	}
	return p, nil
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
