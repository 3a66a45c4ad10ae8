//! Security policy enforcement: the seam every enforcement point of the guest goes through
//! (spec §5.9, §5.10, §10.8; `security-policy.md`, cited SP §n).
//!
//! The guest asks one [`Policy`] before each action the host requests; the policy asks its
//! current [`Enforcer`]:
//! - [`open_door::OpenDoor`]: allows everything (`-initial-policy-stance allow`, or a
//!   `SecurityPolicy` with an empty policy);
//! - [`closed_door::ClosedDoor`]: refuses nearly everything with fixed messages
//!   (`-initial-policy-stance deny`, SP §8);
//! - the Rego enforcer (a `SecurityPolicy` with a policy): decides with the policy, the
//!   framework and the API module (SP §3).
//!
//! An enforcer answers with a [`Decision`] (the rule's result object) or a [`PolicyError`]; the
//! guest turns a refusal into an error response and does nothing.

pub mod closed_door;
pub mod fragment;
pub mod input;
pub mod open_door;
pub mod rego;
pub mod seccomp;
pub mod snp;

use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use serde_json::{Map, Value};

/// The enforcement points of the policy API (`api.rego`, version 0.12.0; SP §4.1). Their
/// introducing versions and default results live in the API module, not here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnforcementPoint {
    MountDevice,
    RwMountDevice,
    MountBlockdev,
    UnmountDevice,
    RwUnmountDevice,
    UnmountBlockdev,
    MountOverlay,
    UnmountOverlay,
    ScratchMount,
    ScratchUnmount,
    CreateContainer,
    ExecInContainer,
    ExecExternal,
    ShutdownContainer,
    SignalContainerProcess,
    Plan9Mount,
    Plan9Unmount,
    GetProperties,
    DumpStacks,
    RuntimeLogging,
    LoadFragment,
    LoadTransparencyTrustList,
    HostNetwork,
    MountCims,
    RegistryChanges,
    LogProvider,
}

impl EnforcementPoint {
    /// Every enforcement point, in the API table's order.
    pub const ALL: [Self; 26] = [
        Self::MountDevice,
        Self::RwMountDevice,
        Self::MountBlockdev,
        Self::MountOverlay,
        Self::MountCims,
        Self::RegistryChanges,
        Self::CreateContainer,
        Self::UnmountDevice,
        Self::RwUnmountDevice,
        Self::UnmountBlockdev,
        Self::UnmountOverlay,
        Self::ExecInContainer,
        Self::ExecExternal,
        Self::ShutdownContainer,
        Self::SignalContainerProcess,
        Self::Plan9Mount,
        Self::Plan9Unmount,
        Self::GetProperties,
        Self::DumpStacks,
        Self::RuntimeLogging,
        Self::LoadFragment,
        Self::ScratchMount,
        Self::ScratchUnmount,
        Self::LogProvider,
        Self::LoadTransparencyTrustList,
        Self::HostNetwork,
    ];

    /// The point named `name` (a rule name of the API module).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The rule's name in the policy (`data.policy.<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Self::MountDevice => "mount_device",
            Self::RwMountDevice => "rw_mount_device",
            Self::MountBlockdev => "mount_blockdev",
            Self::UnmountDevice => "unmount_device",
            Self::RwUnmountDevice => "rw_unmount_device",
            Self::UnmountBlockdev => "unmount_blockdev",
            Self::MountOverlay => "mount_overlay",
            Self::UnmountOverlay => "unmount_overlay",
            Self::ScratchMount => "scratch_mount",
            Self::ScratchUnmount => "scratch_unmount",
            Self::CreateContainer => "create_container",
            Self::ExecInContainer => "exec_in_container",
            Self::ExecExternal => "exec_external",
            Self::ShutdownContainer => "shutdown_container",
            Self::SignalContainerProcess => "signal_container_process",
            Self::Plan9Mount => "plan9_mount",
            Self::Plan9Unmount => "plan9_unmount",
            Self::GetProperties => "get_properties",
            Self::DumpStacks => "dump_stacks",
            Self::RuntimeLogging => "runtime_logging",
            Self::LoadFragment => "load_fragment",
            Self::LoadTransparencyTrustList => "load_transparency_trust_list",
            Self::HostNetwork => "host_network",
            Self::MountCims => "mount_cims",
            Self::RegistryChanges => "registry_changes",
            Self::LogProvider => "log_provider",
        }
    }
}

