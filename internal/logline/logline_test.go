package logline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"testing/slogtest"
	"time"

	"github.com/lmittmann/tint"
)

// TestJSONConformance runs log/slog's handler conformance suite.
func TestJSONConformance(t *testing.T) {
	var buf bytes.Buffer
	slogtest.Run(t, func(*testing.T) slog.Handler { buf.Reset(); return New(&buf, JSON, slog.LevelInfo) },
		func(t *testing.T) map[string]any {
			var m map[string]any
			if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
				t.Fatalf("%q: %v", buf.String(), err)
			}
			return m
		})
}

// TestTextConformance runs the same suite on the text layout, read back
// the way a log shipper's logfmt parser would.
func TestTextConformance(t *testing.T) {
	var buf bytes.Buffer
	slogtest.Run(t, func(*testing.T) slog.Handler { buf.Reset(); return New(&buf, Text, slog.LevelInfo) },
		func(t *testing.T) map[string]any { return parseText(t, buf.String()) })
}

// parseText reads "[time] LVL msg k=v ..." into slogtest's map: dotted
// keys become nested maps.
func parseText(t *testing.T, line string) map[string]any {
	t.Helper()
	m := map[string]any{}
	s := strings.TrimSuffix(line, "\n")
	field := func() string {
		var f string
		if strings.HasPrefix(s, `"`) {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			f, _ = strconv.Unquote(q)
			s = s[len(q):]
		} else {
			end := strings.IndexAny(s, " =")
			if end < 0 {
				end = len(s)
			}
			f, s = s[:end], s[end:]
		}
		return f
	}
	first := field()
	s = strings.TrimPrefix(s, " ")
	if ts, err := time.Parse(time.RFC3339Nano, first); err == nil {
		m[slog.TimeKey] = ts
		first = field()
		s = strings.TrimPrefix(s, " ")
	}
	m[slog.LevelKey] = first
	// The message runs to the first " key=".
	msgEnd := len(s)
	for i := 0; i < len(s); i++ {
		if s[i] == ' ' && strings.Contains(s[i+1:], "=") {
			rest := s[i+1:]
			if eq := strings.IndexByte(rest, '='); eq > 0 && !strings.ContainsAny(rest[:eq], " ") {
				msgEnd = i
				break
			}
		}
	}
	m[slog.MessageKey], s = s[:msgEnd], s[msgEnd:]
	for s != "" {
		s = strings.TrimPrefix(s, " ")
		k := field()
		if !strings.HasPrefix(s, "=") {
			t.Fatalf("%q: no '=' after %q", line, k)
		}
		s = s[1:]
		v := field()
		parts := strings.Split(k, ".")
		into := m
		for _, p := range parts[:len(parts)-1] {
			sub, ok := into[p].(map[string]any)
			if !ok {
				sub = map[string]any{}
				into[p] = sub
			}
			into = sub
		}
		into[parts[len(parts)-1]] = v
	}
	return m
}

type stringer struct{}

func (stringer) String() string { return "a stringer" }

// TestTextLayout pins the layout docs/operations.md shows, which is
// tint's without colour: a reader sees no change when output leaves the
// terminal.
func TestTextLayout(t *testing.T) {
	when := time.Date(2026, 12, 2, 22, 5, 14, 123456789, time.UTC)
	attrs := []slog.Attr{
		slog.String("queue_id", ""),
		slog.String("client", "203.0.113.9"),
		slog.String("recipient", "bob@example.com"),
		slog.String("action", "550 5.1.1 User unknown"),
		slog.Bool("cached", false),
		slog.Duration("duration", 3100*time.Microsecond),
		slog.Int("reply_code", 550),
		slog.String("reply", "quote \" and \x00 and é"),
		slog.Float64("ratio", 0.5),
		slog.Any("err", errors.New("dial tcp: refused")),
		slog.Any("thing", stringer{}),
		slog.Time("verified", when),
	}
	var ours, theirs bytes.Buffer
	for _, l := range []struct {
		h   slog.Handler
		out *bytes.Buffer
	}{
		{New(&ours, Text, slog.LevelDebug), &ours},
		{tint.NewTextHandler(&theirs, &tint.Options{Level: slog.LevelDebug, NoColor: true, TimeFormat: time.RFC3339Nano}), &theirs},
	} {
		for _, lv := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError, slog.LevelInfo + 2} {
			r := slog.NewRecord(when, lv, "verdict", 0)
			r.AddAttrs(attrs...)
			if err := l.h.Handle(context.Background(), r); err != nil {
				t.Fatal(err)
			}
		}
	}
	if ours.String() != theirs.String() {
		t.Errorf("text layout differs from tint's:\nours:\n%s\ntint:\n%s", ours.String(), theirs.String())
	}
	want := `2026-12-02T22:05:14.123456789Z INF verdict queue_id="" client=203.0.113.9 recipient=bob@example.com action="550 5.1.1 User unknown" cached=false duration=3.1ms reply_code=550 reply="quote \" and \x00 and é" ratio=0.5 err="dial tcp: refused" thing="a stringer" verified=2026-12-02T22:05:14.123Z`
	if got := strings.Split(ours.String(), "\n")[1]; got != want {
		t.Errorf("info line:\ngot  %s\nwant %s", got, want)
	}
}

