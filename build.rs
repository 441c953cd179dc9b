//! Records what `syno-chat-gateway version` and the `synochat_build_info` metric report: the git
//! revision (from `SYNOCHAT_GIT_REVISION`, e.g. a Docker build argument, else from `git` when
//! building from a checkout) and the compiler's version. On Linux with glibc, it also links the
//! binary with packed relative relocations when the toolchain supports them (see
//! [`pack_relative_relocations`]).

use std::path::PathBuf;
use std::process::Command;

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SYNOCHAT_GIT_REVISION");
    let revision = std::env::var("SYNOCHAT_GIT_REVISION")
        .ok()
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .or_else(|| {
            // Rebuild when HEAD moves (worktrees keep HEAD apart from the shared refs).
            for args in [
                ["rev-parse", "--git-path", "HEAD"],
                ["rev-parse", "--git-path", "packed-refs"],
            ] {
                if let Some(path) = output("git", &args).map(PathBuf::from)
                    && path.exists()
                {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
            if let Some(head) = output("git", &["symbolic-ref", "-q", "HEAD"])
                && let Some(path) = output("git", &["rev-parse", "--git-path", &head])
                && PathBuf::from(&path).exists()
            {
                println!("cargo:rerun-if-changed={path}");
            }
            output("git", &["rev-parse", "--short=12", "HEAD"])
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let rustc_version = output(&rustc, &["--version"]).unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=SYNOCHAT_BUILD_REVISION={revision}");
    println!("cargo:rustc-env=SYNOCHAT_BUILD_RUSTC={rustc_version}");
    pack_relative_relocations();
}

/// A position-independent binary carries a relocation for every pointer in its data (about
/// 28,000 here, 24 bytes each: 670 KB that the loader reads at every start, and that stay
/// resident). `-z pack-relative-relocs` (binutils 2.38, glibc 2.36) stores them as a bitmap
/// of a few KB instead, keeping PIE and its address randomisation. Added only when a probe
/// link of an empty program succeeds without warnings, so an older linker or C library
/// builds as before.
fn pack_relative_relocations() {
    let target = std::env::var("TARGET").unwrap_or_default();
    if !target.ends_with("-linux-gnu") {
        return;
    }
    let dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let source = dir.join("relr_probe.c");
    let binary = dir.join("relr_probe");
    if std::fs::write(&source, "int main(void) { return 0; }\n").is_err() {
        return;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let linked = Command::new(cc)
        .arg(&source)
        .arg("-o")
        .arg(&binary)
        .args([
            "-pie",
            "-fPIE",
            "-Wl,--fatal-warnings",
            "-Wl,-z,pack-relative-relocs",
        ])
        .output()
        .is_ok_and(|out| out.status.success());
    if linked {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
