//! `containerd-shim-gcs-v2`: containerd's runtime `io.containerd.gcs.v2`, which runs containers
//! in a QEMU utility VM through this agent (`gcs::host::shim`).

fn main() {
    gcs::host::shim::main();
}
