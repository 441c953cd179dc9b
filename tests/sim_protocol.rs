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
                    ("format", "sid"),
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
}

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
    assert_eq!(
        code(&t.call(&s, "SYNO.Chat.Nope", "1", "list", &[]).await),
        102
    );
    assert_eq!(
        code(&t.call(&s, "SYNO.Chat.Post", "8", "nope", &[]).await),
        103
    );
    assert_eq!(
        code(
            &t.call(&s, "SYNO.Chat.Post", "9", "list", &[("channel_id", "1")])
                .await
        ),
        104
    );
    assert_eq!(
        code(&t.call(&s, "SYNO.Chat.Channel", "0", "list", &[]).await),
        104
    );
    assert_eq!(
        code(&t.call(&s, "SYNO.Chat.Post", "8", "list", &[]).await),
        114
    );
    assert_eq!(
        code(
            &t.call(&s, "SYNO.Chat.User", "3", "get", &[("user_id", "999")])
                .await
        ),
        117
    );
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
    assert_eq!(
        t.get_h("/webapi/entry.cgi", &list, &[("X-SYNO-TOKEN", &s.token)])
            .await["success"],
        true
    );
    let mut with_param = list.to_vec();
    with_param.push(("SynoToken", &s.token));
    assert_eq!(
        t.get("/webapi/entry.cgi", &with_param).await["success"],
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
    assert_eq!(t2.get("/webapi/entry.cgi", &list2).await["success"], true);
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
    assert_eq!(
        code(&t.call(&s, "SYNO.Chat.User", "3", "list", &[]).await),
        119
    );

    let s = t.login().await;
    t.ctl().expire_all_sessions();
    assert!(t.ctl().active_sessions().is_empty());
    assert_eq!(
        code(&t.call(&s, "SYNO.Chat.User", "3", "list", &[]).await),
        119
    );
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
    assert_eq!(
        code(&t.call(&first, "SYNO.Chat.User", "3", "list", &[]).await),
        107
    );
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
    assert_eq!(
        code(&t.call(&s, "SYNO.Chat.User", "3", "list", &[]).await),
        119
    );
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
        ("_sid", s.sid.as_str()),
    ];
    let v: Value = fresh
        .get(format!("{}/webapi/entry.cgi?{}", t.base, qs(&list)))
        .insert_header(("X-SYNO-TOKEN", s.token.as_str()))
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
    assert_eq!(
        code(
            &t.call(&bob, "SYNO.Chat.Post", "8", "list", &[("channel_id", "3")])
                .await
        ),
        117
    );
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
    assert_eq!(
        code(
            &t.call(
                &carol,
                "SYNO.Chat.Post",
                "8",
                "create",
                &[("channel_id", "2"), ("message", "hi")]
            )
            .await
        ),
        105
    );
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
                ("_sid", &s.sid),
            ],
            &[("X-SYNO-TOKEN", &s.token)],
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
    assert_eq!(
        code(
            &t.call(
                &s,
                "SYNO.Chat.Post",
                "8",
                "create",
                &[("channel_id", "1"), ("message", &long)]
            )
            .await
        ),
        410
    );
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
    let v = t
        .call(
            &s,
            "SYNO.Chat.Post",
            "8",
            "list",
            &[("channel_id", "2"), ("thread_id", &root_s), ("limit", "10")],
        )
        .await;
    let msgs: Vec<&str> = data(&v)["posts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["message"].as_str().unwrap())
        .collect();
    assert_eq!(msgs, vec!["reply", "root"]);
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
    assert_eq!(
        code(
            &t.call(
                &s,
                "SYNO.Chat.Post",
                "8",
                "create",
                &[("channel_id", "2"), ("message", "x"), ("thread_id", &rid)]
            )
            .await
        ),
        117
    );
}
