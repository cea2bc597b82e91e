# calloutd — see README.md. Targets:
#   make run     run calloutd on the example config (memory cache)
#   make test    install test dependencies if missing, vet, run every test
#   make bench   benchmarks (see docs/benchmarks.md)
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS  := -X main.version=$(VERSION)

.PHONY: all build run test deps vet lint unit bench fuzz clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/calloutd ./cmd/calloutd

run:
	$(GO) run -ldflags "$(LDFLAGS)" ./cmd/calloutd serve -config contrib/calloutd.toml

# demo: calloutd on the example config with a demo backend, then check, a
# policy round trip, the cache, lookup, flush and the metrics, stopped and
# cleaned up on exit (contrib/demo/demo.sh; README.md, "See it work").
.PHONY: demo
demo:
	@GO="$(GO)" bash contrib/demo/demo.sh

# deps installs what the tests need (postfix, swaks, redis-server) when it is
# missing and we are root on Debian; elsewhere it says what to install.
deps:
	@bash .ci/deps

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...

# staticcheck comes from the Go module proxy at a pinned version.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint:
	$(GO) run $(STATICCHECK) ./...

unit:
	$(GO) test -race -count=1 ./...

test: deps vet lint unit

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./...

# Short fuzzing session of every parser: a budget of executions, not of
# time. A duration -fuzztime fails on Go 1.26 with "context deadline
# exceeded" and no crasher when the coordinator races its own deadline
# (golang/go#75804, fixed in Go 1.27). Minimising large inputs can stall a
# run for long, hence -fuzzminimizetime.
FUZZ = $(GO) test -run '^$$' -fuzztime 500000x -fuzzminimizetime 1x -fuzz
fuzz:
	$(FUZZ) FuzzParseRequest ./policyd
	$(FUZZ) FuzzActionText ./policyd
	$(FUZZ) FuzzReadReply ./callout
	$(FUZZ) FuzzClassify ./callout
	$(FUZZ) FuzzParseAddress ./callout
	$(FUZZ) FuzzParse ./internal/recipients
	$(FUZZ) FuzzFilterEscape ./callout/directory
	$(FUZZ) FuzzParse ./internal/learn

clean:
	rm -rf bin
