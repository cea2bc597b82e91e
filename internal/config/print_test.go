package config

import (
	"bytes"
	"flag"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func printed(t *testing.T, c *Config, nonDefault bool) string {
	t.Helper()
	var b bytes.Buffer
	pr := Print
	if nonDefault {
		pr = PrintNonDefault
	}
	if err := pr(&b, c); err != nil {
		t.Fatalf("print: %v", err)
	}
	return b.String()
}

// The example configuration, printed whole and with -n, is exactly the
// golden files (go test -update rewrites them; read the diff).
func TestPrintExample(t *testing.T) {
	c, err := Load(example)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []struct {
		file       string
		nonDefault bool
	}{
		{"testdata/example.print.toml", false},
		{"testdata/example.print-n.toml", true},
	} {
		got := printed(t, c, g.nonDefault)
		if *update {
			if err := os.WriteFile(g.file, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(g.file)
		if err != nil {
			t.Fatal(err)
		}
		if got != string(want) {
			t.Errorf("printed example differs from %s:\n%s", g.file, got)
		}
	}
}

// -n prints what differs from the defaults, table by table, and every
// route with the keys it sets.
func TestPrintNonDefault(t *testing.T) {
	tests := []struct {
		name, toml, want string
	}{
		{"empty file", "", ""},
		{"defaults written out", "[log]\nlevel = \"info\"\n[cache]\nstore = \"memory\"\n[cache.redis]\ndb = 0\n", ""},
		{"top-level key", "metrics_listen = \"\"\n", "metrics_listen = \"\"\n"},
		{
			"only the table with a difference",
			"[log]\nlevel = \"info\"\n[callout]\nhelo_name = \"gw.example.net\"\nrequest_timeout = \"20s\"\n",
			"[callout]\nhelo_name = \"gw.example.net\"\nrequest_timeout = \"20s\"\n",
		},
		{
			"sub-table without its parent",
			"[cache.redis]\naddrs = [\"10.0.0.1:6379\", \"10.0.0.2:6379\"]\n",
			"[cache.redis]\naddrs = [\"10.0.0.1:6379\", \"10.0.0.2:6379\"]\n",
		},
		{
			"durations as the file writes them",
			"[cache]\npositive_ttl = \"168h\"\nnegative_ttl = \"90m\"\n[stats]\nwindow = \"0s\"\n",
			"[cache]\npositive_ttl = \"7d\"\nnegative_ttl = \"1h30m\"\n\n[stats]\nwindow = \"0s\"\n",
		},
		{
			"a route: its own keys only, normalised",
			"[callout]\nhelo_name = \"gw.example.net\"\n" +
				route(`domains = ["Example.COM."]`, `servers = ["10.0.0.5"]`, `helo_name = "gw.example.net"`, `negative_ttl = "10m"`),
			"[callout]\nhelo_name = \"gw.example.net\"\n\n[[route]]\ndomains = [\"example.com\"]\nservers = [\"10.0.0.5:25\"]\n" +
				"helo_name = \"gw.example.net\"\nnegative_ttl = \"10m\"\n",
		},
		{
			"a route name that is the default one is left out",
			route(`name = "route[0]"`, `domains = ["example.com"]`, `servers = ["10.0.0.5"]`, `kind = "smtp"`) +
				route(`name = "second"`, `domains = ["example.org"]`, `servers = ["mx:example.org"]`),
			"[[route]]\ndomains = [\"example.com\"]\nservers = [\"10.0.0.5:25\"]\n\n" +
				"[[route]]\nname = \"second\"\ndomains = [\"example.org\"]\nservers = [\"mx:example.org\"]\n",
		},
		{
			"an LDAP route: filter and timeout only when not the defaults",
			route(`name = "ad"`, `domains = ["corp.example"]`, `kind = "ldap"`, `ldap_urls = ["ldaps://dc1.corp.example/"]`,
				`ldap_base_dn = "dc=corp,dc=example"`, `ldap_filter = "(mail=%s)"`, `ldap_timeout = "5s"`),
			"[[route]]\nname = \"ad\"\ndomains = [\"corp.example\"]\nkind = \"ldap\"\nldap_urls = [\"ldaps://dc1.corp.example\"]\n" +
				"ldap_base_dn = \"dc=corp,dc=example\"\nldap_timeout = \"5s\"\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("calloutd.toml", []byte(tt.toml))
			if err != nil {
				t.Fatal(err)
			}
			if got := printed(t, c, true); got != tt.want {
				t.Errorf("PrintNonDefault of %q:\ngot  %q\nwant %q", tt.toml, got, tt.want)
			}
		})
	}
}

func TestPrintNonDefaultOfDefault(t *testing.T) {
	if got := printed(t, Default(), true); got != "" {
		t.Errorf("PrintNonDefault(Default()) = %q, want nothing", got)
	}
}

// Printed whole or with -n, a configuration loads as exactly itself.
func TestPrintRoundTrip(t *testing.T) {
	t.Setenv(PasswordEnv, "") // no password from the environment
	tests := map[string]string{
		"default": "",
		"example": "",
		"everything set": `listen = ["127.0.0.1:10040", "unix:/run/calloutd/policy.sock", "[::1]:10040"]
metrics_listen = ""
admin_socket = ""
[log]
level = "debug"
format = "json"
file = "/var/log/calloutd/calloutd.log"
cached_dunno = true
[policy]
trusted_networks = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]
skip_authenticated = false
dry_run = true
[harvest]
max_unknown = 20
window = "1h"
action = "defer"
ipv4_prefix = 24
ipv6_prefix = 48
[callout]
helo_name = "gw.example.net"
mail_from = "probe sender@example.net"
request_timeout = "1m30s"
probe_catchall = true
catchall_ttl = "36h"
tls = "required"
tls_verify = true
tls_server_name = "mail.example.net"
tls_ca_file = "/etc/ssl/ca \"quoted\".pem"
recipient_delimiter = "+-"
source_address = ["127.0.0.1", "::1"]
pool_size = 0
[cache]
store = "redis"
positive_refresh = "0s"
[cache.redis]
addrs = ["10.0.0.20:6379", "10.0.0.21:6379"]
master_name = "calloutd"
username = "calloutd"
key_prefix = "gw:"
tls = true
[stats]
window = "400d"
[dns]
resolver = "127.0.0.53:53"
timeout = "500ms"
[[route]]
name = "m365"
domains = ["example.com", ".example.com", "bücher.example"]
servers = ["mx:example-com.mail.protection.outlook.com", "[2001:db8::5]:2525"]
mail_from = ""
source_address = "127.0.0.1"
unknown_replies = ['^550 5\.7\.1 .*Recipient not found', "it's \\d+"]
ignore_replies = ["tab\there"]
dry_run = false
callout = true
[[route]]
domains = ["legacy.example"]
recipients_file = "/etc/calloutd/legacy.txt"
callout = false
[[route]]
name = "ad"
domains = ["corp.example"]
kind = "ldap"
ldap_urls = ["ldap://dc1.corp.example", "ldaps://dc2.corp.example:636"]
ldap_starttls = true
ldap_ca_file = "/etc/calloutd/ad-ca.pem"
ldap_base_dn = "dc=corp,dc=example"
ldap_filter = "(|(mail=%s)(proxyAddresses=smtp:%s))"
ldap_timeout = "10s"
request_timeout = "5s"
`,
	}
	for name, text := range tests {
		t.Run(name, func(t *testing.T) {
			var c *Config
			var err error
			if name == "example" {
				c, err = Load(example)
			} else {
				c, err = Parse("calloutd.toml", []byte(text))
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, nonDefault := range []bool{false, true} {
				out := printed(t, c, nonDefault)
				back, err := Parse("printed.toml", []byte(out))
				if err != nil {
					t.Fatalf("printed (-n %v) does not load: %v\n%s", nonDefault, err, out)
				}
				if !reflect.DeepEqual(back, c) {
					t.Errorf("printed (-n %v) loads as another configuration:\ngot  %+v\nwant %+v\n%s", nonDefault, back, c, out)
				}
			}
		})
	}
}

// No secret is ever printed, from the file or from the environment, and
// the output says it was masked.
func TestPrintMasksSecrets(t *testing.T) {
	t.Setenv(PasswordEnv, "redis-env-s3cret")
	t.Setenv(LDAPPasswordEnv("dir2"), "ldap-env-s3cret")
	c, err := Parse("calloutd.toml", []byte(`[cache]
store = "redis"
[cache.redis]
password = "redis-file-s3cret"
`+route(`name = "dir"`, `domains = ["a.example"]`, `kind = "ldap"`, `ldap_urls = ["ldap://dc1"]`, `ldap_base_dn = "dc=a"`,
		`ldap_bind_dn = "cn=calloutd,dc=a"`, `ldap_bind_password = "ldap-file-s3cret"`)+
		route(`name = "dir2"`, `domains = ["b.example"]`, `kind = "ldap"`, `ldap_urls = ["ldap://dc1"]`, `ldap_base_dn = "dc=b"`,
			`ldap_bind_dn = "cn=calloutd,dc=b"`)))
	if err != nil {
		t.Fatal(err)
	}
	if c.Routes[1].LDAPBindPassword != "ldap-env-s3cret" {
		t.Fatalf("the environment's LDAP password was not loaded: %q", c.Routes[1].LDAPBindPassword)
	}
	for _, nonDefault := range []bool{false, true} {
		out := printed(t, c, nonDefault)
		if strings.Contains(out, "s3cret") {
			t.Errorf("-n %v: a secret is printed:\n%s", nonDefault, out)
		}
		for _, want := range []string{
			"\npassword = \"<masked>\"\n",
			"\nldap_bind_dn = \"cn=calloutd,dc=a\"\nldap_bind_password = \"<masked>\"\n",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("-n %v: output lacks %q:\n%s", nonDefault, want, out)
			}
		}
		// dir2's password is the environment's: the file has none, and
		// neither has the output, which loads as the same configuration.
		if strings.Contains(out, "dc=b\"\nldap_bind_password") {
			t.Errorf("-n %v: the environment's LDAP password is printed as the file's:\n%s", nonDefault, out)
		}
	}
	// The Redis password from the environment, with none in the file.
	c, err = Parse("calloutd.toml", []byte("[cache]\nstore = \"redis\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if out := printed(t, c, true); out != "[cache]\nstore = \"redis\"\n" {
		t.Errorf("-n with the password from the environment: %q", out)
	}
	back, err := Parse("printed.toml", []byte(printed(t, c, false)))
	if err != nil || back.Cache.Redis.Password != "redis-env-s3cret" {
		t.Errorf("printed with the password from the environment: loads with password %q (%v), want the environment's", back.Cache.Redis.Password, err)
	}
}

// Every key that looks like it holds a secret is tagged as one, so a key
// added later cannot be printed in clear by accident.
func TestSecretsTagged(t *testing.T) {
	looksSecret := regexp.MustCompile(`password|passwd|secret|credential|token|private`)
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for _, f := range fields(typ) {
			ft := f.typ
			if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(prefix+f.key+".", ft)
				continue
			}
			if looksSecret.MatchString(f.key) != f.secret {
				t.Errorf("%s%s: secret tag %v, want %v", prefix, f.key, f.secret, !f.secret)
			}
		}
	}
	walk("", reflect.TypeFor[Config]())
}

// The printed keys come in the order of the example configuration, table
// by table.
func TestPrintOrderIsTheExample(t *testing.T) {
	data, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load(example)
	if err != nil {
		t.Fatal(err)
	}
	// Keys of the global tables, in order, as "table.key".
	keys := func(text string) []string {
		var out []string
		table := ""
		key := regexp.MustCompile(`^([a-z0-9_]+) = `)
		for _, line := range strings.Split(text, "\n") {
			switch {
			case strings.HasPrefix(line, "[[route]]"):
				return out
			case strings.HasPrefix(line, "["):
				table = strings.Trim(line, "[] ")
				table, _, _ = strings.Cut(table, "]")
			case key.MatchString(line):
				out = append(out, table+"."+key.FindStringSubmatch(line)[1])
			}
		}
		return out
	}
	got, want := keys(printed(t, c, false)), keys(string(data))
	if !slices.Equal(got, want) {
		t.Errorf("key order:\ngot  %v\nwant %v", got, want)
	}
	if len(want) < 50 {
		t.Errorf("found %d keys in the example's global tables; is the test reading it right?", len(want))
	}
}

func TestFormatDuration(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{200 * time.Millisecond, "200ms"},
		{90 * time.Second, "1m30s"},
		{10 * time.Minute, "10m"},
		{time.Hour, "1h"},
		{90 * time.Minute, "1h30m"},
		{time.Hour + time.Second, "1h0m1s"},
		{24 * time.Hour, "24h"},
		{36 * time.Hour, "36h"},
		{48 * time.Hour, "2d"},
		{30 * 24 * time.Hour, "30d"},
		{49 * time.Hour, "49h"},
	} {
		got := FormatDuration(tt.d)
		back, err := ParseDuration(got)
		if got != tt.want || err != nil || back != tt.d {
			t.Errorf("FormatDuration(%v) = %q (parsed back: %v, %v); want %q", tt.d, got, back, err, tt.want)
		}
	}
}
