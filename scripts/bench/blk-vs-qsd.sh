#!/usr/bin/env bash
# Ratio benchmark: `vireo blk` against qemu-storage-daemon's vhost-user-blk export, both serving
# the same raw image file (page cache), driven by the same load generator (`vireo bench blk`,
# Vireo's frontend and virtio-blk driver), interleaved round by round (the machine is noisy: only
# ratios of interleaved runs mean anything).
#
# Usage: scripts/bench/blk-vs-qsd.sh [rounds=3] [seconds=3]
# Prints a line per run, then per workload the median ratios vireo/qsd of IOPS (above 1.0: Vireo
# serves more) and of p50 latency (below 1.0: Vireo answers faster).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}; SECS=${2:-3}
command -v qemu-storage-daemon >/dev/null || scripts/peers/setup.sh --quiet
cargo build --release -q -p vireo
VIREO=$PWD/target/release/vireo
WORK=$(mktemp -d /tmp/vireo-blk-bench.XXXX)
IMG=$WORK/disk.img; SOCK=$WORK/blk.sock
truncate -s 1G "$IMG"
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

start_backend() { # vireo|qsd
  rm -f "$SOCK"
  case $1 in
    vireo) "$VIREO" blk --socket "$SOCK" --image "$IMG" --queues 1 >"$WORK/backend.log" 2>&1 & ;;
    qsd) qemu-storage-daemon --blockdev "driver=file,node-name=disk,filename=$IMG,cache.direct=off" \
           --export "type=vhost-user-blk,id=exp0,node-name=disk,addr.type=unix,addr.path=$SOCK,writable=on,num-queues=1" \
           >"$WORK/backend.log" 2>&1 & ;;
  esac
  PID=$!
  for _ in $(seq 100); do [ -S "$SOCK" ] && return; sleep 0.05; done
  echo "backend $1 never made its socket"; cat "$WORK/backend.log"; exit 1
}
stop_backend() { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true; PID=""; }

declare -A IOPS_R P50_R
# Fill the image once so reads hit allocated, cached blocks for both backends.
start_backend vireo
"$VIREO" bench blk --socket "$SOCK" --rw write --bs 1m --qd 8 --seconds 2 --json >/dev/null
stop_backend
for round in $(seq "$ROUNDS"); do
  for wl in "randread 4k 1" "randread 4k 32" "randwrite 4k 32" "read 128k 8"; do
    set -- $wl; rw=$1; bs=$2; qd=$3; name="$rw-$bs-qd$qd"
    declare -A R=()
    for b in vireo qsd; do
      start_backend $b
      R[$b]=$("$VIREO" bench blk --socket "$SOCK" --rw "$rw" --bs "$bs" --qd "$qd" --seconds "$SECS" --json)
      stop_backend
    done
    line=$(python3 - "${R[vireo]}" "${R[qsd]}" <<'PY'
import json, sys
v, q = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert v["errors"] == 0 and q["errors"] == 0, (v, q)
print(f'{v["iops"]:.0f} {q["iops"]:.0f} {v["p50_us"]} {q["p50_us"]} {v["iops"]/q["iops"]:.3f} {v["p50_us"]/max(q["p50_us"],1e-9):.3f}')
PY
)
    read -r vi qi vp qp ir pr <<<"$line"
    echo "round $round $name: vireo ${vi} IOPS p50 ${vp} us | qsd ${qi} IOPS p50 ${qp} us | IOPS ratio $ir, p50 ratio $pr"
    IOPS_R[$name]="${IOPS_R[$name]:-} $ir"; P50_R[$name]="${P50_R[$name]:-} $pr"
  done
done
for name in "${!IOPS_R[@]}"; do
  python3 -c "import statistics,sys; i=[float(x) for x in sys.argv[2].split()]; p=[float(x) for x in sys.argv[3].split()]; print(f'{sys.argv[1]}: median vireo/qsd IOPS ratio {statistics.median(i):.3f}, p50 latency ratio {statistics.median(p):.3f} ({len(i)} rounds)')" "$name" "${IOPS_R[$name]}" "${P50_R[$name]}"
done