// TestJSONLikeSlog: the JSON layout carries what log/slog's JSON handler
// does, value for value.
func TestJSONLikeSlog(t *testing.T) {
	when := time.Date(2026, 12, 2, 22, 5, 14, 123456789, time.UTC)
	var ours, theirs bytes.Buffer
	for _, h := range []slog.Handler{New(&ours, JSON, nil), slog.NewJSONHandler(&theirs, nil)} {
		l := slog.New(h).With("node", "gw1").WithGroup("req")
		r := slog.NewRecord(when, slog.LevelWarn, "backend reply \"odd\"\n", 0)
		r.AddAttrs(slog.String("reply", "550 <a>\u2028\x01\xff"), slog.Duration("d", time.Second),
			slog.Any("err", errors.New("boom")), slog.Group("g", slog.Int("n", -1), slog.Bool("ok", true)),
			slog.Any("list", []int{1, 2}))
		if err := l.Handler().Handle(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	var a, b map[string]any
	if err := json.Unmarshal(ours.Bytes(), &a); err != nil {
		t.Fatalf("%s: %v", ours.String(), err)
	}
	if err := json.Unmarshal(theirs.Bytes(), &b); err != nil {
		t.Fatal(err)
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Errorf("JSON differs from log/slog's:\nours:  %s\nslog:  %s", ours.String(), theirs.String())
	}
}

func TestLevel(t *testing.T) {
	var lv slog.LevelVar
	lv.Set(slog.LevelWarn)
	var buf bytes.Buffer
	l := slog.New(New(&buf, Text, &lv))
	l.Info("hidden")
	lv.Set(slog.LevelDebug)
	l.Debug("shown")
	if got := buf.String(); strings.Contains(got, "hidden") || !strings.Contains(got, "DBG shown") {
		t.Errorf("level not followed: %q", got)
	}
}

// verdictAttrs is the verdict line's shape (internal/daemon logVerdict).
func verdictAttrs() []slog.Attr {
	return []slog.Attr{
		slog.String("queue_id", ""), slog.String("client", "192.0.2.1"),
		slog.String("sender", "someone@example.org"), slog.String("recipient", "user1@example.test"),
		slog.String("verdict", "valid"), slog.Bool("cached", true), slog.String("action", "DUNNO"),
		slog.String("route", "example.test"), slog.String("server", "127.0.0.1:2525"),
		slog.Duration("duration", 3*time.Microsecond),
	}
}

// BenchmarkVerdictLine formats a verdict line with each candidate handler,
// side by side: ours against log/slog's and tint's.
func BenchmarkVerdictLine(b *testing.B) {
	for _, c := range []struct {
		name string
		h    slog.Handler
	}{
		{"logline-text", New(io.Discard, Text, nil)},
		{"logline-json", New(io.Discard, JSON, nil)},
		{"slog-text", slog.NewTextHandler(io.Discard, nil)},
		{"slog-json", slog.NewJSONHandler(io.Discard, nil)},
		{"tint", tint.NewTextHandler(io.Discard, &tint.Options{NoColor: true, TimeFormat: time.RFC3339Nano})},
	} {
		b.Run(c.name, func(b *testing.B) {
			l := slog.New(c.h)
			as := verdictAttrs()
			b.ReportAllocs()
			for b.Loop() {
				l.LogAttrs(context.Background(), slog.LevelInfo, "verdict", as...)
			}
		})
	}
}
