// Package metrics holds calloutd's Prometheus metrics (namespace
// "calloutd") and implements daemon.Observer over them, so that the
// reusable packages (policyd, callout, cache) never import Prometheus.
// docs/metrics.md lists every metric; contrib/prometheus/alerts.yml uses
// them, and a test checks that every metric an alert names exists.
package metrics
