#!/usr/bin/env bash
# End-to-end cells for Vireo's vhost-user FRONTEND and virtio-blk DRIVER: `vireo bench blk --verify`
# against backends we did not write (qemu-storage-daemon with a file and a null-co disk) and against
# `vireo blk` (split and packed rings), with 1 and 4 queues; plus the refusals that must happen
# (--packed against a backend without packed rings).
#
# Usage: tests/e2e/frontend-cells.sh [--build] [--list] [--seconds S] [FILTER...]
#   --build      build VIREO_BIN first (cargo build --release -p vireo)
#   --list       print the cell names and exit
#   --seconds S  timed phase of each bench run (default 2)
#   FILTER       run only the cells whose name contains one of the filters
# Environment: VIREO_BIN (default <repo>/target/release/vireo), VIREO_E2E_LOGS (default
# <repo>/target/e2e-logs; each cell logs to frontend-<cell>/).
# Prints `PASS|FAIL <cell> <reason>` per cell, then `N passed, N failed`; exits non-zero if a cell
# failed or none ran. Every process it starts is stopped on every exit path (tests/e2e/lib.sh).
set -uo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VIREO_BIN=${VIREO_BIN:-$E2E_ROOT/target/release/vireo}
BUILD=0 LIST=0 SECONDS_PER_RUN=2 FILTERS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build) BUILD=1; shift ;;
    --list) LIST=1; shift ;;
    --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "frontend-cells: unknown option $1" >&2; exit 2 ;;
    *) FILTERS+=("$1"); shift ;;
  esac
done

IMG_MIB=64
QSD_FILE="qemu-storage-daemon --blockdev driver=file,node-name=disk,filename={img}"
QSD_FILE="$QSD_FILE --export type=vhost-user-blk,id=exp0,node-name=disk,addr.type=unix,addr.path={sock},writable=on,num-queues={queues}"
QSD_NULL="qemu-storage-daemon --blockdev driver=null-co,node-name=disk,size=$((IMG_MIB * 1048576)),read-zeroes=on"
QSD_NULL="$QSD_NULL --export type=vhost-user-blk,id=exp0,node-name=disk,addr.type=unix,addr.path={sock},writable=on,num-queues={queues}"
VIREO_FILE="$VIREO_BIN blk --socket {sock} --image {img} --queues {queues}"

# The cells: NAME|BACKEND|QUEUES|EXPECT|ARGS. EXPECT: pass = a verified bench run with ARGS;
# refuse:PATTERN = the bench must exit non-zero with an error matching PATTERN; requests = the driver
# test crates/blk/tests/driver_peer.rs (every request type, the image checked directly), ARGS = ring.
CELLS=()
cell() { CELLS+=("$1|$2|$3|$4|$5"); }
for q in 1 4; do
  cell "qsd-file-${q}q-randwrite" "$QSD_FILE" "$q" pass "--rw randwrite --bs 4k --qd 16"
  cell "qsd-file-${q}q-randread" "$QSD_FILE" "$q" pass "--rw randread --bs 4k --qd 16"
  cell "qsd-file-${q}q-write-64k" "$QSD_FILE" "$q" pass "--rw write --bs 64k --qd 8"
  cell "qsd-null-${q}q-randwrite" "$QSD_NULL" "$q" pass "--rw randwrite --bs 4k --qd 16 --expect-zeroes"
  cell "qsd-null-${q}q-randread" "$QSD_NULL" "$q" pass "--rw randread --bs 4k --qd 16 --expect-zeroes"
