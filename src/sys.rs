//! The only module allowed to use `unsafe`: one small, safe wrapper per raw syscall or ioctl
//! that `nix` does not cover. Each block states the invariants it relies on.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::errno::Errno;

/// `RNDADDENTROPY` = `_IOW('R', 0x03, int[2])`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;

/// Feeds `data` into the kernel's entropy pool and credits it (`bytes × 8` bits), as the
/// original init does with the bytes the host sends on port 1.
pub fn add_entropy(random: BorrowedFd<'_>, data: &[u8]) -> Result<(), Errno> {
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let len = i32::try_from(data.len()).map_err(|_| Errno::EINVAL)?;
    let bits = len.checked_mul(8).ok_or(Errno::EINVAL)?;
    let mut info = Vec::with_capacity(8 + data.len());
    info.extend_from_slice(&bits.to_ne_bytes());
    info.extend_from_slice(&len.to_ne_bytes());
    info.extend_from_slice(data);
    // The kernel copies buf_size bytes after the header; pad to a whole u32 so it never reads
    // past our allocation.
    while info.len() % 4 != 0 {
        info.push(0);
    }
    // SAFETY: `info` is a live, initialised buffer laid out as `struct rand_pool_info` whose
    // `buf_size` (len) never exceeds the bytes that follow the 8-byte header. The kernel only
    // reads from it during the call. The fd is borrowed, so it stays open for the call.
    let rc = unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) };
    Errno::result(rc).map(drop)
}

/// Sets `IFF_UP | IFF_RUNNING` on the named interface through `SIOCSIFFLAGS` on `socket`
/// (any AF_INET/AF_INET6 datagram socket).
pub fn set_link_up(socket: BorrowedFd<'_>, name: &str) -> Result<(), Errno> {
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return Err(Errno::EINVAL);
    }
    // SAFETY: `ifreq` is a plain C struct for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    // SAFETY: `req` is a valid, NUL-terminated `ifreq` that lives across the call; the kernel
    // writes the flags union member, which is within the struct.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    Errno::result(rc)?;
    let up =
        libc::c_short::try_from(libc::IFF_UP | libc::IFF_RUNNING).map_err(|_| Errno::EINVAL)?;
    // SAFETY: SIOCGIFFLAGS just initialised the `ifru_flags` member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= up };
    // SAFETY: as above; the kernel only reads `req`.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    Errno::result(rc).map(drop)
}

/// Asks whether the kernel can query BPF device-cgroup programs on the cgroup directory `dir`
/// (`bpf(BPF_PROG_QUERY, attach_type = BPF_CGROUP_DEVICE)`). `ENOSYS` or `EINVAL` mean no BPF
/// device cgroup, which makes cgroup v2 unusable for containers.
pub fn bpf_query_cgroup_device(dir: BorrowedFd<'_>) -> Result<(), Errno> {
    const BPF_PROG_QUERY: libc::c_long = 16;
    const BPF_CGROUP_DEVICE: u32 = 6;
    // union bpf_attr, query member: target_fd u32, attach_type u32, query_flags u32,
    // attach_flags u32, prog_ids u64, prog_cnt u32, ... The rest stays zero.
    let mut attr = [0u32; 32];
    attr[0] = u32::try_from(dir.as_raw_fd()).map_err(|_| Errno::EBADF)?;
    attr[1] = BPF_CGROUP_DEVICE;
    let size = libc::c_uint::try_from(std::mem::size_of_val(&attr)).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `attr` is a zero-initialised, 128-byte buffer (larger than the kernel's query
    // struct, with zero tail as the kernel requires). prog_ids is NULL and prog_cnt 0, so the
    // kernel writes only the counters inside the buffer, which outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_QUERY, attr.as_mut_ptr(), size) };
    Errno::result(rc).map(drop)
}

/// Spawns `cmd` as a new session leader with all signals unblocked: the child side of PID 1's
/// launch. Returns the child's pid; the caller's reaper collects it.
pub fn spawn_session_leader(cmd: &mut Command) -> io::Result<u32> {
    // SAFETY: the closure runs in the forked child before exec and only calls the
    // async-signal-safe functions sigprocmask and setsid through libc, with no allocation.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // Dropping a std Child never waits for it; PID 1's reap loop owns the status.
    Ok(child.id())
}

/// `fork()` for the single-threaded roles (`vsockexec -r`). The parent gets the child's pid;
/// the child gets `None`.
pub fn fork_single_threaded() -> Result<Option<nix::unistd::Pid>, Errno> {
    // SAFETY: only called from roles chosen in `main` before any thread is started, so the
    // process is single-threaded and the child may run arbitrary code.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Some(child)),
        nix::unistd::ForkResult::Child => Ok(None),
    }
}

