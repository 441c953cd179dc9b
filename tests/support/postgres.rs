//! A real PostgreSQL for the tests: one throw-away cluster per test process (Debian's
//! `postgresql` package: `initdb` into a temporary directory, a free port), a fresh database per
//! test. A watchdog stops the cluster and removes its directory when the test process ends, even
//! when it is killed. Without PostgreSQL the tests print a loud SKIP; under `CI=true` they fail.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct PgCluster {
    port: u16,
    /// `runuser -u <user> --` when running as root (initdb and postgres refuse root).
    prefix: Vec<String>,
    bin: PathBuf,
}

static CLUSTER: OnceLock<Option<PgCluster>> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// The process's cluster, started on first use; `None` (after a loud SKIP) when PostgreSQL is
/// not installed. Panics under `CI=true` instead of skipping.
pub fn cluster() -> Option<&'static PgCluster> {
    CLUSTER
        .get_or_init(|| match PgCluster::start() {
            Ok(cluster) => Some(cluster),
            Err(reason) => {
                let message = format!(
                    "!!!!!! SKIPPING PostgreSQL tests: {reason} (apt-get install postgresql) !!!!!!"
                );
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("{message} — a failure under CI=true");
                }
                eprintln!("{message}");
                None
            }
        })
        .as_ref()
}

/// A URL of a new, empty database on the shared cluster, or `None` (SKIP printed).
pub fn fresh_database() -> Option<String> {
    let cluster = cluster()?;
    let name = format!(
        "t_{}_{}",
        std::process::id(),
        DATABASES.fetch_add(1, Ordering::Relaxed)
    );
    cluster.psql(&format!("CREATE DATABASE {name}"));
    Some(cluster.url(&name))
}

/// PostgreSQL gone from under a running gateway, and back: `reachable: false` refuses new
/// connections to the database of `url` (one of [`fresh_database`]'s) and ends the open ones.
pub fn set_reachable(url: &str, reachable: bool) {
    let cluster = cluster().expect("the cluster that made the database");
    let database = url.rsplit('/').next().expect("a database URL");
    cluster.psql(&format!(
        "ALTER DATABASE {database} ALLOW_CONNECTIONS {reachable}"
    ));
    if !reachable {
        cluster.psql(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
        ));
    }
}

fn newest_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl PgCluster {
    fn start() -> Result<Self, String> {
        let bin = newest_bin_dir().ok_or("no /usr/lib/postgresql/*/bin/initdb")?;
        let dir = tempfile::Builder::new()
            .prefix("sgw-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        let mut prefix = Vec::new();
        if is_root() {
            let user = "postgres";
            if !Command::new("id")
                .arg(user)
                .output()
                .is_ok_and(|o| o.status.success())
            {
                run(
                    Command::new("useradd").args(["--system", "--no-create-home", user]),
                    "useradd postgres",
                )?;
            }
            run(
                Command::new("chown").args(["-R", user]).arg(&dir),
                "chown the cluster directory",
            )?;
            prefix = ["runuser", "-u", user, "--"].map(String::from).to_vec();
        }
        let data = dir.join("data");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let cluster = Self { port, prefix, bin };
        run(
            cluster
                .command("initdb")
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
                .arg("-D")
                .arg(&data),
            "initdb",
        )?;
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c max_connections=200",
            dir.display()
        );
        run(
            cluster
                .command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-o", &options, "-w", "-l"])
                .arg(dir.join("log"))
                .arg("start"),
            "pg_ctl start",
        )?;
        cluster.watchdog(&dir, &data);
        Ok(cluster)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(path);
                command
            }
            None => Command::new(path),
        }
    }

    /// Stops the cluster and removes its directory once this test process is gone.
    fn watchdog(&self, dir: &Path, data: &Path) {
        let stop = format!(
            "{} {} -D {} -m immediate stop",
            self.prefix.join(" "),
            self.bin.join("pg_ctl").display(),
            data.display()
        );
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = dir.display()
        );
        let _ = Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    fn psql(&self, sql: &str) {
        let psql = self.bin.join("psql");
        let out = Command::new(psql)
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}
