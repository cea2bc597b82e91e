package config

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The manual pages the Debian package installs.
const (
	manConfig   = "../../docs/man/calloutd.toml.5"
	manCommands = "../../docs/man/calloutd.8"
)

// manPending are keys calloutd.toml(5) documents before the code has them;
// the check that every documented key exists lets them through. Once a key
// lands in Config it is required like any other, and may leave this list.
var manPending = map[string]bool{}

// manEntry is one ".It Cm key ..." line of calloutd.toml(5).
type manEntry struct {
	line     int
	key      string // "callout.helo_name", "route.kind", "listen"
	typ      string // "duration", "list of strings"; "" when not given
	def      string // the default as TOML ("\"10s\"", "4"); "" when not literal
	required bool
}

// manKeyRE is a key as the entries name it.
var manKeyRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// parseManKeys reads the key entries of calloutd.toml(5): each ".Ss" heading
// that names a table ("Top level", "[log]", "[cache.redis]", "[[route]]")
// starts its keys, and every ".It Cm a , b Pq type , default ..." line in it
// defines the keys a and b. Any other ".Sh" or ".Ss" ends the table.
func parseManKeys(t *testing.T, data []byte) []manEntry {
	t.Helper()
	var entries []manEntry
	table, inTable := "", false
	for i, line := range strings.Split(string(data), "\n") {
		n := i + 1
		switch {
		case strings.HasPrefix(line, ".Sh "):
			inTable = false
		case strings.HasPrefix(line, ".Ss "):
			title := strings.TrimSpace(strings.TrimPrefix(line, ".Ss "))
			switch {
			case title == "Top level":
				table, inTable = "", true
			case strings.HasPrefix(title, "[") && strings.HasSuffix(title, "]"):
				table, inTable = strings.Trim(title, "[]"), true
			default:
				inTable = false
			}
		case strings.HasPrefix(line, ".It Cm ") && inTable:
			toks := manTokens(strings.TrimPrefix(line, ".It Cm "))
			var keys []string
			j := 0
			for ; j < len(toks); j++ {
				if toks[j] == "," {
					continue
				}
				if !manKeyRE.MatchString(toks[j]) {
					break
				}
				keys = append(keys, toks[j])
			}
			if len(keys) == 0 {
				t.Errorf("%s:%d: .It Cm without a key: %q", manConfig, n, line)
				continue
			}
			var e manEntry
			if rest := toks[j:]; len(rest) > 0 {
				if rest[0] != "Pq" {
					t.Errorf("%s:%d: after the key, want \"Pq type , default ...\", got %q", manConfig, n, strings.Join(rest, " "))
					continue
				}
				e = parseManPq(t, n, rest[1:])
			}
			for _, k := range keys {
				e.line, e.key = n, k
				if table != "" {
					e.key = table + "." + k
				}
				entries = append(entries, e)
			}
		}
	}
	return entries
}

// parseManPq reads "type , default Qq 10s", "type , default Li 4",
// "type , default: the host name" or "type , required".
func parseManPq(t *testing.T, n int, toks []string) manEntry {
	t.Helper()
	var e manEntry
	comma := slices.Index(toks, ",")
	if comma < 1 {
		t.Errorf("%s:%d: want \"Pq type , default ...\" or \"Pq type , required\"", manConfig, n)
		return e
	}
	e.typ = strings.Join(toks[:comma], " ")
	rest := toks[comma+1:]
	switch {
	case len(rest) == 1 && rest[0] == "required":
		e.required = true
	case len(rest) >= 1 && rest[0] == "default:":
		// Not a value: "the host name", "policy.dry_run".
	case len(rest) == 3 && rest[0] == "default" && rest[1] == "Qq":
		e.def = strconv.Quote(manUnescape(rest[2]))
	case len(rest) == 2 && rest[0] == "default" && rest[1] == "Qq":
		e.def = `""`
	case len(rest) == 3 && rest[0] == "default" && rest[1] == "Li":
		e.def = manUnescape(rest[2])
	case len(rest) >= 2 && rest[0] == "default" && rest[1] == "Dq":
		// Words, not a TOML value: "route[N]".
	default:
		t.Errorf("%s:%d: want \"default Qq VALUE\", \"default Li VALUE\", \"default: words\" or \"required\" after the type, got %q",
			manConfig, n, strings.Join(rest, " "))
	}
	return e
}

