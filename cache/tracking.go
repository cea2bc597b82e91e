package cache

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The Redis store's local layer stays coherent through one invalidation
// connection per master: RESP3, CLIENT TRACKING ON BCAST PREFIX <prefix>,
// so Redis pushes the name of every key under the prefix that changes
// (SET, DEL, UNLINK, expiry, eviction, FLUSHALL), whoever changed it. The
// connection asks ROLE every PingEvery; a copy is served only while every
// master answered within Freshness (100 ms) and still says it is a master,
// so a silent break or a demotion by a failover costs at most that long, and a lost connection empties the layer at once. With Sentinel,
// the manager also asks the sentinels for the master every 250 ms.

// tracker is the invalidation connection to one master.
type tracker struct {
	addr   string
	heard  atomicTime // last frame read; zero while not connected
	cancel context.CancelFunc
	done   chan struct{}
}

// atomicTime is a time as unix nanoseconds, 0 for none.
type atomicTime struct{ ns atomic.Int64 }

func (t *atomicTime) store(at time.Time) { t.ns.Store(at.UnixNano()) }
func (t *atomicTime) clear()             { t.ns.Store(0) }
func (t *atomicTime) load() int64        { return t.ns.Load() }

var epochSeed = maphash.MakeSeed()

// epoch is the invalidation counter of key's bucket.
func (s *Redis) epoch(key string) *atomic.Uint32 {
	return &s.epochs[maphash.String(epochSeed, key)%epochBuckets]
}

// nearUsable tells whether the local layer may answer: there is at least
// one master, and every master's invalidation connection is up and heard
// from recently.
func (s *Redis) nearUsable(now time.Time) bool {
	ts := *s.trackers.Load()
	if len(ts) == 0 {
		return false
	}
	limit := now.Add(-Freshness).UnixNano()
	for _, t := range ts {
		if h := t.heard.load(); h == 0 || h < limit {
			return false
		}
	}
	return true
}

// dropNear empties the local layer and makes lookups already under way
// discard what they read.
func (s *Redis) dropNear() {
	s.gen.Add(1)
	s.near.DeleteFunc(func(string) bool { return true })
	s.wakeAll()
}

// invalidate applies one push message from Redis.
func (s *Redis) invalidate(p respPush) {
	if len(p) != 2 || p[0] != "invalidate" {
		return // another kind of push: not ours to handle
	}
	keys, ok := p[1].([]any)
	if !ok {
		// nil: FLUSHALL / FLUSHDB, or the server lost track.
		s.dropNear()
		s.fallback.DeleteFunc(func(string) bool { return true })
		return
	}
	ctx := context.Background()
	for _, k := range keys {
		ks, _ := k.(string)
		switch {
		case len(ks) > len(s.rcptPrefix) && ks[:len(s.rcptPrefix)] == s.rcptPrefix:
			key := ks[len(s.rcptPrefix):]
			// Counter first, then the copy: a lookup that installs
			// its copy after the Delete sees the counter move.
			s.epoch(key).Add(1)
			_ = s.near.Delete(ctx, key)
			_ = s.fallback.Delete(ctx, key)
			_ = s.own.Delete(ctx, key)
			s.wakeKey(key)
		case len(ks) > len(s.leasePrefix) && ks[:len(s.leasePrefix)] == s.leasePrefix:
			s.wakeKey(ks[len(s.leasePrefix):])
		}
	}
}

// manage keeps one tracker per master: every second, and whenever a
// tracker connects or drops, it asks which servers are masters.
func (s *Redis) manage() {
	defer s.wg.Done()
	active := map[string]*tracker{}
	defer func() {
		for _, t := range active {
			t.cancel()
			<-t.done
		}
	}()
	every := time.Second
	if len(s.sentinels) > 0 {
		every = 250 * time.Millisecond
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if masters, err := s.masters(s.ctx); err == nil {
			changed := false
			for _, a := range masters {
				if active[a] == nil {
					active[a] = s.startTracker(a)
					changed = true
				}
			}
			for a, t := range active {
				if !slices.Contains(masters, a) {
					t.cancel()
					<-t.done
					delete(active, a)
					changed = true
				}
			}
			if changed {
				list := make([]*tracker, 0, len(active))
				for _, t := range active {
					list = append(list, t)
				}
				s.trackers.Store(&list)
				// A master we did not watch may have changed keys.
				s.dropNear()
			}
		}
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		case <-s.kick:
		}
	}
}

// Watched returns the masters whose invalidations the store follows.
func (s *Redis) Watched() []string {
	var addrs []string
	for _, t := range *s.trackers.Load() {
		addrs = append(addrs, t.addr)
	}
	slices.Sort(addrs)
	return addrs
}

// masters returns the address of every master to watch.
func (s *Redis) masters(ctx context.Context) ([]string, error) {
	timeout := s.o.DialTimeout + s.o.ReadTimeout
	switch {
	case s.cluster != nil:
		// CLUSTER NODES, not SLOTS: a master that has no slots yet
		// (a migration into it) must be watched too.
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		text, err := s.cluster.ClusterNodes(ctx).Result()
		if err != nil {
			return nil, err
		}
		addrs := clusterMasters(text)
		if len(addrs) == 0 {
			return nil, errors.New("CLUSTER NODES lists no master")
		}
		return addrs, nil
	case len(s.sentinels) > 0:
		// Each sentinel gets its own deadline: a dead first one must
		// not use up the others' time.
		var err error
		for _, sc := range s.sentinels {
			sctx, cancel := context.WithTimeout(ctx, timeout)
			var hp []string
			hp, err = sc.GetMasterAddrByName(sctx, s.o.MasterName).Result()
			cancel()
			if err == nil && len(hp) == 2 {
				return []string{net.JoinHostPort(hp[0], hp[1])}, nil
			}
		}
		return nil, fmt.Errorf("no sentinel knows master %q: %w", s.o.MasterName, err)
	}
	return []string{s.o.Addrs[0]}, nil
}

