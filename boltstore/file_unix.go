//go:build unix

package boltstore

import (
	"fmt"
	"os"
	"syscall"
)

// unlock releases the lock bbolt took on f. Closing f alone does not when
// bbolt failed with the file still mapped: the map keeps the file, and
// the lock, alive until the process exits.
func unlock(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}

// syncDir syncs the folder dir, so that a file created in it survives a
// crash of the machine along with what was synced into the file.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("boltstore: syncing the folder of a new store: %w", err)
	}
	defer d.Close()

	if err := d.Sync(); err != nil {
		return fmt.Errorf("boltstore: syncing the folder of a new store: %w", err)
	}
	return nil
}