/// Makes the calling process the last to get the CPU (nice 19, setpriority(2)): for init's
/// background module loading, which must not slow the agent's start on a one-CPU VM.
pub fn lowest_priority() {
    // SAFETY: setpriority takes plain integers (0 = the calling process) and no pointers.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

/// Registers an owned fd with the tokio reactor.
pub fn register_async_fd(
    fd: std::os::fd::OwnedFd,
) -> io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: `OwnedFd` owns an open descriptor that cannot be closed or replaced while the
    // `AsyncFd` owns it, and its `as_raw_fd` always returns that same descriptor.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(io::Error::from)
}

/// Leaves the process at once, without destructors or stdio flushing: for a forked child
/// whose exec failed.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is async-signal-safe and takes no pointers.
    unsafe { libc::_exit(code) }
}

/// What to run in a child started by [`spawn`].
#[derive(Debug)]
pub struct SpawnRequest {
    /// Resolved path of the program.
    pub program: std::ffi::CString,
    pub argv: Vec<std::ffi::CString>,
    pub envp: Vec<std::ffi::CString>,
    pub cwd: Option<std::ffi::CString>,
    /// The child's fds 0, 1 and 2; `None` leaves that fd closed in the child.
    pub stdio: [Option<std::os::fd::RawFd>; 3],
    /// Start a new session and make fd 0 (a pty slave) the controlling terminal.
    pub controlling_tty: bool,
}

/// Where in the child a [`spawn`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnStage {
    Fork,
    Setup,
    Chdir,
    Exec,
}

/// Starts `req.program` as a child of the agent and returns its pid.
///
/// Without a controlling terminal this is glibc's `posix_spawn(3)`: a `CLONE_VM|CLONE_VFORK`
/// child that shares the agent's memory until it execs, so nothing of the agent's address space
/// is copied (a UVM exec's fork→exec took 364 µs with `fork`, issue 17). With one, it is
/// [`fork_exec`], since making a terminal controlling (`TIOCSCTTY`) has no spawn file action.
/// The child's exit belongs to the agent's reaper.
///
/// # Errors
/// The stage that failed, its errno, and the pid of a child that was started but failed before
/// exec (forked children only; it exits 127). `posix_spawn` reports one errno for the clone,
/// the set-up, the `chdir` and the exec alike: EAGAIN and ENOMEM are put down to the clone, the
/// rest to the `chdir` when the working directory cannot be opened as a directory here, else to
/// the exec. A child whose exec failed is reaped by glibc, or first by the agent's reaper (an
/// unclaimed exit, dropped after 10 s).
pub fn spawn(req: &SpawnRequest) -> Result<i32, (SpawnStage, Errno, Option<i32>)> {
    if req.controlling_tty {
        return fork_exec(req);
    }
    posix_spawn(req)
}

/// Frees a `posix_spawn` attribute set and file-action list on every path out.
struct SpawnAttributes {
    attr: libc::posix_spawnattr_t,
    actions: libc::posix_spawn_file_actions_t,
}

impl Drop for SpawnAttributes {
    fn drop(&mut self) {
        // SAFETY: both were initialised by `posix_spawn(req)` before this value was built and
        // are destroyed exactly once, here.
        unsafe {
            libc::posix_spawnattr_destroy(&mut self.attr);
            libc::posix_spawn_file_actions_destroy(&mut self.actions);
        }
    }
}

