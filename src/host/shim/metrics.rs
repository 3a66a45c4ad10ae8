//! A container's statistics for containerd: the agent's `LCOWMetrics` (the JSON of containerd's
//! cgroups v1 `Metrics`, as hcsshim's guest sends it) as the protobuf message `ctr task
//! metrics` and the CRI decode (`io.containerd.cgroups.v1.Metrics`).

use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryOomControl, MemoryStat, Metrics, PidsStat, Throttle,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use serde_json::Value;

/// The type URL containerd registers for v1 metrics.
pub const V1_METRICS_TYPE: &str = "io.containerd.cgroups.v1.Metrics";

fn u(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

macro_rules! copy_fields {
    ($to:expr, $from:expr, $($field:ident),* $(,)?) => {
        $( $to.$field = u($from, stringify!($field)); )*
    };
}

fn entry(v: &Value) -> MemoryEntry {
    let mut e = MemoryEntry::new();
    copy_fields!(e, v, limit, usage, max, failcnt);
    e
}

/// The protobuf form of the agent's metrics JSON; absent fields are 0 (Go's `omitempty`).
pub fn v1_metrics(json: &Value) -> Metrics {
    let null = Value::Null;
    let at = |path: &str| json.pointer(path).unwrap_or(&null);
    let mut m = Metrics::new();

    let mut pids = PidsStat::new();
    copy_fields!(pids, at("/pids"), current, limit);
    m.pids = Some(pids).into();

    let mut usage = CPUUsage::new();
    copy_fields!(usage, at("/cpu/usage"), total, kernel, user);
    usage.per_cpu = at("/cpu/usage/per_cpu")
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let mut throttling = Throttle::new();
    copy_fields!(
        throttling,
        at("/cpu/throttling"),
        periods,
        throttled_periods,
        throttled_time
    );
    let mut cpu = CPUStat::new();
    cpu.usage = Some(usage).into();
    cpu.throttling = Some(throttling).into();
    m.cpu = Some(cpu).into();

    let memory = at("/memory");
    let mut mem = MemoryStat::new();
    copy_fields!(
        mem,
        memory,
        cache,
        rss,
        rss_huge,
        mapped_file,
        dirty,
        writeback,
        pg_pg_in,
        pg_pg_out,
        pg_fault,
        pg_maj_fault,
        inactive_anon,
        active_anon,
        inactive_file,
        active_file,
        unevictable,
        hierarchical_memory_limit,
        hierarchical_swap_limit,
        total_cache,
        total_rss,
        total_rss_huge,
        total_mapped_file,
        total_dirty,
        total_writeback,
        total_pg_pg_in,
        total_pg_pg_out,
        total_pg_fault,
        total_pg_maj_fault,
        total_inactive_anon,
        total_active_anon,
        total_inactive_file,
        total_active_file,
        total_unevictable,
    );
    mem.usage = Some(entry(at("/memory/usage"))).into();
    mem.swap = Some(entry(at("/memory/swap"))).into();
    mem.kernel = Some(entry(at("/memory/kernel"))).into();
    mem.kernel_tcp = Some(entry(at("/memory/kernel_tcp"))).into();
    m.memory = Some(mem).into();

    let mut oom = MemoryOomControl::new();
    copy_fields!(oom, at("/memory_oom_control"), oom_kill);
    m.memory_oom_control = Some(oom).into();
    m
}

/// [`v1_metrics`] packed as containerd's `StatsResponse.stats`.
///
/// Errors: protobuf encoding (only for a message too large to encode).
pub fn v1_metrics_any(json: &Value) -> Result<Any, String> {
    let bytes = v1_metrics(json)
        .write_to_bytes()
        .map_err(|e| format!("encode the metrics: {e}"))?;
    let mut any = Any::new();
    any.type_url = V1_METRICS_TYPE.to_string();
    any.value = bytes;
    Ok(any)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_agents_metrics_json_becomes_containerds_message() {
        let json = json!({
            "pids": {"current": 3, "limit": 100},
            "cpu": {"usage": {"total": 1000, "kernel": 300, "user": 700, "per_cpu": [600, 400]},
                    "throttling": {"periods": 5}},
            "memory": {"cache": 4096, "rss": 8192, "total_rss": 8192,
                       "usage": {"limit": 67108864, "usage": 12288, "max": 16384}},
            "memory_oom_control": {"oom_kill": 2}
        });
        let any = v1_metrics_any(&json).unwrap();
        assert_eq!(any.type_url, V1_METRICS_TYPE);
        let m = Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!((m.pids.current, m.pids.limit), (3, 100));
        assert_eq!(m.cpu.usage.total, 1000);
        assert_eq!(m.cpu.usage.per_cpu, vec![600, 400]);
        assert_eq!(m.cpu.throttling.periods, 5);
        assert_eq!(
            (m.memory.cache, m.memory.rss, m.memory.total_rss),
            (4096, 8192, 8192)
        );
        assert_eq!(m.memory.usage.limit, 67108864);
        assert_eq!(m.memory.usage.max, 16384);
        assert_eq!(m.memory.swap.usage, 0);
        assert_eq!(m.memory_oom_control.oom_kill, 2);
        // Nothing at all is all zeros, not an error.
        assert_eq!(v1_metrics(&Value::Null).memory.usage.usage, 0);
    }
}
