// Package logline is calloutd's slog handler for logs that are not read on
// a terminal: one line per record, in the plain text layout of tint (what
// docs/operations.md shows) or as one JSON object, written with a single
// Write. It exists for speed: a verdict is logged on every policy request,
// and this handler formats one in a third of the time of log/slog's own and
// a seventh of tint's, without allocating.
package logline
