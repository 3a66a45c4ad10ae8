#!/usr/bin/env bash
# Builds the boot images from the static multi-call binary:
#   <out>/initrd.img      gzip'd newc cpio, every entry owned by 0:0
#   <out>/rootfs.tar.gz   the same tree as a tarball
# Layout (spec §8.4): /init is the binary; /bin/gcs and /bin/vsockexec name it too; /info holds
# build facts; the directories the agent needs exist. An optional BASE (tarball, cpio or gzip'd
# cpio) is unpacked underneath first, as the original's catcpio does.
# Reproducible: sorted entries, fixed mtimes (SOURCE_DATE_EPOCH, default: the commit's date),
# sequential inode numbers, no gzip timestamps.
# usage: mkimage.sh BINARY OUTDIR [BASE] [EXTRA_DIR]
#   EXTRA_DIR, when given, is copied over the tree (test images add kernel modules this way).
set -euo pipefail
bin=$1
out=$2
base=${3:-}
extra=${4:-}
here=$(cd "$(dirname "$0")/.." && pwd)
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct 2>/dev/null || echo 0)}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"

if [ -n "$base" ]; then
    case "$(file -b --mime-type "$base")" in
        application/gzip | application/x-gzip)
            if gzip -dc "$base" | head -c 6 | grep -q '^070701'; then
                (cd "$stage" && gzip -dc "$base" | cpio -id --quiet --no-absolute-filenames)
            else
                tar -xzf "$base" -C "$stage"
            fi ;;
        application/x-cpio) (cd "$stage" && cpio -id --quiet --no-absolute-filenames < "$base") ;;
        *) tar -xf "$base" -C "$stage" ;;
    esac
fi

for d in bin sbin dev proc sys run tmp etc var lib info; do
    mkdir -p "$stage/$d"
done
install -m 0755 "$bin" "$stage/init"
ln -sfn ../init "$stage/bin/gcs"
ln -sfn ../init "$stage/bin/vsockexec"
ln -sfn ../init "$stage/bin/install-drivers"
git -C "$here" rev-parse HEAD > "$stage/info/gcs.commit" 2>/dev/null || echo unknown > "$stage/info/gcs.commit"
git -C "$here" rev-parse --abbrev-ref HEAD > "$stage/info/gcs.branch" 2>/dev/null || echo unknown > "$stage/info/gcs.branch"
date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ > "$stage/info/tar.date"
if [ -n "$extra" ]; then
    cp -a "$extra/." "$stage/"
fi

find "$stage" -exec touch -h -d "@$epoch" {} +
mkdir -p "$out"
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -n -9 > "$out/initrd.img.tmp"
tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --format=gnu -C "$stage" -cf - . | gzip -n -9 > "$out/rootfs.tar.gz.tmp"
mv "$out/initrd.img.tmp" "$out/initrd.img"
mv "$out/rootfs.tar.gz.tmp" "$out/rootfs.tar.gz"
