//! Soak (issue 15): container lifecycles and UVM execs in a loop against one sandboxed agent,
//! reporting every tenth of the run what the agent holds — fds, threads, RSS (all and
//! anonymous), mounts, cgroups, zombies — and, at the end, each one's slope per 1,000 cycles
//! after warm-up.
//!
//! `GCS_SOAK_CYCLES` sets the cycles of each kind: 30 in `make test` (growth there fails the run:
//! anything left per cycle shows at once), 1,000 in `make soak`. Slopes are reported, and the run
//! fails if a count that must return to its start (fds, threads, mounts, cgroups, zombies) has
//! grown by the end.
#![allow(
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::time::{Duration, Instant};

use common::Agent;

#[derive(Debug, Clone)]
struct Sample {
    cycle: usize,
    fds: usize,
    threads: u64,
    rss_kib: u64,
    anon_kib: u64,
    mounts: usize,
    cgroups: usize,
    zombies: usize,
    /// DumpStacks' first line: the agent's tables (containers, UVM processes, reaper).
    tables: String,
}

fn count_dirs(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| 1 + count_dirs(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}

/// Processes whose parent is `pid` and that are zombies, anywhere under it.
fn zombies_under(pid: u32) -> usize {
    let mut zombies = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&pid.to_string().as_str()) {
            zombies += 1;
        }
    }
    zombies
}

async fn sample(agent: &Agent, cycle: usize) -> Sample {
    let stacks = agent.client.dump_stacks().await.unwrap();
    let tables = stacks
        .lines()
        .next()
        .unwrap_or_default()
        .split_once("containers")
        .map(|(_, t)| format!("containers{t}"))
        .unwrap_or_default();
    let pid = agent.agent_pid();
    let cgroups = agent
        .sandbox
        .as_ref()
        .unwrap()
        .cgroups
        .iter()
        .map(|c| count_dirs(c))
        .sum();
    Sample {
        cycle,
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count(),
        threads: common::status_field(pid, "Threads"),
        rss_kib: common::status_field(pid, "VmRSS"),
        anon_kib: common::status_field(pid, "RssAnon"),
        mounts: std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .unwrap()
            .lines()
            .count(),
        cgroups,
        zombies: zombies_under(pid),
        tables,
    }
}

/// Least-squares slope of `y` over `x`, per 1,000 of `x`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    if den == 0.0 {
        0.0
    } else {
        num / den * 1000.0
    }
}

fn report(kind: &str, samples: &[Sample]) {
    for s in samples {
        eprintln!(
            "{kind} cycle {:5}: fds {:3} threads {:2} rss {:6} KiB anon {:6} KiB mounts {:3} cgroups {:3} zombies {} | {}",
            s.cycle, s.fds, s.threads, s.rss_kib, s.anon_kib, s.mounts, s.cgroups, s.zombies, s.tables
        );
    }
    // After warm-up: the first sample (taken after the first tenth) is the baseline.
    let warm: Vec<&Sample> = samples.iter().skip(1).collect();
    let per = |f: &dyn Fn(&Sample) -> f64| -> f64 {
        slope(
            &warm
                .iter()
                .map(|s| (s.cycle as f64, f(s)))
                .collect::<Vec<_>>(),
        )
    };
    eprintln!(
        "{kind} slopes per 1,000 cycles after warm-up: rss {:+.1} KiB, anon {:+.1} KiB, fds {:+.2}, threads {:+.2}, mounts {:+.2}, cgroups {:+.2}, zombies {:+.2}",
        per(&|s| s.rss_kib as f64),
        per(&|s| s.anon_kib as f64),
        per(&|s| s.fds as f64),
        per(&|s| s.threads as f64),
        per(&|s| s.mounts as f64),
        per(&|s| s.cgroups as f64),
        per(&|s| s.zombies as f64),
    );
}

