# nodenet: `make demo` and `make test` are all a fresh machine needs (as root).
GO       ?= go
BIN      := bin/nodenet
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/nodenet/nodenet/daemon/buildinfo.Version=$(VERSION)
# Executions per fuzz target, not a duration: Go 1.26's fuzz coordinator can
# fail a run with "context deadline exceeded" as a duration ends, with no
# failing input (golang/go#75804, fixed in Go 1.27); a count has no deadline.
FUZZTIME ?= 30000x
# The test control plane binaries (built once from source, then cached).
CLUSTER_BIN = $(shell test/cluster/build.sh)

export CGO_ENABLED := 0

.PHONY: all build cluster test unit fuzz leakcheck demo clean bench-cni bench-proxy bench-ingress bench-policy
all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) .

cluster:
	test/cluster/build.sh

# Everything CI runs: format and vet, every test (unit, kernel and end to end
# against the real control plane) with the race detector, short fuzz runs,
# then the leak check over the whole machine.
test: build cluster
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	CGO_ENABLED=1 NODENET_BIN=$(abspath $(BIN)) NODENET_CLUSTER_BIN=$(CLUSTER_BIN) \
	  $(GO) test -race -count=1 -timeout 25m ./...
	$(MAKE) --no-print-directory fuzz
	test/leakcheck.sh

unit:
	$(GO) test ./...

# Each fuzz target for FUZZTIME; the seed corpora also run in `go test`.
# A failing run's own output is printed (a second run might not fail).
fuzz:
	@set -e; out=$$(mktemp); trap 'rm -f "$$out"' EXIT; \
	for t in $$(test/fuzz-targets.sh); do \
	  pkg=$${t%%:*}; name=$${t##*:}; echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
	  $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg >"$$out" 2>&1 || \
	    { cat "$$out"; echo "fuzz $$pkg $$name failed (an input the fuzzer found failing is kept in $$pkg/testdata/fuzz/$$name/)"; exit 1; }; \
	done

leakcheck:
	test/leakcheck.sh

demo: build cluster
	NODENET_BIN=$(abspath $(BIN)) NODENET_CLUSTER_BIN=$(CLUSTER_BIN) $(GO) run ./test/demo

clean:
	rm -rf bin

# CNI ADD/DEL latency and throughput, nodenet against bridge + host-local.
bench-cni: build cluster
	NODENET_BIN=$(abspath $(BIN)) NODENET_CLUSTER_BIN=$(CLUSTER_BIN) $(GO) run ./test/bench/cni

# Service proxy: cold start, endpoint-change latency, connection rate, CPU
# and memory, nodenet against kube-proxy (iptables and nftables modes).
bench-proxy: build cluster
	NODENET_BIN=$(abspath $(BIN)) NODENET_CLUSTER_BIN=$(CLUSTER_BIN) $(GO) run ./test/bench/proxy $(BENCH_ARGS)

# NetworkPolicy: enforcement latency, connection rate, CPU and memory at
# 1,000 policies over 5,000 pods, nodenet against kube-router's policy
# controller (built once by test/bench/policy/peer/build.sh).
bench-policy: build cluster
	NODENET_BIN=$(abspath $(BIN)) NODENET_CLUSTER_BIN=$(CLUSTER_BIN) $(GO) run ./test/bench/policy $(BENCH_ARGS)

# Ingress: req/s and p50/p99 latency, nodenet against nginx (Debian's) on the
# same routes to the same pods; keep-alive and new connections, HTTP and HTTPS.
# Installs wrk and nginx if missing (never starts the system nginx service).
bench-ingress: build cluster
	NODENET_BIN=$(abspath $(BIN)) NODENET_CLUSTER_BIN=$(CLUSTER_BIN) $(GO) run ./test/bench/ingress $(BENCH_ARGS)
