# Cairn — `make run` starts a single node with the embedded default config;
# `make test` runs every check CI runs. Both install missing system packages.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/cairn-target
CARGO ?= cargo
# System packages: RocksDB (linked dynamically, see .cargo/config.toml),
# libclang for its bindings, Prometheus as the e2e remote-write client/reference.
APT_PACKAGES := librocksdb-dev libclang-dev pkg-config prometheus
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps build run test fmt lint unit e2e bench-quick clean

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

test: deps fmt lint unit e2e

bench-quick: deps
	benches/compare --quick

clean:
	$(CARGO) clean
