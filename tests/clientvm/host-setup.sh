#!/bin/bash
# Host prerequisites for the client VM harness (Debian 12 host, root). Idempotent: does
# nothing when every tool is already there.
#
# qemu-system-x86 comes from bookworm-backports: these machines carry qemu-utils 10.0 from
# backports, which Breaks bookworm's qemu-system-common 7.2. Only qemu-system-x86 is named
# with -t bookworm-backports (naming others would upgrade e.g. e2fsprogs too).
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "host-setup.sh: needs root" >&2; exit 1; }

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v ip >/dev/null || need+=(iproute2)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
[ -x /usr/bin/time ] || need+=(time)
command -v flock >/dev/null || need+=(util-linux)
command -v dumpcap >/dev/null || need+=(tshark)   # optional capture of udp/1701 in the netns
if [ ${#need[@]} -eq 0 ]; then
  echo "host-setup: all present ($(qemu-system-x86_64 --version | head -1))"
  exit 0
fi
echo "host-setup: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
qemu_from_backports=0
if [[ " ${need[*]} " == *" qemu-system-x86 "* ]] && dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q bpo; then
  qemu_from_backports=1
  if ! apt-cache policy | grep -q bookworm-backports; then
    # the same archive the machine's apt already uses for bookworm
    URI=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' | awk '$2=="bookworm"{print $1; exit}')
    cat > /etc/apt/sources.list.d/sekisho-bookworm-backports.sources <<SRC
Types: deb
URIs: ${URI:-http://deb.debian.org/debian/}
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
fi
apt-get update -qq
rest=()
for p in "${need[@]}"; do
  if [ "$p" = qemu-system-x86 ] && [ $qemu_from_backports = 1 ]; then
    apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86
  else
    rest+=("$p")
  fi
done
[ ${#rest[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${rest[@]}"
qemu-system-x86_64 --version | head -1
