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

stage "no_std build (spec, memory, queue, blk driver) for a bare-metal target"
NOSTD_CRATES=(-p vireo-spec -p vireo-memory -p vireo-queue -p vireo-blk)
if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-none \
   || rustup target add x86_64-unknown-none >/dev/null 2>&1; then
  cargo build "${NOSTD_CRATES[@]}" --no-default-features --target x86_64-unknown-none
else
  echo "x86_64-unknown-none is not installable here: building without default features for the host"
  cargo build "${NOSTD_CRATES[@]}" --no-default-features
fi

stage "vm-memory adapter"
cargo test -p vireo-memory --features vm-memory

if [ "${VIREO_SKIP_E2E:-0}" != 1 ]; then
  # Before the tests: some of them talk to qemu-storage-daemon, and every stage should meet the
  # same peer versions (Debian 12's QEMU 7.2), whatever the machine had before.
  stage "peers: QEMU, qemu-storage-daemon, busybox, e2fsprogs, a Debian kernel (idempotent)"
  scripts/peers/setup.sh --quiet
fi

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