done
cell "qsd-file-requests" "$QSD_FILE" 1 requests split
cell "qsd-file-1q-poll" "$QSD_FILE" 1 pass "--rw randread --bs 4k --qd 4 --poll"
cell "qsd-file-1q-sg-64k" "$QSD_FILE" 1 pass "--rw randwrite --bs 64k --seg-size 4k --qd 8"
# Negative control: null-co drops writes, so reads of the written pattern must fail verification.
cell "qsd-null-1q-verify-catches-lost-writes" "$QSD_NULL" 1 "refuse:is not generation" "--rw randread --bs 4k --qd 4"
# libvhost-user has no packed ring: asking for it must fail clearly, not fall back to split.
cell "qsd-file-1q-packed-refused" "$QSD_FILE" 1 "refuse:does not offer VIRTIO_F_RING_PACKED" "--rw randread --packed"
if [ -x "$VIREO_BIN" ] && "$VIREO_BIN" blk --help >/dev/null 2>&1; then
  for ring in split packed; do
    flag=""; [ "$ring" = packed ] && flag="--packed"
    cell "vireo-file-$ring-requests" "$VIREO_FILE" 1 requests "$ring"
    for q in 1 4; do
      cell "vireo-file-$ring-${q}q-randwrite" "$VIREO_FILE" "$q" pass "--rw randwrite --bs 4k --qd 16 $flag"
      cell "vireo-file-$ring-${q}q-randread" "$VIREO_FILE" "$q" pass "--rw randread --bs 4k --qd 16 $flag"
    done
    cell "vireo-file-$ring-1q-write-128k" "$VIREO_FILE" 1 pass "--rw write --bs 128k --qd 4 $flag"
    cell "vireo-file-$ring-1q-sg-64k" "$VIREO_FILE" 1 pass "--rw randread --bs 64k --seg-size 4k --qd 8 $flag"
  done
  VIREO_CELLS=1
else
  VIREO_CELLS=0
fi

