package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/calloutd/calloutd/callout"
	"github.com/calloutd/calloutd/callout/directory"
)

// DefaultPath is where serve looks without -config.
const DefaultPath = "/etc/calloutd/calloutd.toml"

// Config is the whole configuration. Field comments give the TOML keys. A
// field tagged secret:"true" (a password) is never printed (see Print).
type Config struct {
	Listen        []string `toml:"listen"`         // "host:port" or "unix:/path"
	MetricsListen string   `toml:"metrics_listen"` // "" disables
	AdminSocket   string   `toml:"admin_socket"`   // unix socket for flush/lookup; "" disables
	Log           Log      `toml:"log"`
	Policy        Policy   `toml:"policy"`
	Harvest       Harvest  `toml:"harvest"`
	Callout       Callout  `toml:"callout"`
	Cache         Cache    `toml:"cache"`
	Stats         Stats    `toml:"stats"`
	DNS           DNS      `toml:"dns"`
	Learn         Learn    `toml:"learn"`
	Routes        []Route  `toml:"route"`
}

// DNS is the [dns] table: how "mx:" route servers are resolved.
type DNS struct {
	Resolver string   `toml:"resolver"` // "host:port"; "" = /etc/resolv.conf's first nameserver
	Timeout  Duration `toml:"timeout"`  // per query
}

// Learn is the [learn] table: negative verdicts learned from the
// gateway's own delivery log, for backends that refuse unknown recipients
// only after END OF DATA.
type Learn struct {
	// PostfixLog is the Postfix log file followed across rotation, as
	// tail -F does; "" = off ("calloutd learn" reads standard input).
	PostfixLog string `toml:"postfix_log"`
	// LearnedTTL is how long a learned negative verdict is served.
	LearnedTTL Duration `toml:"learned_ttl"`
}

// Stats is the [stats] table: the licence count.
type Stats struct {
	// Window: distinct valid recipients are counted over this many days
	// back from today; 0 turns the count off.
	Window Duration `toml:"window"`
}

// Policy is the [policy] table: which clients are verified at all, and
// whether answers are enforced.
type Policy struct {
	// TrustedNetworks: clients in these networks (CIDR, IPv4 or IPv6)
	// get DUNNO without a callout or a cache lookup.
	TrustedNetworks []string `toml:"trusted_networks"`
	// SkipAuthenticated: a client that authenticated (SASL) gets DUNNO.
	SkipAuthenticated bool `toml:"skip_authenticated"`
	// DryRun: verify and cache as usual, always answer DUNNO, and log
	// what would have been answered. A route may override it.
	DryRun bool `toml:"dry_run"`

	Trusted []netip.Prefix `toml:"-"` // TrustedNetworks, parsed and masked
}

// Harvest is the [harvest] table: the directory-harvest limit.
type Harvest struct {
	MaxUnknown int      `toml:"max_unknown"` // unknown verdicts per client per window; 0 = off
	Window     Duration `toml:"window"`
	Action     string   `toml:"action"`      // reject | defer
	IPv4Prefix int      `toml:"ipv4_prefix"` // clients grouped by this prefix length
	IPv6Prefix int      `toml:"ipv6_prefix"`
}

// Log is the [log] table.
type Log struct {
	Level  string `toml:"level"`  // debug | info | warn | error
	Format string `toml:"format"` // text | json
	File   string `toml:"file"`   // "" = standard error (serve), syslog (serve -stdio)
	// CachedDunno logs answers from the cache that pass (DUNNO), too;
	// fresh verdicts and every answer that is not DUNNO are always logged.
	CachedDunno bool `toml:"cached_dunno"`
}

// Callout is the [callout] table.
type Callout struct {
	HeloName          string   `toml:"helo_name"`
	MailFrom          string   `toml:"mail_from"`
	ConnectTimeout    Duration `toml:"connect_timeout"`
	CommandTimeout    Duration `toml:"command_timeout"`
	RequestTimeout    Duration `toml:"request_timeout"`
	UnreachableAction string   `toml:"unreachable_action"` // dunno | defer
	TempfailAction    string   `toml:"tempfail_action"`    // dunno | defer
	// ProbeCatchall: after a backend accepts a recipient of a domain with
	// no fresh catch-all verdict, ask it about an address that cannot
	// exist; a domain whose backend accepts it is catch-all for
	// CatchallTTL: its recipients get DUNNO without callouts.
	ProbeCatchall bool     `toml:"probe_catchall"`
	CatchallTTL   Duration `toml:"catchall_ttl"`
	// TLS: STARTTLS on callouts, "opportunistic" | "required" | "off".
	TLS string `toml:"tls"`
	// TLSVerify checks the server's certificate against TLSCAFile (or
	// the system's CAs) and TLSServerName (default the server's host).
	TLSVerify     bool   `toml:"tls_verify"`
	TLSServerName string `toml:"tls_server_name"`
	TLSCAFile     string `toml:"tls_ca_file"`
	// RecipientDelimiter: characters that start an address extension, as
	// Postfix's recipient_delimiter ("+", "+-"); the address without its
	// extension is verified. "" = none.
	RecipientDelimiter string `toml:"recipient_delimiter"`
	// SourceAddress: the local addresses callouts leave from, at most one
	// per family ("192.0.2.10", or ["192.0.2.10", "2001:db8::10"]).
	SourceAddress AddrList `toml:"source_address"`
	// Source4 and Source6 are SourceAddress, parsed and checked.
	Source4 netip.Addr `toml:"-"`
	Source6 netip.Addr `toml:"-"`

	// Session pool, global only (sessions belong to servers, not routes).
	PoolSize                int      `toml:"pool_size"`
	MaxConnectionsPerServer int      `toml:"max_connections_per_server"`
	PoolIdleTimeout         Duration `toml:"pool_idle_timeout"`
	MaxSessionAge           Duration `toml:"max_session_age"`
	SessionMaxErrors        int      `toml:"session_max_errors"`
	SessionMaxRecipients    int      `toml:"session_max_recipients"`
}

