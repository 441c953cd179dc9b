//! Command line: `serve` (default), `simulate`, `openapi`, `check-config`, `healthcheck`,
//! `enroll-device`, `hash-key` and `version`.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Settings, Sources};
use crate::startup::Application;
use crate::upstream::{DsmShared, Refusal};
use crate::{api, auth, logging, sim};

#[derive(Parser)]
#[command(
    name = "syno-chat-gateway",
    version,
    about = "A REST/JSON gateway in front of Synology Chat"
)]
struct Cli {
    /// TOML configuration file (defaults < file < SYNOCHAT__SECTION__KEY variables).
    #[arg(long, global = true, env = "SYNOCHAT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default). Without upstream.url it runs in demo mode.
    Serve,
    /// Run only the built-in DSM simulator, for your own tests.
    Simulate {
        #[arg(long, default_value = "127.0.0.1:5000")]
        bind: SocketAddr,
        /// Idle time after which a DSM session expires.
        #[arg(long, default_value_t = 1800)]
        session_idle_timeout_secs: u64,
    },
    /// Print the OpenAPI document.
    Openapi {
        /// Write it to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Load and validate the configuration, then print it with secrets masked.
    CheckConfig,
    /// Exit 0 when the gateway's /healthz answers 200 (for container health checks).
    Healthcheck {
        /// Defaults to http://<server.bind>/healthz.
        #[arg(long)]
        url: Option<String>,
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
    /// For a DSM account with 2-step verification: log in once with a one-time code and print
    /// the device id to put in upstream.device_id.
    EnrollDevice {
        /// The one-time code; asked for on standard input when needed and not given.
        #[arg(long)]
        otp: Option<String>,
    },
    /// Print the version, the git revision it was built from (when known) and the compiler.
    Version,
    /// Make a new random API key and print it with the SHA-256 hash to configure.
    HashKey {
        /// Hash a key read from standard input instead of making one.
        #[arg(long)]
        stdin: bool,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // awc's rustls has no default provider; install the one compiled in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let load = || {
        Settings::load(Sources {
            file: cli.config.clone(),
            env: None,
        })
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => load().map_err(|e| e.to_string()).and_then(serve),
        Command::Simulate {
            bind,
            session_idle_timeout_secs,
        } => simulate(bind, session_idle_timeout_secs),
        Command::Openapi { output } => print_openapi(output),
        Command::CheckConfig => load()
            .map_err(|e| e.to_string())
            .and_then(|s| print(&(s.masked_json() + "\n"))),
        Command::Healthcheck { url, timeout_secs } => load()
            .map_err(|e| e.to_string())
            .and_then(|s| healthcheck(&s, url, timeout_secs)),
        Command::EnrollDevice { otp } => load()
            .map_err(|e| e.to_string())
            .and_then(|s| enroll_device(&s, otp)),
        Command::HashKey { stdin } => hash_key(stdin),
        Command::Version => {
            use crate::build_info::{REVISION, RUSTC, VERSION};
            println!("syno-chat-gateway {VERSION}\nrevision: {REVISION}\nrustc: {RUSTC}");
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("syno-chat-gateway: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(settings: Settings) -> Result<(), String> {
    crate::startup::limit_malloc_arenas(settings.server.workers);
    // Held to the end: dropping it writes the lines still queued.
    let (log, _written_at_exit) = logging::background(std::io::stderr());
    logging::init(&settings.log, log)?;
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings)
            .await
            .map_err(|e| e.to_string())?;
        let handle = app.handle();
        actix_web::rt::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received: draining in-flight requests"),
                _ = int.recv() => tracing::info!("SIGINT received: draining in-flight requests"),
            }
            handle.stop(true).await;
        });
        app.run_until_stopped().await.map_err(|e| e.to_string())
    })
}

