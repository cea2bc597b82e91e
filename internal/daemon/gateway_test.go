package daemon

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/calloutd/calloutd/cache"
	"github.com/calloutd/calloutd/internal/config"
	"github.com/calloutd/calloutd/internal/dnstest"
	"github.com/calloutd/calloutd/internal/redistest"
	"github.com/calloutd/calloutd/internal/smtptest"
	"github.com/calloutd/calloutd/policyd"
)

// askAs sends a RCPT request from client, authenticated as sasl when not
// empty, and returns the action.
func (p *policyConn) askAs(client, sasl, recipient string) string {
	p.t.Helper()
	req := fmt.Sprintf("request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"+
		"client_address=%s\nclient_name=unknown\nhelo_name=client.test\nsender=tester@client.test\n"+
		"recipient=%s\nsasl_username=%s\nqueue_id=\ninstance=1.2.3\n\n", client, recipient, sasl)
	_ = p.c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(p.c, req); err != nil {
		p.t.Fatalf("write: %v", err)
	}
	var b strings.Builder
	for !strings.HasSuffix(b.String(), "\n\n") {
		line, err := p.br.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			p.t.Fatalf("read answer: %v (got %q)", err, b.String())
		}
	}
	return strings.TrimSuffix(strings.TrimPrefix(b.String(), "action="), "\n\n")
}

// gatewayConfig is a daemon with one route "main" for example.test to
// servers, and extra tables before it.
func gatewayConfig(extra, servers string) string {
	return fmt.Sprintf(`listen = ["127.0.0.1:0"]
metrics_listen = "127.0.0.1:0"
admin_socket = "{{ADMIN}}"
%s
[callout]
helo_name = "gw.test"
request_timeout = "5s"
[[route]]
name = "main"
domains = ["example.test"]
servers = [%s]
`, extra, servers)
}

const unknownAnswer = "550 5.1.1 User unknown in local recipient table"

func wantMetrics(t *testing.T, td *testDaemon, want ...string) {
	t.Helper()
	body := httpGet(t, "http://"+td.metrics+"/metrics", 200)
	for _, w := range want {
		if !strings.Contains(body, w+"\n") {
			t.Errorf("/metrics lacks %q", w)
		}
	}
}

// Trusted networks and authenticated clients are answered DUNNO with no
// callout and no cache lookup; other clients are verified.
func TestTrustedAndAuthenticatedClientsSkipped(t *testing.T) {
	backend := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("alice@example.test")})
	td := startDaemon(t, gatewayConfig(`[policy]
trusted_networks = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]`, quoted(backend.Addr())))
	p := dialPolicy(t, td.policy)
	for _, c := range []struct{ client, sasl, want string }{
		{"10.1.2.3", "", "DUNNO"},
		{"::ffff:10.1.2.3", "", "DUNNO"}, // IPv4 client on an IPv6 socket
		{"2001:db8:ffff::5", "", "DUNNO"},
		{"192.0.2.7", "", "DUNNO"},
		{"203.0.113.9", "bob", "DUNNO"}, // authenticated
		{"192.0.2.8", "", unknownAnswer},
		{"2001:db9::1", "", unknownAnswer + cachedSuffix},
		{"unknown", "", unknownAnswer + cachedSuffix},
	} {
		if got := p.askAs(c.client, c.sasl, "nobody@example.test"); got != c.want {
			t.Errorf("client %s sasl %q: %q, want %q", c.client, c.sasl, got, c.want)
		}
	}
	if n := backend.Count("RCPT"); n != 1 {
		t.Errorf("backend saw %d RCPTs, want 1 (the others were trusted, or cached)", n)
	}
	wantMetrics(t, td, `calloutd_requests_skipped_total{reason="trusted_network"} 4`,
		`calloutd_requests_skipped_total{reason="authenticated"} 1`, `calloutd_cache_misses_total 1`, `calloutd_cache_hits_total 2`)

	// skip_authenticated = false: an authenticated client is verified.
	td2 := startDaemon(t, gatewayConfig("[policy]\nskip_authenticated = false", quoted(backend.Addr())))
	if got := dialPolicy(t, td2.policy).askAs("203.0.113.9", "bob", "nobody@example.test"); got != unknownAnswer {
		t.Errorf("authenticated client with skip_authenticated = false: %q, want %q", got, unknownAnswer)
	}
}

