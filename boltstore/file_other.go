//go:build !unix

package boltstore

import "os"

// unlock does nothing here: bbolt's lock on other systems is released
// when the file is closed.
func unlock(*os.File) error {
	return nil
}

// syncDir does nothing here: folders cannot be synced on every system.
func syncDir(string) error {
	return nil
}
