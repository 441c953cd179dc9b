//! Training load for a profile-guided build (`make release-pgo`, tests/bench/pgo.sh): drives an
//! instrumented gateway through the requests users send most, so that the profile it writes
//! tells the compiler which paths are hot. Not part of the gateway's build.
//!
//!   cargo run --release --example pgo_train -- http://127.0.0.1:8080 <api key> <hook secret>
//!
//! The key needs the write scope; the hook is `hooks.alerts`, posting to channel 1.
//!
//! Plain HTTP/1.1 over std's `TcpStream`, a few keep-alive connections on threads: no client
//! library, so nothing of the gateway's own client (awc) runs in this process. Every answer's
//! status is checked: a profile of refusals (a wrong key, a NAS that is down) would teach the
//! compiler the wrong paths, so any unexpected status ends the run with an error.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Who a request authenticates as.
#[derive(Clone, Copy)]
enum Credential {
    /// The API key (`/api/v1`).
    Key,
    /// The hook's secret (`/hooks/alerts`).
    Hook,
}

/// A request the training sends, how often, and the status it must get.
struct Scenario {
    credential: Credential,
    method: &'static str,
    path: &'static str,
    /// The JSON body of the `n`th request, if any.
    body: Option<fn(usize) -> String>,
    status: u16,
    times: usize,
}

/// In about the proportions users send them: reads of a page of posts and of cached lists
/// first, then new posts (which also fill the channel whose page is read).
const SCENARIOS: &[Scenario] = &[
    Scenario {
        credential: Credential::Key,
        method: "POST",
        path: "/api/v1/channels/1/posts",
        body: Some(message),
        status: 201,
        times: 600,
    },
    Scenario {
        credential: Credential::Key,
        method: "GET",
        path: "/api/v1/channels/1/posts?limit=50",
        body: None,
        status: 200,
        times: 3000,
    },
    Scenario {
        credential: Credential::Key,
        method: "GET",
        path: "/api/v1/channels/1/posts",
        body: None,
        status: 200,
        times: 1000,
    },
    Scenario {
        credential: Credential::Key,
        method: "GET",
        path: "/api/v1/channels",
        body: None,
        status: 200,
        times: 8000,
    },
    Scenario {
        credential: Credential::Key,
        method: "GET",
        path: "/api/v1/users",
        body: None,
        status: 200,
        times: 2000,
    },
    // Tools posting through a hook: a Slack-style text (answered at once) and an Alertmanager
    // group (queued for the outbox, which then sends it).
    Scenario {
        credential: Credential::Hook,
        method: "POST",
        path: "/hooks/alerts",
        body: Some(slack),
        status: 200,
        times: 400,
    },
    Scenario {
        credential: Credential::Hook,
        method: "POST",
        path: "/hooks/alerts",
        body: Some(alertmanager),
        status: 202,
        times: 200,
    },
    Scenario {
        credential: Credential::Key,
        method: "GET",
        path: "/readyz",
        body: None,
        status: 200,
        times: 1000,
    },
];

