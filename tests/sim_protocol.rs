//! Wire-level tests of the DSM simulator, speaking raw HTTP with awc.

use std::time::Duration;

use serde_json::Value;
use syno_chat_gateway::sim::{DEMO_ACCOUNT, DEMO_PASSWORD, SimConfig, SimControl, Simulator};

struct Sim {
    sim: Simulator,
    base: String,
    client: awc::Client,
}

struct Session {
    sid: String,
    token: String,
}

async fn start(config: SimConfig) -> Sim {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Simulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = sim.base_url();
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    Sim { sim, base, client }
}

fn qs(params: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(params).unwrap()
}

impl Sim {
    fn ctl(&self) -> SimControl {
        self.sim.control()
    }

    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Value {
        self.get_h(path, params, &[]).await
    }

    async fn get_h(&self, path: &str, params: &[(&str, &str)], headers: &[(&str, &str)]) -> Value {
        let mut req = self
            .client
            .get(format!("{}{}?{}", self.base, path, qs(params)));
        for (k, v) in headers {
            req = req.insert_header((*k, *v));
        }
        let mut resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let ct = resp
            .headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(ct, "application/json; charset=\"UTF-8\"");
        resp.json::<Value>().limit(16 << 20).await.unwrap()
    }

    async fn post(&self, path: &str, params: &[(&str, &str)], headers: &[(&str, &str)]) -> Value {
        let mut req = self.client.post(format!("{}{}", self.base, path));
        for (k, v) in headers {
            req = req.insert_header((*k, *v));
        }
        let mut resp = req.send_form(&params).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.json::<Value>().limit(16 << 20).await.unwrap()
    }

    async fn login_as(&self, account: &str, passwd: &str) -> Session {
        let v = self
            .post(
                "/webapi/auth.cgi",
                &[
                    ("api", "SYNO.API.Auth"),
                    ("version", "7"),
                    ("method", "login"),
                    ("account", account),
                    ("passwd", passwd),
                    ("session", "Chat"),
                    // The library's format: the session travels as `_sid` or as the cookie.
                    ("format", "cookie"),
                    ("enable_syno_token", "yes"),
                ],
                &[],
            )
            .await;
        assert_eq!(v["success"], true, "{v}");
        Session {
            sid: v["data"]["sid"].as_str().unwrap().to_string(),
            token: v["data"]["synotoken"].as_str().unwrap().to_string(),
        }
    }

    /// A `Post.create` v5 in channel 1 with a multipart body (an upload), sent to `path` with
    /// the session as the cookie and the SynoToken as the header.
    async fn upload(&self, s: &Session, path: &str, boundary: &str, body: Vec<u8>) -> Value {
        let url = format!(
            "{}{path}?{}",
            self.base,
            qs(&[
                ("api", "SYNO.Chat.Post"),
                ("method", "create"),
                ("version", "5"),
                ("channel_id", "1"),
            ])
        );
        let mut resp = self
            .client
            .post(url)
            .insert_header(("Cookie", format!("id={}", s.sid)))
            .insert_header(("X-SYNO-TOKEN", s.token.as_str()))
            .content_type(format!("multipart/form-data; boundary={boundary}"))
            .send_body(body)
            .await
            .unwrap();
        resp.json().await.unwrap()
    }

    async fn login(&self) -> Session {
        self.login_as(DEMO_ACCOUNT, DEMO_PASSWORD).await
    }

    /// A session call as POST form with `_sid` and the X-SYNO-TOKEN header.
    async fn call(
        &self,
        s: &Session,
        api: &str,
        version: &str,
        method: &str,
        extra: &[(&str, &str)],
    ) -> Value {
        let mut p: Vec<(&str, &str)> = vec![
            ("api", api),
            ("version", version),
            ("method", method),
            ("_sid", &s.sid),
        ];
        p.extend_from_slice(extra);
        self.post("/webapi/entry.cgi", &p, &[("X-SYNO-TOKEN", &s.token)])
            .await
    }

    /// Asserts that a session call fails with DSM error `expected`, naming the call if not.
    async fn expect_error(
        &self,
        s: &Session,
        expected: i64,
        api: &str,
        version: &str,
        method: &str,
        extra: &[(&str, &str)],
    ) {
        let answer = self.call(s, api, version, method, extra).await;
        assert_eq!(
            code(&answer),
            expected,
            "{api} v{version} {method} {extra:?}"
        );
    }

    /// [`Self::expect_error`] for each case, in order: (session, code, api, version, method,
    /// parameters).
    async fn expect_errors(&self, cases: &[ErrorCase<'_>]) {
        for (s, expected, api, version, method, extra) in cases {
            self.expect_error(s, *expected, api, version, method, extra)
                .await;
        }
    }
}

/// A call that must fail: (session, DSM code, api, version, method, parameters).
type ErrorCase<'a> = (
    &'a Session,
    i64,
    &'a str,
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
);

fn code(v: &Value) -> i64 {
    assert_eq!(v["success"], false, "expected an error: {v}");
    v["error"]["code"].as_i64().unwrap()
}

fn data(v: &Value) -> &Value {
    assert_eq!(v["success"], true, "expected success: {v}");
    &v["data"]
}

#[actix_web::test]
async fn info_lists_every_api_with_versions() {
    let t = start(SimConfig::default()).await;
    let v = t
        .get(
            "/webapi/query.cgi",
            &[
                ("api", "SYNO.API.Info"),
                ("version", "1"),
                ("method", "query"),
                ("query", "all"),
            ],
        )
        .await;
    let d = data(&v);
    assert_eq!(d["SYNO.API.Auth"]["path"], "entry.cgi");
    assert_eq!(d["SYNO.API.Auth"]["maxVersion"], 7);
    assert_eq!(d["SYNO.Chat.Post"]["maxVersion"], 8);
    assert_eq!(d["SYNO.Chat.Channel"]["minVersion"], 1);
    assert_eq!(d["SYNO.Chat.Channel.Named"]["requestFormat"], "JSON");
    assert_eq!(d["SYNO.Chat.External"]["maxVersion"], 3);
    for api in [
        "SYNO.Chat.Sticker",
        "SYNO.Chat.Admin.Setting",
        "SYNO.API.Encryption",
        "SYNO.API.Auth.UIConfig",
    ] {
        assert!(d.get(api).is_some(), "{api} missing");
    }
    let v = t
        .post(
            "/webapi/entry.cgi",
            &[
                ("api", "SYNO.API.Info"),
                ("version", "1"),
                ("method", "query"),
                ("query", "SYNO.Chat.User,SYNO.API.Auth"),
            ],
            &[],
        )
        .await;
    assert_eq!(data(&v).as_object().unwrap().len(), 2);
}

