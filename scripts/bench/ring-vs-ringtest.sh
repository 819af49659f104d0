#!/usr/bin/env bash
# Ratio benchmark: `vireo bench ring` against the Linux kernel's tools/virtio/ringtest, in the
# same run, interleaved (these machines are noisy: only ratios of interleaved runs mean anything).
#
# ringtest is built at benchmark time from Debian's linux-source package into a cache folder
# (nothing of it is kept in this repository).
#
# Usage: scripts/bench/ring-vs-ringtest.sh [rounds=3] [buffers=2000000]
# Prints one line per pair and round, then the median ratio per pair (vireo ns / ringtest ns:
# below 1.0 means Vireo is faster). Pairs: split vs virtio_ring_0_9, split --in-order vs
# virtio_ring_inorder, packed vs ring (ringtest's packed-like layout; needs --format packed).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}; BUFFERS=${2:-2000000}
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

# ns per buffer of one ringtest run (wall time / buffers).
ringtest_ns() {
  local t0 t1
  t0=$(date +%s%N); "$RT/$1" --run-cycles "$BUFFERS" >/dev/null; t1=$(date +%s%N)
  echo $(( (t1 - t0) / BUFFERS ))
}
vireo_ns() {
  "$VIREO" bench ring --buffers "$BUFFERS" --json "$@" | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["verified"]; print(round(r["ns_per_buffer"]))'
}

declare -A RATIOS
pairs=("split|virtio_ring_0_9|--format split"
       "split-in-order|virtio_ring_inorder|--format split --in-order"
       "packed|ring|--format packed")
for round in $(seq "$ROUNDS"); do
  for p in "${pairs[@]}"; do
    IFS='|' read -r name peer args <<<"$p"
    # shellcheck disable=SC2086
    if ! v=$(vireo_ns $args 2>/dev/null); then echo "round $round $name: vireo run failed (format not available?)"; continue; fi
    r=$(ringtest_ns "$peer")
    ratio=$(python3 -c "print(f'{$v/$r:.3f}')")
    echo "round $round $name: vireo ${v} ns/buffer, ringtest/$peer ${r} ns/buffer, ratio $ratio"
    RATIOS[$name]="${RATIOS[$name]:-} $ratio"
  done
done
for name in "${!RATIOS[@]}"; do
  python3 -c "import statistics,sys; v=[float(x) for x in sys.argv[2:]]; print(f'{sys.argv[1]}: median ratio vireo/ringtest = {statistics.median(v):.3f} over {len(v)} rounds')" "$name" ${RATIOS[$name]}
done
