# sockmesh — `make demo` and `make test` are each self-sufficient on a fresh
# Debian 12 machine as root: they install what is missing, build, then run.

SHELL := /bin/bash
APT_PACKAGES := clang llvm libbpf-dev bpftool iproute2 iputils-ping gcc libc6-dev make util-linux
ARCH_INCLUDE := /usr/include/$(shell gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)
BPF_CFLAGS := -g -O2 -target bpf -Wall -Werror -I$(ARCH_INCLUDE)
HELPER_CFLAGS := -O2 -g -Wall -Wextra -Werror

BPF_OBJ := bpf/build/sockmesh.bpf.o
HELPERS := tools/build/smtcp tools/build/smprobe benchmarks/build/rrbench benchmarks/build/httpload
TS_STAMP := dist/.built

.PHONY: all demo test bench deps apt npm bpf helpers build typecheck clean help

all: build

help:
	@echo "make demo   the example app (examples/) in two namespaces, one in the mesh"
	@echo "make test   type-check and run every test (privileged ones included)"
	@echo "make bench  datapath, xDS and cluster benchmarks, results in benchmarks/results/"
	@echo "make build  BPF object, C helpers and TypeScript"

demo: build
	dist/mesh-agent/cli.js demo  # the command as built: its first line starts node with the agent's flags

test: build
	npx tsc -p tsconfig.json --noEmit
	# the agents the tests run write their spans here, not into the node's trace file
	set -o pipefail; SOCKMESH_TRACES_FILE=$${TMPDIR:-/tmp}/sockmesh-test-traces.otlp.jsonl npx tap --reporter=tap | node tools/tap-summary.mjs

BENCH_APT_PACKAGES := haproxy nftables

bench: build
	@missing=""; for p in $(BENCH_APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi
	node dist/benchmarks/datapath-bench.js
	node --expose-gc dist/benchmarks/xds-bench.js --repeats 5
	node --expose-gc dist/benchmarks/cluster-bench.js
	node dist/benchmarks/l7-bench.js
	node dist/benchmarks/tracing-bench.js
	node dist/benchmarks/policy-bench.js

deps: apt npm

# Installs only what is missing; apt-get update runs only when something is.
apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

npm: node_modules/.package-lock.json

node_modules/.package-lock.json: package-lock.json package.json
	npm ci --no-audit --no-fund
	@touch $@

bpf: $(BPF_OBJ)

$(BPF_OBJ): bpf/sockmesh.bpf.c bpf/sockmesh.h bpf/sockmesh_maps.h bpf/sockmesh_iter.h | apt
	@mkdir -p $(dir $@)
	clang $(BPF_CFLAGS) -c $< -o $@

helpers: $(HELPERS)

tools/build/smtcp: tools/smtcp.c tools/fdio.h | apt
	@mkdir -p $(dir $@)
	gcc $(HELPER_CFLAGS) -o $@ $<

tools/build/smprobe: tools/smprobe.c | apt
	@mkdir -p $(dir $@)
	gcc $(HELPER_CFLAGS) -o $@ $<

benchmarks/build/rrbench: benchmarks/rrbench.c tools/fdio.h | apt
	@mkdir -p $(dir $@)
	gcc $(HELPER_CFLAGS) -o $@ $<

benchmarks/build/httpload: benchmarks/httpload.c | apt
	@mkdir -p $(dir $@)
	gcc $(HELPER_CFLAGS) -o $@ $<

build: deps bpf helpers $(TS_STAMP)

$(TS_STAMP): $(shell find mesh-agent mesh-proxy xds telemetry policies benchmarks -name '*.ts' 2>/dev/null) tsconfig.json tsconfig.build.json node_modules/.package-lock.json
	npx tsc -p tsconfig.build.json
	@chmod +x dist/mesh-agent/cli.js dist/mesh-proxy/cli.js  # runnable as they are: their first line names node and its flags
	@touch $@

typecheck: npm
	npx tsc -p tsconfig.json --noEmit

clean:
	rm -rf dist bpf/build tools/build benchmarks/build
