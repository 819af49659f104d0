#!/usr/bin/env bash
# One end-to-end cell: a virtio-blk disk served by BACKEND, driven by the Linux virtio-blk driver in a
# QEMU (TCG) guest, checked from inside the guest and then byte for byte from the host.
#
# Usage: tests/e2e/blk-cell.sh --backend CMD [options]
#   --backend CMD     a vhost-user-blk backend command; {sock} {img} {queues} {size} are replaced by the
#                     socket path, the image file, the queue count and the image size in bytes, e.g.
#                     "qemu-storage-daemon --blockdev driver=file,node-name=d,filename={img} --export
#                      type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path={sock},writable=on,num-queues={queues}"
#                     or "builtin": QEMU's own virtio-blk device on the image (no vhost-user; reference)
#   --machine M       q35 (vhost-user-blk-pci, virtio-pci) | microvm (vhost-user-blk, virtio-mmio); default q35
#   --packed on|off   ask for the packed ring (the guest must then have negotiated it); default off
#   --queues N        virtqueues of the device; default 1
#   --smp N           guest vCPUs; default 2 when queues > 1, else 1
#   --test T          guest test: boot | blk | fs; default blk
#   --name NAME       cell name in the PASS/FAIL line and log folder; default <test>-<machine>-<ring>-<N>q
#   --size MIB        image size; default 128
#   --timeout S       host-side bound on the guest run (default $VIREO_E2E_TIMEOUT or 75); the guest's
#                     own watchdog fires 20 s earlier (half of it when below 40 s), and a guest that has not reached its init after
#                     $VIREO_E2E_BOOT_TIMEOUT s (default 30) is stopped at once
#   --keep            keep the image file even when the cell passes
# Prints one line `PASS|FAIL <name> <reason>`; exits 0 on PASS, 1 on FAIL (with the logs' tails).
# Logs: $VIREO_E2E_LOGS/<name>/ (backend.log, guest.log, qemu.log, host-checks.log).
set -uo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BACKEND="" MACHINE=q35 PACKED=off QUEUES=1 SMP="" TEST=blk NAME="" SIZE_MIB=128 KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) BACKEND=$2; shift 2 ;;
    --machine) MACHINE=$2; shift 2 ;;
    --packed) PACKED=$2; shift 2 ;;
    --queues) QUEUES=$2; shift 2 ;;
    --smp) SMP=$2; shift 2 ;;
    --test) TEST=$2; shift 2 ;;
    --name) NAME=$2; shift 2 ;;
    --size) SIZE_MIB=$2; shift 2 ;;
    --timeout) E2E_TIMEOUT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "blk-cell: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -n "$BACKEND" ] || { echo "blk-cell: --backend is required" >&2; exit 2; }
case "$MACHINE" in q35|microvm) ;; *) echo "blk-cell: --machine q35|microvm" >&2; exit 2 ;; esac
case "$PACKED" in on|off) ;; *) echo "blk-cell: --packed on|off" >&2; exit 2 ;; esac
case "$TEST" in boot|blk|fs) ;; *) echo "blk-cell: --test boot|blk|fs" >&2; exit 2 ;; esac
[ -n "$SMP" ] || { [ "$QUEUES" -gt 1 ] && SMP=2 || SMP=1; }
RING="split"; [ "$PACKED" = on ] && RING="packed"
[ -n "$NAME" ] || NAME=$TEST-$MACHINE-$RING-${QUEUES}q
e2e_need_setup || { echo "FAIL $NAME setup missing"; exit 1; }

