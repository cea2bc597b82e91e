package config

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func warningStrings(ws []Warning) []string {
	out := []string{}
	for _, w := range ws {
		out = append(out, w.String())
	}
	return out
}

func TestWarnings(t *testing.T) {
	const fqdn = "[callout]\nhelo_name = \"gw.example.net\"\n"
	tests := []struct {
		name, toml string
		want       []string
	}{
		{"none", fqdn + "request_timeout = \"34s\"\n" + okRoute, []string{}},
		{
			"helo name without a dot",
			"[callout]\nhelo_name = \"gateway\"\n",
			[]string{`callout.helo_name: "gateway" is not fully qualified; backends with reject_non_fqdn_helo_hostname refuse the callout`},
		},
		{
			"request_timeout as long as Postfix waits",
			fqdn + "request_timeout = \"35s\"\n",
			[]string{"callout.request_timeout: 35s is not below the timeout=35s of check_policy_service in contrib/postfix/ (Postfix's default: 100s); " +
				"if Postfix gives up first it asks again, then applies default_action: raise timeout= in main.cf above request_timeout"},
		},
		{
			"a route's own keys",
			fqdn + okRoute + route(`domains = ["example.org"]`, `servers = ["127.0.0.1"]`, `helo_name = "gw"`, `request_timeout = "2m"`),
			[]string{
				`route[1].helo_name: "gw" is not fully qualified; backends with reject_non_fqdn_helo_hostname refuse the callout`,
				"route[1].request_timeout: 2m is not below the timeout=35s of check_policy_service in contrib/postfix/ (Postfix's default: 100s); " +
					"if Postfix gives up first it asks again, then applies default_action: raise timeout= in main.cf above request_timeout",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("calloutd.toml", []byte(tt.toml))
			if err != nil {
				t.Fatal(err)
			}
			if got := warningStrings(c.Warnings()); !slices.Equal(got, tt.want) {
				t.Errorf("Warnings():\ngot  %q\nwant %q", got, tt.want)
			}
		})
	}
}

// hosts resolves names from a table, as /etc/hosts would, so that the
// test needs no DNS.
type hosts map[string][]netip.Addr

