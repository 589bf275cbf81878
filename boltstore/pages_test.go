package boltstore_test

import (
	"encoding/binary"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/asyncflow/asyncflow/boltstore"
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

// branchRoot fills a store whose "out" bucket has a branch page at its
// root, and returns the file, its page size, that page and its child
// count.
func branchRoot(t *testing.T, path string) (file []byte, size, page, children int) {
	t.Helper()
	fill(t, path, treeRecords, 200)
	size, page = pageOf(t, path, "out")
	file = readFile(t, path)
	p := file[page*size:]
	const branchPageFlag = 0x01
	require.Equal(t, uint16(branchPageFlag), binary.NativeEndian.Uint16(p[8:]),
		"the root of out must be a branch page")
	children = int(binary.NativeEndian.Uint16(p[10:]))
	require.GreaterOrEqual(t, children, 3, "the root of out needs three children")
	return file, size, page, children
}

// bbolt follows a branch page's child ids wherever they lead: an id that
// points back up the tree sends it round a loop until the stack overflows
// and the process dies. Open reads the branch pages first and refuses
// every such file. Each case runs in a child process, so that a file
// that got past Open kills the child, not the test.
func TestOpenRefusesBranchPagesThatDoNotFormATree(t *testing.T) {
	tests := []struct {
		name string
		// damage changes the root page's child ids in file.
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store")
			good, size, page, children := branchRoot(t, path)
			bad := append([]byte(nil), good...)
			tt.damage(bad, size, page, children)
			writeFile(t, path, bad)

			out, code := runChild(t, "open", path)
			require.Equal(t, exitRefused, code, "child output:\n%s", out)
			require.Contains(t, out, boltstore.ErrCorrupt.Error())
			require.Contains(t, out, `bucket "out"`)
			requireUnchanged(t, path, bad, "Open of a file whose pages do not form a tree")

			writeFile(t, path, good)
			reopenAndCheck(t, path, treeRecords, 200)
		})
	}
}