DIR=$E2E_LOGS/$NAME
rm -rf "$DIR"; mkdir -p "$DIR"
IMG=$DIR/disk.img
SOCK=$DIR/vhost.sock
# a unix socket path must fit in sun_path (108 bytes)
[ ${#SOCK} -lt 100 ] || SOCK=$(mktemp -u "${TMPDIR:-/tmp}/vireo-e2e.XXXXXX.sock")
SIZE=$((SIZE_MIB * 1048576))
HLOG=$DIR/host-checks.log
T0=$(date +%s.%N)
FAILS=()
fail() { FAILS+=("$*"); echo "FAIL: $*" >>"$HLOG"; }
ok() { echo "ok: $*" >>"$HLOG"; }
judge() { # OK-MESSAGE FAIL-MESSAGE COMMAND...: ok when COMMAND succeeds, else fail
  local yes=$1 no=$2; shift 2
  if "$@"; then ok "$yes"; else fail "$no"; fi
}

finish() {
  local dt
  dt=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1fs", b-a}')
  e2e_cleanup
  rm -f "$SOCK"
  if [ ${#FAILS[@]} = 0 ]; then
    [ "$KEEP" = 1 ] || rm -f "$IMG"
    echo "PASS $NAME ($dt)"
    exit 0
  fi
  echo "FAIL $NAME ${FAILS[0]}$([ ${#FAILS[@]} -gt 1 ] && echo " (+$((${#FAILS[@]} - 1)) more)") ($dt)"
  e2e_tail "$HLOG" "$DIR/backend.log" "$DIR/qemu.log" "$DIR/guest.log"
  echo "  logs: ${DIR#"$E2E_ROOT"/}/"
  exit 1
}

trap 'fail "interrupted"; finish' INT TERM

# ---- the image: sparse, with a host pattern (4 MiB at 8 MiB) for the guest to read ----
HOSTPAT_OFF=8 HOSTPAT_LEN=4
truncate -s "$SIZE" "$IMG"
dd if=/dev/urandom of="$IMG" bs=1M seek=$HOSTPAT_OFF count=$HOSTPAT_LEN conv=notrunc status=none
HOSTPAT_MD5=$(e2e_md5_at "$IMG" $((HOSTPAT_OFF * 1048576)) $((HOSTPAT_LEN * 1048576)))

# ---- the backend ----
if [ "$BACKEND" = builtin ]; then
  DRIVE=(-drive "file=$IMG,if=none,id=disk0,format=raw")
  if [ "$MACHINE" = q35 ]; then DEV=virtio-blk-pci,drive=disk0; else DEV=virtio-blk-device,drive=disk0; fi
else
  DRIVE=(-chardev "socket,id=char0,path=$SOCK")
  if [ "$MACHINE" = q35 ]; then DEV=vhost-user-blk-pci,chardev=char0; else DEV=vhost-user-blk,chardev=char0; fi
  CMD=${BACKEND//\{sock\}/$SOCK}
  CMD=${CMD//\{img\}/$IMG}
  CMD=${CMD//\{queues\}/$QUEUES}
  CMD=${CMD//\{size\}/$SIZE}
  echo "backend: $CMD" >"$HLOG"
  rm -f "$SOCK"
  e2e_spawn "$DIR/backend.log" bash -c "exec $CMD"
  BACKEND_PID=$E2E_LAST_PID
  if ! e2e_wait_socket "$SOCK" "$BACKEND_PID" 10; then
    fail "backend socket not ready in 10 s"
    finish
  fi
fi
DEV=$DEV,num-queues=$QUEUES,packed=$PACKED

# ---- the guest ----
WD=$((E2E_TIMEOUT > 40 ? E2E_TIMEOUT - 20 : E2E_TIMEOUT / 2))   # the guest gives up before the host does
EXPECT_MQ=$QUEUES; [ "$SMP" -lt "$QUEUES" ] && EXPECT_MQ=$SMP   # virtio_blk uses at most one queue per CPU
APPEND="console=ttyS0 panic=-1 quiet vireo.test=$TEST vireo.wd=$WD vireo.size=$SIZE"
APPEND="$APPEND vireo.queues=$EXPECT_MQ vireo.hostpat=$HOSTPAT_OFF:$HOSTPAT_LEN:$HOSTPAT_MD5"
APPEND="$APPEND vireo.guestpat=16:4 vireo.par=32:4"
# shellcheck disable=SC2054 # commas are QEMU's option syntax, not array separators
if [ "$MACHINE" = q35 ]; then
  MACH=(-machine q35,memory-backend=mem)
else
  MACH=(-machine microvm,pit=on,pic=on,memory-backend=mem -global virtio-mmio.force-legacy=false)
  APPEND="$APPEND tsc_early_khz=$(e2e_khz)"
fi
# shellcheck disable=SC2054
QEMU=(qemu-system-x86_64 -accel "$E2E_ACCEL" "${MACH[@]}" -m 256M -smp "$SMP" -nodefaults -no-user-config
  -display none -monitor none -serial "file:$DIR/guest.log" -no-reboot
  -object memory-backend-memfd,id=mem,size=256M,share=on
  "${DRIVE[@]}" -device "$DEV"
  -kernel "$E2E_KERNEL" -initrd "$E2E_INITRD" -append "$APPEND")
echo "qemu: ${QEMU[*]}" >>"$HLOG"
e2e_spawn "$DIR/qemu.log" timeout -k 5 "$E2E_TIMEOUT" "${QEMU[@]}"
QEMU_PID=$E2E_LAST_PID
# fail fast when the guest does not even reach its init (e.g. a backend that never answers QEMU)
for ((i = 0; i < E2E_BOOT_TIMEOUT * 10; i++)); do
  kill -0 "$QEMU_PID" 2>/dev/null || break
  grep -qa '@@INIT-START' "$DIR/guest.log" 2>/dev/null && break
  sleep 0.1
done
if kill -0 "$QEMU_PID" 2>/dev/null && ! grep -qa '@@INIT-START' "$DIR/guest.log" 2>/dev/null; then
  fail "guest did not reach its init in ${E2E_BOOT_TIMEOUT}s"
  e2e_stop "$QEMU_PID" 2
fi
{ wait "$QEMU_PID"; QRC=$?; } 2>/dev/null
# the backend flushes and exits; then the image is ours to read
[ -n "${BACKEND_PID:-}" ] && e2e_stop "$BACKEND_PID" 5
GLOG=$DIR/guest.log
touch "$GLOG"

# ---- checks: the guest's own verdict ----
case "$QRC" in
  0) ;;
  124) fail "guest still running after ${E2E_TIMEOUT}s: stopped" ;;
  137) fail "qemu hung for ${E2E_TIMEOUT}s and ignored SIGTERM (blocked in a vhost-user call?): killed" ;;
  *) [ ${#FAILS[@]} -gt 0 ] || fail "qemu exit status $QRC" ;;
esac
grep -q '@@WATCHDOG' "$GLOG" && fail "guest watchdog fired"
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

# ---- checks: what the guest negotiated (virtio 1.2 §6: VERSION_1 = bit 32, RING_PACKED = bit 34) ----
DEVLINE=$(grep -a '@@DEVICE' "$GLOG" | grep 'id=0x0002' | head -1)
if [ -z "$DEVLINE" ]; then
  fail "no virtio-blk device (id 2) in the guest"
else
  FEAT=$(e2e_field "$DEVLINE" features)
  judge "VERSION_1 negotiated" "VERSION_1 not negotiated" [ "$(e2e_feature "$FEAT" 32)" = 1 ]
  want=0; [ "$PACKED" = on ] && want=1
  judge "RING_PACKED=$want" "RING_PACKED negotiated=$(e2e_feature "$FEAT" 34) wanted=$want" \
    [ "$(e2e_feature "$FEAT" 34)" = "$want" ]
fi

# ---- checks: byte for byte from the host ----
if [ "$TEST" = blk ]; then
  line=$(grep -a '@@HOSTPAT dev=vda' "$GLOG" | head -1)
  got=$(e2e_field "$line" md5)
  judge "host pattern read by guest: $got" "host pattern: guest read md5=${got:-none}, host wrote $HOSTPAT_MD5" \
    [ "$got" = "$HOSTPAT_MD5" ]
  npat=0
  while read -r line; do
    off=$(e2e_field "$line" off) len=$(e2e_field "$line" len) want=$(e2e_field "$line" md5)
    got=$(e2e_md5_at "$IMG" "$off" "$len")
    npat=$((npat + 1))
    judge "guest pattern in image at $off+$len" "guest pattern at $off+$len: image md5=$got, guest wrote $want" \
      [ "$got" = "$want" ]
  done < <(grep -a '@@PATTERN dev=vda' "$GLOG" | sed 's/.*@@PATTERN/@@PATTERN/')
  [ "$npat" -ge 2 ] || fail "guest reported $npat written patterns (expected >= 2)"
fi
if [ "$TEST" = fs ]; then
  if e2fsck -fn "$IMG" >>"$HLOG" 2>&1; then ok "e2fsck -fn clean"; else fail "e2fsck -fn found errors"; fi
  nfile=0
  while read -r line; do
    path=$(e2e_field "$line" path) want=$(e2e_field "$line" md5)
    got=$(debugfs -R "cat $path" "$IMG" 2>>"$HLOG" | md5sum | cut -d' ' -f1)
    nfile=$((nfile + 1))
    judge "file $path" "file $path: image md5=$got, guest wrote $want" [ "$got" = "$want" ]
  done < <(grep -a '@@FILE' "$GLOG" | sed 's/.*@@FILE/@@FILE/')
  [ "$nfile" -ge 1 ] || fail "guest reported no files"
fi
finish