#[actix_web::test]
async fn ui_config_sets_ssid_cookie() {
    let t = start(SimConfig::default()).await;
    let resp = t
        .client
        .post(format!(
            "{}/webapi/entry.cgi/SYNO.API.Auth.UIConfig",
            t.base
        ))
        .send_form(&[
            ("api", "SYNO.API.Auth.UIConfig"),
            ("method", "get"),
            ("version", "1"),
        ])
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let cookie = resp
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let key = cookie
        .strip_prefix("_SSID=")
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    // 32 bytes, base64url without padding.
    assert_eq!(key.len(), 43);
    assert!(
        key.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
}

#[actix_web::test]
async fn generic_validation_codes() {
    let t = start(SimConfig::default()).await;
    let s = t.login().await;
    assert_eq!(
        code(
            &t.get(
                "/webapi/entry.cgi",
                &[("api", "SYNO.Chat.Post"), ("method", "list")]
            )
            .await
        ),
        101
    );
    // (api, version, method, params, expected error code)
    type Case<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], i64);
    let cases: [Case; 6] = [
        ("SYNO.Chat.Nope", "1", "list", &[], 102),
        ("SYNO.Chat.Post", "8", "nope", &[], 103),
        ("SYNO.Chat.Post", "9", "list", &[("channel_id", "1")], 104),
        ("SYNO.Chat.Channel", "0", "list", &[], 104),
        ("SYNO.Chat.Post", "8", "list", &[], 114),
        ("SYNO.Chat.User", "3", "get", &[("user_id", "999")], 117),
    ];
    for (api, version, method, params, expected) in cases {
        let answer = t.call(&s, api, version, method, params).await;
        assert_eq!(code(&answer), expected, "{api} v{version} {method}");
    }
    // A misspelt External method is 103 before its token is looked at (not the token's 404).
    let external = t
        .get(
            "/webapi/entry.cgi",
            &[
                ("api", "SYNO.Chat.External"),
                ("version", "2"),
                ("method", "Incoming"),
                ("token", "\"no-such-token\""),
            ],
        )
        .await;
    assert_eq!(code(&external), 103);
    // Chat APIs are not served by the legacy CGIs.
    let v = t
        .get(
            "/webapi/query.cgi",
            &[
                ("api", "SYNO.Chat.User"),
                ("version", "1"),
                ("method", "list"),
                ("_sid", &s.sid),
            ],
        )
        .await;
    assert_eq!(code(&v), 102);
    let resp = t
        .client
        .get(format!("{}/webapi/nope.cgi", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}

#[actix_web::test]
async fn login_variants_and_errors() {
    let t = start(SimConfig::default()).await;
    // GET on entry.cgi, cookie format, no synotoken requested.
    let mut resp = t
        .client
        .get(format!(
            "{}/webapi/entry.cgi?{}",
            t.base,
            qs(&[
                ("api", "SYNO.API.Auth"),
                ("version", "6"),
                ("method", "login"),
                ("account", DEMO_ACCOUNT),
                ("passwd", DEMO_PASSWORD),
                ("format", "cookie")
            ])
        ))
        .send()
        .await
        .unwrap();
    let cookie = resp
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let v: Value = resp.json().await.unwrap();
    let sid = data(&v)["sid"].as_str().unwrap().to_string();
    assert!(
        cookie.starts_with(&format!("id={sid};")) && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    assert!(data(&v).get("synotoken").is_none());
    assert_eq!(data(&v)["is_portal_port"], false);
    assert_eq!(data(&v)["account"], DEMO_ACCOUNT);
    assert!((40..=70).contains(&sid.len()));
    assert!(
        sid.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    );

    let bad = [
        ("api", "SYNO.API.Auth"),
        ("version", "7"),
        ("method", "login"),
        ("account", "admin"),
        ("passwd", "x"),
    ];
    assert_eq!(code(&t.post("/webapi/auth.cgi", &bad, &[]).await), 400);
    let nobody = [
        ("api", "SYNO.API.Auth"),
        ("version", "7"),
        ("method", "login"),
        ("account", "ghost"),
        ("passwd", "x"),
    ];
    assert_eq!(code(&t.post("/webapi/auth.cgi", &nobody, &[]).await), 400);
    assert_eq!(t.ctl().login_attempts(), 3);

    t.ctl().set_disabled("bob", true);
    let bob = [
        ("api", "SYNO.API.Auth"),
        ("version", "7"),
        ("method", "login"),
        ("account", "bob"),
        ("passwd", "bob-pass"),
    ];
    assert_eq!(code(&t.post("/webapi/auth.cgi", &bob, &[]).await), 401);
}

#[actix_web::test]
async fn auto_block_after_failures_then_unblock() {
    let t = start(SimConfig {
        auto_block_failures: 3,
        ..SimConfig::default()
    })
    .await;
    let bad = [
        ("api", "SYNO.API.Auth"),
        ("version", "7"),
        ("method", "login"),
        ("account", "admin"),
        ("passwd", "wrong"),
    ];
    for _ in 0..3 {
        assert_eq!(code(&t.post("/webapi/auth.cgi", &bad, &[]).await), 400);
    }
    // Even the right password is refused from a blocked IP.
    let good = [
        ("api", "SYNO.API.Auth"),
        ("version", "7"),
        ("method", "login"),
        ("account", "admin"),
        ("passwd", DEMO_PASSWORD),
    ];
    assert_eq!(code(&t.post("/webapi/auth.cgi", &good, &[]).await), 407);
    assert_eq!(t.ctl().login_attempts(), 4);
    t.ctl().unblock_all();
    assert_eq!(
        t.post("/webapi/auth.cgi", &good, &[]).await["success"],
        true
    );
}

#[actix_web::test]
async fn otp_and_device_token() {
    let t = start(SimConfig::default()).await;
    t.ctl().enable_otp("alice", "123456");
    let base = [
        ("api", "SYNO.API.Auth"),
        ("version", "7"),
        ("method", "login"),
        ("account", "alice"),
        ("passwd", "alice-pass"),
    ];
    let v = t.post("/webapi/auth.cgi", &base, &[]).await;
    assert_eq!(code(&v), 403);
    assert!(v["error"]["errors"]["types"].is_array());
    let mut wrong = base.to_vec();
    wrong.push(("otp_code", "000000"));
    assert_eq!(code(&t.post("/webapi/auth.cgi", &wrong, &[]).await), 404);
    let mut right = base.to_vec();
    right.extend([
        ("otp_code", "123456"),
        ("enable_device_token", "yes"),
        ("device_name", "gw"),
    ]);
    let v = t.post("/webapi/auth.cgi", &right, &[]).await;
    let did = data(&v)["device_id"].as_str().unwrap().to_string();
    let mut with_device = base.to_vec();
    with_device.extend([("device_id", did.as_str()), ("device_name", "gw")]);
    assert_eq!(
        t.post("/webapi/auth.cgi", &with_device, &[]).await["success"],
        true
    );
}

/// "with `sid` the id is returned in JSON; with `cookie` DSM sets the `id` cookie" (§3.1c):
/// a `format=sid` session gets no cookie and is not taken back from one; `_sid` carries it.
#[actix_web::test]
async fn a_sid_format_session_travels_as_sid_only() {
    let t = start(SimConfig::default()).await;
    let mut resp = t
        .client
        .post(format!("{}/webapi/auth.cgi", t.base))
        .send_form(&[
            ("api", "SYNO.API.Auth"),
            ("version", "7"),
            ("method", "login"),
            ("account", DEMO_ACCOUNT),
            ("passwd", DEMO_PASSWORD),
            ("session", "Chat"),
            ("format", "sid"),
            ("enable_syno_token", "yes"),
        ])
        .await
        .unwrap();
    assert!(resp.headers().get("set-cookie").is_none());
    let v: Value = resp.json().await.unwrap();
    let (sid, token) = (
        data(&v)["sid"].as_str().unwrap().to_owned(),
        data(&v)["synotoken"].as_str().unwrap().to_owned(),
    );
    let list = [
        ("api", "SYNO.Chat.Channel"),
        ("version", "5"),
        ("method", "list"),
    ];
    let cookie = format!("id={sid}");
    let by_cookie = t
        .get_h(
            "/webapi/entry.cgi",
            &list,
            &[("X-SYNO-TOKEN", &token), ("Cookie", &cookie)],
        )
        .await;
    assert_eq!(code(&by_cookie), 119, "{by_cookie}");
    let mut with_sid = list.to_vec();
    with_sid.push(("_sid", &sid));
    let by_sid = t
        .post("/webapi/entry.cgi", &with_sid, &[("X-SYNO-TOKEN", &token)])
        .await;
    assert_eq!(by_sid["success"], true, "{by_sid}");
}

#[actix_web::test]
async fn syno_token_is_enforced_and_sid_from_cookie() {
    let t = start(SimConfig::default()).await;
    let s = t.login().await;
    let list = [
        ("api", "SYNO.Chat.Channel"),
        ("version", "5"),
        ("method", "list"),
        ("_sid", s.sid.as_str()),
    ];
    assert_eq!(code(&t.get("/webapi/entry.cgi", &list).await), 119);
    assert_eq!(
        code(
            &t.get_h("/webapi/entry.cgi", &list, &[("X-SYNO-TOKEN", "nope")])
                .await
        ),
        119
    );
    // (POST forms: a GET `_sid` starting with a digit is not recognised, see below.)
    assert_eq!(
        t.post("/webapi/entry.cgi", &list, &[("X-SYNO-TOKEN", &s.token)])
            .await["success"],
        true
    );
    let mut with_param = list.to_vec();
    with_param.push(("SynoToken", &s.token));
    assert_eq!(
        t.post("/webapi/entry.cgi", &with_param, &[]).await["success"],
        true
    );
    // Cookie `id` instead of `_sid`.
    let cookie = format!("id={}", s.sid);
    let v = t
        .get_h(
            "/webapi/entry.cgi",
            &[
                ("api", "SYNO.Chat.Channel"),
                ("version", "5"),
                ("method", "list"),
            ],
            &[("X-SYNO-TOKEN", &s.token), ("Cookie", &cookie)],
        )
        .await;
    assert_eq!(v["success"], true);
    let log = t.ctl().requests();
    let last = log.last().unwrap();
    assert_eq!(last.session_account.as_deref(), Some(DEMO_ACCOUNT));
    assert!(last.syno_token_ok);
    assert!(!log[1].syno_token_ok && log[1].error_code == Some(119));

    // Without enforcement the token is optional.
    let t2 = start(SimConfig {
        enforce_syno_token: false,
        ..SimConfig::default()
    })
    .await;
    let s2 = t2.login().await;
    let list2 = [
        ("api", "SYNO.Chat.Channel"),
        ("version", "5"),
        ("method", "list"),
        ("_sid", s2.sid.as_str()),
    ];
    assert_eq!(
        t2.post("/webapi/entry.cgi", &list2, &[]).await["success"],
        true
    );
}

#[actix_web::test]
async fn sessions_expire_when_idle_and_on_reboot() {
    let t = start(SimConfig {
        session_idle_timeout: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await;
    let s = t.login().await;
    assert_eq!(
        t.call(&s, "SYNO.Chat.User", "3", "list", &[]).await["success"],
        true
    );
    assert_eq!(t.ctl().active_sessions().len(), 1);
    actix_rt::time::sleep(Duration::from_millis(450)).await;
    t.expect_error(&s, 119, "SYNO.Chat.User", "3", "list", &[])
        .await;

    let s = t.login().await;
    t.ctl().expire_all_sessions();
    assert!(t.ctl().active_sessions().is_empty());
    t.expect_error(&s, 119, "SYNO.Chat.User", "3", "list", &[])
        .await;
}

#[actix_web::test]
async fn relogin_kills_previous_session_when_configured() {
    let t = start(SimConfig {
        kill_previous_session_on_relogin: true,
        ..SimConfig::default()
    })
    .await;
    let first = t.login().await;
    let second = t.login().await;
    t.expect_error(&first, 107, "SYNO.Chat.User", "3", "list", &[])
        .await;
    assert_eq!(
        t.call(&second, "SYNO.Chat.User", "3", "list", &[]).await["success"],
        true
    );
}

#[actix_web::test]
async fn logout_needs_the_sid() {
    let t = start(SimConfig::default()).await;
    let s = t.login().await;
    let v = t
        .get(
            "/webapi/auth.cgi",
            &[
                ("api", "SYNO.API.Auth"),
                ("version", "7"),
                ("method", "logout"),
                ("session", "webui"),
            ],
        )
        .await;
    assert_eq!(v["success"], true);
    assert_eq!(
        t.call(&s, "SYNO.Chat.User", "3", "list", &[]).await["success"],
        true
    );
    let v = t.call(&s, "SYNO.API.Auth", "7", "logout", &[]).await;
    assert_eq!(v["success"], true);
    t.expect_error(&s, 119, "SYNO.Chat.User", "3", "list", &[])
        .await;
}

#[actix_web::test]
async fn fault_injection_latency_and_log() {
    let t = start(SimConfig::default()).await;
    let s = t.login().await;
    t.ctl().clear_requests();
    t.ctl().fail_next("SYNO.Chat.Post", Some("list"), 2, 117);
    let list = [("channel_id", "1")];
    assert_eq!(
        code(&t.call(&s, "SYNO.Chat.Post", "8", "list", &list).await),
        117
    );
    // Another method of the same API is not affected.
    assert_eq!(
        t.call(&s, "SYNO.Chat.Channel", "5", "list", &[]).await["success"],
        true
    );
    assert_eq!(
        code(&t.call(&s, "SYNO.Chat.Post", "8", "list", &list).await),
        117
    );
    assert_eq!(
        t.call(&s, "SYNO.Chat.Post", "8", "list", &list).await["success"],
        true
    );
    assert_eq!(t.ctl().count("SYNO.Chat.Post", "list"), 3);
    let log = t.ctl().requests();
    assert_eq!(log[0].error_code, Some(117));
    assert_eq!(log[3].error_code, None);
    assert!(
        log[0]
            .params
            .iter()
            .any(|(k, v)| k == "channel_id" && v == "1")
    );

    t.ctl().fail_next("SYNO.API.Auth", None, 1, 400);
    let v = t
        .post(
            "/webapi/auth.cgi",
            &[
                ("api", "SYNO.API.Auth"),
                ("version", "7"),
                ("method", "login"),
                ("account", "admin"),
                ("passwd", DEMO_PASSWORD),
            ],
            &[],
        )
        .await;
    assert_eq!(code(&v), 400);

    t.ctl().set_latency(Duration::from_millis(200));
    let started = std::time::Instant::now();
    assert_eq!(
        t.call(&s, "SYNO.Chat.Channel", "5", "list", &[]).await["success"],
        true
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[actix_web::test]
async fn refuse_connections_then_recover_on_same_port() {
    let t = start(SimConfig::default()).await;
    let s = t.login().await;
    t.ctl().refuse_connections(true).await;
    let fresh = awc::Client::builder()
        .timeout(Duration::from_secs(2))
        .finish();
    let r = fresh
        .get(format!(
            "{}/webapi/query.cgi?api=SYNO.API.Info&version=1&method=query",
            t.base
        ))
        .send()
        .await;
    assert!(r.is_err(), "connect should be refused");
    t.ctl().refuse_connections(false).await;
    let fresh = awc::Client::builder()
        .timeout(Duration::from_secs(5))
        .finish();
    let v: Value = fresh
        .get(format!(
            "{}/webapi/query.cgi?api=SYNO.API.Info&version=1&method=query&query=all",
            t.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .limit(1 << 20)
        .await
        .unwrap();
    assert_eq!(v["success"], true);
    // State survives: the session is still valid.
    let list = [
        ("api", "SYNO.Chat.User"),
        ("version", "3"),
        ("method", "list"),
    ];
    let v: Value = fresh
        .get(format!("{}/webapi/entry.cgi?{}", t.base, qs(&list)))
        .insert_header(("X-SYNO-TOKEN", s.token.as_str()))
        .insert_header(("Cookie", format!("id={}", s.sid)))
        .send()
        .await
        .unwrap()
        .json()
        .limit(1 << 20)
        .await
        .unwrap();
    assert_eq!(v["success"], true);
    t.sim.stop().await;
}

#[actix_web::test]
async fn seed_channels_users_and_visibility() {
    let t = start(SimConfig::default()).await;
    let carol = t.login_as("carol", "carol-pass").await;
    let v = t.call(&carol, "SYNO.Chat.Channel", "5", "list", &[]).await;
    let ids: Vec<i64> = data(&v)["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["channel_id"].as_i64().unwrap())
        .collect();
    // general + random (public) + ops (member); not the admin/alice DM.
    assert_eq!(ids, vec![1, 2, 3]);
    let random = &data(&v)["channels"][1];
    assert_eq!(random["name"], "random");
    assert_eq!(random["type"], "public");
    assert_eq!(random["is_joined"], false);
    assert!(random["members"].is_array() && random["total_member_count"].is_number());

    let admin = t.login().await;
    let v = t.call(&admin, "SYNO.Chat.Channel", "5", "list", &[]).await;
    let dm = data(&v)["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel_id"] == 4)
        .unwrap()
        .clone();
    assert_eq!(dm["type"], "anonymous");
    assert_eq!(dm["name"], "");
    assert_eq!(dm["members"].as_array().unwrap().len(), 2);

    let v = t.call(&admin, "SYNO.Chat.User", "3", "list", &[]).await;
    let users = data(&v)["users"].as_array().unwrap();
    assert_eq!(users[0]["user_id"], 1);
    assert_eq!(users[0]["nickname"], "Admin");
    assert_eq!(users[0]["status"], "online");
    assert_eq!(users[0]["type"], "user");
    assert!(users[0]["user_props"]["email"].is_string());
    let v = t
        .call(
            &admin,
            "SYNO.Chat.User",
            "3",
            "get",
            &[("user_id", "\"2\"")],
        )
        .await;
    assert_eq!(data(&v)["user"]["username"], "alice");

    // Private channel posts are hidden from non-members.
    let bob = t.login_as("bob", "bob-pass").await;
    t.expect_error(
        &bob,
        117,
        "SYNO.Chat.Post",
        "8",
        "list",
        &[("channel_id", "3")],
    )
    .await;
    // Public but not joined: readable, not writable.
    assert_eq!(
        t.call(
            &carol,
            "SYNO.Chat.Post",
            "8",
            "list",
            &[("channel_id", "2")]
        )
        .await["success"],
        true
    );
    t.expect_error(
        &carol,
        105,
        "SYNO.Chat.Post",
        "8",
        "create",
        &[("channel_id", "2"), ("message", "hi")],
    )
    .await;
}

#[actix_web::test]
async fn message_bytes_survive_exactly() {
    let t = start(SimConfig::default()).await;
    let s = t.login().await;
    let msg =
        "100% sure & a+b=c \"quoted\" 'single'\nnew line 🎉 日本語 <https://x.y/?a=1&b=2|link> %20";
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "8",
            "create",
            &[("channel_id", "1"), ("message", msg), ("type", "normal")],
        )
        .await;
    let post = data(&v).clone();
    assert_eq!(post["message"], msg);
    assert_eq!(post["creator_id"], 1);
    assert_eq!(post["type"], "normal");
    assert_eq!(post["thread_id"], 0);
    assert!(post["create_at"].as_i64().unwrap() > 1_600_000_000_000);
    // GET with the message in the query string works too.
    let get = t
        .get_h(
            "/webapi/entry.cgi",
            &[
                ("api", "SYNO.Chat.Post"),
                ("version", "8"),
                ("method", "create"),
                ("channel_id", "1"),
                ("message", msg),
            ],
            // The sid as the `id` cookie: a GET `_sid` starting with a digit is refused.
            &[
                ("X-SYNO-TOKEN", &s.token),
                ("Cookie", &format!("id={}", s.sid)),
            ],
        )
        .await;
    assert_eq!(data(&get)["message"], msg);
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "8",
            "list",
            &[("channel_id", "1"), ("limit", "2"), ("offset", "0")],
        )
        .await;
    let posts = data(&v)["posts"].as_array().unwrap();
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[0]["message"], msg);
    assert_eq!(posts[1]["post_id"], post["post_id"]);

    let long = "x".repeat(2001);
    t.expect_error(
        &s,
        410,
        "SYNO.Chat.Post",
        "8",
        "create",
        &[("channel_id", "1"), ("message", &long)],
    )
    .await;
}

#[actix_web::test]
async fn post_ids_encode_channel_and_sequence() {
    let t = start(SimConfig {
        seed_demo_data: false,
        ..SimConfig::default()
    })
    .await;
    let s = t.login().await;
    // An empty NAS: create a channel first.
    let v = t
        .call(
            &s,
            "SYNO.Chat.Channel.Named",
            "1",
            "create",
            &[("name", "\"team\""), ("type", "public")],
        )
        .await;
    let cid = data(&v)["channel_id"].as_i64().unwrap();
    let mut ids = Vec::new();
    for m in ["one", "two", "three"] {
        let v = t
            .call(
                &s,
                "SYNO.Chat.Post",
                "8",
                "create",
                &[("channel_id", &cid.to_string()), ("message", m)],
            )
            .await;
        ids.push(data(&v)["post_id"].as_i64().unwrap());
    }
    assert_eq!(ids, vec![(cid << 32) | 1, (cid << 32) | 2, (cid << 32) | 3]);
    assert_eq!(ids[0] >> 32, cid);
}

#[actix_web::test]
async fn threads_and_anchor_listing() {
    let t = start(SimConfig::default()).await;
    let s = t.login().await;
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "8",
            "create",
            &[("channel_id", "2"), ("message", "root")],
        )
        .await;
    let root = data(&v)["post_id"].as_i64().unwrap();
    let root_s = root.to_string();
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "8",
            "create",
            &[
                ("channel_id", "2"),
                ("message", "reply"),
                ("thread_id", &root_s),
            ],
        )
        .await;
    let reply = data(&v).clone();
    assert_eq!(reply["thread_id"], root);
    // Replies are hidden from the channel list; the root shows its comment count.
    let v = t
        .call(&s, "SYNO.Chat.Post", "8", "list", &[("channel_id", "2")])
        .await;
    let posts = data(&v)["posts"].as_array().unwrap();
    assert!(posts.iter().all(|p| p["message"] != "reply"));
    let r = posts.iter().find(|p| p["post_id"] == root).unwrap();
    assert_eq!(r["comment_count"], 1);
    assert_eq!(r["thread_id"], root);
    // Thread listing.
    let messages = |params: Vec<(&'static str, String)>| {
        let (t, s) = (&t, &s);
        async move {
            let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let v = t.call(s, "SYNO.Chat.Post", "8", "list", &params).await;
            data(&v)["posts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["message"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let thread = |more: &[(&'static str, &str)]| {
        let mut params = vec![
            ("channel_id", "2".to_owned()),
            ("thread_id", root_s.clone()),
        ];
        params.extend(more.iter().map(|(k, v)| (*k, (*v).to_owned())));
        params
    };
    assert_eq!(
        messages(thread(&[("limit", "10")])).await,
        ["reply", "root"]
    );
    // Anchored on its own root, a thread read answers the root alone (§6.4).
    let on_root = [
        ("post_id", root_s.as_str()),
        ("prev_count", "5"),
        ("next_count", "5"),
    ];
    assert_eq!(messages(thread(&on_root)).await, ["root"]);
    // Anchor mode: newest post via prev_count without anchor.
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "8",
            "list",
            &[
                ("channel_id", "2"),
                ("prev_count", "1"),
                ("next_count", "0"),
            ],
        )
        .await;
    assert_eq!(data(&v)["posts"][0]["post_id"], root);
    let anchor = ((2i64 << 32) | 1).to_string();
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "8",
            "list",
            &[
                ("channel_id", "2"),
                ("post_id", &anchor),
                ("next_count", "1"),
            ],
        )
        .await;
    let ids: Vec<i64> = data(&v)["posts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["post_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![(2i64 << 32) | 2, (2i64 << 32) | 1]);
    // A reply to a reply is refused.
    let rid = reply["post_id"].as_i64().unwrap().to_string();
    t.expect_error(
        &s,
        117,
        "SYNO.Chat.Post",
        "8",
        "create",
        &[("channel_id", "2"), ("message", "x"), ("thread_id", &rid)],
    )
    .await;
}

// ---------------------------------------------------------------- phase 2: channels

#[actix_web::test]
async fn named_channels_lifecycle() {
    let t = start(SimConfig::default()).await;
    let admin = t.login().await;
    let bob = t.login_as("bob", "bob-pass").await;
    t.expect_errors(&[
        (
            &admin,
            152,
            "SYNO.Chat.Channel.Named",
            "1",
            "create",
            &[("name", "two words")],
        ),
        (
            &admin,
            119,
            "SYNO.Chat.Channel.Named",
            "1",
            "create",
            &[("name", "x"), ("member_ids", "[2]")],
        ),
    ])
    .await;
    let v = t
        .call(
            &admin,
            "SYNO.Chat.Channel.Named",
            "1",
            "create",
            &[("name", "\"team\""), ("type", "private")],
        )
        .await;
    let cid = data(&v)["channel_id"].as_i64().unwrap();
    let c = cid.to_string();
    assert_eq!(data(&v)["name"], "team");
    assert_eq!(data(&v)["type"], "private");
    // Creator is already a member: join answers 117.
    t.expect_error(
        &admin,
        117,
        "SYNO.Chat.Channel.Named",
        "1",
        "join",
        &[("channel_id", &c)],
    )
    .await;
    // Private: bob neither sees nor can join it.
    t.expect_error(
        &bob,
        105,
        "SYNO.Chat.Channel.Named",
        "1",
        "join",
        &[("channel_id", &c)],
    )
    .await;
    let v = t
        .call(
            &admin,
            "SYNO.Chat.Channel.Named",
            "1",
            "invite",
            &[
                ("channel_id", &c),
                ("user_ids", "[3]"),
                ("channel_key_encs", "[]"),
            ],
        )
        .await;
    assert_eq!(v["success"], true);
    let v = t
        .call(
            &admin,
            "SYNO.Chat.Channel.Member",
            "1",
            "get",
            &[("channel_id", &format!("\"{c}\""))],
        )
        .await;
    assert_eq!(data(&v)["user_ids"], serde_json::json!([1, 3]));
    assert_eq!(
        t.call(
            &bob,
            "SYNO.Chat.Post",
            "8",
            "create",
            &[("channel_id", &c), ("message", "hi team")]
        )
        .await["success"],
        true
    );
    assert_eq!(
        t.call(
            &bob,
            "SYNO.Chat.Channel.Named",
            "1",
            "disjoin",
            &[("channel_id", &c)]
        )
        .await["success"],
        true
    );
    t.expect_error(
        &bob,
        117,
        "SYNO.Chat.Post",
        "8",
        "list",
        &[("channel_id", &c)],
    )
    .await;
    // Public channel join by a non-member.
    let carol = t.login_as("carol", "carol-pass").await;
    assert_eq!(
        t.call(
            &carol,
            "SYNO.Chat.Channel.Named",
            "1",
            "join",
            &[("channel_id", "2")]
        )
        .await["success"],
        true
    );
    let v = t
        .call(
            &carol,
            "SYNO.Chat.Channel",
            "4",
            "get",
            &[("channel_id", "2")],
        )
        .await;
    assert_eq!(data(&v)["channel"]["is_joined"], true);
}

#[actix_web::test]
async fn close_view_archive_and_dm() {
    let t = start(SimConfig::default()).await;
    let admin = t.login().await;
    let alice = t.login_as("alice", "alice-pass").await;
    // close hides the DM for the caller only; a new post brings it back.
    assert_eq!(
        t.call(
            &admin,
            "SYNO.Chat.Channel",
            "4",
            "close",
            &[("channel_id", "4")]
        )
        .await["success"],
        true
    );
    let ids = |v: &Value| -> Vec<i64> {
        data(v)["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["channel_id"].as_i64().unwrap())
            .collect()
    };
    assert!(!ids(&t.call(&admin, "SYNO.Chat.Channel", "5", "list", &[]).await).contains(&4));
    assert!(ids(&t.call(&alice, "SYNO.Chat.Channel", "5", "list", &[]).await).contains(&4));
    t.call(
        &alice,
        "SYNO.Chat.Post",
        "8",
        "create",
        &[("channel_id", "4"), ("message", "ping")],
    )
    .await;
    assert!(ids(&t.call(&admin, "SYNO.Chat.Channel", "5", "list", &[]).await).contains(&4));

    // view moves last_view_at and clears unread.
    let v = t.call(&admin, "SYNO.Chat.Channel", "5", "list", &[]).await;
    let dm = data(&v)["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel_id"] == 4)
        .unwrap()
        .clone();
    assert!(dm["unread"].as_i64().unwrap() >= 1);
    let at = dm["last_post_at"].as_i64().unwrap().to_string();
    t.call(
        &admin,
        "SYNO.Chat.Channel",
        "5",
        "view",
        &[("channel_id", "4"), ("last_view_at", &at)],
    )
    .await;
    let v = t.call(&admin, "SYNO.Chat.Channel", "5", "list", &[]).await;
    let dm = data(&v)["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel_id"] == 4)
        .unwrap()
        .clone();
    assert_eq!(dm["unread"], 0);
    assert_eq!(dm["last_view_at"].as_i64().unwrap().to_string(), at);

    // Anonymous.initiate: self only -> 400; existing DM is reused; new pair creates one.
    t.expect_error(
        &admin,
        400,
        "SYNO.Chat.Channel.Anonymous",
        "2",
        "initiate",
        &[("user_ids", "[1]")],
    )
    .await;
    let v = t
        .call(
            &admin,
            "SYNO.Chat.Channel.Anonymous",
            "2",
            "initiate",
            &[("user_ids", "[2]"), ("encrypted", "false")],
        )
        .await;
    assert_eq!(data(&v)["channel_id"], 4);
    let v = t
        .call(
            &admin,
            "SYNO.Chat.Channel.Anonymous",
            "2",
            "initiate",
            &[("user_ids", "[3]")],
        )
        .await;
    let new_dm = data(&v)["channel_id"].as_i64().unwrap();
    assert!(new_dm > 4);
    assert_eq!(data(&v)["type"], "anonymous");

    // archive: only creator/admin, then no more posts.
    t.expect_error(
        &alice,
        105,
        "SYNO.Chat.Channel",
        "2",
        "archive",
        &[("channel_id", "2")],
    )
    .await;
    assert_eq!(
        t.call(
            &admin,
            "SYNO.Chat.Channel",
            "2",
            "archive",
            &[("channel_id", "2")]
        )
        .await["success"],
        true
    );
    t.expect_error(
        &admin,
        105,
        "SYNO.Chat.Post",
        "8",
        "create",
        &[("channel_id", "2"), ("message", "x")],
    )
    .await;

    let v = t
        .call(
            &admin,
            "SYNO.Chat.Channel.Preference",
            "2",
            "set",
            &[("channel_id", "1"), ("is_muted", "true")],
        )
        .await;
    assert_eq!(v["success"], true);
    let v = t
        .call(
            &admin,
            "SYNO.Chat.Channel.Preference",
            "2",
            "get",
            &[("channel_id", "1")],
        )
        .await;
    assert_eq!(data(&v)["is_muted"], true);
}

// ---------------------------------------------------------------- phase 2: users

#[actix_web::test]
async fn user_status_avatar_preference() {
    let t = start(SimConfig::default()).await;
    let s = t.login().await;
    let v = t
        .call(&s, "SYNO.Chat.User.Status", "1", "get", &[("user_id", "3")])
        .await;
    assert_eq!(data(&v)["status"], "offline");
    let _bob = t.login_as("bob", "bob-pass").await;
    let v = t
        .call(&s, "SYNO.Chat.User.Status", "1", "get", &[("user_id", "3")])
        .await;
    assert_eq!(data(&v)["status"], "online");

    let mut resp = t
        .client
        .get(format!(
            "{}/webapi/entry.cgi?{}",
            t.base,
            qs(&[
                ("api", "SYNO.Chat.User.Avatar"),
                ("version", "1"),
                ("method", "get"),
                ("user_id", "2"),
            ])
        ))
        .insert_header(("X-SYNO-TOKEN", s.token.as_str()))
        .insert_header(("Cookie", format!("id={}", s.sid)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers().get("content-type").unwrap(), "image/png");
    assert!(resp.headers().get("content-disposition").is_some());
    let body = resp.body().await.unwrap();
    assert_eq!(&body[..8], b"\x89PNG\r\n\x1a\n");
    t.expect_error(
        &s,
        117,
        "SYNO.Chat.User.Avatar",
        "1",
        "get",
        &[("user_id", "999")],
    )
    .await;

    t.call(
        &s,
        "SYNO.Chat.User.Preference",
        "1",
        "set",
        &[("timezone", "\"Europe/Paris\"")],
    )
    .await;
    let v = t
        .call(&s, "SYNO.Chat.User.Preference", "1", "get", &[])
        .await;
    assert_eq!(data(&v)["timezone"], "Europe/Paris");
}

// ---------------------------------------------------------------- phase 2: posts

#[actix_web::test]
async fn search_pin_and_threads() {
    let t = start(SimConfig::default()).await;
    let s = t.login().await;
    // `in` must be a JSON number array.
    t.expect_errors(&[
        (
            &s,
            101,
            "SYNO.Chat.Post",
            "5",
            "search",
            &[("in", "[\"1\"]")],
        ),
        (&s, 101, "SYNO.Chat.Post", "5", "search", &[("in", "1")]),
        (
            &s,
            114,
            "SYNO.Chat.Post",
            "5",
            "search",
            &[("channel_id", "1")],
        ),
    ])
    .await;
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "5",
            "search",
            &[
                ("in", "[1]"),
                ("has", "[\"pin\"]"),
                ("offset", "0"),
                ("limit", "10"),
            ],
        )
        .await;
    let d = data(&v);
    assert_eq!(d["total"], 1);
    assert_eq!(d["search_results"][0]["is_sticky"], true);
    assert_eq!(d["offset"], 0);
    assert_eq!(d["limit"], 10);
    // has=file is ignored: same as no filter.
    let all = t
        .call(&s, "SYNO.Chat.Post", "5", "search", &[("in", "[]")])
        .await;
    let file = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "5",
            "search",
            &[("in", "[]"), ("has", "[\"file\"]")],
        )
        .await;
    assert_eq!(data(&all)["total"], data(&file)["total"]);
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "5",
            "search",
            &[("in", "[1,2]"), ("keyword", "CAFÉ")],
        )
        .await;
    assert_eq!(data(&v)["total"], 2);
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "5",
            "search",
            &[("in", "[1]"), ("has", "[\"url\"]")],
        )
        .await;
    assert_eq!(data(&v)["total"], 1);
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "5",
            "search",
            &[("in", "[1]"), ("creator_ids", "[4]")],
        )
        .await;
    assert_eq!(data(&v)["search_results"][0]["creator_id"], 4);

    // pin a new post, find it pinned, unpin.
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "8",
            "create",
            &[("channel_id", "1"), ("message", "pin me")],
        )
        .await;
    let pid = data(&v)["post_id"].as_i64().unwrap().to_string();
    t.call(&s, "SYNO.Chat.Post", "5", "pin", &[("post_id", &pid)])
        .await;
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "5",
            "search",
            &[
                ("in", "[1]"),
                ("has", "[\"pin\"]"),
                ("sort_by_array", "[\"is_sticky\",\"last_pin_at\"]"),
            ],
        )
        .await;
    assert_eq!(data(&v)["total"], 2);
    assert_eq!(data(&v)["search_results"][0]["message"], "pin me");
    t.call(&s, "SYNO.Chat.Post", "5", "unpin", &[("post_id", &pid)])
        .await;
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "5",
            "search",
            &[("in", "[1]"), ("has", "[\"pin\"]")],
        )
        .await;
    assert_eq!(data(&v)["total"], 1);

    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "5",
            "thread_list",
            &[("channel_id", "1"), ("offset", "0"), ("limit", "10")],
        )
        .await;
    let d = data(&v);
    assert_eq!(d["total"], 1);
    assert_eq!(d["search_results"][0]["comment_count"], 2);
    assert_eq!(d["related_posts"].as_array().unwrap().len(), 2);
}

