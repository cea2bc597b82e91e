// Package testproc starts the real servers the tests run (redis-server,
// slapd): each in its own process group, killed with the test binary on
// Linux, and reaped in the background.
package testproc
