# shellcheck shell=bash disable=SC2034 # the E2E_* settings are used by the scripts that source this
# Shared helpers for the end-to-end cells (sourced, not run).
# Environment:
#   VIREO_E2E_CACHE    kernel + initramfs made by scripts/peers/setup.sh (default /var/cache/vireo-e2e)
#   VIREO_E2E_LOGS     where each cell keeps its logs (default <repo>/target/e2e-logs)
#   VIREO_E2E_TIMEOUT  host-side bound on one guest run, seconds (default 75)
#   VIREO_E2E_BOOT_TIMEOUT  seconds for the guest to reach its init (default 30)
#   VIREO_E2E_ACCEL    QEMU accelerator (default tcg: nested KVM here cannot boot a stock kernel)
E2E_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
E2E_CACHE=${VIREO_E2E_CACHE:-/var/cache/vireo-e2e}
E2E_LOGS=${VIREO_E2E_LOGS:-$E2E_ROOT/target/e2e-logs}
E2E_TIMEOUT=${VIREO_E2E_TIMEOUT:-75}
E2E_BOOT_TIMEOUT=${VIREO_E2E_BOOT_TIMEOUT:-30}
E2E_ACCEL=${VIREO_E2E_ACCEL:-tcg}
E2E_KERNEL=$E2E_CACHE/kernel/vmlinuz
E2E_INITRD=$E2E_CACHE/initramfs.cpio.gz

# ---- processes: everything a cell starts is its own process group, killed on every exit path ----
E2E_PGIDS=()
# e2e_spawn LOG CMD...: start CMD in the background in a new session; sets E2E_LAST_PID.
e2e_spawn() {
  local log=$1; shift
  setsid "$@" </dev/null >"$log" 2>&1 &
  E2E_LAST_PID=$!
  E2E_PGIDS+=("$E2E_LAST_PID")
}
# e2e_stop PID [GRACE_SECONDS]: SIGTERM its process group, SIGKILL after the grace period.
e2e_stop() {
  local pid=$1 grace=${2:-5} i
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || return 0
  kill -CONT -- "-$pid" 2>/dev/null   # a stopped process acts on SIGTERM only once continued
  for ((i = 0; i < grace * 20; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
e2e_cleanup() {
  local i
  for ((i = ${#E2E_PGIDS[@]} - 1; i >= 0; i--)); do e2e_stop "${E2E_PGIDS[i]}" 2; done
  E2E_PGIDS=()
}
trap e2e_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# e2e_wait_socket SOCK PID SECONDS: wait until SOCK is a listening socket (or PID died).
e2e_wait_socket() {
  local sock=$1 pid=$2 i
  for ((i = 0; i < $3 * 20; i++)); do
    [ -S "$sock" ] && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# Host TSC frequency in kHz (microvm: without tsc_early_khz about 1 boot in 4 hangs calibrating).
e2e_khz() { awk '/^cpu MHz/{printf "%d", $4 * 1000; exit}' /proc/cpuinfo; }

# e2e_md5_at FILE OFFSET LEN: md5 of LEN bytes of FILE at byte OFFSET.
e2e_md5_at() {
  dd if="$1" bs=1M iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none | md5sum | cut -d' ' -f1
}

# e2e_field LINE KEY: the value of KEY=value in a "@@..." line.
# (The guest console ends lines with CR LF: the CR is not part of a value.)
e2e_field() { sed -n "s/.* $2=\([^ \r]*\).*/\1/p" <<<" $1"; }

# e2e_feature BITS N: feature bit N (0|1) of a sysfs features string (char i = bit i).
e2e_feature() { echo "${1:$2:1}"; }

# e2e_tail FILE...: the end of each log, indented, for a failure report.
e2e_tail() {
  local f
  for f in "$@"; do
    [ -s "$f" ] || continue
    echo "  --- ${f#"$E2E_ROOT"/} (last 25 lines)"
    tail -n 25 "$f" | sed 's/^/  | /'
  done
}

# e2e_need_setup: fail clearly when scripts/peers/setup.sh has not run.
e2e_need_setup() {
  if [ ! -e "$E2E_KERNEL" ] || [ ! -s "$E2E_INITRD" ]; then
    echo "e2e: no kernel/initramfs in $E2E_CACHE: run scripts/peers/setup.sh first" >&2
    return 1
  fi
}
