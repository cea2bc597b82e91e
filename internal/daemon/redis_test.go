package daemon

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/calloutd/calloutd/internal/redistest"
	"github.com/calloutd/calloutd/internal/smtptest"
)

func redisConfig(addr, servers string) string {
	return fmt.Sprintf(baseConfig, "", fmt.Sprintf("store = \"redis\"\n[cache.redis]\naddrs = [%q]\n", addr), servers)
}

// With the Redis store: verdicts are shared, unreachable ones stay on the
// node, a negative verdict reached under other routes is asked again, and
// the admin socket flushes Redis.
func TestRedisStoreDaemon(t *testing.T) {
	srv := redistest.Start(t)
	strict := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("alice@example.test")})
	lenient := smtptest.NewServer(t, smtptest.Behavior{}) // knows everyone (a migration target)
	a := startDaemon(t, redisConfig(srv.Addr(), quoted(strict.Addr())))
	b := startDaemon(t, redisConfig(srv.Addr(), quoted(strict.Addr())))
	pa, pb := dialPolicy(t, a.policy), dialPolicy(t, b.policy)

	const reject = "action=550 5.1.1 User unknown in local recipient table"
	if got := pa.ask("RCPT", "nobody@example.test"); got != reject+"\n\n" {
		t.Fatalf("a: %q", got)
	}
	waitKey(t, srv, "calloutd:rcpt:nobody@example.test") // the write is in the background
	if got := pb.ask("RCPT", "nobody@example.test"); got != reject+" (cached verdict)\n\n" {
		t.Errorf("b: %q, want a's verdict from Redis", got)
	}
	if n := strict.Count("RCPT"); n != 1 {
		t.Errorf("%d RCPTs, want 1", n)
	}

	// A node whose routes differ (a migration target added) does not
	// trust the other's negative verdict.
	c := startDaemon(t, redisConfig(srv.Addr(), quoted(strict.Addr()))+
		fmt.Sprintf("[[route]]\nname = \"new\"\ndomains = [\"example.test\"]\nservers = [%q]\n", lenient.Addr()))
	if got := dialPolicy(t, c.policy).ask("RCPT", "nobody@example.test"); got != "action=DUNNO\n\n" {
		t.Errorf("c (other routes): %q, want a fresh verdict from the second route", got)
	}

	// Unreachable: this node's network, never shared.
	dead := startDaemon(t, redisConfig(srv.Addr(), quoted(closedPort(t))))
	if got := dialPolicy(t, dead.policy).ask("RCPT", "carol@example.test"); got != "action=DUNNO\n\n" {
		t.Errorf("unreachable: %q", got)
	}
	time.Sleep(100 * time.Millisecond)
	if n := srv.CLI("EXISTS", "calloutd:rcpt:carol@example.test"); n != "0" {
		t.Error("an unreachable verdict was written to Redis")
	}
	if e, ok, _ := dead.d.store.Get(context.Background(), "carol@example.test"); !ok || e.Verdict != "unreachable" {
		t.Errorf("unreachable verdict not kept on its node: %+v %v", e, ok)
	}

	// The admin socket acts on Redis.
	resp, err := Admin(context.Background(), b.admin, AdminRequest{Op: "flush", Domain: "example.test"})
	if err != nil || resp.Removed < 1 {
		t.Fatalf("flush @example.test: %+v %v", resp, err)
	}
	if keys := srv.CLI("--scan", "--pattern", "calloutd:rcpt:*"); keys != "" {
		t.Errorf("keys left after the flush: %q", keys)
	}
	time.Sleep(100 * time.Millisecond)
	if got := pa.ask("RCPT", "nobody@example.test"); got != reject+"\n\n" {
		t.Errorf("a after the flush: %q, want a fresh verdict", got)
	}
	if got := httpGet(t, "http://"+a.metrics+"/readyz", 200); !strings.Contains(got, "store: redis, reachable") {
		t.Errorf("readyz: %q", got)
	}
}

// waitKey waits until key exists in Redis.
func waitKey(t *testing.T, srv *redistest.Server, key string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for srv.CLI("EXISTS", key) != "1" {
		if time.Now().After(deadline) {
			t.Fatalf("%s not written to Redis within 5s", key)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
