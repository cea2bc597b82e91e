package logfile

import (
	"fmt"
	"os"
	"sync"
)

// Mode is the permission a new log file is created with (before the
// umask): readable by the group (adm, or calloutd's), not by others.
const Mode = 0o640

// File is a log file that can be reopened. It is safe for concurrent use.
type File struct {
	path string

	mu     sync.Mutex // held for each write, so a swap never splits one
	f      *os.File
	closed bool
}

// Open opens path for appending, creating it if missing.
func Open(path string) (*File, error) {
	f, err := openFile(path)
	if err != nil {
		return nil, err
	}
	return &File{path: path, f: f}, nil
}

func openFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, Mode)
}

// Path is the file's name.
func (l *File) Path() string { return l.path }

// Write appends p, whole, to the file open at the time. With the log
// handlers of package logline and tint, p is one line.
func (l *File) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, os.ErrClosed
	}
	return l.f.Write(p)
}

// Reopen opens the path again and writes there from now on: after a
// rotation renamed the old file, a new one is created. The new file is
// opened before the old one is let go, so when it cannot be (a directory
// gone, no permission), Reopen returns the error and writes keep going to
// the old file.
func (l *File) Reopen() error {
	f, err := openFile(l.path)
	if err != nil {
		return fmt.Errorf("reopen log file: %w", err)
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		f.Close()
		return os.ErrClosed
	}
	old := l.f
	l.f = f
	l.mu.Unlock()
	// No write uses old any more: each holds the lock throughout.
	if err := old.Close(); err != nil {
		return fmt.Errorf("close the previous log file: %w", err)
	}
	return nil
}

// Close closes the file; later writes fail with os.ErrClosed.
func (l *File) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return os.ErrClosed
	}
	l.closed = true
	return l.f.Close()
}
