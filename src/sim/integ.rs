//! Integrations: incoming/outgoing webhooks, slash commands, bots, chatbots, and the
//! token-based SYNO.Chat.External. All session management calls are admin-only.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::chat::{check_message, file_reply, select_posts};
use super::server::Cx;
use super::store::{ChanKind, FileBlob, IntegKind, Integration, State, channel_of, now_ms};
use super::wire::{ApiErr, R, err, err_with, ok, ok_empty};

const METHODS: &[(&str, &[&str])] = &[
    (
        "SYNO.Chat.Webhook.Incoming",
        &["list", "create", "get", "set", "delete"],
    ),
    (
        "SYNO.Chat.Webhook.Outgoing",
        &["list", "create", "get", "set", "delete"],
    ),
    (
        "SYNO.Chat.Webhook.Slash",
        &["list", "create", "get", "set", "delete"],
    ),
    ("SYNO.Chat.Webhook.BuiltIn", &["list"]),
    ("SYNO.Chat.Webhook.Broadcast", &["list"]),
    ("SYNO.Chat.Bot", &["set", "delete", "enable", "disable"]),
    ("SYNO.Chat.Chatbot", &["list", "get", "set", "create"]),
    (
        "SYNO.Chat.External",
        &[
            "list",
            "incoming",
            "chatbot",
            "channel_list",
            "user_list",
            "post_list",
            "post_file_get",
        ],
    ),
];

/// Chatbots one user may own (N8N).
const MAX_CHATBOTS: usize = 5;

pub(crate) fn has_method(api: &str, method: &str) -> bool {
    METHODS
        .iter()
        .any(|(a, ms)| *a == api && ms.contains(&method))
}

pub(crate) fn handle(api: &str, cx: &mut Cx, st: &mut State) -> R {
    let kind = match api {
        "SYNO.Chat.Webhook.Incoming" => Some(IntegKind::Incoming),
        "SYNO.Chat.Webhook.Outgoing" => Some(IntegKind::Outgoing),
        "SYNO.Chat.Webhook.Slash" => Some(IntegKind::Slash),
        _ => None,
    };
    if api == "SYNO.Chat.External" {
        return external(cx, st);
    }
    // Everything else here manages integrations: admin only.
    cx.admin()?;
    match (api, cx.method, kind) {
        (_, "list", Some(k)) => webhook_list(st, k),
        (_, "create", Some(k)) => webhook_create(cx, st, k),
        (_, "get", Some(k)) => webhook_get(cx, st, k),
        (_, "set", Some(k)) => webhook_set(cx, st, k),
        (_, "delete", Some(k)) => webhook_delete(cx, st, k),
        ("SYNO.Chat.Webhook.BuiltIn", "list", _) => ok(json!({"webhook_builtins": builtins()})),
        ("SYNO.Chat.Webhook.Broadcast", "list", _) => broadcast_list(st),
        ("SYNO.Chat.Bot", "set", _) => bot_set(cx, st),
        ("SYNO.Chat.Bot", "delete", _) => bot_delete(cx, st),
        ("SYNO.Chat.Bot", "enable", _) => bot_enable(cx, st, true),
        ("SYNO.Chat.Bot", "disable", _) => bot_enable(cx, st, false),
        ("SYNO.Chat.Chatbot", "list", _) => chatbot_list(st),
        ("SYNO.Chat.Chatbot", "get", _) => chatbot_get(cx, st),
        ("SYNO.Chat.Chatbot", "set", _) => chatbot_set(cx, st),
        ("SYNO.Chat.Chatbot", "create", _) => chatbot_create(cx, st),
        _ => Err(err(103)),
    }
}

fn kind_str(k: IntegKind) -> &'static str {
    match k {
        IntegKind::Incoming => "incoming",
        IntegKind::Outgoing => "outgoing",
        IntegKind::Slash => "slash",
        IntegKind::Chatbot => "chatbot",
    }
}

