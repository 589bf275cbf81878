package boltstore_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/asyncflow/asyncflow"
	"github.com/asyncflow/asyncflow/boltstore"
)

// The parts of bbolt's page format that these tests change: a page starts
// with id u64, flags u16, count u16, overflow u32.
const (
	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	freelistPageFlag = 0x10
)

// branchChild returns where, in the file, the page id of the n-th child
// of the branch page page lies: after the 16-byte page header, each
// element is pos u32, ksize u32, child u64.
func branchChild(size, page, n int) int {
	return page*size + 16 + 16*n + 8
}

// treeRecords of 200 bytes fill enough leaves that the "out" bucket's
// root is a branch page with several children.
const treeRecords = 2 * records

// branchRoot fills a store with n records of 200 bytes, enough that the
// root of bucket is a branch page, and returns the file, its page size,
// that page and its child count.
func branchRoot(t *testing.T, path, bucket string, n int) (file []byte, size, page,
	children int) {
	t.Helper()
	fill(t, path, n, 200)
	size, page = pageOf(t, path, bucket)
	file = readFile(t, path)
	p := file[page*size:]
	require.Equal(t, uint16(branchPageFlag), binary.NativeEndian.Uint16(p[8:]),
		"the root of %s must be a branch page", bucket)
	children = int(binary.NativeEndian.Uint16(p[10:]))
	require.GreaterOrEqual(t, children, 3, "the root of %s needs three children", bucket)
	return file, size, page, children
}

// lastLeaf returns the last child of the branch page page.
func lastLeaf(file []byte, size, page, children int) int {
	return int(binary.NativeEndian.Uint64(file[branchChild(size, page, children-1):]))
}

// requireChecksRefuse checks that both ways of checking the store at path,
// Open with Options.Check and Check on a store opened without it, refuse
// it with ErrCorrupt about want, and leave the file as it is. Each runs in
// a child process, so that damage that got past the check kills the
// child, not the test.
func requireChecksRefuse(t *testing.T, path, want string) {
	t.Helper()
	before := readFile(t, path)
	for _, job := range []string{"open-checked", "check"} {
		out, code := runChild(t, job, path)
		require.Equal(t, exitRefused, code, "%s: child output:\n%s", job, out)
		require.Contains(t, out, boltstore.ErrCorrupt.Error(), job)
		require.Contains(t, out, want, job)
		requireUnchanged(t, path, before, job+" of a damaged file")
	}
}

// reopenChecked opens the store at path with Options.Check, and checks
// that it holds records 0..n-1 unchanged.
func reopenChecked(t *testing.T, path string, n, size int) {
	t.Helper()
	st, err := boltstore.Open(path, &boltstore.Options{LockTimeout: lockTimeout,
		Check: true})
	require.NoError(t, err, "Open with Check of a sound file")
	defer func() { require.NoError(t, st.Close()) }()

	require.NoError(t, st.Check(t.Context()), "Check of a sound file")
	requireRecords(t, st, n, size)
}