// A dry run verifies and caches as usual but answers DUNNO, per route:
// the global switch, and a route's override either way.
func TestDryRun(t *testing.T) {
	backend := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("alice@example.test", "alice@other.test")})
	cfg := gatewayConfig("[policy]\ndry_run = true", quoted(backend.Addr())) + fmt.Sprintf(`
[[route]]
name = "other"
domains = ["other.test"]
servers = [%q]
dry_run = false
`, backend.Addr())
	td := startDaemon(t, cfg)
	p := dialPolicy(t, td.policy)
	for _, c := range []struct{ rcpt, want string }{
		{"bob@example.test", "DUNNO"},   // fresh: would reject
		{"bob@example.test", "DUNNO"},   // cached: would reject
		{"alice@example.test", "DUNNO"}, // valid
		{"bob@other.test", unknownAnswer},
	} {
		if got := p.askAs("203.0.113.9", "", c.rcpt); got != c.want {
			t.Errorf("%s: %q, want %q", c.rcpt, got, c.want)
		}
	}
	if n := backend.Count("RCPT"); n != 3 {
		t.Errorf("backend saw %d RCPTs, want 3 (verified and cached as usual)", n)
	}
	wantMetrics(t, td, `calloutd_dry_run_would_reject_total{route="main"} 2`,
		`calloutd_policy_requests_total{action="dunno",protocol_state="RCPT"} 3`,
		`calloutd_policy_requests_total{action="reject",protocol_state="RCPT"} 1`,
		`calloutd_verdicts_total{source="cache",verdict="unknown"} 1`)
}

// A client that collects max_unknown unknown recipients gets every
// further recipient refused without a callout, grouped by network; other
// networks and trusted clients are not limited.
func TestHarvestLimit(t *testing.T) {
	backend := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("alice@example.test")})
	td := startDaemon(t, gatewayConfig(`[policy]
trusted_networks = ["198.51.100.0/24"]
[harvest]
max_unknown = 3
window = "1m"
ipv4_prefix = 32
ipv6_prefix = 64`, quoted(backend.Addr())))
	p := dialPolicy(t, td.policy)
	const limited = "550 5.7.1 Too many unknown recipients"
	ask := func(client, rcpt, want string) {
		t.Helper()
		if got := p.askAs(client, "", rcpt); got != want {
			t.Errorf("%s asks %s: %q, want %q", client, rcpt, got, want)
		}
	}
	for i := range 3 {
		ask("203.0.113.9", fmt.Sprintf("guess%d@example.test", i), unknownAnswer)
	}
	before := backend.Count("RCPT")
	ask("203.0.113.9", "alice@example.test", limited) // valid, but not revealed
	ask("203.0.113.9", "guess0@example.test", limited)
	if n := backend.Count("RCPT"); n != before {
		t.Errorf("the limited client cost %d RCPTs, want none", n-before)
	}
	ask("203.0.113.10", "alice@example.test", "DUNNO") // another /32
	ask("203.0.113.10", "guess0@example.test", unknownAnswer+cachedSuffix)

	// IPv6: a /64 is one client, however many addresses it uses.
	ask("2001:db8:1:2::1", "v6a@example.test", unknownAnswer)
	ask("2001:db8:1:2::2", "v6b@example.test", unknownAnswer)
	ask("2001:db8:1:2:ffff::3", "v6c@example.test", unknownAnswer)
	ask("2001:db8:1:2::abcd", "alice@example.test", limited)
	ask("2001:db8:1:3::1", "alice@example.test", "DUNNO")
	ask("203.0.113.9", "postmaster@example.test", unknownAnswer) // RFC 5321: always reachable

	// The same unknown address again is not another unknown recipient.
	ask("203.0.113.20", "departed@example.test", unknownAnswer)
	for range 5 {
		ask("203.0.113.20", "departed@example.test", unknownAnswer+cachedSuffix)
	}
	ask("203.0.113.20", "alice@example.test", "DUNNO")

	// Trusted clients are never counted nor limited.
	for i := range 5 {
		ask("198.51.100.1", fmt.Sprintf("guess%d@example.test", i), "DUNNO")
	}
	wantMetrics(t, td, `calloutd_harvest_rejected_total 3`, `calloutd_harvest_clients_limited_total 2`)

	// A dry-run route's unknown recipients count nothing: they must not
	// get mail for an enforced route refused.
	td3 := startDaemon(t, gatewayConfig("[harvest]\nmax_unknown = 2", quoted(backend.Addr()))+fmt.Sprintf(`dry_run = true
[[route]]
name = "enforced"
domains = ["other.test"]
servers = [%q]
`, backend.Addr()))
	p3 := dialPolicy(t, td3.policy)
	for i := range 4 {
		p3.askAs("203.0.113.9", "", fmt.Sprintf("dry%d@example.test", i))
	}
	if got := p3.askAs("203.0.113.9", "", "x@other.test"); got != unknownAnswer {
		t.Errorf("enforced route after 4 unknowns on a dry-run route: %q, want %q (not the harvest limit)", got, unknownAnswer)
	}

	// action = "defer"
	td2 := startDaemon(t, gatewayConfig("[harvest]\nmax_unknown = 1\naction = \"defer\"", quoted(backend.Addr())))
	p2 := dialPolicy(t, td2.policy)
	p2.askAs("203.0.113.9", "", "guess0@example.test")
	if got, want := p2.askAs("203.0.113.9", "", "alice@example.test"), "DEFER_IF_PERMIT 4.7.1 Too many unknown recipients, try again later"; got != want {
		t.Errorf("defer action: %q, want %q", got, want)
	}
}

