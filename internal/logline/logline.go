package logline

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// Format is the layout of a line.
type Format int

const (
	// Text: "2006-01-02T15:04:05.999999999Z07:00 INF msg key=value ...",
	// values quoted (Go syntax) when they hold spaces, '=', quotes or
	// anything unprintable.
	Text Format = iota
	// JSON: {"time":"...","level":"INFO","msg":"...","key":value,...}
	JSON
)

// Handler writes records to an io.Writer. Handlers derived with WithAttrs
// and WithGroup share the writer and its lock.
type Handler struct {
	w      io.Writer
	mu     *sync.Mutex
	level  slog.Leveler
	format Format
	pre    []byte   // attributes from WithAttrs, formatted (JSON: each after a comma), groups opened
	group  string   // text: key prefix "a.b."
	open   int      // JSON: groups opened in pre
	empty  bool     // JSON: the innermost group opened in pre has nothing in it yet
	groups []string // JSON: groups not opened yet (no attribute in them so far)
}

// New returns a handler writing records at level or above to w.
func New(w io.Writer, format Format, level slog.Leveler) *Handler {
	if level == nil {
		level = slog.LevelInfo
	}
	return &Handler{w: w, mu: new(sync.Mutex), level: level, format: format}
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

var buffers = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// maxPooled: a buffer grown by an unusual record is not kept.
const maxPooled = 16 << 10

// Handle implements slog.Handler.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	bp := buffers.Get().(*[]byte)
	b := (*bp)[:0]
	if h.format == JSON {
		b = h.appendJSON(b, &r)
	} else {
		b = h.appendText(b, &r)
	}
	h.mu.Lock()
	_, err := h.w.Write(b)
	h.mu.Unlock()
	if cap(b) <= maxPooled {
		*bp = b
		buffers.Put(bp)
	}
	return err
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return h
	}
	c := *h
	c.pre = append([]byte(nil), h.pre...)
	for _, a := range as {
		if c.format == JSON {
			if isEmpty(a) {
				continue
			}
			c.pre, c.empty = openGroups(c.pre, c.groups, c.empty)
			c.open += len(c.groups)
			c.groups = nil
			c.pre, c.empty = appendJSONAttr(c.pre, a, c.empty), false
		} else {
			c.pre = appendTextAttr(c.pre, c.group, a)
		}
	}
	return &c
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	if c.format == JSON {
		c.groups = append(h.groups[:len(h.groups):len(h.groups)], name)
	} else {
		c.group = h.group + name + "."
	}
	return &c
}

// isEmpty: an attribute log/slog's handlers leave out (no key and no
// value, or a group with nothing in it).
func isEmpty(a slog.Attr) bool {
	switch a.Value.Kind() {
	case slog.KindAny:
		return a.Key == "" && a.Value.Any() == nil
	case slog.KindGroup:
		return len(a.Value.Group()) == 0
	}
	return false
}

func levelText(l slog.Level) string {
	name, base := "DBG", slog.LevelDebug
	switch {
	case l >= slog.LevelError:
		name, base = "ERR", slog.LevelError
	case l >= slog.LevelWarn:
		name, base = "WRN", slog.LevelWarn
	case l >= slog.LevelInfo:
		name, base = "INF", slog.LevelInfo
	}
	if l == base {
		return name
	}
	return name + fmt.Sprintf("%+d", int(l-base))
}

func (h *Handler) appendText(b []byte, r *slog.Record) []byte {
	if !r.Time.IsZero() {
		b = r.Time.AppendFormat(b, time.RFC3339Nano)
		b = append(b, ' ')
	}
	b = append(b, levelText(r.Level)...)
	b = append(b, ' ')
	b = append(b, r.Message...)
	b = append(b, h.pre...)
	r.Attrs(func(a slog.Attr) bool {
		b = appendTextAttr(b, h.group, a)
		return true
	})
	return append(b, '\n')
}

// timeMillis is how tint writes a time value (the record's own time has
// nanoseconds).
const timeMillis = "2006-01-02T15:04:05.000Z07:00"

func appendTextAttr(b []byte, prefix string, a slog.Attr) []byte {
	if a.Value.Kind() == slog.KindLogValuer {
		a.Value = a.Value.Resolve()
	}
	if isEmpty(a) {
		return b
	}
	if a.Value.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range a.Value.Group() {
			b = appendTextAttr(b, p, g)
		}
		return b
	}
	b = append(b, ' ')
	if prefix == "" {
		b = appendTextString(b, a.Key)
	} else {
		b = appendTextString(b, prefix+a.Key)
	}
	b = append(b, '=')
	v := a.Value
	switch v.Kind() {
	case slog.KindString:
		return appendTextString(b, v.String())
	case slog.KindInt64:
		return strconv.AppendInt(b, v.Int64(), 10)
	case slog.KindUint64:
		return strconv.AppendUint(b, v.Uint64(), 10)
	case slog.KindFloat64:
		return strconv.AppendFloat(b, v.Float64(), 'g', -1, 64)
	case slog.KindBool:
		return strconv.AppendBool(b, v.Bool())
	case slog.KindDuration:
		return appendTextString(b, v.Duration().String())
	case slog.KindTime:
		return v.Time().AppendFormat(b, timeMillis)
	}
	if err, ok := v.Any().(error); ok {
		return appendTextString(b, err.Error())
	}
	return appendTextString(b, fmt.Sprint(v.Any()))
}

