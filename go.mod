module github.com/calloutd/calloutd

go 1.26.0

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/lmittmann/tint v1.2.1
	golang.org/x/sync v0.24.0
)
