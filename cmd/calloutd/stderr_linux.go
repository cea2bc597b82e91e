package main

import (
	"os"
	"syscall"
)

// dupStderr makes file descriptor 2 a copy of f, so writes the runtime makes
// to standard error (a panic's trace) go to f.
func dupStderr(f *os.File) error { return syscall.Dup3(int(f.Fd()), 2, 0) }
