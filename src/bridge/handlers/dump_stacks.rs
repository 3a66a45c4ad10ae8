//! DumpStacks: a readable dump of the agent's threads and the requests in flight.

use std::fmt::Write as _;

use super::{Reply, Request};
use crate::bridge::BridgeError;
use crate::protocol::messages::{DumpStacksResponse, RequestBase, ResponseBase};

/// Room left for the stacks text inside a 64 KiB response.
const MAX_DUMP: usize = 60 * 1024;

pub fn handle(req: &Request<'_>) -> Result<Reply, BridgeError> {
    let base: RequestBase = req.decode("DumpStacks")?;
    req.bridge.guest().enforce(
        crate::policy::EnforcementPoint::DumpStacks,
        crate::policy::input::empty(),
        || "dump stacks denied due to policy".into(),
    )?;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "gcs {} pid {} containers {} uvm processes {} exits unclaimed {} watched {}",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        req.bridge.guest().container_count(),
        req.bridge.guest().uvm_process_count(),
        req.bridge.guest().reaper_counts().0,
        req.bridge.guest().reaper_counts().1,
    );
    text.push_str(&threads());
    let _ = writeln!(
        text,
        "requests in flight ({}):",
        req.bridge.inflight().len()
    );
    text.push_str(&req.bridge.inflight().describe());
    truncate(&mut text, MAX_DUMP);
    Reply::new(&DumpStacksResponse {
        base: ResponseBase::ok(&base.activity_id),
        guest_stacks: text,
    })
}

/// Every thread of the agent: name, state, wait channel and, where readable, its kernel stack.
fn threads() -> String {
    let mut out = String::new();
    let mut tids: Vec<u32> = std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    tids.sort_unstable();
    let _ = writeln!(out, "threads ({}):", tids.len());
    for tid in tids {
        let path = format!("/proc/self/task/{tid}");
        let read = |f: &str| std::fs::read_to_string(format!("{path}/{f}")).unwrap_or_default();
        let comm = read("comm");
        let stat = read("stat");
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next())
            .unwrap_or("?");
        let wchan = read("wchan");
        let _ = writeln!(
            out,
            "thread {tid} \"{}\" state {state} wchan {}",
            comm.trim(),
            wchan.trim()
        );
        for frame in read("stack").lines() {
            let _ = writeln!(out, "    {frame}");
        }
    }
    out
}

fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n... truncated\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_lists_this_thread() {
        let t = threads();
        assert!(t.starts_with("threads ("), "{t}");
        assert!(
            t.contains(&format!("thread {} ", std::process::id())),
            "{t}"
        );
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        let mut s = "é".repeat(100);
        truncate(&mut s, 51);
        assert!(s.ends_with("... truncated\n"));
        assert!(s.len() < 70);
    }
}
