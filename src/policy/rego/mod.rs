//! The Rego enforcer: a policy from the host, decided with our own framework and API modules in
//! the `regorus` interpreter, in process (SP §3).
//!
//! One enforcement (SP §3.2): query `data.policy.<point>`; apply the metadata operations its
//! result carries; ask `data.framework.enforcement_point_info` whether the policy's
//! `api_version` knows the point; fill in the API's default results (or ask the framework,
//! for `use_framework` points the policy leaves undefined); read `allowed`. A refusal queries
//! `data.policy.reason` and becomes a `policyDecision< base64 >policyDecision` text
//! ([`decision`]).

pub mod decision;
pub mod metadata;

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Mutex, MutexGuard};

use serde_json::{json, Map, Value};

use super::{Decision, EnforcementPoint, Enforcer, PolicyError};

/// Our framework (package `framework`, version 0.5.0): the rules generated policies delegate to.
pub const FRAMEWORK: &str = include_str!("framework.rego");
/// The API module (package `api`, version 0.12.0): every point, its version and defaults.
pub const API: &str = include_str!("api.rego");

/// Longest a query may evaluate before it is stopped (the decision is then a refusal).
pub const MAX_DECISION_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Longest error text a refusal carries before parts of the decision are dropped (SP §3.6).
pub const MAX_ERROR_MESSAGE: usize = 3072;

/// Mounts every container may have (SP §9.4): destination, type, source, options.
const DEFAULT_MOUNTS: &[(&str, &str, &str, &[&str])] = &[
    ("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
    (
        "/dev",
        "tmpfs",
        "tmpfs",
        &["nosuid", "strictatime", "mode=755", "size=65536k"],
    ),
    (
        "/dev/pts",
        "devpts",
        "devpts",
        &[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ],
    ),
    (
        "/dev/shm",
        "tmpfs",
        "shm",
        &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    ),
    (
        "/dev/mqueue",
        "mqueue",
        "mqueue",
        &["nosuid", "noexec", "nodev"],
    ),
    (
        "/sys",
        "sysfs",
        "sysfs",
        &["nosuid", "noexec", "nodev", "ro"],
    ),
    (
        "/run",
        "tmpfs",
        "tmpfs",
        &["nosuid", "strictatime", "mode=755", "size=65536k"],
    ),
    (
        "/sys/fs/cgroup",
        "cgroup",
        "cgroup",
        &["nosuid", "noexec", "nodev", "relatime", "ro"],
    ),
    (
        "/sys/fs/cgroup",
        "cgroup2",
        "cgroup2",
        &["nosuid", "noexec", "nodev", "relatime", "ro"],
    ),
];

/// Mounts a privileged (`allow_elevated`) container may have besides (SP §9.4).
const PRIVILEGED_MOUNTS: &[(&str, &str, &str, &[&str])] = &[
    (
        "/sys/fs/cgroup",
        "cgroup",
        "cgroup",
        &["nosuid", "noexec", "nodev", "relatime", "rw"],
    ),
    (
        "/sys/fs/cgroup",
        "cgroup2",
        "cgroup2",
        &["nosuid", "noexec", "nodev", "relatime", "rw"],
    ),
    (
        "/sys",
        "sysfs",
        "sysfs",
        &["nosuid", "noexec", "nodev", "rw"],
    ),
];

/// The capabilities of an unprivileged container without a rule of its own (SP §9.5).
pub const DEFAULT_UNPRIVILEGED_CAPABILITIES: &[&str] = &crate::protocol::DEFAULT_CAPABILITIES;

/// The capabilities of a privileged container without a rule of its own (SP §9.5).
pub const DEFAULT_PRIVILEGED_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

fn mounts_json(list: &[(&str, &str, &str, &[&str])]) -> Value {
    Value::Array(
        list.iter()
            .map(|(destination, kind, source, options)| {
                json!({"destination": destination, "type": kind, "source": source, "options": options})
            })
            .collect(),
    )
}

/// The data document a new enforcer starts with (SP §3.1).
fn initial_data() -> Value {
    json!({
        "defaultMounts": mounts_json(DEFAULT_MOUNTS),
        "privilegedMounts": mounts_json(PRIVILEGED_MOUNTS),
        "sandboxPrefix": "sandbox://",
        "hugePagesPrefix": "hugepages://",
        "plan9Prefix": "plan9://",
        "defaultUnprivilegedCapabilities": DEFAULT_UNPRIVILEGED_CAPABILITIES,
        "defaultPrivilegedCapabilities": DEFAULT_PRIVILEGED_CAPABILITIES,
        "metadata": {"operatingsystem": {"ostype": "linux"}},
    })
}

/// The interpreter, and the parts of `data` that change.
///
/// The data document given to the engine never changes after construction: any change would
/// make regorus analyse every module again before the next query (about 5 ms for a generated
/// policy). What changes — `data.metadata` with decisions, `data.defaultMounts` with
/// ExtendDefaultMounts — is kept here and handed to each query in two input keys
/// ([`METADATA_KEY`], [`DEFAULT_MOUNTS_KEY`]), where the framework reads them; when another
/// module may read them from `data`, the query also overrides `data` with Rego's `with`
/// keyword ([`WITH`]; a literal in the query text would be parsed at every query, which costs
/// more than the decision itself).
#[derive(Debug)]
struct State {
    engine: Engine,
    /// The host's policy text, and the fragments kept as modules (`add_module`), by
    /// `<issuer>><feed>`: what a new engine is built from.
    policy: String,
    tuning: Tuning,
    kept: std::collections::BTreeMap<String, Fragment>,
    metadata: Document,
    default_mounts: Document,
    /// Keys of the ledgers trust lists offered and the policy allowed: ledger → key id (hex) →
    /// the key and the trust-list subjects that offered it (SP §7.9).
    trust_keys: std::collections::BTreeMap<String, std::collections::BTreeMap<String, TrustedKey>>,
    /// `data.framework.enforcement_point_info` of each point asked so far: it depends only on
    /// the policy's `api_version` and the API module, which never change.
    info: std::collections::HashMap<EnforcementPoint, Map<String, Value>>,
}

/// What every policy query appends: the current metadata and default mounts, from the input
/// keys [`METADATA_KEY`] and [`DEFAULT_MOUNTS_KEY`] that the guest adds to each input (and that
/// decisions never show).
const WITH: &str = " with data.metadata as input.__gcs_metadata with data.defaultMounts as input.__gcs_default_mounts";
const METADATA_KEY: &str = "__gcs_metadata";
const DEFAULT_MOUNTS_KEY: &str = "__gcs_default_mounts";

/// Decides with a host's Rego policy.
#[derive(Debug)]
pub struct RegoEnforcer {
    /// The policy as the host encoded it (base64), kept for the security context.
    encoded: String,
    state: Mutex<State>,
    /// Longest refusal text before parts are dropped; 0 keeps everything.
    max_error: usize,
}

/// A ledger key a trust list offered.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TrustedKey {
    key: Vec<u8>,
    offered_by: Vec<String>,
}

/// A fragment module kept in the engine.
#[derive(Debug, Clone)]
struct Fragment {
    namespace: String,
    /// The fragment's text with its parameters appended, as compiled.
    module: String,
}

