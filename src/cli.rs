//! The `gcs` command line, parsed with Go `flag` package rules so that the host's usual kernel
//! command line (`/bin/gcs -v4 -log-format json -loglevel debug ...`) works unchanged:
//! `-x v`, `-x=v`, `--x`; bool flags take no separate value; parsing stops at the first
//! non-flag argument or after `--`.

use std::path::PathBuf;

use tracing::Level;

use crate::logging::{parse_level, LogFormat};

/// The policy enforcer to start with (`-initial-policy-stance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyStance {
    Allow,
    Deny,
}

/// Everything `gcs` is told on its command line.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentOptions {
    pub log_level: Level,
    pub log_file: Option<PathBuf>,
    pub log_format: LogFormat,
    /// Registers the protocol-v4 handlers; without it every request but NegotiateProtocol
    /// fails with HrNotImpl, as in the original.
    pub v4: bool,
    pub use_inouterr: bool,
    pub kmsg_log_level: u32,
    pub core_dump_location: Option<PathBuf>,
    pub root_mem_reserve_bytes: u64,
    pub gcs_mem_limit_bytes: u64,
    pub disable_time_sync: bool,
    pub scrub_logs: bool,
    pub initial_policy_stance: PolicyStance,
    /// Test transport: "dial vsock port P" connects to the Unix socket `<prefix>_<P>`.
    pub vsock_uds: Option<PathBuf>,
    /// How long the pipe-mode clean-close handshake waits for the host to close its end.
    pub stdio_handshake_timeout_ms: u64,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            log_level: Level::DEBUG,
            log_file: None,
            log_format: LogFormat::Text,
            v4: false,
            use_inouterr: false,
            kmsg_log_level: 4,
            core_dump_location: None,
            root_mem_reserve_bytes: 75 * 1024 * 1024,
            gcs_mem_limit_bytes: 50 * 1024 * 1024,
            disable_time_sync: false,
            scrub_logs: true,
            initial_policy_stance: PolicyStance::Allow,
            vsock_uds: None,
            stdio_handshake_timeout_ms: 5000,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Run(AgentOptions),
    /// `-h` or `-help`: print usage and exit 0.
    Help,
}

/// A command line that cannot be used; printed with the usage, exit code 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("flag provided but not defined: -{0}")]
    Unknown(String),
    #[error("bad flag syntax: {0}")]
    BadSyntax(String),
    #[error("flag needs an argument: -{0}")]
    MissingValue(String),
    #[error("invalid value {value:?} for flag -{flag}: {reason}")]
    InvalidValue {
        flag: String,
        value: String,
        reason: String,
    },
}

/// (name, takes-a-value, help) for every flag, in usage order.
const FLAGS: &[(&str, bool, &str)] = &[
    (
        "core-dump-location",
        true,
        "path to write core dumps to (kernel.core_pattern)",
    ),
    (
        "disable-time-sync",
        false,
        "do not keep the clock in sync with the host",
    ),
    (
        "gcs-mem-limit-bytes",
        true,
        "memory use of the agent that triggers warnings (default 52428800)",
    ),
    (
        "initial-policy-stance",
        true,
        "allow or deny until a security policy arrives (default allow)",
    ),
    (
        "kmsgLogLevel",
        true,
        "forward /dev/kmsg entries at or below this priority (default 4)",
    ),
    ("log-format", true, "text or json (default text)"),
    ("logfile", true, "log to this file instead of stderr"),
    (
        "loglevel",
        true,
        "trace, debug, info, warning, error, fatal or panic (default debug)",
    ),
    (
        "root-mem-reserve-bytes",
        true,
        "memory kept from containers: /pods limit = RAM - this (default 78643200)",
    ),
    (
        "scrub-logs",
        false,
        "scrub environment variables and similar from logged requests (default true)",
    ),
    (
        "stdio-handshake-timeout-ms",
        true,
        "how long a finished output stream waits for the host to close its end (default 5000)",
    ),
    (
        "use-inouterr",
        false,
        "serve the bridge on stdin/stdout instead of vsock",
    ),
    (
        "v4",
        false,
        "enable the protocol v4 handlers (the host always passes it)",
    ),
    (
        "vsock-uds",
        true,
        "test transport: dial the Unix socket PREFIX_<port> instead of vsock port <port>",
    ),
];

/// The usage text printed for `-h` and after a flag error.
pub fn usage() -> String {
    let mut s = String::from("Usage of gcs:\n");
    for (name, takes_value, help) in FLAGS {
        let arg = if *takes_value { " value" } else { "" };
        s.push_str(&format!("  -{name}{arg}\n    \t{help}\n"));
    }
    s
}

/// Parses `args` (without the program name). Arguments after the flags are ignored, as the
/// original does.
pub fn parse(args: &[String]) -> Result<Parsed, FlagError> {
    let mut opts = AgentOptions::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" || arg.len() < 2 || !arg.starts_with('-') {
            break;
        }
        let body = arg.strip_prefix("--").unwrap_or(&arg[1..]);
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(FlagError::BadSyntax(arg.clone()));
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let Some((_, takes_value, _)) = FLAGS.iter().find(|(n, _, _)| *n == name) else {
            if name == "h" || name == "help" {
                return Ok(Parsed::Help);
            }
            return Err(FlagError::Unknown(name.to_string()));
        };
        let value = if *takes_value {
            match inline {
                Some(v) => v,
                None => {
                    let v = args
                        .get(i)
                        .ok_or_else(|| FlagError::MissingValue(name.to_string()))?;
                    i += 1;
                    v.clone()
                }
            }
        } else {
            inline.unwrap_or_else(|| "true".to_string())
        };
        apply(&mut opts, name, &value)?;
    }
    Ok(Parsed::Run(opts))
}

