//! The annotations of spec §6.3/§6.4 that change the spec, parsed and refused as the original
//! guest does (hcsshim `ApplyAnnotationsToSpec`, `SetCoreRLimit`, `ParseAnnotationsBool`).
//! The README lists each key with its check.

use serde_json::{json, Value};
use tracing::warn;

use super::{annotation, push_mount, Kind, PRIVILEGED, RLIMIT_CORE, SHM_SIZE_KB};
use crate::guest::GuestError;

/// Go's `strconv.ParseBool`: `1 t T TRUE true True` and `0 f F FALSE false False`.
pub fn go_parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A boolean annotation as the original reads it (`ParseAnnotationsBool`): absent is
/// `default`; a value Go cannot parse is logged and counts as `default`.
pub fn bool_annotation(spec: &Value, key: &str, default: bool) -> bool {
    match annotation(spec, key) {
        None => default,
        Some(v) => go_parse_bool(v).unwrap_or_else(|| {
            warn!(
                annotation = key,
                value = v,
                "annotation value could not be parsed"
            );
            default
        }),
    }
}

/// Go's `strconv.ParseUint(v, 10, 64)`: decimal digits only, no sign, no blanks.
fn go_parse_u64(v: &str) -> Result<u64, &'static str> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err("invalid syntax");
    }
    v.parse().map_err(|_| "value out of range")
}

/// `io.microsoft.lcow.rlimitcore` = `<soft>;<hard>`: replaces any `RLIMIT_CORE`.
fn core_rlimit(spec: &mut Value, value: &str) -> Result<(), GuestError> {
    let parts: Vec<&str> = value.split(';').collect();
    let [soft, hard] = parts[..] else {
        return Err(GuestError::InvalidRequest(format!(
            "{RLIMIT_CORE} {}: wrong number of values supplied for rlimit core (expected <soft>;<hard>)",
            super::quote_start(value)
        )));
    };
    let parse = |which: &str, v: &str| {
        go_parse_u64(v).map_err(|e| {
            GuestError::InvalidRequest(format!(
                "{RLIMIT_CORE}: failed to parse {which} core rlimit {}: {e}",
                super::quote_start(v)
            ))
        })
    };
    let (soft, hard) = (parse("soft", soft)?, parse("hard", hard)?);
    if !spec
        .pointer("/process/rlimits")
        .is_some_and(Value::is_array)
    {
        spec["process"]["rlimits"] = json!([]);
    }
    if let Some(r) = spec
        .pointer_mut("/process/rlimits")
        .and_then(Value::as_array_mut)
    {
        r.retain(|l| l.get("type").and_then(Value::as_str) != Some("RLIMIT_CORE"));
        r.push(json!({"type": "RLIMIT_CORE", "soft": soft, "hard": hard}));
    }
    Ok(())
}

/// `io.microsoft.lcow.shm.size-kb`: `/dev/shm` becomes a tmpfs of that many KiB.
fn shm_size(spec: &mut Value, value: &str) -> Result<(), GuestError> {
    let size = go_parse_u64(value).map_err(|e| {
        GuestError::InvalidRequest(format!(
            "{SHM_SIZE_KB}: /dev/shm size must be a valid integer: {}: {e}",
            super::quote_start(value)
        ))
    })?;
    if size == 0 {
        return Err(GuestError::InvalidRequest(format!(
            "{SHM_SIZE_KB}: /dev/shm size must be non-zero"
        )));
    }
    if let Some(mounts) = spec.get_mut("mounts").and_then(Value::as_array_mut) {
        mounts.retain(|m| m.get("destination").and_then(Value::as_str) != Some("/dev/shm"));
    }
    push_mount(
        spec,
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", format!("size={value}k")]}),
    );
    Ok(())
}

