//go:build !linux

package main

// fileSystemNote says nothing where the file system is not checked.
func fileSystemNote(string) string {
	return ""
}
