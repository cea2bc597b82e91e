package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

const example = "../../contrib/calloutd.toml"

// The shipped example parses and says what the documentation says: the
// values its comments promise.
func TestExampleConfig(t *testing.T) {
	got, err := Load(example)
	if err != nil {
		t.Fatalf("Load(%s): %v", example, err)
	}
	want := &Config{
		Listen:        []string{"127.0.0.1:10040"},
		MetricsListen: "127.0.0.1:10041",
		AdminSocket:   "/run/calloutd/admin.sock",
		Log:           Log{Level: "info", Format: "text", File: ""},
		Policy:        Policy{SkipAuthenticated: true},
		Harvest:       Harvest{Window: Duration(10 * time.Minute), Action: "reject", IPv4Prefix: 32, IPv6Prefix: 64},
		Stats:         Stats{Window: Duration(30 * 24 * time.Hour)},
		DNS:           DNS{Timeout: Duration(2 * time.Second)},
		Learn:         Learn{LearnedTTL: Duration(72 * time.Hour)},
		Callout: Callout{
			HeloName:                "gateway.example.net",
			MailFrom:                "",
			ConnectTimeout:          Duration(10 * time.Second),
			CommandTimeout:          Duration(10 * time.Second),
			RequestTimeout:          Duration(30 * time.Second),
			UnreachableAction:       "dunno",
			TempfailAction:          "defer",
			CatchallTTL:             Duration(24 * time.Hour),
			TLS:                     "opportunistic",
			PoolSize:                4,
			MaxConnectionsPerServer: 10,
			PoolIdleTimeout:         Duration(30 * time.Second),
			MaxSessionAge:           Duration(5 * time.Minute),
			SessionMaxErrors:        8,
			SessionMaxRecipients:    900,
		},
		Cache: Cache{
			Store:           "memory",
			MaxEntries:      1_000_000,
			PositiveTTL:     Duration(24 * time.Hour),
			NegativeTTL:     Duration(2 * time.Hour),
			TempfailTTL:     Duration(time.Minute),
			PositiveRefresh: Duration(time.Hour),
			Redis: Redis{
				Addrs:       []string{"127.0.0.1:6379"},
				KeyPrefix:   "calloutd:",
				DialTimeout: Duration(time.Second),
				ReadTimeout: Duration(200 * time.Millisecond),
			},
		},
	}
	routes := got.Routes
	got.Routes = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load(%s):\ngot  %+v\nwant %+v", example, got, want)
	}
	if len(routes) != 3 || routes[0].Name != "mailstore" || routes[1].Name != "legacy" || routes[2].Name != "directory" || routes[2].Kind != "ldap" {
		t.Fatalf("routes: %+v", routes)
	}
	// The first route takes every setting from [callout] and [cache].
	if e := routes[0].Effective; !reflect.DeepEqual(e.Callout, want.Callout) || e.PositiveTTL != want.Cache.PositiveTTL ||
		e.NegativeTTL != want.Cache.NegativeTTL || e.TempfailTTL != want.Cache.TempfailTTL || e.Rules != nil {
		t.Errorf("route mailstore: effective %+v, want the global settings", e)
	}
	e := routes[1].Effective
	wantCo := Callout{HeloName: "gateway.example.net", MailFrom: "postmaster@gateway.example.net",
		ConnectTimeout: Duration(5 * time.Second), CommandTimeout: Duration(5 * time.Second), RequestTimeout: Duration(15 * time.Second),
		UnreachableAction: "dunno", TempfailAction: "dunno", RecipientDelimiter: "+", ProbeCatchall: true, CatchallTTL: Duration(12 * time.Hour), TLS: "required", TLSVerify: true, TLSServerName: "mailstore.example.com",
		PoolSize: 4, MaxConnectionsPerServer: 10, PoolIdleTimeout: Duration(30 * time.Second), MaxSessionAge: Duration(5 * time.Minute),
		SessionMaxErrors: 8, SessionMaxRecipients: 900}
	if !reflect.DeepEqual(e.Callout, wantCo) || e.PositiveTTL != Duration(7*24*time.Hour) || e.NegativeTTL != Duration(30*time.Minute) || e.TempfailTTL != Duration(time.Minute) {
		t.Errorf("route legacy: effective %+v", e)
	}
	if e.Rules == nil || len(e.Rules.Unknown) != 1 || len(e.Rules.Ignore) != 1 {
		t.Errorf("route legacy: rules %+v", e.Rules)
	}
}