fn integ_json(i: &Integration, deleted: bool) -> Value {
    json!({
        "user_id": i.user_id,
        "token": i.token,
        "name": i.name,
        "nickname": i.nickname,
        "channel_id": i.channel_id,
        "app_id": 0,
        "bot_type": kind_str(i.kind),
        "type": "bot",
        "create_at": i.create_at,
        "creator_id": i.creator_id,
        "deleted": deleted,
        "is_disabled": i.is_disabled,
        "icon_url": i.icon_url,
        "url": i.url,
        "trigger_word": i.trigger_word,
        "command": i.command,
        "description": i.description,
        "events": i.events,
    })
}

fn is_deleted(st: &State, uid: i64) -> bool {
    st.users.get(&uid).is_none_or(|u| u.deleted)
}

fn list_key(k: IntegKind) -> &'static str {
    match k {
        IntegKind::Incoming => "webhook_incomings",
        IntegKind::Outgoing => "webhook_outgoings",
        IntegKind::Slash => "webhook_slashes",
        IntegKind::Chatbot => "chatbots",
    }
}

fn webhook_list(st: &State, k: IntegKind) -> R {
    let list: Vec<Value> = st
        .integrations
        .values()
        .filter(|i| i.kind == k && !is_deleted(st, i.user_id))
        .map(|i| integ_json(i, false))
        .collect();
    let mut data = serde_json::Map::new();
    data.insert(list_key(k).into(), Value::Array(list));
    ok(Value::Object(data))
}

/// Both calling styles: the seed's `create(name, channel_id, ...)` and N8N's bare `create` + `set`.
/// Either way the new bot has no nickname and is disabled until `Bot.set` + `Bot.enable`.
fn webhook_create(cx: &mut Cx, st: &mut State, k: IntegKind) -> R {
    let me = cx.me()?.user_id;
    let name =
        cx.a.opt_str("name")
            .unwrap_or_else(|| format!("{} webhook", kind_str(k)));
    let channel_id = cx.a.opt_i64("channel_id")?.unwrap_or(0);
    if channel_id != 0 && !st.channels.contains_key(&channel_id) {
        return Err(err(117));
    }
    let command =
        cx.a.opt_str("command")
            .map(|c| c.trim().trim_start_matches('/').to_string());
    if k == IntegKind::Slash {
        let c = command.as_deref().unwrap_or("");
        if c.is_empty() || c.chars().any(char::is_whitespace) {
            return Err(if command.is_none() {
                err(114)
            } else {
                err(101)
            });
        }
    }
    let events = cx.a.opt_str_list("events")?;
    let uid = st.add_integration(k, &name, me);
    let i = st.integrations.get_mut(&uid).ok_or_else(|| err(117))?;
    i.channel_id = channel_id;
    i.url = cx.a.opt_str("url").unwrap_or_default();
    i.icon_url = cx.a.opt_str("icon_url").unwrap_or_default();
    i.trigger_word = cx.a.opt_str("trigger_word").unwrap_or_default();
    i.description = cx.a.opt_str("description").unwrap_or_default();
    i.command = command.unwrap_or_default();
    if let Some(e) = events {
        i.events = e;
    }
    ok(json!({"token": i.token, "user_id": uid}))
}

fn find_integ<'a>(cx: &Cx, st: &'a mut State, k: IntegKind) -> Result<&'a mut Integration, ApiErr> {
    // The seed deletes by `id`, N8N addresses bots by `user_id`.
    let id = match cx.a.opt_i64("user_id")? {
        Some(id) => id,
        None => cx.a.req_i64("id")?,
    };
    let deleted = is_deleted(st, id);
    st.integrations
        .get_mut(&id)
        .filter(|i| i.kind == k && !deleted)
        .ok_or_else(|| err(117))
}

fn webhook_get(cx: &mut Cx, st: &mut State, k: IntegKind) -> R {
    let i = find_integ(cx, st, k)?;
    let key = match k {
        IntegKind::Incoming => "webhook_incoming",
        IntegKind::Outgoing => "webhook_outgoing",
        _ => "webhook_slash",
    };
    let mut data = serde_json::Map::new();
    data.insert(key.into(), integ_json(i, false));
    ok(Value::Object(data))
}

