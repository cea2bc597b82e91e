package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/calloutd/calloutd/internal/daemon"
)

// report prints the licence count: per domain a route names, the distinct
// valid and unknown recipients and the callouts over stats.window. With
// Redis it reads the counts all nodes share (written every 10 s); with the
// memory store it asks the running daemon.
func report(args []string, stdout, stderr io.Writer) int {
	fset, path := flags("report", stderr)
	asJSON := fset.Bool("json", false, "print JSON, one object per domain in an array")
	if code, done := parse(fset, args, exitExUsage); done {
		return code
	}
	if fset.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: calloutd report [-config FILE] [-json]")
		return exitExUsage
	}
	cfg, code := adminConfig(*path, stderr)
	if cfg == nil {
		return code
	}
	if cfg.Stats.Window == 0 {
		fmt.Fprintf(stderr, "calloutd report: %s: the licence count is off (stats.window = \"0s\")\n", *path)
		return exitExConfig
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var rows []daemon.DomainReport
	if cfg.Cache.Store == "redis" {
		r, code := redisStore(cfg, stderr, "report")
		if r == nil {
			return code
		}
		defer r.Close()
		var err error
		if rows, err = daemon.Report(ctx, r, cfg, time.Now()); err != nil {
			fmt.Fprintf(stderr, "calloutd report: %v\n", err)
			return exitUnavail
		}
	} else {
		resp, err := daemon.Admin(ctx, cfg.AdminSocket, daemon.AdminRequest{Op: "report"})
		if err != nil {
			fmt.Fprintf(stderr, "calloutd report: %v\n", err)
			return exitUnavail
		}
		rows = resp.Report
	}
	if *asJSON {
		if rows == nil {
			rows = []daemon.DomainReport{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rows)
		return 0
	}
	days := int(cfg.Stats.Window.D() / (24 * time.Hour))
	fmt.Fprintf(stdout, "Licence count over the last %d days (today included, UTC):\n", days)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "domain\tvalid recipients\tunknown recipients\tcallouts\t")
	var valid int64
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t\n", r.Domain, r.Valid, r.Unknown, r.Callouts)
		valid += r.Valid
	}
	fmt.Fprintf(tw, "total\t%d\t\t\t\n", valid)
	_ = tw.Flush()
	if len(rows) == 0 {
		fmt.Fprintln(stdout, "(nothing counted yet)")
	}
	return 0
}
