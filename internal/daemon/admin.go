package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/calloutd/calloutd/cache"
	"github.com/calloutd/calloutd/callout"
)

// The admin socket speaks one JSON object per line each way: a request,
// then its response. It is a unix socket of mode 0600, never TCP, because
// flushing verdicts is an operator's act, not a scraper's.

// AdminRequest is one admin command. Exactly one of Address, Domain, All is
// set for "flush"; Address for "lookup"; Line (a line of the Postfix log)
// for "learn".
type AdminRequest struct {
	Op      string `json:"op"` // "lookup" | "flush" | "report" | "learn"
	Address string `json:"address,omitempty"`
	Domain  string `json:"domain,omitempty"`
	All     bool   `json:"all,omitempty"`
	Line    string `json:"line,omitempty"`
	// Recipients: for "learn", how many recipients the message of Line
	// had (qmgr's "nrcpt="), when the caller read it; 0 if not.
	Recipients int `json:"recipients,omitempty"`
}

// AdminResponse answers an AdminRequest.
type AdminResponse struct {
	Error   string         `json:"error,omitempty"`
	Found   bool           `json:"found,omitempty"`
	Entry   *cache.Entry   `json:"entry,omitempty"`
	Removed int            `json:"removed"`
	Report  []DomainReport `json:"report,omitempty"`
	Learn   *LearnResult   `json:"learn,omitempty"`
}

// AddressKey validates an address given to flush or lookup and returns its
// cache key.
func AddressKey(addr string) (string, error) {
	a, err := callout.ParseAddress(addr)
	if err != nil {
		return "", err
	}
	return cache.Key(a.Local, a.Domain), nil
}

// LookupKey is the store key for calloutd lookup: an address's, or with
// "@domain" the domain's catch-all verdict.
func LookupKey(arg string) (string, error) {
	if d, ok := strings.CutPrefix(arg, "@"); ok {
		domain, err := CheckDomain(d)
		if err != nil {
			return "", err
		}
		return catchallKey(domain), nil
	}
	return AddressKey(arg)
}

// CheckDomain validates a domain given to flush and returns it as cache
// keys spell it (lower case, no trailing dot). Flushing a domain removes
// its own verdicts, not its subdomains'.
func CheckDomain(domain string) (string, error) {
	domain = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(domain, "@"), "."))
	if a, err := callout.ToASCII(domain); err == nil {
		domain = a
	}
	if err := callout.CheckHostname(domain); err != nil {
		return "", fmt.Errorf("domain %q: %w", domain, err)
	}
	return domain, nil
}

// Flush removes the verdicts of domain ("" for all) from store: through
// the admin socket for the memory store, directly for Redis.
func Flush(ctx context.Context, store cache.Store, domain string) (int, error) {
	f, ok := store.(cache.Flusher)
	if !ok {
		return 0, errors.New("this store cannot flush many verdicts at once")
	}
	return f.Flush(ctx, domain)
}

func (d *Daemon) serveAdmin(ctx context.Context, l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				d.log.Warn("admin socket accept failed", "err", err)
			}
			return
		}
		go d.adminConn(ctx, c)
	}
}

func (d *Daemon) adminConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	sc := bufio.NewScanner(c)
	// A learn request carries a log line (learn.MaxLine), JSON-escaped.
	sc.Buffer(make([]byte, 4096), 64<<10)
	enc := json.NewEncoder(c)
	for sc.Scan() {
		var req AdminRequest
		var resp AdminResponse
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			resp.Error = "malformed request: " + err.Error()
		} else {
			resp = d.admin(ctx, &req)
		}
		if err := enc.Encode(&resp); err != nil {
			return
		}
	}
}

func (d *Daemon) admin(ctx context.Context, req *AdminRequest) AdminResponse {
	var resp AdminResponse
	var err error
	switch {
	case req.Op == "lookup" && req.Address != "":
		key, err := LookupKey(req.Address)
		if err != nil {
			resp.Error = err.Error()
			break
		}
		e, ok, err := d.store.Get(ctx, key)
		if err != nil {
			resp.Error = err.Error()
			break
		}
		resp.Found = ok
		if ok {
			resp.Entry = &e
		}
	case req.Op == "flush" && req.Address != "":
		key, err := AddressKey(req.Address)
		if err != nil {
			resp.Error = err.Error()
			break
		}
		_, ok, _ := d.store.Get(ctx, key)
		if err := d.store.Delete(ctx, key); err != nil {
			resp.Error = err.Error()
		} else if ok {
			resp.Removed = 1
		}
	case req.Op == "flush" && req.Domain != "":
		domain, err := CheckDomain(req.Domain)
		if err != nil {
			resp.Error = err.Error()
			break
		}
		resp.Removed, err = Flush(ctx, d.store, domain)
		if err != nil {
			resp.Error = err.Error()
		}
		// Its catch-all verdict went with it: the next accepted
		// recipient probes again, and the gauge must not count it.
		d.handler.catchall.known.Delete(domain)
	case req.Op == "report":
		s := d.handler.stats
		if s == nil {
			resp.Error = "the licence count is off (stats.window = \"0s\")"
			break
		}
		s.flush(ctx) // what was gathered since the last write counts too
		resp.Report, err = Report(ctx, s.tally, d.Config(), time.Now())
		if err != nil {
			resp.Error = err.Error()
		}
	case req.Op == "learn" && req.Line != "":
		r := d.handler.Learn(ctx, req.Line, req.Recipients)
		resp.Learn = &r
	case req.Op == "flush" && req.All:
		resp.Removed, err = Flush(ctx, d.store, "")
		if err != nil {
			resp.Error = err.Error()
		}
		d.handler.catchall.known.Clear()
	default:
		resp.Error = fmt.Sprintf("unsupported request %+v", *req)
	}
	if req.Op == "flush" && resp.Error == "" {
		d.log.Info("cache flushed by admin", "address", req.Address, "domain", req.Domain, "all", req.All, "removed", resp.Removed)
	}
	return resp
}

// Admin sends req to the daemon listening on socket and returns its answer.
func Admin(ctx context.Context, socket string, req AdminRequest) (AdminResponse, error) {
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "unix", socket)
	if err != nil {
		return AdminResponse{}, fmt.Errorf("admin socket: %w (is calloutd running, and are you allowed to use %s?)", err, socket)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if err := json.NewEncoder(c).Encode(&req); err != nil {
		return AdminResponse{}, fmt.Errorf("admin socket: %w", err)
	}
	var resp AdminResponse
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return AdminResponse{}, fmt.Errorf("admin socket: %w", err)
	}
	if resp.Error != "" {
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}
