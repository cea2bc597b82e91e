package metrics

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/calloutd/calloutd/callout"
	"github.com/calloutd/calloutd/policyd"
)

// The files that name calloutd's metrics outside this package.
const (
	alertsFile    = "../../contrib/prometheus/alerts.yml"
	dashboardFile = "../../contrib/grafana/calloutd.json"
	docsFile      = "../../docs/metrics.md"
)

type fakeStats struct {
	entries   int
	evictions uint64
}

func (f fakeStats) Len() int          { return f.entries }
func (f fakeStats) Evictions() uint64 { return f.evictions }

// touchAll calls every Observer method once, so that every vector has a
// child and shows in a scrape.
func touchAll(m *Metrics) {
	m.PolicyRequest("RCPT", policyd.Dunno)
	m.CacheLookup(true)
	m.CacheLookup(false)
	m.CacheError("get")
	m.Verdict(callout.Valid, "callout")
	m.CalloutBegin()
	m.CalloutEnd(&callout.Outcome{
		Verdict: callout.Valid, Route: "r", Server: "b:25",
		Attempts: []callout.Attempt{
			{Route: "r", Server: "a:25", Err: &callout.Error{Server: "a:25", Stage: callout.StageConnect, Err: syscall.ECONNREFUSED}},
			{Route: "r", Server: "b:25", Result: callout.Result{Verdict: callout.Valid, Class: callout.Classification{Meaning: callout.MeansExists, Reason: callout.ReasonAccepted}}},
		},
	}, time.Millisecond)
	m.Panic()
	m.Skipped("trusted_network")
	m.DryRunWouldReject("mailstore")
	m.HarvestRejected()
	m.HarvestLimited()
	m.ValidRecipients("example.com", 42)
	m.Catchall("example.com", true)
	m.WatchCatchalls(func() int { return 1 })
	m.Learned("learned")
	m.BackendUp("a:25", false)
	m.WatchPool(fakePool{})
	m.ConnState(+1)
	m.Reloaded(true)
}

// family is what a scrape shows of one metric family.
type family struct {
	typ    dto.MetricType
	labels map[string]bool // label names of its series
}

// exposed returns the series names a scrape of m shows (a histogram's
// _bucket, _sum and _count, not its family name) with their label names.
func exposed(t *testing.T, m *Metrics) map[string]family {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	names := map[string]family{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), ns+"_") {
			continue
		}
		if mf.GetHelp() == "" {
			t.Errorf("%s has no help text", mf.GetName())
		}
		f := family{typ: mf.GetType(), labels: map[string]bool{}}
		for _, mt := range mf.GetMetric() {
			for _, lp := range mt.GetLabel() {
				f.labels[lp.GetName()] = true
			}
		}
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			bucket := family{typ: f.typ, labels: map[string]bool{"le": true}}
			for l := range f.labels {
				bucket.labels[l] = true
			}
			names[mf.GetName()+"_bucket"] = bucket
			names[mf.GetName()+"_sum"] = f
			names[mf.GetName()+"_count"] = f
			continue
		}
		names[mf.GetName()] = f
	}
	return names
}

// knownValues are the only values these labels take; a matcher on another
// value would select nothing, forever, without an error.
func knownValues() map[string][]string {
	var verdicts []string
	for v := callout.Valid; v <= callout.Unreachable; v++ {
		verdicts = append(verdicts, v.String())
	}
	return map[string][]string{
		"protocol_state": {"CONNECT", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "END-OF-MESSAGE", "VRFY", "ETRN", "other"},
		"action":         {"dunno", "reject", "defer", "defer_if_permit", "other"},
		"verdict":        verdicts,
		"outcome":        verdicts,
		"source":         {"cache", "callout", "coalesced", "list", "catchall"},
		"op":             {"get", "set", "delete", "flush", "lease", "decode", "tracking", "count", "tally"},
		"result":         append([]string{"success", "failure", "catchall", "not_catchall"}, LearnResults...),
		"reason": {"connect", "timeout", "busy", "source_address", "breaker_open", "no_smtputf8", "tls", "dns", "greeting", "hello", "mail", "protocol", "closed", "canceled", "other",
			// replies to RCPT TO (callout.Classify)
			"accepted", "no_such_user", "disabled", "moved", "admin", "greylisted", "rate_limited", "quota",
			"too_many_recipients", "temporary", "relay_denied", "client_refused", "helo_refused", "sender_refused",
			"policy", "closing", "unrecognised", "ignored",
			// directory (LDAP) routes
			"ldap_found", "ldap_not_found", "ldap_bind", "ldap_search"},
		"meaning": {"exists", "unknown", "temporary", "refused", "unrecognised", "ignored"},
	}
}

