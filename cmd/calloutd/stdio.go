package main

import (
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/calloutd/calloutd/internal/config"
	"github.com/calloutd/calloutd/internal/daemon"
)

// serveStdio serves one policy connection on standard input and output, as
// Postfix's spawn(8) runs us. spawn connects standard error to the client
// too, so nothing may ever be written there: logs go to log.file, else to
// syslog (facility mail). A log.file the spawn user cannot open (the likely
// mistake) falls back to syslog and says so there. Standard error itself is
// pointed at the log file (or /dev/null) so that not even a Go panic can
// write into Postfix's policy connection.
func serveStdio(cfg *config.Config) int {
	var (
		log     *slog.Logger
		level   *slog.LevelVar
		fileErr error
	)
	if cfg.Log.File != "" {
		f, err := os.OpenFile(cfg.Log.File, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err == nil {
			defer f.Close()
			quietStderr(f)
			log, level = daemon.NewLogger(cfg.Log, f)
		}
		fileErr = err
	}
	if log == nil {
		quietStderr(nil)
		log, level = syslogLogger(cfg.Log)
	}
	if fileErr != nil {
		log.Warn("cannot open log.file, logging to syslog", "file", cfg.Log.File, "err", fileErr)
	}
	d, err := daemon.New(cfg, daemon.Options{Logger: log, Level: level, Version: versionString()})
	if err != nil {
		log.Error("calloutd -stdio", "err", err)
		return 1
	}
	conn, err := stdioConn()
	if err != nil {
		log.Error("calloutd -stdio", "err", err)
		return 1
	}
	d.ServeConn(conn)
	return 0
}

// quietStderr points file descriptor 2 at f, or at /dev/null when f is nil.
func quietStderr(f *os.File) {
	if f == nil {
		var err error
		if f, err = os.OpenFile(os.DevNull, os.O_WRONLY, 0); err != nil {
			return
		}
		defer f.Close()
	}
	_ = dupStderr(f)
	os.Stderr = f
}

// stdioConn returns standard input and output as one net.Conn: the socket
// itself when spawn gave us one, else a pipe pair without deadlines.
func stdioConn() (net.Conn, error) {
	if c, err := net.FileConn(os.Stdin); err == nil {
		return c, nil
	}
	return &pipeConn{r: os.Stdin, w: os.Stdout}, nil
}

type pipeConn struct {
	r *os.File
	w *os.File
}

func (p *pipeConn) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p *pipeConn) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p *pipeConn) Close() error {
	p.r.Close()
	return p.w.Close()
}
func (p *pipeConn) LocalAddr() net.Addr  { return stdioAddr{} }
func (p *pipeConn) RemoteAddr() net.Addr { return stdioAddr{} }

// Deadlines work on pipes when the runtime poller manages them; where it
// cannot, the error is ignored and the connection simply waits.
func (p *pipeConn) SetDeadline(t time.Time) error {
	p.r.SetDeadline(t)
	return p.w.SetDeadline(t)
}
func (p *pipeConn) SetReadDeadline(t time.Time) error  { return p.r.SetDeadline(t) }
func (p *pipeConn) SetWriteDeadline(t time.Time) error { return p.w.SetDeadline(t) }

type stdioAddr struct{}

func (stdioAddr) Network() string { return "stdio" }
func (stdioAddr) String() string  { return "stdio" }