/// Applies the annotations that change the spec, for the kinds the original applies them to:
/// the core rlimit for pod containers (sandbox and workload); `/dev/shm` size, privileged
/// devices and the rebuild of `linux.devices` for workloads.
pub fn apply_annotations(spec: &mut Value, kind: &Kind) -> Result<(), GuestError> {
    if matches!(kind, Kind::Standalone) {
        return Ok(());
    }
    if let Some(core) = annotation(spec, RLIMIT_CORE)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
    {
        core_rlimit(spec, &core)?;
    }
    if !matches!(kind, Kind::Workload { .. }) {
        return Ok(());
    }
    if let Some(kb) = annotation(spec, SHM_SIZE_KB).map(str::to_string) {
        shm_size(spec, &kb)?;
    }
    if bool_annotation(spec, PRIVILEGED, false) {
        super::devices::add_host_devices(spec, std::path::Path::new("/dev"));
        if !spec["linux"]["resources"].is_object() {
            spec["linux"]["resources"] = json!({});
        }
        spec["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
    } else {
        super::devices::rebuild_devices(spec)?;
    }
    Ok(())
}

pub fn remove_namespace(spec: &mut Value, kind: &str) {
    if let Some(ns) = spec
        .pointer_mut("/linux/namespaces")
        .and_then(Value::as_array_mut)
    {
        ns.retain(|n| n.get("type").and_then(Value::as_str) != Some(kind));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload() -> Kind {
        Kind::Workload {
            sandbox_id: "s".into(),
        }
    }

    #[test]
    fn annotations_of_a_workload() {
        let mut spec = json!({"annotations": {SHM_SIZE_KB: "1024", RLIMIT_CORE: "1;2"},
            "linux": {"namespaces": [{"type": "network"}, {"type": "pid"}]}, "process": {}});
        apply_annotations(&mut spec, &workload()).unwrap();
        assert_eq!(spec["mounts"][0]["options"][4], "size=1024k");
        assert_eq!(
            spec["process"]["rlimits"][0],
            json!({"type": "RLIMIT_CORE", "soft": 1, "hard": 2})
        );
        let mut spec = json!({"linux": {"devices": [{"path": "/dev/does-not-exist"}]}});
        assert!(apply_annotations(&mut spec, &workload()).is_err());
        let mut spec = json!({"linux": {"devices": [{"path": "/dev/null"}]}});
        apply_annotations(&mut spec, &workload()).unwrap();
        assert_eq!(spec["linux"]["devices"][0]["type"], "c");
        assert_eq!(spec["linux"]["devices"][0]["major"], 1);
    }

    /// Values the original refuses, and the kinds that never read a key.
    #[test]
    fn bad_values_refused_as_the_original() {
        for (key, value) in [
            (SHM_SIZE_KB, ""),
            (SHM_SIZE_KB, "0"),
            (SHM_SIZE_KB, "-1"),
            (SHM_SIZE_KB, "+5"),
            (SHM_SIZE_KB, "64k"),
            (SHM_SIZE_KB, " 64"),
            (SHM_SIZE_KB, "99999999999999999999999"),
            (RLIMIT_CORE, "1"),
            (RLIMIT_CORE, "1;2;3"),
            (RLIMIT_CORE, "a;2"),
            (RLIMIT_CORE, "1;-2"),
        ] {
            let mut spec = json!({"annotations": {key: value}, "process": {}});
            let e = apply_annotations(&mut spec, &workload())
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{key}={value:?}: {e}");
        }
        // Empty rlimitcore is ignored; standalone containers read neither key.
        let mut spec = json!({"annotations": {RLIMIT_CORE: ""}, "process": {}});
        apply_annotations(&mut spec, &workload()).unwrap();
        assert!(spec["process"].get("rlimits").is_none());
        let mut spec = json!({"annotations": {SHM_SIZE_KB: "x", RLIMIT_CORE: "x"}});
        apply_annotations(&mut spec, &Kind::Standalone).unwrap();
        // A sandbox reads the core rlimit only.
        let mut spec =
            json!({"annotations": {SHM_SIZE_KB: "x", RLIMIT_CORE: "3;4"}, "process": {}});
        apply_annotations(&mut spec, &Kind::Sandbox).unwrap();
        assert_eq!(spec["process"]["rlimits"][0]["hard"], 4);
        assert!(spec.get("mounts").is_none());
    }

    #[test]
    fn booleans_as_go() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(go_parse_bool(t), Some(true));
        }
        for v in ["yes", "tRUE", "", " true"] {
            assert_eq!(go_parse_bool(v), None);
            let spec = json!({"annotations": {PRIVILEGED: v}});
            assert!(!bool_annotation(&spec, PRIVILEGED, false));
            assert!(bool_annotation(&spec, PRIVILEGED, true));
        }
        let mut spec = json!({"annotations": {PRIVILEGED: "1"}, "linux": {"devices": [{"path": "/dev/nope"}]}});
        apply_annotations(&mut spec, &workload()).unwrap();
        assert_eq!(spec["linux"]["resources"]["devices"][0]["allow"], true);
    }
}