func (h hosts) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := h[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// A route that would ask calloutd itself is found, however its server and
// calloutd's listener are written.
func TestCheckSelfRoutes(t *testing.T) {
	names := hosts{
		"gw.internal":      {netip.MustParseAddr("192.0.2.10")},
		"backend.internal": {netip.MustParseAddr("192.0.2.20")},
		"self.internal":    {netip.MustParseAddr("192.0.2.20"), netip.MustParseAddr("::ffff:127.0.0.1")},
	}
	local := []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")}
	const head = "admin_socket = \"\"\n[callout]\nhelo_name = \"gw.example.net\"\n"
	servers := func(listen, metrics string, s ...string) string {
		return fmt.Sprintf("listen = [%s]\nmetrics_listen = %q\n", listen, metrics) + head +
			route(`domains = ["example.com"]`, fmt.Sprintf("servers = [%s]", `"`+strings.Join(s, `", "`)+`"`))
	}
	tests := []struct {
		name, toml string
		want       []string
	}{
		{"a backend", servers(`"127.0.0.1:10040"`, "", "127.0.0.1:2526", "backend.internal", "mx:example.com:10040"), []string{}},
		{
			"the listen address itself",
			servers(`"127.0.0.1:10040"`, "", "backend.internal", "127.0.0.1:10040"),
			[]string{`route[0].servers[1]: "127.0.0.1:10040" is calloutd itself (listen[0] = "127.0.0.1:10040"): the route would ask calloutd, not a mail server`},
		},
		{"another loopback address, listener on one", servers(`"127.0.0.1:10040"`, "", "127.0.0.2:10040"), []string{}},
		{
			"any loopback address, listener on all",
			servers(`"unix:`+t.TempDir()+`/policy.sock", "0.0.0.0:10040"`, "", "127.0.0.2:10040", "[::1]:10040"),
			[]string{
				`route[0].servers[0]: "127.0.0.2:10040" is calloutd itself (listen[1] = "0.0.0.0:10040"): the route would ask calloutd, not a mail server`,
				`route[0].servers[1]: "[::1]:10040" is calloutd itself (listen[1] = "0.0.0.0:10040"): the route would ask calloutd, not a mail server`,
			},
		},
		{
			"this host's address by name, listener on all",
			servers(`":10040"`, "", "gw.internal:10040", "[2001:db8::10]:10040", "[2001:db8::11]:10040"),
			[]string{
				`route[0].servers[0]: "gw.internal:10040" is calloutd itself (listen[0] = ":10040"): the route would ask calloutd, not a mail server`,
				`route[0].servers[1]: "[2001:db8::10]:10040" is calloutd itself (listen[0] = ":10040"): the route would ask calloutd, not a mail server`,
			},
		},
		{"this host's address, listener on loopback", servers(`"127.0.0.1:10040"`, "", "gw.internal:10040"), []string{}},
		{
			"a name with several addresses, one of them loopback",
			servers(`"[::]:10040"`, "", "self.internal:10040"),
			[]string{`route[0].servers[0]: "self.internal:10040" is calloutd itself (listen[0] = "[::]:10040"): the route would ask calloutd, not a mail server`},
		},
		{
			"the metrics listener",
			servers(`"127.0.0.1:10040"`, "127.0.0.1:10041", "127.0.0.1:10041"),
			[]string{`route[0].servers[0]: "127.0.0.1:10041" is calloutd itself (metrics_listen = "127.0.0.1:10041"): the route would ask calloutd, not a mail server`},
		},
		{
			"a listener by name",
			servers(`"gw.internal:10040"`, "", "192.0.2.10:10040"),
			[]string{`route[0].servers[0]: "192.0.2.10:10040" is calloutd itself (listen[0] = "gw.internal:10040"): the route would ask calloutd, not a mail server`},
		},
		{
			"a name that does not resolve",
			servers(`"127.0.0.1:10040"`, "", "gone.internal:25"),
			[]string{`route[0].servers[0]: "gone.internal": lookup gone.internal: no such host`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("calloutd.toml", []byte(tt.toml))
			if err != nil {
				t.Fatal(err)
			}
			errs, ws := Check(context.Background(), c, CheckOptions{Resolver: names, LocalAddrs: local})
			if len(errs) > 0 {
				t.Errorf("errors: %v", errs)
			}
			if got := warningStrings(ws); !slices.Equal(got, tt.want) {
				t.Errorf("warnings:\ngot  %q\nwant %q", got, tt.want)
			}
		})
	}
}

// What serve would fail on later, after Load: a log file or a unix socket
// it cannot create.
func TestCheckFiles(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	const head = "metrics_listen = \"\"\nadmin_socket = \"\"\n[callout]\nhelo_name = \"gw.example.net\"\n"
	tests := []struct {
		name, toml string
		want       []string
	}{
		{"log file to create", head + fmt.Sprintf("[log]\nfile = %q\n", dir+"/calloutd.log"), nil},
		{"log file to append to", head + fmt.Sprintf("[log]\nfile = %q\n", file), nil},
		{"socket to create", fmt.Sprintf("listen = [%q]\n", "unix:"+dir+"/policy.sock") + head, nil},
		{
			"log file in no directory",
			head + fmt.Sprintf("[log]\nfile = %q\n", dir+"/missing/calloutd.log"),
			[]string{"log.file: directory: stat " + dir + "/missing: no such file or directory"},
		},
		{"log file that is a directory", head + fmt.Sprintf("[log]\nfile = %q\n", dir), []string{"log.file: " + dir + " is not a regular file"}},
		{
			"sockets in no directory and over a file",
			fmt.Sprintf("listen = [\"127.0.0.1:10040\", %q, %q]\n", "unix:"+dir+"/missing/policy.sock", "unix:"+file) + head,
			[]string{
				"listen[1]: directory: stat " + dir + "/missing: no such file or directory",
				"listen[2]: " + file + " exists and is not a socket",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("calloutd.toml", []byte(tt.toml))
			if err != nil {
				t.Fatal(err)
			}
			errs, ws := Check(context.Background(), c, CheckOptions{Resolver: hosts{}, LocalAddrs: []netip.Addr{}})
			var got []string
			for _, err := range errs {
				got = append(got, err.Error())
			}
			if !slices.Equal(got, tt.want) || len(ws) > 0 {
				t.Errorf("errors:\ngot  %q\nwant %q\nwarnings %v", got, tt.want, ws)
			}
		})
	}
}

// A directory calloutd's user may not write to is seen without writing
// to it. (root may write anywhere: then there is nothing to see.)
func TestCheckUnwritableDirectory(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root writes anywhere")
	}
	dir := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	c, err := Parse("calloutd.toml", []byte(fmt.Sprintf("[callout]\nhelo_name = \"gw.example.net\"\n[log]\nfile = %q\n", dir+"/calloutd.log")))
	if err != nil {
		t.Fatal(err)
	}
	errs, _ := Check(context.Background(), c, CheckOptions{})
	if want := "log.file: directory " + dir + ": cannot create files in it: permission denied"; len(errs) != 1 || errs[0].Error() != want {
		t.Errorf("errors %v, want [%s]", errs, want)
	}
	if entries, _ := os.ReadDir(dir); len(entries) > 0 {
		t.Errorf("Check wrote into %s: %v", dir, entries)
	}
}

