package learn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"time"
)

// Follower reads the lines appended to a log file, across rotation, as
// tail -F does: when the file is renamed away and a new one created, the
// rest of the old one is read, then the new one from its start; a file
// truncated in place (copytruncate) is read again from its start; a
// missing file is waited for.
//
// It starts at the end of the file: lines written before it started are
// history, not news.
type Follower struct {
	Path string
	// Poll is how often the file is looked at when there was nothing new
	// (default 250ms): also the longest a line waits to be read.
	Poll time.Duration
	Log  *slog.Logger

	t       *tail
	start   bool // the next file opened is read from its end
	missing bool // the file was found missing (and that was logged)
}

// Open opens the file at its end, so that every line written after Open
// returns is read by Run. Run calls it when it has not been called. A
// missing file is not an error: Run waits for it.
func (f *Follower) Open() error {
	if f.t != nil {
		return nil
	}
	if f.Log == nil {
		f.Log = slog.New(slog.DiscardHandler)
	}
	f.t = &tail{path: f.Path, log: f.Log, buf: make([]byte, 0, 64<<10)}
	f.start = true
	return f.open()
}

// open opens the file if it is not open; a missing file is logged once.
func (f *Follower) open() error {
	err := f.t.open(f.start)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		f.start = false // a file created later is all news
		if !f.missing {
			f.Log.Warn("postfix log not found, waiting for it", "file", f.Path)
			f.missing = true
		}
		return nil
	case err != nil:
		return err
	}
	f.start = false
	if f.missing {
		f.Log.Info("postfix log found", "file", f.Path)
		f.missing = false
	}
	return nil
}

// Run calls line for each complete line appended to the file until ctx is
// done, then returns nil. A line longer than MaxLine is passed cut to
// MaxLine+1 bytes, so Parse refuses it. Run returns an error only when
// the file cannot be read at all (not for a missing one: that is waited
// for).
func (f *Follower) Run(ctx context.Context, line func(string)) error {
	if err := f.Open(); err != nil {
		return err
	}
	t := f.t
	t.line = line
	var old *tail // the file rotated away, read until it has been quiet a while
	var oldUntil time.Time
	defer func() {
		t.close()
		if old != nil {
			old.close()
		}
		f.start = true // run again after an error: from the end
	}()
	poll := f.Poll
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		if old != nil {
			// Its writer (syslog, postlogd) goes on writing to it until it
			// reopens the path: after the rename, not at it.
			grew, err := old.read()
			switch {
			case err != nil || !grew && time.Now().After(oldUntil):
				old.close()
				old = nil
			case grew:
				oldUntil = time.Now().Add(rotateGrace)
			}
		}
		if t.file == nil {
			if err := f.open(); err != nil {
				return err
			}
			if t.file == nil {
				timer.Reset(poll)
				continue
			}
		}
		grew, err := t.read()
		if err != nil {
			return err
		}
		if grew {
			timer.Reset(0) // more may be waiting
			continue
		}
		rotated, err := t.rotated()
		if err != nil {
			return err
		}
		if rotated {
			if old != nil {
				_, _ = old.read() // rotated again within the grace: its last lines
				old.close()
			}
			old = &tail{path: t.path, line: t.line, log: t.log, file: t.file, info: t.info, offset: t.offset, buf: t.buf, discard: t.discard}
			oldUntil = time.Now().Add(rotateGrace)
			t.file, t.buf, t.discard = nil, make([]byte, 0, 64<<10), false
			timer.Reset(0) // the new file may be there already
			continue
		}
		timer.Reset(poll)
	}
}

// rotateGrace is how long a file rotated away is still read after the
// last line written to it: its writer reopens the path some moments
// after the rename (rsyslog on its HUP, postlogd after "postfix
// logrotate"), and what it writes meanwhile is news too.
const rotateGrace = 5 * time.Second

type tail struct {
	path    string
	line    func(string)
	log     *slog.Logger
	file    *os.File
	info    os.FileInfo
	offset  int64
	buf     []byte // the start of a line not yet ended
	discard bool   // the line being read is too long: drop its rest
}

func (t *tail) open(atEnd bool) error {
	f, err := os.Open(t.path)
	if err != nil {
		return err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("postfix log: %w", err)
	}
	t.file, t.info, t.offset = f, info, 0
	t.buf, t.discard = t.buf[:0], false
	if atEnd {
		if t.offset, err = f.Seek(0, io.SeekEnd); err != nil {
			t.close()
			return fmt.Errorf("postfix log: %w", err)
		}
	}
	return nil
}

func (t *tail) close() {
	if t.file != nil {
		t.file.Close()
		t.file = nil
	}
}

// read reads what the file has beyond the offset, up to 1 MiB at a time,
// and hands out its complete lines. grew is true when it read anything.
func (t *tail) read() (grew bool, err error) {
	var chunk [32 << 10]byte
	for total := 0; total < 1<<20; {
		n, err := t.file.Read(chunk[:])
		if n > 0 {
			grew = true
			total += n
			t.offset += int64(n)
			t.lines(chunk[:n])
		}
		if err == io.EOF || n == 0 {
			return grew, nil
		}
		if err != nil {
			return grew, fmt.Errorf("postfix log: %w", err)
		}
	}
	return grew, nil
}

func (t *tail) lines(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			t.keep(p)
			return
		}
		t.keep(p[:i])
		p = p[i+1:]
		t.line(string(t.buf))
		t.buf, t.discard = t.buf[:0], false
	}
}

// keep adds p to the line being read, up to MaxLine+1 bytes.
func (t *tail) keep(p []byte) {
	if room := MaxLine + 1 - len(t.buf); len(p) > room {
		p = p[:room]
		t.discard = true
	}
	t.buf = append(t.buf, p...)
}

// rotated looks at the path after the file has been read to its end: a
// different file there (renamed, recreated) or none is a rotation (true);
// a shorter file is a truncation, read again from its start.
func (t *tail) rotated() (bool, error) {
	info, err := os.Stat(t.path)
	switch {
	case err == nil && os.SameFile(info, t.info):
		if info.Size() < t.offset {
			t.log.Info("postfix log truncated, reading it from the start", "file", t.path)
			if _, err := t.file.Seek(0, io.SeekStart); err != nil {
				return false, fmt.Errorf("postfix log: %w", err)
			}
			t.offset, t.buf, t.discard = 0, t.buf[:0], false
		}
		return false, nil
	case err == nil || errors.Is(err, fs.ErrNotExist):
		// Renamed away: the new file (when there is one) is read from
		// its start, the old one for a while yet.
		t.log.Info("postfix log rotated, following the new file", "file", t.path)
		return true, nil
	default:
		return false, fmt.Errorf("postfix log: %w", err)
	}
}

// ReadLines calls line for each line of r until its end (a last line
// without a newline included), cutting lines longer than MaxLine as the
// Follower does. It is for "calloutd learn", which reads standard input.
func ReadLines(r io.Reader, line func(string)) error {
	t := &tail{line: line}
	var chunk [32 << 10]byte
	for {
		n, err := r.Read(chunk[:])
		t.lines(chunk[:n])
		if err == io.EOF {
			if len(t.buf) > 0 {
				line(string(t.buf))
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
}