// clusterMasters reads the masters' addresses from CLUSTER NODES: lines of
// "id ip:port@cport flags master ...", flags such as "myself,master";
// failed and address-less nodes are left out.
func clusterMasters(text string) []string {
	var addrs []string
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		flags := strings.Split(f[2], ",")
		if !slices.Contains(flags, "master") || slices.Contains(flags, "fail") || slices.Contains(flags, "noaddr") {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		if h, p, err := net.SplitHostPort(addr); err == nil && h != "" && p != "0" && !slices.Contains(addrs, addr) {
			addrs = append(addrs, addr)
		}
	}
	slices.Sort(addrs)
	return addrs
}

func (s *Redis) startTracker(addr string) *tracker {
	ctx, cancel := context.WithCancel(s.ctx)
	t := &tracker{addr: addr, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(t.done)
		s.runTracker(ctx, t)
	}()
	return t
}

// runTracker keeps t connected, reconnecting with a growing pause (100 ms
// to 2 s). A lost channel is logged once, and its return once.
func (s *Redis) runTracker(ctx context.Context, t *tracker) {
	pause := 100 * time.Millisecond
	lost := false
	for ctx.Err() == nil {
		connected, err := s.track(ctx, t, func() {
			if lost {
				lost = false
				s.log.Info("redis invalidation channel back; local layer on again", "master", t.addr)
			}
		})
		t.heard.clear()
		s.dropNear()
		if ctx.Err() != nil {
			return
		}
		s.o.OnError("tracking")
		if connected {
			pause = 100 * time.Millisecond
		}
		if !lost {
			lost = true
			s.log.Warn("redis invalidation channel lost; local layer off, every lookup asks Redis", "master", t.addr, "err", err)
		}
		select {
		case s.kick <- struct{}{}:
		default:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(pause*2, 2*time.Second)
	}
}

// track runs one invalidation connection until it fails; connected tells
// whether tracking was ever switched on.
func (s *Redis) track(ctx context.Context, t *tracker, up func()) (connected bool, err error) {
	d := net.Dialer{Timeout: s.o.DialTimeout}
	c, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return false, err
	}
	if s.o.TLS != nil {
		cfg := s.o.TLS.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(t.addr)
		}
		tc := tls.Client(c, cfg)
		_ = tc.SetDeadline(time.Now().Add(s.o.DialTimeout))
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return false, err
		}
		c = tc
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	defer c.Close()
	br, bw := bufio.NewReader(c), bufio.NewWriter(c)

	_ = c.SetDeadline(time.Now().Add(s.o.DialTimeout + s.o.ReadTimeout))
	hello := []string{"HELLO", "3"}
	if s.o.Password != "" {
		user := s.o.Username
		if user == "" {
			user = "default"
		}
		hello = append(hello, "AUTH", user, s.o.Password)
	}
	hello = append(hello, "SETNAME", "calloutd-invalidations")
	if err := expectOK(br, bw, hello, false); err != nil {
		return false, fmt.Errorf("HELLO 3: %w", err)
	}
	if err := expectOK(br, bw, []string{"CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", s.o.KeyPrefix}, true); err != nil {
		return false, fmt.Errorf("CLIENT TRACKING: %w", err)
	}
	_ = c.SetWriteDeadline(time.Time{})

	// Regained: lookups that began before must not install what they read.
	s.gen.Add(1)
	t.heard.store(time.Now())
	up()
	select {
	case s.kick <- struct{}{}:
	default:
	}

	var wmu sync.Mutex
	pingDone := make(chan struct{})
	defer close(pingDone)
	go func() {
		tick := time.NewTicker(PingEvery)
		defer tick.Stop()
		for {
			select {
			case <-pingDone:
				return
			case <-tick.C:
			}
			wmu.Lock()
			_ = c.SetWriteDeadline(time.Now().Add(s.o.ReadTimeout))
			err := writeCommand(bw, "ROLE")
			wmu.Unlock()
			if err != nil {
				c.Close()
				return
			}
		}
	}()
	for {
		_ = c.SetReadDeadline(time.Now().Add(2*PingEvery + s.o.ReadTimeout))
		v, err := readValue(br)
		if err != nil {
			return true, err
		}
		switch v := v.(type) {
		case respPush:
			s.invalidate(v)
		case respError:
			return true, v
		case []any:
			// ROLE: a master demoted by a failover no longer sees
			// the writes; the manager finds the new one.
			if len(v) == 0 || v[0] != "master" {
				return true, fmt.Errorf("%s is no longer a master (ROLE %v)", t.addr, v)
			}
		}
		t.heard.store(time.Now())
	}
}

// expectOK sends one command and reads its reply, which must not be an
// error (and must be +OK when wantOK).
func expectOK(br *bufio.Reader, bw *bufio.Writer, args []string, wantOK bool) error {
	if err := writeCommand(bw, args...); err != nil {
		return err
	}
	for {
		v, err := readValue(br)
		if err != nil {
			return err
		}
		switch v := v.(type) {
		case respPush:
			continue // not the reply
		case respError:
			return v
		case string:
			if wantOK && v != "OK" {
				return fmt.Errorf("unexpected reply %q", v)
			}
		}
		return nil
	}
}