fn webhook_set(cx: &mut Cx, st: &mut State, k: IntegKind) -> R {
    let channel_id = cx.a.opt_i64("channel_id")?;
    if let Some(c) = channel_id
        && c != 0
        && !st.channels.contains_key(&c)
    {
        return Err(err(117));
    }
    let events = cx.a.opt_str_list("events")?;
    let i = find_integ(cx, st, k)?;
    // Outgoing webhooks on "any channel" need a trigger word (HELP).
    let trigger =
        cx.a.opt_str("trigger_word")
            .unwrap_or_else(|| i.trigger_word.clone());
    if k == IntegKind::Outgoing && channel_id == Some(0) && trigger.trim().is_empty() {
        return Err(err(114));
    }
    if let Some(c) = channel_id {
        i.channel_id = c;
    }
    i.trigger_word = trigger;
    for (field, key) in [
        (&mut i.url, "url"),
        (&mut i.name, "name"),
        (&mut i.icon_url, "icon_url"),
        (&mut i.description, "description"),
    ] {
        if let Some(v) = cx.a.opt_str(key) {
            *field = v;
        }
    }
    if let Some(c) = cx.a.opt_str("command") {
        i.command = c.trim().trim_start_matches('/').to_string();
    }
    if let Some(e) = events {
        i.events = e;
    }
    ok_empty()
}

fn remove_integration(st: &mut State, uid: i64) {
    st.integrations.remove(&uid);
    if let Some(u) = st.users.get_mut(&uid) {
        u.deleted = true;
    }
    for ch in st.channels.values_mut() {
        ch.members.retain(|m| *m != uid);
    }
}

fn webhook_delete(cx: &mut Cx, st: &mut State, k: IntegKind) -> R {
    let uid = find_integ(cx, st, k)?.user_id;
    remove_integration(st, uid);
    ok_empty()
}

fn builtins() -> Vec<Value> {
    // The packages that ship Chat integrations; they cannot be changed through this API.
    vec![
        json!({"app_id": 1, "name": "Synology Calendar", "is_disabled": false}),
        json!({"app_id": 2, "name": "Synology Drive", "is_disabled": false}),
    ]
}

fn broadcast_list(st: &State) -> R {
    // Broadcast bots are outgoing integrations bound to no channel with no trigger word filter.
    let list: Vec<Value> = st
        .integrations
        .values()
        .filter(|i| i.kind == IntegKind::Outgoing && i.channel_id == 0 && i.trigger_word.is_empty())
        .map(|i| integ_json(i, false))
        .collect();
    ok(json!({"webhook_broadcasts": list}))
}

fn any_integ<'a>(cx: &Cx, st: &'a mut State) -> Result<&'a mut Integration, ApiErr> {
    let id = cx.a.req_i64("user_id")?;
    let deleted = is_deleted(st, id);
    st.integrations
        .get_mut(&id)
        .filter(|_| !deleted)
        .ok_or_else(|| err(117))
}

fn bot_set(cx: &mut Cx, st: &mut State) -> R {
    let nickname = cx.a.opt_str("nickname");
    if nickname.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(err(101));
    }
    let i = any_integ(cx, st)?;
    let uid = i.user_id;
    if let Some(n) = &nickname {
        i.nickname = n.clone();
    }
    if let Some(v) = cx.a.opt_str("icon_url") {
        i.icon_url = v;
    }
    if let (Some(n), Some(u)) = (nickname, st.users.get_mut(&uid)) {
        u.nickname = n;
    }
    ok_empty()
}

fn bot_delete(cx: &mut Cx, st: &mut State) -> R {
    let uid = any_integ(cx, st)?.user_id;
    remove_integration(st, uid);
    ok_empty()
}

fn bot_enable(cx: &mut Cx, st: &mut State, enable: bool) -> R {
    let i = any_integ(cx, st)?;
    i.is_disabled = !enable;
    let uid = i.user_id;
    if let Some(u) = st.users.get_mut(&uid) {
        u.is_disabled = !enable;
    }
    ok_empty()
}

fn chatbot_json(i: &Integration) -> Value {
    json!({
        "user_id": i.user_id,
        "nickname": i.nickname,
        "token": i.token,
        "app_id": 0,
        "bot_type": "chatbot",
        "create_at": i.create_at,
        "creator_id": i.creator_id,
        "is_disabled": i.is_disabled,
        "url": i.url,
        "chatbot_props": {"hide_from_user": i.hide_from_user, "purpose": i.purpose, "welcome_note": i.welcome_note},
    })
}