var (
	metricRef = regexp.MustCompile(`calloutd_[a-z0-9_]+`)
	// A metric name with its label matchers, e.g. name{a="b", c!~"d"}.
	selector = regexp.MustCompile(`(calloutd_[a-z0-9_]+)\{([^}]*)\}`)
	matcher  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"`)
)

// jsonText returns every string in a JSON document, one per line, so that
// the queries in it read as they do in Grafana (no \" escapes).
func jsonText(t *testing.T, data []byte) string {
	t.Helper()
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var b strings.Builder
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			b.WriteString(v)
			b.WriteByte('\n')
		case []any:
			for _, e := range v {
				walk(e)
			}
		case map[string]any:
			for k, e := range v {
				b.WriteString(k)
				b.WriteByte('\n')
				walk(e)
			}
		}
	}
	walk(doc)
	return b.String()
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if name == dashboardFile {
		return jsonText(t, data)
	}
	return string(data)
}

// TestNamedMetricsExist checks that every calloutd metric an alert, a
// dashboard panel or the documentation names is one calloutd exports, with
// the labels and label values its selectors use.
func TestNamedMetricsExist(t *testing.T) {
	m := New("test", fakeStats{})
	touchAll(m)
	names := exposed(t, m)
	values := knownValues()
	for _, file := range []string{alertsFile, dashboardFile, docsFile} {
		text := readFile(t, file)
		refs := metricRef.FindAllString(text, -1)
		if len(refs) == 0 {
			t.Errorf("%s names no calloutd metric", file)
		}
		seen := map[string]bool{}
		for _, name := range refs {
			if _, ok := names[name]; !ok && !seen[name] {
				// Documentation may name a histogram by its family.
				if _, hist := names[name+"_bucket"]; !(hist && file == docsFile) {
					t.Errorf("%s names %s, which calloutd does not export", file, name)
				}
			}
			seen[name] = true
		}
		for _, sel := range selector.FindAllStringSubmatch(text, -1) {
			name, body := sel[1], sel[2]
			f, ok := names[name]
			if !ok {
				continue // reported above
			}
			for _, mt := range matcher.FindAllStringSubmatch(body, -1) {
				label, op, value := mt[1], mt[2], mt[3]
				if label == "job" || label == "instance" {
					continue // target labels Prometheus adds
				}
				if !f.labels[label] {
					t.Errorf("%s: %s{%s}: %s has no label %q", file, name, body, name, label)
					continue
				}
				if op != "=" && op != "!=" || strings.ContainsAny(value, "${") {
					continue // regexps and template variables
				}
				if known, ok := values[label]; ok && !slices.Contains(known, value) {
					t.Errorf("%s: %s{%s}: %s=%q never occurs; %s is one of %q", file, name, body, label, value, label, known)
				}
			}
		}
	}
}

// TestDocsListEveryMetric checks that the reference table in
// docs/metrics.md has a row for every calloutd metric, so a new metric
// cannot ship undocumented.
func TestDocsListEveryMetric(t *testing.T) {
	m := New("test", fakeStats{})
	touchAll(m)
	doc := readFile(t, docsFile)
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), ns+"_") {
			continue
		}
		n++
		if !strings.Contains(doc, "\n| `"+mf.GetName()+"` |") {
			t.Errorf("%s has no table row for %s", docsFile, mf.GetName())
		}
	}
	if n < 14 {
		t.Errorf("registry has %d calloutd metrics, want at least 14", n)
	}
}