// manTokens splits the arguments of a macro line as roff does: by spaces,
// with "quoted arguments" kept whole (without their quotes).
func manTokens(s string) []string {
	var toks []string
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		if s[0] == '"' {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				end = len(s) - 1
			}
			toks = append(toks, s[1:1+end])
			s = s[min(len(s), end+2):]
			continue
		}
		end := strings.IndexByte(s, ' ')
		if end < 0 {
			end = len(s)
		}
		toks = append(toks, s[:end])
		s = s[end:]
	}
	return toks
}

// manUnescape turns the escapes the pages use into text.
func manUnescape(s string) string {
	return strings.NewReplacer(`\(dq`, `"`, `\&`, "", `\e`, `\`).Replace(s)
}

// manTypes are the words of calloutd.toml(5) for the Go types of keys.
var manTypes = map[string]reflect.Type{
	"string":                       reflect.TypeFor[string](),
	"boolean":                      reflect.TypeFor[bool](),
	"integer":                      reflect.TypeFor[int](),
	"duration":                     reflect.TypeFor[Duration](),
	"list of strings":              reflect.TypeFor[[]string](),
	"address or list of addresses": reflect.TypeFor[AddrList](),
}

// keyTypes maps each key of structKeys to its Go type (pointers of route
// overrides removed).
func keyTypes(prefix string, t reflect.Type, out map[string]reflect.Type) {
	for f := range t.Fields() {
		name := f.Tag.Get("toml")
		if name == "-" || !f.IsExported() {
			continue
		}
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		st := ft
		if st.Kind() == reflect.Slice && st.Elem().Kind() == reflect.Struct {
			st = st.Elem()
		}
		if st.Kind() == reflect.Struct && st != reflect.TypeFor[Duration]() {
			keyTypes(prefix+name+".", st, out)
			continue
		}
		out[prefix+name] = ft
	}
}

// Every key Config knows has an entry in calloutd.toml(5) under its table,
// with its type, and its default when the page writes one as a value; no
// entry names a key Config does not know (but for manPending).
func TestManPageShowsEveryKey(t *testing.T) {
	data, err := os.ReadFile(manConfig)
	if err != nil {
		t.Fatal(err)
	}
	entries := parseManKeys(t, data)
	documented := map[string]manEntry{}
	for _, e := range entries {
		if prev, dup := documented[e.key]; dup {
			t.Errorf("%s:%d: %s is documented twice (also line %d)", manConfig, e.line, e.key, prev.line)
		}
		documented[e.key] = e
	}
	types := map[string]reflect.Type{}
	keyTypes("", reflect.TypeFor[Config](), types)
	want := structKeys("", reflect.TypeFor[Config]())
	if len(want) != len(types) {
		t.Fatalf("structKeys found %d keys, keyTypes %d: the two walks disagree", len(want), len(types))
	}
	for _, k := range want {
		if _, ok := documented[k]; !ok {
			t.Errorf("%s: key %s has no \".It Cm %s\" entry under its table's .Ss heading", manConfig, k, k[strings.LastIndexByte(k, '.')+1:])
		}
	}
	for _, e := range entries {
		gt, known := types[e.key]
		if !known {
			if manPending[e.key] {
				t.Logf("%s:%d: %s is documented but not in Config yet (manPending)", manConfig, e.line, e.key)
			} else {
				t.Errorf("%s:%d: %s is documented but Config has no such key", manConfig, e.line, e.key)
			}
			continue
		}
		if e.typ != "" {
			if mt, ok := manTypes[e.typ]; !ok {
				t.Errorf("%s:%d: %s: unknown type %q (want one of the manTypes words)", manConfig, e.line, e.key, e.typ)
			} else if mt != gt {
				t.Errorf("%s:%d: %s: type %q is %v, but the key is %v", manConfig, e.line, e.key, e.typ, mt, gt)
			}
		}
		if e.def != "" {
			if err := checkManDefault(e.key, e.def); err != nil {
				t.Errorf("%s:%d: %s: documented default %s: %v", manConfig, e.line, e.key, e.def, err)
			}
		}
	}
	if len(entries) < len(want) {
		t.Errorf("%s: %d key entries found, want at least %d; has the page's layout changed?", manConfig, len(entries), len(want))
	}
}

// checkManDefault tells whether setting key to def (TOML) changes nothing:
// for a global key, against an empty file; for a route key, against a
// minimal route of the kind the key belongs to.
func checkManDefault(key, def string) error {
	table, name := "", key
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		table, name = key[:i], key[i+1:]
	}
	if table != "route" {
		header := ""
		if table != "" {
			header = "[" + table + "]\n"
		}
		return sameConfig("", header+name+" = "+def+"\n")
	}
	base := "[[route]]\ndomains = [\"example.com\"]\nservers = [\"127.0.0.1\"]\n"
	if strings.HasPrefix(name, "ldap_") {
		base = "[[route]]\ndomains = [\"example.com\"]\nkind = \"ldap\"\nldap_urls = [\"ldap://127.0.0.1\"]\nldap_base_dn = \"dc=example,dc=com\"\n"
	}
	return sameConfig(base, base+name+" = "+def+"\n")
}

// sameConfig parses both files and compares the results. A route override
// set in one file only (a pointer nil in the other) is compared through the
// route's effective settings alone, and empty lists equal absent ones.
func sameConfig(a, b string) error {
	ca, err := Parse("a.toml", []byte(a))
	if err != nil {
		return fmt.Errorf("without it: %v", err)
	}
	cb, err := Parse("b.toml", []byte(b))
	if err != nil {
		return fmt.Errorf("with it: %v", err)
	}
	for i := range min(len(ca.Routes), len(cb.Routes)) {
		normaliseRoutes(reflect.ValueOf(&ca.Routes[i]).Elem(), reflect.ValueOf(&cb.Routes[i]).Elem())
	}
	if d := fieldDiff("", reflect.ValueOf(*ca), reflect.ValueOf(*cb)); len(d) > 0 {
		return fmt.Errorf("it is not the default: setting it changes %s", strings.Join(d, "; "))
	}
	return nil
}

// fieldDiff names the fields in which a and b differ, with both values.
func fieldDiff(path string, a, b reflect.Value) []string {
	switch {
	case a.Kind() == reflect.Struct && a.Type() != reflect.TypeFor[netip.Addr]():
		var d []string
		for i := range a.NumField() {
			if !a.Type().Field(i).IsExported() {
				continue // where a value came from, not a setting
			}
			d = append(d, fieldDiff(path+"."+a.Type().Field(i).Name, a.Field(i), b.Field(i))...)
		}
		return d
	case a.Kind() == reflect.Pointer && !a.IsNil() && !b.IsNil():
		return fieldDiff(path, a.Elem(), b.Elem())
	case a.Kind() == reflect.Slice && a.Len() == b.Len() && a.Type().Elem().Kind() == reflect.Struct:
		var d []string
		for i := range a.Len() {
			d = append(d, fieldDiff(fmt.Sprintf("%s[%d]", path, i), a.Index(i), b.Index(i))...)
		}
		return d
	}
	if reflect.DeepEqual(a.Interface(), b.Interface()) {
		return nil
	}
	return []string{fmt.Sprintf("%s from %v to %v", strings.TrimPrefix(path, "."), a.Interface(), b.Interface())}
}

func normaliseRoutes(a, b reflect.Value) {
	for i := range a.NumField() {
		fa, fb := a.Field(i), b.Field(i)
		switch fa.Kind() {
		case reflect.Pointer:
			if fa.IsNil() != fb.IsNil() {
				fa.SetZero()
				fb.SetZero()
			}
		case reflect.Slice:
			if fa.Len() == 0 && fb.Len() == 0 {
				fa.SetZero()
				fb.SetZero()
			}
		}
	}
}

// The pages are clean for mandoc's linter at warning level: what Debian's
// lintian and man-db's checks would otherwise report after packaging.
func TestManPagesLint(t *testing.T) {
	mandoc, err := exec.LookPath("mandoc")
	if err != nil {
		msg := "mandoc is not installed, so the manual pages are not linted (Debian: apt-get install mandoc)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip("\n\n*** SKIPPED: " + msg + " ***\n")
	}
	for _, page := range []string{manCommands, manConfig} {
		var out bytes.Buffer
		cmd := exec.Command(mandoc, "-T", "lint", "-W", "warning", page)
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if err != nil || out.Len() > 0 {
			t.Errorf("mandoc -T lint -W warning %s: %v\n%s", page, err, out.String())
		}
	}
}
