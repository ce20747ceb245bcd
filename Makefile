# promptrail — build, generate, test, bench.
GO ?= go
CLANG ?= clang-16
STRIP ?= llvm-strip-16
ARCH_INCLUDE := /usr/include/$(shell uname -m)-linux-gnu
BPF2GO_ENV := BPF2GO_CC=$(CLANG) BPF2GO_STRIP=$(STRIP) BPF2GO_CFLAGS="-O2 -g -Wall -Werror -I$(ARCH_INCLUDE)"

.PHONY: all build generate check-generate test lint bench clean kube-tools e2e-kubernetes

all: build

build:
	$(GO) build -o bin/promptrail ./cmd/promptrail

# Rebuilds the eBPF objects and their Go bindings (needs clang-16, libbpf-dev).
generate:
	$(BPF2GO_ENV) $(GO) generate ./bpf/

# Fails when the committed objects differ from what the sources build to.
check-generate: generate
	@git diff --exit-code --stat -- bpf/ || { echo "bpf/: generated files are stale; run make generate and commit" >&2; exit 1; }

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed" >&2; exit 1; }
	$(GO) vet ./...

# The test command of the README. Tests that need root, cgroup v2 and bpffs
# skip without them unless PROMPTRAIL_E2E=1, which makes that a failure.
# e2e/kubernetes is left to make e2e-kubernetes: it builds and runs a cluster.
test:
	$(GO) test -count=1 -timeout 20m $$($(GO) list ./... | grep -v '/e2e/kubernetes')

# Builds the test cluster's components (tools/kube, its own module) once per
# module versions into /var/cache/promptrail/kube/<hash>/bin (KUBE_TOOLS_CACHE).
kube-tools:
	GO=$(GO) scripts/kube-tools.sh

# Brings a single-node Kubernetes cluster up from nothing, runs the tests on
# it and tears it down; needs root. PROMPTRAIL_E2E defaults to 1 here: a
# missing privilege fails.
e2e-kubernetes:
	PROMPTRAIL_KUBE_BIN="$$(GO=$(GO) scripts/kube-tools.sh)" PROMPTRAIL_E2E=$${PROMPTRAIL_E2E:-1} \
		$(GO) test -count=1 -timeout 20m -v ./e2e/kubernetes/...

# Prints comparable figures; needs root (hooks and agent run for real).
# connect(): hook cost as ratios; proxy: added latency, req/s, TTFT, agent
# CPU and RSS against direct calls; parsers and policy decisions: MB/s and
# allocations; spool:
# synced records/s; collector store: ingest records/s, then over 1,000,000
# records (PROMPTRAIL_BENCH_RECORDS) ingest rate, peak RSS, query p50/p99
# and verify time.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 20000x -count 3 ./agent/intercept/
	$(GO) test -run '^$$' -bench BenchmarkProxy -benchtime 1x -count 3 ./e2e/
	$(GO) test -run '^$$' -bench . -benchmem ./agent/openai/ ./agent/targets/ ./agent/proxy/ ./agent/secrets/ ./agent/mask/ ./agent/policy/
	$(GO) test -run '^$$' -bench . ./agent/spool/ ./agent/identity/
	$(GO) test -run '^$$' -bench BenchmarkIngest -benchtime 20x -count 3 ./collector/store/
	$(GO) test -run '^$$' -bench BenchmarkIngestHTTP -benchtime 40x -count 3 ./collector/
	PROMPTRAIL_BENCH_RECORDS=$${PROMPTRAIL_BENCH_RECORDS:-1000000} $(GO) test -run '^$$' -bench BenchmarkMillion -benchtime 1x -timeout 90m ./collector/store/

clean:
	rm -rf bin
