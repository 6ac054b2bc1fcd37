//! Tells tests/fuzz_replays.rs whether the fuzz replay code is here: it lives in the fuzz
//! crate's directory, which `cargo package` never packages (a directory with its own
//! Cargo.toml is another package), so in the published package that test builds empty.
//! Nothing else reads the cfg; the library is the same either way.
//!
//! The paths to watch are relative and exist on one side only (fuzz/Cargo.toml in the
//! repository, Cargo.toml.orig in a package), so a result recorded by the other side is stale
//! here: `cargo package` verifies in the repository's target directory under the same unit
//! hashes, and must not leave the repository's tests without their replays (or the reverse).

use std::path::Path;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(finwait_fuzz_replays)");
    let root = std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    if Path::new(&root).join("fuzz/replay").is_dir() {
        println!("cargo::rustc-cfg=finwait_fuzz_replays");
        println!("cargo::rerun-if-changed=fuzz/Cargo.toml");
    } else {
        println!("cargo::rerun-if-changed=Cargo.toml.orig");
    }
}