// Cache is the [cache] table.
type Cache struct {
	Store       string   `toml:"store"` // memory | redis
	MaxEntries  int      `toml:"max_entries"`
	PositiveTTL Duration `toml:"positive_ttl"`
	NegativeTTL Duration `toml:"negative_ttl"`
	TempfailTTL Duration `toml:"tempfail_ttl"`
	// PositiveRefresh: a valid verdict older than this is answered from
	// the cache and verified again in the background. 0 = never.
	PositiveRefresh Duration `toml:"positive_refresh"`
	Redis           Redis    `toml:"redis"`
}

// Redis is the [cache.redis] table, read when cache.store = "redis".
type Redis struct {
	// Addrs: one address is a single server, several a Cluster; with
	// MasterName they are the Sentinels.
	Addrs      []string `toml:"addrs"`
	MasterName string   `toml:"master_name"`
	Username   string   `toml:"username"`
	// Password, when empty, is taken from CALLOUTD_REDIS_PASSWORD. It is
	// never logged.
	Password string `toml:"password" secret:"true"`
	// passwordFromEnv: Password came from CALLOUTD_REDIS_PASSWORD, not
	// from the file (Print leaves it out).
	passwordFromEnv bool
	DB              int      `toml:"db"`
	KeyPrefix       string   `toml:"key_prefix"`
	TLS             bool     `toml:"tls"`
	DialTimeout     Duration `toml:"dial_timeout"`
	ReadTimeout     Duration `toml:"read_timeout"`
}

// PasswordEnv names the environment variable that supplies
// cache.redis.password when the file leaves it empty.
const PasswordEnv = "CALLOUTD_REDIS_PASSWORD"

// Route is one [[route]] table. Any [callout] key and any cache TTL may be
// set in a route, overriding the global one for that route; a key the route
// leaves out (nil) inherits it.
type Route struct {
	Name    string   `toml:"name"` // default "route[N]"
	Domains []string `toml:"domains"`
	Servers []string `toml:"servers"`
	// Kind: "smtp" (the servers are asked by callout) or "ldap" (a
	// directory is searched; no servers).
	Kind string `toml:"kind"`

	// The directory of an LDAP route.
	LDAPURLs            []string  `toml:"ldap_urls"` // ldap:// or ldaps://, tried in order
	LDAPStartTLS        bool      `toml:"ldap_starttls"`
	LDAPCAFile          string    `toml:"ldap_ca_file"` // "" = the system's CAs
	LDAPBindDN          string    `toml:"ldap_bind_dn"`
	LDAPBindPassword    string    `toml:"ldap_bind_password" secret:"true"` // "" = env CALLOUTD_LDAP_PASSWORD_<NAME>
	ldapPasswordFromEnv bool      // LDAPBindPassword came from the environment (Print leaves it out)
	LDAPBaseDN          string    `toml:"ldap_base_dn"`
	LDAPFilter          string    `toml:"ldap_filter"` // %s = the address, escaped (RFC 4515)
	LDAPTimeout         *Duration `toml:"ldap_timeout"`

	HeloName           *string   `toml:"helo_name"`
	MailFrom           *string   `toml:"mail_from"`
	ConnectTimeout     *Duration `toml:"connect_timeout"`
	CommandTimeout     *Duration `toml:"command_timeout"`
	RequestTimeout     *Duration `toml:"request_timeout"`
	UnreachableAction  *string   `toml:"unreachable_action"`
	TempfailAction     *string   `toml:"tempfail_action"`
	RecipientDelimiter *string   `toml:"recipient_delimiter"`
	ProbeCatchall      *bool     `toml:"probe_catchall"`
	CatchallTTL        *Duration `toml:"catchall_ttl"`
	TLS                *string   `toml:"tls"`
	TLSVerify          *bool     `toml:"tls_verify"`
	TLSServerName      *string   `toml:"tls_server_name"`
	TLSCAFile          *string   `toml:"tls_ca_file"`
	SourceAddress      *AddrList `toml:"source_address"`
	PositiveTTL        *Duration `toml:"positive_ttl"`
	NegativeTTL        *Duration `toml:"negative_ttl"`
	TempfailTTL        *Duration `toml:"tempfail_ttl"`
	// UnknownReplies and IgnoreReplies are regular expressions (RE2)
	// matched against a whole RCPT reply ("550 5.1.1 text"); they win over
	// the built-in classification, Ignore first.
	UnknownReplies []string `toml:"unknown_replies"`
	IgnoreReplies  []string `toml:"ignore_replies"`

	// DryRun overrides [policy] dry_run for this route.
	DryRun *bool `toml:"dry_run"`
	// RecipientsFile lists addresses (and "@domain" lines) that exist:
	// they are valid without a callout.
	RecipientsFile string `toml:"recipients_file"`
	// Callout = false: the route asks no server; an address not in its
	// recipients_file is unknown.
	Callout *bool `toml:"callout"`

	// Effective is what applies to the route once validated: the global
	// settings with the route's own over them.
	Effective Effective `toml:"-"`
}