// With the Redis store the count is shared: the limit holds across two
// daemons, and the count is a plain Redis key with the window as TTL.
func TestHarvestLimitAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	backend := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("alice@example.test")})
	cfg := gatewayConfig(fmt.Sprintf("[harvest]\nmax_unknown = 3\nwindow = \"10m\"\n[cache]\nstore = \"redis\"\n[cache.redis]\naddrs = [%q]", srv.Addr()), quoted(backend.Addr()))
	a, b := dialPolicy(t, startDaemon(t, cfg).policy), dialPolicy(t, startDaemon(t, cfg).policy)
	for i, p := range []*policyConn{a, b, a} {
		if got := p.askAs("203.0.113.9", "", fmt.Sprintf("guess%d@example.test", i)); got != unknownAnswer {
			t.Fatalf("unknown #%d: %q", i+1, got)
		}
	}
	for _, p := range []*policyConn{b, a} {
		if got, want := p.askAs("203.0.113.9", "", "alice@example.test"), "550 5.7.1 Too many unknown recipients"; got != want {
			t.Errorf("after 3 unknowns on two nodes: %q, want %q", got, want)
		}
	}
	if got := srv.CLI("SCARD", "calloutd:harvest:203.0.113.9/32"); strings.TrimSpace(got) != "3" {
		t.Errorf("SCARD calloutd:harvest:203.0.113.9/32 = %q, want 3", got)
	}
	var ttl int
	if _, err := fmt.Sscan(srv.CLI("TTL", "calloutd:harvest:203.0.113.9/32"), &ttl); err != nil || ttl <= 0 || ttl > 600 {
		t.Errorf("TTL of the count = %d (%v), want within the 10m window", ttl, err)
	}
	// An admin releases the client: within limitedMemo every node lets
	// it through again.
	srv.CLI("DEL", "calloutd:harvest:203.0.113.9/32")
	time.Sleep(limitedMemo + 100*time.Millisecond)
	for _, p := range []*policyConn{a, b} {
		if got := p.askAs("203.0.113.9", "", "alice@example.test"); got != "DUNNO" {
			t.Errorf("after redis-cli DEL: %q, want DUNNO", got)
		}
	}
}

