package config

import (
	"bytes"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Masked is printed instead of a secret's value (a field tagged
// secret:"true": cache.redis.password, a route's ldap_bind_password). It
// is a valid TOML string, so the output still loads, but it is not the
// password: a file made from the output needs the real one put back.
const Masked = "<masked>"

// Print writes c as TOML that Load accepts, postconf-style: every key of
// every table, defaults filled in, in the order of the structs (which is
// that of contrib/calloutd.toml). Secrets are replaced by Masked.
//
// A [[route]] shows the keys it sets (or that Load filled in: name, kind,
// an LDAP route's ldap_filter and ldap_timeout); each key it inherits from
// [callout], [cache] or [policy] follows as a comment with the value it
// gets, "# helo_name = "gw.example.net"  (from [callout])", so that what a
// route does can be read off one table without changing what the output
// loads as.
func Print(w io.Writer, c *Config) error { return write(w, c, false) }

// PrintNonDefault is Print limited to what differs from Default, like
// postconf -n: a key equal to its default is left out, and so is a table
// with no such key. A [[route]] has no default to differ from: every route
// is printed, with the keys it sets itself, even to the value it would
// inherit (that pins it against a later change of [callout]), and the
// keys Load fills in only where they differ from what Load would fill in.
// The default configuration prints nothing.
func PrintNonDefault(w io.Writer, c *Config) error { return write(w, c, true) }

func write(w io.Writer, c *Config, nonDefault bool) error {
	// A password taken from the environment is not the file's: printed
	// as the file has it (""), the output loads as the same configuration
	// in the same environment.
	if c.Cache.Redis.passwordFromEnv || slices.ContainsFunc(c.Routes, func(r Route) bool { return r.ldapPasswordFromEnv }) {
		cc := *c
		if cc.Cache.Redis.passwordFromEnv {
			cc.Cache.Redis.Password = ""
		}
		cc.Routes = slices.Clone(c.Routes)
		for i := range cc.Routes {
			if cc.Routes[i].ldapPasswordFromEnv {
				cc.Routes[i].LDAPBindPassword = ""
			}
		}
		c = &cc
	}
	p := &printer{nonDefault: nonDefault}
	v := reflect.ValueOf(c).Elem()
	p.table("", v, reflect.ValueOf(Default()).Elem())
	for i := range c.Routes {
		p.route(c, i)
	}
	if p.err != nil {
		return p.err
	}
	_, err := w.Write(p.buf.Bytes())
	return err
}

type printer struct {
	buf        bytes.Buffer
	nonDefault bool
	err        error
}

// table prints the keys of the struct v under the header [name] ("" for
// the top level), then its sub-tables. def holds the defaults.
func (p *printer) table(name string, v, def reflect.Value) {
	var lines []string
	type sub struct {
		name   string
		v, def reflect.Value
	}
	var subs []sub
	for _, f := range fields(v.Type()) {
		fv, fd := v.Field(f.index), def.Field(f.index)
		if f.table {
			if f.typ.Kind() == reflect.Struct {
				subs = append(subs, sub{join(name, f.key), fv, fd})
			}
			continue // arrays of tables ([[route]]) are printed apart
		}
		if p.nonDefault && same(fv, fd) {
			continue
		}
		lines = append(lines, p.keyValue(f, fv))
	}
	if len(lines) > 0 || (name != "" && !p.nonDefault) {
		if name != "" {
			p.header("[" + name + "]")
		}
		for _, l := range lines {
			p.buf.WriteString(l + "\n")
		}
	}
	for _, s := range subs {
		p.table(s.name, s.v, s.def)
	}
}

// header starts a table, a blank line after whatever came before.
func (p *printer) header(h string) {
	if p.buf.Len() > 0 {
		p.buf.WriteString("\n")
	}
	p.buf.WriteString(h + "\n")
}

// route prints c.Routes[i] as a [[route]] table.
func (p *printer) route(c *Config, i int) {
	r := reflect.ValueOf(&c.Routes[i]).Elem()
	// What a key left out of the route is after Load.
	def := Route{Name: fmt.Sprintf("route[%d]", i), Kind: "smtp"}
	if c.Routes[i].Kind == "ldap" {
		timeout := DefaultLDAPTimeout
		def.LDAPFilter, def.LDAPTimeout = DefaultLDAPFilter, &timeout
	}
	base := reflect.ValueOf(def)
	if !p.nonDefault {
		base = reflect.ValueOf(Route{}) // name and kind are shown, filled in or not
	}
	p.header("[[route]]")
	var inherited []string
	for _, f := range fields(r.Type()) {
		fv := r.Field(f.index)
		if !same(fv, base.Field(f.index)) {
			p.buf.WriteString(p.keyValue(f, fv) + "\n")
			continue
		}
		if !p.nonDefault && fv.Kind() == reflect.Pointer {
			if l, ok := inheritedLine(c, f); ok {
				inherited = append(inherited, l)
			}
		}
	}
	for _, l := range inherited {
		p.buf.WriteString(l + "\n")
	}
}

// inheritedLine is the comment telling what a key a route leaves out
// takes from the global tables; false for a key that inherits nothing
// (ldap_timeout, on an SMTP route).
func inheritedLine(c *Config, f field) (string, bool) {
	for _, t := range []struct {
		name string
		v    reflect.Value
	}{
		{"callout", reflect.ValueOf(c.Callout)},
		{"cache", reflect.ValueOf(c.Cache)},
		{"policy", reflect.ValueOf(c.Policy)},
	} {
		for _, g := range fields(t.v.Type()) {
			if g.key == f.key && !g.secret {
				s, err := formatValue(t.v.Field(g.index))
				return fmt.Sprintf("# %s = %s  (from [%s])", f.key, s, t.name), err == nil
			}
		}
	}
	if f.key == "callout" {
		return "# callout = true  (default)", true
	}
	return "", false
}

func (p *printer) fail(err error) {
	if p.err == nil {
		p.err = err
	}
}

// keyValue formats "key = value" for a leaf field, its value masked if it
// is a secret.
func (p *printer) keyValue(f field, v reflect.Value) string {
	if f.secret && v.String() != "" {
		return f.key + " = " + quote(Masked)
	}
	s, err := formatValue(v)
	if err != nil {
		p.fail(fmt.Errorf("%s: %w", f.key, err))
	}
	return f.key + " = " + s
}

var (
	durationType = reflect.TypeFor[Duration]()
	addrListType = reflect.TypeFor[AddrList]()
)

// formatValue writes v as a TOML value. A nil pointer is never passed.
func formatValue(v reflect.Value) (string, error) {
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	switch {
	case v.Type() == durationType:
		return quote(FormatDuration(time.Duration(v.Int()))), nil
	case v.Type() == addrListType && v.Len() <= 1:
		// One address or none, as the example writes it.
		if v.Len() == 0 {
			return `""`, nil
		}
		return quote(v.Index(0).String()), nil
	}
	switch v.Kind() {
	case reflect.String:
		return quote(v.String()), nil
	case reflect.Bool:
		return strconv.FormatBool(v.Bool()), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10), nil
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			break
		}
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = quote(v.Index(i).String())
		}
		return "[" + strings.Join(parts, ", ") + "]", nil
	}
	return "", fmt.Errorf("cannot print a %s", v.Type())
}