// Per-route keys override the global ones for that route only, and are
// checked like them, with errors naming the route.
func TestRouteSettings(t *testing.T) {
	const base = "[callout]\nhelo_name = \"gw.example.net\"\nmail_from = \"v@gw.example.net\"\ntempfail_action = \"defer\"\n" +
		"[cache]\nnegative_ttl = \"2h\"\n"
	c, err := Parse("t.toml", []byte(base+`
[[route]]
name = "m365"
domains = ["example.com"]
servers = ["127.0.0.1:2525"]
mail_from = ""
tempfail_action = "dunno"
negative_ttl = "10m"
unknown_replies = ['^550 5\.7\.1 .*Recipient not found']

[[route]]
domains = ["example.org"]
servers = ["127.0.0.1:2526"]
`))
	if err != nil {
		t.Fatal(err)
	}
	m365, other := c.Routes[0].Effective, c.Routes[1].Effective
	if m365.Callout.MailFrom != "" || m365.Callout.TempfailAction != "dunno" || m365.NegativeTTL != Duration(10*time.Minute) ||
		m365.Callout.HeloName != "gw.example.net" {
		t.Errorf("m365: %+v", m365)
	}
	if other.Callout.MailFrom != "v@gw.example.net" || other.Callout.TempfailAction != "defer" || other.NegativeTTL != Duration(2*time.Hour) {
		t.Errorf("route[1]: %+v", other)
	}
	if c.Callout.TempfailAction != "defer" || c.Cache.NegativeTTL != Duration(2*time.Hour) {
		t.Errorf("a route's settings leaked into the global ones: %+v %+v", c.Callout, c.Cache)
	}
	if m365.Rules == nil || !m365.Rules.Unknown[0].MatchString("550 5.7.1 bob: Recipient not found") {
		t.Errorf("m365 rules: %+v", m365.Rules)
	}

	const route = "[[route]]\ndomains = [\"example.com\"]\nservers = [\"127.0.0.1\"]\n"
	for _, tc := range []struct{ toml, want string }{
		{route + `unknown_replies = ["ok", "(unclosed"]`, `t.toml: route[0].unknown_replies[1]: "(unclosed": missing closing )`},
		{route + `ignore_replies = ["a**"]`, `t.toml: route[0].ignore_replies[0]: "a**": invalid nested repetition operator`},
		{route + `tempfail_action = "reject"`, `t.toml: route[0].tempfail_action: "reject" is not one of dunno, defer`},
		{route + `unreachable_action = "x"`, `t.toml: route[0].unreachable_action: "x" is not one of dunno, defer`},
		{route + `request_timeout = "0s"`, `t.toml: route[0].request_timeout: must be greater than 0`},
		{route + `negative_ttl = "-1s"`, `t.toml: route[0].negative_ttl: must not be negative`},
		{route + `mail_from = "no-at-sign"`, `t.toml: route[0].mail_from: `},
		{route + `helo_name = "bad name"`, `t.toml: route[0].helo_name: `},
		{route + `command_timeout = "soon"`, `t.toml: route.command_timeout: invalid duration "soon" (examples: 90s, 10m, 2h, 7d)`},
		{route + `color = "red"`, `t.toml: unknown key route.color`},
	} {
		_, err := Parse("t.toml", []byte(tc.toml))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("Parse(%q):\ngot  %v\nwant %s", tc.toml, err, tc.want)
		}
	}
}

// The example's header says "Every key is shown with its default unless the
// comment says otherwise": only helo_name (the machine's name by default)
// and the routes (none by default) may differ from Default.
func TestExampleConfigShowsDefaults(t *testing.T) {
	got, err := Load(example)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Callout.HeloName = got.Callout.HeloName
	want.Routes = got.Routes
	if !reflect.DeepEqual(got, want) {
		t.Errorf("example differs from the defaults:\ngot  %+v\nwant %+v", got, want)
	}
}

// Every key Config knows appears in the example, so a new key cannot go
// undocumented, and no key appears there that Config does not know.
func TestExampleConfigShowsEveryKey(t *testing.T) {
	var doc map[string]any
	if _, err := toml.DecodeFile(example, &doc); err != nil {
		t.Fatal(err)
	}
	got := docKeys("", doc)
	want := structKeys("", reflect.TypeFor[Config]())
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("keys in %s:\ngot  %v\nwant %v", example, got, want)
	}
}

func docKeys(prefix string, m map[string]any) []string {
	var keys []string
	for k, v := range m {
		switch v := v.(type) {
		case map[string]any:
			keys = append(keys, docKeys(prefix+k+".", v)...)
		case []map[string]any: // array of tables: the union of their keys
			seen := map[string]bool{}
			for _, t := range v {
				for _, sub := range docKeys(prefix+k+".", t) {
					if !seen[sub] {
						seen[sub] = true
						keys = append(keys, sub)
					}
				}
			}
		default:
			keys = append(keys, prefix+k)
		}
	}
	return keys
}