#[actix_web::test]
async fn edit_delete_reaction_reminder_schedule() {
    let t = start(SimConfig::default()).await;
    let s = t.login().await;
    let alice = t.login_as("alice", "alice-pass").await;
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "8",
            "create",
            &[("channel_id", "1"), ("message", "draft")],
        )
        .await;
    let pid = data(&v)["post_id"].as_i64().unwrap().to_string();
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "8",
            "set",
            &[("channel_id", "1"), ("post_id", &pid), ("message", "final")],
        )
        .await;
    assert_eq!(data(&v)["message"], "final");
    t.expect_errors(&[
        (
            &alice,
            105,
            "SYNO.Chat.Post",
            "8",
            "set",
            &[("post_id", &pid), ("message", "x")],
        ),
        (
            &alice,
            415,
            "SYNO.Chat.Post",
            "8",
            "delete",
            &[("post_id", &pid)],
        ),
    ])
    .await;

    let v = t
        .call(
            &alice,
            "SYNO.Chat.Post.Reaction",
            "1",
            "set",
            &[("post_id", &pid), ("sticker_name", "thumbsup")],
        )
        .await;
    assert_eq!(v["success"], true);
    let v = t
        .call(&s, "SYNO.Chat.Post", "8", "get", &[("post_id", &pid)])
        .await;
    assert_eq!(
        data(&v)["post"]["reactions"][0]["user_ids"],
        serde_json::json!([2])
    );

    let at = (chrono_ms() + 3_600_000).to_string();
    t.call(
        &s,
        "SYNO.Chat.Post.Reminder",
        "1",
        "set",
        &[("post_id", &pid), ("remind_at", &at)],
    )
    .await;
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post.Reminder",
            "1",
            "get",
            &[("post_id", &pid)],
        )
        .await;
    assert_eq!(data(&v)["remind_at"].as_i64().unwrap().to_string(), at);
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post.Reminder",
            "1",
            "list",
            &[("channel_id", "1")],
        )
        .await;
    assert_eq!(data(&v)["posts"].as_array().unwrap().len(), 1);
    t.call(
        &s,
        "SYNO.Chat.Post.Reminder",
        "1",
        "delete",
        &[("channel_id", "1"), ("post_id", &pid)],
    )
    .await;
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post.Reminder",
            "1",
            "get",
            &[("post_id", &pid)],
        )
        .await;
    assert_eq!(data(&v)["remind_at"], 0);

    assert_eq!(
        t.call(&s, "SYNO.Chat.Post", "8", "delete", &[("post_id", &pid)])
            .await["success"],
        true
    );
    t.expect_error(&s, 117, "SYNO.Chat.Post", "8", "get", &[("post_id", &pid)])
        .await;

    // Schedules: created, listed, materialised once due, deletable.
    let soon = (chrono_ms() + 300).to_string();
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post.Schedule",
            "1",
            "create",
            &[
                ("channel_id", "2"),
                ("message", "later"),
                ("send_at", &soon),
            ],
        )
        .await;
    let job = data(&v)["cronjob_id"].as_i64().unwrap();
    let far = (chrono_ms() + 86_400_000).to_string();
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post.Schedule",
            "1",
            "create",
            &[
                ("channel_id", "2"),
                ("message", "much later"),
                ("send_at", &far),
            ],
        )
        .await;
    let job2 = data(&v)["cronjob_id"].as_i64().unwrap().to_string();
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post.Schedule",
            "1",
            "list",
            &[("channel_id", "2")],
        )
        .await;
    let list = data(&v)["schedule_posts"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["cronjob_id"], job);
    actix_rt::time::sleep(Duration::from_millis(400)).await;
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "8",
            "list",
            &[("channel_id", "2"), ("limit", "1")],
        )
        .await;
    assert_eq!(data(&v)["posts"][0]["message"], "later");
    t.call(
        &s,
        "SYNO.Chat.Post.Schedule",
        "1",
        "delete",
        &[("cronjob_id", &job2)],
    )
    .await;
    let v = t
        .call(&s, "SYNO.Chat.Post.Schedule", "1", "list", &[])
        .await;
    assert!(data(&v)["schedule_posts"].as_array().unwrap().is_empty());
    t.expect_error(
        &s,
        117,
        "SYNO.Chat.Post.Schedule",
        "1",
        "delete",
        &[("cronjob_id", &job2)],
    )
    .await;
}

