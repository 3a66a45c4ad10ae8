//! The multi-call entry point. The role is chosen from the name the binary runs as, before any
//! thread exists: `init` and `vsockexec` stay single-threaded; only `gcs` builds a runtime.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let name = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("gcs")
        .to_string();
    match name.as_str() {
        "init" => gcs::init::main(&args),
        "vsockexec" => gcs::init::vsockexec::main(&args),
        "install-drivers" => gcs::init::drivers::main(&args),
        gcs::runtime::HELPER_NAME => gcs::runtime::helper::main(&args),
        _ => gcs::agent::main(&args),
    }
}