fn chatbot_list(st: &State) -> R {
    let list: Vec<Value> = st
        .integrations
        .values()
        .filter(|i| i.kind == IntegKind::Chatbot && !is_deleted(st, i.user_id))
        .map(chatbot_json)
        .collect();
    ok(json!({"chatbots": list}))
}

fn chatbot_of<'a>(cx: &Cx, st: &'a mut State) -> Result<&'a mut Integration, ApiErr> {
    let id = cx.a.req_i64("user_id")?;
    let deleted = is_deleted(st, id);
    // Seed docstring: 105 when user_id is not a valid chatbot.
    st.integrations
        .get_mut(&id)
        .filter(|i| i.kind == IntegKind::Chatbot && !deleted)
        .ok_or_else(|| err(105))
}

fn chatbot_get(cx: &mut Cx, st: &mut State) -> R {
    let i = chatbot_of(cx, st)?;
    ok(json!({"chatbot": chatbot_json(i)}))
}

fn chatbot_set(cx: &mut Cx, st: &mut State) -> R {
    let hide = cx.a.opt_bool("hide_from_user")?;
    let i = chatbot_of(cx, st)?;
    for (field, key) in [
        (&mut i.url, "url"),
        (&mut i.purpose, "purpose"),
        (&mut i.welcome_note, "welcome_note"),
    ] {
        if let Some(v) = cx.a.opt_str(key) {
            *field = v;
        }
    }
    if let Some(h) = hide {
        i.hide_from_user = h;
    }
    ok_empty()
}

/// Chatbot.create {nickname}: unlike webhooks it is named at creation, so it starts enabled.
fn chatbot_create(cx: &mut Cx, st: &mut State) -> R {
    let me = cx.me()?.user_id;
    let nickname = cx.a.req_str("nickname")?;
    if nickname.trim().is_empty() {
        return Err(err(101));
    }
    let owned = st
        .integrations
        .values()
        .filter(|i| {
            i.kind == IntegKind::Chatbot && i.creator_id == me && !is_deleted(st, i.user_id)
        })
        .count();
    if owned >= MAX_CHATBOTS {
        return Err(err(117));
    }
    let uid = st.add_integration(IntegKind::Chatbot, &nickname, me);
    let i = st.integrations.get_mut(&uid).ok_or_else(|| err(117))?;
    i.nickname = nickname;
    i.is_disabled = false;
    i.url = cx.a.opt_str("url").unwrap_or_default();
    ok(json!({"token": i.token, "user_id": uid}))
}

// ---------------------------------------------------------------- SYNO.Chat.External

fn external(cx: &mut Cx, st: &mut State) -> R {
    if cx.method == "list" {
        // Session variant (admin): every integration.
        cx.admin()?;
        let list: Vec<Value> = st
            .integrations
            .values()
            .filter(|i| !is_deleted(st, i.user_id))
            .map(|i| integ_json(i, false))
            .collect();
        return ok(json!({"externals": list}));
    }
    let token = cx.a.req_str("token")?;
    let integ = st.legal_integration(token.trim()).ok_or_else(|| err(404))?;
    let (uid, kind) = (integ.user_id, integ.kind);
    match cx.method {
        "incoming" if kind == IntegKind::Incoming => ext_incoming(cx, st, uid),
        "chatbot" if kind == IntegKind::Chatbot => ext_chatbot(cx, st, uid),
        // Read methods are for bot tokens; webhook tokens get 404 (seed).
        "channel_list" if kind == IntegKind::Chatbot => {
            let list: Vec<Value> = st
                .channels
                .values()
                .filter(|c| c.members.contains(&uid))
                .map(|c| {
                    json!({"channel_id": c.channel_id, "name": c.name, "type": c.kind.as_str(), "members": c.members, "creator_id": c.creator_id})
                })
                .collect();
            ok(json!({"channels": list}))
        }
        "user_list" if kind == IntegKind::Chatbot => {
            let users: Vec<Value> = st
                .users
                .values()
                .filter(|u| !u.deleted)
                .map(|u| st.user_json(u))
                .collect();
            ok(json!({"users": users}))
        }
        "post_list" if kind == IntegKind::Chatbot => {
            let channel_id = cx.a.req_i64("channel_id")?;
            if !st
                .channels
                .get(&channel_id)
                .is_some_and(|c| c.members.contains(&uid))
            {
                return Err(err(401));
            }
            let (posts, total) = select_posts(cx, st, channel_id)?;
            ok(json!({"posts": posts, "total": total}))
        }
        "post_file_get" if kind == IntegKind::Chatbot => {
            let post_id = cx.a.req_i64("post_id")?;
            if !st
                .channels
                .get(&channel_of(post_id))
                .is_some_and(|c| c.members.contains(&uid))
            {
                return Err(err(401));
            }
            let p = st.posts.get(&post_id).ok_or_else(|| err(117))?;
            file_reply(p)
        }
        _ => Err(err(404)),
    }
}

