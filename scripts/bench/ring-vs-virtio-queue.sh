#!/usr/bin/env bash
# Ratio benchmark: Vireo's split-ring device (`DeviceQueue` over `VmMemory`) against rust-vmm's
# virtio-queue (`virtio_queue::Queue`, crates.io, the device side of Firecracker/Cloud
# Hypervisor-style VMMs) on identical work, in one process, interleaved round by round (these
# machines are noisy: only ratios of interleaved runs mean anything).
#
# Both devices serve the same driver (Vireo's `DriverQueue`) over the same
# `vm_memory::GuestMemoryMmap`: each buffer is a 16-byte readable segment with a sequence number
# and a 16-byte writable one; the device reads the number, echoes it, uses the chain, and
# publishes / decides on a notification once per batch (rust-vmm's `add_used` also publishes the
# used index per element: its API has no deferred publish). Every token is verified.
# Configurations: poll, poll-event-idx, poll-indirect (busy polling on both sides), eventfd,
# eventfd-event-idx (idle sides sleep on an eventfd pair; a quarter of the buffers).
#
# A third device, rust-vmm's queue driven the Firecracker way (`pop_descriptor_chain` and
# `add_used` per chain), gets its own "pop" ratio.
#
# Usage: scripts/bench/ring-vs-virtio-queue.sh [rounds=15] [buffers=500000] [extra flags...]
#   extra flags go to the binary: --batch N --outstanding N --queue-size N --only NAME
#   --single-thread (both sides on one thread taking turns: the work per buffer without the
#   scheduling noise of two polling threads on shared cores; polling configurations only)
#   --count DEVICE (one single-thread run of vireo, virtio-queue or virtio-queue-pop, for
#   `valgrind --tool=callgrind`; see crates/yardstick/README.md)
# Prints one line per configuration and round, then SUMMARY lines with the median ns/buffer of
# each device and the median of the per-round ratios vireo/virtio-queue (below 1.0: Vireo's
# device is faster). The process is pinned with `taskset -c $VIREO_BENCH_CPUS` (default 0-1).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-15}; BUFFERS=${2:-500000}
shift $(( $# < 2 ? $# : 2 ))
CPUS=${VIREO_BENCH_CPUS:-0-1}
cargo build --release -q -p vireo-yardstick --bin ring-vs-virtio-queue
exec taskset -c "$CPUS" target/release/ring-vs-virtio-queue --rounds "$ROUNDS" --buffers "$BUFFERS" "$@"
