#!/usr/bin/env bash
# Install and prepare the third-party peers the end-to-end tests run against (Debian 12, root):
#   - QEMU (the vhost-user frontend/VMM), qemu-storage-daemon (a vhost-user-blk backend),
#   - the Debian cloud kernel (the Linux virtio drivers), extracted from its .deb (never installed),
#   - a busybox initramfs with the virtio modules and the project's guest init (tests/e2e/guest/init).
# Idempotent and fast when already done: apt runs only when a package is missing, the kernel is
# downloaded once, the initramfs is rebuilt only when one of its inputs changes (hash check).
#
# Usage: scripts/peers/setup.sh [--cache DIR] [--with-dpdk] [--with-fio] [--refresh-kernel] [--quiet]
#   --cache DIR        where the kernel and initramfs go (default $VIREO_E2E_CACHE or /var/cache/vireo-e2e)
#   --with-dpdk        also install DPDK (testpmd: vhost-user-net backend, virtio-user driver)
#   --with-fio         also install fio and add it (with its libraries) to the initramfs
#   --refresh-kernel   resolve the newest linux-image-cloud-amd64 again and re-extract it
#   --quiet            print only the final summary line
# Prints, last, one line: `setup: ok kernel=<ver> initramfs=<path> (<seconds>s)`.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
T0=$(date +%s.%N)

CACHE=${VIREO_E2E_CACHE:-/var/cache/vireo-e2e}
WITH_DPDK=0 WITH_FIO=0 REFRESH=0 QUIET=0
while [ $# -gt 0 ]; do
  case "$1" in
    --cache) CACHE=$2; shift 2 ;;
    --cache=*) CACHE=${1#*=}; shift ;;
    --with-dpdk) WITH_DPDK=1; shift ;;
    --with-fio) WITH_FIO=1; shift ;;
    --refresh-kernel) REFRESH=1; shift ;;
    --quiet) QUIET=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup: unknown option $1" >&2; exit 2 ;;
  esac
done
say() { [ "$QUIET" = 1 ] || echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }

# The guest's virtio drivers and what the guest tests need. Dependencies are found in modules.dep;
# a module built into the kernel (e.g. ext4 in the cloud kernel) is skipped.
GUEST_MODULES="virtio_pci virtio_mmio virtio_blk virtio_net virtio_console ext4"
INIT_SRC=$ROOT/tests/e2e/guest/init

# ---- 1. Debian packages ------------------------------------------------------------------------
PKGS="qemu-system-x86 qemu-system-common qemu-utils busybox-static e2fsprogs kmod gzip"
[ "$WITH_DPDK" = 1 ] && PKGS="$PKGS dpdk"
[ "$WITH_FIO" = 1 ] && PKGS="$PKGS fio"

missing_pkgs() {
  local p st
  for p in $PKGS; do
    st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
    [ "${st:0:2}" = ii ] || printf '%s ' "$p"
  done
}
# Another apt/dpkg may be running (unattended upgrades, a parallel setup): wait for it.
wait_for_apt() {
  local i
  for i in $(seq 600); do
    # (no pgrep: procps is not on every fresh machine)
    grep -qxE 'apt|apt-get|dpkg|unattended-upgr' /proc/[0-9]*/comm 2>/dev/null || return 0
    [ $((i % 30)) = 1 ] && say "waiting for a running apt/dpkg to finish"
    sleep 1
  done
  die "apt/dpkg still busy after 10 minutes"
}
APT_OPTS=(-y -q -o DPkg::Lock::Timeout=600 -o APT::Sandbox::User=root)
MISSING=$(missing_pkgs)
if [ -n "$MISSING" ]; then
  wait_for_apt
  MISSING=$(missing_pkgs)
