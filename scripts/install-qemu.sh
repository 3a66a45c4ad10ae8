#!/usr/bin/env bash
# Installs what booting the agent in QEMU needs: qemu-system-x86 from bookworm-backports (the
# image's qemu-utils already comes from there, which breaks bookworm's own qemu-system-common),
# lz4 and xz (vmlinuz payloads), e2fsprogs, busybox-static, and vhost-device-vsock
# (hybrid vsock over Unix sockets) from crates.io. Idempotent, non-interactive.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

if ! command -v qemu-system-x86_64 >/dev/null; then
    sources=/etc/apt/sources.list.d/debian.sources
    list=/etc/apt/sources.list.d/gcs-backports.sources
    if [ ! -f "$list" ]; then
        # The same mirror and key as the machine's bookworm stanza; no host name is written here.
        uri=$(awk '/^URIs:/ {u=$2} /^Suites:/ && / bookworm( |$)/ {print u; exit}' "$sources")
        key=$(awk '/^Signed-By:/ {print $2; exit}' "$sources")
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' "$uri" "$key" > "$list"
    fi
    apt-get update -q
    apt-get install -y -q --no-install-recommends -t bookworm-backports qemu-system-x86
fi
need=()
command -v lz4 >/dev/null || need+=(lz4)
command -v xz >/dev/null || need+=(xz-utils)
command -v strings >/dev/null || need+=(binutils)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
# veritysetup formats verity-protected test layers on the host side (never in the guest).
command -v veritysetup >/dev/null || need+=(cryptsetup-bin)
# diod serves Plan9 shares to the guest in the QEMU tests.
command -v diod >/dev/null || need+=(diod)
if [ ${#need[@]} -gt 0 ]; then
    apt-get install -y -q --no-install-recommends "${need[@]}"
fi
if ! command -v vhost-device-vsock >/dev/null && [ ! -x "$HOME/.cargo/bin/vhost-device-vsock" ]; then
    cargo install --locked vhost-device-vsock --version 0.3.0
fi
