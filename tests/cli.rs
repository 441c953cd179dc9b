//! The binary's subcommands, run as a user would run them.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};

use syno_chat_gateway::sim::{DEMO_ACCOUNT, DEMO_PASSWORD, SimConfig, Simulator};

const BIN: &str = env!("CARGO_BIN_EXE_syno-chat-gateway");

/// A per-process working directory for the binary (its default SQLite store lands there).
fn scratch_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// Runs the binary with only the given SYNOCHAT variables (none inherited from the machine).
fn run(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut command = Command::new(BIN);
    command
        .current_dir(scratch_dir())
        .args(args)
        .env_remove("SYNOCHAT_CONFIG")
        .env_remove("RUST_LOG");
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("SYNOCHAT__")) {
        command.env_remove(key);
    }
    command
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("binary runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn run_async(args: Vec<String>, env: Vec<(String, String)>, stdin: Option<String>) -> Output {
    actix_web::rt::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run(&args, &env, stdin.as_deref())
    })
    .await
    .unwrap()
}

#[test]
fn check_config_masks_secrets_and_names_bad_keys() {
    let env = [
        ("SYNOCHAT__UPSTREAM__URL", "https://nas.example:5001"),
        ("SYNOCHAT__UPSTREAM__USERNAME", "bot"),
        ("SYNOCHAT__UPSTREAM__PASSWORD", "hunter2-secret"),
        ("SYNOCHAT__AUTH__DISABLED", "true"),
    ];
    let ok = run(&["check-config"], &env, None);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let printed = text(&ok.stdout);
    assert!(printed.contains("nas.example") && printed.contains("********"));
    assert!(!printed.contains("hunter2-secret"));

    let bad = run(
        &["check-config"],
        &[("SYNOCHAT__CACHE__TTL_SECS", "a week")],
        None,
    );
    assert!(!bad.status.success());
    let message = text(&bad.stderr);
    assert_eq!(message.lines().count(), 1, "one clear line: {message}");
    assert!(message.contains("ttl_secs"), "{message}");
}

