package daemon

import (
	"context"
	"hash/maphash"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/calloutd/calloutd/cache"
	"github.com/calloutd/calloutd/callout"
	"github.com/calloutd/calloutd/internal/config"
)

// The licence count: distinct valid recipients per domain over a rolling
// window ([stats] window), with the distinct unknown recipients seen and
// the callouts made. Verdicts are gathered in memory and written to the
// store's Tally every statsFlushEvery, one key per domain, kind and UTC
// day ("stats:{example.com}:valid:20261202"): with Redis the sketches are
// shared by every node; a report counts the union of the window's days.
// Only domains that routes name are counted (a route's ".example.com"
// counts all its subdomains together), so the number of series is the
// configuration's.

const (
	statsFlushEvery = 10 * time.Second
	statsShards     = 16
	// statsMaxPending bounds the addresses gathered between flushes; a
	// flush is started early at a quarter of it, and beyond it addresses
	// are dropped (counted in the log once per flush).
	statsMaxPending = 400_000
	// statsGaugeEvery is how often calloutd_valid_recipients is computed.
	statsGaugeEvery = 5 * time.Minute
)

// Kinds of tally keys.
const (
	kindValid    = "valid"
	kindUnknown  = "unknown"
	kindCallouts = "callouts"
)

type statsShard struct {
	mu      sync.Mutex
	domains map[string]*pendingDomain
	n       int // addresses held
}

type pendingDomain struct {
	valid, unknown map[string]struct{}
	callouts       int64
}

// stats gathers verdicts for the licence count.
type stats struct {
	tally  cache.Tally
	window time.Duration
	log    *slog.Logger
	seed   maphash.Seed
	shards [statsShards]statsShard
	dropN  int64
	dropMu sync.Mutex
	kick   chan struct{}
	now    func() time.Time
	// seen: domains with data in the window on this node, for the gauge.
	seenMu sync.Mutex
	seen   map[string]time.Time
	// recent is a lossy, lock-free filter of the keys recorded valid
	// since the last flush (each slot a key's hash mixed with gen): a
	// cached valid verdict for an address already gathered, nearly every
	// cached answer, then costs no lock and no map. A flush moves gen on,
	// which empties it.
	recent [statsRecentSlots]atomic.Uint64
	gen    atomic.Uint64
}

// statsRecentSlots sizes the filter (128 KiB): the addresses a gateway
// answers from the cache within one flush.
const statsRecentSlots = 1 << 14

func newStats(tally cache.Tally, window time.Duration, log *slog.Logger) *stats {
	s := &stats{tally: tally, window: window, log: log, seed: maphash.MakeSeed(), kick: make(chan struct{}, 1),
		now: time.Now, seen: make(map[string]time.Time)}
	for i := range s.shards {
		s.shards[i].domains = make(map[string]*pendingDomain)
	}
	return s
}

// record notes a verdict about key ("local@domain", lower case) for the
// route entry that names its domain; made: this request made a callout.
func (s *stats) record(rt *Routing, key string, v callout.Verdict, made bool) {
	if s == nil {
		return
	}
	h := maphash.String(s.seed, key)
	var slot *atomic.Uint64
	var tag uint64
	if v == callout.Valid && !made {
		slot, tag = &s.recent[h%statsRecentSlots], (h^s.gen.Load()*0x9e3779b97f4a7c15)|1
		if slot.Load() == tag {
			return // gathered since the last flush
		}
	}
	named := rt.names.of(rcptDomain(key))
	if named == "" {
		return
	}
	var set func(p *pendingDomain) map[string]struct{}
	switch v {
	case callout.Valid:
		set = func(p *pendingDomain) map[string]struct{} { return p.valid }
	case callout.Unknown:
		set = func(p *pendingDomain) map[string]struct{} { return p.unknown }
	}
	if set == nil && !made {
		return
	}
	sh := &s.shards[h%statsShards]
	sh.mu.Lock()
	p := sh.domains[named]
	if p == nil {
		p = &pendingDomain{valid: map[string]struct{}{}, unknown: map[string]struct{}{}}
		sh.domains[named] = p
	}
	if made {
		p.callouts++
	}
	kick := false
	if set != nil {
		m := set(p)
		if _, ok := m[key]; !ok {
			if sh.n >= statsMaxPending/statsShards {
				sh.mu.Unlock()
				s.dropMu.Lock()
				s.dropN++
				s.dropMu.Unlock()
				return
			}
			m[key] = struct{}{}
			sh.n++
			kick = sh.n == statsMaxPending/statsShards/4
		}
	}
	sh.mu.Unlock()
	if slot != nil {
		slot.Store(tag)
	}
	if kick {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// run flushes every statsFlushEvery (or when kicked) and refreshes the
// gauge every statsGaugeEvery, until ctx ends; then it flushes once more.
func (s *stats) run(ctx context.Context, gauge func(domain string, n int64), domains func() []string) {
	flush := time.NewTicker(statsFlushEvery)
	defer flush.Stop()
	g := time.NewTicker(statsGaugeEvery)
	defer g.Stop()
	first := true
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s.flush(fctx)
			cancel()
			return
		case <-flush.C:
		case <-s.kick:
		case <-g.C:
			first = true
		}
		s.flush(ctx)
		if first {
			s.gauges(ctx, gauge, domains())
			first = false
		}
	}
}

// day is the UTC day a tally key covers.
func day(t time.Time) string { return t.UTC().Format("20060102") }

// tallyKey names one domain's tally of a kind for a day; the {hash tag}
// keeps a domain's days in one Redis Cluster slot, so one PFCOUNT can
// count them together.
func tallyKey(domain, kind, day string) string {
	return "stats:{" + domain + "}:" + kind + ":" + day
}

