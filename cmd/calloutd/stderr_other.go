//go:build !linux

package main

import "os"

// dupStderr is a no-op where Dup3 is not available; os.Stderr is still
// replaced, so calloutd's own writes stay off the policy connection.
func dupStderr(*os.File) error { return nil }
