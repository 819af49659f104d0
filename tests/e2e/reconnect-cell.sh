#!/usr/bin/env bash
# End-to-end cell: back-end crash and reconnect under a running guest (QEMU
# docs/interop/vhost-user.rst, "Inflight I/O tracking"). `vireo blk` serves an image to a QEMU q35
# guest (vhost-user-blk-pci, split ring) whose chardev reconnects (`reconnect=1`); while the guest
# runs its blk test (O_DIRECT pattern writes and read-backs, write-zeroes, discard, one pinned writer
# per vCPU: see tests/e2e/guest/init), the host kills `vireo blk` with SIGKILL, several times, and
# starts it again on the same socket and image. QEMU keeps the inflight region the first `vireo blk`
# gave it and hands it to each new one (SET_INFLIGHT_FD), which resubmits the requests the killed one
# held. The guest must finish with no I/O error and every pattern correct, checked in the guest and
# byte for byte in the image.
#
# Usage: tests/e2e/reconnect-cell.sh [options]
#   --vireo BIN       the vireo binary (default $VIREO_BIN or <repo>/target/release/vireo)
#   --queues N        virtqueues (default 1); the guest has 2 vCPUs
#   --kills K         SIGKILLs to deliver while the guest does I/O (default 3)
#   --interval S      seconds between a restart and the next kill (default 1)
#   --name NAME       cell name (default reconnect-q35-split-<N>q)
#   --timeout S       host-side bound on the guest run (default 150)
#   --keep            keep the image even when the cell passes
# Prints one line `PASS|FAIL <name> <reason>`; logs in $VIREO_E2E_LOGS/<name>/ (backend-<k>.log for
# the k-th `vireo blk`, guest.log, qemu.log, host-checks.log).
#
# Packed rings are not covered: Vireo records inflight state for split rings only (see
# crates/vhost-user/src/backend/inflight.rs), so a killed back-end's requests on a packed ring are
# lost, as without the protocol feature.
set -uo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VIREO=${VIREO_BIN:-$E2E_ROOT/target/release/vireo}
QUEUES=1 KILLS=3 INTERVAL=1 NAME="" KEEP=0 SIZE_MIB=128
E2E_TIMEOUT=150
while [ $# -gt 0 ]; do
  case "$1" in
    --vireo) VIREO=$2; shift 2 ;;
    --queues) QUEUES=$2; shift 2 ;;
    --kills) KILLS=$2; shift 2 ;;
    --interval) INTERVAL=$2; shift 2 ;;
    --name) NAME=$2; shift 2 ;;
    --timeout) E2E_TIMEOUT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "reconnect-cell: unknown option $1" >&2; exit 2 ;;
  esac
done
SMP=2
[ -n "$NAME" ] || NAME=reconnect-q35-split-${QUEUES}q
e2e_need_setup || { echo "FAIL $NAME setup missing"; exit 1; }
[ -x "$VIREO" ] || { echo "FAIL $NAME no vireo binary at $VIREO"; exit 1; }