/// Texts that differ from post to post, as in a real channel, some with escapes (a line
/// break) and characters beyond ASCII: the page the reads get back is made of them.
fn message(n: usize) -> String {
    match n % 4 {
        0 => format!(
            r#"{{"message":"Build #{n} deployed on nas-01; volume 2 after the nightly scrub."}}"#
        ),
        1 => format!(
            r#"{{"message":"[FIRING:1] DiskFull on nas-0{}\nsummary: volume 1 is 95% full ✓"}}"#,
            n % 7
        ),
        2 => {
            format!(r#"{{"message":"Backup task {n} finished: 1.2 TB in 3 h 10 min, all green."}}"#)
        }
        _ => format!(
            r#"{{"message":"Ping @ops-{} if shares look off (ticket {n})."}}"#,
            n % 5
        ),
    }
}

fn slack(n: usize) -> String {
    format!(
        r#"{{"text":"Deploy *{n}* finished: <https://ci.example/builds/{n}|build {n}> is green"}}"#
    )
}

fn alertmanager(n: usize) -> String {
    let status = if n.is_multiple_of(3) {
        "resolved"
    } else {
        "firing"
    };
    format!(
        r#"{{"version":"4","groupKey":"{{}}:{{alertname=\"DiskFull\"}}","status":"{status}","receiver":"chat","groupLabels":{{"alertname":"DiskFull"}},"commonLabels":{{"alertname":"DiskFull","severity":"critical"}},"commonAnnotations":{{"summary":"Volume 1 is 95% full"}},"externalURL":"http://alertmanager:9093","alerts":[{{"status":"{status}","labels":{{"alertname":"DiskFull","instance":"nas-0{}"}},"annotations":{{"summary":"Volume 1 is 95% full"}},"startsAt":"2026-12-04T10:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus:9090/graph","fingerprint":"{n:016x}"}}],"truncatedAlerts":0}}"#,
        n % 7
    )
}

/// Keep-alive connections, each on its own thread.
const CONNECTIONS: usize = 4;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(base), Some(key), Some(hook_secret)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: pgo_train <http://host:port> <api key> <secret of the hook `alerts`>");
        std::process::exit(2);
    };
    let Some(authority) = base
        .strip_prefix("http://")
        .map(|a| a.trim_end_matches('/'))
    else {
        eprintln!("pgo_train: the gateway's URL must be http://host:port");
        std::process::exit(2);
    };
    if let Err(error) = wait_until_ready(authority) {
        eprintln!("pgo_train: the gateway is not ready: {error}");
        std::process::exit(1);
    }
    let (key, hook) = (bearer(&key), bearer(&hook_secret));
    for scenario in SCENARIOS {
        let failures: Vec<String> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..CONNECTIONS)
                .map(|n| {
                    let share = scenario.times / CONNECTIONS
                        + usize::from(n < scenario.times % CONNECTIONS);
                    let auth = match scenario.credential {
                        Credential::Key => &key,
                        Credential::Hook => &hook,
                    };
                    scope.spawn(move || run(authority, auth, scenario, share))
                })
                .collect();
            workers
                .into_iter()
                .filter_map(|worker| match worker.join() {
                    Ok(Ok(())) => None,
                    Ok(Err(error)) => Some(error),
                    Err(_) => Some("a connection's thread panicked".to_owned()),
                })
                .collect()
        });
        if let Some(error) = failures.first() {
            eprintln!("pgo_train: {} {}: {error}", scenario.method, scenario.path);
            std::process::exit(1);
        }
        println!(
            "pgo_train: {:>5} × {} {}",
            scenario.times, scenario.method, scenario.path
        );
    }
}

/// Waits up to 30 s for `/readyz` to answer 200 (the gateway has logged in to its NAS).
fn wait_until_ready(authority: &str) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..150 {
        let ready = TcpStream::connect(authority)
            .map_err(|e| e.to_string())
            .and_then(|mut stream| {
                let request = format!("GET /readyz HTTP/1.1\r\nHost: {authority}\r\n\r\n");
                stream
                    .write_all(request.as_bytes())
                    .map_err(|e| e.to_string())?;
                read_response(&mut BufReader::new(stream))
            });
        match ready {
            Ok(200) => return Ok(()),
            Ok(status) => last = format!("/readyz answered {status}"),
            Err(error) => last = error,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(last)
}

fn bearer(secret: &str) -> String {
    format!("Authorization: Bearer {secret}\r\n")
}

/// `times` requests of `scenario` on one keep-alive connection.
fn run(authority: &str, auth: &str, scenario: &Scenario, times: usize) -> Result<(), String> {
    let stream = TcpStream::connect(authority).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut writer = stream;
    for n in 0..times {
        let body = scenario.body.map(|body| body(n)).unwrap_or_default();
        let content = match scenario.body {
            Some(_) => format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ),
            None => String::new(),
        };
        let request = format!(
            "{} {} HTTP/1.1\r\nHost: {authority}\r\n{auth}{content}\r\n{body}",
            scenario.method, scenario.path
        );
        writer
            .write_all(request.as_bytes())
            .map_err(|e| format!("send: {e}"))?;
        let status = read_response(&mut reader)?;
        if status != scenario.status {
            return Err(format!("answered {status}, expected {}", scenario.status));
        }
    }
    Ok(())
}

/// Reads one answer (its body sized by `Content-Length`) and returns its status.
fn read_response(reader: &mut impl BufRead) -> Result<u16, String> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {line:?}"))?;
    let mut length = None;
    loop {
        line.clear();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("read: {e}"))?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<u64>().ok();
        }
    }
    let length = length.ok_or("an answer without Content-Length")?;
    std::io::copy(&mut reader.by_ref().take(length), &mut std::io::sink())
        .map_err(|e| format!("read body: {e}"))?;
    Ok(status)
}
