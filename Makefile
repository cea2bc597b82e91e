# calloutd — see README.md. Targets:
#   make run     run calloutd on the example config (memory cache)
#   make test    install test dependencies if missing, vet, run every test
#   make bench   benchmarks (see docs/benchmarks.md)
#   make deb     Debian package in build/ (see packaging/, README.md)
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS  := -X main.version=$(VERSION)

.PHONY: all build run test deps vet lint unit bench fuzz clean deb deb-test

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

test: deps vet lint unit deb-test

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
	rm -rf bin build

# Debian package: make deb writes build/calloutd_VERSION_ARCH.deb.
# nfpm comes from the Go module proxy at a pinned version, like staticcheck;
# it is not a dependency of calloutd's module.
NFPM           ?= github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0
# Evaluated once, and only by the targets that use it.
DEB_VERSION     = $(eval DEB_VERSION := $$(shell bash packaging/version.sh))$(DEB_VERSION)
DEB_ARCH        = $(eval DEB_ARCH := $$(shell $(GO) env GOARCH))$(DEB_ARCH)
DEB_MAINTAINER ?= The calloutd authors <calloutd@example.org>
DEB_DIR        := build/deb
DEB_MAN        := docs/man/calloutd.8 docs/man/calloutd.toml.5
DEB             = build/calloutd_$(DEB_VERSION)_$(DEB_ARCH).deb

deb:
	@test -n "$(DEB_VERSION)" || { echo "make deb: no package version (packaging/version.sh)" >&2; exit 1; }
	@for m in $(DEB_MAN); do test -f $$m || { echo "make deb: $$m is missing: the package ships the man pages calloutd.8 and calloutd.toml.5 from docs/man/" >&2; exit 1; }; done
	rm -rf $(DEB_DIR) build/calloutd_*.deb
	mkdir -p $(DEB_DIR)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS) -s -w" -o $(DEB_DIR)/calloutd ./cmd/calloutd
	sed -e '/^Exec[A-Za-z]*=/s,/usr/local/bin/,/usr/sbin/,g' \
	    -e '/^# Install:$$/,/^#   systemctl daemon-reload/c\# Installed by the calloutd Debian package. Configure /etc/calloutd/calloutd.toml,\n# then: systemctl enable --now calloutd' \
	    contrib/systemd/calloutd.service >$(DEB_DIR)/calloutd.service
	@! grep -n '^Exec.*/usr/local/' $(DEB_DIR)/calloutd.service || { echo "make deb: the unit above still runs something from /usr/local" >&2; exit 1; }
	@grep -q '^ExecStart=/usr/sbin/calloutd ' $(DEB_DIR)/calloutd.service || { echo "make deb: no ExecStart=/usr/sbin/calloutd in the packaged unit" >&2; exit 1; }
	gzip -9n -c docs/man/calloutd.8 >$(DEB_DIR)/calloutd.8.gz
	gzip -9n -c docs/man/calloutd.toml.5 >$(DEB_DIR)/calloutd.toml.5.gz
	bash packaging/changelog.sh "$(DEB_VERSION)" "$(DEB_MAINTAINER)" | gzip -9n >$(DEB_DIR)/changelog.gz
	GO="$(GO)" bash packaging/copyright.sh >$(DEB_DIR)/copyright
	DEB_VERSION="$(DEB_VERSION)" DEB_ARCH="$(DEB_ARCH)" DEB_MAINTAINER="$(DEB_MAINTAINER)" \
	SOURCE_DATE_EPOCH="$$(git log -1 --format=%ct HEAD)" \
	  $(GO) run $(NFPM) package --config packaging/nfpm.yaml --packager deb --target $(DEB)
	@echo "built $(DEB)"

# Installs the package on this machine, checks it, then purges it (root on
# Debian only; skips elsewhere, fails under CI=true). packaging/test-deb.sh.
deb-test: deb
	bash packaging/test-deb.sh $(DEB) "$(VERSION)"