// A recipients file answers without a callout: listed addresses and
// @domain lines are valid; with callout = false an unlisted address is
// unknown. A reload reads the file again; a broken file keeps the old
// list.
func TestRecipientsFile(t *testing.T) {
	backend := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("carol@asked.test")})
	dir := t.TempDir()
	listOnly, asked := filepath.Join(dir, "list-only.txt"), filepath.Join(dir, "asked.txt")
	write := func(path, text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(listOnly, "# mailboxes of the legacy system\nAlice@List.test\n\n@all.list.test  # catch-all domain\n")
	write(asked, "dave@asked.test\n")
	cfg := fmt.Sprintf(`listen = ["127.0.0.1:0"]
metrics_listen = "127.0.0.1:0"
admin_socket = "{{ADMIN}}"
[callout]
helo_name = "gw.test"
[[route]]
name = "legacy"
domains = ["list.test", "all.list.test"]
recipients_file = %q
callout = false
[[route]]
name = "asked"
domains = ["asked.test"]
servers = [%q]
recipients_file = %q
`, listOnly, backend.Addr(), asked)
	td := startDaemon(t, cfg)
	p := dialPolicy(t, td.policy)
	check := func(rcpt, want string) {
		t.Helper()
		if got := p.askAs("203.0.113.9", "", rcpt); got != want {
			t.Errorf("%s: %q, want %q", rcpt, got, want)
		}
	}
	check("alice@list.test", "DUNNO")
	check("ALICE@LIST.TEST", "DUNNO")
	check("anyone@all.list.test", "DUNNO")
	check("bob@list.test", "550 5.1.1 User unknown")
	check("dave@asked.test", "DUNNO") // listed: no callout
	if n := backend.Count("RCPT"); n != 0 {
		t.Errorf("backend saw %d RCPTs for listed or list-only addresses, want 0", n)
	}
	check("carol@asked.test", "DUNNO") // not listed: asked
	check("eve@asked.test", "550 5.1.1 User unknown in local recipient table")
	if n := backend.Count("RCPT"); n != 2 {
		t.Errorf("backend saw %d RCPTs, want 2", n)
	}
	wantMetrics(t, td, `calloutd_verdicts_total{source="list",verdict="valid"} 4`, `calloutd_verdicts_total{source="list",verdict="unknown"} 1`)

	write(listOnly, "alice@list.test\nbob@list.test\n")
	if err := td.d.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	check("bob@list.test", "DUNNO")
	check("anyone@all.list.test", "550 5.1.1 User unknown")

	write(listOnly, "alice@list.test\nnot an address\n")
	err := td.d.Reload()
	if err == nil || !strings.Contains(err.Error(), "list-only.txt:2:") {
		t.Errorf("Reload of a broken list: %v, want an error naming list-only.txt:2", err)
	}
	check("bob@list.test", "DUNNO") // the old list stays
	wantMetrics(t, td, `calloutd_config_reloads_total{result="failure"} 1`)
}

// A dry run's verdict line says what would have been sent.
func TestDryRunLogLine(t *testing.T) {
	backend := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users()})
	cfg, err := config.Parse("t.toml", []byte(fmt.Sprintf("[policy]\ndry_run = true\n[callout]\nhelo_name = \"gw.test\"\n[[route]]\nname = \"r\"\ndomains = [\"example.test\"]\nservers = [%q]\n", backend.Addr())))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log, _ := NewLogger(cfg.Log, &buf)
	h := NewHandler(cache.NewMemory(100), mustRouting(t, cfg), log, nil)
	for range 2 {
		if got := h.HandlePolicy(context.Background(), &policyd.Request{ProtocolState: "RCPT", Recipient: "bob@example.test"}); got != policyd.Dunno {
			t.Fatalf("dry run answered %q", got)
		}
	}
	for _, want := range []string{
		`cached=false action=DUNNO route=r`,
		`dry_run=true would_action="550 5.1.1 User unknown in local recipient table" attempts=1`,
		`cached=true action=DUNNO route=r`,
		`dry_run=true would_action="550 5.1.1 User unknown in local recipient table (cached verdict)"` + "\n",
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, buf.String())
		}
	}
}