fi
if [ -n "$MISSING" ]; then
  say "installing: $MISSING"
  export DEBIAN_FRONTEND=noninteractive
  apt-get "${APT_OPTS[@]}" update >/dev/null
  # shellcheck disable=SC2086
  apt-get "${APT_OPTS[@]}" install --no-install-recommends $MISSING >/dev/null
  MISSING=$(missing_pkgs)
  [ -z "$MISSING" ] || die "still missing after apt-get install: $MISSING"
fi

# ---- 2. The guest kernel: Debian's cloud kernel, extracted from its .deb --------------------------
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
# one setup at a time per cache folder (parallel runs would extract/build over each other)
exec 9>"$CACHE/.lock"
flock 9
KDIR=$CACHE/kernel
resolve_kver() {
  apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/{sub("linux-image-", "", $2); print $2; exit}'
}
if [ "$REFRESH" = 1 ] || [ ! -s "$KDIR/VERSION" ] || [ ! -e "$KDIR/vmlinuz" ]; then
  KVER=$(resolve_kver)
  if [ -z "$KVER" ]; then
    # a fresh machine may have no package lists yet
    wait_for_apt
    apt-get "${APT_OPTS[@]}" update >/dev/null
    KVER=$(resolve_kver)
  fi
  [ -n "$KVER" ] || die "cannot resolve linux-image-cloud-amd64's kernel version"
  if [ "$(cat "$KDIR/VERSION" 2>/dev/null)" != "$KVER" ] || [ ! -e "$KDIR/vmlinuz" ]; then
    say "downloading kernel linux-image-$KVER"
    DL=$(mktemp -d "$CACHE/dl.XXXXXX")
    (cd "$DL" && apt-get -q -o APT::Sandbox::User=root download "linux-image-$KVER" >/dev/null)
    rm -rf "$KDIR.new"; mkdir -p "$KDIR.new/root"
    dpkg-deb -x "$DL"/linux-image-"$KVER"_*.deb "$KDIR.new/root"
    rm -rf "$DL"
    # the .deb ships no modules.dep (postinst makes it): make one in the extracted tree
    depmod -b "$KDIR.new/root" "$KVER"
    ln -s "root/boot/vmlinuz-$KVER" "$KDIR.new/vmlinuz"
    echo "$KVER" > "$KDIR.new/VERSION"
    rm -rf "$KDIR"; mv "$KDIR.new" "$KDIR"
  fi
fi
KVER=$(cat "$KDIR/VERSION")
MODDIR=$KDIR/root/lib/modules/$KVER
[ -s "$MODDIR/modules.dep" ] || depmod -b "$KDIR/root" "$KVER"

# ---- 3. The initramfs ---------------------------------------------------------------------------
[ -f "$INIT_SRC" ] || die "guest init not found: $INIT_SRC"
MKE2FS=$(command -v mke2fs || true)
BLKDISCARD=$(command -v blkdiscard || true)
FIO=""; [ "$WITH_FIO" = 1 ] && FIO=$(command -v fio)
INITRD=$CACHE/initramfs.cpio.gz
HASH=$( {
  echo "$KVER $GUEST_MODULES fio=$FIO"
  cat "$INIT_SRC" "$0"
  md5sum /bin/busybox ${MKE2FS:+"$MKE2FS"} ${BLKDISCARD:+"$BLKDISCARD"} ${FIO:+"$FIO"}
} | md5sum | cut -d' ' -f1)

# Load order of $GUEST_MODULES with their dependencies first (depth-first over modules.dep).
module_order() {
  awk -v want="$GUEST_MODULES" '
    function base(p) { sub(".*/", "", p); sub("\\.ko(\\.(xz|zst|gz))?$", "", p); gsub("-", "_", p); return p }
    function visit(m,   i, n, d) {
      if (m in seen) return; seen[m] = 1
      if (!(m in path)) { missing = missing " " m; return }
      n = split(deps[m], d, " "); for (i = 1; i <= n; i++) visit(base(d[i]))
      print path[m]
    }
    { f = $1; sub(":$", "", f); m = base(f); path[m] = f; $1 = ""; deps[m] = $0 }
    END { n = split(want, w, " "); for (i = 1; i <= n; i++) visit(w[i])
          if (missing != "") print "#missing" missing }
  ' "$MODDIR/modules.dep"
}

