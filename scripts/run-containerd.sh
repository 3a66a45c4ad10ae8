#!/usr/bin/env bash
# `make run-containerd`: a private containerd (its own root, state and sockets under a temporary
# directory, in a private mount namespace with its own /run) with containerd-shim-gcs-v2 on its
# PATH; a busybox OCI image built here (no registry) and imported with ctr; then
#   ctr run --rm --runtime io.containerd.gcs.v2 <image> <id> <command...>
# (FIFOs under the temporary directory: --fifo-dir) prints the container's output from a QEMU utility VM. Everything is removed on exit.
# Usage: run-containerd.sh <dir holding containerd-shim-gcs-v2> [command...]
set -euo pipefail
shim_dir=$(cd "$1" && pwd); shift
[ $# -gt 0 ] || set -- echo hello from a container in the utility VM
[ -x "$shim_dir/containerd-shim-gcs-v2" ] || { echo "no $shim_dir/containerd-shim-gcs-v2" >&2; exit 1; }

work=$(mktemp -d /tmp/gcs-containerd.XXXXXX)
pid=
cleanup() {
    # Shims and VMs left by a failure first (their command lines name $work), then containerd.
    pkill -KILL -f -- "$work/" 2>/dev/null || true
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# The image: Debian's static busybox with a link per applet, as one uncompressed layer.
tree=$work/busybox
mkdir -p "$tree"/{bin,etc,proc,sys,dev,tmp,run,root} "$work/oci/blobs/sha256"
cp /bin/busybox "$tree/bin/busybox"
for a in $(/bin/busybox --list); do [ -e "$tree/bin/$a" ] || ln -s busybox "$tree/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$tree/etc/passwd"
echo 'root:x:0:' > "$tree/etc/group"
blob() { # file -> moves it into blobs/, prints "digest size"
    local d s
    d=$(sha256sum "$1" | cut -d' ' -f1); s=$(stat -c %s "$1")
    mv "$1" "$work/oci/blobs/sha256/$d"; echo "sha256:$d $s"
}
tar --numeric-owner --owner=0 --group=0 -C "$tree" -cf "$work/layer.tar" .
read -r layer layer_size < <(blob "$work/layer.tar")
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
    "$layer" > "$work/config.json"
read -r config config_size < <(blob "$work/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
    "$config" "$config_size" "$layer" "$layer_size" > "$work/manifest.json"
read -r manifest manifest_size < <(blob "$work/manifest.json")
image=docker.io/library/busybox:gcs
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"gcs"}}]}' \
    "$manifest" "$manifest_size" "$image" > "$work/oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$work/oci/oci-layout"
tar -C "$work/oci" -cf "$work/image.tar" .

# The private containerd; the CRI plugin is not needed for ctr.
cat > "$work/config.toml" <<TOML
version = 2
root = "$work/root"
state = "$work/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$work/containerd.sock"
[ttrpc]
  address = "$work/containerd.sock.ttrpc"
TOML
PATH="$shim_dir:$PATH" unshare --mount --propagation private sh -c \
    'mount -t tmpfs -o mode=755 tmpfs /run && mkdir -p /run/containerd && exec containerd --config "$1"' \
    containerd "$work/config.toml" > "$work/containerd.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -S "$work/containerd.sock" ] && break; sleep 0.1; done
ctr() { command ctr --address "$work/containerd.sock" --namespace gcs "$@"; }
ctr images import "$work/image.tar" >/dev/null
# ctr's stderr is also kept (tee), to tell ctr's own failure from the container's exit status.
set +e
{ ctr run --rm --fifo-dir "$work/fifo" --runtime io.containerd.gcs.v2 "$image" "gcs-demo-$$" "$@" \
    2>&1 1>&3 3>&- | tee "$work/ctr.err" >&2; } 3>&1
status=${PIPESTATUS[0]}
set -e
# containerd's log only when ctr itself failed, not for the container's own exit status.
if grep -q '^ctr: ' "$work/ctr.err" 2>/dev/null; then
    echo "--- containerd's log:" >&2; grep -v 'loading plugin' "$work/containerd.log" | tail -30 >&2
fi
exit $status
