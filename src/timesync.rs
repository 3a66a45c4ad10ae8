//! Time sync without chronyd (spec §8.3 step 8): the system clock follows the Hyper-V PTP clock
//! (`/sys/class/ptp/ptp*/clock_name` = `hyperv`), stepped on a large offset and slewed on a
//! small one, every few seconds. Without such a clock the agent logs a warning and goes on (the
//! original exits fatally, which kills the VM).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::time::{clock_gettime, clock_settime, ClockId};

/// Offsets beyond this are stepped (chrony's `makestep 0.1 -1` in the original's config).
pub const STEP_THRESHOLD_NS: i64 = 100_000_000;
/// Offsets below this are left alone (noise of reading two clocks).
pub const IGNORE_BELOW_NS: i64 = 20_000;
/// The original polls the clock every 8 s (`poll 3`).
pub const INTERVAL: Duration = Duration::from_secs(8);

/// What to do about an offset `reference − system` in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Correction {
    None,
    /// Slew by this many microseconds.
    Slew(i64),
    /// Set the clock by this many nanoseconds.
    Step(i64),
}

pub fn correction(offset_ns: i64) -> Correction {
    match offset_ns.unsigned_abs() {
        a if a >= STEP_THRESHOLD_NS.unsigned_abs() => Correction::Step(offset_ns),
        a if a < IGNORE_BELOW_NS.unsigned_abs() => Correction::None,
        _ => Correction::Slew(offset_ns / 1000),
    }
}

/// Nanoseconds from `(sec, nsec)` b to a, saturating.
pub fn offset_ns(a: (i64, i64), b: (i64, i64)) -> i64 {
    let secs = i128::from(a.0) - i128::from(b.0);
    let total = secs * 1_000_000_000 + i128::from(a.1) - i128::from(b.1);
    i64::try_from(total).unwrap_or(if total < 0 { i64::MIN } else { i64::MAX })
}

/// The `/dev/ptpN` whose clock is Hyper-V's, if any.
pub fn find_hyperv_clock(sys_class_ptp: &Path) -> Option<PathBuf> {
    std::fs::read_dir(sys_class_ptp)
        .ok()?
        .flatten()
        .find(|e| {
            std::fs::read_to_string(e.path().join("clock_name")).is_ok_and(|n| n.trim() == "hyperv")
        })
        .map(|e| Path::new("/dev").join(e.file_name()))
}

/// Starts following the Hyper-V clock on a thread, or warns that there is none.
pub fn start() {
    let Some(device) = find_hyperv_clock(Path::new("/sys/class/ptp")) else {
        tracing::warn!(
            "no Hyper-V PTP clock (/sys/class/ptp/*/clock_name = hyperv): time is not synchronised"
        );
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("gcs-timesync".into())
        .spawn(move || follow(&device));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start time sync");
    }
}

fn follow(device: &Path) {
    let clock = match std::fs::File::open(device) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(device = %device.display(), error = %e, "cannot open the PTP clock; time is not synchronised");
            return;
        }
    };
    tracing::info!(device = %device.display(), "following the Hyper-V PTP clock");
    loop {
        let reference = crate::sys::phc_time(clock.as_fd());
        let system = clock_gettime(ClockId::CLOCK_REALTIME);
        if let (Ok(r), Ok(s)) = (reference, system) {
            let offset = offset_ns((r.tv_sec, r.tv_nsec), (s.tv_sec(), s.tv_nsec()));
            let applied = match correction(offset) {
                Correction::None => Ok(()),
                Correction::Slew(us) => crate::sys::slew_clock(us),
                Correction::Step(_) => clock_settime(
                    ClockId::CLOCK_REALTIME,
                    nix::sys::time::TimeSpec::new(r.tv_sec, r.tv_nsec),
                ),
            };
            if let Err(e) = applied {
                tracing::warn!(offset_ns = offset, error = %e, "correcting the clock failed");
            } else if matches!(correction(offset), Correction::Step(_)) {
                tracing::info!(offset_ns = offset, "clock stepped to the Hyper-V clock");
            }
        }
        std::thread::sleep(INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_corrections() {
        assert_eq!(offset_ns((10, 500), (9, 999_999_500)), 1000);
        assert_eq!(offset_ns((9, 0), (10, 0)), -1_000_000_000);
        assert_eq!(offset_ns((i64::MAX, 0), (i64::MIN, 0)), i64::MAX);
        assert_eq!(correction(5_000), Correction::None);
        assert_eq!(correction(-5_000), Correction::None);
        assert_eq!(correction(2_500_000), Correction::Slew(2_500));
        assert_eq!(correction(-2_500_000), Correction::Slew(-2_500));
        assert_eq!(correction(100_000_000), Correction::Step(100_000_000));
        assert_eq!(correction(-3_000_000_000), Correction::Step(-3_000_000_000));
        assert_eq!(correction(i64::MIN), Correction::Step(i64::MIN));
    }

    #[test]
    fn the_hyperv_clock_is_found_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for (n, name) in [("ptp0", "kvm"), ("ptp1", "hyperv")] {
            std::fs::create_dir_all(dir.path().join(n)).unwrap();
            std::fs::write(dir.path().join(n).join("clock_name"), format!("{name}\n")).unwrap();
        }
        assert_eq!(
            find_hyperv_clock(dir.path()),
            Some(PathBuf::from("/dev/ptp1"))
        );
        std::fs::remove_dir_all(dir.path().join("ptp1")).unwrap();
        assert_eq!(find_hyperv_clock(dir.path()), None);
        assert_eq!(find_hyperv_clock(Path::new("/nonexistent")), None);
    }
}
