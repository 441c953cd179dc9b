//! Records what `syno-chat-gateway version` and the `synochat_build_info` metric report: the git
//! revision (from `SYNOCHAT_GIT_REVISION`, e.g. a Docker build argument, else from `git` when
//! building from a checkout) and the compiler's version.

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
}
