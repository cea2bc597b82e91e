//go:build !unix

package config

const (
	accessRead   = 0x4
	accessWrite  = 0x2
	accessSearch = 0x1
)

// access cannot ask the system here: the file is assumed usable, and serve
// will say when it is not.
func access(string, uint32) error { return nil }