fn posix_spawn(req: &SpawnRequest) -> Result<i32, (SpawnStage, Errno, Option<i32>)> {
    let argv = pointer_array(&req.argv);
    let envp = pointer_array(&req.envp);
    // The sources, moved out of the 0..=2 range (close-on-exec) so that no dup2 onto 0..=2
    // clobbers another source; our copies close when `moved` drops.
    let mut moved: [Option<std::os::fd::OwnedFd>; 3] = [None, None, None];
    for (slot, fd) in moved.iter_mut().zip(req.stdio.iter()) {
        if let Some(fd) = fd {
            // SAFETY: F_DUPFD_CLOEXEC only reads the integer descriptor; an invalid one is
            // reported as EBADF.
            let new = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3) };
            if new < 0 {
                return Err((SpawnStage::Setup, Errno::last(), None));
            }
            // SAFETY: `new` was just returned by fcntl and is owned by nobody else.
            *slot = Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(new) });
        }
    }
    // SAFETY: zeroed memory is a valid argument for the two init functions, which fully
    // initialise both (glibc's never fail); `SpawnAttributes` destroys them.
    let mut spawn = unsafe {
        let mut spawn = SpawnAttributes {
            attr: std::mem::zeroed(),
            actions: std::mem::zeroed(),
        };
        libc::posix_spawnattr_init(&mut spawn.attr);
        libc::posix_spawn_file_actions_init(&mut spawn.actions);
        spawn
    };
    let setup = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err((SpawnStage::Setup, Errno::from_raw(rc), None))
        }
    };
    // SAFETY: every call gets the initialised attribute set or file-action list, sigsets that
    // live on this stack frame and NUL-terminated strings owned by `req`, which outlive the
    // `posix_spawn` call that reads them (glibc copies the chdir path into the action).
    unsafe {
        for (target, fd) in (0..).zip(moved.iter()) {
            setup(match fd {
                Some(fd) => libc::posix_spawn_file_actions_adddup2(
                    &mut spawn.actions,
                    fd.as_raw_fd(),
                    target,
                ),
                None => libc::posix_spawn_file_actions_addclose(&mut spawn.actions, target),
            })?;
        }
        if let Some(cwd) = &req.cwd {
            setup(libc::posix_spawn_file_actions_addchdir_np(
                &mut spawn.actions,
                cwd.as_ptr(),
            ))?;
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        setup(libc::posix_spawnattr_setsigmask(&mut spawn.attr, &empty))?;
        setup(libc::posix_spawnattr_setsigdefault(
            &mut spawn.attr,
            spawn_signal_defaults(),
        ))?;
        let flags = libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
        setup(libc::posix_spawnattr_setflags(
            &mut spawn.attr,
            libc::c_short::try_from(flags).unwrap_or(0),
        ))?;
    }
    let mut pid: libc::pid_t = 0;
    // SAFETY: the pointer arrays are NULL-terminated and point into `req`'s CStrings, which
    // outlive the call; `spawn` holds an initialised attribute set and file-action list.
    let rc = unsafe {
        libc::posix_spawn(
            &mut pid,
            req.program.as_ptr(),
            &spawn.actions,
            &spawn.attr,
            argv.as_ptr().cast(),
            envp.as_ptr().cast(),
        )
    };
    if rc == 0 {
        return Ok(pid);
    }
    let errno = Errno::from_raw(rc);
    let cwd_fails = req.cwd.as_ref().is_some_and(|cwd| {
        nix::fcntl::open(
            cwd.as_c_str(),
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map(|fd| {
            // SAFETY: `fd` was just opened here and is closed once.
            drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
        })
        .is_err()
    });
    let stage = if matches!(errno, Errno::EAGAIN | Errno::ENOMEM) {
        // clone(2) itself failed: no child was made.
        SpawnStage::Fork
    } else if cwd_fails {
        SpawnStage::Chdir
    } else {
        SpawnStage::Exec
    };
    Err((stage, errno, None))
}

/// The signals a spawned child starts with at their default action (`POSIX_SPAWN_SETSIGDEF`):
/// every signal but those the agent ignores, and SIGPIPE, which Rust ignores in its own
/// processes (an ignored disposition survives exec). Worked out once, at the first spawn.
///
/// The result is what glibc's child would reach on its own (it resets every handled signal and
/// keeps ignored ones), but a signal named here costs the child one `rt_sigaction` instead of
/// a query and a set: the parent waits for about 64 system calls fewer per spawn (glibc 2.36,
/// `spawni.c`).
fn spawn_signal_defaults() -> &'static libc::sigset_t {
    struct Set(libc::sigset_t);
    static SET: std::sync::OnceLock<Set> = std::sync::OnceLock::new();
    &SET.get_or_init(|| Set(signals_not_ignored())).0
}

