//go:build !linux

package callout

import "net"

// quiet cannot look into a connection here: a stale session is found by
// its next reply instead (and the probe retried once).
func quiet(net.Conn) bool { return true }
