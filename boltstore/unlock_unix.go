//go:build unix

package boltstore

import (
	"os"
	"syscall"
)

// unlock releases the lock bbolt took on f. Closing f alone does not when
// bbolt failed with the file still mapped: the map keeps the file, and
// the lock, alive until the process exits.
func unlock(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}
