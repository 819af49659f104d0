#!/usr/bin/env bash
# The project's test command (README: "Run the tests"). Installs what it needs, idempotently.
# Stages: lint, no_std build, unit/property/integration tests, loom model, end-to-end with real peers.
# VIREO_SKIP_E2E=1 skips the stages that boot QEMU or start third-party peers.
set -euo pipefail
cd "$(dirname "$0")/.."
stage() { printf '\n=== %s\n' "$*"; }

stage "rustfmt"
cargo fmt --all -- --check

stage "clippy"
cargo clippy --workspace --all-targets -- -D warnings

stage "no_std build (spec, memory, queue without default features)"
cargo build -p vireo-spec -p vireo-memory -p vireo-queue --no-default-features

stage "tests"
cargo test --workspace

if [ -x scripts/loom.sh ]; then
  stage "loom model of the ring protocol"
  scripts/loom.sh
fi

if [ "${VIREO_SKIP_E2E:-0}" != 1 ]; then
  stage "end-to-end: Linux guest drivers in QEMU against vhost-user-blk backends (qsd, vireo blk)"
  scripts/e2e.sh --build
  for f in tests/e2e/frontend-cells.sh; do
    if [ -x "$f" ]; then
      stage "end-to-end: Vireo's frontend and blk driver against real backends ($f)"
      "$f"
    fi
  done
fi