// bbolt follows a branch page's child ids wherever they lead: an id that
// points back up the tree sends it round a loop until the stack overflows
// and the process dies. Check reads every tree's pages first and refuses
// every such file, as does Open with Options.Check.
func TestCheckRefusesPagesThatDoNotFormATree(t *testing.T) {
	tests := []struct {
		name string
		// damage changes the root page of "out", or its children, in
		// file.
		damage func(file []byte, size, page, children int)
	}{
		{"first child is the page itself", func(file []byte, size, page, _ int) {
			binary.NativeEndian.PutUint64(file[branchChild(size, page, 0):], uint64(page))
		}},
		{"last child is the page itself", func(file []byte, size, page, n int) {
			binary.NativeEndian.PutUint64(file[branchChild(size, page, n-1):], uint64(page))
		}},
		{"two children name one page", func(file []byte, size, page, _ int) {
			copy(file[branchChild(size, page, 2):][:8], file[branchChild(size, page, 1):])
		}},
		{"a child past the end of the file", func(file []byte, size, page, _ int) {
			past := uint64(len(file)/size + 10)
			binary.NativeEndian.PutUint64(file[branchChild(size, page, 1):], past)
		}},
		{"a child on a meta page", func(file []byte, size, page, _ int) {
			binary.NativeEndian.PutUint64(file[branchChild(size, page, 1):], 1)
		}},
		{"noise", func(file []byte, size, page, _ int) {
			copy(file[page*size:(page+1)*size], garbage(size, 5))
		}},
		{"no children", func(file []byte, size, page, _ int) {
			binary.NativeEndian.PutUint16(file[page*size+10:], 0)
		}},
		{"more children than the page holds", func(file []byte, size, page, _ int) {
			binary.NativeEndian.PutUint16(file[page*size+10:], 0xffff)
		}},
		{"a leaf of noise", func(file []byte, size, page, n int) {
			leaf := lastLeaf(file, size, page, n)
			copy(file[leaf*size:(leaf+1)*size], garbage(size, 6))
		}},
		{"a leaf that says it is another page", func(file []byte, size, page, n int) {
			leaf := lastLeaf(file, size, page, n)
			binary.NativeEndian.PutUint64(file[leaf*size:], uint64(page))
		}},
		{"a leaf whose overflow pages run past the file", func(file []byte, size, page,
			n int) {
			leaf := lastLeaf(file, size, page, n)
			binary.NativeEndian.PutUint32(file[leaf*size+12:], uint32(len(file)/size))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store")
			good, size, page, children := branchRoot(t, path, "out", treeRecords)
			bad := bytes.Clone(good)
			tt.damage(bad, size, page, children)
			writeFile(t, path, bad)

			requireChecksRefuse(t, path, `bucket "out"`)

			writeFile(t, path, good)
			reopenChecked(t, path, treeRecords, 200)
		})
	}
}

// A leaf turned into a branch page whose child is the tree's root passes
// every check of the branch pages above it. bbolt's lookup of a key in
// its range recurses round it until the stack overflows, and a scan
// across it goes round the tree for ever. Check reads the header of every
// page on the level of the leaves, and refuses it.
func TestCheckRefusesALeafTurnedIntoABranchNamingTheRoot(t *testing.T) {
	tests := []struct {
		bucket string
		n      int // records enough that the bucket's root is a branch page
	}{
		{"out", treeRecords},
		{"out-due", 600},
	}
	for _, tt := range tests {
		t.Run(tt.bucket, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store")
			good, size, root, children := branchRoot(t, path, tt.bucket, tt.n)
			bad := bytes.Clone(good)
			p := bad[lastLeaf(bad, size, root, children)*size:]
			require.Equal(t, uint16(leafPageFlag), binary.NativeEndian.Uint16(p[8:]))
			// One element, which keeps the key of the leaf's first.
			binary.NativeEndian.PutUint16(p[8:], branchPageFlag)
			binary.NativeEndian.PutUint16(p[10:], 1)
			binary.NativeEndian.PutUint32(p[12:], 0)
			e := p[16:32]
			pos, ksize := binary.NativeEndian.Uint32(e[4:]), binary.NativeEndian.Uint32(e[8:])
			binary.NativeEndian.PutUint32(e[0:], pos)
			binary.NativeEndian.PutUint32(e[4:], ksize)
			binary.NativeEndian.PutUint64(e[8:], uint64(root))
			writeFile(t, path, bad)

			requireChecksRefuse(t, path, "a branch page on the level of the leaves")

			writeFile(t, path, good)
			reopenChecked(t, path, tt.n, 200)
		})
	}
}

// noFreelist is the freelist page of a meta page that names none.
const noFreelist = ^uint64(0)