fn chrono_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[actix_web::test]
async fn multipart_upload_and_file_get() {
    let t = start(SimConfig::default()).await;
    // The whole post in the answer, for its id (by default an upload answers `file_props`).
    t.ctl().set_upload_answers_file_props_only(false);
    let s = t.login().await;
    let payload: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let boundary = "----simboundary42";
    let mut body = Vec::new();
    for (k, v) in [
        ("type", "file"),
        ("message", "the report"),
        ("conn_id", ""),
        ("is_thread", "false"),
    ] {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"report.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(&payload);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let v = t
        .upload(&s, "/webapi/entry.cgi/SYNO.Chat.Post", boundary, body)
        .await;
    let post = data(&v).clone();
    assert_eq!(post["type"], "file");
    assert_eq!(post["message"], "the report");
    assert_eq!(post["file_props"]["name"], "report.bin");
    assert_eq!(post["file_props"]["size"], 3000);
    let log = t.ctl().requests();
    let last = log.last().unwrap();
    assert!(
        last.params
            .iter()
            .any(|(k, v)| k == "file" && v == "<file 3000 bytes>")
    );
    assert!(
        last.params
            .iter()
            .any(|(k, v)| k == "channel_id" && v == "1")
    );

    let pid = post["post_id"].as_i64().unwrap().to_string();
    let mut resp = t
        .client
        .get(format!(
            "{}/webapi/entry.cgi?{}",
            t.base,
            qs(&[
                ("api", "SYNO.Chat.Post.File"),
                ("version", "2"),
                ("method", "get"),
                ("post_id", &pid),
            ])
        ))
        .insert_header(("X-SYNO-TOKEN", s.token.as_str()))
        .insert_header(("Cookie", format!("id={}", s.sid)))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()
            .get("content-disposition")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("report.bin")
    );
    assert_eq!(resp.body().await.unwrap().to_vec(), payload);
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post.Attachment",
            "1",
            "list",
            &[("channel_id", "1"), ("limit", "10")],
        )
        .await;
    assert_eq!(
        data(&v)["attachments"][0]["post_id"]
            .as_i64()
            .unwrap()
            .to_string(),
        pid
    );
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "5",
            "search",
            &[("in", "[1]"), ("post_type", "[\"file\"]")],
        )
        .await;
    assert_eq!(data(&v)["total"], 1);
    // A text post has no file: JSON error.
    let first = ((1i64 << 32) | 1).to_string();
    t.expect_error(
        &s,
        117,
        "SYNO.Chat.Post.File",
        "2",
        "get",
        &[("post_id", &first)],
    )
    .await;
}