// Effective holds a route's settings after inheritance.
type Effective struct {
	Callout     Callout
	PositiveTTL Duration
	NegativeTTL Duration
	TempfailTTL Duration
	Rules       *callout.Rules // nil when the route has no reply rules
	DryRun      bool
	NoCallout   bool // callout = false
}

// Default returns the configuration used for keys a file leaves out.
func Default() *Config {
	host, err := os.Hostname()
	if err != nil || callout.CheckHostname(host) != nil {
		host = "localhost"
	}
	return &Config{
		Listen:        []string{"127.0.0.1:10040"},
		MetricsListen: "127.0.0.1:10041",
		AdminSocket:   "/run/calloutd/admin.sock",
		Log:           Log{Level: "info", Format: "text"},
		Policy:        Policy{SkipAuthenticated: true},
		Harvest: Harvest{
			Window:     Duration(10 * time.Minute),
			Action:     "reject",
			IPv4Prefix: 32,
			IPv6Prefix: 64,
		},
		Callout: Callout{
			HeloName:          host,
			ConnectTimeout:    Duration(10 * time.Second),
			CommandTimeout:    Duration(10 * time.Second),
			RequestTimeout:    Duration(30 * time.Second),
			UnreachableAction: "dunno",
			TempfailAction:    "defer",
			CatchallTTL:       Duration(24 * time.Hour),
			TLS:               "opportunistic",

			PoolSize:                4,
			MaxConnectionsPerServer: 10,
			PoolIdleTimeout:         Duration(30 * time.Second),
			MaxSessionAge:           Duration(5 * time.Minute),
			SessionMaxErrors:        8,
			SessionMaxRecipients:    900,
		},
		Stats: Stats{Window: Duration(30 * 24 * time.Hour)},
		DNS:   DNS{Timeout: Duration(2 * time.Second)},
		Learn: Learn{LearnedTTL: Duration(72 * time.Hour)},
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
}

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse validates data; name prefixes error messages.
func Parse(name string, data []byte) (*Config, error) {
	name = filepath.Base(name)
	c := Default()
	md, err := toml.Decode(string(data), c)
	if err != nil {
		return nil, decodeError(name, data, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("%s: unknown key %s", name, strings.Join(keys, ", "))
	}
	if c.Cache.Redis.Password == "" {
		c.Cache.Redis.Password = os.Getenv(PasswordEnv)
		c.Cache.Redis.passwordFromEnv = c.Cache.Redis.Password != ""
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

// decodeError words a TOML error as "FILE:LINE: message" when the file is
// not valid TOML, and as "FILE: KEY: message" when it is but a key's value
// does not fit (a bad duration). The library reports both as a ParseError
// and sets LastKey in both (for a syntax error, to the key before it), so
// the file is parsed again, into nothing, to tell them apart.
func decodeError(name string, data []byte, err error) error {
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", name, err)
	}
	if pe.LastKey != "" {
		var syntaxOnly map[string]any
		if _, perr := toml.Decode(string(data), &syntaxOnly); perr == nil {
			return fmt.Errorf("%s: %s: %s", name, pe.LastKey, pe.Message)
		}
	}
	return fmt.Errorf("%s:%d: %s", name, pe.Position.Line, pe.Message)
}

// keyError names the offending key.
func keyError(key, format string, args ...any) error {
	return fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...))
}

func (c *Config) validate() error {
	if len(c.Listen) == 0 {
		return keyError("listen", "must not be empty")
	}
	for i, l := range c.Listen {
		if err := checkListen(l, true); err != nil {
			return keyError(fmt.Sprintf("listen[%d]", i), "%v", err)
		}
	}
	if c.MetricsListen != "" {
		if err := checkListen(c.MetricsListen, false); err != nil {
			return keyError("metrics_listen", "%v", err)
		}
	}
	if c.AdminSocket != "" && !filepath.IsAbs(c.AdminSocket) {
		return keyError("admin_socket", "%q: socket path must be absolute", c.AdminSocket)
	}
	if !oneOf(c.Log.Level, "debug", "info", "warn", "error") {
		return keyError("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	if !oneOf(c.Log.Format, "text", "json") {
		return keyError("log.format", "%q is not one of text, json", c.Log.Format)
	}
	if c.DNS.Resolver != "" {
		if _, err := netip.ParseAddrPort(c.DNS.Resolver); err != nil {
			return keyError("dns.resolver", "%q: want ip:port", c.DNS.Resolver)
		}
	}
	if c.DNS.Timeout <= 0 || c.DNS.Timeout > Duration(30*time.Second) {
		return keyError("dns.timeout", "%s: must be above 0 and at most 30s", c.DNS.Timeout.D())
	}
	if c.Learn.PostfixLog != "" && !filepath.IsAbs(c.Learn.PostfixLog) {
		return keyError("learn.postfix_log", "%q: path must be absolute", c.Learn.PostfixLog)
	}
	if t := c.Learn.LearnedTTL; t < Duration(time.Minute) || t > Duration(90*24*time.Hour) {
		return keyError("learn.learned_ttl", "%s: must be between 1m and 90d", t.D())
	}
	if err := c.Policy.validate(); err != nil {
		return err
	}
	if err := c.Harvest.validate(); err != nil {
		return err
	}
	if err := validateCallout("callout.", &c.Callout); err != nil {
		return err
	}
	if err := c.Callout.validatePool(); err != nil {
		return err
	}
	switch c.Cache.Store {
	case "memory":
	case "redis":
		if err := c.Cache.Redis.validate(); err != nil {
			return err
		}
	default:
		return keyError("cache.store", "%q is not one of memory, redis", c.Cache.Store)
	}
	if w := c.Stats.Window; w != 0 && (w < Duration(24*time.Hour) || w > Duration(400*24*time.Hour) || w%Duration(24*time.Hour) != 0) {
		return keyError("stats.window", "%s: must be whole days between 1d and 400d, or 0 (off)", w.D())
	}
	if c.Cache.PositiveRefresh < 0 {
		return keyError("cache.positive_refresh", "must not be negative")
	}
	if c.Cache.MaxEntries < 1 {
		return keyError("cache.max_entries", "must be at least 1")
	}
	if err := validateTTLs("cache.", c.Cache.PositiveTTL, c.Cache.NegativeTTL, c.Cache.TempfailTTL); err != nil {
		return err
	}
	names := map[string]int{}
	for i := range c.Routes {
		r := &c.Routes[i]
		key := fmt.Sprintf("route[%d]", i)
		if r.Name == "" {
			r.Name = key
		}
		if j, dup := names[r.Name]; dup {
			return keyError(key+".name", "%q already names route[%d]", r.Name, j)
		}
		names[r.Name] = i
		if len(r.Domains) == 0 {
			return keyError(key+".domains", "must not be empty")
		}
		for j, d := range r.Domains {
			d = strings.ToLower(strings.TrimSuffix(d, "."))
			if a, err := callout.ToASCII(d); err == nil {
				d = a // bücher.example is matched as xn--bcher-kva.example
			}
			if err := callout.CheckHostname(strings.TrimPrefix(d, ".")); err != nil {
				return keyError(fmt.Sprintf("%s.domains[%d]", key, j), "%q: %v", r.Domains[j], err)
			}
			r.Domains[j] = d
		}
		switch r.Kind {
		case "", "smtp":
			r.Kind = "smtp"
		case "ldap":
			if err := r.validateLDAP(key); err != nil {
				return err
			}
		default:
			return keyError(key+".kind", "%q is not one of smtp, ldap", r.Kind)
		}
		if len(r.Servers) == 0 && r.Kind == "smtp" && (r.Callout == nil || *r.Callout) {
			return keyError(key+".servers", "must not be empty (unless callout = false)")
		}
		if r.Callout != nil && !*r.Callout && r.RecipientsFile == "" {
			return keyError(key+".callout", "false needs a recipients_file: without one every address would be unknown")
		}
		if r.RecipientsFile != "" && !filepath.IsAbs(r.RecipientsFile) {
			return keyError(key+".recipients_file", "%q: path must be absolute", r.RecipientsFile)
		}
		for j, s := range r.Servers {
			if callout.IsMX(s) {
				host, port, err := callout.ParseMX(s)
				if err != nil {
					return keyError(fmt.Sprintf("%s.servers[%d]", key, j), "%v", err)
				}
				r.Servers[j] = callout.MXPrefix + host
				if port != callout.DefaultPort {
					r.Servers[j] += ":" + strconv.Itoa(port)
				}
				continue
			}
			hp, err := callout.ParseServer(s)
			if err != nil {
				return keyError(fmt.Sprintf("%s.servers[%d]", key, j), "%v", err)
			}
			r.Servers[j] = hp
		}
		if err := c.Resolve(key, r); err != nil {
			return err
		}
	}
	return nil
}

// The defaults of an LDAP route's ldap_filter and ldap_timeout.
const (
	DefaultLDAPFilter  = "(mail=%s)"
	DefaultLDAPTimeout = Duration(3 * time.Second)
)

// LDAPPasswordEnv is the environment variable that supplies an LDAP
// route's ldap_bind_password when the file leaves it empty.
func LDAPPasswordEnv(route string) string {
	b := []byte(strings.ToUpper(route))
	for i, c := range b {
		if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			b[i] = '_'
		}
	}
	return "CALLOUTD_LDAP_PASSWORD_" + string(b)
}

func (r *Route) validateLDAP(key string) error {
	if len(r.Servers) > 0 {
		return keyError(key+".servers", "an LDAP route has ldap_urls, not servers")
	}
	if len(r.LDAPURLs) == 0 {
		return keyError(key+".ldap_urls", "must not be empty for kind = \"ldap\"")
	}
	for i, s := range r.LDAPURLs {
		u, err := url.Parse(s)
		if err == nil && (u.Scheme != "ldap" && u.Scheme != "ldaps" || u.Hostname() == "" || u.Path != "" && u.Path != "/" || u.RawQuery != "") {
			err = errors.New("want ldap://host[:port] or ldaps://host[:port]")
		}
		if err != nil {
			return keyError(fmt.Sprintf("%s.ldap_urls[%d]", key, i), "%q: %v", s, err)
		}
		r.LDAPURLs[i] = u.Scheme + "://" + u.Host
	}
	if r.LDAPBaseDN == "" {
		return keyError(key+".ldap_base_dn", "must not be empty")
	}
	if r.LDAPFilter == "" {
		r.LDAPFilter = DefaultLDAPFilter
	}
	if err := directory.CheckFilter(r.LDAPFilter); err != nil {
		return keyError(key+".ldap_filter", "%q: %v", r.LDAPFilter, err)
	}
	if r.LDAPTimeout == nil {
		d := DefaultLDAPTimeout
		r.LDAPTimeout = &d
	}
	if *r.LDAPTimeout <= 0 || *r.LDAPTimeout > Duration(time.Minute) {
		return keyError(key+".ldap_timeout", "%s: must be above 0 and at most 1m", r.LDAPTimeout.D())
	}
	if r.LDAPCAFile != "" && !filepath.IsAbs(r.LDAPCAFile) {
		return keyError(key+".ldap_ca_file", "%q: path must be absolute", r.LDAPCAFile)
	}
	if r.LDAPBindPassword == "" && r.LDAPBindDN != "" {
		r.LDAPBindPassword = os.Getenv(LDAPPasswordEnv(r.Name))
		r.ldapPasswordFromEnv = true
		if r.LDAPBindPassword == "" {
			// Every search would fail (and fail open) for good.
			return keyError(key+".ldap_bind_password", "empty, and %s is not set either", LDAPPasswordEnv(r.Name))
		}
	}
	if r.Callout != nil && !*r.Callout {
		return keyError(key+".callout", "false makes no sense on an LDAP route (it asks no SMTP server anyway)")
	}
	return nil
}

// MaxRequestTimeout is the longest verdict budget of any route (or the
// global one): how long a shutdown waits for requests in flight.
func (c *Config) MaxRequestTimeout() time.Duration {
	d := c.Callout.RequestTimeout.D()
	for i := range c.Routes {
		d = max(d, c.Routes[i].Effective.Callout.RequestTimeout.D())
	}
	return d
}

// validateCallout checks a [callout] table, or a route's view of it; prefix
// names where the keys are ("callout.", "route[2].").
func validateCallout(prefix string, co *Callout) error {
	if err := callout.CheckHostname(co.HeloName); err != nil {
		return keyError(prefix+"helo_name", "%v", err)
	}
	if co.MailFrom != "" {
		a, err := callout.ParseAddress(unquoteLocal(co.MailFrom))
		if err != nil {
			return keyError(prefix+"mail_from", "%v", err)
		}
		co.MailFrom = a.Wire()
	}
	// Slices, not maps, so that of several bad keys the first in the
	// file's documented order is reported, the same one every run.
	for _, kd := range []struct {
		key string
		d   Duration
	}{
		{"connect_timeout", co.ConnectTimeout},
		{"command_timeout", co.CommandTimeout},
		{"request_timeout", co.RequestTimeout},
	} {
		if kd.d <= 0 {
			return keyError(prefix+kd.key, "must be greater than 0")
		}
	}
	if !oneOf(co.UnreachableAction, "dunno", "defer") {
		return keyError(prefix+"unreachable_action", "%q is not one of dunno, defer", co.UnreachableAction)
	}
	if !oneOf(co.TempfailAction, "dunno", "defer") {
		return keyError(prefix+"tempfail_action", "%q is not one of dunno, defer", co.TempfailAction)
	}
	if !oneOf(co.TLS, "opportunistic", "required", "off") {
		return keyError(prefix+"tls", "%q is not one of opportunistic, required, off", co.TLS)
	}
	if co.TLSCAFile != "" && !filepath.IsAbs(co.TLSCAFile) {
		return keyError(prefix+"tls_ca_file", "%q: path must be absolute", co.TLSCAFile)
	}
	if (co.TLSCAFile != "" || co.TLSServerName != "") && !co.TLSVerify {
		return keyError(prefix+"tls_verify", "tls_ca_file and tls_server_name are used only with tls_verify = true")
	}
	if co.CatchallTTL < Duration(time.Minute) || co.CatchallTTL > Duration(30*24*time.Hour) {
		return keyError(prefix+"catchall_ttl", "%s: must be between 1m and 30d", co.CatchallTTL.D())
	}
	if d := co.RecipientDelimiter; len(d) > 8 || strings.ContainsFunc(d, func(c rune) bool {
		return c <= ' ' || c >= 0x7f || c == '@' || c == '"' || c == '\\'
	}) {
		return keyError(prefix+"recipient_delimiter", "%q: at most 8 printable ASCII characters, not '@', quotes or spaces", d)
	}
	if len(co.SourceAddress) == 0 {
		co.SourceAddress = nil // "" or [] in a file is the default
	}
	co.Source4, co.Source6 = netip.Addr{}, netip.Addr{}
	for _, s := range co.SourceAddress {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return keyError(prefix+"source_address", "%q: not an IP address", s)
		}
		a = a.Unmap()
		dst := &co.Source4
		if a.Is6() {
			dst = &co.Source6
		}
		if dst.IsValid() {
			return keyError(prefix+"source_address", "%q: at most one address per family", s)
		}
		if err := checkLocalAddr(a); err != nil {
			return keyError(prefix+"source_address", "%q: not an address of this host: %v", s, err)
		}
		*dst = a
	}
	return nil
}