/// Why an enforcement point refused, or why its answer could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The policy refused: the closed door's fixed message, or the Rego enforcer's
    /// `policyDecision< base64 >policyDecision` text (SP §3.5).
    #[error("{0}")]
    Denied(String),
    /// The policy allowed, but its result cannot be used (a wrong type, SP §3.3), or the policy
    /// could not be installed.
    #[error("{0}")]
    Invalid(String),
}

/// The five capability sets of an OCI process (`caps_list`, SP §3.3).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Capabilities {
    pub bounding: Vec<String>,
    pub effective: Vec<String>,
    pub inheritable: Vec<String>,
    pub permitted: Vec<String>,
    pub ambient: Vec<String>,
}

impl Capabilities {
    /// The sets by their OCI key, in a fixed order.
    pub fn sets(&self) -> [(&'static str, &Vec<String>); 5] {
        [
            ("bounding", &self.bounding),
            ("effective", &self.effective),
            ("inheritable", &self.inheritable),
            ("permitted", &self.permitted),
            ("ambient", &self.ambient),
        ]
    }
}

/// An allowed enforcement point's result object: `allowed` and whatever the caller reads
/// (SP §3.3). Readers check types as the original does and fail with its messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    result: Map<String, Value>,
}

impl Decision {
    /// A result object as an enforcer produced it.
    pub fn new(result: Map<String, Value>) -> Self {
        Self { result }
    }

    /// `{"allowed": true}` plus `fields`.
    pub fn allowed_with(fields: &[(&str, Value)]) -> Self {
        let mut result = Map::new();
        result.insert("allowed".into(), Value::Bool(true));
        for (k, v) in fields {
            result.insert((*k).to_string(), v.clone());
        }
        Self { result }
    }

    /// The raw result object.
    pub fn result(&self) -> &Map<String, Value> {
        &self.result
    }

    /// `env_list`: `None` keeps the request's environment (absent or `null`).
    pub fn env_list(&self) -> Result<Option<Vec<String>>, PolicyError> {
        match self.result.get("env_list") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        PolicyError::Invalid(format!(
                            "members of env_list from policy must be strings, received {}",
                            go_type(v)
                        ))
                    })
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(other) => Err(PolicyError::Invalid(format!(
                "policy returned incorrect type for 'env_list', expected []interface{{}}, received {}",
                go_type(other)
            ))),
        }
    }

    /// `caps_list`: `None` keeps the request's capabilities (absent or `null`).
    pub fn caps_list(&self) -> Result<Option<Capabilities>, PolicyError> {
        let caps = match self.result.get("caps_list") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(PolicyError::Invalid(format!(
                "policy returned incorrect type for 'caps_list', expected map[string]interface{{}}, received {}",
                go_type(other)
            )))
            }
        };
        let set = |key: &str| -> Result<Vec<String>, PolicyError> {
            let Some(Value::Array(items)) = caps.get(key) else {
                return Err(PolicyError::Invalid(format!(
                    "capability sets of caps_list from policy must be an array of interface{{}}, received {}",
                    caps.get(key).map_or("<nil>", go_type)
                )));
            };
            items
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        PolicyError::Invalid(format!(
                            "members of capability sets from policy must be strings, received {}",
                            go_type(v)
                        ))
                    })
                })
                .collect()
        };
        Ok(Some(Capabilities {
            bounding: set("bounding")?,
            effective: set("effective")?,
            inheritable: set("inheritable")?,
            permitted: set("permitted")?,
            ambient: set("ambient")?,
        }))
    }

    /// `allow_stdio_access`: required, boolean.
    pub fn allow_stdio_access(&self) -> Result<bool, PolicyError> {
        match self.result.get("allow_stdio_access") {
            None => Err(PolicyError::Invalid(
                "unable to find value for key 'allow_stdio_access'".into(),
            )),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(PolicyError::Invalid(
                "value for 'allow_stdio_access' is not a boolean".into(),
            )),
        }
    }
}