func structKeys(prefix string, t reflect.Type) []string {
	var keys []string
	for f := range t.Fields() {
		name := f.Tag.Get("toml")
		if name == "-" || !f.IsExported() {
			continue
		}
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft != reflect.TypeFor[time.Time]() {
			keys = append(keys, structKeys(prefix+name+".", ft)...)
			continue
		}
		keys = append(keys, prefix+name)
	}
	return keys
}

func TestDefaults(t *testing.T) {
	d := Default()
	if d.Callout.HeloName == "" {
		t.Errorf("default helo_name: got empty, want the host name or localhost")
	}
	want := &Config{
		Listen:        []string{"127.0.0.1:10040"},
		MetricsListen: "127.0.0.1:10041",
		AdminSocket:   "/run/calloutd/admin.sock",
		Log:           Log{Level: "info", Format: "text"},
		Policy:        Policy{SkipAuthenticated: true},
		Harvest:       Harvest{Window: Duration(10 * time.Minute), Action: "reject", IPv4Prefix: 32, IPv6Prefix: 64},
		Stats:         Stats{Window: Duration(30 * 24 * time.Hour)},
		DNS:           DNS{Timeout: Duration(2 * time.Second)},
		Learn:         Learn{LearnedTTL: Duration(72 * time.Hour)},
		Callout: Callout{
			HeloName:                d.Callout.HeloName,
			ConnectTimeout:          Duration(10 * time.Second),
			CommandTimeout:          Duration(10 * time.Second),
			RequestTimeout:          Duration(30 * time.Second),
			UnreachableAction:       "dunno",
			TempfailAction:          "defer",
			CatchallTTL:             Duration(24 * time.Hour),
			TLS:                     "opportunistic",
			PoolSize:                4,
			MaxConnectionsPerServer: 10,
			PoolIdleTimeout:         Duration(30 * time.Second),
			MaxSessionAge:           Duration(5 * time.Minute),
			SessionMaxErrors:        8,
			SessionMaxRecipients:    900,
		},
		Cache: Cache{
			Store:           "memory",
			MaxEntries:      1_000_000,
			PositiveTTL:     Duration(24 * time.Hour),
			NegativeTTL:     Duration(2 * time.Hour),
			TempfailTTL:     Duration(time.Minute),
			PositiveRefresh: Duration(time.Hour),
			Redis: Redis{
				Addrs:       []string{"127.0.0.1:6379"},
				KeyPrefix:   "calloutd:",
				DialTimeout: Duration(time.Second),
				ReadTimeout: Duration(200 * time.Millisecond),
			},
		},
	}
	if !reflect.DeepEqual(d, want) {
		t.Errorf("Default():\ngot  %+v\nwant %+v", d, want)
	}

	tests := []struct {
		name string
		toml string
		edit func(c *Config) // what the file changes from Default
	}{
		{"empty file", "", func(*Config) {}},
		{"comments only", "# nothing here\n\n", func(*Config) {}},
		{"empty tables", "[log]\n[callout]\n[cache]\n", func(*Config) {}},
		{
			"one key of a table, the rest default",
			"[callout]\nconnect_timeout = \"5s\"\n",
			func(c *Config) { c.Callout.ConnectTimeout = Duration(5 * time.Second) },
		},
		{
			"listen replaces the default list",
			"listen = [\"127.0.0.1:1\", \"unix:/run/calloutd/policy.sock\"]\n",
			func(c *Config) { c.Listen = []string{"127.0.0.1:1", "unix:/run/calloutd/policy.sock"} },
		},
		{
			"metrics disabled",
			"metrics_listen = \"\"\n",
			func(c *Config) { c.MetricsListen = "" },
		},
		{
			"admin socket disabled",
			"admin_socket = \"\"\n",
			func(c *Config) { c.AdminSocket = "" },
		},
		{
			"zero TTL: never cached",
			"[cache]\ntempfail_ttl = \"0s\"\n",
			func(c *Config) { c.Cache.TempfailTTL = 0 },
		},
		{
			"mail_from in internal form, normalised for the wire",
			"[callout]\nmail_from = \"probe sender@example.net\"\n",
			func(c *Config) { c.Callout.MailFrom = `"probe sender"@example.net` },
		},
		{
			"mail_from in wire form, read as the same address",
			"[callout]\nmail_from = '\"probe \\\"x\\\" sender\"@example.net'\n",
			func(c *Config) { c.Callout.MailFrom = `"probe \"x\" sender"@example.net` },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse("calloutd.toml", []byte(tt.toml))
			if err != nil {
				t.Fatalf("Parse: got %v, want no error", err)
			}
			want := Default()
			tt.edit(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Parse(%q):\ngot  %+v\nwant %+v", tt.toml, got, want)
			}
		})
	}
}

