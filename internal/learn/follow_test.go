package learn

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// follow runs a Follower on path and returns a function that waits for the
// lines seen so far to reach want.
func follow(t *testing.T, path string) (wait func(want ...string)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var got []string
	done := make(chan error, 1)
	f := &Follower{Path: path, Poll: 5 * time.Millisecond}
	go func() {
		done <- f.Run(ctx, func(l string) {
			mu.Lock()
			got = append(got, l)
			mu.Unlock()
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return func(want ...string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			mu.Lock()
			g := strings.Join(got, "|")
			mu.Unlock()
			if g == strings.Join(want, "|") {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("lines %q, want %q", g, strings.Join(want, "|"))
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
}

func appendTo(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// settle gives the follower time to open the file (at its end) before the
// test writes what it must see.
func settle() { time.Sleep(50 * time.Millisecond) }

func TestFollowerRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	appendTo(t, path, "history 1\nhistory 2\n")
	wait := follow(t, path)
	settle()

	// History is skipped; a line written in two parts is one line.
	appendTo(t, path, "one\ntw")
	wait("one")
	appendTo(t, path, "o\n")
	wait("one", "two")

	// logrotate's default: rename, then a new file. Lines the old file
	// gets between the rename and the writer's reopen are read too.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendTo(t, path+".1", "three\n")
	wait("one", "two", "three")
	appendTo(t, path, "four\n")
	wait("one", "two", "three", "four")
	// The writer had not reopened yet: the old file is still read.
	appendTo(t, path+".1", "four and a half\n")
	wait("one", "two", "three", "four", "four and a half")

	// copytruncate: the same file, shorter.
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	settle()
	appendTo(t, path, "five\n")
	wait("one", "two", "three", "four", "four and a half", "five")

	// Removed, then created again later.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	settle()
	appendTo(t, path, "six\n")
	wait("one", "two", "three", "four", "four and a half", "five", "six")
}

// A file that does not exist yet is waited for and read from its start.
func TestFollowerMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	wait := follow(t, path)
	settle()
	appendTo(t, path, "first\n")
	wait("first")
}

// A line beyond MaxLine is passed cut (Parse refuses it), and the next
// line is whole.
func TestFollowerLongLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	appendTo(t, path, "")
	wait := follow(t, path)
	settle()
	long := strings.Repeat("x", 3*MaxLine)
	appendTo(t, path, long+"\nafter\n")
	wait(long[:MaxLine+1], "after")
}

// Many lines written quickly all arrive, in order, once.
func TestFollowerBurst(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	appendTo(t, path, "")
	wait := follow(t, path)
	settle()
	var b strings.Builder
	var want []string
	for i := range 20000 {
		fmt.Fprintf(&b, "line %d\n", i)
		want = append(want, fmt.Sprintf("line %d", i))
	}
	appendTo(t, path, b.String())
	wait(want...)
}

func TestReadLines(t *testing.T) {
	var got []string
	in := "a\n\nb\r\n" + strings.Repeat("y", MaxLine+5) + "\nlast"
	if err := ReadLines(strings.NewReader(in), func(l string) { got = append(got, l) }); err != nil {
		t.Fatal(err)
	}
	want := []string{"a", "", "b\r", strings.Repeat("y", MaxLine+1), "last"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q", got)
	}
}