// With recipient_delimiter, every extension of a mailbox is one verdict:
// the backend is asked about the base address once. Without it, the whole
// address is asked.
func TestRecipientDelimiter(t *testing.T) {
	backend := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("bob@example.test", "bob+tag@other.test", "john-smith@example.test")})
	cfg := gatewayConfig("", quoted(backend.Addr())) + `recipient_delimiter = "+-"
` + fmt.Sprintf(`[[route]]
name = "plain"
domains = ["other.test"]
servers = [%q]
`, backend.Addr())
	td := startDaemon(t, cfg)
	p := dialPolicy(t, td.policy)
	for _, c := range []struct{ rcpt, want string }{
		{"bob+news@example.test", "DUNNO"},
		{"bob-x@example.test", "DUNNO"},
		{"bob@example.test", "DUNNO"},
		{"eve+a@example.test", unknownAnswer}, // eve@ unknown, then eve+a@ asked too
		{"eve+b@example.test", unknownAnswer}, // eve@ cached, eve+b@ asked
		{"john-smith@example.test", "DUNNO"},  // john@ unknown, john-smith@ exists
		{"Owner-list@example.test", unknownAnswer},
		{"bob+tag@other.test", "DUNNO"}, // no delimiter on this route: asked whole
	} {
		if got := p.askAs("203.0.113.9", "", c.rcpt); got != c.want {
			t.Errorf("%s: %q, want %q", c.rcpt, got, c.want)
		}
	}
	var rcpts []string
	for _, l := range backend.Lines() {
		if strings.HasPrefix(l, "RCPT") {
			rcpts = append(rcpts, l)
		}
	}
	want := []string{"RCPT TO:<bob@example.test>", "RCPT TO:<eve@example.test>", "RCPT TO:<eve+a@example.test>",
		"RCPT TO:<eve+b@example.test>", "RCPT TO:<john@example.test>", "RCPT TO:<john-smith@example.test>",
		"RCPT TO:<Owner-list@example.test>", "RCPT TO:<bob+tag@other.test>"}
	if fmt.Sprint(rcpts) != fmt.Sprint(want) {
		t.Errorf("backend saw %q, want %q", rcpts, want)
	}
}

// A route's source_address is where its callouts leave from (Linux routes
// all of 127.0.0.0/8 to lo, so 127.0.0.2 is this host's).
func TestSourceAddress(t *testing.T) {
	backend := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("bob@example.test", "bob@other.test")})
	cfg := gatewayConfig("", quoted(backend.Addr())) + `source_address = "127.0.0.2"
` + fmt.Sprintf(`[[route]]
name = "other"
domains = ["other.test"]
servers = [%q]
source_address = ["127.0.0.3"]
`, backend.Addr())
	td := startDaemon(t, cfg)
	p := dialPolicy(t, td.policy)
	p.askAs("203.0.113.9", "", "bob@example.test")
	p.askAs("203.0.113.9", "", "bob@other.test")
	if got := backend.Peers(); got["127.0.0.2"] != 1 || got["127.0.0.3"] != 1 || len(got) != 2 {
		t.Errorf("backend saw connections from %v, want one from 127.0.0.2 and one from 127.0.0.3", got)
	}
}

