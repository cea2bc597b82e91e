package redistest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStartKillRestart(t *testing.T) {
	t.Parallel()
	s := Start(t)
	if want := "127.0.0.1:" + strconv.Itoa(s.Port()); s.Addr() != want {
		t.Fatalf("Addr() = %q, want %q", s.Addr(), want)
	}
	if got := s.CLI("SET", "k", "v"); got != "OK" {
		t.Fatalf("SET: %q", got)
	}
	if got := s.CLI("GET", "k"); got != "v" {
		t.Fatalf("GET: %q", got)
	}
	if got := s.CLI("CONFIG", "GET", "save"); got != "save" { // save "": no snapshots
		t.Fatalf("CONFIG GET save: %q", got)
	}
	if got := s.CLI("CONFIG", "GET", "appendonly"); got != "appendonly\nno" {
		t.Fatalf("CONFIG GET appendonly: %q", got)
	}
	if got := s.CLI("NOSUCHCOMMAND"); !strings.HasPrefix(got, "ERR unknown command") {
		t.Fatalf("an error reply comes back as text: %q", got)
	}

	pid := s.Pid()
	if pid <= 0 {
		t.Fatalf("Pid() = %d", pid)
	}
	s.Kill()
	s.Kill() // idempotent
	if s.Pid() != 0 {
		t.Fatalf("Pid() after Kill = %d, want 0", s.Pid())
	}
	if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("process group %d after Kill: %v, want ESRCH", pid, err)
	}
	if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still accepts connections after Kill", s.Addr())
	}

	port := s.Port()
	s.Restart()
	if s.Port() != port {
		t.Fatalf("port after Restart %d, want %d", s.Port(), port)
	}
	if s.Pid() == pid || s.Pid() <= 0 {
		t.Fatalf("pid after Restart %d (before %d)", s.Pid(), pid)
	}
	if got := s.CLI("GET", "k"); got != "" {
		t.Fatalf("GET after Restart: %q, want nothing", got)
	}
	if got := s.CLI("DBSIZE"); got != "0" {
		t.Fatalf("DBSIZE after Restart: %q", got)
	}
	s.Restart() // of a running server
	if got := s.CLI("PING"); got != "PONG" {
		t.Fatalf("PING: %q", got)
	}
}

func TestStartRequirepass(t *testing.T) {
	t.Parallel()
	s := Start(t, "requirepass s3cret")
	if got := s.CLI("PING"); got != "PONG" {
		t.Fatalf("PING with the password: %q", got)
	}
	_, err := call(s.Addr(), "", "PING")
	var re respError
	if !errors.As(err, &re) || !strings.HasPrefix(string(re), "NOAUTH") {
		t.Fatalf("PING without the password: %v, want NOAUTH", err)
	}
	s.Kill()
	s.Restart()
	if got := s.CLI("PING"); got != "PONG" {
		t.Fatalf("PING after Restart: %q", got)
	}
}

// fakeTB records a Fatal instead of failing the real test.
type fakeTB struct {
	testing.TB
	msg string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestCLIFailsWhenRedisCLIFails(t *testing.T) {
	t.Parallel()
	s := Start(t)
	s.Kill()
	fake := &fakeTB{TB: t}
	s.t = fake
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.CLI("PING")
	}()
	<-done
	if !strings.Contains(fake.msg, "Could not connect") {
		t.Fatalf("CLI against a dead server: failure %q", fake.msg)
	}
}

func TestStartFailureQuotesLog(t *testing.T) {
	t.Parallel()
	fake := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Start(fake, "no-such-directive yes")
	}()
	<-done
	if !strings.Contains(fake.msg, "redis-server exited") || !strings.Contains(fake.msg, "no-such-directive") {
		t.Fatalf("Start with a bad config line: failure %q", fake.msg)
	}
}

// A port taken by someone else, for the server or for its cluster bus, is
// told apart from other failures, so that Start picks another port.
func TestPortTaken(t *testing.T) {
	t.Parallel()
	for _, bus := range []bool{false, true} {
		m, offset := modeRedis, 0
		if bus {
			m, offset = modeCluster, 10000
		}
		s := newServer(t, "probe", m, nil)
		var l net.Listener
		for try := 0; l == nil; try++ {
			// Other tests may take the port between freePort and Listen.
			s.port = freePort(t, true)
			var err error
			if l, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port+offset))); err != nil && try == 20 {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(s.conf, []byte(s.config(nil)), 0o600); err != nil {
			t.Fatal(err)
		}
		err := s.boot()
		l.Close()
		if !errors.Is(err, errPortTaken) {
			t.Fatalf("bus %v: boot on a taken port: %v, want errPortTaken", bus, err)
		}
		if s.Pid() != 0 {
			t.Fatalf("bus %v: a server left running after a failed boot", bus)
		}
	}
}