// unquoteLocal turns an address whose local part is a quoted string, as
// on the wire ("\"probe sender\"@example.net"), into Postfix's internal
// form ("probe sender@example.net"), which ParseAddress reads; other
// addresses are returned as they are. mail_from is kept in the wire form,
// so without this a configuration printed by calloutd config would not
// load as itself.
func unquoteLocal(s string) string {
	at := strings.LastIndexByte(s, '@')
	local := s[:max(at, 0)]
	if len(local) < 2 || local[0] != '"' || local[len(local)-1] != '"' {
		return s
	}
	var b strings.Builder
	for i := 1; i < len(local)-1; i++ {
		if local[i] == '\\' && i+1 < len(local)-1 {
			i++
		}
		b.WriteByte(local[i])
	}
	return b.String() + s[at:]
}

// checkLocalAddr tells whether callouts can leave from a: a socket can be
// bound to it.
func checkLocalAddr(a netip.Addr) error {
	c, err := net.ListenPacket("udp", netip.AddrPortFrom(a, 0).String())
	if err != nil {
		var se *os.SyscallError
		if errors.As(err, &se) {
			return se.Err
		}
		return err
	}
	return c.Close()
}

// Same tells whether r and o are the same settings, wherever their
// password came from (the file or the environment).
func (r Redis) Same(o Redis) bool {
	r.passwordFromEnv, o.passwordFromEnv = false, false
	return fmt.Sprint(r) == fmt.Sprint(o)
}

