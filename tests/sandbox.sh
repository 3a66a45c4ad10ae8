#!/bin/sh
# Runs a command as PID 1 of fresh mount, pid and cgroup namespaces, with a private /run and a
# private cgroupfs whose root, in every hierarchy, is a cgroup made for this run:
#   <hierarchy mount>/<our current cgroup>/gcs-sandbox-<name>
# Each such directory is written, one per line, to the file named by $GCS_SANDBOX_RECORD so
# the caller can inspect and remove them. The command dies with the sandbox (--kill-child).
# With $GCS_SANDBOX_BLOCKDEVS ("pmem0=7:3 pmem1=7:4", "sev=c:1:3" for a character device), /dev is private too: a tmpfs with the
# usual character devices, /dev/pts and /dev/shm, and those block nodes (loop devices standing
# in for the guest's devices).
# With $GCS_SANDBOX_NET set, the network namespace is fresh too (only `lo`), with its own
# sysfs at /sys.
# With $GCS_SANDBOX_CGROUP=v2, only the cgroup2 hierarchy is made and mounted, directly at
# /sys/fs/cgroup (no tmpfs, no v1 hierarchies): runtimes inside see a unified cgroup v2 host even
# when this machine is hybrid (v1 controllers plus a cgroup2 at /sys/fs/cgroup/unified).
# usage: sandbox.sh NAME COMMAND [ARGS...]
set -eu
name=$1
shift
: "${GCS_SANDBOX_RECORD:?}"
: > "$GCS_SANDBOX_RECORD"
cgroup_mode=${GCS_SANDBOX_CGROUP:-}
case "$cgroup_mode" in "" | v2) ;; *) echo "sandbox.sh: GCS_SANDBOX_CGROUP is v2 or unset" >&2; exit 2 ;; esac
mounts=""
while read -r _src mnt fstype opts _rest; do
    case "$fstype" in cgroup | cgroup2) ;; *) continue ;; esac
    case "$mnt" in /sys/fs/cgroup*) ;; *) continue ;; esac
    [ "$cgroup_mode" = v2 ] && [ "$fstype" != cgroup2 ] && continue
    if [ "$fstype" = cgroup2 ]; then
        cur=$(sed -n 's/^0:://p' /proc/self/cgroup)
        mopts=""
    else
        mopts=$(echo "$opts" | tr ',' '\n' | grep -v -E '^(rw|ro|relatime|noatime|nosuid|nodev|noexec|xattr|clone_children|cpuset_v2_mode|noprefix)$' | grep -v -E '^(release_agent)=' | paste -sd, -)
        first=${mopts%%,*}
        cur=$(awk -F: -v c="$first" 'index("," $2 ",", "," c ",") {print $3; exit}' /proc/self/cgroup)
    fi
    dir="$mnt${cur%/}/gcs-sandbox-$name"
    mkdir -p "$dir"
    if [ -f "$dir/cpuset.cpus" ]; then
        cat "$dir/../cpuset.cpus" > "$dir/cpuset.cpus"
        cat "$dir/../cpuset.mems" > "$dir/cpuset.mems"
    fi
    echo $$ > "$dir/cgroup.procs"
    echo "$dir" >> "$GCS_SANDBOX_RECORD"
    [ "$cgroup_mode" = v2 ] && mnt=/sys/fs/cgroup
    mounts="$mounts $mnt:$fstype:$mopts"
done < /proc/self/mounts
if [ "$cgroup_mode" = v2 ] && [ -z "$mounts" ]; then
    echo "sandbox.sh: GCS_SANDBOX_CGROUP=v2 but this machine mounts no cgroup2 under /sys/fs/cgroup" >&2
    exit 2
fi
export GCS_SANDBOX_MOUNTS="$mounts" GCS_SANDBOX_CGROUP="$cgroup_mode"
net=""
[ -n "${GCS_SANDBOX_NET:-}" ] && net="--net"
exec unshare --mount --pid --fork --kill-child --cgroup $net --propagation private --mount-proc sh -c '
    set -eu
    if [ -n "${GCS_SANDBOX_NET:-}" ]; then
        mount -t sysfs sysfs /sys
        ip link set lo up
    fi
    mount -t tmpfs -o mode=0755 tmpfs /run
    if [ "$GCS_SANDBOX_CGROUP" = v2 ]; then
        # Unmount the copies of the hierarchies of this machine (in this mount namespace only):
        # mountinfo then shows only the cgroup2 mounted below.
        umount -R /sys/fs/cgroup 2>/dev/null || true
    else
        mount -t tmpfs -o mode=0755 cgroup_root /sys/fs/cgroup
    fi
    for m in $GCS_SANDBOX_MOUNTS; do
        mnt=${m%%:*}; rest=${m#*:}; fstype=${rest%%:*}; opts=${rest#*:}
        mkdir -p "$mnt"
        if [ -n "$opts" ]; then mount -t "$fstype" -o "$opts" "$fstype" "$mnt"
        else mount -t "$fstype" "$fstype" "$mnt"; fi
    done
    if [ -n "${GCS_SANDBOX_BLOCKDEVS:-}" ]; then
        mkdir /run/.dev
        mount -t tmpfs -o mode=0755 dev /run/.dev
        for n in null zero full random urandom tty ptmx; do cp -a "/dev/$n" /run/.dev/; done
        for d in pts shm mqueue; do
            [ -d "/dev/$d" ] || continue
            mkdir -p "/run/.dev/$d"
            mount --rbind "/dev/$d" "/run/.dev/$d"
        done
        ln -s /proc/self/fd /run/.dev/fd
        for b in $GCS_SANDBOX_BLOCKDEVS; do
            mm=${b#*=}
            kind=b
            case "$mm" in c:*) kind=c; mm=${mm#c:} ;; esac
            mknod "/run/.dev/${b%%=*}" "$kind" "${mm%%:*}" "${mm#*:}"
        done
        mount --move /run/.dev /dev
        rmdir /run/.dev
    fi
    unset GCS_SANDBOX_MOUNTS GCS_SANDBOX_RECORD GCS_SANDBOX_BLOCKDEVS GCS_SANDBOX_NET GCS_SANDBOX_CGROUP
    exec "$@"' sh "$@"
