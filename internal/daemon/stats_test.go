package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/calloutd/calloutd/cache"
	"github.com/calloutd/calloutd/callout"
	"github.com/calloutd/calloutd/internal/config"
	"github.com/calloutd/calloutd/internal/redistest"
	"github.com/calloutd/calloutd/internal/smtptest"
)

func statsConfig(extra, backend string) string {
	return fmt.Sprintf(`listen = ["127.0.0.1:0"]
metrics_listen = "127.0.0.1:0"
admin_socket = "{{ADMIN}}"
%s
[callout]
helo_name = "gw.test"
[[route]]
name = "main"
domains = ["example.test", ".sub.test"]
servers = [%q]
`, extra, backend)
}

// Every verdict counts toward its domain's licence count, cached ones
// too; a ".parent" route entry counts its subdomains together; a domain
// no route names is not counted.
func TestLicenceCountMemory(t *testing.T) {
	backend := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("alice@example.test", "bob@example.test", "carol@a.sub.test", "dave@b.sub.test")})
	td := startDaemon(t, statsConfig("", backend.Addr()))
	p := dialPolicy(t, td.policy)
	for _, rcpt := range []string{"alice@example.test", "Alice@Example.test", "bob@example.test", "nobody@example.test",
		"nobody@example.test", "ghost@example.test", "carol@a.sub.test", "dave@b.sub.test", "x@other.test"} {
		p.askAs("203.0.113.9", "", rcpt)
	}
	resp, err := Admin(context.Background(), td.admin, AdminRequest{Op: "report"})
	if err != nil {
		t.Fatal(err)
	}
	want := []DomainReport{
		{Domain: ".sub.test", Valid: 2, Callouts: 2},
		{Domain: "example.test", Valid: 2, Unknown: 2, Callouts: 4},
	}
	if fmt.Sprint(resp.Report) != fmt.Sprint(want) {
		t.Errorf("report %+v, want %+v", resp.Report, want)
	}
}

// With Redis the count is shared: two nodes verifying different (and
// the same) addresses add up to one set, readable by calloutd report
// without a daemon, and the gauge shows it.
func TestLicenceCountRedis(t *testing.T) {
	srv := redistest.Start(t)
	backend := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("alice@example.test", "bob@example.test", "carol@example.test")})
	cfgText := statsConfig(fmt.Sprintf("[cache]\nstore = \"redis\"\n[cache.redis]\naddrs = [%q]", srv.Addr()), backend.Addr())
	a, b := startDaemon(t, cfgText), startDaemon(t, cfgText)
	pa, pb := dialPolicy(t, a.policy), dialPolicy(t, b.policy)
	pa.askAs("203.0.113.9", "", "alice@example.test")
	pa.askAs("203.0.113.9", "", "bob@example.test")
	pb.askAs("203.0.113.9", "", "bob@example.test")
	pb.askAs("203.0.113.9", "", "carol@example.test")
	pb.askAs("203.0.113.9", "", "nobody@example.test")
	// Each node writes what it gathered at shutdown at the latest.
	a.stop(t)
	b.stop(t)
	day := time.Now().UTC().Format("20060102")
	if got := strings.TrimSpace(srv.CLI("PFCOUNT", "calloutd:stats:{example.test}:valid:"+day)); got != "3" {
		t.Errorf("PFCOUNT of today's valid key = %q, want 3", got)
	}
	if ttl := strings.TrimSpace(srv.CLI("TTL", "calloutd:stats:{example.test}:valid:"+day)); ttl == "-1" || ttl == "-2" {
		t.Errorf("valid key TTL %s, want one (window + 2 days)", ttl)
	}
	cfg, err := config.Parse("t.toml", []byte(strings.ReplaceAll(cfgText, "{{ADMIN}}", "/nonexistent/admin.sock")))
	if err != nil {
		t.Fatal(err)
	}
	store, err := NewStore(cfg, a.d.log, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	rows, err := Report(context.Background(), store.(cache.Tally), cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := []DomainReport{{Domain: "example.test", Valid: 3, Unknown: 1, Callouts: 4}}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Errorf("report %+v, want %+v", rows, want)
	}
}