fn invalid(flag: &str, value: &str, reason: impl Into<String>) -> FlagError {
    FlagError::InvalidValue {
        flag: flag.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(flag: &str, value: &str) -> Result<bool, FlagError> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(invalid(flag, value, "parse error")),
    }
}

fn parse_u64(flag: &str, value: &str) -> Result<u64, FlagError> {
    value
        .parse()
        .map_err(|e: std::num::ParseIntError| invalid(flag, value, e.to_string()))
}

fn apply(opts: &mut AgentOptions, name: &str, value: &str) -> Result<(), FlagError> {
    match name {
        "loglevel" => {
            opts.log_level =
                parse_level(value).ok_or_else(|| invalid(name, value, "not a logrus level"))?;
        }
        "logfile" => opts.log_file = (!value.is_empty()).then(|| PathBuf::from(value)),
        "log-format" => {
            opts.log_format = match value {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(invalid(name, value, "expected text or json")),
            }
        }
        "v4" => opts.v4 = parse_bool(name, value)?,
        "use-inouterr" => opts.use_inouterr = parse_bool(name, value)?,
        "kmsgLogLevel" => {
            let level = parse_u64(name, value)?;
            opts.kmsg_log_level =
                u32::try_from(level).map_err(|_| invalid(name, value, "out of range"))?;
        }
        "core-dump-location" => {
            opts.core_dump_location = (!value.is_empty()).then(|| PathBuf::from(value))
        }
        "root-mem-reserve-bytes" => opts.root_mem_reserve_bytes = parse_u64(name, value)?,
        "gcs-mem-limit-bytes" => opts.gcs_mem_limit_bytes = parse_u64(name, value)?,
        "disable-time-sync" => opts.disable_time_sync = parse_bool(name, value)?,
        "scrub-logs" => opts.scrub_logs = parse_bool(name, value)?,
        "initial-policy-stance" => {
            opts.initial_policy_stance = match value {
                "allow" => PolicyStance::Allow,
                "deny" => PolicyStance::Deny,
                _ => return Err(invalid(name, value, "expected allow or deny")),
            }
        }
        "vsock-uds" => opts.vsock_uds = (!value.is_empty()).then(|| PathBuf::from(value)),
        "stdio-handshake-timeout-ms" => opts.stdio_handshake_timeout_ms = parse_u64(name, value)?,
        _ => return Err(FlagError::Unknown(name.to_string())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<AgentOptions, FlagError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&args)? {
            Parsed::Run(o) => Ok(o),
            Parsed::Help => panic!("unexpected help"),
        }
    }

    #[test]
    fn host_command_line_parses() {
        let o = run(&[
            "-v4",
            "-log-format",
            "json",
            "-loglevel",
            "debug",
            "-disable-time-sync",
            "-scrub-logs=false",
            "-core-dump-location",
            "/tmp/core",
        ])
        .unwrap();
        assert!(o.v4);
        assert_eq!(o.log_format, LogFormat::Json);
        assert_eq!(o.log_level, Level::DEBUG);
        assert!(o.disable_time_sync);
        assert!(!o.scrub_logs);
        assert_eq!(o.core_dump_location, Some(PathBuf::from("/tmp/core")));
    }

    #[test]
    fn go_flag_spellings() {
        let o = run(&[
            "--loglevel=info",
            "--v4",
            "-kmsgLogLevel=7",
            "-root-mem-reserve-bytes",
            "1",
        ])
        .unwrap();
        assert_eq!(o.log_level, Level::INFO);
        assert!(o.v4);
        assert_eq!(o.kmsg_log_level, 7);
        assert_eq!(o.root_mem_reserve_bytes, 1);
    }

    #[test]
    fn defaults_match_spec() {
        let o = run(&[]).unwrap();
        assert_eq!(o.root_mem_reserve_bytes, 78_643_200);
        assert_eq!(o.gcs_mem_limit_bytes, 52_428_800);
        assert_eq!(o.kmsg_log_level, 4);
        assert!(o.scrub_logs);
        assert!(!o.v4);
        assert_eq!(o.initial_policy_stance, PolicyStance::Allow);
        assert_eq!(o.stdio_handshake_timeout_ms, 5000);
    }

    #[test]
    fn parsing_stops_at_first_non_flag() {
        let o = run(&["-v4", "extra", "-bogus"]).unwrap();
        assert!(o.v4);
        let o = run(&["--", "-v4"]).unwrap();
        assert!(!o.v4);
    }

    #[test]
    fn errors() {
        assert_eq!(run(&["-bogus"]), Err(FlagError::Unknown("bogus".into())));
        assert_eq!(
            run(&["-loglevel"]),
            Err(FlagError::MissingValue("loglevel".into()))
        );
        assert!(matches!(
            run(&["-v4=maybe"]),
            Err(FlagError::InvalidValue { .. })
        ));
        assert!(matches!(
            run(&["-loglevel", "loud"]),
            Err(FlagError::InvalidValue { .. })
        ));
        assert!(matches!(
            run(&["-gcs-mem-limit-bytes", "-1"]),
            Err(FlagError::InvalidValue { .. })
        ));
        assert!(matches!(run(&["---v4"]), Err(FlagError::BadSyntax(_))));
        assert!(matches!(run(&["-=x"]), Err(FlagError::BadSyntax(_))));
        assert_eq!(parse(&["-h".to_string()]), Ok(Parsed::Help));
    }
}