// flush writes what was gathered to the tally.
func (s *stats) flush(ctx context.Context) {
	s.gen.Add(1) // the filter of recent keys starts empty
	now := s.now()
	d := day(now)
	ttl := s.window + 48*time.Hour // a day's key outlives the window that counts it
	var failed int
	var lastErr error
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		domains := sh.domains
		sh.domains, sh.n = make(map[string]*pendingDomain), 0
		sh.mu.Unlock()
		for name, p := range domains {
			s.markSeen(name, now)
			for kind, m := range map[string]map[string]struct{}{kindValid: p.valid, kindUnknown: p.unknown} {
				if len(m) == 0 {
					continue
				}
				members := make([]string, 0, len(m))
				for k := range m {
					members = append(members, k)
				}
				if err := s.tally.AddDistinct(ctx, tallyKey(name, kind, d), members, ttl); err != nil {
					failed, lastErr = failed+1, err
				}
			}
			if p.callouts > 0 {
				if err := s.tally.AddCount(ctx, tallyKey(name, kindCallouts, d), p.callouts, ttl); err != nil {
					failed, lastErr = failed+1, err
				}
			}
		}
	}
	if failed > 0 {
		// One line per write, whatever the number of domains.
		s.log.Warn("licence count: writes failed, those verdicts are not counted", "failed", failed, "err", lastErr)
	}
	s.dropMu.Lock()
	n := s.dropN
	s.dropN = 0
	s.dropMu.Unlock()
	if n > 0 {
		s.log.Warn("licence count: addresses not counted, too many between two writes", "dropped", n)
	}
}

func (s *stats) markSeen(domain string, now time.Time) {
	s.seenMu.Lock()
	s.seen[domain] = now
	s.seenMu.Unlock()
}

// gauges sets calloutd_valid_recipients for the domains named now that
// have data in the window on this node, and forgets the others.
func (s *stats) gauges(ctx context.Context, gauge func(domain string, n int64), named []string) {
	now := s.now()
	s.seenMu.Lock()
	var active []string
	for d, t := range s.seen {
		if now.Sub(t) > s.window {
			delete(s.seen, d)
			gauge(d, -1)
			continue
		}
		active = append(active, d)
	}
	s.seenMu.Unlock()
	for _, d := range active {
		if !slices.Contains(named, d) {
			gauge(d, -1)
			continue
		}
		n, err := s.tally.CountDistinct(ctx, windowKeys(d, kindValid, s.window, now))
		if err != nil {
			s.log.Warn("licence count not read", "domain", d, "err", err)
			continue
		}
		gauge(d, n)
	}
}

// windowKeys are a domain's keys of a kind for every day of the window
// ending now (today included).
func windowKeys(domain, kind string, window time.Duration, now time.Time) []string {
	days := max(int((window+24*time.Hour-1)/(24*time.Hour)), 1)
	keys := make([]string, days)
	for i := range days {
		keys[i] = tallyKey(domain, kind, day(now.AddDate(0, 0, -i)))
	}
	return keys
}

// DomainReport is one domain's line of calloutd report.
type DomainReport struct {
	Domain   string `json:"domain"`
	Valid    int64  `json:"valid"`    // distinct valid recipients (estimate)
	Unknown  int64  `json:"unknown"`  // distinct unknown recipients (estimate)
	Callouts int64  `json:"callouts"` // callouts made
}

// Report counts every domain cfg's routes name over cfg's stats window,
// from tally; domains with nothing counted are left out.
func Report(ctx context.Context, tally cache.Tally, cfg *config.Config, now time.Time) ([]DomainReport, error) {
	window := cfg.Stats.Window.D()
	var out []DomainReport
	for _, d := range namedDomains(cfg) {
		var r DomainReport
		r.Domain = d
		var err error
		if r.Valid, err = tally.CountDistinct(ctx, windowKeys(d, kindValid, window, now)); err != nil {
			return nil, err
		}
		if r.Unknown, err = tally.CountDistinct(ctx, windowKeys(d, kindUnknown, window, now)); err != nil {
			return nil, err
		}
		if r.Callouts, err = tally.SumCounts(ctx, windowKeys(d, kindCallouts, window, now)); err != nil {
			return nil, err
		}
		if r.Valid+r.Unknown+r.Callouts > 0 {
			out = append(out, r)
		}
	}
	return out, nil
}

// namedDomains are the domain entries of cfg's routes, sorted, each once.
func namedDomains(cfg *config.Config) []string {
	var ds []string
	for _, r := range cfg.Routes {
		ds = append(ds, r.Domains...)
	}
	slices.Sort(ds)
	return slices.Compact(ds)
}

// domainNames maps a recipient's domain to the route entry that names
// it: the domain itself, or the ".parent" entry covering it.
type domainNames struct {
	exact map[string]bool
	wild  map[string]bool // ".example.com"
}

func newDomainNames(cfg *config.Config) domainNames {
	n := domainNames{exact: map[string]bool{}, wild: map[string]bool{}}
	for _, r := range cfg.Routes {
		for _, d := range r.Domains {
			if strings.HasPrefix(d, ".") {
				n.wild[d] = true
			} else {
				n.exact[d] = true
			}
		}
	}
	return n
}

// of returns the entry naming domain (lower case, no trailing dot), or "".
func (n *domainNames) of(domain string) string {
	if n.exact[domain] {
		return domain
	}
	for i := 0; i < len(domain); i++ {
		if domain[i] == '.' && n.wild[domain[i:]] {
			return domain[i:]
		}
	}
	return ""
}