copy_with_libs() { # binary dest-root: the binary and every shared library it loads
  local bin=$1 dst=$2 lib
  mkdir -p "$dst$(dirname "$bin")"; cp -L "$bin" "$dst$bin"
  for lib in $(ldd "$bin" | awk '/=> \//{print $3} /^\t\/[^ ]*ld-linux/{print $1}'); do
    mkdir -p "$dst$(dirname "$lib")"; cp -Ln "$lib" "$dst$lib"
  done
}

if [ "$(cat "$INITRD.hash" 2>/dev/null)" != "$HASH" ] || [ ! -s "$INITRD" ]; then
  say "building initramfs (kernel $KVER)"
  W=$(mktemp -d "$CACHE/initramfs.XXXXXX")
  trap 'rm -rf "$W"' EXIT
  mkdir -p "$W"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,mnt,etc,lib/modules}
  cp /bin/busybox "$W/bin/busybox"
  for a in $(/bin/busybox --list); do [ -e "$W/bin/$a" ] || ln -s busybox "$W/bin/$a"; done
  : > "$W/lib/modules/order"
  while read -r rel; do
    case "$rel" in
      "#missing"*)
        for m in ${rel#\#missing}; do
          grep -q "/$m\.ko" "$MODDIR/modules.builtin" || die "module $m: neither in modules.dep nor built in"
        done ;;
      *)
        name=$(basename "$rel"); name=${name%%.ko*}
        case "$rel" in
          *.ko.xz) xz -dc "$MODDIR/$rel" > "$W/lib/modules/$name.ko" ;;
          *.ko.zst) zstd -qdc "$MODDIR/$rel" > "$W/lib/modules/$name.ko" ;;
          *) cp "$MODDIR/$rel" "$W/lib/modules/$name.ko" ;;
        esac
        echo "$name" >> "$W/lib/modules/order" ;;
    esac
  done < <(module_order)
  # e2fsprogs' mke2fs makes a real ext4 (journal, extents); busybox's only makes ext2.
  if [ -n "$MKE2FS" ]; then
    copy_with_libs "$MKE2FS" "$W"
    mv "$W$MKE2FS" "$W/usr/sbin/mkfs.ext4.tmp" && mv "$W/usr/sbin/mkfs.ext4.tmp" "$W/usr/sbin/mkfs.ext4"
    [ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$W/etc/"
  fi
  # util-linux's blkdiscard has --zeroout (BLKZEROOUT -> WRITE_ZEROES); busybox's has not.
  if [ -n "$BLKDISCARD" ]; then
    copy_with_libs "$BLKDISCARD" "$W"
    mv "$W$BLKDISCARD" "$W/usr/sbin/blkdiscard.util-linux"
  fi
  [ -n "$FIO" ] && copy_with_libs "$FIO" "$W"
  mknod -m 600 "$W/dev/console" c 5 1
  mknod -m 666 "$W/dev/null" c 1 3
  install -m 755 "$INIT_SRC" "$W/init"
  (cd "$W" && find . -print0 | /bin/busybox cpio -o -H newc -0 2>/dev/null | gzip -1 > "$INITRD.new")
  mv "$INITRD.new" "$INITRD"
  echo "$HASH" > "$INITRD.hash"
  rm -rf "$W"; trap - EXIT
fi

# ---- 4. Sanity ----------------------------------------------------------------------------------
for b in qemu-system-x86_64 qemu-storage-daemon e2fsck debugfs; do
  command -v "$b" >/dev/null || die "$b not found after setup"
done
echo "setup: ok kernel=$KVER initramfs=$INITRD ($(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s)"
