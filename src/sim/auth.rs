//! SYNO.API.Info, SYNO.API.Auth (login/logout), SYNO.API.Auth.UIConfig, SYNO.API.Encryption.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::apis::APIS;
use super::rand;
use super::server::Cx;
use super::store::{Session, State};
use super::wire::{R, err, err_with, ok, ok_empty};

/// Window in which failed logins from one IP add up towards the auto-block.
const FAILURE_WINDOW: Duration = Duration::from_secs(600);

pub(crate) fn handle(api: &str, cx: &mut Cx, st: &mut State) -> R {
    match (api, cx.method) {
        ("SYNO.API.Info", "query") => info(cx, st.chat_stopped),
        ("SYNO.API.Auth", "login") => login(cx, st),
        ("SYNO.API.Auth", "logout") => logout(cx, st),
        ("SYNO.API.Auth", "token") => refresh_token(cx, st),
        ("SYNO.API.Auth.UIConfig", "get") => ui_config(cx),
        // Encryption is listed (the seed looks it up) but not implemented: clients must use HTTPS-style clear params.
        _ => Err(err(103)),
    }
}

fn info(cx: &mut Cx, chat_stopped: bool) -> R {
    let query = cx.a.opt_str("query").unwrap_or_else(|| "all".into());
    let wanted: Vec<&str> = query
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let all = wanted.iter().any(|w| w.eq_ignore_ascii_case("all"));
    let mut data = Map::new();
    for d in APIS {
        if (!all && !wanted.contains(&d.name)) || (chat_stopped && super::apis::is_chat(d.name)) {
            continue;
        }
        let mut e = json!({"path": d.path, "minVersion": d.min, "maxVersion": d.max});
        if d.json {
            e["requestFormat"] = json!("JSON");
        }
        data.insert(d.name.to_string(), e);
    }
    ok(Value::Object(data))
}

fn record_failure(cx: &Cx, st: &mut State) {
    let now = Instant::now();
    let list = st.login_failures.entry(cx.peer).or_default();
    list.retain(|t| now.duration_since(*t) <= FAILURE_WINDOW);
    list.push(now);
    let limit = cx.config.auto_block_failures;
    if limit > 0 && list.len() >= limit as usize {
        st.blocked.insert(cx.peer);
    }
}

fn login(cx: &mut Cx, st: &mut State) -> R {
    if st.blocked.contains(&cx.peer) {
        return Err(err(407));
    }
    // As sent: a password is never JSON-unquoted (`"secret"` is that password, quotes included).
    let account = cx.a.p.raw("account").unwrap_or_default().to_owned();
    let passwd = cx.a.p.raw("passwd").unwrap_or_default().to_owned();
    let Some(acc) = st
        .accounts
        .get(&account)
        .filter(|a| !account.is_empty() && a.password == passwd)
        .cloned()
    else {
        record_failure(cx, st);
        return Err(err(400));
    };
    if acc.disabled {
        return Err(err(401));
    }
    let want_device =
        cx.a.opt_str("enable_device_token")
            .is_some_and(|v| v == "yes" || v == "true");
    let mut device_id = None;
    if let Some(code) = &acc.otp {
        let trusted =
            cx.a.opt_str("device_id")
                .is_some_and(|d| !d.is_empty() && acc.devices.contains(&d));
        if !trusted {
            let given = cx.a.opt_str("otp_code").unwrap_or_default();
            if given.is_empty() {
                return Err(err_with(
                    403,
                    json!({"token": rand::alnum(32), "types": [{"type": "otp"}]}),
                ));
            }
            if given.trim() != code {
                record_failure(cx, st);
                return Err(err(404));
            }
            if want_device {
                let d = rand::sid_like();
                if let Some(a) = st.accounts.get_mut(&account) {
                    a.devices.push(d.clone());
                }
                device_id = Some(d);
            }
        }
    }
    if cx.config.kill_previous_session_on_relogin {
        let old: Vec<String> = st
            .sessions
            .values()
            .filter(|s| s.account == account)
            .map(|s| s.sid.clone())
            .collect();
        for sid in old {
            st.sessions.remove(&sid);
            st.killed.insert(sid, 107);
        }
    }
    let sid = rand::sid_like();
    let synotoken = st.next_synotoken.take().unwrap_or_else(rand::sid_like);
    // "with `sid` the id is returned in JSON; with `cookie` DSM sets the `id` cookie"
    // (upstream-protocol §3.1c). The reference says nothing of a login without `format`; the
    // seed's and PYDSM's cookie handling suggests the cookie.
    let cookie_format = cx.a.p.raw("format") != Some("sid");
    st.sessions.insert(
        sid.clone(),
        Session {
            sid: sid.clone(),
            synotoken: synotoken.clone(),
            account: account.clone(),
            last_used: Instant::now(),
            cookie_format,
        },
    );
    if cookie_format {
        cx.cookies
            .push(format!("id={sid}; max-age=604800; path=/; HttpOnly"));
    }
    let mut data = json!({"sid": sid, "is_portal_port": false, "account": account});
    if cx
        .a
        .opt_str("enable_syno_token")
        .is_some_and(|v| v == "yes" || v == "true")
    {
        data["synotoken"] = json!(synotoken);
    }
    if let Some(d) = device_id {
        data["device_id"] = json!(d);
    }
    ok(data)
}

fn logout(cx: &mut Cx, st: &mut State) -> R {
    // Without a sid DSM still answers success but ends nothing (zzarbi/synology#7).
    if let Some(sid) = cx.sid.clone() {
        st.sessions.remove(&sid);
        st.killed.remove(&sid);
    }
    ok_empty()
}

/// v6 `token`: re-issue the SynoToken of the presented session.
fn refresh_token(cx: &mut Cx, st: &mut State) -> R {
    let sid = cx.sid.clone().ok_or_else(|| err(119))?;
    let s = st.sessions.get_mut(&sid).ok_or_else(|| err(119))?;
    if s.last_used.elapsed() > cx.config.session_idle_timeout {
        return Err(err(119));
    }
    s.synotoken = rand::sid_like();
    s.last_used = Instant::now();
    ok(json!({"synotoken": s.synotoken}))
}

/// DSM 7 Noise pre-login step: the seed only needs HTTP 200 and an `_SSID` cookie holding a
/// 32-byte X25519 public key (any 32 bytes are a valid X25519 u-coordinate).
fn ui_config(cx: &mut Cx) -> R {
    let key = base64url(&rand::bytes(32));
    cx.cookies.push(format!("_SSID={key}; path=/"));
    ok(json!({}))
}

fn base64url(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}
