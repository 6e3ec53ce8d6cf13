#!/bin/bash
# The client VM image: a minimal Debian bookworm guest (debootstrap minbase + Debian's kernel +
# xl2tpd, pppd, strongSwan, iperf3) as kernel + small initrd + raw ext4 root file system,
# made without loop devices (mkfs.ext4 -d). Root only.
#
# Cached under a key of its inputs (this script and guest-init.sh; the test logic and the
# guest configs come in over 9p at run time, so editing them does not rebuild):
#   $CACHE_DIR/<key>/{vmlinuz,initrd.img,rootfs.raw}   CACHE_DIR=/var/tmp/sekisho-clientvm/cache
# A cache hit costs nothing; a build takes ~2 minutes (apt). Concurrent callers wait on a lock.
# Prints the image directory on its last line of stdout.
# env: CACHE_DIR, MIRROR (default: the bookworm archive this machine's apt uses), REBUILD=1
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE_DIR=${CACHE_DIR:-/var/tmp/sekisho-clientvm/cache}
KEY=$(cat "$HERE/build-image.sh" "$HERE/guest-init.sh" | sha256sum | cut -c1-16)
OUT=$CACHE_DIR/$KEY
mkdir -p "$CACHE_DIR"
[ "${REBUILD:-0}" = 1 ] && rm -rf "$OUT"
if [ -e "$OUT/complete" ]; then echo "image: cache hit $KEY" >&2; echo "$OUT"; exit 0; fi

exec 9>"$CACHE_DIR/.lock"
flock 9
if [ -e "$OUT/complete" ]; then echo "image: built meanwhile $KEY" >&2; echo "$OUT"; exit 0; fi

W=$CACHE_DIR/.build-$KEY
ROOT=$W/rootfs
MIRROR=${MIRROR:-$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' | awk '$2=="bookworm"{print $1; exit}')}
MIRROR=${MIRROR:-http://deb.debian.org/debian/}
t0=$(date +%s)
ts() { echo "[build +$(( $(date +%s) - t0 ))s] $*" >&2; }
cleanup_mounts() {
  for m in dev/pts dev sys proc; do
    mountpoint -q "$ROOT/$m" 2>/dev/null && umount -l "$ROOT/$m" || true
  done
}
trap cleanup_mounts EXIT
# Never rm -rf a tree that still has /dev or /proc bound into it (a build killed mid-way).
safe_rm() {
  cleanup_mounts
  if awk -v r="$1/" 'index($2, r) == 1 {found=1} END {exit !found}' /proc/mounts; then
    echo "build-image.sh: $1 still has mounts; not removing it" >&2; exit 1
  fi
  rm -rf "$1"
}
command -v debootstrap >/dev/null || { echo "build-image.sh: debootstrap missing (host-setup.sh)" >&2; exit 1; }

safe_rm "$W"; mkdir -p "$W"
ts "debootstrap minbase bookworm from $MIRROR (log: $W/debootstrap.log)"
debootstrap --variant=minbase \
  --include=kmod,iproute2,iputils-ping,iperf3,procps,strongswan-starter,strongswan-charon,libstrongswan-standard-plugins,xl2tpd,ppp,initramfs-tools \
  bookworm "$ROOT" "$MIRROR" > "$W/debootstrap.log" 2>&1 || { tail -20 "$W/debootstrap.log" >&2; exit 1; }

# Small initrd: only what mounts an ext4 root on virtio-blk.
sed -i 's/^MODULES=.*/MODULES=list/; s/^COMPRESS=.*/COMPRESS=gzip/' "$ROOT/etc/initramfs-tools/initramfs.conf"
printf '%s\n' virtio_pci virtio_blk ext4 > "$ROOT/etc/initramfs-tools/modules"

mount -t proc proc "$ROOT/proc"; mount -t sysfs sys "$ROOT/sys"
mount --bind /dev "$ROOT/dev"; mount --bind /dev/pts "$ROOT/dev/pts"
ts "linux-image-amd64 in the chroot (log: $W/kernel-install.log)"
chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends linux-image-amd64 \
  > "$W/kernel-install.log" 2>&1 || { tail -20 "$W/kernel-install.log" >&2; exit 1; }
chroot "$ROOT" apt-get clean
cleanup_mounts

# PID 1 of the guest: mounts the 9p shares and runs /share/guest-run.sh.
install -m 0755 "$HERE/guest-init.sh" "$ROOT/sbin/cvinit"
echo cvguest > "$ROOT/etc/hostname"
# Trim: module trees a virtio guest never loads, docs, locales, apt lists.
KV=$(ls "$ROOT/lib/modules")
for d in drivers/gpu drivers/media drivers/infiniband drivers/net/wireless drivers/staging sound \
         drivers/scsi drivers/usb drivers/bluetooth net/wireless net/mac80211 net/bluetooth drivers/md \
         drivers/iio drivers/hid drivers/input drivers/isdn; do
  rm -rf "$ROOT/lib/modules/$KV/kernel/$d"
done
chroot "$ROOT" depmod -a "$KV"
rm -rf "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/locale/* \
       "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/lib/apt/lists/*

ts "kernel $KV + initrd, mkfs.ext4 -d (raw, sparse)"
cp "$ROOT"/boot/vmlinuz-* "$W/vmlinuz"; cp "$ROOT"/boot/initrd.img-* "$W/initrd.img"
SIZE_MB=$(( $(du -sm "$ROOT" | cut -f1) + 256 ))
mkfs.ext4 -q -F -L cvroot -O ^has_journal -d "$ROOT" "$W/rootfs.raw" "${SIZE_MB}M"
safe_rm "$ROOT"
{ echo "key=$KEY"; echo "kernel=$KV"; echo "built=$(date -u +%FT%TZ) in $(( $(date +%s) - t0 ))s"; } > "$W/complete"
rm -rf "$OUT"; mv "$W" "$OUT"
# Older images (other keys) are this harness's own: drop them.
for d in "$CACHE_DIR"/*/; do
  [ "${d%/}" = "$OUT" ] || { [ -e "$d/complete" ] && rm -rf "$d"; } || true
done
ts "done: $OUT ($(du -sh "$OUT/rootfs.raw" | cut -f1) on disk)"
echo "$OUT"
