#!/usr/bin/env bash
# Fetches Debian's kernel (the ABI package the metapackage points at today), unpacks it
# under OUT (default out/kernel), extracts the uncompressed vmlinux (boots ~1 s faster than the
# bzImage under TCG) and keeps the modules the QEMU guest needs, and, under OUT/drivers, a
# small driver set for the install-drivers test (macvtap and what it depends on, which the
# guest does not load at boot). Cached: does nothing when OUT/vmlinux and OUT/drivers exist.
set -euo pipefail
out=${1:-out/kernel}
# The kernel metapackage: Debian's generic one carries 9p (Plan9 shares), the cloud one does not.
meta=${2:-linux-image-amd64}
[ -f "$out/vmlinux" ] && [ -d "$out/drivers" ] && [ -f "$out/.modules-unsigned" ] && exit 0
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
chmod 0755 "$work"
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get update -q >/dev/null 2>&1 || true
pkg=$(apt-cache depends "$meta" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$pkg" ] || { echo "cannot resolve $meta" >&2; exit 1; }
apt-get download "$pkg" >/dev/null
dpkg -x ./*.deb root
vmlinuz=$(ls root/boot/vmlinuz-*)
release=${vmlinuz##*/vmlinuz-}
# vmlinuz is a bzImage with a compressed payload (LZ4 in the cloud flavour, XZ in the generic
# one): find the frame magic and decompress from there (trailing bytes are ignored).
# XZ's six-byte magic is looked for first: LZ4's four bytes can occur by chance in XZ data.
magic_at() { LC_ALL=C grep -obUaP "$1" "$vmlinuz" | head -1 | cut -d: -f1 || true; }
offset=$(magic_at '\xfd7zXZ\x00')
if [ -n "$offset" ]; then
    tail -c +"$((offset + 1))" "$vmlinuz" | xz -dc --single-stream > vmlinux 2>/dev/null || true
else
    offset=$(magic_at '\x02\x21\x4c\x18')
    [ -n "$offset" ] || { echo "no XZ or LZ4 payload in $vmlinuz" >&2; exit 1; }
    tail -c +"$((offset + 1))" "$vmlinuz" | lz4 -dc -l > vmlinux 2>/dev/null || true
fi
file vmlinux | grep -q ELF || { echo "vmlinux extraction failed" >&2; exit 1; }
mkdir -p "$out"
modules="virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio virtio_pci vsock
vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport scsi_common scsi_mod virtio_scsi
sd_mod overlay reed_solomon dm-mod dm-bufio dm-verity libnvdimm nd_btt nd_pmem nfit nd_virtio
virtio_pmem pvpanic pvpanic-mmio virtio_blk ext4 crc32c_generic sha256_generic dm-crypt xts ecb virtio_net netfs fscache 9pnet 9pnet_fd 9p"
moddir="$out/modules/lib/modules/$release"
mkdir -p "$moddir"
# Each module and, transitively, what its .modinfo says it depends on (the package has no
# modules.dep; depmod makes that at install time).
while [ -n "$modules" ]; do
    next=""
    for m in $modules; do
        [ -f "$moddir/$m.ko" ] && continue
        f=$(find "root/lib/modules/$release" \( -name "$m.ko" -o -name "$m.ko.xz" \) | head -1)
        if [ -z "$f" ]; then
            # Module names use '_' and '-' interchangeably.
            alt=$(echo "$m" | tr '_-' '-_')
            f=$(find "root/lib/modules/$release" \( -name "$alt.ko" -o -name "$alt.ko.xz" \) | head -1)
            [ -n "$f" ] && m=$alt
        fi
        if [ -z "$f" ]; then
            echo "module $m not in $pkg (built in?)" >&2
            continue
        fi
        case "$f" in
            *.xz) xz -dc "$f" > "$moddir/$m.ko" ;;
            *) cp "$f" "$moddir/$m.ko" ;;
        esac
        deps=$(strings -a "$moddir/$m.ko" | sed -n 's/^depends=//p' | head -1 | tr ',' ' ')
        next="$next $deps"
    done
    modules=$next
done
# The boot modules lose their appended signatures: the kernel does not enforce them
# (MODULE_SIG_FORCE is off, and there is no lockdown without Secure Boot), so an unsigned module
# loads the same, only marking the kernel tainted, and under TCG hashing and verifying 6.6 MB of
# signed modules was a large part of the agent's share of the boot (issue 17, make bench-uvm).
# The trailer is: signature, struct module_signature (12 bytes: algo, hash, id_type,
# signer_len, key_id_len, 3 pad, big-endian sig_len), "~Module signature appended~\n" (28).
strip_signature() {
    local f=$1 size lens
    [ "$(tail -c 28 "$f" | head -c 27)" = "~Module signature appended~" ] || return 0
    size=$(stat -c %s "$f")
    lens=$(tail -c 40 "$f" | head -c 12 | od -An -tu1 | awk '{print $4 + $5 + $9*16777216 + $10*65536 + $11*256 + $12}')
    truncate -s $((size - 40 - lens)) "$f"
}
for f in "$moddir"/*.ko; do strip_signature "$f"; done
touch "$out/.modules-unsigned"
drivers="$out/drivers/lib/modules/$release/extra"
mkdir -p "$drivers"
for m in macvtap macvlan tap; do
    f=$(find "root/lib/modules/$release" \( -name "$m.ko" -o -name "$m.ko.xz" \) | head -1)
    [ -n "$f" ] || { echo "driver module $m not in $pkg" >&2; exit 1; }
    case "$f" in
        *.xz) xz -dc "$f" > "$drivers/$m.ko" ;;
        *) cp "$f" "$drivers/$m.ko" ;;
    esac
done
cp vmlinux "$out/vmlinux"
cp "$vmlinuz" "$out/vmlinuz"
echo "$release" > "$out/release"
echo "kernel $release in $out"