// The licence count's day keys: a window of N days reads N keys, today's
// first; route entries name domains as configured.
func TestLicenceKeys(t *testing.T) {
	now := time.Date(2026, 12, 2, 23, 30, 0, 0, time.FixedZone("x", 2*3600)) // 21:30 UTC
	got := windowKeys("example.com", kindValid, 3*24*time.Hour, now)
	want := []string{"stats:{example.com}:valid:20261202", "stats:{example.com}:valid:20261201", "stats:{example.com}:valid:20261130"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("windowKeys = %q, want %q", got, want)
	}
	cfg := &config.Config{Routes: []config.Route{{Domains: []string{"example.com", ".example.com", ".b.example.com"}}}}
	n := newDomainNames(cfg)
	for d, want := range map[string]string{"example.com": "example.com", "a.example.com": ".example.com",
		"x.b.example.com": ".b.example.com", "b.example.com": ".example.com", "example.org": "", "com": ""} {
		if got := n.of(d); got != want {
			t.Errorf("of(%q) = %q, want %q", d, got, want)
		}
	}
}

// The gauge: set for the domains with data in the window that routes
// still name, removed for the others.
func TestLicenceGauge(t *testing.T) {
	tally := cache.NewMemoryTally(100)
	s := newStats(tally, 30*24*time.Hour, slogDiscard())
	cfg := &config.Config{Routes: []config.Route{{Domains: []string{"example.test", "gone.test"}}}}
	rt := &Routing{names: newDomainNames(cfg)}
	s.record(rt, "alice@example.test", callout.Valid, true)
	s.record(rt, "bob@example.test", callout.Valid, false)
	s.record(rt, "x@gone.test", callout.Valid, false)
	s.flush(context.Background())
	got := map[string]int64{}
	gauge := func(d string, n int64) { got[d] = n }
	s.gauges(context.Background(), gauge, []string{"example.test"}) // gone.test no longer named
	if got["example.test"] != 2 || got["gone.test"] != -1 || len(got) != 2 {
		t.Errorf("gauges %v, want example.test 2 and gone.test removed (-1)", got)
	}
	// A domain whose data left the window is forgotten.
	s.now = func() time.Time { return time.Now().Add(31 * 24 * time.Hour) }
	clear(got)
	s.gauges(context.Background(), gauge, []string{"example.test"})
	if got["example.test"] != -1 {
		t.Errorf("after the window: gauges %v, want example.test removed", got)
	}
}

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// A cached valid verdict for an address already gathered since the last
// flush is skipped (the filter); after a flush it counts again, so a
// mailbox answered only from the cache still counts on each day.
func TestLicenceRecentFilter(t *testing.T) {
	tally := cache.NewMemoryTally(100)
	s := newStats(tally, 30*24*time.Hour, slogDiscard())
	cfg := &config.Config{Routes: []config.Route{{Domains: []string{"example.test"}}}}
	rt := &Routing{names: newDomainNames(cfg)}
	today := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return today }
	pending := func() int {
		n := 0
		for i := range s.shards {
			for _, p := range s.shards[i].domains {
				n += len(p.valid)
			}
		}
		return n
	}
	for range 3 {
		s.record(rt, "alice@example.test", callout.Valid, false)
	}
	s.record(rt, "bob@example.test", callout.Valid, false)
	if n := pending(); n != 2 {
		t.Fatalf("%d addresses gathered, want 2", n)
	}
	s.flush(context.Background())
	today = today.Add(24 * time.Hour)
	s.record(rt, "alice@example.test", callout.Valid, false)
	if n := pending(); n != 1 {
		t.Fatalf("after a flush, alice's cached verdict gathered %d addresses, want 1", n)
	}
	s.flush(context.Background())
	for d, want := range map[string]int64{"20261202": 2, "20261203": 1} {
		if n, err := tally.CountDistinct(context.Background(), []string{tallyKey("example.test", kindValid, d)}); err != nil || n != want {
			t.Errorf("day %s: %d valid (%v), want %d", d, n, err, want)
		}
	}
}