// AddrList is a list of addresses written as one string or an array of
// strings; "" is none.
type AddrList []string

// UnmarshalTOML implements toml.Unmarshaler.
func (l *AddrList) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		*l = nil
		if v != "" {
			*l = AddrList{v}
		}
		return nil
	case []any:
		out := make(AddrList, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("source_address: %v is not a string", e)
			}
			out = append(out, s)
		}
		*l = out
		return nil
	}
	return fmt.Errorf("want an address or a list of addresses, not %T", v)
}

// validatePool checks the session pool's keys against the backend limits
// they exist to stay under.
func (co *Callout) validatePool() error {
	for _, k := range []struct {
		key       string
		v, lo, hi int
	}{
		{"pool_size", co.PoolSize, 0, 100},
		{"max_connections_per_server", co.MaxConnectionsPerServer, 1, 1000},
		// Postfix disconnects at smtpd_hard_error_limit (20) and delays
		// every reply after smtpd_soft_error_limit (10).
		{"session_max_errors", co.SessionMaxErrors, 1, 19},
		// Postfix's smtpd_recipient_limit is 1000.
		{"session_max_recipients", co.SessionMaxRecipients, 1, 999},
	} {
		if k.v < k.lo || k.v > k.hi {
			return keyError("callout."+k.key, "%d: must be between %d and %d", k.v, k.lo, k.hi)
		}
	}
	if co.PoolIdleTimeout <= 0 || co.MaxSessionAge <= 0 {
		return keyError("callout.pool_idle_timeout", "pool_idle_timeout and max_session_age must be greater than 0")
	}
	return nil
}

