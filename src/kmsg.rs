//! The kernel log relay (spec §8.3 step 4): entries of `/dev/kmsg` at or below
//! `-kmsgLogLevel` go to the agent's log (and so to the host on port 109) at info level, with
//! the original's fields; the kernel's text is the line's `msg` (the original puts it in a
//! `message` field next to `msg: kmsg`, a name tracing reserves for the event's message).

use std::io::Read;

/// One `/dev/kmsg` record: `<prio>,<seq>,<usec>,<flags>[,...];<message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub priority: u8,
    pub facility: u32,
    pub seq: u64,
    pub time_since_boot_micro: u64,
    pub flags: String,
    pub message: String,
}

pub fn parse(record: &str) -> Option<Entry> {
    let (header, rest) = record.split_once(';')?;
    let mut fields = header.split(',');
    let prio: u32 = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let usec = fields.next()?.parse().ok()?;
    let flags = fields.next().unwrap_or("").to_string();
    // Continuation lines (" KEY=value") carry device metadata, not the message.
    let message = rest.lines().next().unwrap_or("").to_string();
    Some(Entry {
        priority: u8::try_from(prio & 7).ok()?,
        facility: prio >> 3,
        seq,
        time_since_boot_micro: usec,
        flags,
        message,
    })
}

/// Relays `/dev/kmsg` on a thread of its own, forever.
pub fn start(max_level: u32) {
    let spawned = std::thread::Builder::new()
        .name("gcs-kmsg".into())
        .spawn(move || {
            let mut kmsg = match std::fs::File::open("/dev/kmsg") {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read /dev/kmsg; kernel messages are not relayed");
                    return;
                }
            };
            // Each read returns exactly one record.
            let mut buf = vec![0u8; 8192];
            loop {
                match kmsg.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        let text = String::from_utf8_lossy(&buf[..n]);
                        if let Some(e) = parse(&text) {
                            if u32::from(e.priority) <= max_level {
                                tracing::info!(
                                    priority = e.priority,
                                    facility = e.facility,
                                    seq = e.seq,
                                    timesincebootmicro = e.time_since_boot_micro,
                                    flags = %e.flags,
                                    "{}",
                                    e.message
                                );
                            }
                        }
                    }
                    // Overwritten records: the next read goes on from the oldest one left.
                    Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading /dev/kmsg failed; relay stopped");
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the kmsg relay");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse() {
        let e = parse("3,1234,5140900,-;gcs-kmsg-test hello\n SUBSYSTEM=acpi\n").unwrap();
        assert_eq!(
            e,
            Entry {
                priority: 3,
                facility: 0,
                seq: 1234,
                time_since_boot_micro: 5_140_900,
                flags: "-".into(),
                message: "gcs-kmsg-test hello".into()
            }
        );
        let user = parse("12,7,9,c,more;x").unwrap();
        assert_eq!(
            (user.priority, user.facility, user.flags.as_str()),
            (4, 1, "c")
        );
        assert!(parse("garbage").is_none());
        assert!(parse("x,1,2,-;m").is_none());
    }
}
