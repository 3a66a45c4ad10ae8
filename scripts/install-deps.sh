#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian machine. Idempotent; runs
# non-interactively (CI has no stdin). Needs root for apt.
set -euo pipefail

need_apt=()
[ -x /bin/busybox ] || need_apt+=(busybox-static)
command -v unshare >/dev/null || need_apt+=(util-linux)
command -v cpio >/dev/null || need_apt+=(cpio)
command -v file >/dev/null || need_apt+=(file)
# Static C libraries linked into the agent: libseccomp (seccomp profiles), libelf and zlib
# (libbpf, built from its vendored source, for the cgroup v2 device program); make builds libbpf.
[ -f /usr/lib/x86_64-linux-gnu/libseccomp.a ] || need_apt+=(libseccomp-dev)
[ -f /usr/lib/x86_64-linux-gnu/libelf.a ] || need_apt+=(libelf-dev)
[ -f /usr/lib/x86_64-linux-gnu/libz.a ] || need_apt+=(zlib1g-dev)
command -v make >/dev/null || need_apt+=(make)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
# Debian's runc: the reference the differential container test compares the agent against.
command -v runc >/dev/null || need_apt+=(runc)
# Debian's containerd (with ctr and its runc shim): the containerd tests start a private one
# to drive containerd-shim-gcs-v2, and its runc shim is the benchmark's reference (issue 18).
command -v containerd >/dev/null || need_apt+=(containerd)
# protoc: the CRI client the containerd tests use (k8s-cri) compiles the CRI protos.
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
if [ ${#need_apt[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        rustup component add "$component"
    fi
done
