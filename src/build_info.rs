//! What was built: the crate version, the git revision and the compiler (recorded by `build.rs`).

/// The crate version from `Cargo.toml`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision (12 hex digits), or `unknown` when built outside a checkout without
/// `SYNOCHAT_GIT_REVISION`.
pub const REVISION: &str = env!("SYNOCHAT_BUILD_REVISION");
/// `rustc --version` of the compiler that built the binary.
pub const RUSTC: &str = env!("SYNOCHAT_BUILD_RUSTC");