// Internationalised addresses: a U-label domain and its A-label share one
// verdict; a UTF-8 local part is asked, with MAIL ... SMTPUTF8, only of a
// server that announces SMTPUTF8; elsewhere it is DUNNO (never a 5xx or a
// deferral: the backend could not be asked), counted by reason.
func TestInternationalisedAddresses(t *testing.T) {
	utf8Backend := smtptest.NewServer(t, smtptest.Behavior{
		EHLO: "250-utf8.test\r\n250-PIPELINING\r\n250-SMTPUTF8\r\n250 8BITMIME",
		Rcpt: smtptest.Users("jöhn@xn--bcher-kva.example", "bob@xn--bcher-kva.example"),
	})
	asciiBackend := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("bob@other.test")})
	cfg := fmt.Sprintf(`listen = ["127.0.0.1:0"]
metrics_listen = "127.0.0.1:0"
admin_socket = "{{ADMIN}}"
[callout]
helo_name = "gw.test"
unreachable_action = "defer"
[[route]]
name = "idn"
domains = ["bücher.example"]
servers = [%q]
[[route]]
name = "ascii"
domains = ["other.test"]
servers = [%q]
`, utf8Backend.Addr(), asciiBackend.Addr())
	td := startDaemon(t, cfg)
	p := dialPolicy(t, td.policy)
	for _, c := range []struct{ rcpt, want string }{
		{"jöhn@bücher.example", "DUNNO"},
		{"jöhn@xn--bcher-kva.example", "DUNNO"}, // the same mailbox: cached
		{"JÖHN@BÜCHER.example", "DUNNO"},
		{"bob@BÜCHER.EXAMPLE", "DUNNO"},
		{"jöhn@other.test", "DUNNO"}, // the server lacks SMTPUTF8
		{"bob@other.test", "DUNNO"},
		{"nobody@other.test", unknownAnswer},
		{"jo\u0308hn@bücher.example", "DUNNO"}, // not NFC: refused before any SMTP
	} {
		if got := p.askAs("203.0.113.9", "", c.rcpt); got != c.want {
			t.Errorf("%q: %q, want %q", c.rcpt, got, c.want)
		}
	}
	var lines []string
	for _, l := range utf8Backend.Lines() {
		if strings.HasPrefix(l, "MAIL") || strings.HasPrefix(l, "RCPT") {
			lines = append(lines, l)
		}
	}
	// Only ASCII case is folded for cache keys: JÖHN is asked on its own
	// (the backend decides what its case means).
	want := []string{"MAIL FROM:<> SMTPUTF8", "RCPT TO:<jöhn@xn--bcher-kva.example>", "RCPT TO:<JÖHN@xn--bcher-kva.example>",
		"RCPT TO:<bob@xn--bcher-kva.example>"}
	if fmt.Sprint(lines) != fmt.Sprint(want) {
		t.Errorf("SMTPUTF8 backend saw %q, want %q", lines, want)
	}
	for _, l := range asciiBackend.Lines() {
		if strings.Contains(l, "ö") || strings.Contains(l, "SMTPUTF8") {
			t.Errorf("backend without SMTPUTF8 got %q", l)
		}
	}
	wantMetrics(t, td, `calloutd_backend_failures_total{reason="no_smtputf8",server="`+asciiBackend.Addr()+`"} 1`,
		`calloutd_verdicts_total{source="callout",verdict="unreachable"} 1`)
}

