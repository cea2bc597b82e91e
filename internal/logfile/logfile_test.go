package logfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Lines written by several goroutines while the file is renamed and
// reopened, as logrotate and a reload do, each end up whole in exactly one
// of the files, and those written after the last reopen in the new one.
func TestReopenLosesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "calloutd.log")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	const writers, lines, rotations = 8, 2000, 5
	// Long lines, so that a write split between two files would show.
	pad := strings.Repeat("x", 300)
	var (
		wg      sync.WaitGroup
		written atomic.Int64
	)
	for w := range writers {
		wg.Go(func() {
			for i := range lines {
				if _, err := fmt.Fprintf(l, "w%d line %d %s end\n", w, i, pad); err != nil {
					t.Errorf("write: %v", err)
					return
				}
				written.Add(1)
			}
		})
	}
	for r := 1; r <= rotations; r++ {
		// Spread the rotations over the writing.
		for written.Load() < int64(r*writers*lines/(rotations+1)) {
			runtime.Gosched()
		}
		if err := os.Rename(path, fmt.Sprintf("%s.%d", path, r)); err != nil {
			t.Fatal(err)
		}
		if err := l.Reopen(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if _, err := l.Write([]byte("after the last reopen\n")); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	seen := map[string]int{}
	lineRE := regexp.MustCompile(`^w\d line \d+ x{300} end$`)
	files, _ := filepath.Glob(path + "*")
	if len(files) != rotations+1 {
		t.Errorf("files %v, want %d", files, rotations+1)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) == 0 {
			t.Errorf("%s is empty: the rotations did not happen while writing", f)
			continue
		}
		if len(data) > 0 && data[len(data)-1] != '\n' {
			t.Errorf("%s ends in the middle of a line", f)
		}
		for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
			if line != "after the last reopen" && !lineRE.MatchString(line) {
				t.Errorf("%s: torn line %.60q", f, line)
			}
			seen[line]++
		}
	}
	for w := range writers {
		for i := range lines {
			if n := seen[fmt.Sprintf("w%d line %d %s end", w, i, pad)]; n != 1 {
				t.Errorf("w%d line %d: found %d times, want once", w, i, n)
			}
		}
	}
	last, _ := os.ReadFile(path)
	if !strings.HasSuffix(string(last), "after the last reopen\n") {
		t.Errorf("%s does not end with the line written after the last reopen", path)
	}
}

// A reopen that fails leaves the old file in use: nothing is lost.
func TestReopenFailureKeepsTheOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "logs", "calloutd.log")
	if err := os.Mkdir(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Write([]byte("one\n"))
	// The directory is moved away: the path cannot be opened again.
	moved := filepath.Join(dir, "moved")
	if err := os.Rename(filepath.Dir(path), moved); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Reopen: %v, want a not-exist error", err)
	}
	l.Write([]byte("two\n"))
	if data, _ := os.ReadFile(filepath.Join(moved, "calloutd.log")); string(data) != "one\ntwo\n" {
		t.Errorf("old file holds %q, want both lines", data)
	}
}

func TestClose(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), "calloutd.log"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Write([]byte("x\n")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write after Close: %v, want os.ErrClosed", err)
	}
	if err := l.Reopen(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Reopen after Close: %v, want os.ErrClosed", err)
	}
}

func TestMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "calloutd.log")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o007 != 0 {
		t.Errorf("mode %v (%v): others may read the log", fi.Mode(), err)
	}
}
