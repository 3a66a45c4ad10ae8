#!/usr/bin/env bash
# Fetches Debian's cloud kernel (the ABI package the metapackage points at today), unpacks it
# under OUT (default out/kernel), extracts the uncompressed vmlinux (boots ~1 s faster than the
# bzImage under TCG) and keeps the modules the QEMU guest needs. Cached: does nothing when
# OUT/vmlinux exists.
set -euo pipefail
out=${1:-out/kernel}
[ -f "$out/vmlinux" ] && exit 0
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
chmod 0755 "$work"
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get update -q >/dev/null 2>&1 || true
meta=linux-image-cloud-amd64
pkg=$(apt-cache depends "$meta" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$pkg" ] || { echo "cannot resolve $meta" >&2; exit 1; }
apt-get download "$pkg" >/dev/null
dpkg -x ./*.deb root
vmlinuz=$(ls root/boot/vmlinuz-*)
release=${vmlinuz##*/vmlinuz-}
# vmlinuz is a bzImage with an LZ4 payload: find the LZ4 frame magic and decompress from there.
offset=$(grep -obUaP '\x02\x21\x4c\x18' "$vmlinuz" | head -1 | cut -d: -f1)
[ -n "$offset" ] || { echo "no LZ4 payload in $vmlinuz" >&2; exit 1; }
tail -c +"$((offset + 1))" "$vmlinuz" | lz4 -dc -l > vmlinux 2>/dev/null || true
file vmlinux | grep -q ELF || { echo "vmlinux extraction failed" >&2; exit 1; }
mkdir -p "$out"
modules="virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio virtio_pci vsock
vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport scsi_common scsi_mod virtio_scsi
sd_mod overlay reed_solomon dm-mod dm-bufio dm-verity libnvdimm nd_btt nd_pmem nfit nd_virtio
virtio_pmem pvpanic pvpanic-mmio virtio_blk"
moddir="$out/modules/lib/modules/$release"
mkdir -p "$moddir"
for m in $modules; do
    f=$(find "root/lib/modules/$release" -name "$m.ko" -o -name "$m.ko.xz" | head -1)
    if [ -z "$f" ]; then
        echo "module $m not in $pkg (built in?)" >&2
        continue
    fi
    case "$f" in
        *.xz) xz -dc "$f" > "$moddir/$m.ko" ;;
        *) cp "$f" "$moddir/" ;;
    esac
done
cp vmlinux "$out/vmlinux"
cp "$vmlinuz" "$out/vmlinuz"
echo "$release" > "$out/release"
echo "kernel $release in $out"