// A catch-all backend is noticed: 6 distinct recipients of its domain in
// a row cost it at most 3 RCPTs (the first, the probe, and one racing the
// probe at most), the rest get DUNNO without a callout; a domain whose
// backend rejects the probe is verified as before.
func TestCatchallDetection(t *testing.T) {
	all := smtptest.NewServer(t, smtptest.Behavior{}) // accepts everyone
	picky := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("alice@picky.test", "bob@picky.test")})
	cfg := fmt.Sprintf(`listen = ["127.0.0.1:0"]
metrics_listen = "127.0.0.1:0"
admin_socket = "{{ADMIN}}"
[callout]
helo_name = "gw.test"
probe_catchall = true
[[route]]
name = "all"
domains = ["all.test"]
servers = [%q]
[[route]]
name = "picky"
domains = ["picky.test"]
servers = [%q]
`, all.Addr(), picky.Addr())
	td := startDaemon(t, cfg)
	p := dialPolicy(t, td.policy)
	for i := range 6 {
		if got := p.askAs("203.0.113.9", "", fmt.Sprintf("user%d@all.test", i)); got != "DUNNO" {
			t.Errorf("user%d@all.test: %q", i, got)
		}
	}
	t.Logf("catch-all backend: %d RCPTs for 6 recipients", all.Count("RCPT"))
	if n := all.Count("RCPT"); n > 3 {
		t.Errorf("catch-all backend saw %d RCPTs for 6 recipients, want at most 3", n)
	}
	var probes int
	for _, l := range all.Lines() {
		if strings.HasPrefix(l, "RCPT TO:<") && !strings.HasPrefix(l, "RCPT TO:<user") {
			probes++
		}
	}
	if probes != 1 {
		t.Errorf("%d probe RCPTs among %q, want 1", probes, all.Lines())
	}
	// picky.test: probed once, rejected; its recipients are still verified.
	for _, c := range []struct{ rcpt, want string }{
		{"alice@picky.test", "DUNNO"},
		{"bob@picky.test", "DUNNO"},
		{"eve@picky.test", unknownAnswer},
	} {
		if got := p.askAs("203.0.113.9", "", c.rcpt); got != c.want {
			t.Errorf("%s: %q, want %q", c.rcpt, got, c.want)
		}
	}
	if n := picky.Count("RCPT"); n != 4 {
		t.Errorf("picky backend saw %d RCPTs, want 4 (3 recipients and one probe)", n)
	}
	body := httpGet(t, "http://"+td.metrics+"/metrics", 200)
	if n, ok := metricValue(body, `calloutd_verdicts_total{source="catchall",verdict="valid"}`); !ok || n < 3 {
		t.Errorf("answered as catch-all without a callout: %v, want at least 3 of the 6", n)
	}
	wantMetrics(t, td, `calloutd_catchall_domains 1`, `calloutd_catchall_probes_total{result="catchall"} 1`,
		`calloutd_catchall_probes_total{result="not_catchall"} 1`)
	resp, err := Admin(context.Background(), td.admin, AdminRequest{Op: "lookup", Address: "@all.test"})
	if err != nil || !resp.Found || resp.Entry.Verdict != "valid" {
		t.Errorf("lookup @all.test: %+v, %v; want the catch-all verdict", resp, err)
	}
	// Flushing the domain forgets its catch-all verdict, and the gauge
	// says so.
	if resp, err := Admin(context.Background(), td.admin, AdminRequest{Op: "flush", Domain: "all.test"}); err != nil || resp.Error != "" {
		t.Fatalf("flush @all.test: %+v %v", resp, err)
	}
	wantMetrics(t, td, `calloutd_catchall_domains 0`)
}