/// Every signal (glibc's internal ones aside) but those ignored now, SIGPIPE excepted.
fn signals_not_ignored() -> libc::sigset_t {
    // SAFETY: `set` and `old` are valid, writable values on this frame; sigfillset leaves out
    // glibc's internal signals; a null new action only reads the current one.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        for sig in 1..=libc::SIGRTMAX() {
            let mut old: libc::sigaction = std::mem::zeroed();
            if sig != libc::SIGPIPE
                && libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction == libc::SIG_IGN
            {
                libc::sigdelset(&mut set, sig);
            }
        }
        set
    }
}

/// A NULL-terminated array of pointers into `strings`, for `execve`-style calls.
fn pointer_array(strings: &[std::ffi::CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Forks and execs `req.program` with only raw, async-signal-safe libc calls in the child
/// (no allocation, no locks), which is what makes forking the multi-threaded agent safe.
/// Everything the child needs is prepared before the fork. Failures in the child are
/// reported through a close-on-exec pipe. The child's exit belongs to the agent's reaper,
/// including when exec fails (the child then exits 127).
fn fork_exec(req: &SpawnRequest) -> Result<i32, (SpawnStage, Errno, Option<i32>)> {
    let argv = pointer_array(&req.argv);
    let envp = pointer_array(&req.envp);
    let cwd = req.cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| (SpawnStage::Fork, e, None))?;
    let write_fd = report_write.as_raw_fd();
    let stdio = req.stdio;
    let tty = req.controlling_tty;
    let program = req.program.as_ptr();
    // SAFETY: after fork the child runs only the async-signal-safe libc calls below on memory
    // prepared before the fork (argv/envp pointer arrays, CStrings, plain integers), then execs
    // or `_exit`s; it never returns into Rust code, allocates or takes a lock.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err((SpawnStage::Fork, Errno::last(), None));
    }
    if pid == 0 {
        // SAFETY: see above; every call is async-signal-safe and operates on valid pointers.
        unsafe {
            let fail = |stage: i32| -> ! {
                let report = [stage, *libc::__errno_location()];
                libc::write(
                    write_fd,
                    report.as_ptr().cast(),
                    std::mem::size_of_val(&report),
                );
                libc::_exit(127)
            };
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            // Rust ignores SIGPIPE in its own processes; an ignored disposition survives exec.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            if tty && libc::setsid() < 0 {
                fail(1);
            }
            // Move sources out of the 0..=2 range first so that no dup2 clobbers another source.
            let mut moved = [-1; 3];
            for (i, fd) in stdio.iter().enumerate() {
                if let Some(fd) = fd {
                    moved[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3);
                    if moved[i] < 0 {
                        fail(1);
                    }
                }
            }
            for (target, fd) in (0..).zip(moved.iter()) {
                if *fd >= 0 {
                    if libc::dup2(*fd, target) < 0 {
                        fail(1);
                    }
                } else {
                    libc::close(target);
                }
            }
            if tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                fail(1);
            }
            if !cwd.is_null() && libc::chdir(cwd) < 0 {
                fail(2);
            }
            libc::execve(program, argv.as_ptr(), envp.as_ptr());
            fail(3)
        }
    }
    drop(report_write);
    let mut report = [0u8; 8];
    let mut file = std::fs::File::from(report_read);
    let n = std::io::Read::read(&mut file, &mut report).unwrap_or(0);
    if n == 8 {
        let stage = i32::from_ne_bytes([report[0], report[1], report[2], report[3]]);
        let errno = Errno::from_raw(i32::from_ne_bytes([
            report[4], report[5], report[6], report[7],
        ]));
        let stage = match stage {
            2 => SpawnStage::Chdir,
            3 => SpawnStage::Exec,
            _ => SpawnStage::Setup,
        };
        return Err((stage, errno, Some(pid)));
    }
    Ok(pid)
}

/// Sets a terminal's window size (`TIOCSWINSZ`) on a pty master.
pub fn set_window_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> Result<(), Errno> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: `size` is a valid `winsize` that outlives the call; the kernel only reads it.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    Errno::result(rc).map(drop)
}