DIR=$E2E_LOGS/$NAME
rm -rf "$DIR"; mkdir -p "$DIR"
IMG=$DIR/disk.img
SOCK=$DIR/vhost.sock
[ ${#SOCK} -lt 100 ] || SOCK=$(mktemp -u "${TMPDIR:-/tmp}/vireo-e2e.XXXXXX.sock")
SIZE=$((SIZE_MIB * 1048576))
HLOG=$DIR/host-checks.log
: >"$HLOG"
T0=$(date +%s.%N)
FAILS=()
fail() { FAILS+=("$*"); echo "FAIL: $*" >>"$HLOG"; }
ok() { echo "ok: $*" >>"$HLOG"; }
judge() { # OK-MESSAGE FAIL-MESSAGE COMMAND...
  local yes=$1 no=$2; shift 2
  if "$@"; then ok "$yes"; else fail "$no"; fi
}
# shellcheck disable=SC2317 # called through judge
both_positive() { [ "$1" -ge 1 ] && [ "$2" -ge 1 ]; }
now() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

finish() {
  e2e_cleanup
  rm -f "$SOCK"
  if [ ${#FAILS[@]} = 0 ]; then
    [ "$KEEP" = 1 ] || rm -f "$IMG"
    echo "PASS $NAME (kills=$KILLED with-requests-in-flight=$HELD resubmitted=$RESUBMITTED, $(now)s)"
    exit 0
  fi
  echo "FAIL $NAME ${FAILS[0]}$([ ${#FAILS[@]} -gt 1 ] && echo " (+$((${#FAILS[@]} - 1)) more)") ($(now)s)"
  e2e_tail "$HLOG" "$DIR"/backend-*.log "$DIR/qemu.log" "$DIR/guest.log"
  echo "  logs: ${DIR#"$E2E_ROOT"/}/"
  exit 1
}
KILLED=0 HELD=0 RESUBMITTED=0
trap 'fail "interrupted"; finish' INT TERM

# ---- the image, with a host pattern (4 MiB at 8 MiB) ----
HOSTPAT_OFF=8 HOSTPAT_LEN=4
truncate -s "$SIZE" "$IMG"
dd if=/dev/urandom of="$IMG" bs=1M seek=$HOSTPAT_OFF count=$HOSTPAT_LEN conv=notrunc status=none
HOSTPAT_MD5=$(e2e_md5_at "$IMG" $((HOSTPAT_OFF * 1048576)) $((HOSTPAT_LEN * 1048576)))

# ---- the back-end: the k-th instance logs to backend-<k>.log ----
GEN=0
start_vireo() {
  GEN=$((GEN + 1))
  rm -f "$SOCK"
  e2e_spawn "$DIR/backend-$GEN.log" "$VIREO" blk --socket "$SOCK" --image "$IMG" --queues "$QUEUES"
  VIREO_PID=$E2E_LAST_PID
  echo "t=$(now) vireo #$GEN pid=$VIREO_PID" >>"$HLOG"
  e2e_wait_socket "$SOCK" "$VIREO_PID" 10
}
start_vireo || { fail "vireo blk socket not ready in 10 s"; finish; }

# ---- the guest: the blk test with a longer O_DIRECT phase (32 MiB pattern, ending where the write-zeroes region at 48 MiB starts; 24 MiB per writer), so the kills land mid-run ----
WD=$((E2E_TIMEOUT - 20))
APPEND="console=ttyS0 panic=-1 quiet vireo.test=blk vireo.wd=$WD vireo.size=$SIZE"
APPEND="$APPEND vireo.queues=$((QUEUES < SMP ? QUEUES : SMP)) vireo.hostpat=$HOSTPAT_OFF:$HOSTPAT_LEN:$HOSTPAT_MD5"
APPEND="$APPEND vireo.guestpat=16:32 vireo.par=64:24"
# shellcheck disable=SC2054 # commas are QEMU's option syntax
QEMU=(qemu-system-x86_64 -accel "$E2E_ACCEL" -machine q35,memory-backend=mem -m 256M -smp "$SMP"
  -nodefaults -no-user-config -display none -monitor none -serial "file:$DIR/guest.log" -no-reboot
  -object memory-backend-memfd,id=mem,size=256M,share=on
  -chardev "socket,id=char0,path=$SOCK,reconnect=1"
  -device "vhost-user-blk-pci,chardev=char0,num-queues=$QUEUES,packed=off"
  -kernel "$E2E_KERNEL" -initrd "$E2E_INITRD" -append "$APPEND")
echo "qemu: ${QEMU[*]}" >>"$HLOG"
e2e_spawn "$DIR/qemu.log" timeout -k 5 "$E2E_TIMEOUT" "${QEMU[@]}"
QEMU_PID=$E2E_LAST_PID
GLOG=$DIR/guest.log
touch "$GLOG"
guest_done() { grep -qa '@@DONE\|@@WATCHDOG' "$GLOG" 2>/dev/null || ! kill -0 "$QEMU_PID" 2>/dev/null; }

# in_flight PID: true when the inflight region PID has mapped marks a request in flight (read from
# the host through /proc/PID/map_files while the process is stopped). Every queue region is a
# multiple of 64 bytes: a 16-byte header, then one 16-byte state per descriptor whose first byte is
# the inflight flag (vhost-user.rst, "Inflight I/O tracking"); the rest of a region is zero.
in_flight() {
  local pid=$1 range size
  range=$(awk '/vireo-inflight/ {print $1; exit}' "/proc/$pid/maps" 2>/dev/null)
  [ -n "$range" ] || return 1
  size=$(( 0x${range#*-} - 0x${range%-*} ))
  od -An -v -tu1 -w16 "/proc/$pid/map_files/$range" 2>/dev/null |
    awk -v stride=$((size / QUEUES)) '(NR - 1) * 16 % stride >= 16 && $1 == 1 { found = 1; exit } END { exit !found }'
}

# kill_mid_flight: SIGKILL vireo at a moment its region records a request in flight (stop it,
# look, let it go on and look again, for at most 8 s; then kill it anyway). Sets KILL_HELD.
# Fails (and kills nothing) once the guest has finished.
kill_mid_flight() {
  local i
  KILL_HELD=0
  for ((i = 0; i < 400; i++)); do
    kill -STOP "$VIREO_PID" 2>/dev/null || break
    if in_flight "$VIREO_PID"; then KILL_HELD=1; break; fi
    kill -CONT "$VIREO_PID" 2>/dev/null
    guest_done && return 1
    sleep 0.02
  done
  kill -KILL -- "-$VIREO_PID" 2>/dev/null
  kill -CONT "$VIREO_PID" 2>/dev/null
  wait "$VIREO_PID" 2>/dev/null
  return 0
}

# ---- the crashes: the first once the guest starts writing its pattern (after @@HOSTPAT) ----
for ((i = 0; i < (E2E_BOOT_TIMEOUT + 30) * 10; i++)); do
  grep -qa '@@HOSTPAT' "$GLOG" && break
  guest_done && break
  sleep 0.1
done
grep -qa '@@HOSTPAT' "$GLOG" || fail "guest never reached its blk test"
delay=0.5
for ((k = 1; k <= KILLS; k++)); do
  [ ${#FAILS[@]} = 0 ] || break
  sleep "$delay"; delay=$INTERVAL
  if guest_done; then
    echo "t=$(now) guest finished before kill $k" >>"$HLOG"
    break
  fi
  kill_mid_flight || { echo "t=$(now) guest finished before kill $k" >>"$HLOG"; break; }
  KILLED=$((KILLED + 1)) HELD=$((HELD + KILL_HELD))
  echo "t=$(now) SIGKILL vireo #$GEN mid-run, requests in flight: $KILL_HELD (guest: $(grep -a '@@' "$GLOG" | tail -1 | tr -d '\r' | cut -c1-60))" >>"$HLOG"
  sleep 0.3
  start_vireo || { fail "restarted vireo blk socket not ready in 10 s"; break; }
done

{ wait "$QEMU_PID"; QRC=$?; } 2>/dev/null
e2e_stop "$VIREO_PID" 5   # flushes and exits; the image is ours to read

# ---- checks: the crashes happened, and each new back-end took the region over ----
judge "killed vireo blk $KILLED time(s) mid-run" "vireo blk was never killed while the guest ran" [ "$KILLED" -ge 1 ]
for ((g = 2; g <= GEN; g++)); do
  log=$DIR/backend-$g.log
  n=$(sed -n 's/.*inflight record read.*resubmit=\([0-9]*\).*/\1/p' "$log" | awk '{s += $1} END {print s + 0}')
  RESUBMITTED=$((RESUBMITTED + n))
  # A restarted back-end reads the record when its rings start: with nothing in flight there is
  # no log line, so only a refused or unusable region is a failure here.
  if grep -qa 'inflight record unusable\|request refused.*INFLIGHT' "$log"; then
    fail "vireo #$g could not use the inflight region: $(grep -a 'inflight' "$log" | head -1)"
  fi
  grep -qa 'request refused' "$log" && fail "vireo #$g refused a request: $(grep -a 'request refused' "$log" | head -1)"
done
echo "resubmitted after restarts: $RESUBMITTED" >>"$HLOG"
judge "$HELD kill(s) with requests in flight; $RESUBMITTED resubmitted" \
  "kills with requests in flight: $HELD, resubmitted after restarts: $RESUBMITTED" \
  both_positive "$HELD" "$RESUBMITTED"

# ---- checks: the guest's verdict (no I/O error: every write and read-back succeeded) ----
case "$QRC" in
  0) ;;
  124) fail "guest still running after ${E2E_TIMEOUT}s: stopped" ;;
  137) fail "qemu hung for ${E2E_TIMEOUT}s and ignored SIGTERM: killed" ;;
  *) fail "qemu exit status $QRC" ;;
esac
grep -qa '@@WATCHDOG' "$GLOG" && fail "guest watchdog fired"
grep -qa 'I/O error\|blk_update_request\|Buffer I/O' "$GLOG" && fail "guest kernel reported I/O errors"
DONE=$(grep -a '@@DONE' "$GLOG" | tail -1)
if [ -z "$DONE" ]; then
  fail "guest never finished its test"
else
  judge "$DONE" "guest: $(e2e_field "$DONE" failed) check(s) failed" [ "$(e2e_field "$DONE" ok)" = 1 ]
fi
while read -r line; do
  n=$(e2e_field "$line" name)
  if [ "$(e2e_field "$line" ok)" = 1 ]; then ok "guest $n"; else fail "guest check $n: ${line#*detail=}"; fi
done < <(grep -a '@@RESULT' "$GLOG" | sed 's/.*@@RESULT/@@RESULT/')

# ---- checks: byte for byte from the host ----
line=$(grep -a '@@HOSTPAT dev=vda' "$GLOG" | head -1)
got=$(e2e_field "$line" md5)
judge "host pattern read by guest" "host pattern: guest read md5=${got:-none}, host wrote $HOSTPAT_MD5" \
  [ "$got" = "$HOSTPAT_MD5" ]
npat=0
while read -r line; do
  off=$(e2e_field "$line" off) len=$(e2e_field "$line" len) want=$(e2e_field "$line" md5)
  got=$(e2e_md5_at "$IMG" "$off" "$len")
  npat=$((npat + 1))
  judge "guest pattern in image at $off+$len" "guest pattern at $off+$len: image md5=$got, guest wrote $want" \
    [ "$got" = "$want" ]
done < <(grep -a '@@PATTERN dev=vda' "$GLOG" | sed 's/.*@@PATTERN/@@PATTERN/')
[ "$npat" -ge 4 ] || fail "guest reported $npat written patterns (expected >= 4)"
finish
