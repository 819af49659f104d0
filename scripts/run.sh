#!/usr/bin/env bash
# The main job (README: "Run the main job"): build `vireo` in release mode and run it.
# With no arguments it serves a RAM-disk virtio-blk device over vhost-user at /tmp/vireo-blk.sock
# (attach QEMU as shown in the README); any arguments are passed to `vireo` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p vireo
if [ $# -eq 0 ]; then
  set -- blk --socket /tmp/vireo-blk.sock
fi
exec target/release/vireo "$@"
