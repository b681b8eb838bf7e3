# Cairn — `make run` starts a single node with the embedded default config;
# `make test` runs every check CI runs. Both install missing system packages.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
export CARGO_TARGET_DIR ?= $(HOME)/.cache/cairn-target
CARGO ?= cargo
# System packages: RocksDB (linked dynamically, see .cargo/config.toml),
# libclang for its bindings, Prometheus as the e2e remote-write client/reference,
# VictoriaMetrics for vmagent (a second real remote-write client in the e2e tests).
APT_PACKAGES := librocksdb-dev libclang-dev pkg-config prometheus protobuf-compiler victoria-metrics
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Prometheus's own PromQL test scripts (read in place, never copied).
PROMQLTEST_DIR ?= ../shared/promqltest
PROMQLTEST_STABLE := selectors literals collision trig_functions operators aggregators \
	functions staleness range_queries histograms name_label_dropping native_histograms
PROMQLTEST_EXPERIMENTAL := limit info type_and_unit duration_expression extended_vectors \
	fill-modifier start_timestamps

.PHONY: deps build run test fmt lint unit e2e promqltest promqltest-experimental bench-quick clean fuzz fuzz-cmin

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first"; exit 1; }

build: deps
	$(CARGO) build -p cairn

run: deps
	$(CARGO) run --release -p cairn -- serve $(ARGS)

fmt:
	$(CARGO) fmt --all -- --check

lint: deps
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit: deps
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace --exclude cairn-e2e --no-fail-fast; \
	else $(CARGO) test --workspace --exclude cairn-e2e; fi

# End-to-end tests spawn the real binary (built first) and a real Prometheus.
e2e: build
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  CAIRN_BIN=$(CARGO_TARGET_DIR)/debug/cairn $(CARGO) nextest run -p cairn-e2e --no-fail-fast --test-threads 2; \
	else CAIRN_BIN=$(CARGO_TARGET_DIR)/debug/cairn $(CARGO) test -p cairn-e2e -- --test-threads 2; fi

# The stable tier must pass in full, on the in-memory store and on the real
# on-disk store (commit log, head, RocksDB index).
promqltest: build
	@if [ ! -d $(PROMQLTEST_DIR) ]; then \
	  echo "WARNING: promqltest data not found at $(PROMQLTEST_DIR) (set PROMQLTEST_DIR): PromQL conformance NOT run"; \
	else \
	  set -e; for st in memory disk; do \
	    echo "== promqltest stable tier, storage=$$st"; \
	    $(CARGO_TARGET_DIR)/debug/cairn promqltest --storage $$st $(addprefix $(PROMQLTEST_DIR)/,$(addsuffix .test,$(PROMQLTEST_STABLE))) | grep -v "(skipped: native histograms)"; \
	  done; \
	fi

promqltest-experimental: build
	-$(CARGO_TARGET_DIR)/debug/cairn promqltest $(addprefix $(PROMQLTEST_DIR)/,$(addsuffix .test,$(PROMQLTEST_EXPERIMENTAL))) | grep -E "^[a-z_-]+\.test:|passed"

test: deps fmt lint unit promqltest e2e

bench-quick: deps
	benches/compare --quick

# Fuzzing (cargo-fuzz, nightly): every target for FUZZ_TIME seconds, one
# after another, one process (see fuzz/README.md). New corpus entries land in
# fuzz/corpus/<target>/, crashes in fuzz/artifacts/<target>/. `make test`
# replays fuzz/corpus and fuzz/regressions on stable (the crates' tests).
FUZZ_TIME ?= 60
FUZZ_TARGETS ?= commitlog_record fileset_read index_decode remote_write_decode \
	remote_read_decode selector_parse codec_decode promql_parse promql_eval replica_write_decode \
	head_snapshot_parse downsample_row_decode aggregate_decode
FUZZ_TARGET_DIR ?= $(HOME)/.cache/cairn-fuzz-target
FUZZ_CARGO := CARGO_TARGET_DIR=$(FUZZ_TARGET_DIR) cargo +nightly fuzz

fuzz: deps
	@cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz
	cd fuzz && $(FUZZ_CARGO) build -O -a -s none
	@cd fuzz && for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$t for $(FUZZ_TIME)s"; \
	  mkdir -p corpus/$$t artifacts/$$t; \
	  seeds=""; [ -d regressions/$$t ] && seeds=regressions/$$t; \
	  $(FUZZ_CARGO) run -O -a -s none $$t corpus/$$t $$seeds -- -max_total_time=$(FUZZ_TIME) \
	    -timeout=20 -artifact_prefix=artifacts/$$t/ -print_final_stats=1 || exit 1; \
	done

# Minimises every target's corpus in place (commit the result).
fuzz-cmin: deps
	@cd fuzz && for t in $(FUZZ_TARGETS); do \
	  $(FUZZ_CARGO) cmin -O -a -s none $$t corpus/$$t || exit 1; \
	done

clean:
	$(CARGO) clean
