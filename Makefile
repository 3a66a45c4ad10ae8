# gcs: build, test and benchmark. `make` builds out/gcs (static multi-call binary) and its
# out/init and out/vsockexec names; `make test` installs what it needs and runs every test.

TARGET    := x86_64-unknown-linux-gnu
RELEASE   := target/$(TARGET)/release
CARGO     ?= cargo

.PHONY: all build image test deps fmt-check clippy unit bench clean

all: build

build:
	$(CARGO) build --release --bin gcs
	mkdir -p out
	cp $(RELEASE)/gcs out/gcs
	ln -sf gcs out/init
	ln -sf gcs out/vsockexec
	@ls -l out/gcs

# out/initrd.img and out/rootfs.tar.gz (spec §8.4); BASE=<tarball or cpio> is merged underneath.
image: build deps
	./scripts/mkimage.sh out/gcs out $(BASE)
	@ls -l out/initrd.img out/rootfs.tar.gz

deps:
	./scripts/install-deps.sh

fmt-check:
	$(CARGO) fmt --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

unit:
	$(CARGO) test

# Everything, as root: unit tests, protocol vectors, bridge conformance against the real
# binary, reconnect, vsockexec, init as PID 1 in fresh namespaces.
test: deps fmt-check clippy build unit

# Needs root; installs Debian's runc as the reference for the container benchmark.
bench: deps build
	command -v runc >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q runc)
	$(CARGO) bench --bench bridge_rtt
	$(CARGO) bench --bench container_start

clean:
	rm -rf out
	$(CARGO) clean