/// The package a fragment declares on its first line (SP §7.6 step 1).
///
/// Errors: an empty first line, a first line that is not `package <identifier>`, or one of the
/// reserved packages.
pub fn fragment_namespace(text: &str) -> Result<String, String> {
    let first = text.split('\n').next().unwrap_or_default();
    if first.trim().is_empty() {
        return Err("Fragment Rego is empty".into());
    }
    let ident = first
        .strip_prefix("package ")
        .map(|rest| rest.trim_start_matches(' ').trim_end())
        .filter(|id| {
            let mut chars = id.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .ok_or_else(|| format!("valid package definition required on first line, got {first:?}"))?;
    // The original's reserved packages, then the other top-level `data` keys the engine sets
    // (a package there would merge into them).
    if ["framework", "api", "policy", "metadata"].contains(&ident)
        || ENGINE_DATA.contains(&ident)
        || initial_data().get(ident).is_some()
    {
        return Err(format!(
            "namespace {ident:?} is reserved and cannot be used for fragments"
        ));
    }
    Ok(ident.to_string())
}

/// SP §7.6 step 2: the `receipts` input of `load_fragment`. Each receipt is checked against the
/// keys trust lists offered for the ledger it names (its CWT `iss`) and no other ledger's; one
/// that names a ledger with no kept keys, or that does not validate (SP §7.8), is left out (the
/// latter with a warning). Each receipt that validates gives
/// `{"issuer": <ledger>, "ttl_subjects": [<subjects of the trust lists that offered its kid's key>]}`.
fn validated_receipts(
    trust_keys: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, TrustedKey>>,
    receipts: &[crate::policy::fragment::Receipt],
) -> Vec<Value> {
    use crate::policy::fragment::{kid_hex, validate_receipt};
    receipts
        .iter()
        .filter_map(|receipt| {
            let kid = kid_hex(&receipt.kid);
            let Some(keys) = trust_keys.get(&receipt.issuer) else {
                tracing::debug!(ledger = %receipt.issuer, kid = %kid, "a fragment's receipt names a ledger no trust list gave keys for; ignored");
                return None;
            };
            let lookup = |kid: &[u8]| keys.get(&kid_hex(kid)).map(|k| k.key.as_slice());
            if let Err(e) = validate_receipt(receipt, lookup) {
                tracing::warn!(ledger = %receipt.issuer, kid = %kid, error = %e, "a fragment's receipt does not validate; ignored");
                return None;
            }
            let subjects = keys
                .get(&kid)
                .map(|k| k.offered_by.clone())
                .unwrap_or_default();
            Some(json!({"issuer": receipt.issuer, "ttl_subjects": subjects}))
        })
        .collect()
}

/// An engine with the policy, our framework and API modules, the kept fragments and the
/// unchanging part of `data`, and how it is queried.
#[derive(Debug)]
struct Engine {
    rego: regorus::Engine,
    /// Whether a module other than ours may read `data.metadata` or `data.defaultMounts`, or
    /// replace the input ([`reads_engine_data`]): queries then pass the current values with
    /// `with` (a parsed query, ~0.3 ms more) and the framework reads them from `data`;
    /// otherwise rules are evaluated directly and the framework reads them from the input.
    with_data: bool,
}

/// Whether a module may read `data.metadata` or `data.defaultMounts`, or hide the input keys
/// the framework reads, or read what the engine keeps in `data` (which differs with
/// [`Tuning`]): it names them, names the engine's keys (`gcs_engine`, `gcs_declarations`,
/// `__gcs_`), uses `data` other than as `data.<name>` (a dynamic `data[x]`, `data` as a value),
/// or uses `with`; strings and comments do not count. Conservative: any part of a name counts.
fn reads_engine_data(text: &str) -> bool {
    let code = code_lines(text)
        .into_iter()
        .map(|(_, line)| line)
        .collect::<Vec<_>>()
        .join("\n");
    if [
        "metadata",
        "defaultMounts",
        "gcs_engine",
        "gcs_declarations",
        "__gcs_",
    ]
    .iter()
    .any(|name| code.contains(name))
    {
        return true;
    }
    let text = code.as_str();
    let bytes = text.as_bytes();
    text.match_indices("with")
        .any(|(at, _)| is_word(bytes, at, 4))
        || text.match_indices("data").any(|(at, _)| {
            let before = at.checked_sub(1).map(|i| bytes[i]);
            is_word(bytes, at, 4) && before != Some(b'.') && bytes.get(at + 4) != Some(&b'.')
        })
}

/// Whether `text[at..at + len]` is a whole word (no identifier character on either side).
fn is_word(text: &[u8], at: usize, len: usize) -> bool {
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    at.checked_sub(1)
        .and_then(|i| text.get(i))
        .is_none_or(|b| !ident(*b))
        && text.get(at + len).is_none_or(|b| !ident(*b))
}

/// The lines of a Rego module with comments dropped and every string literal (`"…"` or
/// `` `…` ``) emptied, each with the bracket depth at its start.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let (mut line, mut line_depth, mut depth) = (String::new(), 0usize, 0usize);
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '`' => {
                line.push_str("\"\"");
                let mut escaped = false;
                for inner in chars.by_ref() {
                    match inner {
                        _ if escaped => escaped = false,
                        '\\' if c == '"' => escaped = true,
                        _ if inner == c => break,
                        _ => {}
                    }
                }
            }
            '#' => {
                for inner in chars.by_ref() {
                    if inner == '\n' {
                        break;
                    }
                }
                lines.push((line_depth, std::mem::take(&mut line)));
                line_depth = depth;
            }
            '\n' => {
                lines.push((line_depth, std::mem::take(&mut line)));
                line_depth = depth;
            }
            '(' | '[' | '{' => {
                depth += 1;
                line.push(c);
            }
            ')' | ']' | '}' => {
                depth = depth.saturating_sub(1);
                line.push(c);
            }
            _ => line.push(c),
        }
    }
    lines.push((line_depth, line));
    lines
}

/// Whether the policy's declarations can be evaluated once, at load, because they are
/// constants, as generated policies write them. The module must name neither the input, the
/// metadata, nor a builtin whose value varies (`rand.`, `time.`, `uuid.`, `opa.`, `http.`);
/// every line naming `data` must be a top-level delegation of an enforcement point (or
/// `reason`) to the framework rule of the same name (`mount_device :=
/// data.framework.mount_device`, `reason := {"errors": data.framework.errors}`); and no other
/// rule may use a delegated name, so that nothing the framework computes can reach a
/// declaration. Conservative: anything else is evaluated at each query.
fn declarations_constant(policy: &str) -> bool {
    let lines = code_lines(policy);
    let named = |name: &str| lines.iter().any(|(_, code)| code.contains(name));
    if named("input")
        || reads_engine_data(policy)
        || ["rand.", "time.", "uuid.", "opa.", "http."]
            .iter()
            .any(|f| named(f))
    {
        return false;
    }
    let mut delegated = Vec::new();
    for (depth, code) in &lines {
        if !code
            .match_indices("data")
            .any(|(at, _)| is_word(code.as_bytes(), at, 4))
        {
            continue;
        }
        if *depth != 0 || code.starts_with(char::is_whitespace) {
            return false;
        }
        let Some((rule, value)) = code.split_once(":=") else {
            return false;
        };
        let (rule, value) = (rule.trim(), value.trim());
        let delegable = rule == "reason" || EnforcementPoint::from_name(rule).is_some();
        let delegation = value == format!("data.framework.{rule}")
            || (rule == "reason" && value == r#"{"": data.framework.errors}"#);
        if !delegable || !delegation {
            return false;
        }
        delegated.push(rule.to_string());
    }
    // Each delegated name appears once outside strings and comments, as its rule's head
    // (`data.framework.<name>` is preceded by a dot and does not count).
    delegated.iter().all(|name| {
        let uses: usize = lines
            .iter()
            .map(|(_, code)| {
                code.match_indices(name.as_str())
                    .filter(|(at, _)| {
                        is_word(code.as_bytes(), *at, name.len()) && !code[..*at].ends_with('.')
                    })
                    .count()
            })
            .sum();
        uses == 1
    })
}

/// How an enforcer evaluates rules. The default chooses per policy ([`reads_engine_data`],
/// [`declarations_constant`]); the others exist so that tests can show every way decides the
/// same, and benchmarks what each costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tuning {
    /// Always pass the metadata and default mounts with `with` in a parsed query.
    pub always_with_data: bool,
    /// Never evaluate the policy's declarations at load.
    pub never_precompute: bool,
}

/// The policy declarations the framework reads (`data.policy.<name>`).
const DECLARATIONS: [&str; 5] = [
    "containers",
    "external_processes",
    "fragments",
    "platform_rules",
    "transparency_trust_lists",
];

/// Top-level `data` keys the engine sets: no fragment may declare them as its package.
const ENGINE_DATA: [&str; 2] = ["gcs_declarations", "gcs_engine"];

fn build_engine<'a>(
    policy: &str,
    fragments: impl Iterator<Item = &'a Fragment>,
    tuning: Tuning,
) -> Result<Engine, String> {
    let mut rego = regorus::Engine::new();
    rego.set_policy_length_config(length_config());
    // A decision that runs away (a host-sized list against many regular expressions, say) is
    // stopped and refused rather than holding the bridge. The clock is read every 4096 units
    // of work (well under a millisecond of evaluation): in a VM whose clock source is not
    // the TSC, each read is an exit to the hypervisor.
    rego.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
        limit: MAX_DECISION_TIME,
        check_interval: NonZeroU32::new(4096).unwrap_or(NonZeroU32::MIN),
    });
    rego.add_policy("policy.rego".into(), policy.into())
        .map_err(|e| e.to_string())?;
    rego.add_policy("framework.rego".into(), FRAMEWORK.into())
        .map_err(|e| e.to_string())?;
    rego.add_policy("api.rego".into(), API.into())
        .map_err(|e| e.to_string())?;
    let data = initial_data();
    rego.add_data(regorus::Value::from(data.clone()))
        .map_err(|e| e.to_string())?;
    let fragments: Vec<&Fragment> = fragments.collect();
    let with_data = tuning.always_with_data
        || reads_engine_data(policy)
        || fragments.iter().any(|f| reads_engine_data(&f.module));
    let mut engine = Engine { rego, with_data };
    // Before any fragment module is added: the declarations are the policy's alone.
    if !tuning.never_precompute
        && declarations_constant(policy)
        && !fragments.iter().any(|f| reads_engine_data(&f.module))
    {
        match engine.declarations(&data) {
            Ok(declarations) => {
                let mut top = std::collections::BTreeMap::new();
                top.insert(regorus::Value::from("gcs_declarations"), declarations);
                engine
                    .rego
                    .add_data(regorus::Value::from(top))
                    .map_err(|e| e.to_string())?;
            }
            // Left to each query, which will meet the same error.
            Err(e) => tracing::debug!(error = %e, "policy declarations not precomputed"),
        }
    }
    engine
        .rego
        .add_data(regorus::Value::from(
            json!({"gcs_engine": {"with_data": with_data}}),
        ))
        .map_err(|e| e.to_string())?;
    for f in fragments {
        engine
            .rego
            .add_policy(format!("{}.rego", f.namespace), f.module.clone())
            .map_err(|e| e.to_string())?;
    }
    Ok(engine)
}

