#!/usr/bin/env bash
# Regenerates link/gcs.order, the order in which release builds lay out the agent's functions
# (build.rs). The agent runs under callgrind (valgrind) through the uvm_exec benchmark: start,
# NegotiateProtocol, idle, then UVM execs. The functions executed up to the NegotiateProtocol
# answer come first, then those executed after it; callgrind names them as the binary does
# (mangled), and the order keeps them without their build-specific parts (link/order-wrapper).
# The benchmark's own figures are meaningless under valgrind and are discarded.
# usage: scripts/orderfile.sh   (make orderfile; needs valgrind)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q && apt-get install -y -q --no-install-recommends valgrind
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcs=$PWD/target/x86_64-unknown-linux-gnu/release/gcs
# The agent exits when its bridge closes, which is when callgrind writes its last part; a
# background job's stdin would be /dev/null without the explicit redirection.
cat > "$work/agent.sh" <<WRAP
#!/bin/bash
exec 3<&0
valgrind -q --tool=callgrind --demangle=no --compress-strings=no --compress-pos=no \\
    --dump-after='*9negotiate6handle*' --callgrind-out-file="$work/cg.%p" "$gcs" "\$@" <&3 &
echo \$! >> "$work/pids"
wait
WRAP
chmod +x "$work/agent.sh"
GCS_TEST_BINARY=$work/agent.sh cargo bench --bench uvm_exec >/dev/null
# Each agent ends once the benchmark has gone; callgrind then writes its last part.
while read -r pid; do
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
done < "$work/pids"
part1=$(ls "$work"/cg.*.1)
final=${part1%.1}
# Without their build-specific parts (link/order-wrapper), first use first.
cat "$part1" "$final" | sed -n 's/^fn=//p' | grep -v '^0x' | link/order-wrapper --normalize \
    | awk '!seen[$0]++' > link/gcs.order
echo "link/gcs.order: $(wc -l < link/gcs.order) functions"