func validateTTLs(prefix string, positive, negative, tempfail Duration) error {
	for _, kd := range []struct {
		key string
		d   Duration
	}{
		{"positive_ttl", positive},
		{"negative_ttl", negative},
		{"tempfail_ttl", tempfail},
	} {
		if kd.d < 0 {
			return keyError(prefix+kd.key, "must not be negative")
		}
	}
	return nil
}

// Resolve fills r.Effective: the global settings, then the route's own,
// each checked and named by the route's key.
func (c *Config) Resolve(key string, r *Route) error {
	e := Effective{Callout: c.Callout, PositiveTTL: c.Cache.PositiveTTL, NegativeTTL: c.Cache.NegativeTTL, TempfailTTL: c.Cache.TempfailTTL}
	setS := func(dst *string, src *string) {
		if src != nil {
			*dst = *src
		}
	}
	setD := func(dst *Duration, src *Duration) {
		if src != nil {
			*dst = *src
		}
	}
	co := &e.Callout
	setS(&co.HeloName, r.HeloName)
	setS(&co.MailFrom, r.MailFrom)
	setD(&co.ConnectTimeout, r.ConnectTimeout)
	setD(&co.CommandTimeout, r.CommandTimeout)
	setD(&co.RequestTimeout, r.RequestTimeout)
	setS(&co.UnreachableAction, r.UnreachableAction)
	setS(&co.TempfailAction, r.TempfailAction)
	setS(&co.RecipientDelimiter, r.RecipientDelimiter)
	if r.ProbeCatchall != nil {
		co.ProbeCatchall = *r.ProbeCatchall
	}
	setD(&co.CatchallTTL, r.CatchallTTL)
	setS(&co.TLS, r.TLS)
	if r.TLSVerify != nil {
		co.TLSVerify = *r.TLSVerify
	}
	setS(&co.TLSServerName, r.TLSServerName)
	setS(&co.TLSCAFile, r.TLSCAFile)
	if r.SourceAddress != nil {
		co.SourceAddress = *r.SourceAddress
	}
	setD(&e.PositiveTTL, r.PositiveTTL)
	setD(&e.NegativeTTL, r.NegativeTTL)
	setD(&e.TempfailTTL, r.TempfailTTL)
	if err := validateCallout(key+".", co); err != nil {
		return err
	}
	if err := validateTTLs(key+".", e.PositiveTTL, e.NegativeTTL, e.TempfailTTL); err != nil {
		return err
	}
	var rules callout.Rules
	for _, l := range []struct {
		name string
		src  []string
		dst  *[]*regexp.Regexp
	}{
		{"unknown_replies", r.UnknownReplies, &rules.Unknown},
		{"ignore_replies", r.IgnoreReplies, &rules.Ignore},
	} {
		for j, expr := range l.src {
			re, err := regexp.Compile(expr)
			if err != nil {
				return keyError(fmt.Sprintf("%s.%s[%d]", key, l.name, j), "%q: %v", expr, regexpError(err))
			}
			*l.dst = append(*l.dst, re)
		}
	}
	if len(rules.Unknown)+len(rules.Ignore) > 0 {
		e.Rules = &rules
	}
	e.DryRun = c.Policy.DryRun
	if r.DryRun != nil {
		e.DryRun = *r.DryRun
	}
	e.NoCallout = r.Callout != nil && !*r.Callout
	r.Effective = e
	return nil
}