func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	start := time.Now()
	sn := StartSentinel(t)
	t.Logf("StartSentinel took %v", time.Since(start))
	if sn.MasterName() != "calloutd-test" {
		t.Fatalf("MasterName() = %q", sn.MasterName())
	}
	if n := len(sn.Addrs()); n != 3 {
		t.Fatalf("%d sentinel addresses", n)
	}
	oldMaster, oldReplica := sn.Master, sn.Replica
	if got := sn.CurrentMaster(); got != oldMaster.Addr() {
		t.Fatalf("CurrentMaster() = %s, want %s", got, oldMaster.Addr())
	}
	if got := oldMaster.CLI("SET", "before", "x"); got != "OK" {
		t.Fatalf("SET on the master: %q", got)
	}
	if got := oldMaster.CLI("WAIT", "1", "5000"); got != "1" {
		t.Fatalf("WAIT for the replica: %q", got)
	}
	if got := oldReplica.CLI("SET", "k", "v"); !strings.HasPrefix(got, "READONLY") {
		t.Fatalf("SET on the replica: %q", got)
	}

	start = time.Now()
	addr := sn.Failover()
	t.Logf("Failover took %v", time.Since(start))
	if addr == oldMaster.Addr() {
		t.Fatalf("Failover returned the old master %s", addr)
	}
	if addr != oldReplica.Addr() || sn.Master != oldReplica || sn.Replica != oldMaster {
		t.Fatalf("Failover returned %s; Master %s, Replica %s; want the former replica %s as master",
			addr, sn.Master.Addr(), sn.Replica.Addr(), oldReplica.Addr())
	}
	for _, a := range sn.Addrs() {
		got, err := masterAddr(&Server{port: mustPort(t, a)})
		if err != nil || got != addr {
			t.Fatalf("sentinel %s reports master %s (%v), want %s", a, got, err, addr)
		}
	}
	if got := sn.CurrentMaster(); got != addr {
		t.Fatalf("CurrentMaster() = %s, want %s", got, addr)
	}
	if got := sn.Master.CLI("ROLE"); !strings.HasPrefix(got, "master") {
		t.Fatalf("ROLE of the new master: %q", got)
	}
	if got := sn.Master.CLI("SET", "after", "y"); got != "OK" {
		t.Fatalf("SET on the new master: %q", got)
	}
	if got := sn.Master.CLI("GET", "after"); got != "y" {
		t.Fatalf("GET on the new master: %q", got)
	}
	if got := sn.Master.CLI("GET", "before"); got != "x" {
		t.Fatalf("data written before the failover: %q", got)
	}

	// A second failover would go back once the sentinels have turned the
	// former master into a replica, some 10 s later: too slow for every
	// CI run, so not tried here.
}

func mustPort(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCluster(t *testing.T) {
	t.Parallel()
	start := time.Now()
	c := StartCluster(t)
	t.Logf("StartCluster took %v", time.Since(start))
	if n := len(c.Addrs()); n != 3 {
		t.Fatalf("%d node addresses", n)
	}

	// Keys until every node owns one, plus hash-tagged ones.
	keys := []string{"", "foo", "{user1000}.following", "{user1000}.followers", "a{}b", "{}{x}", "x{y}z{w}"}
	owned := map[*Server]bool{}
	for i := 0; len(owned) < 3; i++ {
		k := "key:" + strconv.Itoa(i)
		if !owned[c.NodeFor(k)] {
			owned[c.NodeFor(k)] = true
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		want, err := strconv.Atoi(c.Nodes[0].CLI("CLUSTER", "KEYSLOT", k))
		if err != nil || keySlot(k) != want {
			t.Fatalf("slot of %q: computed %d, CLUSTER KEYSLOT says %d (%v)", k, keySlot(k), want, err)
		}
		owner := c.NodeFor(k)
		if got := owner.CLI("SET", k, "v"); got != "OK" {
			t.Fatalf("SET %q on its owner %s: %q", k, owner.Addr(), got)
		}
		if got := owner.CLI("GET", k); got != "v" {
			t.Fatalf("GET %q on its owner %s: %q", k, owner.Addr(), got)
		}
		for _, n := range c.Nodes {
			if n == owner {
				continue
			}
			want := fmt.Sprintf("MOVED %d %s", keySlot(k), owner.Addr())
			if got := n.CLI("SET", k, "w"); got != want {
				t.Fatalf("SET %q on %s, not its owner: %q, want %q", k, n.Addr(), got, want)
			}
		}
	}
	if keySlot("{user1000}.following") != keySlot("{user1000}.followers") {
		t.Fatal("keys with one hash tag are in different slots")
	}
}

func TestCRC16(t *testing.T) {
	// The check value of CRC-16/XMODEM, and the Redis Cluster spec's example.
	if got := crc16("123456789"); got != 0x31c3 {
		t.Fatalf("crc16(123456789) = %#x, want 0x31c3", got)
	}
}