// metaFreelist returns the freelist page named by the meta page bbolt
// uses, the one with the higher transaction id, of the file.
func metaFreelist(file []byte, size int) uint64 {
	const freelistAt, txidAt = 16 + 32, 16 + 48
	meta := 0
	if binary.NativeEndian.Uint64(file[size+txidAt:]) >
		binary.NativeEndian.Uint64(file[txidAt:]) {
		meta = 1
	}
	return binary.NativeEndian.Uint64(file[meta*size+freelistAt:])
}

// freelistPage returns the freelist page of the file, which must have
// one.
func freelistPage(t *testing.T, file []byte, size int) int {
	t.Helper()
	page := int(metaFreelist(file, size))
	require.Equal(t, uint16(freelistPageFlag), binary.NativeEndian.Uint16(file[page*size+8:]),
		"a freelist page")
	return page
}

// setFreelist writes ids into the freelist page page of file: with count
// set, the count field says how many ids follow; without, it is 0xFFFF,
// and ids[0] is the count.
func setFreelist(file []byte, size, page int, counted bool, ids ...uint64) {
	p := file[page*size:]
	if counted {
		binary.NativeEndian.PutUint16(p[10:], uint16(len(ids)))
	} else {
		binary.NativeEndian.PutUint16(p[10:], 0xffff)
	}
	for i, id := range ids {
		binary.NativeEndian.PutUint64(p[16+8*i:], id)
	}
}

// freeIDs returns the ids of the freelist page page, which has no
// overflow pages.
func freeIDs(t *testing.T, file []byte, size, page int) []uint64 {
	t.Helper()
	p := file[page*size:]
	require.Zero(t, binary.NativeEndian.Uint32(p[12:]), "a freelist of one page")
	n := int(binary.NativeEndian.Uint16(p[10:]))
	require.Less(t, n, 0xffff)
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = binary.NativeEndian.Uint64(p[16+8*i:])
	}
	return ids
}

// bbolt hands out the pages its freelist names to new pages: a freelist
// that names a page in use would have the next write overwrite the
// records there, with no error anywhere. Open with Options.Check refuses
// it before bbolt reads the freelist.
func TestOpenWithCheckRefusesADamagedFreelist(t *testing.T) {
	tests := []struct {
		name string
		// free returns the ids to write into the freelist, and whether
		// its count field counts them.
		free func(root, leaf, freelist, pages int, free []uint64) (bool, []uint64)
	}{
		{"a leaf in use", func(_, leaf, _, _ int, _ []uint64) (bool, []uint64) {
			return true, []uint64{uint64(leaf)}
		}},
		{"a leaf in use, counted in the first id", func(_, leaf, _, _ int,
			_ []uint64) (bool, []uint64) {
			return false, []uint64{1, uint64(leaf)}
		}},
		{"a branch page in use", func(root, _, _, _ int, _ []uint64) (bool, []uint64) {
			return true, []uint64{uint64(root)}
		}},
		{"a meta page", func(_, _, _, _ int, _ []uint64) (bool, []uint64) {
			return true, []uint64{1}
		}},
		{"its own page", func(_, _, freelist, _ int, _ []uint64) (bool, []uint64) {
			return true, []uint64{uint64(freelist)}
		}},
		{"a page past the end", func(_, _, _, pages int, _ []uint64) (bool, []uint64) {
			return true, []uint64{uint64(pages + 10)}
		}},
		{"a free page twice", func(_, _, _, _ int, free []uint64) (bool, []uint64) {
			return true, []uint64{free[0], free[0]}
		}},
		{"more ids than its page holds", func(_, _, _, _ int, _ []uint64) (bool, []uint64) {
			return false, []uint64{1 << 40}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store")
			good, size, root, children := branchRoot(t, path, "out", treeRecords)
			bad := bytes.Clone(good)
			freelist := freelistPage(t, bad, size)
			free := freeIDs(t, bad, size, freelist)
			require.NotEmpty(t, free, "the filled store has free pages")
			counted, ids := tt.free(root, lastLeaf(bad, size, root, children), freelist,
				len(bad)/size, free)
			setFreelist(bad, size, freelist, counted, ids...)
			writeFile(t, path, bad)

			_, err := boltstore.Open(path, &boltstore.Options{LockTimeout: lockTimeout,
				Check: true})
			require.ErrorIs(t, err, boltstore.ErrCorrupt)
			require.ErrorContains(t, err, "the freelist")
			requireUnchanged(t, path, bad, "Open with Check of a damaged freelist")

			writeFile(t, path, good)
			reopenChecked(t, path, treeRecords, 200)
		})
	}
}