// scrape fetches m's metrics the way Prometheus does, over HTTP on
// loopback in the text format, and parses them.
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	defer srv.Close()
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %s\n%s", resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET /metrics: Content-Type %q, want text/plain", ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// series finds the series of family name whose labels are exactly
// labels (name, value pairs).
func series(fams map[string]*dto.MetricFamily, name string, labels ...string) *dto.Metric {
	mf := fams[name]
	if mf == nil {
		return nil
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, mt := range mf.GetMetric() {
		if len(mt.GetLabel()) != len(want) {
			continue
		}
		match := true
		for _, lp := range mt.GetLabel() {
			if v, ok := want[lp.GetName()]; !ok || v != lp.GetValue() {
				match = false
				break
			}
		}
		if match {
			return mt
		}
	}
	return nil
}

// value is the value of a counter or gauge series; it fails the test if
// the series is missing.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	mt := series(fams, name, labels...)
	if mt == nil {
		t.Fatalf("no series %s%s in scrape; %s has %s", name, fmtLabels(labels), name, describe(fams[name]))
	}
	switch {
	case mt.Counter != nil:
		return mt.GetCounter().GetValue()
	case mt.Gauge != nil:
		return mt.GetGauge().GetValue()
	case mt.Untyped != nil:
		return mt.GetUntyped().GetValue()
	}
	t.Fatalf("%s%s is neither counter nor gauge", name, fmtLabels(labels))
	return 0
}

