#!/usr/bin/env bash
# Loom model of the ring protocol's memory ordering (crates/queue/tests/loom_*.rs).
#
# Runs every `loom_*` test target of vireo-queue under `--cfg loom`, in its own target directory
# (target/loom) so the normal build is not invalidated. The models are small (2 threads, rings
# of 2 to 4 slots, 1 to 3 buffers): with LOOM_MAX_PREEMPTIONS=10 loom explores exactly as many
# executions as unbounded (checked), i.e. the exploration is exhaustive, in well under a second
# (the build dominates: about a minute from cold on 2 cores).
# A lower bound cuts executions out: the models' coverage assertions then fail, by design.
# Extra arguments go to the test harness (e.g. `scripts/loom.sh --nocapture` prints how many
# executions each model explored).
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTFLAGS="--cfg loom"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_LOOM:-target/loom}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-10}"
# The models run in milliseconds: the build dominates. Skip the release profile's LTO and debug
# info here (only this target directory is affected).
export CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_INCREMENTAL=true

cargo test -p vireo-queue --release --test 'loom_*' -- "$@"