// appendTextString appends s, quoted when a reader could not split the
// line on spaces and '=' without it.
func appendTextString(b []byte, s string) []byte {
	if needsQuoting(s) {
		return strconv.AppendQuote(b, s)
	}
	return append(b, s...)
}

// quote marks the ASCII bytes a text value may not hold unquoted.
var quote = func() (q [utf8.RuneSelf]bool) {
	for c := range q {
		q[c] = c <= ' ' || c == '=' || c == '"' || c == 0x7f
	}
	return q
}()

func needsQuoting(s string) bool {
	if s == "" {
		return true
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if quote[c] {
				return true
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return true
		}
		i += n
	}
	return false
}

func (h *Handler) appendJSON(b []byte, r *slog.Record) []byte {
	b = append(b, '{')
	if !r.Time.IsZero() {
		b = append(b, `"time":"`...)
		b = r.Time.AppendFormat(b, time.RFC3339Nano)
		b = append(b, `",`...)
	}
	b = append(b, `"level":`...)
	b = appendJSONString(b, r.Level.String())
	b = append(b, `,"msg":`...)
	b = appendJSONString(b, r.Message)
	b = append(b, h.pre...)
	empty, open := h.empty, h.open
	r.Attrs(func(a slog.Attr) bool {
		if isEmpty(a) {
			return true
		}
		if open == h.open && len(h.groups) > 0 {
			b, empty = openGroups(b, h.groups, empty)
			open += len(h.groups)
		}
		b, empty = appendJSONAttr(b, a, empty), false
		return true
	})
	for range open {
		b = append(b, '}')
	}
	return append(b, '}', '\n')
}

// openGroups opens groups after what b holds (first: nothing in the
// innermost group so far).
func openGroups(b []byte, groups []string, first bool) ([]byte, bool) {
	for _, g := range groups {
		if !first {
			b = append(b, ',')
		}
		b = appendJSONString(b, g)
		b = append(b, ':', '{')
		first = true
	}
	return b, first
}

// appendJSONAttr appends ,"key":value (no comma when first).
func appendJSONAttr(b []byte, a slog.Attr, first bool) []byte {
	if a.Value.Kind() == slog.KindLogValuer {
		a.Value = a.Value.Resolve()
	}
	if isEmpty(a) {
		return b
	}
	if a.Value.Kind() == slog.KindGroup && a.Key == "" {
		for _, g := range a.Value.Group() {
			b = appendJSONAttr(b, g, first)
			first = first && isEmpty(g)
		}
		return b
	}
	if !first {
		b = append(b, ',')
	}
	b = appendJSONString(b, a.Key)
	b = append(b, ':')
	v := a.Value
	switch v.Kind() {
	case slog.KindString:
		return appendJSONString(b, v.String())
	case slog.KindInt64:
		return strconv.AppendInt(b, v.Int64(), 10)
	case slog.KindUint64:
		return strconv.AppendUint(b, v.Uint64(), 10)
	case slog.KindFloat64:
		return strconv.AppendFloat(b, v.Float64(), 'g', -1, 64)
	case slog.KindBool:
		return strconv.AppendBool(b, v.Bool())
	case slog.KindDuration:
		return strconv.AppendInt(b, int64(v.Duration()), 10) // nanoseconds, as log/slog
	case slog.KindTime:
		b = append(b, '"')
		b = v.Time().AppendFormat(b, time.RFC3339Nano)
		return append(b, '"')
	case slog.KindGroup:
		b = append(b, '{')
		first := true
		for _, g := range v.Group() {
			b = appendJSONAttr(b, g, first)
			first = first && isEmpty(g)
		}
		return append(b, '}')
	}
	if err, ok := v.Any().(error); ok {
		return appendJSONString(b, err.Error())
	}
	j, err := json.Marshal(v.Any())
	if err != nil {
		return appendJSONString(b, fmt.Sprintf("!ERROR:%v", err))
	}
	return append(b, j...)
}

const hex = "0123456789abcdef"

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes
// U+FFFD, control characters and U+2028/U+2029 are escaped.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return append(b, '"')
}