func fmtLabels(labels []string) string {
	var parts []string
	for i := 0; i+1 < len(labels); i += 2 {
		parts = append(parts, fmt.Sprintf("%s=%q", labels[i], labels[i+1]))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// describe lists a family's series, for failure messages.
func describe(mf *dto.MetricFamily) string {
	if mf == nil {
		return "no series"
	}
	var out []string
	for _, mt := range mf.GetMetric() {
		var ls []string
		for _, lp := range mt.GetLabel() {
			ls = append(ls, lp.GetName(), lp.GetValue())
		}
		out = append(out, fmtLabels(ls))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func checkValue(t *testing.T, fams map[string]*dto.MetricFamily, want float64, name string, labels ...string) {
	t.Helper()
	if got := value(t, fams, name, labels...); got != want {
		t.Errorf("%s%s = %v, want %v", name, fmtLabels(labels), got, want)
	}
}

func TestActionLabel(t *testing.T) {
	tests := []struct {
		action policyd.Action
		want   string
	}{
		{policyd.Dunno, "dunno"},
		{"550 5.1.1 User unknown", "reject"},
		{policyd.Reject(550, "", policyd.StatusBadMailbox, "x"), "reject"},
		{"554 5.7.1 No", "reject"},
		{"450 4.2.0 Try later", "defer"},
		{policyd.DeferIfPermit("", policyd.StatusNoAnswer, "x"), "defer_if_permit"},
		{"DEFER_IF_PERMIT 4.4.1 x", "defer_if_permit"},
		{"OK", "other"},
		{"REJECT", "other"},
		{"", "other"},
		{"5", "other"},
	}
	known := knownValues()["action"]
	for _, tt := range tests {
		got := ActionLabel(tt.action)
		if got != tt.want {
			t.Errorf("ActionLabel(%q) = %q, want %q", tt.action, got, tt.want)
		}
		if !slices.Contains(known, got) {
			t.Errorf("ActionLabel(%q) = %q, not one of %q", tt.action, got, known)
		}
	}
}

func TestPolicyRequest(t *testing.T) {
	tests := []struct {
		state      string
		action     policyd.Action
		wantState  string
		wantAction string
	}{
		{"RCPT", "550 5.1.1 x", "RCPT", "reject"},
		{"RCPT", policyd.Dunno, "RCPT", "dunno"},
		{"RCPT", "DEFER_IF_PERMIT 4.4.1 Recipient verification unavailable", "RCPT", "defer_if_permit"},
		{"DATA", policyd.Dunno, "DATA", "dunno"},
		{"END-OF-MESSAGE", policyd.Dunno, "END-OF-MESSAGE", "dunno"},
		{"VRFY", "450 4.2.0 x", "VRFY", "defer"},
		// What Postfix never sends must not become a label value.
		{"", policyd.Dunno, "other", "dunno"},
		{"rcpt", policyd.Dunno, "other", "dunno"},
		{"RCPT\x00", policyd.Dunno, "other", "dunno"},
		{strings.Repeat("X", 300), "OK", "other", "other"},
	}
	m := New("test", nil)
	want := map[[2]string]float64{}
	for _, tt := range tests {
		m.PolicyRequest(tt.state, tt.action)
		want[[2]string{tt.wantState, tt.wantAction}]++
	}
	fams := scrape(t, m)
	for k, n := range want {
		checkValue(t, fams, n, "calloutd_policy_requests_total", "protocol_state", k[0], "action", k[1])
	}
	// The RCPT series of every action are exported from the start, at 0.
	for _, a := range []string{"dunno", "reject", "defer", "defer_if_permit", "other"} {
		if _, ok := want[[2]string{"RCPT", a}]; !ok {
			want[[2]string{"RCPT", a}] = 0
		}
	}
	if got := len(fams["calloutd_policy_requests_total"].GetMetric()); got != len(want) {
		t.Errorf("calloutd_policy_requests_total has %d series, want %d: %s", got, len(want), describe(fams["calloutd_policy_requests_total"]))
	}
}

func TestCacheAndVerdicts(t *testing.T) {
	m := New("test", nil)
	for range 3 {
		m.CacheLookup(true)
	}
	m.CacheLookup(false)
	m.CacheError("get")
	m.CacheError("get")
	m.Verdict(callout.Valid, "cache")
	m.Verdict(callout.Unknown, "callout")
	m.Verdict(callout.Unknown, "callout")
	m.Verdict(callout.Unreachable, "callout")

	fams := scrape(t, m)
	checkValue(t, fams, 3, "calloutd_cache_hits_total")
	checkValue(t, fams, 1, "calloutd_cache_misses_total")
	checkValue(t, fams, 2, "calloutd_cache_errors_total", "op", "get")
	checkValue(t, fams, 0, "calloutd_cache_errors_total", "op", "set") // exported before the first error
	checkValue(t, fams, 1, "calloutd_verdicts_total", "verdict", "valid", "source", "cache")
	checkValue(t, fams, 2, "calloutd_verdicts_total", "verdict", "unknown", "source", "callout")
	checkValue(t, fams, 1, "calloutd_verdicts_total", "verdict", "unreachable", "source", "callout")
	// Every verdict from the cache is exported from the start, at 0.
	checkValue(t, fams, 0, "calloutd_verdicts_total", "verdict", "tempfail", "source", "cache")
	if got := len(fams["calloutd_verdicts_total"].GetMetric()); got != 6 {
		t.Errorf("calloutd_verdicts_total has %d series, want 6: %s", got, describe(fams["calloutd_verdicts_total"]))
	}
	if fams["calloutd_cache_entries"] != nil || fams["calloutd_cache_evictions_total"] != nil {
		t.Error("without a memory store, calloutd_cache_entries and calloutd_cache_evictions_total are exported")
	}
}

func TestCalloutEnd(t *testing.T) {
	m := New("test", nil)
	refused := &callout.Error{Server: "10.0.0.5:25", Stage: callout.StageConnect, Err: syscall.ECONNREFUSED}
	greeting := &callout.Error{Server: "10.0.0.6:25", Stage: callout.StageGreeting,
		Reply: &callout.Reply{Code: 554, Lines: []string{"no service"}}}

	// Route mailstore: two servers unavailable, the third says valid.
	m.CalloutBegin()
	m.CalloutBegin()
	m.CalloutEnd(&callout.Outcome{
		Verdict: callout.Valid, Route: "mailstore", Server: "10.0.0.7:25",
		Reply: callout.Reply{Code: 250},
		Attempts: []callout.Attempt{
			{Route: "mailstore", Server: "10.0.0.5:25", Err: refused},
			{Route: "mailstore", Server: "10.0.0.6:25", Err: greeting},
			{Route: "mailstore", Server: "10.0.0.7:25", Result: callout.Result{Verdict: callout.Valid}},
		},
	}, 120*time.Millisecond)
	// Unreachable: no deciding route, so the first one asked is the label.
	m.CalloutEnd(&callout.Outcome{
		Verdict: callout.Unreachable, Err: refused,
		Attempts: []callout.Attempt{
			{Route: "legacy", Server: "10.0.0.5:25", Err: refused},
			{Route: "backup", Server: "10.0.1.5:25", Err: &callout.Error{Server: "10.0.1.5:25", Stage: callout.StageConnect, Err: os.ErrDeadlineExceeded}},
		},
	}, 10*time.Second)

	fams := scrape(t, m)
	checkValue(t, fams, 0, "calloutd_callouts_in_flight")
	checkValue(t, fams, 2, "calloutd_backend_attempts_total", "server", "10.0.0.5:25")
	checkValue(t, fams, 1, "calloutd_backend_attempts_total", "server", "10.0.0.6:25")
	checkValue(t, fams, 1, "calloutd_backend_attempts_total", "server", "10.0.0.7:25")
	checkValue(t, fams, 1, "calloutd_backend_attempts_total", "server", "10.0.1.5:25")
	checkValue(t, fams, 2, "calloutd_backend_failures_total", "server", "10.0.0.5:25", "reason", "connect")
	checkValue(t, fams, 1, "calloutd_backend_failures_total", "server", "10.0.0.6:25", "reason", "greeting")
	checkValue(t, fams, 1, "calloutd_backend_failures_total", "server", "10.0.1.5:25", "reason", "timeout")
	if got := len(fams["calloutd_backend_failures_total"].GetMetric()); got != 3 {
		t.Errorf("calloutd_backend_failures_total has %d series, want 3 (a server that answered has none): %s",
			got, describe(fams["calloutd_backend_failures_total"]))
	}

	tests := []struct {
		route, outcome string
		seconds        float64
		bucketLE       float64 // the smallest bucket that holds it
	}{
		{"mailstore", "valid", 0.12, 0.25},
		{"legacy", "unreachable", 10, 10}, // le is "less or equal"
	}
	for _, tt := range tests {
		mt := series(fams, "calloutd_callout_duration_seconds", "route", tt.route, "outcome", tt.outcome)
		if mt == nil {
			t.Errorf("no calloutd_callout_duration_seconds{route=%q,outcome=%q}; have %s", tt.route, tt.outcome,
				describe(fams["calloutd_callout_duration_seconds"]))
			continue
		}
		h := mt.GetHistogram()
		if h.GetSampleCount() != 1 || math.Abs(h.GetSampleSum()-tt.seconds) > 1e-9 {
			t.Errorf("%s/%s: count %d sum %v, want 1 and %v", tt.route, tt.outcome, h.GetSampleCount(), h.GetSampleSum(), tt.seconds)
		}
		for _, b := range h.GetBucket() {
			var want uint64
			if b.GetUpperBound() >= tt.bucketLE {
				want = 1
			}
			if b.GetCumulativeCount() != want {
				t.Errorf("%s/%s: bucket le=%v has %d, want %d", tt.route, tt.outcome, b.GetUpperBound(), b.GetCumulativeCount(), want)
			}
		}
	}
	if got := len(fams["calloutd_callout_duration_seconds"].GetMetric()); got != 2 {
		t.Errorf("calloutd_callout_duration_seconds has %d series, want 2: %s", got, describe(fams["calloutd_callout_duration_seconds"]))
	}
}

// TestCalloutEndNoVerdict: an outcome without a verdict (no route matched
// after a reload) ends the callout but times nothing.
func TestCalloutEndNoVerdict(t *testing.T) {
	m := New("test", nil)
	m.CalloutBegin()
	m.CalloutEnd(&callout.Outcome{}, time.Millisecond)
	fams := scrape(t, m)
	checkValue(t, fams, 0, "calloutd_callouts_in_flight")
	if mf := fams["calloutd_callout_duration_seconds"]; mf != nil && len(mf.GetMetric()) > 0 {
		t.Errorf("calloutd_callout_duration_seconds has series %s, want none", describe(mf))
	}
}

// rcptErr is the error a probe returns for a reply to RCPT TO that says
// nothing about the recipient.
func rcptErr(line string) error {
	rep, err := callout.ReadReply(bufio.NewReader(strings.NewReader(line + "\r\n")))
	if err != nil {
		panic(err)
	}
	rcpt, _ := callout.ParseAddress("bob@example.test")
	_, err = callout.ResultOf("x:25", rcpt, rep, callout.Classify(rep))
	return err
}

func TestBackendFailureReason(t *testing.T) {
	cerr := func(stage callout.Stage, err error, code int) *callout.Error {
		e := &callout.Error{Server: "s", Stage: stage, Err: err}
		if code != 0 {
			e.Reply = &callout.Reply{Code: code}
		}
		return e
	}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"refused", cerr(callout.StageConnect, syscall.ECONNREFUSED, 0), "connect"},
		{"connect timeout", cerr(callout.StageConnect, os.ErrDeadlineExceeded, 0), "timeout"},
		{"budget spent", cerr(callout.StageRcpt, context.DeadlineExceeded, 0), "timeout"},
		{"greeting 554", cerr(callout.StageGreeting, nil, 554), "greeting"},
		{"ehlo and helo refused", cerr(callout.StageHello, nil, 502), "hello"},
		{"mail from refused", cerr(callout.StageMail, nil, 553), "mail"},
		{"rcpt 421", rcptErr("421 4.4.2 timeout exceeded"), "closing"},
		{"rcpt relay denied", rcptErr("550 relay not permitted"), "relay_denied"},
		{"rcpt unrecognised", rcptErr("550 Requested action not taken: mailbox unavailable"), "unrecognised"},
		{"garbage", cerr(callout.StageGreeting, fmt.Errorf("%w: no code", callout.ErrMalformedReply), 0), "protocol"},
		{"hung up", cerr(callout.StageHello, io.EOF, 0), "closed"},
		{"forced shutdown", cerr(callout.StageMail, context.Canceled, 0), "canceled"},
		{"wrapped", fmt.Errorf("probe: %w", cerr(callout.StageConnect, syscall.ECONNREFUSED, 0)), "connect"},
		{"not a callout.Error", errors.New("pool exhausted"), "other"},
	}
	known := knownValues()["reason"]
	m := New("test", nil)
	for i, tt := range tests {
		server := fmt.Sprintf("10.0.0.%d:25", i+1)
		m.CalloutBegin()
		m.CalloutEnd(&callout.Outcome{Verdict: callout.Unreachable,
			Attempts: []callout.Attempt{{Route: "r", Server: server, Err: tt.err}}}, time.Second)
		var ce *callout.Error
		if errors.As(tt.err, &ce) && tt.want != "canceled" && ce.Reason() != tt.want {
			t.Errorf("%s: Error.Reason() = %q, want %q", tt.name, ce.Reason(), tt.want)
		}
		if !slices.Contains(known, tt.want) {
			t.Errorf("%s: reason %q is not in knownValues", tt.name, tt.want)
		}
	}
	fams := scrape(t, m)
	for i, tt := range tests {
		server := fmt.Sprintf("10.0.0.%d:25", i+1)
		if mt := series(fams, "calloutd_backend_failures_total", "server", server, "reason", tt.want); mt == nil || mt.GetCounter().GetValue() != 1 {
			t.Errorf("%s: want calloutd_backend_failures_total{server=%q,reason=%q} 1; have %s",
				tt.name, server, tt.want, describe(fams["calloutd_backend_failures_total"]))
		}
	}
}

func TestConnState(t *testing.T) {
	m := New("test", nil)
	m.ConnState(+1)
	m.ConnState(+1)
	m.ConnState(+1)
	m.ConnState(-1)
	checkValue(t, scrape(t, m), 2, "calloutd_policy_connections")
}

func TestReloaded(t *testing.T) {
	before := float64(time.Now().UnixNano()) / 1e9
	m := New("test", nil)
	fams := scrape(t, m)
	checkValue(t, fams, 0, "calloutd_config_reloads_total", "result", "success")
	checkValue(t, fams, 0, "calloutd_config_reloads_total", "result", "failure")
	loaded := value(t, fams, "calloutd_config_last_reload_success_timestamp_seconds")
	if loaded < before-1 || loaded > before+60 {
		t.Errorf("calloutd_config_last_reload_success_timestamp_seconds = %v after New, want about %v", loaded, before)
	}

	m.Reloaded(false)
	fams = scrape(t, m)
	checkValue(t, fams, 0, "calloutd_config_reloads_total", "result", "success")
	checkValue(t, fams, 1, "calloutd_config_reloads_total", "result", "failure")
	checkValue(t, fams, loaded, "calloutd_config_last_reload_success_timestamp_seconds") // a failure keeps it

	m.Reloaded(true)
	fams = scrape(t, m)
	checkValue(t, fams, 1, "calloutd_config_reloads_total", "result", "success")
	checkValue(t, fams, 1, "calloutd_config_reloads_total", "result", "failure")
	if got := value(t, fams, "calloutd_config_last_reload_success_timestamp_seconds"); got < loaded {
		t.Errorf("calloutd_config_last_reload_success_timestamp_seconds = %v after a reload, want >= %v", got, loaded)
	}
}

func TestBuildInfoAndCacheStats(t *testing.T) {
	m := New("v1.2.3", fakeStats{entries: 42, evictions: 7})
	fams := scrape(t, m)
	checkValue(t, fams, 1, "calloutd_build_info", "version", "v1.2.3", "goversion", runtime.Version())
	checkValue(t, fams, 42, "calloutd_cache_entries")
	checkValue(t, fams, 7, "calloutd_cache_evictions_total")
	if fams["go_goroutines"] == nil || (runtime.GOOS == "linux" && fams["process_open_fds"] == nil) {
		t.Error("Go and process collectors are missing")
	}
}

// TestConcurrentObservers runs the observer from many goroutines, as the
// policy server does, and checks that no update is lost (and, with -race,
// that none races).
func TestConcurrentObservers(t *testing.T) {
	const workers, each = 8, 250
	m := New("test", nil)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				m.ConnState(+1)
				m.PolicyRequest("RCPT", "550 5.1.1 x")
				m.CacheLookup(false)
				m.CalloutBegin()
				m.CalloutEnd(&callout.Outcome{Verdict: callout.Unknown, Route: "r",
					Attempts: []callout.Attempt{{Route: "r", Server: "s:25"}}}, time.Millisecond)
				m.ConnState(-1)
			}
		})
	}
	wg.Wait()
	fams := scrape(t, m)
	const n = workers * each
	checkValue(t, fams, n, "calloutd_policy_requests_total", "protocol_state", "RCPT", "action", "reject")
	checkValue(t, fams, n, "calloutd_cache_misses_total")
	checkValue(t, fams, n, "calloutd_backend_attempts_total", "server", "s:25")
	checkValue(t, fams, 0, "calloutd_callouts_in_flight")
	checkValue(t, fams, 0, "calloutd_policy_connections")
	if mt := series(fams, "calloutd_callout_duration_seconds", "route", "r", "outcome", "unknown"); mt == nil || mt.GetHistogram().GetSampleCount() != n {
		t.Errorf("calloutd_callout_duration_seconds{route=\"r\",outcome=\"unknown\"}: want count %d", n)
	}
}

type fakePool struct{}

func (fakePool) Stats() (open, idle int) { return 3, 2 }
