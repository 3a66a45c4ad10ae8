//! cgroup statistics in the shape the host reads: containerd's cgroup v1 `Metrics` with
//! protobuf snake_case keys, every zero omitted (spec §4.10). v2 values are mapped onto the v1
//! names. `blkio` is sent as `{}` and `network` left out, as the original does to stay under
//! the host's 64 KiB limit.

use serde_json::{Map, Value};

fn put(obj: &mut Map<String, Value>, key: &str, value: u64) {
    if value != 0 {
        obj.insert(key.to_string(), Value::from(value));
    }
}

fn memory_entry(d: &libcgroups::stats::MemoryData) -> Value {
    let mut o = Map::new();
    put(&mut o, "limit", d.limit);
    put(&mut o, "usage", d.usage);
    put(&mut o, "max", d.max_usage);
    put(&mut o, "failcnt", d.fail_count);
    Value::Object(o)
}

/// (v1 Metrics key, v1 memory.stat key, v2 memory.stat key)
const MEMORY_KEYS: &[(&str, &str, &str)] = &[
    ("cache", "cache", "file"),
    ("rss", "rss", "anon"),
    ("rss_huge", "rss_huge", "anon_thp"),
    ("mapped_file", "mapped_file", "file_mapped"),
    ("dirty", "dirty", "file_dirty"),
    ("writeback", "writeback", "file_writeback"),
    ("pg_pg_in", "pgpgin", "pgpgin"),
    ("pg_pg_out", "pgpgout", "pgpgout"),
    ("pg_fault", "pgfault", "pgfault"),
    ("pg_maj_fault", "pgmajfault", "pgmajfault"),
    ("inactive_anon", "inactive_anon", "inactive_anon"),
    ("active_anon", "active_anon", "active_anon"),
    ("inactive_file", "inactive_file", "inactive_file"),
    ("active_file", "active_file", "active_file"),
    ("unevictable", "unevictable", "unevictable"),
];

pub fn to_v1_metrics(s: &libcgroups::stats::Stats) -> Value {
    let mut root = Map::new();

    let mut pids = Map::new();
    put(&mut pids, "current", s.pids.current);
    put(&mut pids, "limit", s.pids.limit);
    root.insert("pids".into(), Value::Object(pids));

    let mut usage = Map::new();
    put(&mut usage, "total", s.cpu.usage.usage_total);
    put(&mut usage, "kernel", s.cpu.usage.usage_kernel);
    put(&mut usage, "user", s.cpu.usage.usage_user);
    if !s.cpu.usage.per_core_usage_total.is_empty() {
        usage.insert(
            "per_cpu".into(),
            Value::from(s.cpu.usage.per_core_usage_total.clone()),
        );
    }
    let mut throttling = Map::new();
    put(&mut throttling, "periods", s.cpu.throttling.periods);
    put(
        &mut throttling,
        "throttled_periods",
        s.cpu.throttling.throttled_periods,
    );
    put(
        &mut throttling,
        "throttled_time",
        s.cpu.throttling.throttled_time,
    );
    let mut cpu = Map::new();
    cpu.insert("usage".into(), Value::Object(usage));
    cpu.insert("throttling".into(), Value::Object(throttling));
    root.insert("cpu".into(), Value::Object(cpu));

    let stat = &s.memory.stats;
    let v2 = stat.contains_key("anon");
    let mut memory = Map::new();
    for (name, v1_key, v2_key) in MEMORY_KEYS {
        let value = stat
            .get(if v2 { *v2_key } else { *v1_key })
            .copied()
            .unwrap_or(0);
        put(&mut memory, name, value);
    }
    put(
        &mut memory,
        "hierarchical_memory_limit",
        stat.get("hierarchical_memory_limit").copied().unwrap_or(0),
    );
    put(
        &mut memory,
        "hierarchical_swap_limit",
        stat.get("hierarchical_memsw_limit").copied().unwrap_or(0),
    );
    for (name, v1_key, v2_key) in MEMORY_KEYS {
        // v1 has separate hierarchical totals; v2 counters are already hierarchical.
        let value = if v2 {
            stat.get(*v2_key).copied()
        } else {
            stat.get(&format!("total_{v1_key}")).copied()
        };
        put(&mut memory, &format!("total_{name}"), value.unwrap_or(0));
    }
    memory.insert("usage".into(), memory_entry(&s.memory.memory));
    memory.insert("swap".into(), memory_entry(&s.memory.memswap));
    memory.insert("kernel".into(), memory_entry(&s.memory.kernel));
    memory.insert("kernel_tcp".into(), memory_entry(&s.memory.kernel_tcp));
    root.insert("memory".into(), Value::Object(memory));

    let mut hugetlb: Vec<(&String, &libcgroups::stats::HugeTlbStats)> = s.hugetlb.iter().collect();
    hugetlb.sort_by_key(|(size, _)| size.as_str());
    let hugetlb: Vec<Value> = hugetlb
        .into_iter()
        .map(|(size, h)| {
            let mut o = Map::new();
            put(&mut o, "usage", h.usage);
            put(&mut o, "max", h.max_usage);
            put(&mut o, "failcnt", h.fail_count);
            o.insert("pagesize".into(), Value::from(size.clone()));
            Value::Object(o)
        })
        .collect();
    if !hugetlb.is_empty() {
        root.insert("hugetlb".into(), Value::from(hugetlb));
    }
    root.insert("blkio".into(), Value::Object(Map::new()));
    root.insert("memory_oom_control".into(), Value::Object(Map::new()));
    Value::Object(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_names_and_zero_omission() {
        let mut s = libcgroups::stats::Stats::default();
        s.pids.current = 3;
        s.cpu.usage.usage_total = 13_773_527;
        s.cpu.usage.per_core_usage_total = vec![1, 2];
        s.memory.stats.insert("rss".into(), 167_936);
        s.memory.stats.insert("total_rss".into(), 167_936);
        s.memory.stats.insert("pgfault".into(), 1034);
        s.memory.memory.usage = 802_816;
        let m = to_v1_metrics(&s);
        assert_eq!(m["pids"], serde_json::json!({"current": 3}));
        assert_eq!(m["cpu"]["usage"]["total"], 13_773_527);
        assert_eq!(m["cpu"]["throttling"], serde_json::json!({}));
        assert_eq!(m["memory"]["rss"], 167_936);
        assert_eq!(m["memory"]["total_rss"], 167_936);
        assert_eq!(m["memory"]["pg_fault"], 1034);
        assert!(m["memory"].get("cache").is_none());
        assert_eq!(m["memory"]["usage"], serde_json::json!({"usage": 802_816}));
        assert_eq!(m["blkio"], serde_json::json!({}));
    }

    #[test]
    fn v2_keys_map_to_v1_names() {
        let mut s = libcgroups::stats::Stats::default();
        s.memory.stats.insert("anon".into(), 10);
        s.memory.stats.insert("file".into(), 20);
        let m = to_v1_metrics(&s);
        assert_eq!(m["memory"]["rss"], 10);
        assert_eq!(m["memory"]["cache"], 20);
        assert_eq!(m["memory"]["total_rss"], 10);
    }
}
