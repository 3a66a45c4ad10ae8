# gcs: build, test and benchmark. `make` builds out/gcs (static multi-call binary) and its
# out/init and out/vsockexec names; `make test` installs what it needs and runs every test.

TARGET    := x86_64-unknown-linux-gnu
RELEASE   := target/$(TARGET)/release
CARGO     ?= cargo

.PHONY: all build orderfile image test-image qemu-deps run run-containerd bench-containerd bench-uvm bench-storage test deps fmt-check clippy unit bench fuzz soak clean

all: build

build: deps
	$(CARGO) build --release --bin gcs --bin uvmboot --bin containerd-shim-gcs-v2
	mkdir -p out
	cp $(RELEASE)/gcs out/gcs
	ln -sf gcs out/init
	ln -sf gcs out/vsockexec
	ln -sf gcs out/install-drivers
	cp $(RELEASE)/uvmboot out/uvmboot
	cp $(RELEASE)/containerd-shim-gcs-v2 out/containerd-shim-gcs-v2
	@ls -l out/gcs

# Regenerates link/gcs.order, the order in which release builds lay out the agent's code
# (build.rs): out/gcs runs under callgrind through the uvm_exec and container_start benchmarks.
# Root; installs valgrind.
orderfile: build
	./scripts/orderfile.sh

# out/initrd.img and out/rootfs.tar.gz (spec §8.4); BASE=<tarball or cpio> is merged underneath.
image: build deps
	./scripts/mkimage.sh out/gcs out $(BASE)
	@ls -l out/initrd.img out/rootfs.tar.gz

# The main job: boot the agent in QEMU and run a busybox container through it.
run: test-image
	./out/uvmboot --timing run -- echo hello from the utility VM

# The third job (issue 18): a private containerd (Debian's, installed by `deps`) runs busybox in
# a utility VM through containerd-shim-gcs-v2 (`ctr run --runtime io.containerd.gcs.v2`).
run-containerd: test-image
	./scripts/run-containerd.sh out

# `ctr run --rm busybox true` through this runtime (a TCG VM per container) against containerd's
# runc shim in the same run, and where the time goes (issue 18). Root.
bench-containerd: deps test-image
	GCS_TEST_BINARY=$(CURDIR)/out/gcs $(CARGO) bench --bench containerd

# A test initrd: the image plus the kernel modules QEMU's virtio devices need and busybox.
test-image: build deps qemu-deps
	./scripts/fetch-kernel.sh out/kernel
	rm -rf out/test-extra && mkdir -p out/test-extra/bin
	cp -a out/kernel/modules/. out/test-extra/
	cp /bin/busybox out/test-extra/bin/busybox
	for a in $$(/bin/busybox --list); do [ -e out/test-extra/bin/$$a ] || ln -s busybox out/test-extra/bin/$$a; done
	./scripts/mkimage.sh out/gcs out/test-image "" out/test-extra
	cp out/test-image/initrd.img out/test-initrd.img
	@ls -l out/test-initrd.img out/kernel/vmlinux

qemu-deps:
	./scripts/install-qemu.sh

deps:
	./scripts/install-deps.sh

fmt-check:
	$(CARGO) fmt --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

unit:
	$(CARGO) test

# Everything, as root: unit tests, protocol vectors, bridge conformance against the real
# binary, reconnect, vsockexec, init as PID 1 in fresh namespaces, containers in a sandbox,
# trace replay, images, and the agent booted in QEMU.
test: deps fmt-check clippy build test-image unit

# Long fuzzing (issue 15): the in-process harness and the end-to-end fuzzer of the real binary,
# FUZZ_SECONDS each (default 30 minutes). `make test` runs both for 30 s. Findings are saved
# byte-exact under target/<triple>/tmp/fuzz-crashes and fuzz-agent-crashes; GCS_FUZZ_SEED replays
# a run.
FUZZ_SECONDS ?= 1800
fuzz: deps build
	GCS_FUZZ_SECONDS=$(FUZZ_SECONDS) $(CARGO) test --test fuzz -- --nocapture
	GCS_FUZZ_SECONDS=$(FUZZ_SECONDS) $(CARGO) test --test fuzz_agent -- --nocapture

# Soak (issue 15): SOAK_CYCLES container lifecycles and UVM execs against one agent, with fds,
# threads, RSS, mounts, cgroups and zombies every tenth of the run and their slopes. Root.
SOAK_CYCLES ?= 1000
soak: deps build
	GCS_SOAK_CYCLES=$(SOAK_CYCLES) $(CARGO) test --release --test soak -- --nocapture

# Needs root; installs Debian's crun (the reference of the container benchmark) and runc (one
# extra line).
bench: deps build test-image
	command -v crun >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q crun)
	command -v runc >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q runc)
	command -v veritysetup >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q cryptsetup-bin)
	GCS_TEST_BINARY=$(CURDIR)/out/gcs $(CARGO) bench --bench bridge_rtt
	GCS_TEST_BINARY=$(CURDIR)/out/gcs $(CARGO) bench --bench container_start
	GCS_TEST_BINARY=$(CURDIR)/out/gcs $(CARGO) bench --bench uvm_exec
	GCS_TEST_BINARY=$(CURDIR)/out/gcs $(CARGO) bench --bench policy

# The utility VM under TCG: boot milestones, container start, guest RSS, image sizes.
bench-uvm: image test-image
	GCS_TEST_BINARY=$(CURDIR)/out/gcs $(CARGO) bench --bench uvm_boot

# Storage requests: a loop-device VPMem layer on this machine and SCSI hot-add in QEMU. Root.
bench-storage: test-image
	GCS_TEST_BINARY=$(CURDIR)/out/gcs $(CARGO) bench --bench storage

clean:
	rm -rf out
	$(CARGO) clean