func (p *Policy) validate() error {
	if len(p.TrustedNetworks) == 0 {
		p.TrustedNetworks = nil // "[]" in a file is the default
	}
	p.Trusted = nil
	for i, n := range p.TrustedNetworks {
		pfx, err := netip.ParsePrefix(n)
		if err != nil {
			// A bare address is a network of one.
			if a, aerr := netip.ParseAddr(n); aerr == nil {
				pfx, err = a.Prefix(a.BitLen())
			}
		}
		if err == nil && pfx.Addr().Is4In6() {
			// ::ffff:10.0.0.0/104, as dual-stack Postfix logs write it:
			// clients are matched unmapped, so is the network.
			if pfx.Bits() < 96 {
				err = errors.New("an IPv4-mapped network must be /96 or longer")
			} else {
				pfx = netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-96)
			}
		}
		if err != nil {
			return keyError(fmt.Sprintf("policy.trusted_networks[%d]", i), "%q: not an address or a CIDR network", n)
		}
		p.Trusted = append(p.Trusted, pfx.Masked())
	}
	return nil
}

func (h *Harvest) validate() error {
	if h.MaxUnknown < 0 {
		return keyError("harvest.max_unknown", "%d: must not be negative (0 = off)", h.MaxUnknown)
	}
	if h.Window < Duration(time.Second) || h.Window > Duration(30*24*time.Hour) {
		return keyError("harvest.window", "%s: must be between 1s and 30d", h.Window.D())
	}
	if !oneOf(h.Action, "reject", "defer") {
		return keyError("harvest.action", "%q is not one of reject, defer", h.Action)
	}
	if h.IPv4Prefix < 8 || h.IPv4Prefix > 32 {
		return keyError("harvest.ipv4_prefix", "%d: must be between 8 and 32", h.IPv4Prefix)
	}
	if h.IPv6Prefix < 16 || h.IPv6Prefix > 128 {
		return keyError("harvest.ipv6_prefix", "%d: must be between 16 and 128", h.IPv6Prefix)
	}
	return nil
}