fn simulate(bind: SocketAddr, idle_secs: u64) -> Result<(), String> {
    let (log, _written_at_exit) = logging::background(std::io::stderr());
    logging::init(&Default::default(), log)?;
    let config = sim::SimConfig {
        session_idle_timeout: Duration::from_secs(idle_secs),
        ..Default::default()
    };
    actix_web::rt::System::new()
        .block_on(sim::run_standalone(config, bind))
        .map_err(|e| e.to_string())
}

fn print_openapi(output: Option<PathBuf>) -> Result<(), String> {
    let json = api::openapi_document()
        .to_pretty_json()
        .map_err(|e| e.to_string())?
        + "\n";
    match output {
        Some(path) => std::fs::write(&path, json).map_err(|e| format!("{}: {e}", path.display())),
        None => print(&json),
    }
}

/// Writes a document to standard output. A reader that stopped early (`| head`, `| less`
/// quit) is no error: the rest was not wanted.
fn print(text: &str) -> Result<(), String> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.to_string()),
        _ => Ok(()),
    }
}

fn healthcheck(settings: &Settings, url: Option<String>, timeout_secs: u64) -> Result<(), String> {
    let url = url.unwrap_or_else(|| {
        let bind = settings.server.bind;
        // A wildcard bind is reached through loopback.
        let host = if bind.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            bind.ip().to_string()
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        format!("http://{host}:{}/healthz", bind.port())
    });
    actix_web::rt::System::new().block_on(async move {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(timeout_secs))
            .finish();
        match client.get(&url).send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("{url} answered {}", response.status())),
            Err(error) => Err(format!("{url}: {error}")),
        }
    })
}

fn enroll_device(settings: &Settings, otp: Option<String>) -> Result<(), String> {
    if settings.is_demo() {
        return Err(
            "enroll-device needs upstream.url, upstream.username and upstream.password".to_owned(),
        );
    }
    let config = crate::startup::upstream_config(settings, None)?;
    actix_web::rt::System::new().block_on(async move {
        let client = DsmShared::new(config, crate::metrics::Metrics::new())?.client();
        let outcome = match client.login_once(otp.as_deref(), true).await {
            Err(error) if error.refusal() == Some(Refusal::OtpRequired) && otp.is_none() => {
                eprint!("One-time code from your authenticator app: ");
                let _ = std::io::stderr().flush();
                let mut code = String::new();
                std::io::stdin().lock().read_line(&mut code).map_err(|e| e.to_string())?;
                client.login_once(Some(code.trim()), true).await
            }
            other => other,
        };
        match outcome {
            Ok(outcome) => match outcome.device_id {
                Some(device_id) => {
                    println!("{device_id}");
                    eprintln!("Put this in upstream.device_id (or SYNOCHAT__UPSTREAM__DEVICE_ID); keep it secret.");
                    Ok(())
                }
                None => Err("DSM accepted the login but issued no device id (is 2-step verification on for this account?)".to_owned()),
            },
            Err(error) if error.refusal() == Some(Refusal::OtpWrong) => Err("DSM rejected the one-time code (error 404)".to_owned()),
            Err(error) => Err(error.to_string()),
        }
    })
}

fn hash_key(from_stdin: bool) -> Result<(), String> {
    if from_stdin {
        let mut key = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut key)
            .map_err(|e| e.to_string())?;
        let key = key.trim_end_matches(['\n', '\r']);
        if key.is_empty() {
            return Err("no key on standard input".to_owned());
        }
        println!("{}", auth::hash_key(key));
        return Ok(());
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
    let key = format!("scg_{}", hex::encode(bytes));
    println!("key:  {key}");
    println!("hash: {}", auth::hash_key(&key));
    eprintln!(
        "Give the key to the caller; configure only the hash: for an API key, e.g. SYNOCHAT__AUTH__KEYS__<NAME>__HASH=<hash> and SYNOCHAT__AUTH__KEYS__<NAME>__SCOPES=read,write; for a hook's secret, SYNOCHAT__HOOKS__<NAME>__SECRET_HASH=<hash>"
    );
    Ok(())
}