selected() {
  local f
  [ ${#FILTERS[@]} = 0 ] && return 0
  for f in "${FILTERS[@]}"; do [[ "$1" == *"$f"* ]] && return 0; done
  return 1
}
if [ "$LIST" = 1 ]; then
  for c in "${CELLS[@]}"; do selected "${c%%|*}" && echo "${c%%|*}"; done
  [ "$VIREO_CELLS" = 1 ] || echo "skipped: vireo cells ($VIREO_BIN missing or without \`blk\`)"
  exit 0
fi
if [ "$BUILD" = 1 ]; then
  (cd "$E2E_ROOT" && cargo build --release -q -p vireo) || { echo "FAIL build"; echo "0 passed, 1 failed"; exit 1; }
fi
if [ ! -x "$VIREO_BIN" ]; then
  echo "FAIL setup $VIREO_BIN is missing (build: cargo build --release -p vireo, or --build)"
  echo "0 passed, 1 failed"; exit 1
fi
if ! command -v qemu-storage-daemon >/dev/null; then
  echo "FAIL setup qemu-storage-daemon is missing (scripts/peers/setup.sh installs it)"
  echo "0 passed, 1 failed"; exit 1
fi

# json_field JSON KEY: the raw value of "KEY" in a one-line JSON object.
json_field() { sed -n "s/.*\"$2\":\(\"[^\"]*\"\|[^,}]*\).*/\1/p" <<<"$1"; }

# requests_cell NAME BACKEND RING: the driver's every-request-type test against BACKEND.
requests_cell() {
  local name=$1 backend=$2 ring=$3 dir=$E2E_LOGS/frontend-$1 cmd
  rm -rf "$dir"; mkdir -p "$dir"
  cmd=${backend//\{queues\}/1}
  (cd "$E2E_ROOT" && VIREO_PEER_CMD=$cmd VIREO_PEER_RING=$ring RUST_BACKTRACE=0 \
    timeout -k 5 300 cargo test -q -p vireo-blk --test driver_peer -- --ignored) >"$dir/test.log" 2>&1
  if grep -q "test result: ok. 1 passed" "$dir/test.log"; then
    echo "PASS $name read, write, get-id and every optional request the device offers; image checked"
    return 0
  fi
  echo "FAIL $name $(grep -m1 -E "panicked|error" "$dir/test.log")"
  e2e_tail "$dir/test.log"
  return 1
}

# run_cell NAME BACKEND QUEUES EXPECT ARGS: one cell; prints PASS|FAIL; returns 0 on PASS.
run_cell() {
  local name=$1 backend=$2 queues=$3 expect=$4 args=$5
  if [ "$expect" = requests ]; then
    requests_cell "$name" "$backend" "$args"
    return
  fi
  local dir=$E2E_LOGS/frontend-$name sock img cmd pid out err rc line reason=""
  rm -rf "$dir"; mkdir -p "$dir"
  img=$dir/disk.img
  sock=$dir/vhost.sock
  [ ${#sock} -lt 100 ] || sock=$(mktemp -u "${TMPDIR:-/tmp}/vireo-fe.XXXXXX.sock")
  truncate -s "${IMG_MIB}M" "$img"
  cmd=${backend//\{sock\}/$sock}; cmd=${cmd//\{img\}/$img}; cmd=${cmd//\{queues\}/$queues}
  echo "$cmd" >"$dir/backend.cmd"
  # shellcheck disable=SC2086 # the command is a word list on purpose
  e2e_spawn "$dir/backend.log" $cmd
  pid=$E2E_LAST_PID
  if ! e2e_wait_socket "$sock" "$pid" 10; then
    echo "FAIL $name backend did not listen on $sock"; e2e_tail "$dir/backend.log"
    e2e_stop "$pid"; return 1
  fi
  # shellcheck disable=SC2086
  RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 timeout -k 5 $((SECONDS_PER_RUN * 4 + 60)) "$VIREO_BIN" bench blk --socket "$sock" --queues "$queues" \
    --seconds "$SECONDS_PER_RUN" --size "${IMG_MIB}M" --verify --json $args \
    >"$dir/bench.json" 2>"$dir/bench.err"
  rc=$?
  e2e_stop "$pid"
  out=$(tail -n 1 "$dir/bench.json")
  # the error and its causes, on one line (without the socket path, which names the cell)
  err=$(sed -n '/^Error:/,/^Stack backtrace/p' "$dir/bench.err" | grep -v '^Stack backtrace' | tr -s ' \n' ' ')
  err=${err//$sock/SOCK}
  case "$expect" in
    pass)
      if [ "$rc" != 0 ]; then
        reason="bench exited $rc: $err"
      elif [ "$(json_field "$out" verified)" != true ]; then
        reason="not verified: $out"
      elif [ "$(json_field "$out" errors)" != 0 ]; then
        reason="errors: $out"
      elif [ "$(json_field "$out" mismatches)" != 0 ]; then
        reason="mismatches: $out"
      elif [ "$(json_field "$out" ios)" = 0 ] || [ -z "$(json_field "$out" ios)" ]; then
        reason="no I/O: $out"
      fi
      line=$(printf 'iops=%.0f p99_us=%.0f reads_checked=%s' "$(json_field "$out" iops)" \
        "$(json_field "$out" p99_us)" "$(json_field "$out" reads_checked)" 2>/dev/null)
      ;;
    refuse:*)
      if [ "$rc" = 0 ]; then
        reason="the bench succeeded but had to refuse"
      elif [ "$rc" -ge 124 ]; then
        reason="the bench was killed (exit $rc) instead of refusing"
      elif ! grep -Eq "${expect#refuse:}" <<<"$err"; then
        reason="refused without saying why: $err"
      fi
      line="refused: $err"
      ;;
  esac
  # an image file written through the backend: every unit with the pattern must sit at the offset
  # it names (checked from the file itself, not through the device)
  if [ -z "$reason" ] && [ "$expect" = pass ] && [[ "$backend" == *"{img}"* ]]; then
    if ! "$VIREO_BIN" bench blk --check-image "$img" >"$dir/check-image.log" 2>&1; then
      reason="image check: $(grep -m1 '^Error:' "$dir/check-image.log")"
    fi
  fi
  if [ -n "$reason" ]; then
    echo "FAIL $name $reason"
    e2e_tail "$dir/bench.err" "$dir/check-image.log" "$dir/backend.log"
    return 1
  fi
  echo "PASS $name $line"
  rm -f "$img"
}

PASSED=0 FAILED=0
for c in "${CELLS[@]}"; do
  IFS='|' read -r name backend queues expect args <<<"$c"
  # an EXPECT pattern may itself contain '|': re-join what read split off
  rest=${c#"$name|$backend|$queues|"}; expect=${rest%|*}; args=${rest##*|}
  selected "$name" || continue
  if run_cell "$name" "$backend" "$queues" "$expect" "$args"; then
    PASSED=$((PASSED + 1))
  else
    FAILED=$((FAILED + 1))
  fi
done
[ "$VIREO_CELLS" = 1 ] || echo "skipped: vireo cells ($VIREO_BIN missing or without \`blk\`)"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ] && [ "$PASSED" -gt 0 ]
