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

.PHONY: all build deps lint unit fuzz-quick integration e2e test demo fuzz bench-pinholes bench bench-sessions check-config clean

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

# A bounded run of every fuzz target (make test): a few seconds each beyond
# the seed corpora that unit replays.
fuzz-quick:
	$(MAKE) --no-print-directory fuzz FUZZTIME=4s

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

check-config: build
	$(BIN) check --config deploy/config.example.yaml

clean:
	rm -rf bin e2e.log