/// Takes ownership of descriptors the kernel just installed in this process through
/// `SCM_RIGHTS`.
pub fn adopt_received_fds(fds: &[std::os::fd::RawFd]) -> Vec<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    fds.iter()
        // SAFETY: each fd was created for this process by the kernel in the recvmsg that
        // returned it, and nothing else owns it yet.
        .map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(*fd) })
        .collect()
}

/// Takes ownership of one of this process's inherited descriptors (the runtime helper's
/// control socket, fd 0).
pub fn adopt_inherited_fd(fd: std::os::fd::RawFd) -> Result<std::os::fd::OwnedFd, Errno> {
    use std::os::fd::FromRawFd;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD)?;
    // SAFETY: the fd is open (checked above) and was handed to this process at exec for it to
    // own; no other object in this process refers to it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Restores the default SIGPIPE disposition (Rust's runtime ignores it, and an ignored signal
/// is inherited by everything this process execs).
pub fn default_sigpipe() {
    // SAFETY: installing SIG_DFL involves no handler code; called before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Number of threads in this process, from `/proc/self/stat` field 20.
pub fn thread_count() -> Option<usize> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_comm = stat.rsplit_once(')')?.1;
    after_comm.split_whitespace().nth(17)?.parse().ok()
}

/// Size of the kernel's `struct dm_ioctl` header.
pub const DM_IOCTL_HEADER: usize = 312;

/// Issues device-mapper command `command` (`DM_*_CMD`) on `/dev/mapper/control` with `buf`, a
/// `struct dm_ioctl` followed by its payload; the kernel writes its answer back into `buf`.
pub fn dm_ioctl(control: BorrowedFd<'_>, command: u8, buf: &mut [u8]) -> Result<(), Errno> {
    // _IOWR(DM_IOCTL = 0xfd, command, struct dm_ioctl)
    let request = (3 << 30)
        | ((DM_IOCTL_HEADER as libc::c_ulong) << 16)
        | (0xfd << 8)
        | libc::c_ulong::from(command);
    let declared = buf
        .get(12..16)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_ne_bytes)
        .ok_or(Errno::EINVAL)?;
    if buf.len() < DM_IOCTL_HEADER || !usize::try_from(declared).is_ok_and(|d| d <= buf.len()) {
        return Err(Errno::EINVAL);
    }
    // SAFETY: the kernel reads and writes at most `data_size` bytes (checked above to be within
    // `buf`, itself at least one header long) and keeps no reference after the call; the fd is
    // borrowed, so it stays open for the call.
    let rc = unsafe { libc::ioctl(control.as_raw_fd(), request, buf.as_mut_ptr()) };
    Errno::result(rc).map(drop)
}

/// Size of the response container of `SNP_GET_REPORT` (`struct snp_report_resp`).
pub const SNP_REPORT_RESPONSE: usize = 4000;

/// Asks the AMD SEV-SNP firmware for an attestation report at VMPL 0 with all-zero
/// `REPORT_DATA`, through `/dev/sev-guest` open at `dev` (`SNP_GET_REPORT`, Linux
/// `include/uapi/linux/sev-guest.h`). Returns the response container: status, report size, 24
/// reserved bytes, then the report. Errors: the ioctl's errno (the firmware's own error is not
/// returned).
pub fn snp_get_report(dev: BorrowedFd<'_>) -> Result<Vec<u8>, Errno> {
    /// `struct snp_report_req`: user data, VMPL, reserved.
    #[repr(C)]
    struct ReportRequest {
        user_data: [u8; 64],
        vmpl: u32,
        reserved: [u8; 28],
    }
    /// `struct snp_guest_request_ioctl`.
    #[repr(C)]
    struct GuestRequest {
        msg_version: u8,
        req_data: u64,
        resp_data: u64,
        exitinfo2: u64,
    }
    let request = ReportRequest {
        user_data: [0; 64],
        vmpl: 0,
        reserved: [0; 28],
    };
    let mut response = vec![0u8; SNP_REPORT_RESPONSE];
    let mut ioctl = GuestRequest {
        msg_version: 1,
        req_data: std::ptr::addr_of!(request) as u64,
        resp_data: response.as_mut_ptr() as u64,
        exitinfo2: 0,
    };
    // _IOWR('S', 0x0, struct snp_guest_request_ioctl)
    let code = (3 << 30)
        | ((std::mem::size_of::<GuestRequest>() as libc::c_ulong) << 16)
        | (libc::c_ulong::from(b'S') << 8);
    // SAFETY: the kernel reads `request` (96 bytes, alive for the call), writes at most 4000
    // bytes into `response` (its length) and the exit info into `ioctl`, and keeps no reference
    // after the call; the fd is borrowed, so it stays open for the call.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), code, std::ptr::addr_of_mut!(ioctl)) };
    Errno::result(rc)?;
    Ok(response)
}