/// The Go type name the original's messages print for a JSON value.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "json.Number",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// Keeps the entries of `request` that are in `allowed`, in the request's order, each once
/// (SP §3.3: the original keeps the intersection as a set in random order; the host cannot
/// depend on a random order, so the request's order is kept).
pub fn filter_list(request: &[String], allowed: &[String]) -> Vec<String> {
    let mut kept: Vec<String> = Vec::new();
    for entry in request {
        if allowed.contains(entry) && !kept.contains(entry) {
            kept.push(entry.clone());
        }
    }
    kept
}

/// A policy enforcer. Implementations: open door, closed door, Rego.
pub trait Enforcer: Send + Sync + Debug {
    /// Decides one enforcement point with its input object (shapes in [`input`]). `Ok` means
    /// allowed; a refusal is [`PolicyError::Denied`].
    fn decide(&self, point: EnforcementPoint, input: Value) -> Result<Decision, PolicyError>;

    /// The policy as the host encoded it (base64); empty for the open and closed doors. A
    /// non-empty policy means a confidential guest (SP §2.1).
    fn encoded_policy(&self) -> &str {
        ""
    }

    /// A copy of the policy's metadata, for a transaction's rollback (SP §3.7); `None` when the
    /// enforcer keeps none.
    fn metadata(&self) -> Option<Value> {
        None
    }

    /// Puts back metadata taken by [`Enforcer::metadata`].
    fn restore_metadata(&self, _metadata: Value) {}

    /// Adds mounts every container may have (the networking bind mounts, SP §9.4).
    fn extend_default_mounts(&self, _mounts: &[Value]) -> Result<(), PolicyError> {
        Ok(())
    }

    /// Offers a policy fragment whose signature and issuer were verified (SP §7.6): the Rego
    /// `text` of `issuer`'s `feed`, with the envelope's SVN if it had one and the receipts its
    /// envelope carried (parsed, not validated: the Rego enforcer validates them against the
    /// ledger keys trust lists gave it, SP §7.8). The open door accepts and ignores it.
    fn load_fragment(
        &self,
        _issuer: &str,
        _feed: &str,
        _header_svn: Option<i64>,
        _text: &str,
        _receipts: &[fragment::Receipt],
    ) -> Result<(), PolicyError> {
        Ok(())
    }

    /// Offers a verified transparency trust list (SP §7.9): `subject`'s ledger keys, from
    /// `issuer`, at `svn`. The policy's `load_transparency_trust_list` names the ledgers whose
    /// keys are kept. The open door accepts and ignores it.
    fn load_trust_list(
        &self,
        _issuer: &str,
        _subject: &str,
        _svn: i64,
        _ledgers: &std::collections::BTreeMap<String, Vec<fragment::TrustKey>>,
    ) -> Result<(), PolicyError> {
        Ok(())
    }
}

/// What the first `SecurityPolicy` request installed (SP §2.1), kept for the security context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    pub uvm_reference: String,
    pub uvm_hash_envelope_reference: String,
}

/// Signed reference information the host injected (SP §7.1), kept verbatim for the security
/// context (the last one of each kind).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReferenceInfo {
    pub tcb: Option<Vec<u8>>,
    pub platform: Option<Vec<u8>>,
}

