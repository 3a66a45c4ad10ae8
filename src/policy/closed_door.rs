//! The closed door (`-initial-policy-stance deny`): nearly every enforcement point refuses with
//! the original's fixed message, no decision text (SP §8). It holds no policy, so it does not
//! make the guest confidential; a `SecurityPolicy` may still replace it (once).

use serde_json::Value;

use super::{Decision, EnforcementPoint, Enforcer, PolicyError};

/// Refuses everything but `mount_cims` (a Windows point the original's closed door allows).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClosedDoor;

/// The refusal of each point (SP §8 table).
pub fn message(point: EnforcementPoint) -> Option<&'static str> {
    use EnforcementPoint as P;
    Some(match point {
        P::MountDevice | P::Plan9Mount => "mounting is denied by policy",
        P::RwMountDevice => "Read-write device mounting is denied by policy",
        P::MountBlockdev => "block-device mounting is denied by policy",
        P::UnmountDevice | P::Plan9Unmount => "unmounting is denied by policy",
        P::RwUnmountDevice => "Read-write device unmounting is denied by policy",
        P::UnmountBlockdev => "block-device unmounting is denied by policy",
        P::MountOverlay => "creating an overlay fs is denied by policy",
        P::UnmountOverlay => "removing an overlay fs is denied by policy",
        P::CreateContainer => "running commands is denied by policy",
        P::ExecInContainer => "starting additional processes in a container is denied by policy",
        P::ExecExternal => "starting additional processes in uvm is denied by policy",
        P::ShutdownContainer => "shutting down containers is denied by policy",
        P::SignalContainerProcess => "signalling container processes is denied by policy",
        P::GetProperties => "getting container properties is denied by policy",
        P::DumpStacks => "getting stack dumps is denied by policy",
        P::RuntimeLogging => "runtime logging is denied by policy",
        P::HostNetwork => "host network is denied by policy",
        P::LoadFragment => "loading fragments is denied by policy",
        P::LoadTransparencyTrustList => "loading transparency trust lists is denied by policy",
        P::ScratchMount => "mounting scratch is denied by the policy",
        P::ScratchUnmount => "unmounting scratch is denied by the policy",
        P::RegistryChanges => "registry changes are denied by policy",
        P::LogProvider => "log provider is denied by policy",
        P::MountCims => return None,
    })
}

impl Enforcer for ClosedDoor {
    fn decide(&self, point: EnforcementPoint, _input: Value) -> Result<Decision, PolicyError> {
        match message(point) {
            Some(m) => Err(PolicyError::Denied(m.to_string())),
            None => Ok(Decision::allowed_with(&[])),
        }
    }

    fn load_fragment(
        &self,
        _issuer: &str,
        _feed: &str,
        _header_svn: Option<i64>,
        _text: &str,
        _receipts: &[super::fragment::Receipt],
    ) -> Result<(), PolicyError> {
        Err(PolicyError::Denied(
            "loading fragments is denied by policy".into(),
        ))
    }

    fn load_trust_list(
        &self,
        _issuer: &str,
        _subject: &str,
        _svn: i64,
        _ledgers: &std::collections::BTreeMap<String, Vec<super::fragment::TrustKey>>,
    ) -> Result<(), PolicyError> {
        Err(PolicyError::Denied(
            "loading transparency trust lists is denied by policy".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_but_mount_cims_is_refused() {
        for point in EnforcementPoint::ALL {
            let d = ClosedDoor.decide(point, Value::Null);
            assert_eq!(d.is_ok(), point == EnforcementPoint::MountCims, "{point:?}");
        }
    }
}
