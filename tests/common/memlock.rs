//! Starting a cgroup v2 sandbox on a machine that withholds `CAP_SYS_RESOURCE` from root.
//!
//! libcgroups 0.7.0 raises `RLIMIT_MEMLOCK` to 128 MiB (soft and hard) before it loads each
//! container's device program (`v2::devices::bpf::prog::bump_memlock_rlimit`) and fails the
//! Create when `setrlimit` fails, which it does without `CAP_SYS_RESOURCE` when the hard limit
//! is lower (runc makes the same call and ignores its failure). Since Linux 5.11 a BPF
//! program's memory is charged to its memory cgroup, not to `RLIMIT_MEMLOCK`, so on such a
//! kernel the raise changes nothing but whether the call succeeded.
//!
//! [`spawn`] starts a command from a fresh thread that first loads a seccomp filter (libseccomp)
//! making every *set* of `RLIMIT_MEMLOCK` (`prlimit64` with a new limit, `setrlimit`) return 0
//! without effect; reading the limit is untouched. The filter and `no_new_privs` are per thread,
//! so only that thread's child and its descendants (sandbox, agent, runtimes, containers)
//! carry them, the test process itself does not. Used only where it is needed: on cgroup v2,
//! when the hard limit is below 128 MiB and the capability is missing.

use std::io;
use std::process::{Child, Command};

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

/// What libcgroups asks for, in bytes.
const LIBCGROUPS_MEMLOCK: u64 = 128 << 20;
/// `CAP_SYS_RESOURCE`'s bit in `CapEff` (capability.h).
const CAP_SYS_RESOURCE: u32 = 24;

/// Whether this process holds `CAP_SYS_RESOURCE` (its effective set, /proc/self/status).
pub fn has_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// `RLIMIT_MEMLOCK`'s hard limit, in bytes (0 if it cannot be read).
pub fn memlock_hard_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK)
        .map_or(0, |(_, hard)| hard)
}

/// Whether this process could not raise `RLIMIT_MEMLOCK` to what libcgroups asks for.
pub fn raise_would_fail() -> bool {
    !has_cap_sys_resource() && memlock_hard_limit() < LIBCGROUPS_MEMLOCK
}

/// The filter: `prlimit64(_, RLIMIT_MEMLOCK, new != NULL, _)` and
/// `setrlimit(RLIMIT_MEMLOCK, _)` return 0; everything else is allowed.
fn filter() -> Result<ScmpFilterContext, libseccomp::error::SeccompError> {
    let memlock = u64::from(libc::RLIMIT_MEMLOCK);
    let mut f = ScmpFilterContext::new(ScmpAction::Allow)?;
    f.add_rule_conditional(
        ScmpAction::Errno(0),
        ScmpSyscall::from_name("prlimit64")?,
        &[
            ScmpArgCompare::new(1, ScmpCompareOp::Equal, memlock),
            ScmpArgCompare::new(2, ScmpCompareOp::NotEqual, 0),
        ],
    )?;
    f.add_rule_conditional(
        ScmpAction::Errno(0),
        ScmpSyscall::from_name("setrlimit")?,
        &[ScmpArgCompare::new(0, ScmpCompareOp::Equal, memlock)],
    )?;
    Ok(f)
}

/// `cmd.spawn()`, from a thread whose seccomp filter makes setting `RLIMIT_MEMLOCK` a
/// successful no-op (see the module's documentation).
pub fn spawn(cmd: &mut Command) -> io::Result<Child> {
    std::thread::scope(|s| {
        s.spawn(|| {
            filter()
                .and_then(|f| f.load())
                .map_err(|e| io::Error::other(format!("seccomp filter for RLIMIT_MEMLOCK: {e}")))?;
            cmd.spawn()
        })
        .join()
        .expect("the spawning thread panicked")
    })
}