#[actix_web::test]
async fn misc_apis_and_admin_only() {
    let t = start(SimConfig::default()).await;
    let admin = t.login().await;
    let bob = t.login_as("bob", "bob-pass").await;
    for (api, v) in [
        ("SYNO.Chat.Sticker", "2"),
        ("SYNO.Chat.App", "1"),
        ("SYNO.Chat.Misc", "1"),
    ] {
        let m = if api == "SYNO.Chat.Sticker" {
            "list"
        } else {
            "get"
        };
        assert_eq!(t.call(&bob, api, v, m, &[]).await["success"], true, "{api}");
    }
    for (api, m) in [
        ("SYNO.Chat.Admin.Setting", "get"),
        ("SYNO.Chat.Webhook.Incoming", "list"),
        ("SYNO.Chat.Bot", "enable"),
        ("SYNO.Chat.Chatbot", "list"),
        ("SYNO.Chat.External", "list"),
    ] {
        assert_eq!(
            code(&t.call(&bob, api, "1", m, &[("user_id", "5")]).await),
            105,
            "{api}"
        );
    }
    let v = t
        .call(&admin, "SYNO.Chat.Admin.Setting", "3", "get", &[])
        .await;
    assert_eq!(data(&v)["allow_edit_message"], true);
    assert_eq!(data(&v)["allow_edit_message_time_within_min"], 0);
    t.call(
        &admin,
        "SYNO.Chat.Admin.Setting",
        "5",
        "set",
        &[("allow_edit_message", "false")],
    )
    .await;
    let v = t
        .call(
            &admin,
            "SYNO.Chat.Post",
            "8",
            "create",
            &[("channel_id", "1"), ("message", "a")],
        )
        .await;
    let pid = data(&v)["post_id"].as_i64().unwrap().to_string();
    t.expect_error(
        &admin,
        105,
        "SYNO.Chat.Post",
        "8",
        "set",
        &[("post_id", &pid), ("message", "b")],
    )
    .await;
    // type=0 "succeeds" but stores an invisible post (N8N).
    let v = t
        .call(
            &admin,
            "SYNO.Chat.Post",
            "8",
            "create",
            &[("channel_id", "1"), ("message", "ghost"), ("type", "0")],
        )
        .await;
    assert_eq!(v["success"], true);
    let v = t
        .call(
            &admin,
            "SYNO.Chat.Post",
            "8",
            "list",
            &[("channel_id", "1")],
        )
        .await;
    assert!(
        data(&v)["posts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["message"] != "ghost")
    );
}

// ---------------------------------------------------------------- phase 2: integrations

async fn external(t: &Sim, method: &str, token: &str, form: &[(&str, &str)]) -> Value {
    let q = qs(&[
        ("api", "SYNO.Chat.External"),
        ("version", "2"),
        ("method", method),
        ("token", token),
    ]);
    let mut resp = t
        .client
        .post(format!("{}/webapi/entry.cgi?{}", t.base, q))
        .send_form(&form)
        .await
        .unwrap();
    resp.json::<Value>().limit(16 << 20).await.unwrap()
}

#[actix_web::test]
async fn external_incoming_webhook() {
    let t = start(SimConfig::default()).await;
    let s = t.login().await;
    let tok = t.ctl().demo_webhook_token();
    assert_eq!(tok.len(), 64);
    let text = "deploy 100% done & ok + \"quoted\" 🎉";
    let payload = serde_json::json!({ "text": text }).to_string();
    assert_eq!(
        external(&t, "incoming", &tok, &[("payload", &payload)]).await["success"],
        true
    );
    // Quoted token works too; raw JSON body works too.
    let quoted = format!("\"{tok}\"");
    let q = qs(&[
        ("api", "SYNO.Chat.External"),
        ("version", "2"),
        ("method", "incoming"),
        ("token", &quoted),
    ]);
    actix_rt::time::sleep(Duration::from_millis(1100)).await;
    let mut resp = t
        .client
        .post(format!("{}/webapi/entry.cgi?{}", t.base, q))
        .content_type("application/json")
        .send_body(r#"{"text":"raw body"}"#)
        .await
        .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["success"], true);
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "8",
            "list",
            &[("channel_id", "1"), ("limit", "2")],
        )
        .await;
    assert_eq!(data(&v)["posts"][0]["message"], "raw body");
    assert_eq!(data(&v)["posts"][1]["message"], text);

    actix_rt::time::sleep(Duration::from_millis(1100)).await;
    let v = external(&t, "incoming", &tok, &[]).await;
    assert_eq!(code(&v), 120);
    assert_eq!(v["error"]["errors"]["name"], "payload");
    assert_eq!(
        code(&external(&t, "incoming", &tok, &[("payload", "{not json")]).await),
        117
    );
    assert_eq!(
        code(
            &external(
                &t,
                "incoming",
                &tok,
                &[("payload", r#"{"text":"x","file_url":"not a url"}"#)]
            )
            .await
        ),
        117
    );
    let long = serde_json::json!({ "text": "y".repeat(2001) }).to_string();
    assert_eq!(
        code(&external(&t, "incoming", &tok, &[("payload", &long)]).await),
        410
    );
    assert_eq!(
        code(&external(&t, "incoming", "nope", &[("payload", &payload)]).await),
        404
    );
    // Webhook tokens cannot use bot-only methods.
    assert_eq!(code(&external(&t, "channel_list", &tok, &[]).await), 404);

    // Rate limit: 2 per second per token.
    actix_rt::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        external(&t, "incoming", &tok, &[("payload", &payload)]).await["success"],
        true
    );
    assert_eq!(
        external(&t, "incoming", &tok, &[("payload", &payload)]).await["success"],
        true
    );
    assert_eq!(
        code(&external(&t, "incoming", &tok, &[("payload", &payload)]).await),
        411
    );
}

#[actix_web::test]
async fn webhook_created_via_api_needs_channel_nickname_and_enable() {
    let t = start(SimConfig::default()).await;
    let s = t.login().await;
    let v = t
        .call(
            &s,
            "SYNO.Chat.Webhook.Incoming",
            "1",
            "create",
            &[("name", "ci"), ("channel_id", "2")],
        )
        .await;
    let tok = data(&v)["token"].as_str().unwrap().to_string();
    let uid = data(&v)["user_id"].as_i64().unwrap().to_string();
    assert_eq!(tok.len(), 64);
    assert!(tok.chars().all(|c| c.is_ascii_alphanumeric()));
    let payload = r#"{"text":"from ci"}"#;
    assert_eq!(
        code(&external(&t, "incoming", &tok, &[("payload", payload)]).await),
        404
    );
    t.call(
        &s,
        "SYNO.Chat.Bot",
        "1",
        "set",
        &[("user_id", &uid), ("nickname", "CI")],
    )
    .await;
    assert_eq!(
        code(&external(&t, "incoming", &tok, &[("payload", payload)]).await),
        404
    );
    t.call(&s, "SYNO.Chat.Bot", "1", "enable", &[("user_id", &uid)])
        .await;
    assert_eq!(
        external(&t, "incoming", &tok, &[("payload", payload)]).await["success"],
        true
    );
    let v = t
        .call(&s, "SYNO.Chat.Webhook.Incoming", "1", "list", &[])
        .await;
    let hooks = data(&v)["webhook_incomings"].as_array().unwrap().clone();
    assert!(
        hooks
            .iter()
            .any(|h| h["token"] == tok.as_str() && h["channel_id"] == 2 && h["nickname"] == "CI")
    );
    t.call(&s, "SYNO.Chat.Bot", "1", "disable", &[("user_id", &uid)])
        .await;
    assert_eq!(
        code(&external(&t, "incoming", &tok, &[("payload", payload)]).await),
        404
    );
    t.call(
        &s,
        "SYNO.Chat.Webhook.Incoming",
        "1",
        "delete",
        &[("id", &uid)],
    )
    .await;
    let v = t
        .call(&s, "SYNO.Chat.Webhook.Incoming", "1", "list", &[])
        .await;
    assert!(
        data(&v)["webhook_incomings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["token"] != tok.as_str())
    );

    let v = t
        .call(
            &s,
            "SYNO.Chat.Webhook.Outgoing",
            "1",
            "create",
            &[
                ("name", "out"),
                ("channel_id", "1"),
                ("url", "http://127.0.0.1:9/x"),
                ("events", "[\"message\"]"),
            ],
        )
        .await;
    assert_eq!(data(&v)["token"].as_str().unwrap().len(), 64);
    let v = t
        .call(&s, "SYNO.Chat.Webhook.Outgoing", "1", "list", &[])
        .await;
    assert_eq!(
        data(&v)["webhook_outgoings"][0]["url"],
        "http://127.0.0.1:9/x"
    );
    let v = t
        .call(
            &s,
            "SYNO.Chat.Webhook.Slash",
            "2",
            "create",
            &[
                ("name", "w"),
                ("command", "/weather"),
                ("url", "http://127.0.0.1:9/s"),
            ],
        )
        .await;
    assert_eq!(v["success"], true);
    let v = t
        .call(&s, "SYNO.Chat.Webhook.Slash", "2", "list", &[])
        .await;
    assert_eq!(data(&v)["webhook_slashes"][0]["command"], "weather");
    assert_eq!(
        t.call(&s, "SYNO.Chat.Webhook.BuiltIn", "2", "list", &[])
            .await["success"],
        true
    );
    assert_eq!(
        t.call(&s, "SYNO.Chat.Webhook.Broadcast", "1", "list", &[])
            .await["success"],
        true
    );
    let v = t.call(&s, "SYNO.Chat.External", "3", "list", &[]).await;
    assert!(data(&v)["externals"].as_array().unwrap().len() >= 3);
}

#[actix_web::test]
async fn chatbot_token_methods() {
    let t = start(SimConfig::default()).await;
    let s = t.login().await;
    let bot = t.ctl().demo_bot_token();
    let v = external(
        &t,
        "chatbot",
        &bot,
        &[(
            "payload",
            r#"{"text":"hello & welcome 100%","user_ids":[2]}"#,
        )],
    )
    .await;
    let pid = data(&v)["succ"]["user_id_post_map"]["2"].as_i64().unwrap();
    assert!(data(&v)["fail"].as_object().unwrap().is_empty());
    // `user_ids` belongs in the payload, as integers: beside it, or as strings, it is not
    // read (upstream-protocol's External table).
    let beside = external(
        &t,
        "chatbot",
        &bot,
        &[("payload", r#"{"text":"hi"}"#), ("user_ids", "[3]")],
    )
    .await;
    assert_eq!(code(&beside), 120, "{beside}");
    let strings = external(
        &t,
        "chatbot",
        &bot,
        &[("payload", r#"{"text":"hi","user_ids":["3"]}"#)],
    )
    .await;
    assert_eq!(code(&strings), 117, "{strings}");
    // A bad user is reported in `fail`.
    actix_rt::time::sleep(Duration::from_millis(1100)).await;
    let v = external(
        &t,
        "chatbot",
        &bot,
        &[("payload", r#"{"text":"hi","user_ids":[3, 999]}"#)],
    )
    .await;
    assert!(data(&v)["succ"]["user_id_post_map"]["3"].is_number());
    assert!(data(&v)["fail"]["999"].is_string());

    let v = external(&t, "channel_list", &bot, &[]).await;
    let chans = data(&v)["channels"].as_array().unwrap().clone();
    assert!(chans.iter().any(|c| c["channel_id"] == 1));
    assert!(
        chans
            .iter()
            .any(|c| c["channel_id"] == pid >> 32 && c["type"] == "chatbot")
    );
    let v = external(&t, "user_list", &bot, &[]).await;
    assert!(data(&v)["users"].as_array().unwrap().len() >= 4);
    let v = external(
        &t,
        "post_list",
        &bot,
        &[
            ("channel_id", "1"),
            ("prev_count", "3"),
            ("next_count", "0"),
        ],
    )
    .await;
    assert_eq!(data(&v)["posts"].as_array().unwrap().len(), 3);
    assert_eq!(
        code(&external(&t, "post_list", &bot, &[("channel_id", "3")]).await),
        401
    );
    assert_eq!(code(&external(&t, "post_list", &bot, &[]).await), 120);

    // Chatbot management.
    let v = t.call(&s, "SYNO.Chat.Chatbot", "1", "list", &[]).await;
    let helper = data(&v)["chatbots"][0].clone();
    assert_eq!(helper["nickname"], "helper");
    let hid = helper["user_id"].as_i64().unwrap().to_string();
    t.call(
        &s,
        "SYNO.Chat.Chatbot",
        "1",
        "set",
        &[
            ("user_id", &hid),
            ("purpose", "triage"),
            ("hide_from_user", "true"),
        ],
    )
    .await;
    let v = t.call(&s, "SYNO.Chat.Chatbot", "1", "list", &[]).await;
    assert_eq!(
        data(&v)["chatbots"][0]["chatbot_props"]["purpose"],
        "triage"
    );
    t.expect_error(
        &s,
        105,
        "SYNO.Chat.Chatbot",
        "1",
        "set",
        &[("user_id", "1"), ("purpose", "x")],
    )
    .await;
    for i in 0..4 {
        let v = t
            .call(
                &s,
                "SYNO.Chat.Chatbot",
                "1",
                "create",
                &[("nickname", &format!("bot{i}"))],
            )
            .await;
        assert_eq!(data(&v)["token"].as_str().unwrap().len(), 64);
    }
    t.expect_error(
        &s,
        117,
        "SYNO.Chat.Chatbot",
        "1",
        "create",
        &[("nickname", "one-too-many")],
    )
    .await;
    t.call(
        &s,
        "SYNO.Chat.Bot",
        "1",
        "delete",
        &[("user_id", &hid), ("real_delete", "true")],
    )
    .await;
    assert_eq!(code(&external(&t, "user_list", &bot, &[]).await), 404);
}

#[actix_web::test]
async fn outgoing_webhook_fires_for_ui_posts_only() {
    use actix_web::{App, HttpResponse, HttpServer, web};
    use std::sync::{Arc, Mutex};

    let t = start(SimConfig::default()).await;
    let s = t.login().await;
    type Forms = Arc<Mutex<Vec<Vec<(String, String)>>>>;
    let seen: Forms = Arc::default();
    let seen2 = seen.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let srv = HttpServer::new(move || {
        let seen = seen2.clone();
        App::new().route(
            "/hook",
            web::post().to(move |form: web::Form<Vec<(String, String)>>| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(form.into_inner());
                    HttpResponse::Ok().json(serde_json::json!({"text": "pong"}))
                }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let handle = srv.handle();
    actix_rt::spawn(srv);

    let url = format!("http://127.0.0.1:{port}/hook");
    let v = t
        .call(
            &s,
            "SYNO.Chat.Webhook.Outgoing",
            "1",
            "create",
            &[("name", "o"), ("channel_id", "2"), ("url", &url)],
        )
        .await;
    let uid = data(&v)["user_id"].as_i64().unwrap().to_string();
    t.call(
        &s,
        "SYNO.Chat.Webhook.Outgoing",
        "1",
        "set",
        &[("user_id", &uid), ("trigger_word", "!ping")],
    )
    .await;
    t.call(
        &s,
        "SYNO.Chat.Bot",
        "1",
        "set",
        &[("user_id", &uid), ("nickname", "pinger")],
    )
    .await;
    t.call(&s, "SYNO.Chat.Bot", "1", "enable", &[("user_id", &uid)])
        .await;

    // API posts never fire; UI posts without the trigger word do not either.
    t.call(
        &s,
        "SYNO.Chat.Post",
        "8",
        "create",
        &[("channel_id", "2"), ("message", "!ping via api")],
    )
    .await;
    t.ctl().post_as_user(3, 2, "no trigger here");
    let pid = t.ctl().post_as_user(3, 2, "!ping please");
    for _ in 0..100 {
        if !t.ctl().outbound_events().is_empty() {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let events = t.ctl().outbound_events();
    assert_eq!(events.len(), 1);
    let form = seen.lock().unwrap()[0].clone();
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("text"), "!ping please");
    assert_eq!(get("post_id"), pid.to_string());
    assert_eq!(get("channel_id"), "2");
    assert_eq!(get("user_id"), "3");
    assert_eq!(get("trigger_word"), "!ping");
    assert!(get("timestamp").parse::<i64>().unwrap() > 1_600_000_000_000);
    assert_eq!(get("token").len(), 64);
    let reply = events[0].reply_post_id.unwrap();
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "8",
            "list",
            &[("channel_id", "2"), ("limit", "1")],
        )
        .await;
    assert_eq!(data(&v)["posts"][0]["post_id"], reply);
    assert_eq!(data(&v)["posts"][0]["message"], "pong");
    handle.stop(false).await;
}

#[actix_web::test]
async fn votes_forward_and_literal_quotes() {
    let t = start(SimConfig::default()).await;
    let s = t.login().await;
    let alice = t.login_as("alice", "alice-pass").await;
    // Post is not requestFormat=JSON: a message wrapped in quotes keeps them.
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "8",
            "create",
            &[("channel_id", "1"), ("message", "\"quoted\"")],
        )
        .await;
    assert_eq!(data(&v)["message"], "\"quoted\"");
    let pid = data(&v)["post_id"].as_i64().unwrap().to_string();

    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "5",
            "forward",
            &[("post_id", &pid), ("channel_ids", "[\"2\"]")],
        )
        .await;
    assert_eq!(code(&v), 101);
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "5",
            "forward",
            &[("post_id", &pid), ("channel_ids", "[2,3]")],
        )
        .await;
    let ids = data(&v)["post_ids"].as_array().unwrap().clone();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0].as_i64().unwrap() >> 32, 2);

    let vote = |extra: &'static [(&'static str, &'static str)]| {
        let mut p = vec![("channel_id", "1"), ("message", "Lunch?")];
        p.extend_from_slice(extra);
        p
    };
    assert_eq!(
        code(
            &t.call(
                &s,
                "SYNO.Chat.Post.Vote",
                "1",
                "create",
                &vote(&[("choices", "[\"a\",\"b\"]")])
            )
            .await
        ),
        101
    );
    assert_eq!(
        code(
            &t.call(
                &s,
                "SYNO.Chat.Post.Vote",
                "1",
                "create",
                &vote(&[
                    ("choices", r#"[{"text":"a"}]"#),
                    ("options", r#""{\"multiple\":true}""#)
                ])
            )
            .await
        ),
        117
    );
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post.Vote",
            "1",
            "create",
            &vote(&[
                ("choices", r#"[{"text":"pizza"},{"text":"sushi"}]"#),
                (
                    "options",
                    r#"{"multiple":false,"anonymous":false,"add_option":true,"expire_at":0}"#,
                ),
            ]),
        )
        .await;
    let post = data(&v).clone();
    assert_eq!(post["props"]["vote"]["state"], "open");
    let vid = post["post_id"].as_i64().unwrap().to_string();
    let choice = post["props"]["vote"]["choices"][1]["id"]
        .as_str()
        .unwrap()
        .to_string();
    t.expect_error(
        &alice,
        101,
        "SYNO.Chat.Post.Vote",
        "1",
        "vote",
        &[("post_id", &vid), ("choice_ids", "[1]")],
    )
    .await;
    let ids = format!("[\"{choice}\"]");
    assert_eq!(
        t.call(
            &alice,
            "SYNO.Chat.Post.Vote",
            "1",
            "vote",
            &[("post_id", &vid), ("choice_ids", &ids)]
        )
        .await["success"],
        true
    );
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post.Vote",
            "1",
            "get_choices",
            &[("post_id", &vid)],
        )
        .await;
    assert_eq!(data(&v)["choices"][1]["count"], 1);
    assert_eq!(data(&v)["choices"][1]["voters"], serde_json::json!([2]));
    t.expect_error(
        &alice,
        105,
        "SYNO.Chat.Post.Vote",
        "1",
        "close",
        &[("post_id", &vid)],
    )
    .await;
    t.call(
        &s,
        "SYNO.Chat.Post.Vote",
        "1",
        "close",
        &[("post_id", &vid)],
    )
    .await;
    t.expect_error(
        &alice,
        117,
        "SYNO.Chat.Post.Vote",
        "1",
        "vote",
        &[("post_id", &vid), ("choice_ids", &ids)],
    )
    .await;
}

#[actix_web::test]
async fn post_list_offset_ignored_mode() {
    let t = start(SimConfig::default()).await;
    let s = t.login().await;
    for i in 0..12 {
        t.call(
            &s,
            "SYNO.Chat.Post",
            "8",
            "create",
            &[("channel_id", "2"), ("message", &format!("m{i}"))],
        )
        .await;
    }
    t.ctl().set_post_list_offset_ignored(true);
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "5",
            "list",
            &[("channel_id", "2"), ("limit", "1"), ("offset", "5")],
        )
        .await;
    let posts = data(&v)["posts"].as_array().unwrap().clone();
    assert_eq!(posts.len(), 10);
    assert_eq!(posts[0]["message"], "m11");
    t.ctl().set_post_list_offset_ignored(false);
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "5",
            "list",
            &[("channel_id", "2"), ("limit", "1"), ("offset", "1")],
        )
        .await;
    assert_eq!(data(&v)["posts"][0]["message"], "m10");
}

#[actix_web::test]
async fn control_accounts_and_ui_posts() {
    let t = start(SimConfig::default()).await;
    let uid = t.ctl().add_account("dave", "dave-pass", false);
    assert_eq!(uid, 7);
    let dave = t.login_as("dave", "dave-pass").await;
    let v = t
        .call(
            &dave,
            "SYNO.Chat.Channel",
            "5",
            "get",
            &[("channel_id", "1")],
        )
        .await;
    assert_eq!(data(&v)["channel"]["is_joined"], true);
    t.ctl().set_password("dave", "new-pass");
    let old = [
        ("api", "SYNO.API.Auth"),
        ("version", "7"),
        ("method", "login"),
        ("account", "dave"),
        ("passwd", "dave-pass"),
    ];
    assert_eq!(code(&t.post("/webapi/auth.cgi", &old, &[]).await), 400);
    let sessions = t.ctl().active_sessions();
    assert!(
        sessions
            .iter()
            .any(|s| s.account == "dave" && s.sid == dave.sid && s.synotoken == dave.token)
    );

    let pid = t.ctl().post_as_user(uid, 1, "from the UI");
    assert_eq!(pid >> 32, 1);
    let v = t
        .call(
            &dave,
            "SYNO.Chat.Post",
            "8",
            "list",
            &[("channel_id", "1"), ("limit", "1")],
        )
        .await;
    assert_eq!(data(&v)["posts"][0]["post_id"], pid);
    assert_eq!(t.ctl().post_as_user(uid, 999, "nowhere"), 0);
    // A DM to the chatbot lands in a chatbot-type channel the bot can read.
    let bot_pid = t.ctl().message_chatbot(uid, 6, "help me");
    let v = external(
        &t,
        "post_list",
        &t.ctl().demo_bot_token(),
        &[("channel_id", &(bot_pid >> 32).to_string())],
    )
    .await;
    assert_eq!(data(&v)["posts"][0]["message"], "help me");
}

#[actix_web::test]
async fn a_get_sid_starting_with_a_digit_is_refused_but_the_cookie_works() {
    let t = start(SimConfig::default()).await;
    // About a third of the sids start with a digit, as on a real NAS.
    let mut s = t.login().await;
    for _ in 0..100 {
        if s.sid.starts_with(|c: char| c.is_ascii_digit()) {
            break;
        }
        s = t.login().await;
    }
    assert!(s.sid.starts_with(|c: char| c.is_ascii_digit()));
    let list = [
        ("api", "SYNO.Chat.Channel"),
        ("version", "5"),
        ("method", "list"),
    ];
    let mut with_sid = list.to_vec();
    with_sid.push(("_sid", s.sid.as_str()));
    let cookie = format!("id={}", s.sid);
    let token = ("X-SYNO-TOKEN", s.token.as_str());
    // In a GET query string: 119, even with the cookie also present (`_sid` wins).
    let v = t
        .get_h(
            "/webapi/entry.cgi",
            &with_sid,
            &[token, ("Cookie", &cookie)],
        )
        .await;
    assert_eq!(code(&v), 119);
    // The same sid as the `id` cookie, or in a POST form: accepted.
    let v = t
        .get_h("/webapi/entry.cgi", &list, &[token, ("Cookie", &cookie)])
        .await;
    assert_eq!(v["success"], true, "{v}");
    let v = t.post("/webapi/entry.cgi", &with_sid, &[token]).await;
    assert_eq!(v["success"], true, "{v}");
    let log = t.ctl().requests();
    let last_get = &log[log.len() - 2];
    assert!(last_get.query_fields.iter().all(|k| k != "_sid"));
}

#[actix_web::test]
async fn json_format_apis_decode_string_values_as_json() {
    let t = start(SimConfig::default()).await;
    let s = t.login().await;
    let create = |name: &'static str| {
        let (t, s) = (&t, &s);
        async move {
            t.call(
                s,
                "SYNO.Chat.Channel.Named",
                "1",
                "create",
                &[("name", name), ("type", "private")],
            )
            .await
        }
    };
    // Raw values that are JSON are decoded: not strings, so not names.
    assert_eq!(code(&create("123").await), 101);
    assert_eq!(code(&create("true").await), 101);
    assert_eq!(code(&create("null").await), 114);
    // JSON-encoded strings keep what they say; raw non-JSON text falls back to itself.
    for (sent, stored) in [("\"123\"", "123"), ("\"null\"", "null"), ("team", "team")] {
        let v = create(sent).await;
        let id = data(&v)["channel_id"].as_i64().unwrap();
        let list = t.call(&s, "SYNO.Chat.Channel", "5", "list", &[]).await;
        let channel = data(&list)["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel_id"] == id)
            .cloned()
            .unwrap();
        assert_eq!(channel["name"], stored, "{sent}");
    }
}

/// The toggle for one n8n note (upstream-protocol §4.1, §8): `Channel.Named.create` refuses a
/// `type` with 407; without `type` it makes a private channel. Off, `type` is taken.
#[actix_web::test]
async fn named_create_can_refuse_the_type_parameter() {
    let t = start(SimConfig::default()).await;
    let s = t.login().await;
    let create = |params: &'static [(&'static str, &'static str)]| {
        let (t, s) = (&t, &s);
        async move {
            t.call(s, "SYNO.Chat.Channel.Named", "1", "create", params)
                .await
        }
    };
    t.ctl().set_named_create_refuses_type(true);
    for typed in [
        &[("name", "typed-private"), ("type", "private")][..],
        &[("name", "typed-public"), ("type", "public")][..],
    ] {
        assert_eq!(code(&create(typed).await), 407, "{typed:?}");
    }
    let v = create(&[("name", "untyped")]).await;
    assert_eq!(data(&v)["type"], "private", "{v}");
    let list = t.call(&s, "SYNO.Chat.Channel", "5", "list", &[]).await;
    let names: Vec<&str> = data(&list)["channels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(names.contains(&"untyped"));
    assert!(!names.iter().any(|n| n.starts_with("typed-")), "{names:?}");
    t.ctl().set_named_create_refuses_type(false);
    let v = create(&[("name", "typed-public"), ("type", "public")]).await;
    assert_eq!(data(&v)["type"], "public", "{v}");
}

/// `External post_list` without `post_id` answers the newest posts (the library: "omit for
/// newest"), also while session `Post.list` mimics ACE's v8, which answers the oldest.
#[actix_web::test]
async fn external_post_list_without_an_anchor_is_the_newest() {
    let t = start(SimConfig::default()).await;
    let s = t.login().await;
    let bot = t.ctl().demo_bot_token();
    for n in 0..4 {
        t.call(
            &s,
            "SYNO.Chat.Post",
            "8",
            "create",
            &[("channel_id", "1"), ("message", &format!("late {n}"))],
        )
        .await;
    }
    let newest = |v: &Value| -> Vec<String> {
        data(v)["posts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["message"].as_str().unwrap().to_owned())
            .collect()
    };
    let window = [
        ("channel_id", "1"),
        ("prev_count", "2"),
        ("next_count", "0"),
    ];
    for anchor_only in [false, true] {
        t.ctl().set_post_list_anchor_only(anchor_only);
        let v = external(&t, "post_list", &bot, &window).await;
        assert_eq!(
            newest(&v),
            ["late 3", "late 2"],
            "anchor_only {anchor_only}"
        );
    }
    t.ctl().set_post_list_anchor_only(false);
    // `offset` and `limit` are not External's: without counts, the newest 10 whatever they say.
    let paged = external(
        &t,
        "post_list",
        &bot,
        &[("channel_id", "1"), ("offset", "1"), ("limit", "1")],
    )
    .await;
    let paged = newest(&paged);
    assert_eq!(paged[0], "late 3", "{paged:?}");
    assert!(paged.len() > 1, "{paged:?}");
    // Session Post.list v8 without an anchor, as ACE saw it: the oldest post alone.
    t.ctl().set_post_list_anchor_only(true);
    let v = t.call(&s, "SYNO.Chat.Post", "8", "list", &window).await;
    assert_eq!(data(&v)["posts"].as_array().unwrap().len(), 1);
    assert_ne!(newest(&v), ["late 3"]);
}

/// Test hook: a call carried out and answered `{"success":true}` without its `data`.
#[actix_web::test]
async fn a_call_can_be_answered_without_data() {
    let t = start(SimConfig::default()).await;
    let s = t.login().await;
    t.ctl()
        .answer_without_data_next("SYNO.Chat.Sticker", Some("list"), 1);
    let bare = t.call(&s, "SYNO.Chat.Sticker", "2", "list", &[]).await;
    assert_eq!(bare, serde_json::json!({"success": true}));
    let full = t.call(&s, "SYNO.Chat.Sticker", "2", "list", &[]).await;
    assert!(full["data"].is_object(), "{full}");
}

/// An upload as the library sends it or a refusal: `type=file` (114 without it), the file in a
/// part named `file` (101 under another name, never a text post) and last (101 otherwise).
#[actix_web::test]
async fn multipart_uploads_are_taken_only_as_the_library_sends_them() {
    let t = start(SimConfig::default()).await;
    let s = t.login().await;
    let boundary = "----strict";
    let field = |k: &str, v: &str| {
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
    };
    let file = |name: &str| {
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"a.txt\"\r\n\
             Content-Type: text/plain\r\n\r\nhello\r\n"
        )
    };
    let upload = |parts: Vec<String>| {
        let body = format!("{}--{boundary}--\r\n", parts.concat()).into_bytes();
        t.upload(&s, "/webapi/entry.cgi", boundary, body)
    };
    let posts_before = t.ctl().count("SYNO.Chat.Post", "create");
    // (what is wrong, the parts, DSM's answer)
    let refused = [
        ("no type", vec![field("message", "m"), file("file")], 114),
        (
            "a misnamed file part",
            vec![field("type", "file"), field("message", "m"), file("upload")],
            101,
        ),
        (
            "the file not last",
            vec![field("type", "file"), file("file"), field("message", "m")],
            101,
        ),
        (
            "a file beside type=normal",
            vec![field("type", "normal"), field("message", "m"), file("file")],
            101,
        ),
    ];
    for (wrong, parts, expected) in refused {
        let answer = upload(parts).await;
        assert_eq!(code(&answer), expected, "{wrong}: {answer}");
    }
    let ok = upload(vec![
        field("type", "file"),
        field("message", "m"),
        file("file"),
    ])
    .await;
    assert_eq!(ok["success"], true, "{ok}");
    // By default the answer the reference describes: `file_props` alone, no `post_id`.
    assert_eq!(ok["data"]["file_props"]["name"], "a.txt", "{ok}");
    assert!(ok["data"]["post_id"].is_null(), "{ok}");
    assert_eq!(t.ctl().count("SYNO.Chat.Post", "create"), posts_before + 5);
}

/// Values as the reference has clients send them, or a refusal: booleans as `true`/`false`
/// (not `1`), control values and the password as sent (never JSON-unquoted).
#[actix_web::test]
async fn values_are_read_as_the_reference_has_them_sent() {
    let t = start(SimConfig::default()).await;
    let login = |passwd: &'static str| {
        let t = &t;
        async move {
            t.get(
                "/webapi/entry.cgi",
                &[
                    ("api", "SYNO.API.Auth"),
                    ("version", "6"),
                    ("method", "login"),
                    ("account", DEMO_ACCOUNT),
                    ("passwd", passwd),
                    ("format", "sid"),
                ],
            )
            .await
        }
    };
    // `"synology-demo"` is another password than `synology-demo`.
    assert_eq!(code(&login("\"synology-demo\"").await), 400);
    assert_eq!(login(DEMO_PASSWORD).await["success"], true);
    let s = t.login().await;
    // A quoted api names no API.
    let quoted = t.call(&s, "\"SYNO.Chat.Channel\"", "1", "list", &[]).await;
    assert_eq!(code(&quoted), 102, "{quoted}");
    // A boolean as 1 is not `true`.
    let one = t
        .call(
            &s,
            "SYNO.Chat.Channel.Named",
            "1",
            "create",
            &[
                ("name", "\"bools\""),
                ("type", "\"public\""),
                ("encrypted", "1"),
            ],
        )
        .await;
    assert_eq!(code(&one), 101, "{one}");
}