/// The time of the PTP hardware clock open at `fd` (a dynamic POSIX clock).
pub fn phc_time(fd: BorrowedFd<'_>) -> Result<libc::timespec, Errno> {
    // FD_TO_CLOCKID: the clock id of a character device's dynamic clock.
    let clock = (!fd.as_raw_fd() << 3) | 3;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call; the clock id is derived from an
    // fd borrowed for the call, so the kernel resolves it to that open device or fails.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    Errno::result(rc).map(|_| ts)
}

/// Slews the system clock by `offset_us` microseconds (`adjtimex` `ADJ_OFFSET_SINGLESHOT`,
/// as `adjtime(3)`: gradual, never backwards in a jump).
pub fn slew_clock(offset_us: i64) -> Result<(), Errno> {
    // SAFETY: all-zero bytes are a valid `timex`.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    tx.modes = libc::ADJ_OFFSET_SINGLESHOT;
    tx.offset = offset_us;
    // SAFETY: `tx` is a valid timex that lives across the call.
    let rc = unsafe { libc::adjtimex(&mut tx) };
    Errno::result(rc).map(drop)
}

/// Allocations at or above this size get their own mapping, returned to the kernel when freed.
pub const MMAP_THRESHOLD: usize = 128 * 1024;

/// Sets glibc's allocator so that a burst of large requests does not stay resident (issue 15):
/// - `M_MMAP_THRESHOLD` fixed at [`MMAP_THRESHOLD`] (the default, but fixed: glibc otherwise
///   raises it to the size of each freed mapping, up to 32 MiB, after which a 10 MiB payload
///   lands in the heap and stays there);
/// - `M_TRIM_THRESHOLD` likewise, so freed heap tops go back at once;
/// - `M_ARENA_MAX` 2: one arena per worker thread at most, rather than 8 per core, each keeping
///   its own free memory.
///
/// Source: mallopt(3). Call before any thread exists; failures leave glibc's defaults.
pub fn tune_allocator() {
    let threshold = libc::c_int::try_from(MMAP_THRESHOLD).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets allocator parameters; called from the main thread before any
    // other thread allocates.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, threshold);
        libc::mallopt(libc::M_TRIM_THRESHOLD, threshold);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns the free memory of every allocator arena to the kernel (malloc_trim(3)); for idle
/// moments after bursts of work.
pub fn trim_allocator() {
    // SAFETY: malloc_trim takes the arenas' own locks; safe at any time from any thread.
    unsafe { libc::malloc_trim(0) };
}

/// Where [`on_fatal_signal`] writes its record: the log stream's descriptor.
static CRASH_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(2);
/// Whether the record is a logrus JSON line (`-log-format json`) or a text line.
static CRASH_JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
/// Whether the record is written at all: not while the security policy withholds the log
/// stream (`logging::set_enabled`).
static CRASH_RECORD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
/// Whether the crashing agent lifts its core size limit (`-core-dump-location` was given).
static CRASH_CORE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns the fatal-signal record on or off (it follows the log stream's switch).
pub fn set_crash_record(on: bool) {
    CRASH_RECORD.store(on, std::sync::atomic::Ordering::SeqCst);
}

/// The signals whose default action is a core dump and that mean the agent itself is broken.
pub const FATAL_SIGNALS: [libc::c_int; 6] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
    libc::SIGSYS,
];

/// Installs a handler for [`FATAL_SIGNALS`] that writes one record — signal, fault address,
/// thread id and name — to `fd` (the log stream, so it reaches the host), then lets the
/// signal's default action run: the process dies and, with `core`, lifts its own core size
/// limit first (only then: what the agent starts keeps the UVM's default of none), so that the
/// kernel writes the core where `kernel.core_pattern` says (`-core-dump-location`). Runs on the
/// alternate signal stack, so a stack overflow is recorded too. If the default action is
/// ignored (PID 1 of a PID namespace ignores its own signals), the handler exits with 128 + the
/// signal number instead.
///
/// Source: signal(7), sigaction(2), core(5); the record allocates nothing
/// (async-signal-safe).
pub fn install_crash_record(fd: std::os::fd::RawFd, json: bool, core: bool) -> Result<(), Errno> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    CRASH_FD.store(fd, std::sync::atomic::Ordering::Relaxed);
    CRASH_JSON.store(json, std::sync::atomic::Ordering::Relaxed);
    CRASH_CORE.store(core, std::sync::atomic::Ordering::Relaxed);
    let action = SigAction::new(
        SigHandler::SigAction(on_fatal_signal),
        SaFlags::SA_SIGINFO | SaFlags::SA_ONSTACK | SaFlags::SA_RESETHAND,
        SigSet::all(),
    );
    for sig in FATAL_SIGNALS {
        let signal = Signal::try_from(sig)?;
        // SAFETY: the handler only calls async-signal-safe functions (write, prctl, gettid,
        // sigprocmask, raise, _exit) and touches no allocator or lock.
        unsafe { sigaction(signal, &action) }?;
    }
    Ok(())
}