// same tells whether a key's value equals its default; an empty list
// equals no list.
func same(a, b reflect.Value) bool {
	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() && b.IsNil()
		}
		return same(a.Elem(), b.Elem())
	case reflect.Slice:
		if a.Len() == 0 && b.Len() == 0 {
			return true
		}
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}

// field is a struct field that is a TOML key.
type field struct {
	index  int
	key    string
	typ    reflect.Type
	table  bool // a sub-table, or an array of tables
	secret bool
}

// fields lists t's TOML keys in declaration order.
func fields(t reflect.Type) []field {
	var out []field
	for i := range t.NumField() {
		f := t.Field(i)
		key := f.Tag.Get("toml")
		if key == "" || key == "-" {
			continue
		}
		ft := f.Type
		table := ft.Kind() == reflect.Struct ||
			ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct
		out = append(out, field{index: i, key: key, typ: ft, table: table, secret: f.Tag.Get("secret") == "true"})
	}
	return out
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// quote writes s as a TOML string: a literal string ('...') when s has
// backslashes and nothing a literal string cannot hold (regular
// expressions read better so), else a basic string with TOML's escapes.
func quote(s string) string {
	plain := !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\'' })
	if plain && strings.Contains(s, `\`) && utf8.ValidString(s) {
		return "'" + s + "'"
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// FormatDuration writes d the way the configuration does and
// ParseDuration reads: whole days from two days up as "7d", anything else
// in Go's syntax without zero units ("24h", "36h", "1m30s", "200ms", "0s").
func FormatDuration(d time.Duration) string {
	const day = 24 * time.Hour
	if d >= 2*day && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
