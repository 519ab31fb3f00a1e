# tsnet — run as root (sudo make run / sudo make test).
SHELL := /bin/bash
SOCKET ?= /run/docker/plugins/tsnet.sock
STATE_DIR ?= /var/lib/tsnet
LOG_LEVEL ?= info
RUN_PKGS := iproute2 nftables iptables python3 make g++
TEST_PKGS := $(RUN_PKGS) docker.io busybox-static iperf3
APT_STAMP := .tmp/apt-$(shell echo $(TEST_PKGS) | md5sum | cut -c1-8)

.PHONY: all build run test test-unit bench clean deps-run deps-test node-check

all: build

node-check:
	@command -v node >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm)
	@node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' || \
	  (echo "tsnet needs Node.js >= 20 (found $$(node --version)); install it from your distribution or NodeSource" >&2; exit 1)

# Installs only packages that are missing, so repeated runs cost nothing.
deps-run: node-check
	@missing=$$(for p in $(RUN_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

deps-test: node-check
	@missing=$$(for p in $(TEST_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

build: node_modules/.package-lock.json
	npx tsc -p tsconfig.json

# The main job: tsnet in the foreground, answering dockerd on $(SOCKET).
run: deps-run build
	node dist/main.js --socket $(SOCKET) --state-dir $(STATE_DIR) --log-level $(LOG_LEVEL)

# The whole suite: unit tests everywhere; e2e tests against a private dockerd (skipped, with the reason, without root).
test: deps-test build
	npx tsc -p tsconfig.test.json --noEmit
	@mkdir -p .tmp
	npx jest --runInBand --json --outputFile=.tmp/jest-results.json; rc=$$?; \
	node -e 'const r=require("./.tmp/jest-results.json"); console.log(`tests: $${r.numPassedTests} passed, $${r.numFailedTests} failed, $${r.numPendingTests} skipped`)'; \
	exit $$rc

test-unit: build
	npx jest --runInBand test/unit

# Benchmark against a private dockerd (see bench/README.md); BENCH_N=30 iterations per measurement by default.
bench: deps-test build
	npx tsc -p bench/tsconfig.json
	node .tmp/bench/bench/run.js

clean:
	rm -rf dist .tmp coverage