/// A fixed buffer that the signal handler formats into without allocating.
struct RecordBuf {
    bytes: [u8; 512],
    len: usize,
}

impl RecordBuf {
    fn put(&mut self, s: &[u8]) {
        for &b in s {
            if let Some(slot) = self.bytes.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
    }

    fn put_number(&mut self, mut value: u64, radix: u64) {
        let mut digits = [0u8; 20];
        let mut n = 0;
        loop {
            let d = u8::try_from(value % radix).unwrap_or(0);
            if let Some(slot) = digits.get_mut(n) {
                *slot = if d < 10 { b'0' + d } else { b'a' + d - 10 };
            }
            n += 1;
            value /= radix;
            if value == 0 || n == digits.len() {
                break;
            }
        }
        for i in (0..n).rev() {
            self.put(&digits[i..=i]);
        }
    }
}

fn signal_name(sig: libc::c_int) -> &'static [u8] {
    match sig {
        libc::SIGSEGV => b"SIGSEGV",
        libc::SIGBUS => b"SIGBUS",
        libc::SIGILL => b"SIGILL",
        libc::SIGFPE => b"SIGFPE",
        libc::SIGABRT => b"SIGABRT",
        libc::SIGSYS => b"SIGSYS",
        _ => b"signal",
    }
}

extern "C" fn on_fatal_signal(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    let json = CRASH_JSON.load(std::sync::atomic::Ordering::Relaxed);
    let mut out = RecordBuf {
        bytes: [0; 512],
        len: 0,
    };
    let address = if info.is_null() {
        0
    } else {
        // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler; si_addr is
        // meaningful for SIGSEGV, SIGBUS, SIGILL and SIGFPE and harmless to read for the others.
        unsafe { (*info).si_addr() as usize }
    };
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into the buffer given.
    unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
    let name_len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    if json {
        out.put(b"{\"level\":\"fatal\",\"msg\":\"");
    } else {
        out.put(b"level=fatal msg=\"");
    }
    out.put(b"fatal signal ");
    out.put(signal_name(sig));
    out.put(b" (");
    out.put_number(u64::try_from(sig).unwrap_or(0), 10);
    out.put(b") at address 0x");
    out.put_number(address as u64, 16);
    out.put(b" in thread ");
    for &b in name.get(..name_len).unwrap_or_default() {
        // Thread names are ours; anything unexpected is left out rather than escaped.
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.put(&[b]);
        }
    }
    out.put(b" (tid ");
    // SAFETY: gettid has no preconditions.
    out.put_number(u64::try_from(unsafe { libc::gettid() }).unwrap_or(0), 10);
    out.put(b"); the agent dies");
    if json {
        out.put(b"\",\"signal\":");
        out.put_number(u64::try_from(sig).unwrap_or(0), 10);
        out.put(b"}\n");
    } else {
        out.put(b"\"\n");
    }
    let fd = CRASH_FD.load(std::sync::atomic::Ordering::Relaxed);
    // SAFETY: writes from a valid buffer of `len` bytes; a bad descriptor only fails. The
    // rlimit is a plain syscall on a local struct.
    unsafe {
        if CRASH_RECORD.load(std::sync::atomic::Ordering::Relaxed) {
            libc::write(fd, out.bytes.as_ptr().cast(), out.len);
        }
        if CRASH_CORE.load(std::sync::atomic::Ordering::Relaxed) {
            let unlimited = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_CORE, &unlimited) != 0 {
                let mut current: libc::rlimit = std::mem::zeroed();
                libc::getrlimit(libc::RLIMIT_CORE, &mut current);
                current.rlim_cur = current.rlim_max;
                libc::setrlimit(libc::RLIMIT_CORE, &current);
            }
        }
        // SA_RESETHAND restored the default action; unblock the signal and raise it, so the
        // default action (a core dump) runs now, whether the signal came from a fault or not.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
        // Still alive: this process ignores its own default-action signals (PID 1 of a PID
        // namespace). Die anyway.
        libc::_exit(128 + sig);
    }
}