/// `payload` form field, or the raw request body when it is JSON (HELP).
fn payload(cx: &Cx) -> Result<serde_json::Map<String, Value>, super::wire::ApiErr> {
    let raw = match cx.a.p.raw("payload") {
        Some(v) => v.to_string(),
        None => {
            let body = String::from_utf8_lossy(&cx.a.p.raw_body).trim().to_string();
            if body.starts_with('{') {
                body
            } else {
                return Err(err_with(
                    120,
                    json!({"name": "payload", "reason": "required"}),
                ));
            }
        }
    };
    if raw.trim().is_empty() {
        // FHEM: empty payload -> 101.
        return Err(err(101));
    }
    match serde_json::from_str::<Value>(&raw) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(err(117)),
    }
}

struct Outgoing {
    text: String,
    file: Option<FileBlob>,
}

/// Validates text/file_url and applies the size/rate limits shared by incoming and chatbot.
fn outgoing_message(
    cx: &Cx,
    st: &mut State,
    uid: i64,
    m: &serde_json::Map<String, Value>,
) -> Result<Outgoing, ApiErr> {
    let text = match m.get("text") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(err(117)),
    };
    let file = match m.get("file_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) => {
            // The NAS would download the URL; the simulator records its name without fetching.
            let parsed = url::Url::parse(u).map_err(|_| err(117))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(err(117));
            }
            let name = parsed
                .path_segments()
                .and_then(|mut s| s.next_back().map(str::to_string))
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "file".into());
            Some(FileBlob {
                name,
                content_type: "application/octet-stream".into(),
                data: bytes::Bytes::new(),
            })
        }
        Some(_) => return Err(err(117)),
    };
    if text.trim().is_empty() && file.is_none() {
        return Err(err(117));
    }
    check_message(cx, &text)?;
    let rate = cx.config.external_rate_per_sec as usize;
    let i = st.integrations.get_mut(&uid).ok_or_else(|| err(404))?;
    let now = Instant::now();
    while i
        .sends
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
    {
        i.sends.pop_front();
    }
    if i.sends.len() >= rate {
        return Err(err(411));
    }
    i.sends.push_back(now);
    Ok(Outgoing { text, file })
}

fn store_post(st: &mut State, channel_id: i64, uid: i64, out: &Outgoing) -> Option<i64> {
    let post_id = st.add_post(channel_id, uid, &out.text, 0, now_ms())?;
    if let (Some(f), Some(p)) = (&out.file, st.posts.get_mut(&post_id)) {
        p.kind = "file".into();
        p.file = Some(f.clone());
    }
    Some(post_id)
}

fn ext_incoming(cx: &mut Cx, st: &mut State, uid: i64) -> R {
    let channel_id = st.integrations.get(&uid).map(|i| i.channel_id).unwrap_or(0);
    if !st.channels.contains_key(&channel_id) {
        // A webhook not bound to a channel is "not legal".
        return Err(err(404));
    }
    let m = payload(cx)?;
    let out = outgoing_message(cx, st, uid, &m)?;
    store_post(st, channel_id, uid, &out).ok_or_else(|| err(117))?;
    ok_empty()
}