impl Engine {
    /// `data.policy.<path>` or `data.framework.<path>` for `input` (which carries the current
    /// metadata and default mounts), as JSON: undefined when the rule does not exist.
    fn eval(&mut self, path: &str, input: regorus::Value) -> Result<Answer, String> {
        self.rego.set_input(input);
        let value = self.eval_value(path)?;
        if value == regorus::Value::Undefined {
            return Ok(Answer::Undefined);
        }
        serde_json::to_value(&value)
            .map(Answer::Value)
            .map_err(|e| e.to_string())
    }

    /// The value at `path` for the input already set. A path that names no rule of its own
    /// (a rule written with a ref head, `mount_device.allowed := …`, or nothing at all) goes
    /// through a parsed query, which sees every way of defining it.
    fn eval_value(&mut self, path: &str) -> Result<regorus::Value, String> {
        if !self.with_data {
            match self.rego.eval_rule(path.to_string()) {
                Ok(v) => return Ok(v),
                Err(e) if e.to_string() == NO_SUCH_RULE => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        let query = if self.with_data {
            format!("{path}{WITH}")
        } else {
            path.to_string()
        };
        let results = self
            .rego
            .eval_query(query, false)
            .map_err(|e| e.to_string())?;
        Ok(
            match results.result.first().and_then(|r| r.expressions.first()) {
                Some(e) => e.value.clone(),
                None => regorus::Value::Undefined,
            },
        )
    }

    /// The declarations of a policy whose declarations are constant, as regorus values (sets
    /// stay sets), with the framework's candidates (containers expanded by platform rules)
    /// and two indexes: every layer hash of the policy's containers, and the candidates by
    /// the hash of their top layer (`""` for none), in the policy's order.
    fn declarations(&mut self, data: &Value) -> Result<regorus::Value, String> {
        use regorus::Value as V;
        use std::collections::BTreeMap;
        /// The members `some x in coll(v)` iterates: array and set elements, object values.
        fn members(v: &V) -> Vec<&V> {
            match v {
                V::Array(a) => a.iter().collect(),
                V::Set(s) => s.iter().collect(),
                V::Object(o) => o.values().collect(),
                _ => Vec::new(),
            }
        }
        self.rego.set_input(regorus::Value::from(json!({
            METADATA_KEY: data["metadata"],
            DEFAULT_MOUNTS_KEY: data["defaultMounts"],
        })));
        let mut out: BTreeMap<V, V> = BTreeMap::new();
        for name in DECLARATIONS {
            let v = self.eval_value(&format!("data.policy.{name}"))?;
            if v != V::Undefined {
                out.insert(V::from(name), v);
            }
        }
        let mut layers: BTreeMap<V, V> = BTreeMap::new();
        if let Some(containers) = out.get(&V::from("containers")) {
            for c in members(containers) {
                if let V::Object(c) = c {
                    for h in c.get(&V::from("layers")).map(members).unwrap_or_default() {
                        if let V::String(_) = h {
                            layers.insert(h.clone(), V::Bool(true));
                        }
                    }
                }
            }
        }
        let candidates = self.eval_value("data.framework.policy_candidates")?;
        let V::Array(list) = &candidates else {
            return Err("no policy candidates".into());
        };
        let mut by_top: BTreeMap<V, Vec<V>> = BTreeMap::new();
        for c in list.iter() {
            let V::Object(fields) = c else { continue };
            let key = match fields.get(&V::from("layers")) {
                Some(V::Array(l)) if l.iter().next().is_none() => Some(V::from("")),
                Some(V::Array(l)) => l.last().filter(|h| matches!(h, V::String(_))).cloned(),
                _ => None,
            };
            if let Some(key) = key {
                by_top.entry(key).or_default().push(c.clone());
            }
        }
        out.insert(V::from("layers"), V::from(layers));
        out.insert(V::from("candidates"), candidates.clone());
        out.insert(
            V::from("by_top_layer"),
            V::from(
                by_top
                    .into_iter()
                    .map(|(k, v)| (k, V::from(v)))
                    .collect::<BTreeMap<_, _>>(),
            ),
        );
        out.insert(V::from("ready"), V::Bool(true));
        Ok(V::from(out))
    }
}

/// regorus's error for a rule path that names no rule.
const NO_SUCH_RULE: &str = "not a valid rule path";

/// A fragment's engine in place for its `load_fragment` decision. The previous engine comes
/// back when this is dropped unless [`Trial::keep`] was called: after a refusal, and also when
/// the decision panics (the bridge answers a panicking request and goes on).
struct Trial<'a> {
    state: &'a mut State,
    previous: Option<Engine>,
}

impl<'a> Trial<'a> {
    fn new(state: &'a mut State, engine: Engine) -> Self {
        let previous = std::mem::replace(&mut state.engine, engine);
        Self {
            state,
            previous: Some(previous),
        }
    }

    fn keep(mut self) {
        self.previous = None;
    }
}

impl Drop for Trial<'_> {
    fn drop(&mut self) {
        if let Some(previous) = self.previous.take() {
            self.state.engine = previous;
        }
    }
}

/// A document handed to every query (the metadata, the default mounts): JSON for the guest,
/// and its regorus form, kept rather than converted at every query (the metadata is tens of
/// KiB after a few hundred containers; converting it cost ~0.3 ms a query). Metadata operations
/// change the JSON, then copy the entries they touched into the regorus form.
#[derive(Debug)]
struct Document {
    json: Value,
    rego: Option<regorus::Value>,
}

impl Document {
    fn new(json: Value) -> Self {
        Self { json, rego: None }
    }

    fn json(&self) -> &Value {
        &self.json
    }

    /// The JSON to change; the regorus form is rebuilt at the next query.
    fn json_mut(&mut self) -> &mut Value {
        self.rego = None;
        &mut self.json
    }

    /// The regorus form (a reference-counted copy: cheap).
    fn rego(&mut self) -> regorus::Value {
        self.rego
            .get_or_insert_with(|| regorus::Value::from(self.json.clone()))
            .clone()
    }

    /// Applies metadata operations ([`metadata::apply`], its errors), then brings the regorus
    /// form up to date from the JSON for the entries the operations name: a map entry's key,
    /// or a whole set. The JSON stays the only truth; what was not touched is not converted.
    fn apply(&mut self, ops: &Value) -> Result<(), String> {
        let result = metadata::apply(&mut self.json, ops);
        let mirrored = self.mirror(ops);
        if mirrored.is_none() {
            self.rego = None;
        }
        #[cfg(debug_assertions)]
        if let Some(cached) = &self.rego {
            debug_assert!(
                *cached == regorus::Value::from(self.json.clone()),
                "the metadata's regorus form differs from its JSON"
            );
        }
        result
    }

    /// Copies what `ops` touched from the JSON into the cached regorus form; `None` when that
    /// cannot be done piecewise (the whole form is then converted at the next query).
    fn mirror(&mut self, ops: &Value) -> Option<()> {
        let cached = self.rego.as_mut()?;
        let json = self.json.as_object()?;
        let top = cached.as_object_mut().ok()?;
        for op in ops.as_array()? {
            let Some(name) = op.get("name").and_then(Value::as_str) else {
                continue;
            };
            // regorus reads an object whose first key is serde_json's private number marker
            // as a number: such a document is converted whole, as regorus would.
            if name.starts_with('$')
                || op
                    .get("key")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.starts_with('$'))
            {
                return None;
            }
            let rego_name = regorus::Value::from(name);
            let Some(item) = json.get(name) else {
                top.remove(&rego_name);
                continue;
            };
            let key = op.get("key").and_then(Value::as_str);
            let is_map = op.get("type").is_none() || op["type"] == "map";
            match (is_map, key, item.as_object(), top.get_mut(&rego_name)) {
                (true, Some(key), Some(map), Some(cached_item))
                    if cached_item.as_object().is_ok() =>
                {
                    let entries = cached_item.as_object_mut().ok()?;
                    let rego_key = regorus::Value::from(key);
                    match map.get(key) {
                        Some(v) => {
                            entries.insert(rego_key, regorus::Value::from(v.clone()));
                        }
                        None => {
                            entries.remove(&rego_key);
                        }
                    }
                }
                _ => {
                    top.insert(rego_name, regorus::Value::from(item.clone()));
                }
            }
        }
        Some(())
    }
}

/// The outcome of one rule query.
enum Answer {
    /// The rule is undefined for this input.
    Undefined,
    Value(Value),
}

impl State {
    /// Evaluates the rule at `path` with `input`, seeing the current metadata and default
    /// mounts.
    fn query(&mut self, path: &str, input: &Value) -> Result<Answer, String> {
        let mut input = regorus::Value::from(input.clone());
        if let Ok(fields) = input.as_object_mut() {
            fields.insert(regorus::Value::from(METADATA_KEY), self.metadata.rego());
            fields.insert(
                regorus::Value::from(DEFAULT_MOUNTS_KEY),
                self.default_mounts.rego(),
            );
        }
        self.engine.eval(path, input)
    }