// STARTTLS on callouts: opportunistic by default (encrypted when
// announced, plain text when the backend's TLS is broken), required
// (no TLS, no verdict: DUNNO), verified against a CA file and a name; what
// a server sends between its 220 and the handshake never counts.
func TestCalloutTLS(t *testing.T) {
	srvTLS, caFile := smtptest.TLSConfig(t)
	users := smtptest.Users("alice@example.test")
	withTLS := smtptest.NewServer(t, smtptest.Behavior{TLS: srvTLS, Rcpt: users})
	plain := smtptest.NewServer(t, smtptest.Behavior{Rcpt: users})
	// Announces STARTTLS, says 220, and cannot do TLS.
	broken := smtptest.NewServer(t, smtptest.Behavior{Rcpt: users, EHLO: "250-broken\r\n250-STARTTLS\r\n250 8BITMIME",
		Raw: map[string]string{"STARTTLS": "220 2.0.0 go ahead\r\n"}})
	// Injects a reply after its 220 (a man in the middle would).
	injecting := smtptest.NewServer(t, smtptest.Behavior{TLS: srvTLS, Rcpt: users,
		Raw: map[string]string{"STARTTLS": "220 2.0.0 Ready\r\n250 2.1.5 injected\r\n"}})
	route := func(name, server, extra string) string {
		return fmt.Sprintf("[[route]]\nname = %q\ndomains = [\"%s.test\"]\nservers = [%q]\n%s\n", name, name, server, extra)
	}
	cfg := `listen = ["127.0.0.1:0"]
metrics_listen = "127.0.0.1:0"
admin_socket = "{{ADMIN}}"
[callout]
helo_name = "gw.test"
` + route("opp", withTLS.Addr(), "") + route("plain", plain.Addr(), "") + route("broken", broken.Addr(), "") +
		route("inject", injecting.Addr(), "") +
		route("req", plain.Addr(), `tls = "required"`) +
		route("verified", withTLS.Addr(), fmt.Sprintf("tls = \"required\"\ntls_verify = true\ntls_ca_file = %q\ntls_server_name = \"mail.example.test\"", caFile)) +
		route("wrongname", withTLS.Addr(), fmt.Sprintf("tls = \"required\"\ntls_verify = true\ntls_ca_file = %q\ntls_server_name = \"other.example.test\"", caFile))
	// The routes' domains are <name>.test; the backends know
	// alice@example.test only, so every address here is unknown to them:
	// a 550 proves the backend was asked.
	td := startDaemon(t, cfg)
	p := dialPolicy(t, td.policy)
	for _, c := range []struct{ rcpt, want string }{
		{"bob@opp.test", unknownAnswer},
		{"bob@plain.test", unknownAnswer},
		{"bob@broken.test", unknownAnswer}, // TLS failed: asked again in plain text
		{"bob@inject.test", unknownAnswer}, // the injected 250 is dropped
		{"bob@req.test", "DUNNO"},          // required, not announced: cannot be asked
		{"bob@verified.test", unknownAnswer},
		{"bob@wrongname.test", "DUNNO"}, // certificate not for that name
	} {
		if got := p.askAs("203.0.113.9", "", c.rcpt); got != c.want {
			t.Errorf("%s: %q, want %q", c.rcpt, got, c.want)
		}
	}
	if n := withTLS.TLSSessions(); n < 2 {
		t.Errorf("TLS backend upgraded %d sessions, want at least 2 (opp, verified)", n)
	}
	if n := injecting.TLSSessions(); n != 1 {
		t.Errorf("injecting backend upgraded %d sessions, want 1", n)
	}
	ehlos := 0
	for _, l := range withTLS.Lines() {
		if strings.HasPrefix(l, "EHLO") {
			ehlos++
		}
	}
	if ehlos < 2*withTLS.TLSSessions() {
		t.Errorf("%d EHLOs for %d TLS sessions: EHLO must be said again after STARTTLS", ehlos, withTLS.TLSSessions())
	}
	wantMetrics(t, td, `calloutd_backend_failures_total{reason="tls",server="`+plain.Addr()+`"} 1`)
}

// Servers from DNS: a route's "mx:" entry is resolved through [dns]
// resolver (a loopback responder here); a DNS failure makes the route's
// servers unavailable (DUNNO), never unknown.
func TestMXServers(t *testing.T) {
	backend := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("alice@example.test")})
	_, port, _ := net.SplitHostPort(backend.Addr())
	dns := dnstest.Start(t)
	dns.SetMX("backend.test", 300, dnstest.MX{Pref: 10, Host: "mx1.backend.test"})
	dns.SetAddrs("mx1.backend.test", 300, netip.MustParseAddr("127.0.0.1"))
	dns.SetRcode("broken.test", dnsmessage.RCodeServerFailure)
	td := startDaemon(t, fmt.Sprintf(`listen = ["127.0.0.1:0"]
metrics_listen = "127.0.0.1:0"
admin_socket = "{{ADMIN}}"
[dns]
resolver = %q
[callout]
helo_name = "gw.test"
[[route]]
name = "mx"
domains = ["example.test"]
servers = ["mx:backend.test:%s"]
[[route]]
name = "broken"
domains = ["broken.example"]
servers = ["mx:broken.test:%s"]
`, dns.Addr(), port, port))
	p := dialPolicy(t, td.policy)
	for _, c := range []struct{ rcpt, want string }{
		{"alice@example.test", "DUNNO"},
		{"bob@example.test", unknownAnswer},
		{"bob@broken.example", "DUNNO"},
	} {
		if got := p.askAs("203.0.113.9", "", c.rcpt); got != c.want {
			t.Errorf("%s: %q, want %q", c.rcpt, got, c.want)
		}
	}
	if n := backend.Count("RCPT"); n != 2 {
		t.Errorf("backend found through MX saw %d RCPTs, want 2", n)
	}
	wantMetrics(t, td, `calloutd_backend_failures_total{reason="dns",server="mx:broken.test:`+port+`"} 1`)
}

// metricValue reads one series' value from a scrape.
func metricValue(body, series string) (float64, bool) {
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}
