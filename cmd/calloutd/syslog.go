package main

import (
	"bytes"
	"context"
	"log/slog"
	"log/syslog"
	"strings"
	"sync"

	"github.com/calloutd/calloutd/internal/config"
)

// syslogLogger logs to syslog, facility mail, tag calloutd, with each
// record's level mapped to a syslog severity and no timestamp of its own
// (syslog adds one). Where syslog cannot be reached, records are dropped:
// in spawn mode there is nowhere else to write.
func syslogLogger(c config.Log) (*slog.Logger, *slog.LevelVar) {
	w, err := syslog.New(syslog.LOG_MAIL|syslog.LOG_INFO, "calloutd")
	if err != nil {
		level := new(slog.LevelVar)
		return slog.New(slog.DiscardHandler), level
	}
	return newSyslogLogger(c, w)
}

func newSyslogLogger(c config.Log, w *syslog.Writer) (*slog.Logger, *slog.LevelVar) {
	level := new(slog.LevelVar)
	_ = level.UnmarshalText([]byte(c.Level))
	buf := new(bytes.Buffer)
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
			return slog.Attr{}
		}
		return a
	}}
	var inner slog.Handler = slog.NewTextHandler(buf, opts)
	if c.Format == "json" {
		inner = slog.NewJSONHandler(buf, opts)
	}
	return slog.New(&syslogHandler{mu: new(sync.Mutex), buf: buf, inner: inner, w: w}), level
}

// syslogHandler formats a record with inner into buf, then sends the line
// to syslog at the record's severity.
type syslogHandler struct {
	mu    *sync.Mutex // guards buf, shared by handlers derived with With*
	buf   *bytes.Buffer
	inner slog.Handler
	w     *syslog.Writer
}

func (h *syslogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *syslogHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	h.buf.Reset()
	err := h.inner.Handle(ctx, r)
	line := strings.TrimSuffix(h.buf.String(), "\n")
	h.mu.Unlock()
	if err != nil {
		return err
	}
	switch {
	case r.Level >= slog.LevelError:
		return h.w.Err(line)
	case r.Level >= slog.LevelWarn:
		return h.w.Warning(line)
	case r.Level >= slog.LevelInfo:
		return h.w.Info(line)
	default:
		return h.w.Debug(line)
	}
}

func (h *syslogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.inner = h.inner.WithAttrs(attrs)
	return &c
}

func (h *syslogHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.inner = h.inner.WithGroup(name)
	return &c
}
