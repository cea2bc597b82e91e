// Package config reads and validates calloutd's TOML configuration. Every
// key, its default and its meaning are described in docs/configuration.md;
// contrib/calloutd.toml is the commented example, parsed by a test.
//
// Unknown keys are errors, so a typo never silently falls back to a
// default. Errors name the file and the key: "calloutd.toml: route[1].servers:
// must not be empty".
package config