#[test]
fn serve_refuses_a_real_upstream_without_keys() {
    let out = run(
        &["serve"],
        &[
            ("SYNOCHAT__UPSTREAM__URL", "https://nas.example:5001"),
            ("SYNOCHAT__UPSTREAM__USERNAME", "bot"),
            ("SYNOCHAT__UPSTREAM__PASSWORD", "pw"),
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("auth.keys"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn serve_refuses_unsafe_setting_combinations_in_one_line() {
    let nas = [
        ("SYNOCHAT__UPSTREAM__URL", "https://nas.example:5001"),
        ("SYNOCHAT__UPSTREAM__USERNAME", "bot"),
        ("SYNOCHAT__UPSTREAM__PASSWORD", "pw"),
    ];
    let public = ("SYNOCHAT__SERVER__BIND", "0.0.0.0:0");
    let demo_key = [
        (
            "SYNOCHAT__AUTH__KEYS__DEMO__HASH",
            "04ad8ee9cdacecbc1a7b32119f0369c969be0a8a79081c335a9c8f7cbfec5cf1",
        ),
        ("SYNOCHAT__AUTH__KEYS__DEMO__SCOPES", "read,write"),
    ];
    let cases: [(Vec<(&str, &str)>, &str); 3] = [
        (
            [
                nas.as_slice(),
                &[public, ("SYNOCHAT__AUTH__DISABLED", "true")],
            ]
            .concat(),
            "auth.allow_disabled_on_public_bind",
        ),
        ([nas.as_slice(), &demo_key].concat(), "auth.keys.demo.hash"),
        ([&[public], demo_key.as_slice()].concat(), "upstream.demo"),
    ];
    for (env, names) in cases {
        let out = run(&["serve"], &env, None);
        let message = text(&out.stderr);
        assert!(!out.status.success(), "started with {env:?}");
        assert_eq!(message.lines().count(), 1, "one clear line: {message}");
        assert!(message.contains(names), "{message}");
    }
}

#[test]
fn serve_names_the_address_it_cannot_listen_on() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    // A store of its own: the scratch directory's default one is another test's (a store is
    // opened, and locked, before the listener).
    let store = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", store.path().join("store.db").display());
    let out = run(
        &["serve"],
        &[
            ("SYNOCHAT__STORE__URL", &store_url),
            ("SYNOCHAT__UPSTREAM__DEMO", "true"),
            ("SYNOCHAT__AUTH__DISABLED", "true"),
            ("SYNOCHAT__SERVER__BIND", &address),
            ("SYNOCHAT__LOG__LEVEL", "error"),
        ],
        None,
    );
    assert!(!out.status.success());
    let message = text(&out.stderr);
    assert!(
        message.contains(&format!("cannot listen on {address} (server.bind)")),
        "{message}"
    );
}

#[test]
fn a_document_piped_into_a_reader_that_stops_early_is_no_error() {
    let mut child = Command::new(BIN)
        .arg("openapi")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader takes nothing and goes: the writer meets a closed pipe.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn hash_key_hashes_stdin_and_makes_new_keys() {
    let out = run(&["hash-key", "--stdin"], &[], Some("foo\n"));
    assert_eq!(
        text(&out.stdout).trim(),
        "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
    );
    let fresh = run(&["hash-key"], &[], None);
    let printed = text(&fresh.stdout);
    let key = printed
        .lines()
        .find_map(|l| l.strip_prefix("key:"))
        .unwrap()
        .trim()
        .to_owned();
    let hash = printed
        .lines()
        .find_map(|l| l.strip_prefix("hash:"))
        .unwrap()
        .trim()
        .to_owned();
    let check = run(&["hash-key", "--stdin"], &[], Some(&key));
    assert_eq!(text(&check.stdout).trim(), hash);
}

#[test]
fn version_names_the_version_revision_and_compiler() {
    let out = run(&["version"], &[], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(
        lines[0],
        concat!("syno-chat-gateway ", env!("CARGO_PKG_VERSION"))
    );
    let revision = lines[1].strip_prefix("revision: ").expect("revision line");
    assert!(
        revision == "unknown"
            || ((7..=40).contains(&revision.len())
                && revision.bytes().all(|b| b.is_ascii_hexdigit())),
        "{printed}"
    );
    // Built from this checkout: the revision is a recent commit of it (build.rs reruns when
    // HEAD moves).
    if revision != "unknown"
        && let Ok(git) = Command::new("git")
            .args(["log", "--format=%H", "-n", "50"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
        && git.status.success()
    {
        assert!(
            text(&git.stdout).lines().any(|c| c.starts_with(revision)),
            "{revision} is not a recent commit"
        );
    }
    assert!(lines[2].starts_with("rustc: rustc 1."), "{printed}");
}

#[test]
fn openapi_prints_the_committed_document() {
    let out = run(&["openapi"], &[], None);
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .unwrap();
    assert_eq!(text(&out.stdout), committed);
}

#[actix_web::test]
async fn healthcheck_reports_whether_the_gateway_answers() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let simulator = Simulator::start(SimConfig::default(), SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    // The simulator is not the gateway, but it answers HTTP: use its 404 for the failure case.
    let missing = run_async(
        vec![
            "healthcheck".into(),
            "--url".into(),
            format!("{}/healthz", simulator.base_url()),
        ],
        vec![],
        None,
    )
    .await;
    assert!(!missing.status.success());

    let mut settings = syno_chat_gateway::config::Settings::default();
    settings.server.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    let store_dir = tempfile::tempdir().unwrap();
    settings.store.url = secrecy::SecretString::from(format!(
        "sqlite://{}",
        store_dir.path().join("store.db").display()
    ));
    settings.server.workers = Some(1);
    let app = syno_chat_gateway::startup::Application::build(settings)
        .await
        .unwrap();
    let port = app.port();
    let handle = app.handle();
    actix_web::rt::spawn(app.run_until_stopped());
    let ok = run_async(
        vec!["healthcheck".into()],
        vec![("SYNOCHAT__SERVER__BIND".into(), format!("127.0.0.1:{port}"))],
        None,
    )
    .await;
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    handle.stop(true).await;
}

#[actix_web::test]
async fn enroll_device_asks_for_the_code_and_prints_a_device_id_that_skips_it() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let simulator = Simulator::start(SimConfig::default(), SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let sim = simulator.control();
    sim.enable_otp(DEMO_ACCOUNT, "246810");
    let env = vec![
        ("SYNOCHAT__UPSTREAM__URL".to_owned(), simulator.base_url()),
        (
            "SYNOCHAT__UPSTREAM__USERNAME".to_owned(),
            DEMO_ACCOUNT.to_owned(),
        ),
        (
            "SYNOCHAT__UPSTREAM__PASSWORD".to_owned(),
            DEMO_PASSWORD.to_owned(),
        ),
        ("SYNOCHAT__AUTH__DISABLED".to_owned(), "true".to_owned()),
    ];
    let wrong = run_async(
        vec!["enroll-device".into(), "--otp".into(), "000000".into()],
        env.clone(),
        None,
    )
    .await;
    assert!(!wrong.status.success());
    assert!(
        text(&wrong.stderr).contains("one-time code"),
        "{}",
        text(&wrong.stderr)
    );

    let out = run_async(
        vec!["enroll-device".into()],
        env.clone(),
        Some("246810\n".into()),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let device_id = text(&out.stdout).trim().to_owned();
    assert!(!device_id.is_empty());
    assert!(
        sim.active_sessions().is_empty(),
        "the enrolment session was logged out"
    );

    // With the device id the gateway logs in without a code.
    let mut with_device = env.clone();
    with_device.push(("SYNOCHAT__UPSTREAM__DEVICE_ID".to_owned(), device_id));
    let again = run_async(
        vec!["enroll-device".into(), "--otp".into(), "ignored".into()],
        with_device,
        None,
    )
    .await;
    let logins = sim
        .requests()
        .into_iter()
        .filter(|r| r.method.as_deref() == Some("login"))
        .collect::<Vec<_>>();
    let last = logins.last().unwrap();
    assert!(last.params.iter().any(|(k, _)| k == "device_id"));
    assert_eq!(
        last.error_code,
        None,
        "the device id skipped the code: {}",
        text(&again.stderr)
    );
}

/// `serve` with the given settings, its standard error piped to the test.
fn serve_command(env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(scratch_dir())
        .arg("serve")
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

#[test]
fn sigterm_drains_and_logs_out() {
    let child = serve_command(&[
        ("SYNOCHAT__SERVER__BIND", "127.0.0.1:0"),
        ("SYNOCHAT__LOG__FORMAT", "json"),
    ])
    .spawn()
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let log = text(&out.stderr);
    assert!(out.status.success(), "exit after SIGTERM: {log}");
    assert!(log.contains("logged out of DSM"), "{log}");
    // Demo mode is announced at warn on every start.
    assert!(
        log.lines()
            .any(|l| l.contains("\"level\":\"WARN\"") && l.contains("DEMO MODE")),
        "{log}"
    );
}

/// One `GET path` on a kept-alive connection; the status, or `None` when no whole answer came
/// within the stream's read timeout.
fn get_on(stream: &mut std::net::TcpStream, path: &str) -> Option<u16> {
    get_with(stream, path, "")
}

/// [`get_on`] with more header lines (each ending in CRLF).
fn get_with(stream: &mut std::net::TcpStream, path: &str, headers: &str) -> Option<u16> {
    use std::io::Read;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n");
        if let Some(end) = head_end {
            let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                return head.get(9..12)?.parse().ok();
            }
        }
        let read = stream.read(&mut chunk).ok()?;
        if read == 0 {
            return None;
        }
        answer.extend_from_slice(&chunk[..read]);
    }
}

/// A NAS that cannot be reached fails every request alike: the first failure is a warning, the
/// rest of the spell are not (an outage wrote a WARN for each request before).
#[test]
fn an_outage_warns_once_not_for_every_request() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nas = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = listener.local_addr().unwrap().to_string();
    drop(listener);
    let store = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", store.path().join("store.db").display());
    let hash = syno_chat_gateway::auth::hash_key("outage-key-0123456789");
    let child = serve_command(&[
        ("SYNOCHAT__STORE__URL", &store_url),
        ("SYNOCHAT__SERVER__BIND", &bind),
        ("SYNOCHAT__UPSTREAM__URL", &nas),
        ("SYNOCHAT__UPSTREAM__USERNAME", "bot"),
        ("SYNOCHAT__UPSTREAM__PASSWORD", "pw"),
        ("SYNOCHAT__AUTH__KEYS__CI__HASH", &hash),
        ("SYNOCHAT__AUTH__KEYS__CI__SCOPES", "read"),
        ("SYNOCHAT__LOG__FORMAT", "json"),
    ])
    .spawn()
    .unwrap();
    let mut stream = (0..100)
        .find_map(|_| {
            std::net::TcpStream::connect(&bind)
                .map_err(|_| std::thread::sleep(std::time::Duration::from_millis(50)))
                .ok()
        })
        .expect("the gateway listens");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let statuses: Vec<_> = (0..5)
        .map(|_| {
            get_with(
                &mut stream,
                "/api/v1/channels",
                "Authorization: Bearer outage-key-0123456789\r\n",
            )
        })
        .collect();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let log = text(&child.wait_with_output().unwrap().stderr);
    assert!(statuses.iter().all(|s| *s == Some(502)), "{statuses:?}");
    let failures = |level: &str| {
        log.lines()
            .filter(|l| l.contains(level) && l.contains("\"request failed\""))
            .count()
    };
    assert_eq!(failures("\"level\":\"WARN\""), 1, "{log}");
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("request finished"))
            .count(),
        5,
        "every request keeps its access line: {log}"
    );
}

/// A reader of the log that stops reading (a stuck journald or log shipper) fills the pipe
/// after a few hundred lines; the gateway goes on answering, since its lines are written by a
/// thread of their own.
#[test]
fn a_log_reader_that_stops_reading_stalls_no_request() {
    use std::io::BufRead;
    // A store of its own: the scratch directory's default one is another test's.
    let store = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", store.path().join("store.db").display());
    let mut child = serve_command(&[
        ("SYNOCHAT__STORE__URL", &store_url),
        // Port 0, read from the log: a port found free and let go could be another test's
        // by the time the gateway binds it.
        ("SYNOCHAT__SERVER__BIND", "127.0.0.1:0"),
        ("SYNOCHAT__SERVER__WORKERS", "1"),
        ("SYNOCHAT__LOG__FORMAT", "json"),
        ("SYNOCHAT__LOG__LEVEL", "info"),
        ("SYNOCHAT__RATE_LIMIT__ENABLED", "false"),
    ])
    .spawn()
    .unwrap();
    // Standard error is read up to the line that names the address, then never again: the
    // pipe holds 64 KB, about 200 access lines.
    let mut log = std::io::BufReader::new(child.stderr.take().unwrap());
    let address = (&mut log)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            let (_, after) = line
                .contains("listening")
                .then(|| line.split_once(r#""address":""#))??;
            Some(after.split('"').next()?.to_owned())
        })
        .expect("the gateway logs where it listens");
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let answered = (0..2000)
        .take_while(|_| get_on(&mut stream, "/healthz") == Some(200))
        .count();
    child.kill().unwrap();
    let _ = child.wait();
    drop(log);
    assert_eq!(answered, 2000, "requests stopped being answered");
}