// checkWarnings runs Check without DNS or interface addresses and joins
// the warnings.
func checkWarnings(c *Config) (errs []error, warnings string) {
	errs, ws := Check(context.Background(), c, CheckOptions{Resolver: hosts{}, LocalAddrs: []netip.Addr{}})
	for _, w := range ws {
		warnings += w.String()
	}
	return errs, warnings
}

// A postfix_log calloutd cannot read is a warning: serve waits and tries
// again, learning nothing meanwhile.
func TestCheckPostfixLog(t *testing.T) {
	dir := t.TempDir()
	readable := filepath.Join(dir, "mail.log")
	if err := os.WriteFile(readable, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{readable, ""},
		{dir + "/missing.log", "learn.postfix_log: " + dir + "/missing.log: cannot read it (no such file or directory); nothing is learned until it can (Debian: SupplementaryGroups=adm for /var/log/mail.log)"},
	} {
		c, err := Parse("calloutd.toml", []byte(fmt.Sprintf("metrics_listen = \"\"\nadmin_socket = \"\"\n[callout]\nhelo_name = \"gw.example.net\"\n[learn]\npostfix_log = %q\n", tc.path)))
		if err != nil {
			t.Fatal(err)
		}
		errs, got := checkWarnings(c)
		if len(errs) > 0 || got != tc.want {
			t.Errorf("%s: errors %v, warnings %q, want %q", tc.path, errs, got, tc.want)
		}
	}
}

// An admin_socket serve could not make is a warning, except in the
// runtime directory systemd makes at start.
func TestCheckAdminSocket(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ socket, want string }{
		{dir + "/admin.sock", ""},
		{"/run/calloutd/admin.sock", ""},
		{dir + "/missing/admin.sock", "admin_socket: directory: stat " + dir + "/missing: no such file or directory; unless the directory is there and writable when serve starts, it runs without its admin socket (calloutd lookup, flush and learn cannot reach it; systemd's RuntimeDirectory=calloutd makes /run/calloutd)"},
	} {
		if tc.socket == "/run/calloutd/admin.sock" {
			if _, err := os.Stat("/run/calloutd"); err == nil {
				continue // a calloutd runs here
			}
		}
		c, err := Parse("calloutd.toml", []byte(fmt.Sprintf("metrics_listen = \"\"\nadmin_socket = %q\n[callout]\nhelo_name = \"gw.example.net\"\n", tc.socket)))
		if err != nil {
			t.Fatal(err)
		}
		errs, got := checkWarnings(c)
		if len(errs) > 0 || got != tc.want {
			t.Errorf("%s: errors %v, warnings %q, want %q", tc.socket, errs, got, tc.want)
		}
	}
}