    /// Queries a rule whose value must be an object (or undefined: `{}`), and commits the
    /// metadata operations it carries (SP §3.2 step 1).
    fn rule_result(&mut self, path: &str, input: &Value) -> Result<Map<String, Value>, String> {
        let mut result = match self.query(path, input)? {
            Answer::Undefined => return Ok(Map::new()),
            Answer::Value(Value::Object(m)) => m,
            Answer::Value(_) => return Err("unable to load results object from Rego query".into()),
        };
        if let Some(ops) = result.remove("metadata") {
            // Operations before a failing one stay applied (SP §3.4).
            self.metadata.apply(&ops)?;
        }
        Ok(result)
    }

    /// SP §3.2: the result of `point` for `input`, or why there is none.
    fn enforce(
        &mut self,
        point: EnforcementPoint,
        input: &Value,
    ) -> Result<Map<String, Value>, String> {
        let name = point.name();
        let mut result = self.rule_result(&format!("data.policy.{name}"), input)?;
        let info = match self.info.get(&point) {
            Some(info) => info.clone(),
            None => match self.query(
                "data.framework.enforcement_point_info",
                &json!({"name": name, "rule": name}),
            )? {
                Answer::Value(Value::Object(info)) => {
                    self.info.insert(point, info.clone());
                    info
                }
                _ => return Err(format!("enforcement point rule {name} does not exist")),
            },
        };
        let flag = |k: &str| info.get(k).and_then(Value::as_bool).unwrap_or(false);
        if flag("unknown") {
            return Err(format!("enforcement point rule {name} does not exist"));
        }
        if flag("version_missing") {
            return Err("policy does not define api_version".into());
        }
        if flag("invalid") {
            return Err(format!("enforcement point rule {name} is invalid"));
        }
        if result.is_empty() {
            if flag("available") {
                return Err(format!("rule for {name} is missing from policy"));
            }
            if flag("use_framework") {
                return self.rule_result(&format!("data.framework.{name}"), input);
            }
        }
        if let Some(Value::Object(defaults)) = info.get("default_results") {
            for (k, v) in defaults {
                result.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        Ok(result)
    }

    /// `data.policy.reason` for a refused `input` (which carries `rule`), or the original's
    /// fallback text.
    fn reason(&mut self, input: &Value) -> Value {
        match self.query("data.policy.reason", input) {
            Ok(Answer::Value(v)) if !v.is_null() && v != json!({}) => v,
            Ok(_) => Value::String(decision::NO_REASON.into()),
            Err(e) => {
                tracing::warn!(error = %e, "the policy's reason failed");
                Value::String(decision::NO_REASON.into())
            }
        }
    }
}

/// Limits raised for generated policies, which put each container on one long line.
fn length_config() -> regorus::utils::limits::PolicyLengthConfig {
    const MAX: usize = 16 << 20;
    regorus::utils::limits::PolicyLengthConfig {
        max_col: NonZeroU32::new(16 << 20).unwrap_or(NonZeroU32::MIN),
        max_file_bytes: NonZeroUsize::new(MAX).unwrap_or(NonZeroUsize::MIN),
        max_lines: NonZeroUsize::new(1 << 20).unwrap_or(NonZeroUsize::MIN),
    }
}

impl RegoEnforcer {
    /// An enforcer for the policy `text` (Rego), which the host sent as `encoded` (base64).
    ///
    /// Errors: the policy does not parse or compile together with the framework and API
    /// modules (`rego compilation failed: …`, SP §2.3).
    pub fn new(text: &str, encoded: &str) -> Result<Self, PolicyError> {
        Self::tuned(text, encoded, Tuning::default())
    }

    /// [`RegoEnforcer::new`] with the rules evaluated as `tuning` says.
    ///
    /// Errors: as [`RegoEnforcer::new`].
    pub fn tuned(text: &str, encoded: &str, tuning: Tuning) -> Result<Self, PolicyError> {
        let fail = |e: String| PolicyError::Invalid(format!("rego compilation failed: {e}"));
        let engine = build_engine(text, std::iter::empty(), tuning).map_err(fail)?;
        let data = initial_data();
        let mut state = State {
            engine,
            policy: text.to_string(),
            tuning,
            kept: std::collections::BTreeMap::new(),
            metadata: Document::new(data["metadata"].clone()),
            default_mounts: Document::new(data["defaultMounts"].clone()),
            info: std::collections::HashMap::new(),
            trust_keys: std::collections::BTreeMap::new(),
        };
        // Compiles every module now, so that a policy that cannot work is refused at once.
        state.query("data.api.version", &json!({})).map_err(fail)?;
        Ok(Self {
            encoded: encoded.to_string(),
            state: Mutex::new(state),
            max_error: MAX_ERROR_MESSAGE,
        })
    }

    /// Changes the longest refusal text (0: never cut; tests read whole decisions).
    pub fn set_max_error_message(&mut self, max: usize) {
        self.max_error = max;
    }

    /// SP §3.2–3.5 on the locked state: the decision, or the refusal's text.
    fn decide_locked(
        &self,
        state: &mut State,
        point: EnforcementPoint,
        input: Value,
    ) -> Result<Decision, PolicyError> {
        let result = match state.enforce(point, &input) {
            Ok(r) => r,
            Err(e) => {
                return Err(PolicyError::Denied(decision::with_error(
                    &input,
                    &e,
                    self.max_error,
                )))
            }
        };
        match result.get("allowed") {
            Some(Value::Bool(true)) => Ok(Decision::new(result)),
            Some(Value::Bool(false)) => {
                let mut input = input;
                if let Some(m) = input.as_object_mut() {
                    m.insert("rule".into(), Value::String(point.name().into()));
                }
                let reason = state.reason(&input);
                Err(PolicyError::Denied(decision::with_reason(
                    &input,
                    reason,
                    self.max_error,
                )))
            }
            Some(_) => Err(PolicyError::Denied(decision::with_error(
                &input,
                "value for 'allowed' is not a boolean",
                self.max_error,
            ))),
            None => Err(PolicyError::Denied(decision::with_error(
                &input,
                "unable to find value for key 'allowed'",
                self.max_error,
            ))),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Enforcer for RegoEnforcer {
    fn decide(&self, point: EnforcementPoint, input: Value) -> Result<Decision, PolicyError> {
        use EnforcementPoint as P;
        if matches!(point, P::CreateContainer | P::ExecInContainer)
            && input.get("capabilities").is_none_or(Value::is_null)
        {
            return Err(PolicyError::Invalid(
                "capabilities object provided by the UVM to the policy engine is nil".into(),
            ));
        }
        let mut state = self.lock();
        self.decide_locked(&mut state, point, input)
    }

    fn encoded_policy(&self) -> &str {
        &self.encoded
    }

    fn metadata(&self) -> Option<Value> {
        Some(self.lock().metadata.json().clone())
    }

    fn restore_metadata(&self, metadata: Value) {
        *self.lock().metadata.json_mut() = metadata;
    }

    /// Appends the mounts not already listed (the original appends every time, so its list
    /// grows with every Create; the set of allowed mounts is the same).
    fn extend_default_mounts(&self, mounts: &[Value]) -> Result<(), PolicyError> {
        let mut state = self.lock();
        let Some(listed) = state.default_mounts.json().as_array() else {
            return Ok(());
        };
        // Changed only when something is new: a change converts the list again.
        let new: Vec<Value> = mounts
            .iter()
            .filter(|m| !listed.contains(m))
            .cloned()
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        if let Some(list) = state.default_mounts.json_mut().as_array_mut() {
            for m in new {
                if !list.contains(&m) {
                    list.push(m);
                }
            }
        }
        Ok(())
    }

    /// SP §7.9: asks `load_transparency_trust_list` with the ledgers' names; keeps the keys of
    /// the ledgers the decision's `allowed_ledgers` names. A key id seen before with another key
    /// is replaced (the last trust list wins); with the same key, the subject is added to those
    /// that offered it.
    fn load_trust_list(
        &self,
        issuer: &str,
        subject: &str,
        svn: i64,
        ledgers: &std::collections::BTreeMap<String, Vec<crate::policy::fragment::TrustKey>>,
    ) -> Result<(), PolicyError> {
        let mut state = self.lock();
        let input = json!({"issuer": issuer, "subject": subject, "svn": svn,
                           "ledgers": ledgers.keys().collect::<Vec<_>>()});
        let decision = self.decide_locked(
            &mut state,
            EnforcementPoint::LoadTransparencyTrustList,
            input,
        )?;
        let allowed: Vec<String> = match decision.result().get("allowed_ledgers") {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(|l| l.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        };
        let allowed: Vec<&String> = allowed
            .iter()
            .filter(|l| ledgers.contains_key(*l))
            .collect();
        if allowed.is_empty() {
            return Err(PolicyError::Invalid(
                "transparency trust list carries no ledgers authorized by the policy".into(),
            ));
        }
        for ledger in allowed {
            let store = state.trust_keys.entry(ledger.clone()).or_default();
            for k in &ledgers[ledger] {
                let kid = crate::policy::fragment::kid_hex(&k.kid);
                match store.get_mut(&kid) {
                    Some(known) if known.key == k.key => {
                        if !known.offered_by.iter().any(|s| s == subject) {
                            known.offered_by.push(subject.to_string());
                        }
                    }
                    _ => {
                        if store.contains_key(&kid) {
                            tracing::warn!(ledger = %ledger, kid = %kid, "a trust list replaces a ledger key");
                        }
                        store.insert(
                            kid,
                            TrustedKey {
                                key: k.key.clone(),
                                offered_by: vec![subject.to_string()],
                            },
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// SP §7.6: validates the envelope's `receipts` against the ledger keys trust lists gave
    /// ([`validated_receipts`]); asks `load_fragment` before the fragment's Rego is parsed at
    /// all, with those receipts; then, once per parameter combination the policy offers,
    /// compiles the fragment (with its parameters) into a new engine and asks again. The
    /// fragment stays a module only when the decision says `add_module`; its metadata (its
    /// containers, for one) is kept either way.
    ///
    /// A kept fragment replaces an earlier one of the same issuer and feed. Unlike the original
    /// (whose compiler would merge two modules of one package), a second kept fragment that
    /// declares the package of another issuer's or feed's kept fragment is refused.
    fn load_fragment(
        &self,
        issuer: &str,
        feed: &str,
        header_svn: Option<i64>,
        text: &str,
        receipts: &[crate::policy::fragment::Receipt],
    ) -> Result<(), PolicyError> {
        let refuse = |e: String| PolicyError::Invalid(format!("unable to load fragment: {e}"));
        let namespace = fragment_namespace(text).map_err(refuse)?;
        let key = format!("{issuer}>{feed}");
        let mut state = self.lock();
        if state
            .kept
            .iter()
            .any(|(k, f)| *k != key && f.namespace == namespace)
        {
            return Err(refuse(format!(
                "namespace {namespace:?} is already used by another fragment"
            )));
        }
        let receipts = validated_receipts(&state.trust_keys, receipts);
        let mut input = json!({
            "issuer": issuer, "feed": feed, "namespace": namespace, "fragment_loaded": false,
            "has_header_svn": header_svn.is_some(), "header_svn": header_svn, "receipts": receipts,
        });
        let first =
            self.decide_locked(&mut state, EnforcementPoint::LoadFragment, input.clone())?;
        let combinations = match first.result().get("parameters") {
            None | Some(Value::Null) => vec![json!({})],
            Some(Value::Array(list)) if list.iter().all(Value::is_object) && !list.is_empty() => {
                list.clone()
            }
            Some(Value::Array(list)) if list.is_empty() => vec![json!({})],
            Some(_) => {
                return Err(PolicyError::Invalid(
                    "policy returned incorrect type for 'parameters', expected an array of objects"
                        .into(),
                ))
            }
        };
        input["fragment_loaded"] = Value::Bool(true);
        for parameters in &combinations {
            let fragment = Fragment {
                namespace: namespace.clone(),
                module: format!(
                    "{text}\n__fragment_parameters := {parameters}\n\
                     default __fragment_parameters_api := {{}}\n\
                     __fragment_parameters_api := data.{namespace}.parameters_api\n\
                     parameter(name) := data.framework.extract_parameter(name, __fragment_parameters, __fragment_parameters_api)\n"
                ),
            };
            let others = state
                .kept
                .iter()
                .filter(|(k, _)| **k != key)
                .map(|(_, f)| f);
            let engine = match build_engine(&state.policy, others.chain([&fragment]), state.tuning)
            {
                Ok(e) => e,
                Err(e) => {
                    return Err(PolicyError::Denied(decision::with_error(
                        &input,
                        &format!("rego compilation failed: {e}"),
                        self.max_error,
                    )))
                }
            };
            let trial = Trial::new(&mut state, engine);
            let decision =
                self.decide_locked(trial.state, EnforcementPoint::LoadFragment, input.clone())?;
            if decision.result().get("add_module") == Some(&Value::Bool(true)) {
                if combinations.len() > 1 {
                    return Err(PolicyError::Invalid(
                        "Fragment cannot include namespace if multiple possible parameter combinations are defined".into(),
                    ));
                }
                trial.state.kept.insert(key, fragment);
                trial.keep();
                return Ok(());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW_ALL: &str = r#"package policy

api_version := "0.12.0"
framework_version := "0.5.0"

mount_device := {"allowed": true}
create_container := {"allowed": true, "env_list": null, "allow_stdio_access": true}
dump_stacks := {"allowed": false}
reason := {"errors": ["no stacks for you"]}
"#;

    fn decoded(text: &str) -> Value {
        use base64::Engine as _;
        let inner = text
            .split("policyDecision< ")
            .nth(1)
            .and_then(|t| t.split(" >policyDecision").next())
            .unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(inner)
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn a_policy_decides_with_defaults_for_what_it_leaves_out() {
        let e = RegoEnforcer::new(ALLOW_ALL, "x").unwrap();
        assert!(e
            .decide(EnforcementPoint::MountDevice, json!({"target": "/t"}))
            .is_ok());
        // Available in 0.12.0 but not defined: an error decision.
        let err = e
            .decide(EnforcementPoint::MountOverlay, json!({}))
            .unwrap_err()
            .to_string();
        let d = decoded(&err);
        assert_eq!(
            d["policyError"],
            "rule for mount_overlay is missing from policy"
        );
        assert_eq!(d["decision"], "deny");
        let err = e
            .decide(EnforcementPoint::DumpStacks, json!({}))
            .unwrap_err()
            .to_string();
        let d = decoded(&err);
        assert_eq!(d["reason"]["errors"], json!(["no stacks for you"]));
        assert_eq!(d["input"]["rule"], "dump_stacks");
    }

    #[test]
    fn a_policy_that_does_not_compile_is_refused() {
        let err = RegoEnforcer::new("package policy\nallow := {", "x").unwrap_err();
        assert!(
            err.to_string().starts_with("rego compilation failed: "),
            "{err}"
        );
    }

    #[test]
    fn an_older_api_version_gets_the_apis_defaults() {
        let old = "package policy\napi_version := \"0.1.0\"\nframework_version := \"0.1.0\"\nmount_device := {\"allowed\": true}\nmount_overlay := {\"allowed\": true}\ncreate_container := {\"allowed\": true}\n";
        let e = RegoEnforcer::new(old, "x").unwrap();
        // Introduced in 0.7.0 with allowed: true.
        assert!(e.decide(EnforcementPoint::DumpStacks, json!({})).is_ok());
        // Introduced in 0.12.0 with allowed: false.
        assert!(e.decide(EnforcementPoint::HostNetwork, json!({})).is_err());
        // Defaults merged under a defined rule: create gets env_list null, stdio false.
        let d = e
            .decide(
                EnforcementPoint::CreateContainer,
                json!({"capabilities": {}}),
            )
            .unwrap();
        assert_eq!(d.env_list().unwrap(), None);
        assert!(!d.allow_stdio_access().unwrap());
    }

    const ISSUER: &str = "did:x509:0:sha256:abc::subject:CN:Signer";

    /// A generated-style policy naming one fragment feed (and one with parameters, one kept as
    /// a module), with no containers of its own.
    fn fragment_policy() -> String {
        let mut text = format!(
            "package policy\napi_version := \"0.12.0\"\nframework_version := \"0.5.0\"\n\
             fragments := [\n\
             {{\"issuer\": \"{ISSUER}\", \"feed\": \"infra\", \"minimum_svn\": \"2\", \"includes\": [\"containers\"]}},\n\
             {{\"issuer\": \"{ISSUER}\", \"feed\": \"params\", \"minimum_svn\": \"1\", \"includes\": [\"containers\"], \"parameters\": {{\"layer\": \"{L2}\"}}}},\n\
             {{\"issuer\": \"{ISSUER}\", \"feed\": \"kept\", \"minimum_svn\": \"1\", \"includes\": [\"namespace\"]}},\n\
             ]\ncontainers := []\n"
        );
        for p in EnforcementPoint::ALL {
            text.push_str(&format!("{0} := data.framework.{0}\n", p.name()));
        }
        text.push_str("reason := data.framework.reason\nhello := data.kept.greeting\n");
        text
    }

    const L1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const L2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    fn fragment(package: &str, svn: &str, layer: &str) -> String {
        format!(
            "package {package}\nsvn := \"{svn}\"\nframework_version := \"0.5.0\"\n\
             containers := [{{\"command\": [\"/app\"], \"layers\": [{layer}], \"env_rules\": [], \"mounts\": [], \"exec_processes\": [], \"signals\": [], \"working_dir\": \"/\", \"allow_elevated\": false, \"allow_stdio_access\": true}}]\n"
        )
    }

    fn mount(e: &RegoEnforcer, n: u32, hash: &str) -> Result<Decision, PolicyError> {
        e.decide(
            EnforcementPoint::MountDevice,
            json!({"target": format!("/run/mounts/scsi/m{n}"), "deviceHash": hash,
                   "mountPathRegex": "/run/mounts/scsi/m[0-9]+"}),
        )
    }

    #[test]
    fn a_fragments_containers_count_once_it_is_loaded() {
        let e = RegoEnforcer::new(&fragment_policy(), "x").unwrap();
        let quoted = format!("\"{L1}\"");
        assert!(mount(&e, 1, L1).is_err(), "not before the fragment");
        // Below the minimum SVN (from the module, and from the envelope's header).
        assert!(e
            .load_fragment(ISSUER, "infra", None, &fragment("infra", "1", &quoted), &[])
            .is_err());
        assert!(e
            .load_fragment(
                ISSUER,
                "infra",
                Some(1),
                &fragment("infra", "1", &quoted),
                &[]
            )
            .is_err());
        assert!(mount(&e, 1, L1).is_err());
        e.load_fragment(
            ISSUER,
            "infra",
            Some(2),
            &fragment("infra", "2", &quoted),
            &[],
        )
        .unwrap();
        assert!(mount(&e, 1, L1).is_ok());
    }

    #[test]
    fn the_metadatas_regorus_form_follows_every_operation() {
        let mut doc = Document::new(json!({"operatingsystem": {"ostype": "linux"}}));
        let ops = [
            json!([{"name": "devices", "action": "add", "key": "/t", "value": "h1"}]),
            json!([{"name": "devices", "action": "update", "key": "/t", "value": {"a": [1, 2]}}]),
            json!([{"name": "frags", "type": "set", "action": "add", "value": {"a": 1}}]),
            json!([{"name": "frags", "type": "set", "action": "remove", "value": {"a": 1}}]),
            json!([{"name": "devices", "action": "remove", "key": "/t"}]),
            // Fails midway: the first stays applied.
            json!([{"name": "started", "action": "add", "key": "c", "value": true},
                   {"name": "started", "action": "add", "key": "c", "value": false}]),
            json!([{"name": "started", "action": "add", "value": 1}]),
            json!([{"action": "add", "key": "k"}]),
            json!([{"name": "devices", "type": "set", "action": "add", "value": 1}]),
            json!({"not": "a list"}),
            // serde_json's number marker: regorus reads such an object as a number.
            json!([{"name": "n", "action": "add", "key": "$serde_json::private::Number", "value": "7"}]),
        ];
        for op in &ops {
            let _ = doc.rego();
            let _ = doc.apply(op);
            assert_eq!(
                doc.rego(),
                regorus::Value::from(doc.json().clone()),
                "after {op}"
            );
        }
        *doc.json_mut() = json!("not an object");
        let _ = doc.rego();
        let _ = doc.apply(&json!([{"name": "d", "action": "add", "key": "k", "value": 1}]));
        assert_eq!(doc.rego(), regorus::Value::from(doc.json().clone()));
    }

    #[test]
    fn a_replayed_fragment_does_not_grow_the_metadata() {
        let e = RegoEnforcer::new(&fragment_policy(), "x").unwrap();
        let text = fragment("infra", "2", &format!("\"{L1}\""));
        e.load_fragment(ISSUER, "infra", Some(2), &text, &[])
            .unwrap();
        let once = e.metadata().unwrap().to_string().len();
        for _ in 0..5 {
            e.load_fragment(ISSUER, "infra", Some(2), &text, &[])
                .unwrap();
        }
        assert_eq!(e.metadata().unwrap().to_string().len(), once);
        let entries = &e.metadata().unwrap()["issuers"][ISSUER]["feeds"]["infra"];
        assert_eq!(entries.as_array().unwrap().len(), 1, "{entries}");
        // Another version of the fragment is a new entry, newest first.
        let newer = fragment("infra", "3", &format!("\"{L1}\", \"{L2}\""));
        e.load_fragment(ISSUER, "infra", Some(3), &newer, &[])
            .unwrap();
        let entries = &e.metadata().unwrap()["issuers"][ISSUER]["feeds"]["infra"];
        assert_eq!(entries.as_array().unwrap().len(), 2, "{entries}");
        assert_eq!(entries[0]["containers"][0]["layers"], json!([L1, L2]));
    }

    #[test]
    fn a_wrong_issuer_or_feed_is_refused_before_the_fragment_is_parsed() {
        let e = RegoEnforcer::new(&fragment_policy(), "x").unwrap();
        let garbage = "package infra\nthis is { not rego";
        for (issuer, feed) in [
            ("did:x509:0:sha256:other::subject:CN:Signer", "infra"),
            (ISSUER, "elsewhere"),
        ] {
            let err = e
                .load_fragment(issuer, feed, Some(5), garbage, &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("policyDecision< "), "{err}");
            assert!(!err.contains("rego compilation failed"), "{err}");
        }
        // The right feed with a broken module: refused at compilation.
        let err = e
            .load_fragment(ISSUER, "infra", Some(5), garbage, &[])
            .unwrap_err();
        let PolicyError::Denied(text) = err else {
            panic!()
        };
        let d = decoded(&text);
        assert!(
            d["policyError"]
                .as_str()
                .unwrap()
                .contains("rego compilation failed"),
            "{d}"
        );
    }

    #[test]
    fn fragment_packages_are_checked_first() {
        let e = RegoEnforcer::new(&fragment_policy(), "x").unwrap();
        for (text, want) in [
            ("", "Fragment Rego is empty"),
            (
                "packages infra\n",
                "valid package definition required on first line",
            ),
            (
                "package 9x\n",
                "valid package definition required on first line",
            ),
            ("package framework\n", "namespace \"framework\" is reserved"),
            ("package policy\n", "namespace \"policy\" is reserved"),
            // What the engine keeps in data: a fragment must not stand in for it.
            (
                "package gcs_declarations\nready := true\n",
                "namespace \"gcs_declarations\" is reserved",
            ),
            (
                "package gcs_engine\n",
                "namespace \"gcs_engine\" is reserved",
            ),
            (
                "package defaultMounts\n",
                "namespace \"defaultMounts\" is reserved",
            ),
            (
                "package sandboxPrefix\n",
                "namespace \"sandboxPrefix\" is reserved",
            ),
        ] {
            let err = e
                .load_fragment(ISSUER, "infra", Some(5), text, &[])
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("unable to load fragment: "), "{err}");
            assert!(err.contains(want), "{err}");
        }
        assert_eq!(
            fragment_namespace("package  Framework \nx").unwrap(),
            "Framework"
        );
    }

    #[test]
    fn parameters_reach_the_fragment_and_namespace_fragments_stay_as_modules() {
        let e = RegoEnforcer::new(&fragment_policy(), "x").unwrap();
        // The fragment names its layer through the policy's parameter.
        e.load_fragment(
            ISSUER,
            "params",
            None,
            &fragment("frag", "1", "parameter(\"layer\")"),
            &[],
        )
        .unwrap();
        assert!(mount(&e, 2, L2).is_ok());
        // Kept as a module: the policy can read its rules.
        let kept =
            "package kept\nsvn := \"1\"\nframework_version := \"0.5.0\"\ngreeting := \"hi\"\n";
        let mut state = e.lock();
        assert!(matches!(
            state.query("data.policy.hello", &json!({})),
            Ok(Answer::Undefined)
        ));
        drop(state);
        e.load_fragment(ISSUER, "kept", None, kept, &[]).unwrap();
        let mut state = e.lock();
        let Ok(Answer::Value(v)) = state.query("data.policy.hello", &json!({})) else {
            panic!("the kept fragment's rule is not there")
        };
        assert_eq!(v, json!("hi"));
    }

    // -----------------------------------------------------------------------------------------
    // Receipts (SP §7.6 step 2, §7.8) against the keys of trust lists (SP §7.9)

    use crate::policy::fragment::receipt_tests::{
        statement_hash, trust_list, with_receipts, Ledger,
    };
    use crate::policy::fragment::tests::signed;
    use crate::policy::fragment::{parse_trust_list, verify, Verified};

    const TTL_ISSUER: &str = "did:x509:0:sha256:ttl::subject:CN:Trust";
    const LEDGER: &str = "ledger.example";

    /// A policy trusting `issuer`'s feed `infra` (SVN ≥ 1) for containers only with the
    /// `required` receipts, and the trust lists (from [`TTL_ISSUER`], SVN ≥ 1) of subject `subjA`
    /// for [`LEDGER`] and `other.ledger`, and of `subjB` for [`LEDGER`]; none for `rogue.ledger`.
    fn receipt_policy(issuer: &str, required: &[&str]) -> String {
        let required = serde_json::to_string(required).unwrap();
        let mut text = format!(
            "package policy\napi_version := \"0.12.0\"\nframework_version := \"0.5.0\"\n\
             fragments := [{{\"issuer\": \"{issuer}\", \"feed\": \"infra\", \"minimum_svn\": \"1\", \"includes\": [\"containers\"], \"required_receipts\": {required}}}]\n\
             transparency_trust_lists := [\n\
             {{\"issuer\": \"{TTL_ISSUER}\", \"subject\": \"subjA\", \"minimum_svn\": 1, \"allowed_ledgers\": [\"{LEDGER}\", \"other.ledger\"]}},\n\
             {{\"issuer\": \"{TTL_ISSUER}\", \"subject\": \"subjB\", \"minimum_svn\": 1, \"allowed_ledgers\": [\"{LEDGER}\"]}},\n\
             ]\ncontainers := []\n"
        );
        for p in EnforcementPoint::ALL {
            text.push_str(&format!("{0} := data.framework.{0}\n", p.name()));
        }
        text.push_str("reason := data.framework.reason\n");
        text
    }

    /// The fragment `infra` (one container on layer [`L1`]) in a signed envelope carrying the
    /// receipts `make` builds for the envelope's data hash, as the guest verifies it.
    fn fragment_with(make: impl FnOnce([u8; 32]) -> Vec<Vec<u8>>) -> Verified {
        let text = fragment("infra", "1", &format!("\"{L1}\""));
        let (bare, _) = signed(30, "infra", Some(1), text.as_bytes());
        let receipts = make(statement_hash(&bare));
        verify(&with_receipts(&bare, &receipts)).unwrap()
    }

    /// A trust list from `subject` offering the ledgers' keys.
    fn offer(e: &RegoEnforcer, subject: &str, ledgers: &[&Ledger]) -> Result<(), PolicyError> {
        let parsed = parse_trust_list(&trust_list(ledgers)).unwrap();
        e.load_trust_list(TTL_ISSUER, subject, 1, &parsed)
    }

    fn load(e: &RegoEnforcer, v: &Verified) -> Result<(), PolicyError> {
        let text = std::str::from_utf8(&v.payload).unwrap();
        e.load_fragment(&v.issuer, &v.feed, v.header_svn, text, &v.receipts)
    }

    /// A refused load's decision: its errors and the receipts its input carried.
    fn refused(e: &RegoEnforcer, v: &Verified) -> (Vec<String>, Value) {
        let err = load(e, v).expect_err("the fragment loaded");
        let d = decoded(&err.to_string());
        let errors = d["reason"]["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no reason: {d}"))
            .iter()
            .map(|e| e.as_str().unwrap().to_string())
            .collect();
        (errors, d["input"]["receipts"].clone())
    }

    #[test]
    fn a_wildcard_requirement_needs_one_receipt_that_validates() {
        let ledger = Ledger::p256(LEDGER, b"kid-1", 61);
        let none = fragment_with(|_| Vec::new());
        let with_receipt = fragment_with(|hash| vec![ledger.receipt_for(hash)]);
        assert_eq!(with_receipt.receipts.len(), 1);
        let e = RegoEnforcer::new(&receipt_policy(&none.issuer, &["*"]), "x").unwrap();

        let (errors, receipts) = refused(&e, &none);
        assert_eq!(errors, ["missing receipt from *"]);
        assert_eq!(receipts, json!([]));
        // A valid receipt, but no trust list gave its ledger's keys yet: not counted.
        let (errors, receipts) = refused(&e, &with_receipt);
        assert_eq!(errors, ["missing receipt from *"]);
        assert_eq!(receipts, json!([]));
        assert!(mount(&e, 1, L1).is_err());

        offer(&e, "subjA", &[&ledger]).unwrap();
        // Still none without a receipt.
        assert_eq!(refused(&e, &none).0, ["missing receipt from *"]);
        load(&e, &with_receipt).unwrap();
        assert!(mount(&e, 1, L1).is_ok(), "the fragment's container counts");
    }

    #[test]
    fn a_ttl_requirement_needs_a_key_that_subject_offered() {
        let ledger = Ledger::p384(LEDGER, b"kid-1", 62);
        let v = fragment_with(|hash| vec![ledger.receipt_for(hash)]);
        let e = RegoEnforcer::new(&receipt_policy(&v.issuer, &["TTL:subjA"]), "x").unwrap();
        // subjB vouches for the key: the receipt validates, but subjA's word is required.
        offer(&e, "subjB", &[&ledger]).unwrap();
        let (errors, receipts) = refused(&e, &v);
        assert_eq!(errors, ["missing receipt from TTL:subjA"]);
        assert_eq!(
            receipts,
            json!([{"issuer": LEDGER, "ttl_subjects": ["subjB"]}])
        );
        assert!(mount(&e, 1, L1).is_err());
        // subjA offers the same key under the same kid: both subjects now stand behind it.
        offer(&e, "subjA", &[&ledger]).unwrap();
        load(&e, &v).unwrap();
        assert!(mount(&e, 1, L1).is_ok());
    }

    #[test]
    fn a_ledger_requirement_needs_a_valid_receipt_from_that_ledger() {
        let ledger = Ledger::p256(LEDGER, b"kid-1", 63);
        let other = Ledger::p256("other.ledger", b"kid-2", 64);
        let rogue = Ledger::p256("rogue.ledger", b"kid-3", 65);
        let probe = fragment_with(|_| Vec::new());
        let e = RegoEnforcer::new(&receipt_policy(&probe.issuer, &[LEDGER]), "x").unwrap();
        // subjA may vouch for other.ledger but not for rogue.ledger: only other's keys are kept.
        offer(&e, "subjA", &[&other, &rogue]).unwrap();
        let missing = ["missing receipt from ledger.example"];

        // No receipt.
        assert_eq!(refused(&e, &probe).0, missing);
        // A valid receipt from another trusted ledger: counted, but not the one required.
        let v = fragment_with(|hash| vec![other.receipt_for(hash)]);
        let (errors, receipts) = refused(&e, &v);
        assert_eq!(errors, missing);
        assert_eq!(
            receipts,
            json!([{"issuer": "other.ledger", "ttl_subjects": ["subjA"]}])
        );
        // A receipt from a ledger no trust list was allowed to vouch for: not counted.
        let v = fragment_with(|hash| vec![rogue.receipt_for(hash)]);
        let (errors, receipts) = refused(&e, &v);
        assert_eq!(errors, missing);
        assert_eq!(receipts, json!([]));

        // Now the required ledger's key is known, and these receipts claiming it still fail:
        offer(&e, "subjB", &[&ledger]).unwrap();
        let impostor = Ledger::p256(LEDGER, b"kid-1", 99);
        // other.ledger's key under its own kid: checked against the claimed ledger's keys only.
        let borrowed = Ledger::p256(LEDGER, b"kid-2", 64);
        for invalid in [
            // Signed by another key under the ledger's kid.
            fragment_with(|hash| vec![impostor.receipt_for(hash)]),
            fragment_with(|hash| vec![borrowed.receipt_for(hash)]),
            // The ledger's own key, proving another envelope.
            fragment_with(|_| vec![ledger.receipt_for([0x42; 32])]),
        ] {
            let (errors, receipts) = refused(&e, &invalid);
            assert_eq!(errors, missing);
            assert_eq!(receipts, json!([]));
        }
        assert!(mount(&e, 1, L1).is_err());

        // Invalid and unknown receipts next to a valid one do not spoil it.
        let v = fragment_with(|hash| {
            vec![
                impostor.receipt_for(hash),
                rogue.receipt_for(hash),
                ledger.receipt_for(hash),
            ]
        });
        load(&e, &v).unwrap();
        assert!(mount(&e, 1, L1).is_ok());
    }

    #[test]
    fn a_fragment_without_required_receipts_ignores_them() {
        // Receipts that do not validate are no reason to refuse a fragment that needs none.
        let stranger = Ledger::p256(LEDGER, b"kid-1", 66);
        let v = fragment_with(|hash| vec![stranger.receipt_for(hash)]);
        let e = RegoEnforcer::new(&receipt_policy(&v.issuer, &[]), "x").unwrap();
        load(&e, &v).unwrap();
        assert!(mount(&e, 1, L1).is_ok());
    }

    #[test]
    fn only_modules_that_cannot_read_the_metadata_are_evaluated_directly() {
        // Generated policies name data.framework only.
        assert!(!reads_engine_data(
            "package policy\nmount_device := data.framework.mount_device\n"
        ));
        for reads in [
            "x := data.metadata.devices",
            "x := data[\"meta\"]",
            "d := data\nx := d.metadata",
            "x := object.get(data, \"k\", 1)",
            "import data\nx := 1",
            "x := data.defaultMounts",
        ] {
            assert!(reads_engine_data(reads), "{reads}");
        }
        // Names that merely contain `data` are not `data`.
        assert!(!reads_engine_data("mydata := 1\nx := mydata\ny := data_x"));
        assert!(declarations_constant(
            "package policy\ncontainers := [{\"layers\": []}]\n"
        ));
        assert!(!declarations_constant(
            "package policy\ncontainers := [c | c := input.c]\n"
        ));
        // `with` may hide the input keys the framework reads.
        assert!(reads_engine_data(
            "m := data.framework.mount_device with input as {}"
        ));
        assert!(!reads_engine_data("without := 1\nwithin := 2"));
        // Only the generated delegations may name data: anything else in the framework may
        // depend on the metadata.
        for generated in [
            "package policy\nreason := {\"errors\": data.framework.errors}\n",
            "package policy\nmount_device := data.framework.mount_device\ncontainers := []\n",
            // Names in strings and comments are not uses.
            "package policy\nmount_device := data.framework.mount_device\n# mount_device, data, input, with\ncontainers := [{\"command\": [\"mount_device\", \"/data\", \"input\", \"with\", \"metadata\"]}]\n",
        ] {
            assert!(declarations_constant(generated), "{generated}");
        }
        for not_constant in [
            "package policy\ncontainers := data.framework.loaded_items(\"containers\")\n",
            "package policy\ncontainers := data.framework.candidate_containers\n",
            "package policy\ncontainers := data.infra.containers\n",
            "package policy\nmount_device := data.framework.unmount_device\n",
            // A framework rule that is not an enforcement point, delegated and then used.
            "package policy\nmeta_doc := data.framework.meta_doc\ncontainers := [c | not meta_doc.devices.x; c := 1]\n",
            // A delegated decision used by a declaration.
            "package policy\nmount_device := data.framework.mount_device\ncontainers := [c | mount_device.allowed; c := 1]\n",
            // A delegation inside a comprehension, on a line of its own.
            "package policy\ncontainers := [c |\noverlay_top_key := data.framework.overlay_top_key\nc := 1]\n",
            // Indented: not a top-level rule.
            "package policy\n  mount_device := data.framework.mount_device\n",
            // Values that vary.
            "package policy\ncontainers := [c | rand.intn(\"k\", 2) == 0; c := 1]\n",
            // The engine's own keys.
            "package policy\nx := data.gcs_engine.with_data\n",
        ] {
            assert!(!declarations_constant(not_constant), "{not_constant}");
        }
    }

    /// Decides `steps` in order under every [`Tuning`], requiring the same decisions from
    /// each; the decisions (allowed or not).
    fn in_every_tuning(policy: &str, steps: &[(EnforcementPoint, Value)]) -> Vec<bool> {
        let mut first: Option<Vec<bool>> = None;
        for (always_with_data, never_precompute) in
            [(false, false), (true, false), (false, true), (true, true)]
        {
            let tuning = Tuning {
                always_with_data,
                never_precompute,
            };
            let e = RegoEnforcer::tuned(policy, "x", tuning).unwrap();
            let decided: Vec<bool> = steps
                .iter()
                .map(|(point, input)| e.decide(*point, input.clone()).is_ok())
                .collect();
            match &first {
                Some(f) => assert_eq!(&decided, f, "{tuning:?}"),
                None => first = Some(decided),
            }
        }
        first.unwrap_or_default()
    }

    const GENERATED_HEAD: &str = "package policy\napi_version := \"0.12.0\"\nframework_version := \"0.5.0\"\nmount_device := data.framework.mount_device\nmount_overlay := data.framework.mount_overlay\n";

    fn policy_container(layers: &str) -> String {
        format!(
            "{{\"command\": [\"/app\"], \"layers\": {layers}, \"env_rules\": [], \"mounts\": [], \"exec_processes\": [], \"signals\": [], \"working_dir\": \"/\", \"allow_elevated\": false, \"allow_stdio_access\": true, \"no_new_privileges\": false, \"user\": {{\"user_idname\": {{\"pattern\": \"\", \"strategy\": \"any\"}}, \"group_idnames\": [], \"umask\": \"0022\"}}, \"capabilities\": null, \"seccomp_profile_sha256\": \"\"}}"
        )
    }

    fn layer_steps() -> Vec<(EnforcementPoint, Value)> {
        vec![
            (
                EnforcementPoint::MountDevice,
                json!({"target": "/run/mounts/scsi/m1", "deviceHash": L1,
                       "mountPathRegex": "/run/mounts/scsi/m[0-9]+"}),
            ),
            (
                EnforcementPoint::MountOverlay,
                json!({"containerID": "c", "layerPaths": ["/run/mounts/scsi/m1"],
                       "target": "/run/gcs/c/c/rootfs"}),
            ),
        ]
    }

    #[test]
    fn sets_in_declarations_decide_alike_however_rules_are_evaluated() {
        // A layer known, but no container: the framework's containers must be an array.
        let set_of_containers = format!(
            "{GENERATED_HEAD}containers contains {}\n",
            policy_container(&format!("[\"{L1}\"]"))
        );
        assert_eq!(
            in_every_tuning(&set_of_containers, &layer_steps()),
            [true, false]
        );
        // A container whose layers are a set: known, but never an overlay's layers.
        let set_of_layers = format!(
            "{GENERATED_HEAD}containers := [{}]\n",
            policy_container(&format!("{{\"{L1}\"}}"))
        );
        assert_eq!(
            in_every_tuning(&set_of_layers, &layer_steps()),
            [true, false]
        );
        // And the array the tooling writes.
        let plain = format!(
            "{GENERATED_HEAD}containers := [{}]\n",
            policy_container(&format!("[\"{L1}\"]"))
        );
        assert_eq!(in_every_tuning(&plain, &layer_steps()), [true, true]);
    }

    #[test]
    fn rules_written_with_ref_heads_decide_alike_however_rules_are_evaluated() {
        // unmount_device is newer than this api_version: the policy's own rule decides.
        let policy = "package policy\napi_version := \"0.1.0\"\nunmount_device.allowed := false\n";
        let steps = [(
            EnforcementPoint::UnmountDevice,
            json!({"unmountTarget": "/run/mounts/scsi/m1"}),
        )];
        assert_eq!(in_every_tuning(policy, &steps), [false]);
    }

    #[test]
    fn a_policy_replacing_the_input_still_sees_the_metadata() {
        let policy = format!(
            "package policy\napi_version := \"0.12.0\"\nframework_version := \"0.5.0\"\n\
             containers := [{}]\n\
             mount_device := d if {{ d := data.framework.mount_device with input as {{\"target\": input.target, \"deviceHash\": input.deviceHash, \"mountPathRegex\": input.mountPathRegex}} }}\n\
             reason := data.framework.reason\n",
            policy_container(&format!("[\"{L1}\", \"{L2}\"]"))
        );
        let mount = |n: u32, hash: &str| {
            (
                EnforcementPoint::MountDevice,
                json!({"target": format!("/run/mounts/scsi/m{n}"), "deviceHash": hash,
                       "mountPathRegex": "/run/mounts/scsi/m[0-9]+"}),
            )
        };
        // The second mount onto m1 is refused: the framework saw m1 in use.
        let steps = [mount(1, L1), mount(1, L2), mount(2, L2)];
        assert_eq!(in_every_tuning(&policy, &steps), [true, false, true]);
        let e = RegoEnforcer::new(&policy, "x").unwrap();
        assert!(e.lock().engine.with_data);
        e.decide(steps[0].0, steps[0].1.clone()).unwrap();
        let refused = e.decide(steps[1].0, steps[1].1.clone()).unwrap_err();
        let PolicyError::Denied(text) = refused else {
            panic!("{refused:?}")
        };
        assert!(
            decoded(&text)["reason"]["errors"]
                .to_string()
                .contains("device already mounted"),
            "{}",
            decoded(&text)
        );
    }

    #[test]
    fn a_policy_reading_the_metadata_itself_sees_it_current() {
        // Not a generated policy: it reads data.metadata, so queries pass it with `with`.
        let policy = r#"package policy

api_version := "0.12.0"
framework_version := "0.5.0"

mount_device := {"allowed": true, "metadata": [{"name": "devices", "action": "add", "key": input.target, "value": input.deviceHash}]}
unmount_device := {"allowed": true} if data.metadata.devices[input.unmountTarget]
unmount_device := {"allowed": false} if not data.metadata.devices[input.unmountTarget]
"#;
        let e = RegoEnforcer::new(policy, "x").unwrap();
        assert!(e.lock().engine.with_data);
        let unmount =
            |t: &str| e.decide(EnforcementPoint::UnmountDevice, json!({"unmountTarget": t}));
        assert!(unmount("/m1").is_err());
        e.decide(
            EnforcementPoint::MountDevice,
            json!({"target": "/m1", "deviceHash": "h", "mountPathRegex": ".*"}),
        )
        .unwrap();
        assert!(unmount("/m1").is_ok());
        assert!(unmount("/m2").is_err());
    }

    #[test]
    fn a_runaway_decision_is_stopped_and_refused() {
        let text = "package policy\napi_version := \"0.12.0\"\nframework_version := \"0.5.0\"\n\
                    slow if {\n some i in numbers.range(1, 100000)\n some j in numbers.range(1, 100000)\n i * j == -1\n}\n\
                    dump_stacks := {\"allowed\": true} if not slow\n";
        let e = RegoEnforcer::new(text, "x").unwrap();
        let start = std::time::Instant::now();
        let err = e
            .decide(EnforcementPoint::DumpStacks, json!({}))
            .unwrap_err()
            .to_string();
        assert!(
            start.elapsed() < MAX_DECISION_TIME * 5,
            "{:?}",
            start.elapsed()
        );
        let d = decoded(&err);
        assert!(
            d["policyError"].as_str().is_some_and(|e| !e.is_empty()),
            "{d}"
        );
    }
}
