// Package logfile is calloutd's log.file: an append-only file that can be
// reopened at the same path, so that after logrotate has renamed it (and
// reloaded calloutd) new lines go to a new file. A write goes whole to one
// file or the other, never split between them, and none is lost.
//
// It knows nothing of signals or of the daemon: cmd/calloutd calls Reopen
// on SIGHUP.
package logfile
