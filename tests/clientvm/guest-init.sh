#!/bin/sh
# PID 1 of the client VM guest (kernel command line: init=/sbin/cvinit), installed into the
# image by build-image.sh. Mounts the basics and two 9p shares, "cvshare" (the harness's
# guest/ directory, read-only) at /share and "cvout" (this guest's results, read-write) at
# /out, runs /share/guest-run.sh <role> (role from cv.role=) with its output in
# /out/console.log, then powers off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sys /sys
mountpoint -q /dev || mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
mount -o remount,rw /
mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /tmp
mkdir -p /run/lock /var/run/xl2tpd /run/pluto
ROLE=$(sed -n 's/.*cv\.role=\([^ ]*\).*/\1/p' /proc/cmdline)
echo "cvinit: uptime $(cut -d' ' -f1 /proc/uptime)s role=$ROLE"
hostname "cv-$ROLE"
modprobe 9pnet_virtio; modprobe 9p
mkdir -p /share /out
mount -t 9p -o trans=virtio,version=9p2000.L,ro cvshare /share
mount -t 9p -o trans=virtio,version=9p2000.L,rw cvout /out
modprobe virtio_rng 2>/dev/null
ip link set lo up
echo "cvinit: ready at uptime $(cut -d' ' -f1 /proc/uptime)s" | tee /out/boot-ready.txt
if [ -x /share/guest-run.sh ]; then
  /share/guest-run.sh "$ROLE" > /out/console.log 2>&1
  echo "cvinit: guest-run.sh exit=$?" | tee /out/guest-exit.txt
else
  echo "cvinit: no /share/guest-run.sh"
fi
sync; umount /out 2>/dev/null; sync
echo o > /proc/sysrq-trigger
sleep 10