// Check finds a freelist that names a page in use on a store opened
// without Options.Check, before any write is given that page.
func TestCheckRefusesAFreelistNamingAPageInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	file, size, root, children := branchRoot(t, path, "out", treeRecords)
	leaf := uint64(lastLeaf(file, size, root, children))
	setFreelist(file, size, freelistPage(t, file, size), true, leaf)
	writeFile(t, path, file)

	st, err := boltstore.Open(path, quietOpts)
	require.NoError(t, err, "Open reads no tree of the records")
	defer func() { require.NoError(t, st.Close()) }()

	err = st.Check(t.Context())
	require.ErrorIs(t, err, boltstore.ErrCorrupt)
	require.ErrorContains(t, err, "the freelist")
	requireUnchanged(t, path, file, "Check")
}

// A freelist whose count does not fit its count field keeps it in its
// first id; Check reads such a freelist as bbolt does.
func TestCheckReadsAFreelistCountedInItsFirstID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	file, size, _, _ := branchRoot(t, path, "out", treeRecords)
	freelist := freelistPage(t, file, size)
	free := freeIDs(t, file, size, freelist)
	require.NotEmpty(t, free, "the filled store has free pages")
	setFreelist(file, size, freelist, false, append([]uint64{uint64(len(free))}, free...)...)
	writeFile(t, path, file)

	reopenChecked(t, path, treeRecords, 200)
}

// Check reads the file as one transaction sees it, while the store's
// writes go on and free and reuse pages.
func TestCheckPassesWhileWritesGoOn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	st, err := boltstore.Open(path, short)
	require.NoError(t, err)
	defer func() { require.NoError(t, st.Close()) }()
	putRecords(t, st, records, 200)

	ctx, stop := context.WithTimeout(t.Context(), time.Second)
	defer stop()
	var wg sync.WaitGroup
	var writes atomic.Int64
	for w := range 8 {
		wg.Go(func() {
			// Each writer keeps its last four records.
			first := records + w*1_000_000
			for n := first; ctx.Err() == nil; n++ {
				err := st.PutOutgoing(ctx, outgoing(n, 300))
				if err == nil && n-4 >= first {
					err = st.DeleteOutgoing(ctx, msgID(n-4))
				}
				if err != nil {
					assert.ErrorIs(t, err, context.DeadlineExceeded)
					return
				}
				writes.Add(1)
			}
		})
	}
	checks := 0
	for ; ctx.Err() == nil; checks++ {
		require.NoError(t, st.Check(t.Context()), "check %d", checks)
	}
	wg.Wait()
	t.Logf("%d checks beside %d writes", checks, writes.Load())
	require.Positive(t, writes.Load(), "writes went on during the checks")
	requireRecords(t, st, records, 200)
}

// Check reads a read-only store too, and once the store is closed it
// fails like every other call.
func TestCheckOfAReadOnlyAndOfAClosedStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	fill(t, path, records, 200)

	st, err := boltstore.Open(path, &boltstore.Options{ReadOnly: true, Check: true})
	require.NoError(t, err)
	require.NoError(t, st.Check(t.Context()))
	require.NoError(t, st.Close())

	require.ErrorIs(t, st.Check(t.Context()), asyncflow.ErrClosed)
}