// route builds a [[route]] table.
func route(lines ...string) string { return "[[route]]\n" + strings.Join(lines, "\n") + "\n" }

var okRoute = route(`domains = ["example.com"]`, `servers = ["127.0.0.1:2526"]`)

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name   string
		toml   string
		want   string
		prefix bool // want is a prefix of the message
	}{
		// Not TOML: the line is named.
		{name: "unterminated array", toml: "\n\nlisten = [\"127.0.0.1:10040\"\n", want: "calloutd.toml:3: ", prefix: true},
		{name: "unterminated string", toml: "[log]\nlevel = \"info\n", want: "calloutd.toml:2: strings cannot contain newlines"},
		{name: "table defined twice", toml: "[log]\n[log]\n", want: "calloutd.toml:2: ", prefix: true},

		// Unknown keys.
		{name: "unknown key at top level", toml: "lissten = [\"127.0.0.1:1\"]\n", want: "calloutd.toml: unknown key lissten"},
		{name: "unknown key in [callout]", toml: "[callout]\nconect_timeout = \"5s\"\n", want: "calloutd.toml: unknown key callout.conect_timeout"},
		{name: "unknown key in [[route]]", toml: okRoute + "server = \"x\"\n", want: "calloutd.toml: unknown key route.server"},
		{name: "unknown table", toml: "[redis]\naddr = \"127.0.0.1:6379\"\n", want: "calloutd.toml: unknown key redis, redis.addr"},

		// Values of the wrong kind: the key is named.
		{name: "bad duration", toml: "[callout]\nconnect_timeout = \"10x\"\n", want: `calloutd.toml: callout.connect_timeout: invalid duration "10x" (examples: 90s, 10m, 2h, 7d)`},
		{name: "bad duration of a TTL", toml: "[cache]\npositive_ttl = \"1 day\"\n", want: `calloutd.toml: cache.positive_ttl: invalid duration "1 day" (examples: 90s, 10m, 2h, 7d)`},
		{name: "duration without a unit", toml: "[callout]\nrequest_timeout = 30\n", want: `calloutd.toml: callout.request_timeout: invalid duration "30" (examples: 90s, 10m, 2h, 7d)`},
		{name: "string for a list", toml: "listen = \"127.0.0.1:10040\"\n", want: `calloutd.toml: toml: line 1 (last key "listen"): incompatible types`, prefix: true},
		{name: "string for a number", toml: "[cache]\nmax_entries = \"many\"\n", want: `calloutd.toml: toml: line 2 (last key "cache.max_entries"): incompatible types`, prefix: true},

		// listen, metrics_listen, admin_socket.
		{name: "no listen address", toml: "listen = []\n", want: "calloutd.toml: listen: must not be empty"},
		{name: "listen without port", toml: "listen = [\"localhost\"]\n", want: `calloutd.toml: listen[0]: "localhost": address localhost: missing port in address (want host:port or unix:/path)`},
		{name: "listen port out of range", toml: "listen = [\"127.0.0.1:70000\"]\n", want: `calloutd.toml: listen[0]: "127.0.0.1:70000": invalid port "70000"`},
		{name: "listen bad host", toml: "listen = [\"127.0.0.1:1\", \"no_host:1\"]\n", want: `calloutd.toml: listen[1]: "no_host:1": invalid host "no_host"`},
		{name: "relative unix path", toml: "listen = [\"127.0.0.1:1\", \"unix:run/calloutd.sock\"]\n", want: `calloutd.toml: listen[1]: "unix:run/calloutd.sock": socket path must be absolute`},
		{name: "empty unix path", toml: "listen = [\"unix:\"]\n", want: `calloutd.toml: listen[0]: "unix:": socket path must be absolute`},
		{name: "unix: for metrics_listen", toml: "metrics_listen = \"unix:/run/calloutd/metrics.sock\"\n", want: `calloutd.toml: metrics_listen: "unix:/run/calloutd/metrics.sock": a unix socket is not supported here`},
		{name: "metrics_listen without port", toml: "metrics_listen = \"127.0.0.1\"\n", want: `calloutd.toml: metrics_listen: "127.0.0.1": `, prefix: true},

		{name: "relative admin_socket", toml: "admin_socket = \"calloutd/admin.sock\"\n", want: `calloutd.toml: admin_socket: "calloutd/admin.sock": socket path must be absolute`},

		// [log].
		{name: "bad log level", toml: "[log]\nlevel = \"verbose\"\n", want: `calloutd.toml: log.level: "verbose" is not one of debug, info, warn, error`},
		{name: "log level in capitals", toml: "[log]\nlevel = \"INFO\"\n", want: `calloutd.toml: log.level: "INFO" is not one of debug, info, warn, error`},
		{name: "bad log format", toml: "[log]\nformat = \"xml\"\n", want: `calloutd.toml: log.format: "xml" is not one of text, json`},

		// [callout].
		{name: "bad helo_name", toml: "[callout]\nhelo_name = \"gate_way\"\n", want: `calloutd.toml: callout.helo_name: domain has invalid character '_'`},
		{name: "empty helo_name", toml: "[callout]\nhelo_name = \"\"\n", want: `calloutd.toml: callout.helo_name: empty domain`},
		{name: "CR LF in mail_from", toml: "[callout]\nmail_from = \"probe\\r\\nRCPT TO:<x@example.com>@example.net\"\n", want: `calloutd.toml: callout.mail_from: invalid address: local part has byte 0x0d`},
		{name: "LF in mail_from's domain", toml: "[callout]\nmail_from = \"probe@example.net\\n\"\n", want: `calloutd.toml: callout.mail_from: invalid address: domain has invalid character '\n'`},
		{name: "mail_from without domain", toml: "[callout]\nmail_from = \"probe\"\n", want: `calloutd.toml: callout.mail_from: invalid address: no domain`},
		{name: "mail_from <> (write \"\")", toml: "[callout]\nmail_from = \"<>\"\n", want: `calloutd.toml: callout.mail_from: invalid address: no domain`},
		{name: "zero connect_timeout", toml: "[callout]\nconnect_timeout = \"0s\"\n", want: "calloutd.toml: callout.connect_timeout: must be greater than 0"},
		{name: "zero command_timeout", toml: "[callout]\ncommand_timeout = \"0s\"\n", want: "calloutd.toml: callout.command_timeout: must be greater than 0"},
		{name: "negative request_timeout", toml: "[callout]\nrequest_timeout = \"-5s\"\n", want: "calloutd.toml: callout.request_timeout: must be greater than 0"},
		{name: "first of several bad timeouts", toml: "[callout]\nrequest_timeout = \"0s\"\ncommand_timeout = \"0s\"\nconnect_timeout = \"0s\"\n", want: "calloutd.toml: callout.connect_timeout: must be greater than 0"},
		{name: "bad unreachable_action", toml: "[callout]\nunreachable_action = \"reject\"\n", want: `calloutd.toml: callout.unreachable_action: "reject" is not one of dunno, defer`},
		{name: "bad tempfail_action", toml: "[callout]\ntempfail_action = \"DEFER\"\n", want: `calloutd.toml: callout.tempfail_action: "DEFER" is not one of dunno, defer`},

		// [cache].
		{name: "unknown store", toml: "[cache]\nstore = \"disk\"\n", want: `calloutd.toml: cache.store: "disk" is not one of memory, redis`},
		{name: "redis no addrs", toml: "[cache]\nstore = \"redis\"\n[cache.redis]\naddrs = []\n", want: `calloutd.toml: cache.redis.addrs: must not be empty`},
		{name: "redis addr without port", toml: "[cache]\nstore = \"redis\"\n[cache.redis]\naddrs = [\"redis.example\"]\n", want: `calloutd.toml: cache.redis.addrs[0]: "redis.example": address redis.example: missing port in address`},
		{name: "redis addr without host", toml: "[cache]\nstore = \"redis\"\n[cache.redis]\naddrs = [\":6379\"]\n", want: `calloutd.toml: cache.redis.addrs[0]: ":6379": no host`},
		{name: "redis cluster db", toml: "[cache]\nstore = \"redis\"\n[cache.redis]\naddrs = [\"127.0.0.1:7000\", \"127.0.0.1:7001\"]\ndb = 2\n", want: `calloutd.toml: cache.redis.db: 2: a Redis Cluster (several addrs) has only database 0`},
		{name: "redis empty prefix", toml: "[cache]\nstore = \"redis\"\n[cache.redis]\nkey_prefix = \"\"\n", want: `calloutd.toml: cache.redis.key_prefix: must not be empty (the default is "calloutd:")`},
		{name: "redis prefix with space", toml: "[cache]\nstore = \"redis\"\n[cache.redis]\nkey_prefix = \"a b:\"\n", want: `calloutd.toml: cache.redis.key_prefix: "a b:": at most 64 bytes, no spaces or control characters`},
		{name: "redis zero read timeout", toml: "[cache]\nstore = \"redis\"\n[cache.redis]\nread_timeout = \"0s\"\n", want: `calloutd.toml: cache.redis.read_timeout: 0s: must be above 0 and at most 1m`},
		{name: "zero max_entries", toml: "[cache]\nmax_entries = 0\n", want: "calloutd.toml: cache.max_entries: must be at least 1"},
		{name: "negative positive_ttl", toml: "[cache]\npositive_ttl = \"-1h\"\n", want: "calloutd.toml: cache.positive_ttl: must not be negative"},
		{name: "negative negative_ttl", toml: "[cache]\nnegative_ttl = \"-1s\"\n", want: "calloutd.toml: cache.negative_ttl: must not be negative"},
		{name: "negative tempfail_ttl", toml: "[cache]\ntempfail_ttl = \"-1m\"\n", want: "calloutd.toml: cache.tempfail_ttl: must not be negative"},
		{name: "days that wrap to negative", toml: "[cache]\npositive_ttl = \"1d2562047h\"\n", want: `calloutd.toml: cache.positive_ttl: invalid duration "1d2562047h" (examples: 90s, 10m, 2h, 7d)`},

		// [[route]].
		{name: "second route with empty servers", toml: okRoute + route(`domains = ["example.org"]`, `servers = []`), want: "calloutd.toml: route[1].servers: must not be empty (unless callout = false)"},
		{name: "route without servers", toml: route(`domains = ["example.org"]`), want: "calloutd.toml: route[0].servers: must not be empty (unless callout = false)"},
		{name: "callout off without a list", toml: route(`domains = ["example.org"]`, `callout = false`), want: "calloutd.toml: route[0].callout: false needs a recipients_file: without one every address would be unknown"},
		{name: "relative recipients file", toml: route(`domains = ["example.org"]`, `servers = ["127.0.0.1"]`, `recipients_file = "list.txt"`), want: `calloutd.toml: route[0].recipients_file: "list.txt": path must be absolute`},
		{name: "bad trusted network", toml: "[policy]\ntrusted_networks = [\"10.0.0.0/8\", \"10.0.0/8\"]\n", want: `calloutd.toml: policy.trusted_networks[1]: "10.0.0/8": not an address or a CIDR network`},
		{name: "stats window in hours", toml: "[stats]\nwindow = \"36h\"\n", want: `calloutd.toml: stats.window: 36h0m0s: must be whole days between 1d and 400d, or 0 (off)`},
		{name: "source not an address", toml: "[callout]\nsource_address = \"gw.example\"\n", want: `calloutd.toml: callout.source_address: "gw.example": not an IP address`},
		{name: "two sources of a family", toml: "[callout]\nsource_address = [\"127.0.0.2\", \"127.0.0.3\"]\n", want: `calloutd.toml: callout.source_address: "127.0.0.3": at most one address per family`},
		{name: "source not on this host", toml: route(`domains = ["example.org"]`, `servers = ["127.0.0.1"]`, `source_address = "192.0.2.123"`), want: `calloutd.toml: route[0].source_address: "192.0.2.123": not an address of this host: cannot assign requested address`},
		{name: "delimiter with @", toml: "[callout]\nrecipient_delimiter = \"+@\"\n", want: `calloutd.toml: callout.recipient_delimiter: "+@": at most 8 printable ASCII characters, not '@', quotes or spaces`},
		{name: "route kind", toml: route(`domains = ["example.org"]`, `servers = ["127.0.0.1"]`, `kind = "x500"`), want: `calloutd.toml: route[0].kind: "x500" is not one of smtp, ldap`},
		{name: "ldap route with servers", toml: route(`domains = ["example.org"]`, `kind = "ldap"`, `servers = ["127.0.0.1"]`), want: `calloutd.toml: route[0].servers: an LDAP route has ldap_urls, not servers`},
		{name: "ldap route without urls", toml: route(`domains = ["example.org"]`, `kind = "ldap"`), want: `calloutd.toml: route[0].ldap_urls: must not be empty for kind = "ldap"`},
		{name: "ldap url scheme", toml: route(`domains = ["example.org"]`, `kind = "ldap"`, `ldap_urls = ["http://dc1"]`, `ldap_base_dn = "dc=x"`), want: `calloutd.toml: route[0].ldap_urls[0]: "http://dc1": want ldap://host[:port] or ldaps://host[:port]`},
		{name: "ldap without base", toml: route(`domains = ["example.org"]`, `kind = "ldap"`, `ldap_urls = ["ldap://dc1"]`), want: `calloutd.toml: route[0].ldap_base_dn: must not be empty`},
		{name: "ldap filter without %s", toml: route(`domains = ["example.org"]`, `kind = "ldap"`, `ldap_urls = ["ldap://dc1"]`, `ldap_base_dn = "dc=x"`, `ldap_filter = "(mail=bob)"`), want: `calloutd.toml: route[0].ldap_filter: "(mail=bob)": has no %s for the address`},
		{name: "ldap bind without password", toml: route(`name = "corp"`, `domains = ["example.org"]`, `kind = "ldap"`, `ldap_urls = ["ldap://dc1"]`, `ldap_base_dn = "dc=x"`, `ldap_bind_dn = "cn=x"`), want: `calloutd.toml: route[0].ldap_bind_password: empty, and CALLOUTD_LDAP_PASSWORD_CORP is not set either`},
		{name: "ldap filter syntax", toml: route(`domains = ["example.org"]`, `kind = "ldap"`, `ldap_urls = ["ldap://dc1"]`, `ldap_base_dn = "dc=x"`, `ldap_filter = "(mail=%s"`), want: `calloutd.toml: route[0].ldap_filter: "(mail=%s": LDAP Result Code 201 "Filter Compile Error": ldap: unexpected end of filter`},
		{name: "tls mode", toml: "[callout]\ntls = \"may\"\n", want: `calloutd.toml: callout.tls: "may" is not one of opportunistic, required, off`},
		{name: "tls ca without verify", toml: "[callout]\ntls_ca_file = \"/etc/ca.pem\"\n", want: `calloutd.toml: callout.tls_verify: tls_ca_file and tls_server_name are used only with tls_verify = true`},
		{name: "mx server", toml: route(`domains = ["example.org"]`, `servers = ["mx:bad_host"]`), want: `calloutd.toml: route[0].servers[0]: server "mx:bad_host": domain has invalid character '_'`},
		{name: "learn relative log", toml: "[learn]\npostfix_log = \"mail.log\"\n", want: `calloutd.toml: learn.postfix_log: "mail.log": path must be absolute`},
		{name: "learn ttl", toml: "[learn]\nlearned_ttl = \"10s\"\n", want: `calloutd.toml: learn.learned_ttl: 10s: must be between 1m and 90d`},
		{name: "dns resolver", toml: "[dns]\nresolver = \"dns.example\"\n", want: `calloutd.toml: dns.resolver: "dns.example": want ip:port`},
		{name: "harvest action", toml: "[harvest]\naction = \"drop\"\n", want: `calloutd.toml: harvest.action: "drop" is not one of reject, defer`},
		{name: "harvest negative", toml: "[harvest]\nmax_unknown = -1\n", want: `calloutd.toml: harvest.max_unknown: -1: must not be negative (0 = off)`},
		{name: "harvest ipv6 prefix", toml: "[harvest]\nipv6_prefix = 129\n", want: `calloutd.toml: harvest.ipv6_prefix: 129: must be between 16 and 128`},
		{name: "harvest window", toml: "[harvest]\nwindow = \"0s\"\n", want: `calloutd.toml: harvest.window: 0s: must be between 1s and 30d`},
		{name: "route with empty domains", toml: route(`domains = []`, `servers = ["127.0.0.1"]`), want: "calloutd.toml: route[0].domains: must not be empty"},
		{name: "route without domains", toml: okRoute + route(`name = "b"`, `servers = ["127.0.0.1"]`), want: "calloutd.toml: route[1].domains: must not be empty"},
		{name: "bad domain", toml: route(`domains = ["example.com", "exa mple.org"]`, `servers = ["127.0.0.1"]`), want: `calloutd.toml: route[0].domains[1]: "exa mple.org": domain has invalid character ' '`},
		{name: "domain of a dot", toml: route(`domains = ["."]`, `servers = ["127.0.0.1"]`), want: `calloutd.toml: route[0].domains[0]: ".": empty domain`},
		{name: "domain with two leading dots", toml: route(`domains = ["..example.com"]`, `servers = ["127.0.0.1"]`), want: `calloutd.toml: route[0].domains[0]: "..example.com": domain has an empty label`},
		{name: "bad server port", toml: route(`domains = ["example.com"]`, `servers = ["127.0.0.1", "mx:99999"]`), want: `calloutd.toml: route[0].servers[1]: server "mx:99999": invalid port "99999"`},
		{name: "bad server bracket", toml: route(`domains = ["example.com"]`, `servers = ["[2001:db8::1"]`), want: `calloutd.toml: route[0].servers[0]: server "[2001:db8::1": missing ']'`},
		{name: "bad server host", toml: route(`domains = ["example.com"]`, `servers = ["mx_1.internal"]`), want: `calloutd.toml: route[0].servers[0]: server "mx_1.internal": domain has invalid character '_'`},
		{name: "duplicate route names", toml: route(`name = "mailstore"`, `domains = ["example.com"]`, `servers = ["127.0.0.1"]`) + route(`name = "mailstore"`, `domains = ["example.org"]`, `servers = ["127.0.0.1"]`), want: `calloutd.toml: route[1].name: "mailstore" already names route[0]`},
		{name: "name clashing with a default name", toml: route(`name = "route[1]"`, `domains = ["example.com"]`, `servers = ["127.0.0.1"]`) + route(`domains = ["example.org"]`, `servers = ["127.0.0.1"]`), want: `calloutd.toml: route[1].name: "route[1]" already names route[0]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A path: only its base name prefixes messages.
			c, err := Parse("/etc/calloutd/calloutd.toml", []byte(tt.toml))
			if err == nil {
				t.Fatalf("Parse(%q): got %+v, want error %q", tt.toml, c, tt.want)
			}
			if got := err.Error(); tt.prefix && !strings.HasPrefix(got, tt.want) || !tt.prefix && got != tt.want {
				t.Errorf("Parse(%q):\ngot  %s\nwant %s%s", tt.toml, got, tt.want, map[bool]string{true: "..."}[tt.prefix])
			}
		})
	}
}

func TestLoad(t *testing.T) {
	if _, err := Load("testdata/no-such-file.toml"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing file: got %v, want fs.ErrNotExist", err)
	}
	want := `bad-duration.toml: callout.command_timeout: invalid duration "10x" (examples: 90s, 10m, 2h, 7d)`
	if _, err := Load("testdata/bad-duration.toml"); err == nil || err.Error() != want {
		t.Errorf("Load(testdata/bad-duration.toml): got %v, want %s", err, want)
	}
}

func TestRouteNormalisation(t *testing.T) {
	c, err := Load("testdata/routes.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := []Route{
		{
			Name:    "mailstore",
			Domains: []string{"example.com", ".sub.example.com"},
			Servers: []string{"10.0.0.5:25", "mx2.internal:2525", "[2001:db8::5]:25", "[2001:db8::6]:25", "[2001:db8::7]:25"},
			Kind:    "smtp",
		},
		{Name: "route[1]", Domains: []string{"example.org"}, Servers: []string{"MX.example.org:25"}, Kind: "smtp"},
		{Name: "route[2]", Domains: []string{"example.net"}, Servers: []string{"127.0.0.1:2526"}, Kind: "smtp"},
	}
	for i := range c.Routes {
		c.Routes[i].Effective = Effective{} // TestRouteSettings checks it
	}
	if !reflect.DeepEqual(c.Routes, want) {
		t.Errorf("routes:\ngot  %+v\nwant %+v", c.Routes, want)
	}
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{in: "7d", want: 7 * 24 * time.Hour},
		{in: "1d12h", want: 36 * time.Hour},
		{in: "1d1h30m", want: 25*time.Hour + 30*time.Minute},
		{in: "0d", want: 0},
		{in: "0s", want: 0},
		{in: "90s", want: 90 * time.Second},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "-1s", want: -time.Second}, // Go's syntax; validation refuses it where it matters
		{in: "65535d", want: 65535 * 24 * time.Hour},
		{in: "d", wantErr: true},
		{in: "x", wantErr: true},
		{in: "", wantErr: true},
		{in: "10x", wantErr: true},
		{in: "-1d", wantErr: true},
		{in: "+1d", wantErr: true},
		{in: "7d-1h", wantErr: true},
		{in: "1.5d", wantErr: true},
		{in: "1d1d", wantErr: true},
		{in: "1dx", wantErr: true},
		{in: "7D", wantErr: true},
		{in: "65536d", wantErr: true},
		{in: "1d2562047h", wantErr: true}, // past the largest time.Duration
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseDuration(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Errorf("ParseDuration(%q): got %v, want an error", tt.in, got)
				} else if want := `invalid duration "` + tt.in + `" (examples: 90s, 10m, 2h, 7d)`; err.Error() != want {
					t.Errorf("ParseDuration(%q): got error %q, want %q", tt.in, err, want)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParseDuration(%q): got %v, %v, want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestDurationText(t *testing.T) {
	for _, d := range []Duration{0, Duration(90 * time.Second), Duration(36 * time.Hour), Duration(7 * 24 * time.Hour)} {
		b, err := d.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back Duration
		if err := back.UnmarshalText(b); err != nil || back != d {
			t.Errorf("Duration %v -> %q -> %v, %v; want %v", d.D(), b, back.D(), err, d.D())
		}
	}
}

// Every TOML example in docs/configuration.md is a configuration that
// loads, so the documented per-route examples cannot rot.
func TestDocsExamplesParse(t *testing.T) {
	const doc = "../../docs/configuration.md"
	// The LDAP examples take their passwords from the environment.
	t.Setenv(LDAPPasswordEnv("corp-ad"), "secret")
	t.Setenv(LDAPPasswordEnv("mailstore-ldap"), "secret")
	data, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(data), "```toml\n")[1:]
	if len(blocks) < 3 {
		t.Fatalf("%s has %d TOML examples, want at least 3", doc, len(blocks))
	}
	for i, b := range blocks {
		b, _, _ = strings.Cut(b, "```")
		if _, err := Parse(fmt.Sprintf("%s example %d", doc, i+1), []byte(b)); err != nil {
			t.Errorf("%v\n%s", err, b)
		}
	}
}
