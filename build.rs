//! Release builds lay out the agent's code in the order of `link/gcs.order` (lld's
//! `--symbol-ordering-file`, through gcc's `-wrapper` `link/order-wrapper`, which maps the
//! order's names to this build's symbols): the functions an agent runs from its start to an
//! idle, negotiated bridge come first, then those of UVM execs, then those of container
//! lifecycles and execs, so that the pages they occupy are few and adjacent. The rest of the
//! 7 MB of code (the runtime helper's libcontainer, the policy engine, storage, networking)
//! follows and stays out of the agent's resident memory (issue 17; README, "Performance").
//! `make orderfile` regenerates the order; a stale order only weakens the effect.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/gcs.order");
    println!("cargo:rerun-if-changed=link/order-wrapper");
    // "release" for the release and bench profiles; debug builds gain nothing from it.
    if std::env::var("PROFILE").as_deref() != Ok("release") {
        return;
    }
    let Ok(dir) = std::env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    let link = std::path::Path::new(&dir).join("link");
    println!("cargo:rustc-link-arg-bin=gcs=-wrapper");
    println!(
        "cargo:rustc-link-arg-bin=gcs={}",
        link.join("order-wrapper").display()
    );
    println!(
        "cargo:rustc-link-arg-bin=gcs=-Wl,--symbol-ordering-file={}",
        link.join("gcs.order").display()
    );
}
