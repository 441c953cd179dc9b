//! The real Alertmanager (Debian's `prometheus-alertmanager`) against the gateway's hooks:
//! `slack_configs`, `webhook_configs` and `webex_configs` receivers, alerts fired with `amtool`. The
//! posts must arrive in the simulator and Alertmanager must count no failed notification
//! (the Slack notifier fails on any answer but `ok`). Without Alertmanager the test says so
//! loudly and passes, except under `CI=true`, where it fails.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use syno_chat_gateway::auth::hash_key;
use syno_chat_gateway::config::HookSettings;
use syno_chat_gateway::formats::Format;
use syno_chat_gateway::sim::SimConfig;

use crate::helpers::{TestApp, param, spawn_app_with};

const SECRET: &str = "alertmanager-hook-secret-2b9d";

/// Every alert to the receiver `chat`, grouped by name and sent at once: its integrations follow.
const ROUTE: &str = "route:
  receiver: chat
  group_by: ['alertname']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: chat
";

/// The first of `names` found on PATH or in the usual directories.
fn find_tool(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/local/bin", "/usr/sbin"].map(PathBuf::from));
    let dirs: Vec<PathBuf> = dirs.collect();
    names
        .iter()
        .flat_map(|name| dirs.iter().map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the Alertmanager process when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn http_get(url: &str) -> Option<String> {
    let mut response = awc::Client::default().get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body = response.body().limit(8 * 1024 * 1024).await.ok()?;
    Some(String::from_utf8_lossy(&body).into_owned())
}

/// Sum of every sample of `metric` whose labels contain `label` in Prometheus text output.
fn metric_sum(metrics: &str, metric: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn posted_messages(app: &TestApp, channel_id: &str) -> Vec<String> {
    app.sim
        .requests()
        .into_iter()
        .filter(|r| {
            r.api.as_deref() == Some("SYNO.Chat.Post")
                && r.method.as_deref() == Some("create")
                && r.error_code.is_none()
                && param(r, "channel_id") == Some(channel_id)
        })
        .filter_map(|r| param(&r, "message").map(str::to_owned))
        .collect()
}

/// Waits until Alertmanager counts `at_least` notifications through each integration, and
/// asserts that it counted none as failed.
async fn notifications_succeeded(am_url: &str, at_least: f64) {
    let started = Instant::now();
    loop {
        let metrics = http_get(&format!("{am_url}/metrics"))
            .await
            .unwrap_or_default();
        let sent = |integration: &str| {
            metric_sum(
                &metrics,
                "alertmanager_notifications_total",
                &format!("integration=\"{integration}\""),
            )
        };
        if sent("slack") >= at_least && sent("webhook") >= at_least {
            assert_eq!(
                metric_sum(&metrics, "alertmanager_notifications_failed_total", ""),
                0.0,
                "Alertmanager counted failed notifications:\n{}",
                metrics
                    .lines()
                    .filter(|l| l.starts_with("alertmanager_notifications_failed_total"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "fewer than {at_least} notifications per integration counted"
        );
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The gateway with hook `name` (detected format) posting to channel `ops`, and that channel's id.
async fn app_with_hook(name: &'static str) -> (TestApp, String) {
    let app = spawn_app_with(SimConfig::default(), |settings| {
        let hook = HookSettings {
            channel: Some("ops".into()),
            secret_hash: Some(SecretString::from(hash_key(SECRET))),
            ..HookSettings::default()
        };
        settings.hooks.insert(name.into(), hook);
    })
    .await;
    let ops = app.get("/api/v1/channels?name=ops").await;
    let ops_id = ops.body["items"][0]["channel_id"].to_string();
    (app, ops_id)
}

/// Waits until the Alertmanager at `am_url` counts a notification through `integration`, and
/// asserts that it counted none as failed.
async fn delivered_once(am_url: &str, integration: &str) {
    let started = Instant::now();
    loop {
        let metrics = http_get(&format!("{am_url}/metrics"))
            .await
            .unwrap_or_default();
        let sent = metric_sum(
            &metrics,
            "alertmanager_notifications_total",
            &format!("integration=\"{integration}\""),
        );
        if sent >= 1.0 {
            let failed = metric_sum(&metrics, "alertmanager_notifications_failed_total", "");
            assert_eq!(failed, 0.0, "{am_url} counted a failed notification");
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{am_url} did not notify through {integration}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The receiver's `webhook_configs`: the native webhook to `hook`, its secret as a bearer token.
fn webhook_config(base: &str, hook: &str) -> String {
    format!(
        "    webhook_configs:
      - url: '{base}/hooks/{hook}'
        send_resolved: true
        http_config:
          authorization:
            credentials: '{SECRET}'
"
    )
}

/// `amtool alert add` with `args` (labels and flags) against the Alertmanager at `am_url`.
fn fire(amtool: &PathBuf, am_url: &str, args: &[&str]) {
    let fired = Command::new(amtool)
        .args(["alert", "add"])
        .args(args)
        .arg(format!("--alertmanager.url={am_url}"))
        .output()
        .expect("amtool runs");
    assert!(
        fired.status.success(),
        "amtool: {}",
        String::from_utf8_lossy(&fired.stderr)
    );
}

/// Alertmanager and amtool, or a loud skip (a failure under `CI=true`).
fn tools() -> Option<(PathBuf, PathBuf)> {
    let found = (
        find_tool(&["prometheus-alertmanager", "alertmanager"]),
        find_tool(&["amtool"]),
    );
    if let (Some(alertmanager), Some(amtool)) = found {
        return Some((alertmanager, amtool));
    }
    let message = "!!!!!! SKIPPING the Alertmanager test: prometheus-alertmanager/amtool are not installed (apt-get install prometheus-alertmanager) !!!!!!";
    eprintln!("{message}");
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
    None
}

/// A running Alertmanager with `config`, on its own port and directory, without a cluster;
/// ready when this returns. Killed when the first element is dropped.
async fn start_alertmanager(alertmanager: &PathBuf, config: &str) -> (Running, String, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "synochat-am-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let config_file = dir.join("alertmanager.yml");
    std::fs::write(&config_file, config).unwrap();
    let port = free_port();
    let am_url = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(dir.join("alertmanager.log")).unwrap();
    let running = Running(
        Command::new(alertmanager)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("alertmanager starts"),
    );
    let started = Instant::now();
    while http_get(&format!("{am_url}/-/ready")).await.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "Alertmanager did not become ready: {}",
            std::fs::read_to_string(dir.join("alertmanager.log")).unwrap_or_default()
        );
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
    (running, am_url, dir)
}

#[actix_rt::test]
async fn alertmanager_delivers_to_the_slack_and_webhook_hooks_without_failures() {
    let Some((alertmanager, amtool)) = tools() else {
        return;
    };
    let app = spawn_app_with(SimConfig::default(), |settings| {
        let hook = |format| HookSettings {
            channel: Some("ops".into()),
            secret_hash: Some(SecretString::from(hash_key(SECRET))),
            format,
            ..HookSettings::default()
        };
        settings.hooks.insert("am-slack".into(), hook(None));
        settings
            .hooks
            .insert("am-webhook".into(), hook(Some(Format::Alertmanager)));
    })
    .await;
    let ops = app.get("/api/v1/channels?name=ops").await;
    let ops_id = ops.body["items"][0]["channel_id"].to_string();

    let config = format!(
        "{ROUTE}    slack_configs:
      - api_url: '{base}/hooks/am-slack/{SECRET}'
        channel: '#ops'
        send_resolved: true
{webhook}",
        base = app.base,
        webhook = webhook_config(&app.base, "am-webhook"),
    );
    let (_running, am_url, dir) = start_alertmanager(&alertmanager, &config).await;

    fire(
        &amtool,
        &am_url,
        &[
            "alertname=HighCPU",
            "severity=critical",
            "instance=web-1:9100",
            "--annotation=summary=CPU above 90% & rising",
        ],
    );

    // Both receivers deliver: the Slack-format post and the webhook-format post.
    let started = Instant::now();
    let (slack, webhook) = loop {
        let messages = posted_messages(&app, &ops_id);
        let slack = messages
            .iter()
            .find(|m| m.contains("[FIRING:1] HighCPU") && m.starts_with("🔴 <"))
            .cloned();
        let webhook = messages
            .iter()
            .find(|m| m.starts_with("🔥 [FIRING:1] HighCPU"))
            .cloned();
        if let (Some(slack), Some(webhook)) = (&slack, &webhook) {
            break (slack.clone(), webhook.clone());
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "posts did not arrive: {messages:?}\n{}",
            std::fs::read_to_string(dir.join("alertmanager.log")).unwrap_or_default()
        );
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(webhook.contains("CPU above 90% & rising"), "{webhook}");
    assert!(
        slack.contains(&format!("{am_url}/")) || slack.contains("/#/alerts"),
        "{slack}"
    );

    // Alertmanager itself counts the notifications as delivered, none failed.
    notifications_succeeded(&am_url, 1.0).await;

    // The NAS goes down: Alertmanager's notifications still succeed (the hooks answer once the
    // message is stored), and the posts arrive after the NAS is back.
    app.sim.refuse_connections(true).await;
    fire(
        &amtool,
        &am_url,
        &[
            "alertname=DiskFull",
            "severity=warning",
            "--annotation=summary=Disk 95% full",
        ],
    );
    notifications_succeeded(&am_url, 2.0).await;
    app.sim.refuse_connections(false).await;
    let started = Instant::now();
    loop {
        let disk: Vec<String> = posted_messages(&app, &ops_id)
            .into_iter()
            .filter(|m| m.contains("DiskFull"))
            .collect();
        if disk.len() >= 2 {
            assert_eq!(disk.len(), 2, "each notification posted once: {disk:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the posts did not follow once the NAS was back: {disk:?}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// An Alertmanager pair whose members do not hear each other (a partition, or gossip that is
/// late): Prometheus gives both the same alert, and both notify. The hook posts the group
/// once, and both members count their notification as delivered.
#[actix_rt::test]
async fn the_copies_of_an_alertmanager_pair_are_posted_once() {
    let Some((alertmanager, amtool)) = tools() else {
        return;
    };
    let (app, ops_id) = app_with_hook("am-pair").await;
    let config = format!("{ROUTE}{}", webhook_config(&app.base, "am-pair"));
    let (_first, first_url, first_dir) = start_alertmanager(&alertmanager, &config).await;
    let (_second, second_url, second_dir) = start_alertmanager(&alertmanager, &config).await;
    // As Prometheus sends it to every member: the same labels and the same start.
    let start = "2026-12-05T03:00:00Z";
    for am_url in [&first_url, &second_url] {
        let started_at = format!("--start={start}");
        fire(
            &amtool,
            am_url,
            &[
                "alertname=NodeDown",
                "instance=nas-01:9100",
                "--annotation=summary=nas-01 is unreachable",
                &started_at,
            ],
        );
    }
    // Both members notify, and count it delivered.
    for am_url in [&first_url, &second_url] {
        delivered_once(am_url, "webhook").await;
    }
    actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
    let posts: Vec<String> = posted_messages(&app, &ops_id)
        .into_iter()
        .filter(|m| m.contains("NodeDown"))
        .collect();
    assert_eq!(posts.len(), 1, "the group is posted once: {posts:?}");
    let _ = std::fs::remove_dir_all(&first_dir);
    let _ = std::fs::remove_dir_all(&second_dir);
}

/// The post of Alertmanager's default template (`Alerts Firing:`), once it arrived; the
/// test fails with Alertmanager's log after 30 s.
async fn default_template_post(app: &TestApp, ops_id: &str, dir: &std::path::Path) -> String {
    let started = Instant::now();
    loop {
        if let Some(post) = posted_messages(app, ops_id)
            .into_iter()
            .find(|m| m.contains("Alerts Firing:"))
        {
            return post;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the message did not arrive\n{}",
            std::fs::read_to_string(dir.join("alertmanager.log")).unwrap_or_default()
        );
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Alertmanager's `webex_configs` with a hook's URL as Webex's `api_url` and the hook's secret
/// as the bot token: its Markdown message is posted, and Alertmanager counts it delivered.
#[actix_rt::test]
async fn alertmanager_delivers_to_a_hook_as_its_webex_api() {
    let Some((alertmanager, amtool)) = tools() else {
        return;
    };
    let (app, ops_id) = app_with_hook("am-webex").await;
    let config = format!(
        "{ROUTE}    webex_configs:
      - api_url: '{base}/hooks/am-webex'
        room_id: 'Y2lzY29zcGFyazovL3VzL1JPT00vb3Bz'
        send_resolved: true
        http_config:
          authorization:
            credentials: '{SECRET}'
",
        base = app.base,
    );
    let (_running, am_url, dir) = start_alertmanager(&alertmanager, &config).await;
    fire(
        &amtool,
        &am_url,
        &[
            "alertname=HighCPU",
            "instance=web-1:9100",
            "--annotation=summary=CPU above 90% & rising",
        ],
    );
    let post = default_template_post(&app, &ops_id, &dir).await;
    assert!(post.starts_with("CPU above 90% & rising"), "{post}");
    assert!(post.contains("alertname = HighCPU"), "{post}");
    delivered_once(&am_url, "webex").await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Alertmanager's `telegram_configs` with the gateway's `/telegram` as the Bot API's `api_url`
/// and the hook's secret as the bot token: its HTML message is posted, and Alertmanager counts
/// it delivered (telebot reads the answer's `ok` and `result.chat`, never the status).
#[actix_rt::test]
async fn alertmanager_delivers_to_a_hook_as_its_telegram_bot_api() {
    let Some((alertmanager, amtool)) = tools() else {
        return;
    };
    let (app, ops_id) = app_with_hook("am-telegram").await;
    let config = format!(
        "{ROUTE}    telegram_configs:
      - api_url: '{base}/telegram'
        bot_token: '{SECRET}'
        chat_id: -1001234567890
        send_resolved: true
",
        base = app.base,
    );
    let (_running, am_url, dir) = start_alertmanager(&alertmanager, &config).await;
    fire(
        &amtool,
        &am_url,
        &[
            "alertname=DiskFull",
            "instance=nas-1",
            "--annotation=summary=vol1 <95%> & rising",
        ],
    );
    let post = default_template_post(&app, &ops_id, &dir).await;
    assert!(post.contains("alertname = DiskFull"), "{post}");
    // Alertmanager escapes the template's values for HTML: they arrive as written.
    assert!(post.contains("summary = vol1 <95%> & rising"), "{post}");
    delivered_once(&am_url, "telegram").await;
    let _ = std::fs::remove_dir_all(&dir);
}