fn ext_chatbot(cx: &mut Cx, st: &mut State, bot: i64) -> R {
    let m = payload(cx)?;
    // In the payload, as JSON integers (upstream-protocol's External table:
    // `payload={"text":…, "user_ids":[int,…]}`); not beside it, not as strings.
    let ids: Vec<i64> = match m.get("user_ids") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_i64().ok_or_else(|| err(117)))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(err(117)),
        None => {
            return Err(err_with(
                120,
                json!({"name": "user_ids", "reason": "required"}),
            ));
        }
    };
    if ids.is_empty() {
        return Err(err_with(
            120,
            json!({"name": "user_ids", "reason": "required"}),
        ));
    }
    let out = outgoing_message(cx, st, bot, &m)?;
    let mut succ = serde_json::Map::new();
    let mut fail = serde_json::Map::new();
    for uid in ids {
        let human = st
            .users
            .get(&uid)
            .is_some_and(|u| !u.deleted && u.kind == super::store::UserKind::User);
        if !human {
            fail.insert(uid.to_string(), json!("user not found"));
            continue;
        }
        let cid = st.chatbot_channel(bot, uid);
        match store_post(st, cid, bot, &out) {
            Some(pid) => {
                succ.insert(uid.to_string(), json!(pid));
            }
            None => {
                fail.insert(uid.to_string(), json!("post failed"));
            }
        }
    }
    ok(json!({"succ": {"user_id_post_map": succ}, "fail": fail}))
}

/// For `events`: integrations a UI post in `channel_id` triggers, with their form fields.
/// (url, form fields, reply target) for one outbound delivery.
pub(crate) type Trigger = (String, Vec<(String, String)>, Option<(i64, i64)>);

pub(crate) fn triggered_by(st: &State, post_id: i64) -> Vec<Trigger> {
    let Some(p) = st.posts.get(&post_id) else {
        return Vec::new();
    };
    let Some(ch) = st.channels.get(&p.channel_id) else {
        return Vec::new();
    };
    let Some(user) = st.users.get(&p.creator_id) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let base = |token: &str| -> Vec<(String, String)> {
        vec![
            ("token".into(), token.to_string()),
            ("channel_id".into(), ch.channel_id.to_string()),
            ("channel_name".into(), ch.name.clone()),
            ("channel_type".into(), ch_type_num(ch.kind).to_string()),
            ("user_id".into(), user.user_id.to_string()),
            ("username".into(), user.nickname.clone()),
            ("post_id".into(), p.post_id.to_string()),
            ("thread_id".into(), p.thread_id.to_string()),
            ("timestamp".into(), p.create_at.to_string()),
            ("text".into(), p.message.clone()),
        ]
    };
    for i in st.integrations.values() {
        if i.is_disabled || i.url.is_empty() || is_deleted(st, i.user_id) {
            continue;
        }
        match i.kind {
            IntegKind::Outgoing => {
                let channel_ok = i.channel_id == 0 || i.channel_id == ch.channel_id;
                let trig = i.trigger_word.trim();
                let trigger_ok = trig.is_empty() || p.message.starts_with(trig);
                // A trigger word is mandatory for "any channel" webhooks.
                if channel_ok && trigger_ok && !(i.channel_id == 0 && trig.is_empty()) {
                    let mut f = base(&i.token);
                    f.push(("trigger_word".into(), trig.to_string()));
                    out.push((i.url.clone(), f, Some((ch.channel_id, i.user_id))));
                }
            }
            IntegKind::Slash => {
                let cmd = format!("/{}", i.command);
                let hit = p.message == cmd || p.message.starts_with(&format!("{cmd} "));
                if !i.command.is_empty()
                    && hit
                    && (i.channel_id == 0 || i.channel_id == ch.channel_id)
                {
                    // Slash replies are only shown to the invoker, so nothing is posted back.
                    out.push((i.url.clone(), base(&i.token), None));
                }
            }
            IntegKind::Chatbot => {
                if ch.kind == ChanKind::Chatbot
                    && ch.members.contains(&i.user_id)
                    && p.creator_id != i.user_id
                {
                    out.push((
                        i.url.clone(),
                        base(&i.token),
                        Some((ch.channel_id, i.user_id)),
                    ));
                }
            }
            IntegKind::Incoming => {}
        }
    }
    out
}

fn ch_type_num(k: ChanKind) -> i64 {
    match k {
        ChanKind::Public => 1,
        ChanKind::Private => 2,
        ChanKind::Anonymous => 3,
        ChanKind::Chatbot => 4,
        ChanKind::Synobot => 5,
    }
}
