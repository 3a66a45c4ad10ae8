#!/usr/bin/env bash
# Regenerates link/gcs.order, the order in which release builds lay out the agent's functions
# (build.rs). The agent runs under callgrind (valgrind) in two benchmarks (GCS_TEST_WRAPPER):
# uvm_exec (start, NegotiateProtocol, idle, UVM execs), then container_start (container
# lifecycles and execs, in a sandbox on cgroup v2 and v1). The order is the functions run up to
# the first NegotiateProtocol answer, then those run after it, then the containers' others;
# callgrind names them as the binary does (mangled); the benchmarks run out/gcs, the build that
# `make build` makes (GCS_TEST_BINARY), so those are the shipped binary's names
# (link/order-wrapper maps them to another build's). The benchmarks' own figures are
# meaningless under valgrind and discarded.
# Root (the container benchmark), crun and runc installed.
# usage: scripts/orderfile.sh   (make orderfile, after make build; installs valgrind if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q && apt-get install -y -q --no-install-recommends valgrind
}
work=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
# The agent's own last part is written when it exits (its bridge closed), which a sandboxed
# agent may not do (its sandbox ends with SIGKILL): callgrind also writes a part every 10^6 basic
# blocks.
# Each agent's parts are named by a serial of its own (a sandboxed agent's pid is its sandbox's).
cat > "$work/agent.sh" <<WRAP
#!/bin/bash
exec 3<&0
export GCS_PROFILE_RUN=\$(date +%s%N)
echo "\$GCS_PROFILE_RUN" >> "$work/runs"
exec valgrind -q --tool=callgrind --demangle=no --compress-strings=no --compress-pos=no \\
    --dump-after='*9negotiate6handle*' --dump-every-bb=1000000 \\
    --callgrind-out-file="$work/cg.%q{GCS_PROFILE_RUN}" "\$@" <&3
WRAP
chmod +x "$work/agent.sh"
export GCS_TEST_WRAPPER=$work/agent.sh GCS_TEST_BINARY=$PWD/out/gcs
# A benchmark's end closes its agent's bridge; the agent exits and callgrind writes its last part.
cargo bench --bench uvm_exec
GCS_BENCH_RUNS=10 cargo bench --bench container_start
while pgrep -f "callgrind-out-file=$work/" >/dev/null; do sleep 0.2; done
# Agent by agent in the order they started, each one's parts in the order written.
while read -r run; do
    ls "$work" | grep -E "^cg\.$run\.[0-9]+$" | sort -t. -k3,3n | sed "s|^|$work/|"
    [ -e "$work/cg.$run" ] && echo "$work/cg.$run"
done < "$work/runs" | xargs cat | sed -n 's/^fn=//p' | grep -v '^0x' | awk '!seen[$0]++' \
    > link/gcs.order
echo "link/gcs.order: $(wc -l < link/gcs.order) functions"
