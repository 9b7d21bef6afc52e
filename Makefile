# ftpgate. The two commands of the README:
#   sudo make demo   build ftpgate and run it on its built-in network
#   sudo make test   run every test: unit, fuzz seeds and a short fuzz run, end to end in namespaces

SHELL    := /bin/bash
GO       ?= go
export PATH := $(PATH):/usr/local/go/bin
BIN      := bin/ftpgate
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
FUZZTIME ?= 60s
FUZZ     := nat:FuzzParsePORT nat:FuzzParseEPRT nat:FuzzParse227 nat:FuzzParse229 nat:FuzzParsePortRange \
            nat:FuzzParseLPRT nat:FuzzParse228 nat:FuzzCheckDestination \
            proxy/ftp:FuzzParseCommand proxy/ftp:FuzzReplyReader

.PHONY: all build deps lint unit fuzz-quick integration e2e test demo fuzz bench-pinholes bench bench-rate bench-sessions check-config clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/ftpgate

deps:
	e2e/install-deps.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/...
	$(GO) vet -tags integration ./rules/...

# Unit and loopback tests (fuzz seed corpora replay here too).
unit:
	$(GO) test -race -count=1 ./...

# The iptables backend against the real kernel, both variants (nft and
# legacy), in a fresh network namespace that vanishes with the process:
# never in this machine's own firewall. Needs root.
integration:
	$(GO) test -c -tags integration -o bin/rules.test ./rules
	unshare --net -- bin/rules.test -test.v -test.count=1 2>&1 | grep -E '^(=== RUN|--- |    --- |PASS|FAIL|ok|panic)|_test.go' ; \
	  exit $${PIPESTATUS[0]}

# Pinhole latency (p50/p99 with 0, 1,000 and 10,000 open) and opens per
# second from 64 concurrent sessions, for every backend and iptables
# variant, against the real kernel in a fresh namespace (docs/pinholes.md).
bench-pinholes:
	$(GO) test -c -tags integration -o bin/rules.test ./rules
	unshare --net -- bin/rules.test -test.run=NONE -test.bench=PinholeOpenClose -test.benchtime=200x
	unshare --net -- bin/rules.test -test.run=NONE -test.bench=PinholeConcurrent -test.benchtime=3s

# End-to-end tests in network namespaces: needs root; fails (never skips)
# when it cannot run.
e2e:
	$(GO) test -tags e2e -count=1 -timeout 30m -v ./e2e/ 2>&1 | tee e2e.log | grep -E '^(=== RUN|--- |    --- |PASS|FAIL|ok|panic)|_test.go' ; \
	  exit $${PIPESTATUS[0]}

test: deps lint unit fuzz-quick integration e2e

# A bounded run of every fuzz target (make test): 300,000 inputs each (a
# few seconds) beyond the seed corpora that unit replays. A count, not a
# duration: Go 1.26's fuzzing engine can fail a duration run with "context
# deadline exceeded" when its deadline fires on a busy machine, with no
# failing input (golang/go#75804, fixed in Go 1.27).
fuzz-quick:
	$(MAKE) --no-print-directory fuzz FUZZTIME=300000x

demo: deps build
	$(GO) run ./e2e/demo -ftpgate $(BIN)

# Each fuzz target for FUZZTIME.
fuzz:
	@for t in $(FUZZ); do pkg=$${t%%:*}; fn=$${t##*:}; \
	  echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
	  $(GO) test -run=NONE -fuzz="^$$fn$$" -fuzztime=$(FUZZTIME) ./$$pkg/ || exit 1; done

# Throughput (1 GiB RETR/STOR, passive and active), session rate and
# ftpgate's CPU per GiB for direct, the kernel's FTP helper, the kernel and
# the relay path, in network namespaces (needs root): prints one table and
# writes it to docs/benchmarks.md.
bench: deps build
	$(GO) run ./e2e/bench -ftpgate $(BIN)

# What an idle session costs: SESSIONS concurrent logged-in idle sessions
# through ftpgate (fewer if the file limit does not allow them), its
# memory, descriptors and goroutines per session, and nothing left after
# they quit. In a network namespace of its own; needs root.
SESSIONS ?= 10000
bench-sessions: build
	$(GO) run ./e2e/benchsessions -ftpgate $(BIN) -sessions $(SESSIONS)

# How close rate-limited downloads come to rate_limit (docs/rate-limit.md):
# over loopback, about 10 s.
bench-rate:
	$(GO) test -run NONE -bench BenchmarkRateLimit -benchtime 1x ./proxy/

check-config: build
	$(BIN) check --config deploy/config.example.yaml

clean:
	rm -rf bin e2e.log

# The static image (deploy/docker/Containerfile.static) from bin/ftpgate,
# with podman and offline: FROM scratch, nothing is pulled (--pull=never).
# The build context is a temporary directory holding only the binary,
# passwd, group and this machine's CA bundle. Tags ftpgate:$(VERSION) and
# ftpgate:static. The podman flags pin what this machine (and CI) has:
# runc, the runtime installed (podman would prefer crun if present);
# cgroupfs, as systemd is not the init; vfs storage, plain copies that need
# no overlay mount (every podman command on this storage must pass it);
# and containers.conf's default_ulimits = [], as podman's default
# nofile=1048576 is above this machine's hard limit (runc fails with
# "error setting rlimit type 7").
PODMAN ?= CONTAINERS_CONF=$(CURDIR)/deploy/docker/containers.conf podman --runtime runc --cgroup-manager cgroupfs --storage-driver vfs
IMAGE  ?= ftpgate
.PHONY: image
image: build
	ctx=$$(mktemp -d) && trap 'rm -rf "$$ctx"' EXIT && \
	  cp $(BIN) deploy/docker/passwd deploy/docker/group /etc/ssl/certs/ca-certificates.crt "$$ctx"/ && \
	  $(PODMAN) build --pull=never -f deploy/docker/Containerfile.static \
	    -t $(IMAGE):$(VERSION) -t $(IMAGE):static "$$ctx"

# The Kubernetes Services for a configuration, every passive data port
# listed (a Service has no port ranges), as YAML on stdout:
#   make -s manifests CONFIG=deploy/examples/scaled.yaml SERVICE=ftpgate-0 > services.yaml
SERVICE ?= ftpgate
.PHONY: manifests
manifests: build
	@test -n "$(CONFIG)" || { echo "usage: make manifests CONFIG=FILE [SERVICE=ftpgate]" >&2; exit 2; }
	@$(BIN) manifests --config $(CONFIG) --name $(SERVICE)
