#!/usr/bin/env bash
# Ratio benchmark: `vireo bench ring` against the Linux kernel's tools/virtio/ringtest, in the
# same run, interleaved (these machines are noisy: only ratios of interleaved runs mean anything).
#
# ringtest is built at benchmark time from Debian's linux-source package into a cache folder
# (nothing of it is kept in this repository).
#
# Like for like: ringtest's defaults are a ring of 256, unlimited outstanding buffers (so the ring
# size), one descriptor per buffer with no data, EVENT_IDX-style suppression, and a loop that adds
# one buffer (publishing it) and reaps one per iteration, while the host publishes each used
# buffer. Vireo runs the same shape: `--payload none --queue-size 256 --outstanding 256 --batch 1
# --event-idx` (tokens and used lengths are still verified on Vireo's side). Both processes are
# pinned the same way (`taskset -c $VIREO_BENCH_CPUS`, default 0-1; the scheduler places the two
# threads), both are timed the same way (wall time of the process, less the wall time of a
# one-buffer run of the same command: start-up and set-up, which are not the ring's speed), and
# the run order inside a round alternates so neither side always goes first.
#
# Usage: scripts/bench/ring-vs-ringtest.sh [rounds=15] [buffers=1000000]
# Prints one line per pair and round, then the median ratio per pair (vireo ns / ringtest ns:
# below 1.0 means Vireo is faster). Pairs, polling: split vs virtio_ring_0_9, split --in-order vs
# virtio_ring_inorder, packed vs ring (ringtest's packed-like layout); and the same three with an
# eventfd pair (`--notify eventfd` vs ringtest `--sleep`, a quarter of the buffers).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-15}; BUFFERS=${2:-1000000}
CPUS=${VIREO_BENCH_CPUS:-0-1}
CACHE=${VIREO_BENCH_CACHE:-/var/cache/vireo-bench}
RT=$CACHE/ringtest
mkdir -p "$CACHE"

build_ringtest() {
  [ -x "$RT/virtio_ring_0_9" ] && [ -x "$RT/ring" ] && [ -x "$RT/virtio_ring_inorder" ] && return
  local pkg ver work
  pkg=$(apt-cache depends linux-source 2>/dev/null | awk '/Depends: linux-source-/{print $2; exit}')
  [ -n "$pkg" ] || { apt-get update -q >/dev/null; pkg=$(apt-cache depends linux-source | awk '/Depends: linux-source-/{print $2; exit}'); }
  ver=${pkg#linux-source-}
  work=$(mktemp -d "$CACHE/src.XXXX")
  (cd "$work" && apt-get download "$pkg" >/dev/null)
  dpkg-deb --fsys-tarfile "$work"/"$pkg"_*.deb | tar -x -C "$work" "./usr/src/linux-source-$ver.tar.xz"
  tar -xJf "$work/usr/src/linux-source-$ver.tar.xz" -C "$work" --wildcards \
    "linux-source-$ver/tools/virtio/ringtest/*"
  make -s -C "$work/linux-source-$ver/tools/virtio/ringtest" ring virtio_ring_0_9 virtio_ring_inorder
  mkdir -p "$RT"
  cp "$work/linux-source-$ver/tools/virtio/ringtest/"{ring,virtio_ring_0_9,virtio_ring_inorder} "$RT/"
  rm -rf "$work"
}

build_ringtest
cargo build --release -q -p vireo
VIREO=target/release/vireo
OUT=$(mktemp); trap 'rm -f "$OUT"' EXIT

# Wall time in ns of one pinned run.
wall() {
  local t0 t1
  t0=$(date +%s%N); taskset -c "$CPUS" "$@" >"$OUT" 2>/dev/null; t1=$(date +%s%N)
  echo $(( t1 - t0 ))
}
# ns per buffer of one run: (wall time of n buffers - wall time of 1 buffer, the process's fixed
# cost: start-up, threads, ring set-up, measured right before in the same way) / (n - 1).
per_buffer() {
  local n=$1 fixed full; shift
  fixed=$("$@" 1); full=$("$@" "$n")
  echo $(( (full - fixed) / (n - 1) ))
}
ringtest_run() { local peer=$1 n=${*: -1}; wall "$RT/$peer" "${@:2:$#-2}" --run-cycles "$n"; }
vireo_run() {
  local n=${*: -1} t
  t=$(wall "$VIREO" bench ring --buffers "$n" --json --payload none --queue-size 256 \
      --outstanding 256 --batch 1 --event-idx "${@:1:$#-1}")
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["verified"]' "$OUT" || return 1
  echo "$t"
}
ringtest_ns() { local n=$1; shift; per_buffer "$n" ringtest_run "$@"; }
vireo_ns() { local n=$1; shift; per_buffer "$n" vireo_run "$@"; }

declare -A RATIOS
Q=$((BUFFERS / 4))
# name|buffers|ringtest binary and flags|vireo flags
pairs=("split-poll|$BUFFERS|virtio_ring_0_9|--format split"
       "split-in-order-poll|$BUFFERS|virtio_ring_inorder|--format split --in-order"
       "packed-poll|$BUFFERS|ring|--format packed"
       "split-eventfd|$Q|virtio_ring_0_9 --sleep|--format split --notify eventfd"
       "split-in-order-eventfd|$Q|virtio_ring_inorder --sleep|--format split --in-order --notify eventfd"
       "packed-eventfd|$Q|ring --sleep|--format packed --notify eventfd")
for round in $(seq "$ROUNDS"); do
  for p in "${pairs[@]}"; do
    IFS='|' read -r name n peer args <<<"$p"
    # shellcheck disable=SC2086
    if (( round % 2 )); then
      v=$(vireo_ns "$n" $args) || { echo "round $round $name: vireo run failed"; continue; }
      r=$(ringtest_ns "$n" $peer)
    else
      r=$(ringtest_ns "$n" $peer)
      v=$(vireo_ns "$n" $args) || { echo "round $round $name: vireo run failed"; continue; }
    fi
    ratio=$(python3 -c "print(f'{$v/$r:.3f}')")
    echo "round $round $name: vireo ${v} ns/buffer, ringtest/${peer%% *} ${r} ns/buffer, ratio $ratio"
    RATIOS[$name]="${RATIOS[$name]:-} $ratio"
  done
done
for p in "${pairs[@]}"; do
  name=${p%%|*}
  [ -n "${RATIOS[$name]:-}" ] || continue
  # shellcheck disable=SC2086
  python3 -c "import statistics,sys; v=sorted(float(x) for x in sys.argv[2:]); q=lambda p: v[int(p*(len(v)-1))]; print(f'{sys.argv[1]}: median ratio vireo/ringtest = {statistics.median(v):.3f} over {len(v)} rounds (quartiles {q(.25):.3f}-{q(.75):.3f}, min {v[0]:.3f}, max {v[-1]:.3f})')" "$name" ${RATIOS[$name]}
done
