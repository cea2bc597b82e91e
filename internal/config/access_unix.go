//go:build unix

package config

import "syscall"

const (
	accessRead   = 0x4 // R_OK
	accessWrite  = 0x2 // W_OK
	accessSearch = 0x1 // X_OK
)

// access tells whether this process's user may use path as mode asks
// (access(2)); it changes nothing, and sees a read-only file system.
func access(path string, mode uint32) error { return syscall.Access(path, mode) }