/// Waits (up to 15 s) until idle blocking threads have ended and exits are reaped, then samples.
async fn settled(agent: &Agent, cycle: usize, like: &Sample) -> Sample {
    let start = Instant::now();
    loop {
        let s = sample(agent, cycle).await;
        let settled = s.threads <= like.threads && s.zombies == 0 && s.fds <= like.fds;
        if settled || start.elapsed() > Duration::from_secs(15) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn assert_returned(kind: &str, start: &Sample, end: &Sample) {
    assert!(
        end.fds <= start.fds
            && end.threads <= start.threads
            && end.mounts <= start.mounts
            && end.cgroups <= start.cgroups
            && end.zombies == 0,
        "{kind}: the agent holds more after the run than before it:\nbefore {start:?}\nafter  {end:?}"
    );
}

/// One container's whole life: CombinedLayers Add, Create, Start, its init (`/bin/true`) run and
/// waited for, CombinedLayers Remove, DeleteContainerState.
async fn container_cycle(agent: &Agent, layer: &str, cycle: usize) {
    let id = format!("soak{cycle}");
    let mut spec = common::trace_spec(&["/bin/true"]);
    spec["root"]["path"] = serde_json::json!(format!("/run/gcs/c/{id}/rootfs"));
    common::create_container(agent, &id, layer, spec)
        .await
        .unwrap();
    let init = common::start_process(agent, &id, None, false)
        .await
        .unwrap();
    let outcome = init.finish(agent, &id).await;
    assert_eq!(outcome.code, 0, "{outcome:?}");
    common::destroy_container(agent, &id).await;
}

/// ExecuteProcess of `/bin/true` in the UVM, and its wait.
async fn exec_cycle(agent: &Agent) {
    let params = gcs::protocol::messages::ProcessParameters {
        command_args: vec!["/bin/true".into()],
        environment: Some(
            [("PATH".to_string(), "/usr/bin:/bin".to_string())]
                .into_iter()
                .collect(),
        ),
        ..Default::default()
    };
    let pid = agent
        .client
        .execute_process(
            gcs::protocol::NULL_CONTAINER_ID,
            &params,
            gcs::protocol::messages::VsockStdioRelaySettings::default(),
        )
        .await
        .unwrap();
    let code = agent
        .client
        .wait_for_process(
            gcs::protocol::NULL_CONTAINER_ID,
            pid,
            gcs::protocol::INFINITE_WAIT,
        )
        .await
        .unwrap();
    assert_eq!(code, 0);
}

#[tokio::test]
async fn lifecycles_and_execs_leave_nothing_behind() {
    let cycles: usize = std::env::var("GCS_SOAK_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let every = (cycles / 10).max(1);
    let agent = Agent::sandboxed(&["-loglevel", "info"]).await;
    let layer = common::busybox_layer(&agent);

    // One of each first: what the agent sets up once (the runtime helper and its socket, the
    // uevent reader) is not growth.
    container_cycle(&agent, layer, 0).await;
    exec_cycle(&agent).await;

    // Container lifecycles: CombinedLayers Add, Create, Start, init, Wait, Remove, Delete.
    let before = sample(&agent, 0).await;
    let mut samples = Vec::new();
    let started = Instant::now();
    for cycle in 1..=cycles {
        container_cycle(&agent, layer, cycle).await;
        if cycle % every == 0 {
            samples.push(sample(&agent, cycle).await);
        }
    }
    let elapsed = started.elapsed();
    report("container", &samples);
    eprintln!("{cycles} container lifecycles in {elapsed:?}");
    let after = settled(&agent, cycles, &before).await;
    assert_returned("container lifecycles", &before, &after);

    // UVM execs: ExecuteProcess of /bin/true in the UVM, and its wait.
    let before = sample(&agent, 0).await;
    let mut samples = Vec::new();
    let started = Instant::now();
    for cycle in 1..=cycles {
        exec_cycle(&agent).await;
        if cycle % every == 0 {
            samples.push(sample(&agent, cycle).await);
        }
    }
    let elapsed = started.elapsed();
    report("uvm exec", &samples);
    eprintln!("{cycles} UVM execs in {elapsed:?}");
    let after = settled(&agent, cycles, &before).await;
    assert_returned("UVM execs", &before, &after);
}