/// The guest's policy state: the current enforcer (replaced once, by the first
/// `SecurityPolicy`) and the transaction lock of storage changes. Each container keeps its own
/// stdio decision.
#[derive(Debug)]
pub struct Policy {
    enforcer: RwLock<Arc<dyn Enforcer>>,
    /// Set by the first successful `SecurityPolicy`, even an empty one.
    installed: Mutex<Option<References>>,
    reference_info: Mutex<ReferenceInfo>,
    transaction: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Policy {
    /// A policy starting with `enforcer` (the stance's door).
    pub fn new(enforcer: Arc<dyn Enforcer>) -> Self {
        Self {
            enforcer: RwLock::new(enforcer),
            installed: Mutex::new(None),
            reference_info: Mutex::default(),
            transaction: tokio::sync::Mutex::new(()),
        }
    }

    /// The enforcer deciding now.
    pub fn enforcer(&self) -> Arc<dyn Enforcer> {
        Arc::clone(&self.enforcer.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Decides `point` with `input`.
    /// Each decision's time is logged at debug level (`policy decision`, `point`, `micros`):
    /// how a guest's own clock sees the cost of its policy.
    pub fn decide(&self, point: EnforcementPoint, input: Value) -> Result<Decision, PolicyError> {
        let started = std::time::Instant::now();
        let decision = self.enforcer().decide(point, input);
        tracing::debug!(
            point = point.name(),
            micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            allowed = decision.is_ok(),
            "policy decision"
        );
        if let Err(e) = &decision {
            tracing::info!(point = point.name(), error = %e, "denied by policy");
        }
        decision
    }

    /// Whether a policy (Rego) is installed: a confidential guest.
    pub fn is_confidential(&self) -> bool {
        !self.enforcer().encoded_policy().is_empty()
    }

    /// Whether a `SecurityPolicy` was installed already.
    pub fn is_installed(&self) -> bool {
        lock(&self.installed).is_some()
    }

    /// The references the installed `SecurityPolicy` carried.
    pub fn references(&self) -> Option<References> {
        lock(&self.installed).clone()
    }

    /// Installs the enforcer of the first `SecurityPolicy`; a second one is refused with the
    /// original's message, whatever either carried (SP §2.1 step 1).
    pub fn install(
        &self,
        enforcer: Arc<dyn Enforcer>,
        references: References,
    ) -> Result<(), PolicyError> {
        let mut installed = lock(&self.installed);
        if installed.is_some() {
            return Err(PolicyError::Invalid(
                "security policy has already been set".into(),
            ));
        }
        *self.enforcer.write().unwrap_or_else(|p| p.into_inner()) = enforcer;
        *installed = Some(references);
        Ok(())
    }

    /// Keeps signed reference information (`tcb`: TCB, else platform), replacing the last.
    pub fn set_reference_info(&self, tcb: bool, cose: Vec<u8>) {
        let mut info = lock(&self.reference_info);
        if tcb {
            info.tcb = Some(cose);
        } else {
            info.platform = Some(cose);
        }
    }

    /// The reference information kept so far.
    pub fn reference_info(&self) -> ReferenceInfo {
        lock(&self.reference_info).clone()
    }

    /// Fails with the original's message if a policy is installed already (checked before the
    /// work of building a new enforcer).
    pub fn check_not_installed(&self) -> Result<(), PolicyError> {
        if self.is_installed() {
            return Err(PolicyError::Invalid(
                "security policy has already been set".into(),
            ));
        }
        Ok(())
    }

    /// Runs `work` (a decision and the action it allows) as one transaction: if `work` fails,
    /// the policy's metadata is put back as it was, so that a refused or failed mount leaves no
    /// trace and can be retried (SP §3.7). Transactions run one at a time; under an enforcer
    /// that keeps no metadata (the open and closed doors) `work` just runs, concurrently with
    /// any other.
    pub async fn transaction<T, E>(
        &self,
        work: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        if self.enforcer().metadata().is_none() {
            return work.await;
        }
        let _one = self.transaction.lock().await;
        let enforcer = self.enforcer();
        let mut rollback = Rollback {
            before: enforcer.metadata(),
            enforcer,
        };
        let result = work.await;
        if result.is_ok() {
            rollback.before = None;
        }
        result
    }
}

/// Puts the metadata back when dropped still holding it: when the work failed, and also when
/// it panicked (the bridge answers a panicking request and goes on) or was cancelled.
struct Rollback {
    enforcer: Arc<dyn Enforcer>,
    before: Option<Value>,
}

impl Drop for Rollback {
    fn drop(&mut self) {
        if let Some(before) = self.before.take() {
            self.enforcer.restore_metadata(before);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_point_has_a_distinct_name() {
        let mut names: Vec<_> = EnforcementPoint::ALL.iter().map(|p| p.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EnforcementPoint::ALL.len());
    }

    #[test]
    fn result_fields_are_typed_as_the_original_reads_them() {
        let d = Decision::allowed_with(&[
            ("env_list", json!(["A=1", "B=2"])),
            ("allow_stdio_access", json!(false)),
        ]);
        assert_eq!(
            d.env_list().unwrap(),
            Some(vec!["A=1".into(), "B=2".into()])
        );
        assert!(!d.allow_stdio_access().unwrap());
        assert_eq!(d.caps_list().unwrap(), None);

        let bad = Decision::allowed_with(&[("env_list", json!("A=1"))]);
        assert_eq!(
            bad.env_list().unwrap_err().to_string(),
            "policy returned incorrect type for 'env_list', expected []interface{}, received string"
        );
        let bad = Decision::allowed_with(&[("env_list", json!([1]))]);
        assert_eq!(
            bad.env_list().unwrap_err().to_string(),
            "members of env_list from policy must be strings, received json.Number"
        );
        let bad = Decision::allowed_with(&[("caps_list", json!({"bounding": []}))]);
        assert!(bad
            .caps_list()
            .unwrap_err()
            .to_string()
            .starts_with("capability sets of caps_list from policy must be an array"));
        let missing = Decision::allowed_with(&[]);
        assert_eq!(
            missing.allow_stdio_access().unwrap_err().to_string(),
            "unable to find value for key 'allow_stdio_access'"
        );
    }

    #[test]
    fn filtering_keeps_the_request_order_and_drops_the_rest() {
        let request: Vec<String> = ["A=1", "B=2", "C=3", "A=1"].map(String::from).into();
        let allowed: Vec<String> = ["C=3", "A=1", "Z=9"].map(String::from).into();
        assert_eq!(filter_list(&request, &allowed), vec!["A=1", "C=3"]);
    }

    #[derive(Debug, Default)]
    struct Counting {
        metadata: Mutex<Value>,
    }
    impl Enforcer for Counting {
        fn decide(&self, _: EnforcementPoint, _: Value) -> Result<Decision, PolicyError> {
            let mut m = lock(&self.metadata);
            let n = m.as_u64().unwrap_or(0);
            *m = json!(n + 1);
            Ok(Decision::allowed_with(&[]))
        }
        fn metadata(&self) -> Option<Value> {
            Some(lock(&self.metadata).clone())
        }
        fn restore_metadata(&self, metadata: Value) {
            *lock(&self.metadata) = metadata;
        }
    }

    #[tokio::test]
    async fn a_failed_transaction_puts_the_metadata_back() {
        let enforcer = Arc::new(Counting::default());
        let policy = Policy::new(enforcer.clone());
        let ok: Result<(), ()> = policy
            .transaction(async {
                policy
                    .decide(EnforcementPoint::MountDevice, json!({}))
                    .unwrap();
                Ok(())
            })
            .await;
        assert!(ok.is_ok());
        let failed: Result<(), &str> = policy
            .transaction(async {
                policy
                    .decide(EnforcementPoint::MountDevice, json!({}))
                    .unwrap();
                Err("mount failed")
            })
            .await;
        assert_eq!(failed, Err("mount failed"));
        assert_eq!(enforcer.metadata(), Some(json!(1)));
        // A panic in the action (answered by the bridge, which goes on) rolls back too.
        use futures_util::FutureExt as _;
        let panicked = std::panic::AssertUnwindSafe(policy.transaction(async {
            policy
                .decide(EnforcementPoint::MountDevice, json!({}))
                .unwrap();
            assert_eq!(enforcer.metadata(), Some(json!(2)));
            panic!("the action panicked");
            #[allow(unreachable_code)]
            Ok::<(), ()>(())
        }))
        .catch_unwind()
        .await;
        assert!(panicked.is_err());
        assert_eq!(enforcer.metadata(), Some(json!(1)));
    }

    #[test]
    fn a_second_policy_is_refused() {
        let policy = Policy::new(Arc::new(open_door::OpenDoor));
        policy
            .install(Arc::new(open_door::OpenDoor), References::default())
            .unwrap();
        assert_eq!(
            policy
                .install(Arc::new(open_door::OpenDoor), References::default())
                .unwrap_err()
                .to_string(),
            "security policy has already been set"
        );
    }
}
