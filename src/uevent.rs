//! Waiting for devices (disks, pmem, NICs) by kernel uevents instead of sleeping.
//!
//! The original agent polls sysfs every 10 ms with fixed bounds, which raced hot-plug for years
//! (trace 21 shows it failing on a VPMem node 4 times in 5). Here a `NETLINK_KOBJECT_UEVENT`
//! socket is opened *before* the first look at sysfs, so no event between the look and the wait
//! is lost; every event wakes the waiter, which then looks again. sysfs stays the source of
//! truth: events are only wake-ups, so their exact contents and order do not matter.
//!
//! One thing the kernel does not announce: a SCSI disk's capacity going from 0 to its real
//! size (`set_capacity_and_notify` is silent when the old size was 0). A slow backstop re-look
//! covers that and a socket overflow; it is a bound on staleness, not a sleep between looks.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    bind, recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};

/// The multicast group the kernel sends kobject uevents to.
const KERNEL_GROUP: u32 = 1;

/// Re-look at sysfs at least this often even without an event (see the module comment).
pub const BACKSTOP: Duration = Duration::from_millis(250);

/// The original logs a warning once a device has been awaited this long.
const SLOW_WARNING: Duration = Duration::from_secs(5);

/// A subscription to kernel uevents.
#[derive(Debug)]
pub struct Uevents {
    socket: Option<OwnedFd>,
    /// Events seen since the subscription (for logs and tests).
    pub seen: u64,
}

impl Uevents {
    /// Subscribes. Without netlink (a kernel built without it, a seccomp'd test) the waiter
    /// still works, on the backstop alone; that is logged.
    pub fn subscribe() -> Self {
        let socket = Self::open().map_err(|e| {
            tracing::warn!(error = %e, "cannot subscribe to kernel uevents; device waits fall back to re-checking every {BACKSTOP:?}");
        });
        Self {
            socket: socket.ok(),
            seen: 0,
        }
    }

    fn open() -> Result<OwnedFd, Errno> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkKObjectUEvent,
        )?;
        // A burst of hot-plug events (many disks at once) must not overflow the queue; an
        // overflow is survivable (the next look sees the state) but wastes a backstop period.
        let _ = setsockopt(&fd, sockopt::RcvBuf, &(1 << 20));
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, KERNEL_GROUP))?;
        Ok(fd)
    }

    /// Blocks until an event arrives or `timeout` passes; drains what is queued.
    fn wait(&mut self, timeout: Duration) {
        let Some(fd) = &self.socket else {
            std::thread::sleep(timeout);
            return;
        };
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0) {
            return;
        }
        let mut buf = [0u8; 8192];
        loop {
            match recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(_) => self.seen += 1,
                // ENOBUFS: the queue overflowed; the caller looks at sysfs next anyway.
                Err(Errno::ENOBUFS) => continue,
                Err(_) => break,
            }
        }
    }

    /// Waits up to `timeout` for uevents and returns those that arrived, each as its text
    /// (`ACTION@DEVPATH` and `KEY=value` lines).
    pub fn next_messages(&mut self, timeout: Duration) -> Vec<String> {
        let Some(fd) = &self.socket else {
            std::thread::sleep(timeout);
            return Vec::new();
        };
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0) {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => {
                    self.seen += 1;
                    out.push(String::from_utf8_lossy(&buf[..n]).replace('\0', "\n"));
                }
                Err(Errno::ENOBUFS) => continue,
                Err(_) => break,
            }
        }
        out
    }
}

/// The UVM-wide watch of kernel uevents behind [`wait_until`]: one netlink socket, read by one
/// thread, whose only output is a counter of events seen. Every waiter holds a receiver of that
/// counter, so a hundred device waits cost a hundred idle futures, not a hundred parked threads
/// (issue 15), and each event is read once, however many wait.
#[derive(Debug)]
struct Hub {
    events: tokio::sync::watch::Sender<u64>,
}