/// A real memory fault, for the crash tests' fault injection (debug builds only).
#[cfg(debug_assertions)]
pub fn fault() {
    // SAFETY: not safe at all, on purpose: address 8 is never mapped, so this read faults and
    // the process dies through on_fatal_signal.
    unsafe {
        std::ptr::read_volatile(std::ptr::without_provenance::<u8>(8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(set: &libc::sigset_t, sig: libc::c_int) -> bool {
        // SAFETY: `set` is an initialised sigset_t.
        unsafe { libc::sigismember(set, sig) == 1 }
    }

    #[test]
    fn spawned_children_keep_ignored_signals_and_reset_the_rest() {
        // SIGPIPE (ignored by Rust) goes back to its default; SIGTERM, handled or not, too.
        let set = signals_not_ignored();
        assert!(member(&set, libc::SIGPIPE));
        assert!(member(&set, libc::SIGTERM));
        assert!(member(&set, libc::SIGRTMAX()));
        // A signal the agent ignores stays ignored in its children, as with fork+exec.
        // SAFETY: SIGWINCH's default action is to ignore it; nothing in this test binary
        // handles it, so setting and restoring its disposition changes nothing else.
        let previous = unsafe { libc::signal(libc::SIGWINCH, libc::SIG_IGN) };
        let set = signals_not_ignored();
        // SAFETY: as above.
        unsafe { libc::signal(libc::SIGWINCH, previous) };
        assert!(!member(&set, libc::SIGWINCH));
        assert!(member(&set, libc::SIGPIPE));
    }

    #[test]
    fn a_spawned_child_starts_with_nothing_blocked_and_sigpipe_at_default() {
        let (read, write) = nix::unistd::pipe().unwrap();
        let cstr = |s: &str| std::ffi::CString::new(s).unwrap();
        let request = SpawnRequest {
            program: cstr("/bin/sh"),
            argv: ["sh", "-c", "grep -E '^Sig(Blk|Ign)' /proc/self/status"]
                .map(cstr)
                .to_vec(),
            envp: Vec::new(),
            cwd: None,
            stdio: [None, Some(write.as_raw_fd()), None],
            controlling_tty: false,
        };
        let pid = spawn(&request).unwrap();
        drop(write);
        let mut out = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(read), &mut out).unwrap();
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
        let mask = |field: &str| {
            let line = out.lines().find(|l| l.starts_with(field)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        assert_eq!(mask("SigBlk:"), 0, "{out}");
        let sigpipe = 1u64 << (libc::SIGPIPE - 1);
        assert_eq!(mask("SigIgn:") & sigpipe, 0, "{out}");
    }

    #[test]
    fn thread_count_reads_proc() {
        assert!(thread_count().unwrap_or(0) >= 1);
    }

    #[test]
    fn link_up_rejects_long_names() {
        let sock = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Datagram,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        use std::os::fd::AsFd;
        assert_eq!(
            set_link_up(sock.as_fd(), "a-name-far-too-long-for-linux"),
            Err(Errno::EINVAL)
        );
        assert_eq!(set_link_up(sock.as_fd(), "no-such-if0"), Err(Errno::ENODEV));
    }
}
