#!/usr/bin/env bash
# Makes the Debian 13 (trixie) chroot that test/e2e/quic.test.ts runs its QUIC peers in:
# ngtcp2's client and server (the client migrates: --change-local-addr, --nat-rebinding) and
# aioquic. Debian 12 has neither at a usable version. The chroot shares the host's network.
# Idempotent: a chroot that already has its tools is left as it is.
set -euo pipefail
root=${LEMONADE_QUIC_CHROOT:-/var/cache/lemonade-trixie}
tools=(ngtcp2-client ngtcp2-server python3-aioquic)

if [ -x "$root/usr/bin/dpkg" ] && chroot "$root" dpkg -s "${tools[@]}" >/dev/null 2>&1; then
  echo "quic chroot: $root is ready"
  exit 0
fi

# the mirror this machine's apt uses (deb822 or one-line sources)
mirror=$(grep -hoE '^URIs: *https?://[^ ]+/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1 | sed 's/^URIs: *//' || true)
if [ -z "$mirror" ]; then
  mirror=$(grep -hoE '^deb +(\[[^]]*\] +)?https?://[^ ]+/debian/? ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
    | head -n 1 | grep -oE 'https?://[^ ]+' || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

if [ ! -x "$root/usr/bin/apt-get" ]; then
  rm -rf "$root"
  mkdir -p "$(dirname "$root")"
  debootstrap --variant=minbase trixie "$root" "$mirror"
fi
# debootstrap's --include cannot resolve aioquic's virtual dependencies: apt inside can
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${tools[@]}" >/dev/null
chroot "$root" dpkg -s "${tools[@]}" >/dev/null
echo "quic chroot: $root made"
