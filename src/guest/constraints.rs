//! ContainerConstraints (spec §5.8): new OCI `LinuxResources` for a running container, applied
//! by the runtime helper to its cgroup (the original runs `runc update`). Values are checked
//! first, so a bad request leaves the old limits in place.

use serde_json::Value;

use super::container::Container;
use super::{Guest, GuestError};
use crate::runtime::{HelperRequest, HelperResponse};

fn bad(what: String) -> GuestError {
    GuestError::InvalidRequest(format!("ContainerConstraints: {what}"))
}

/// -1 (no limit) or within `min..=max`.
fn check(resources: &Value, pointer: &str, min: i64, max: i64) -> Result<(), GuestError> {
    match resources.pointer(pointer) {
        None | Some(Value::Null) => Ok(()),
        Some(v) => match v.as_i64() {
            Some(-1) => Ok(()),
            Some(n) if (min..=max).contains(&n) => Ok(()),
            _ => Err(bad(format!(
                "{} = {v} is out of range (-1 or {min}..={max})",
                pointer.trim_start_matches('/').replace('/', ".")
            ))),
        },
    }
}

/// Checks the values a kernel would take badly or that make no sense for a container.
pub fn validate(resources: &Value) -> Result<(), GuestError> {
    if !resources.is_object() {
        return Err(bad("Linux must be an object".into()));
    }
    const GIB: i64 = 1 << 30;
    // 4 MiB is the least a container process can live in; 2^50 is beyond any VM.
    for p in ["/memory/limit", "/memory/reservation", "/memory/swap"] {
        check(resources, p, 4 << 20, GIB << 20)?;
    }
    check(resources, "/cpu/shares", 2, 262_144)?;
    check(resources, "/cpu/quota", 1000, i64::MAX / 2)?;
    check(resources, "/cpu/period", 1000, 1_000_000)?;
    check(resources, "/pids/limit", 1, 1 << 22)?;
    Ok(())
}

impl Guest {
    pub async fn update_container_constraints(
        &self,
        c: &Container,
        settings: Option<&Value>,
    ) -> Result<(), GuestError> {
        let linux = settings
            .and_then(|s| s.get("Linux"))
            .cloned()
            .unwrap_or_else(|| Value::Object(Default::default()));
        validate(&linux)?;
        if c.init.has_exited() {
            return Err(GuestError::NotRunning(c.id.clone()));
        }
        match self
            .runtime
            .call(
                &HelperRequest::Update {
                    id: c.id.clone(),
                    resources: linux,
                },
                Vec::new(),
            )
            .await?
        {
            HelperResponse::Done => Ok(()),
            other => Err(GuestError::InvalidRequest(format!(
                "unexpected runtime answer {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limits_are_checked() {
        assert!(validate(&json!({"memory": {"limit": 536870912}, "cpu": {"shares": 512}})).is_ok());
        assert!(validate(&json!({})).is_ok());
        assert!(validate(&json!({"memory": {"limit": -1}})).is_ok());
        for bad in [
            json!({"memory": {"limit": -5}}),
            json!({"memory": {"limit": 1024}}),
            json!({"memory": {"limit": i64::MAX}}),
            json!({"cpu": {"shares": 1}}),
            json!({"cpu": {"period": 10}}),
            json!({"pids": {"limit": 0}}),
            json!({"memory": {"limit": "lots"}}),
            json!([1]),
        ] {
            assert!(validate(&bad).is_err(), "{bad}");
        }
    }
}
