//! `/bin/install-drivers <target> <driver dir>` (the original's `gcstools install-drivers`,
//! which the host runs in the UVM after mounting a driver share for
//! `io.microsoft.virtualmachine.kerneldrivers`): overlays the read-only driver directory at
//! `<target>/content` (upper and work directories beside it) and loads every kernel module in
//! it, dependencies first, in process (`finit_module`; no depmod or modprobe). A target that
//! already exists means the drivers were installed: nothing is done, as the original.
//!
//! Exit status 0 when every module loaded (or was loaded already), 1 otherwise, with the
//! failures named on stderr.

use std::path::Path;
use std::process::ExitCode;

/// Characters that would change the meaning of overlay's option string.
fn option_safe(p: &Path) -> Result<&Path, String> {
    let s = p.to_string_lossy();
    if s.contains(',') || s.contains(':') || s.contains('\\') {
        Err(format!(
            "{s:?} cannot be an overlay directory (',', ':' or '\\')"
        ))
    } else {
        Ok(p)
    }
}

fn install(target: &Path, driver: &Path) -> Result<String, String> {
    match std::fs::symlink_metadata(target) {
        Ok(_) => {
            return Ok(format!(
                "{} exists: drivers already installed",
                target.display()
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "failed to stat overlay dir: {}: {e}",
                target.display()
            ))
        }
    }
    if !target.is_absolute() || !driver.is_absolute() {
        return Err("both paths must be absolute".into());
    }
    let (upper, work, content) = (
        target.join("upper"),
        target.join("work"),
        target.join("content"),
    );
    for dir in [&upper, &work, &content] {
        crate::safe_fs::mkdir_all(dir, 0o755)
            .map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        option_safe(driver)?.display(),
        option_safe(&upper)?.display(),
        option_safe(&work)?.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &content,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| format!("mount the driver overlay at {}: {e}", content.display()))?;
    let (loaded, failed) = super::modules::load_dir(&content);
    if failed.is_empty() {
        Ok(format!(
            "loaded {loaded} kernel modules from {}",
            driver.display()
        ))
    } else {
        let names: Vec<String> = failed
            .iter()
            .map(|(p, e)| format!("{}: {e}", p.display()))
            .collect();
        Err(format!(
            "loaded {loaded}, failed to load {}: {}",
            failed.len(),
            names.join("; ")
        ))
    }
}

/// `install-drivers <target> <driver dir>`.
pub fn main(args: &[String]) -> ExitCode {
    if args.len() != 3 {
        eprintln!(
            "install-drivers: expected two args, instead got {}",
            args.len().saturating_sub(1)
        );
        return ExitCode::from(1);
    }
    match install(Path::new(&args[1]), Path::new(&args[2])) {
        Ok(text) => {
            eprintln!("install-drivers: {text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("install-drivers: error while installing drivers: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_cannot_be_injected() {
        assert!(option_safe(Path::new("/run/drivers/a")).is_ok());
        for bad in ["/run/a,upperdir=/etc", "/run/a:b", "/run/a\\b"] {
            assert!(option_safe(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_existing_target_means_installed_and_bad_args_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(install(dir.path(), Path::new("/nonexistent"))
            .unwrap()
            .contains("already installed"));
        assert!(install(Path::new("relative/x"), Path::new("/d")).is_err());
        assert_eq!(main(&["install-drivers".into()]), ExitCode::from(1));
    }
}
