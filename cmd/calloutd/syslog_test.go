package main

import (
	"log/syslog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calloutd/calloutd/internal/config"
)

// TestSyslogSeverities sends records through a real syslog client to a
// unixgram socket standing in for /dev/log, and reads the datagrams.
func TestSyslogSeverities(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	w, err := syslog.Dial("unixgram", path, syslog.LOG_MAIL|syslog.LOG_INFO, "calloutd")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	log, _ := newSyslogLogger(config.Log{Level: "info", Format: "text"}, w)
	log.With("route", "main").Warn("backend down", "server", "127.0.0.1:25")
	log.Error("bad config")
	log.Info("verdict", "verdict", "valid")
	log.Debug("not sent at info level")

	// Priority = facility mail (2) * 8 + severity.
	for _, want := range []struct{ pri, text string }{
		{"<20>", `msg="backend down" route=main server=127.0.0.1:25`},
		{"<19>", `msg="bad config"`},
		{"<22>", `msg=verdict verdict=valid`},
	} {
		buf := make([]byte, 2048)
		l.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := l.Read(buf)
		if err != nil {
			t.Fatalf("reading syslog datagram: %v", err)
		}
		got := string(buf[:n])
		if !strings.HasPrefix(got, want.pri) || !strings.HasSuffix(strings.TrimSuffix(got, "\n"), want.text) {
			t.Errorf("datagram %q, want priority %s and ending %q", got, want.pri, want.text)
		}
		if strings.Contains(got, "time=") || strings.Contains(got, "level=") {
			t.Errorf("datagram %q repeats time or level that syslog carries", got)
		}
	}
	l.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := l.Read(make([]byte, 2048)); err == nil {
		t.Errorf("debug record sent at info level: %d bytes", n)
	}
}