fn hub() -> &'static Hub {
    static HUB: std::sync::OnceLock<Hub> = std::sync::OnceLock::new();
    HUB.get_or_init(|| {
        let (events, _) = tokio::sync::watch::channel(0u64);
        let hub = Hub { events };
        let mut socket = Uevents::subscribe();
        if socket.socket.is_some() {
            let sender = hub.events.clone();
            let spawned = std::thread::Builder::new()
                .name("gcs-uevents".into())
                .spawn(move || loop {
                    let before = socket.seen;
                    socket.wait(Duration::from_secs(3600));
                    if socket.seen != before {
                        sender.send_modify(|n| *n = socket.seen);
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the uevent reader; device waits fall back to re-checking every {BACKSTOP:?}");
            }
        }
        hub
    })
}

/// Calls `probe` until it yields a value, re-probing after every batch of kernel uevents (and at
/// least every [`BACKSTOP`]) until `deadline` has passed; async, so waiting holds no thread.
/// `what` names the device in the slow-device warning and the timeout error. `probe` runs on
/// the caller's task: it must be a quick look (sysfs, `/dev`), not a long operation.
///
/// Errors: [`WaitError::Timeout`] at the deadline, [`WaitError::Probe`] when `probe` fails.
pub async fn wait_until<T, E>(
    what: &str,
    deadline: Duration,
    mut probe: impl FnMut() -> Result<Option<T>, E>,
) -> Result<T, WaitError<E>> {
    // Subscribed before the first look, so an event between the look and the wait is seen.
    let mut events = hub().events.subscribe();
    let first = *events.borrow_and_update();
    let start = Instant::now();
    let mut warned = false;
    let mut looks = 0u32;
    loop {
        looks += 1;
        if let Some(found) = probe().map_err(WaitError::Probe)? {
            if looks > 1 {
                tracing::info!(
                    device = what,
                    waited_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
                    uevents = *events.borrow() - first,
                    "device appeared"
                );
            }
            return Ok(found);
        }
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            return Err(WaitError::Timeout {
                what: what.to_string(),
                waited: elapsed,
                events: *events.borrow() - first,
            });
        }
        if !warned && elapsed >= SLOW_WARNING {
            warned = true;
            tracing::warn!(device = what, "still waiting for the device");
        }
        let nap = BACKSTOP.min(deadline - elapsed);
        tokio::select! {
            _ = events.changed() => {}
            () = tokio::time::sleep(nap) => {}
        }
    }
}

/// Why a device wait ended without the device.
#[derive(Debug, thiserror::Error)]
pub enum WaitError<E> {
    #[error("{what} did not appear within {waited:?} ({events} kernel uevents seen meanwhile)")]
    Timeout {
        what: String,
        waited: Duration,
        events: u64,
    },
    #[error(transparent)]
    Probe(E),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn probe_result_and_timeout() {
        let mut calls = 0;
        let found: Result<u32, WaitError<()>> = wait_until("x", Duration::from_secs(5), || {
            calls += 1;
            Ok((calls == 2).then_some(7))
        })
        .await;
        assert_eq!(found.unwrap(), 7);
        let start = Instant::now();
        let missing: Result<u32, WaitError<std::io::Error>> =
            wait_until("/dev/nothing", Duration::from_millis(300), || Ok(None)).await;
        let err = missing.unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert!(
            err.to_string()
                .contains("/dev/nothing did not appear within"),
            "{err}"
        );
        let failed: Result<u32, WaitError<&str>> =
            wait_until("x", Duration::from_secs(5), || Err("bad")).await;
        assert!(matches!(failed, Err(WaitError::Probe("bad"))));
    }

    /// Many waits at once hold no thread each: on a runtime with one thread, 200 waits run
    /// side by side and all time out together.
    #[test]
    fn waits_hold_no_threads() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let start = Instant::now();
        runtime.block_on(async {
            let waits = (0..200).map(|i| {
                tokio::spawn(async move {
                    wait_until::<(), ()>(&format!("device {i}"), Duration::from_millis(500), || {
                        Ok(None)
                    })
                    .await
                })
            });
            for w in waits.collect::<Vec<_>>() {
                assert!(matches!(w.await.unwrap(), Err(WaitError::Timeout { .. })));
            }
        });
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }
}
