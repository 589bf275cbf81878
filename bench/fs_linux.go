package main

import "syscall"

// tmpfsMagic is the f_type statfs reports for a tmpfs.
const tmpfsMagic = 0x01021994

// fileSystemNote warns when dir is on a tmpfs, where a sync writes
// nothing to a disk.
func fileSystemNote(dir string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err == nil && st.Type == tmpfsMagic {
		return " (a tmpfs: syncs cost nothing there)"
	}
	return ""
}
