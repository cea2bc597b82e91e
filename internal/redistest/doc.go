// Package redistest starts real Redis topologies on loopback for tests: a
// standalone server, a Sentinel group (master, replica, three sentinels) and
// a three-master Cluster. Nothing is mocked: every instance is a
// redis-server process (sentinels are `redis-server CONF --sentinel`), and
// Server.CLI runs the real redis-cli.
//
//	func TestCache(t *testing.T) {
//		srv := redistest.Start(t, "requirepass s3cret")
//		// ... point the code under test at srv.Addr() ...
//		if got := srv.CLI("GET", "k"); got != "v" { ... }
//		srv.Kill()    // the server dies: SIGKILL
//		srv.Restart() // back on the same port, with no data
//	}
//
// Every instance binds 127.0.0.1 only, on a port that was free when it was
// picked (never a fixed port, so tests of several packages may run at once),
// keeps no data on disk (save "", appendonly no) and lives in its own
// t.TempDir() with its config file and its log. It is killed, with any
// process it forked, when the test ends (t.Cleanup); on Linux it also dies
// with the test binary, so a test that times out leaves no orphans. When an
// instance does not come up, or a topology does not settle within its time
// limit (20 s at most), the test fails with the tail of the logs involved.
//
// The starters call Need, so a test that uses them is skipped, loudly, on a
// machine without redis-server and redis-cli, and fails instead under CI=true.
//
// Methods that can fail the test (Restart, CLI, Failover, CurrentMaster,
// NodeFor) fail the test that was passed to the starter, so they must be
// called from that test's goroutine. Kill, Addr, Port and Pid never fail and
// may be called from anywhere.
//
// It is a normal package, not a _test file, so that the tests of any package
// can import it; nothing outside tests should. It needs a Unix system.
package redistest