// regexpError drops the expression regexp repeats in its message.
func regexpError(err error) string {
	var se *syntax.Error
	if errors.As(err, &se) {
		return se.Code.String()
	}
	return err.Error()
}

func (r *Redis) validate() error {
	if len(r.Addrs) == 0 {
		return keyError("cache.redis.addrs", "must not be empty")
	}
	for i, a := range r.Addrs {
		host, port, err := net.SplitHostPort(a)
		if err == nil && host == "" {
			err = errors.New("no host")
		}
		if err == nil {
			err = checkListen(a, false)
		}
		if err == nil && port == "0" {
			err = errors.New("port 0")
		}
		if err != nil {
			return keyError(fmt.Sprintf("cache.redis.addrs[%d]", i), "%q: %v", a, err)
		}
	}
	if r.MasterName == "" && len(r.Addrs) > 1 && r.DB != 0 {
		return keyError("cache.redis.db", "%d: a Redis Cluster (several addrs) has only database 0", r.DB)
	}
	if r.DB < 0 {
		return keyError("cache.redis.db", "%d: must not be negative", r.DB)
	}
	if r.KeyPrefix == "" {
		return keyError("cache.redis.key_prefix", `must not be empty (the default is "calloutd:")`)
	}
	if len(r.KeyPrefix) > 64 || strings.ContainsFunc(r.KeyPrefix, func(c rune) bool { return c <= ' ' || c == 0x7f }) {
		return keyError("cache.redis.key_prefix", "%q: at most 64 bytes, no spaces or control characters", r.KeyPrefix)
	}
	for _, t := range []struct {
		key string
		d   Duration
	}{{"cache.redis.dial_timeout", r.DialTimeout}, {"cache.redis.read_timeout", r.ReadTimeout}} {
		if t.d <= 0 || t.d.D() > time.Minute {
			return keyError(t.key, "%s: must be above 0 and at most 1m", t.d.D())
		}
	}
	return nil
}

func checkListen(addr string, unixOK bool) error {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if !unixOK {
			return fmt.Errorf("%q: a unix socket is not supported here", addr)
		}
		if !filepath.IsAbs(path) {
			return fmt.Errorf("%q: socket path must be absolute", addr)
		}
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: %v (want host:port or unix:/path)", addr, err)
	}
	if host != "" && net.ParseIP(host) == nil && callout.CheckHostname(host) != nil {
		return fmt.Errorf("%q: invalid host %q", addr, host)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q: invalid port %q", addr, port)
	}
	return nil
}

func oneOf(s string, options ...string) bool {
	for _, o := range options {
		if s == o {
			return true
		}
	}
	return false
}

// Duration is a time.Duration in TOML as a string: Go's syntax ("90s",
// "1h30m") plus whole days ("7d", "1d12h").
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// ParseDuration accepts time.ParseDuration's syntax with an optional leading
// number of days: "7d", "1d12h", "0s".
func ParseDuration(s string) (time.Duration, error) {
	days, rest, found := strings.Cut(s, "d")
	if !found {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q (examples: 90s, 10m, 2h, 7d)", s)
		}
		return d, nil
	}
	n, err := strconv.ParseUint(days, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (examples: 90s, 10m, 2h, 7d)", s)
	}
	d := time.Duration(n) * 24 * time.Hour
	if rest != "" {
		r, err := time.ParseDuration(rest)
		// Days plus a remainder must not wrap past the largest
		// time.Duration into a negative one.
		if err != nil || r < 0 || r > math.MaxInt64-d {
			return 0, fmt.Errorf("invalid duration %q (examples: 90s, 10m, 2h, 7d)", s)
		}
		d += r
	}
	return d, nil
}
