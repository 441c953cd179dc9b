//! Session-authenticated SYNO.Chat.* APIs (channels, users, posts and their satellites).
//!
//! Error convention (Chat has no official table): an id that does not exist or is not
//! visible to the caller -> 117; visible but not allowed (not a member, not the owner) -> 105.

use serde_json::{Map, Value, json};

use super::server::Cx;
use super::store::{
    ChanKind, Channel, FileBlob, Post, State, Vote, VoteChoice, channel_of, now_ms,
};
use super::wire::{ApiErr, R, Reply, err, ok, ok_empty};

const METHODS: &[(&str, &[&str])] = &[
    (
        "SYNO.Chat.Channel",
        &["list", "get", "close", "archive", "view"],
    ),
    (
        "SYNO.Chat.Channel.Named",
        &["create", "join", "disjoin", "invite", "kick"],
    ),
    ("SYNO.Chat.Channel.Anonymous", &["initiate"]),
    ("SYNO.Chat.Channel.Member", &["get"]),
    ("SYNO.Chat.Channel.Preference", &["get", "set"]),
    ("SYNO.Chat.User", &["list", "get"]),
    ("SYNO.Chat.User.Status", &["get"]),
    ("SYNO.Chat.User.Avatar", &["get"]),
    ("SYNO.Chat.User.Preference", &["get", "set"]),
    (
        "SYNO.Chat.Post",
        &[
            "list",
            "create",
            "get",
            "set",
            "delete",
            "search",
            "pin",
            "unpin",
            "thread_list",
            "forward",
        ],
    ),
    (
        "SYNO.Chat.Post.Vote",
        &[
            "create",
            "get_choices",
            "vote",
            "close",
            "delete",
            "set",
            "create_option",
        ],
    ),
    ("SYNO.Chat.Post.File", &["get", "thumbnail"]),
    ("SYNO.Chat.Post.Attachment", &["list"]),
    ("SYNO.Chat.Post.Reaction", &["set", "delete"]),
    ("SYNO.Chat.Post.Reminder", &["get", "set", "delete", "list"]),
    (
        "SYNO.Chat.Post.Schedule",
        &["list", "create", "set", "delete"],
    ),
    ("SYNO.Chat.Sticker", &["list"]),
    ("SYNO.Chat.Admin.Setting", &["get", "set"]),
    ("SYNO.Chat.App", &["get"]),
    ("SYNO.Chat.Misc", &["get"]),
];

/// The sticker catalogue (names usable with Post.Reaction and `type=sticker` posts).
const STICKERS: &[(&str, &str)] = &[
    ("grinning", "emoji"),
    ("joy", "emoji"),
    ("heart", "emoji"),
    ("thumbsup", "emoji"),
    ("thumbsdown", "emoji"),
    ("clap", "emoji"),
    ("tada", "emoji"),
    ("eyes", "emoji"),
    ("business_man_01", "business"),
    ("business_woman_01", "business"),
];

pub(crate) fn has_method(api: &str, method: &str) -> bool {
    METHODS
        .iter()
        .any(|(a, ms)| *a == api && ms.contains(&method))
}

pub(crate) fn handle(api: &str, cx: &mut Cx, st: &mut State) -> R {
    match (api, cx.method) {
        ("SYNO.Chat.Channel", "list") => channel_list(cx, st),
        ("SYNO.Chat.Channel", "get") => channel_get(cx, st),
        ("SYNO.Chat.Channel", "close") => channel_close(cx, st),
        ("SYNO.Chat.Channel", "archive") => channel_archive(cx, st),
        ("SYNO.Chat.Channel", "view") => channel_view(cx, st),
        ("SYNO.Chat.Channel.Named", "create") => named_create(cx, st),
        ("SYNO.Chat.Channel.Named", "join") => named_join(cx, st),
        ("SYNO.Chat.Channel.Named", "disjoin") => named_disjoin(cx, st),
        ("SYNO.Chat.Channel.Named", "invite") => named_invite(cx, st),
        ("SYNO.Chat.Channel.Named", "kick") => named_kick(cx, st),
        ("SYNO.Chat.Channel.Anonymous", "initiate") => anonymous_initiate(cx, st),
        ("SYNO.Chat.Channel.Member", "get") => member_get(cx, st),
        ("SYNO.Chat.Channel.Preference", "get") => chan_pref(cx, st, false),
        ("SYNO.Chat.Channel.Preference", "set") => chan_pref(cx, st, true),
        ("SYNO.Chat.User", "list") => user_list(cx, st),
        ("SYNO.Chat.User", "get") => user_get(cx, st),
        ("SYNO.Chat.User.Status", "get") => user_status(cx, st),
        ("SYNO.Chat.User.Avatar", "get") => user_avatar(cx, st),
        ("SYNO.Chat.User.Preference", "get") => user_pref(cx, st, false),
        ("SYNO.Chat.User.Preference", "set") => user_pref(cx, st, true),
        ("SYNO.Chat.Post", "list") => post_list(cx, st),
        ("SYNO.Chat.Post", "create") => post_create(cx, st),
        ("SYNO.Chat.Post", "get") => post_get(cx, st),
        ("SYNO.Chat.Post", "set") => post_set(cx, st),
        ("SYNO.Chat.Post", "delete") => post_delete(cx, st),
        ("SYNO.Chat.Post", "search") => post_search(cx, st),
        ("SYNO.Chat.Post", "pin") => post_pin(cx, st, true),
        ("SYNO.Chat.Post", "unpin") => post_pin(cx, st, false),
        ("SYNO.Chat.Post", "thread_list") => thread_list(cx, st),
        ("SYNO.Chat.Post", "forward") => post_forward(cx, st),
        ("SYNO.Chat.Post.Vote", "create") => vote_create(cx, st),
        ("SYNO.Chat.Post.Vote", "get_choices") => vote_get_choices(cx, st),
        ("SYNO.Chat.Post.Vote", "vote") => vote_vote(cx, st),
        ("SYNO.Chat.Post.Vote", "close" | "delete") => vote_state(cx, st),
        ("SYNO.Chat.Post.Vote", "set") => vote_set(cx, st),
        ("SYNO.Chat.Post.Vote", "create_option") => vote_create_option(cx, st),
        ("SYNO.Chat.Post.File", "get" | "thumbnail") => post_file(cx, st),
        ("SYNO.Chat.Post.Attachment", "list") => attachment_list(cx, st),
        ("SYNO.Chat.Post.Reaction", "set") => reaction(cx, st, true),
        ("SYNO.Chat.Post.Reaction", "delete") => reaction(cx, st, false),
        ("SYNO.Chat.Post.Reminder", "get") => reminder_get(cx, st),
        ("SYNO.Chat.Post.Reminder", "set") => reminder_set(cx, st),
        ("SYNO.Chat.Post.Reminder", "delete") => reminder_delete(cx, st),
        ("SYNO.Chat.Post.Reminder", "list") => reminder_list(cx, st),
        ("SYNO.Chat.Post.Schedule", "list") => schedule_list(cx, st),
        ("SYNO.Chat.Post.Schedule", "create") => schedule_create(cx, st),
        ("SYNO.Chat.Post.Schedule", "set") => schedule_set(cx, st),
        ("SYNO.Chat.Post.Schedule", "delete") => schedule_delete(cx, st),
        ("SYNO.Chat.Sticker", "list") => sticker_list(),
        ("SYNO.Chat.Admin.Setting", "get") => admin_get(cx, st),
        ("SYNO.Chat.Admin.Setting", "set") => admin_set(cx, st),
        ("SYNO.Chat.App", "get") => app_get(cx, st),
        ("SYNO.Chat.Misc", "get") => misc_get(cx, st),
        _ => Err(err(103)),
    }
}

// ---------------------------------------------------------------- access helpers

/// Public channels can be read by everybody; others only by members.
pub(crate) fn can_see(ch: &Channel, uid: i64) -> bool {
    ch.kind == ChanKind::Public || ch.members.contains(&uid)
}

pub(crate) fn visible_channel(st: &State, channel_id: i64, uid: i64) -> Result<&Channel, ApiErr> {
    st.channels
        .get(&channel_id)
        .filter(|c| can_see(c, uid))
        .ok_or_else(|| err(117))
}

pub(crate) fn member_channel(st: &State, channel_id: i64, uid: i64) -> Result<&Channel, ApiErr> {
    let ch = visible_channel(st, channel_id, uid)?;
    if ch.members.contains(&uid) {
        Ok(ch)
    } else {
        Err(err(105))
    }
}

/// A post the caller may read.
pub(crate) fn visible_post(st: &State, post_id: i64, uid: i64) -> Result<&Post, ApiErr> {
    visible_channel(st, channel_of(post_id), uid)?;
    st.posts
        .get(&post_id)
        .filter(|p| p.kind != "system")
        .ok_or_else(|| err(117))
}

fn me(cx: &Cx) -> Result<i64, ApiErr> {
    Ok(cx.me()?.user_id)
}

fn channel_mut(st: &mut State, id: i64) -> Result<&mut Channel, ApiErr> {
    st.channels.get_mut(&id).ok_or_else(|| err(117))
}

// ---------------------------------------------------------------- channels

fn channel_list(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let offset = cx.a.opt_i64("offset")?.unwrap_or(0).max(0) as usize;
    let limit =
        cx.a.opt_i64("limit")?
            .filter(|l| *l > 0)
            .map(|l| l as usize);
    let channels: Vec<Value> = st
        .channels
        .values()
        .filter(|c| can_see(c, me) && !c.closed_for.contains(&me))
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .map(|c| st.channel_json(c, me))
        .collect();
    ok(json!({"channels": channels}))
}

fn channel_get(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let ch = visible_channel(st, cx.a.req_i64("channel_id")?, me)?;
    ok(json!({"channel": st.channel_json(ch, me)}))
}

/// Closes the conversation for the caller only; it comes back with the next post.
fn channel_close(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let id = cx.a.req_i64("channel_id")?;
    visible_channel(st, id, me)?;
    channel_mut(st, id)?.closed_for.insert(me);
    ok_empty()
}

fn channel_archive(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let admin = cx.me()?.admin;
    let id = cx.a.req_i64("channel_id")?;
    let ch = member_channel(st, id, me)?;
    if ch.creator_id != me && !admin {
        return Err(err(105));
    }
    channel_mut(st, id)?.archived = true;
    ok_empty()
}

fn channel_view(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let id = cx.a.req_i64("channel_id")?;
    let at = cx.a.opt_i64("last_view_at")?.unwrap_or_else(now_ms);
    visible_channel(st, id, me)?;
    channel_mut(st, id)?.last_view.insert(me, at);
    ok_empty()
}

fn named_create(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    // N8N: passing member_ids to create answers 119.
    if cx.a.p.raw("member_ids").is_some() {
        return Err(err(119));
    }
    let name = cx.a.req_json_str("name")?;
    let kind = match cx.a.opt_str("type").as_deref() {
        None | Some("private") => ChanKind::Private,
        Some("public") => ChanKind::Public,
        Some(_) => return Err(err(101)),
    };
    // Names with spaces are "record not valid" (N8N).
    if name.trim().is_empty() || name.chars().any(char::is_whitespace) {
        return Err(err(152));
    }
    if cx.a.opt_bool("encrypted")?.unwrap_or(false) {
        // Public channels cannot be encrypted; nobody here has an E2E keypair.
        return Err(err(if kind == ChanKind::Public { 422 } else { 408 }));
    }
    let key = st_admin_flag(
        st,
        if kind == ChanKind::Public {
            "allow_create_public_channel"
        } else {
            "allow_create_private_channel"
        },
    );
    if !key && !cx.me()?.admin {
        return Err(err(105));
    }
    let id = st.add_channel(&name, kind, me, vec![me]);
    let ch = st.channels.get(&id).ok_or_else(|| err(117))?;
    let mut data = st.channel_json(ch, me);
    data["auto_join"] = json!(true);
    ok(data)
}

fn st_admin_flag(st: &State, key: &str) -> bool {
    st.admin_settings
        .get(key)
        .and_then(Value::as_bool)
        .unwrap_or(true)
}

fn named_join(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let id = cx.a.req_i64("channel_id")?;
    let ch = st.channels.get(&id).ok_or_else(|| err(117))?;
    if ch.members.contains(&me) {
        // Already a member (the seed treats this as success).
        return Err(err(117));
    }
    if ch.kind != ChanKind::Public {
        return Err(err(105));
    }
    let ch = channel_mut(st, id)?;
    ch.members.push(me);
    ch.closed_for.remove(&me);
    ok_empty()
}

fn named_disjoin(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let id = cx.a.req_i64("channel_id")?;
    let ch = st.channels.get(&id).ok_or_else(|| err(117))?;
    if !ch.members.contains(&me) || !matches!(ch.kind, ChanKind::Public | ChanKind::Private) {
        return Err(err(117));
    }
    // The last member leaving orphans the channel; nothing else happens (seed note).
    channel_mut(st, id)?.members.retain(|m| *m != me);
    ok_empty()
}

fn named_invite(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let id = cx.a.req_i64("channel_id")?;
    let users = cx.a.opt_ids("user_ids")?.ok_or_else(|| err(114))?;
    let ch = member_channel(st, id, me)?;
    if !matches!(ch.kind, ChanKind::Public | ChanKind::Private) {
        return Err(err(117));
    }
    if users
        .iter()
        .any(|u| st.users.get(u).is_none_or(|u| u.deleted))
    {
        return Err(err(117));
    }
    let ch = channel_mut(st, id)?;
    for u in users {
        if !ch.members.contains(&u) {
            ch.members.push(u);
        }
    }
    ok_empty()
}

fn named_kick(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let admin = cx.me()?.admin;
    let id = cx.a.req_i64("channel_id")?;
    let users = cx.a.opt_ids("user_ids")?.ok_or_else(|| err(114))?;
    let ch = member_channel(st, id, me)?;
    if ch.creator_id != me && !admin {
        return Err(err(105));
    }
    channel_mut(st, id)?.members.retain(|m| !users.contains(m));
    ok_empty()
}

/// Opens (or reopens) the DM / group conversation with `user_ids`.
fn anonymous_initiate(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let ids = cx.a.opt_ids("user_ids")?.ok_or_else(|| err(114))?;
    let others: Vec<i64> = ids.iter().copied().filter(|u| *u != me).collect();
    if others.is_empty() {
        // "you cannot talk to yourself" (N8N).
        return Err(err(400));
    }
    if ids.contains(&me) {
        // N8N saw [other, self] answer 117.
        return Err(err(117));
    }
    if cx.a.opt_bool("encrypted")?.unwrap_or(false) {
        return Err(err(408));
    }
    if others
        .iter()
        .any(|u| st.users.get(u).is_none_or(|u| u.deleted))
    {
        return Err(err(117));
    }
    let mut members = vec![me];
    for u in others {
        if !members.contains(&u) {
            members.push(u);
        }
    }
    let mut wanted = members.clone();
    wanted.sort_unstable();
    let existing = st.channels.values().find(|c| {
        let mut m = c.members.clone();
        m.sort_unstable();
        c.kind == ChanKind::Anonymous && m == wanted
    });
    let id = match existing {
        Some(c) => c.channel_id,
        None => st.add_channel("", ChanKind::Anonymous, me, members),
    };
    channel_mut(st, id)?.closed_for.remove(&me);
    let ch = st.channels.get(&id).ok_or_else(|| err(117))?;
    let mut data = st.channel_json(ch, me);
    data["channel"] = st.channel_json(ch, me);
    ok(data)
}

fn member_get(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let ch = visible_channel(st, cx.a.req_i64("channel_id")?, me)?;
    let broken: Vec<i64> = ch
        .members
        .iter()
        .copied()
        .filter(|m| !st.users.contains_key(m))
        .collect();
    let ok_ids: Vec<i64> = ch
        .members
        .iter()
        .copied()
        .filter(|m| st.users.contains_key(m))
        .collect();
    ok(json!({"user_ids": ok_ids, "broken_user_ids": broken}))
}

fn default_chan_prefs() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("notification".into(), json!("all"));
    m.insert("is_muted".into(), json!(false));
    m.insert("is_favorite".into(), json!(false));
    m.insert("is_hidden".into(), json!(false));
    m
}

/// Applies the known keys of `defaults` from the request to `target`, keeping their JSON type.
fn merge_known(
    cx: &Cx,
    defaults: &Map<String, Value>,
    target: &mut Map<String, Value>,
) -> Result<(), ApiErr> {
    for (k, v) in defaults {
        let new = match v {
            Value::Bool(_) => cx.a.opt_bool(k)?.map(Value::Bool),
            Value::Number(_) => cx.a.opt_i64(k)?.map(|n| json!(n)),
            _ => cx.a.opt_str(k).map(Value::String),
        };
        if let Some(n) = new {
            target.insert(k.clone(), n);
        }
    }
    Ok(())
}

fn chan_pref(cx: &mut Cx, st: &mut State, set: bool) -> R {
    let me = me(cx)?;
    let id = cx.a.req_i64("channel_id")?;
    visible_channel(st, id, me)?;
    let defaults = default_chan_prefs();
    let prefs = st
        .chan_prefs
        .entry((me, id))
        .or_insert_with(default_chan_prefs);
    if set {
        merge_known(cx, &defaults, prefs)?;
        return ok_empty();
    }
    let mut data = prefs.clone();
    data.insert("channel_id".into(), json!(id));
    ok(Value::Object(data))
}

// ---------------------------------------------------------------- users

fn user_list(_cx: &mut Cx, st: &mut State) -> R {
    let users: Vec<Value> = st.users.values().map(|u| st.user_json(u)).collect();
    ok(json!({"users": users}))
}

fn user_get(cx: &mut Cx, st: &mut State) -> R {
    let uid = cx.a.req_i64("user_id")?;
    let u = st.users.get(&uid).ok_or_else(|| err(117))?;
    ok(json!({"user": st.user_json(u)}))
}

fn user_status(cx: &mut Cx, st: &mut State) -> R {
    let uid = cx.a.opt_i64("user_id")?.unwrap_or(me(cx)?);
    let u = st.users.get(&uid).ok_or_else(|| err(117))?;
    let j = st.user_json(u);
    ok(json!({"user_id": uid, "status": j["status"]}))
}

fn user_avatar(cx: &mut Cx, st: &mut State) -> R {
    let uid = cx.a.opt_i64("user_id")?.unwrap_or(me(cx)?);
    let u = st.users.get(&uid).ok_or_else(|| err(117))?;
    let h = (u.user_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let rgb = [
        (h >> 16) as u8 / 2 + 40,
        (h >> 24) as u8 / 2 + 40,
        (h >> 32) as u8 / 2 + 40,
    ];
    Ok(Reply::Binary {
        content_type: "image/png".into(),
        filename: format!("{}.png", u.username),
        data: super::png::avatar(64, rgb).into(),
    })
}

fn default_user_prefs() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("language".into(), json!("def"));
    m.insert("timezone".into(), json!("UTC"));
    m.insert("enter_to_send".into(), json!(true));
    m.insert("notification_sound".into(), json!(true));
    m.insert("desktop_notification".into(), json!(true));
    m.insert("show_preview".into(), json!(true));
    m
}

fn user_pref(cx: &mut Cx, st: &mut State, set: bool) -> R {
    let me = me(cx)?;
    let defaults = default_user_prefs();
    let prefs = st.user_prefs.entry(me).or_insert_with(default_user_prefs);
    if set {
        merge_known(cx, &defaults, prefs)?;
        return ok_empty();
    }
    ok(Value::Object(prefs.clone()))
}

// ---------------------------------------------------------------- posts

/// Selects posts like Post.list / External post_list. Listing order is newest first.
pub(crate) fn select_posts(
    cx: &Cx,
    st: &State,
    channel_id: i64,
) -> Result<(Vec<Value>, usize), ApiErr> {
    let thread_id = cx.a.opt_i64("thread_id")?.unwrap_or(0);
    let set: Vec<&Post> = if thread_id != 0 {
        let root = st
            .posts
            .get(&thread_id)
            .filter(|p| p.channel_id == channel_id && !p.is_reply())
            .ok_or_else(|| err(117))?;
        std::iter::once(root)
            .chain(
                st.channel_posts(channel_id)
                    .filter(|p| p.thread_id == thread_id && p.is_reply()),
            )
            .filter(|p| p.kind != "system")
            .collect()
    } else {
        st.channel_posts(channel_id)
            .filter(|p| !p.is_reply() && p.kind != "system")
            .collect()
    };
    let total = set.len();
    let anchor = cx.a.opt_i64("post_id")?;
    let prev = cx.a.opt_i64("prev_count")?;
    let next = cx.a.opt_i64("next_count")?;
    let mut picked: Vec<&Post> = if anchor.is_some() || prev.is_some() || next.is_some() {
        // Anchor mode: `prev` posts before the anchor, the anchor itself, `next` posts after it.
        // Without an anchor, prev_count counts back from the newest and next_count from the oldest.
        let prev = prev.unwrap_or(0).max(0) as usize;
        let next = next.unwrap_or(0).max(0) as usize;
        let anchor = anchor.unwrap_or(if prev > 0 { i64::MAX } else { i64::MIN });
        let before: Vec<&Post> = set.iter().copied().filter(|p| p.post_id < anchor).collect();
        let mut out: Vec<&Post> = before[before.len().saturating_sub(prev)..].to_vec();
        out.extend(set.iter().copied().filter(|p| p.post_id == anchor));
        out.extend(
            set.iter()
                .copied()
                .filter(|p| p.post_id > anchor)
                .take(next),
        );
        out
    } else if st.post_list_ignores_offset {
        set[set.len().saturating_sub(10)..].to_vec()
    } else {
        let offset = cx.a.opt_i64("offset")?.unwrap_or(0).max(0) as usize;
        let limit = cx.a.opt_i64("limit")?.unwrap_or(50).max(0) as usize;
        set.iter()
            .rev()
            .skip(offset)
            .take(limit)
            .copied()
            .rev()
            .collect()
    };
    picked.reverse();
    Ok((picked.into_iter().map(Post::to_json).collect(), total))
}

fn post_list(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let channel_id = cx.a.req_i64("channel_id")?;
    visible_channel(st, channel_id, me)?;
    let (posts, total) = select_posts(cx, st, channel_id)?;
    ok(json!({"posts": posts, "total": total}))
}

/// Checks shared by every way of creating a text post.
pub(crate) fn check_message(cx: &Cx, message: &str) -> Result<(), ApiErr> {
    if message.chars().count() > cx.config.max_message_len {
        return Err(err(410));
    }
    Ok(())
}

fn post_create(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let channel_id = cx.a.req_i64("channel_id")?;
    let file = cx.a.p.file("file").cloned();
    let raw_type = cx.a.opt_str("type");
    // Numeric types (e.g. type=0) are accepted but stored as an invisible system post (N8N).
    let kind = match raw_type.as_deref().map(str::trim) {
        None | Some("") => if file.is_some() { "file" } else { "normal" }.to_string(),
        Some(t @ ("normal" | "sticker")) => t.to_string(),
        Some("file") => {
            if file.is_none() {
                return Err(err(114));
            }
            "file".to_string()
        }
        Some(t) if t.parse::<i64>().is_ok() => "system".to_string(),
        Some(_) => return Err(err(101)),
    };
    let message = match cx.a.opt_text("message") {
        Some(m) => m,
        None if file.is_some() => String::new(),
        None => return Err(err(114)),
    };
    if file.is_none() && message.trim().is_empty() {
        return Err(err(101));
    }
    check_message(cx, &message)?;
    let thread_id = cx.a.opt_i64("thread_id")?.unwrap_or(0);
    let ch = member_channel(st, channel_id, me)?;
    if ch.archived {
        return Err(err(105));
    }
    if thread_id != 0
        && !st
            .posts
            .get(&thread_id)
            .is_some_and(|p| p.channel_id == channel_id && !p.is_reply())
    {
        return Err(err(117));
    }
    let now = now_ms();
    let post_id = st
        .add_post(channel_id, me, &message, thread_id, now)
        .ok_or_else(|| err(117))?;
    if let Some(ch) = st.channels.get_mut(&channel_id) {
        ch.last_view.insert(me, now);
    }
    let post = st.posts.get_mut(&post_id).ok_or_else(|| err(117))?;
    post.kind = kind;
    if let Some(f) = file {
        post.file = Some(FileBlob {
            name: f.filename,
            content_type: f.content_type,
            data: f.data,
        });
    }
    ok(post.to_json())
}

fn post_get(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let p = visible_post(st, cx.a.req_i64("post_id")?, me)?;
    ok(json!({"post": p.to_json()}))
}

/// Edit own post (LS-OBS v8), if the admin setting allows editing.
fn post_set(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let post_id = cx.a.req_i64("post_id")?;
    let message = cx.a.req_text("message")?;
    if message.trim().is_empty() {
        return Err(err(101));
    }
    check_message(cx, &message)?;
    let p = visible_post(st, post_id, me)?;
    if p.creator_id != me {
        return Err(err(105));
    }
    let window = st
        .admin_settings
        .get("allow_edit_message_time_within_min")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if !st_admin_flag(st, "allow_edit_message")
        || (window > 0 && now_ms() - p.create_at > window * 60_000)
    {
        return Err(err(105));
    }
    let p = st.posts.get_mut(&post_id).ok_or_else(|| err(117))?;
    p.message = message;
    p.update_at = now_ms();
    ok(p.to_json())
}

/// Only own posts can be deleted (others -> 415, as N8N saw).
fn post_delete(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let post_id = cx.a.req_i64("post_id")?;
    let p = visible_post(st, post_id, me)?;
    if p.creator_id != me || !st_admin_flag(st, "allow_delete_message") {
        return Err(err(415));
    }
    let (thread_id, is_reply) = (p.thread_id, p.is_reply());
    st.posts.remove(&post_id);
    if is_reply {
        let cid = channel_of(post_id);
        let last = st
            .channel_posts(cid)
            .filter(|r| r.thread_id == thread_id && r.is_reply())
            .map(|r| r.create_at)
            .max();
        if let Some(root) = st.posts.get_mut(&thread_id) {
            root.comment_count = (root.comment_count - 1).max(0);
            root.last_comment_at = last.unwrap_or(0);
            if root.comment_count == 0 {
                root.thread_id = 0;
            }
        }
    } else if thread_id == post_id {
        st.posts.retain(|_, r| r.thread_id != post_id);
    }
    st.reminders
        .retain(|(_, pid), _| st.posts.contains_key(pid));
    ok_empty()
}

fn sort_key(p: &Post, key: &str) -> i64 {
    match key {
        "update_at" => p.update_at,
        "last_pin_at" => p.last_pin_at,
        "last_comment_at" => p.last_comment_at,
        "is_sticky" => i64::from(p.is_sticky),
        _ => p.create_at,
    }
}

fn post_search(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    // `in` must be a JSON number array; a stray `channel_id` is ignored (LS-OBS).
    let within = cx.a.strict_num_array("in")?.ok_or_else(|| err(114))?;
    let keyword = cx.a.opt_text("keyword").unwrap_or_default().to_lowercase();
    let post_types = cx.a.opt_str_list("post_type")?.unwrap_or_default();
    let has = cx.a.opt_str_list("has")?.unwrap_or_default();
    let creators = cx.a.opt_ids("creator_ids")?.unwrap_or_default();
    let after = cx.a.opt_i64("after")?;
    let before = cx.a.opt_i64("before")?;
    let thread_id = cx.a.opt_i64("thread_id")?;
    let offset = cx.a.opt_i64("offset")?.unwrap_or(0).max(0);
    let limit = cx.a.opt_i64("limit")?.unwrap_or(50).max(0);
    let mut sort: Vec<String> = cx.a.opt_str_list("sort_by_array")?.unwrap_or_default();
    if sort.is_empty() {
        sort.push(
            cx.a.opt_str("sort_by")
                .unwrap_or_else(|| "create_at".into()),
        );
    }
    let starred = false; // stars cannot be set through this API surface
    let mut hits: Vec<&Post> = st
        .posts
        .values()
        .filter(|p| p.kind != "system")
        .filter(|p| {
            st.channels
                .get(&p.channel_id)
                .is_some_and(|c| can_see(c, me))
                && (within.is_empty() || within.contains(&p.channel_id))
        })
        .filter(|p| keyword.is_empty() || p.message.to_lowercase().contains(&keyword))
        .filter(|p| post_types.is_empty() || post_types.contains(&p.kind))
        .filter(|p| {
            has.iter().all(|h| match h.as_str() {
                "pin" => p.is_sticky,
                "url" => p.message.contains("http://") || p.message.contains("https://"),
                "star" => starred,
                // `file` and `mention` are silently ignored (seed note).
                _ => true,
            })
        })
        .filter(|p| creators.is_empty() || creators.contains(&p.creator_id))
        .filter(|p| after.is_none_or(|a| p.create_at > a) && before.is_none_or(|b| p.create_at < b))
        .filter(|p| match thread_id {
            None => true,
            Some(0) => !p.is_reply(),
            Some(t) => p.thread_id == t,
        })
        .collect();
    hits.sort_by(|a, b| {
        for k in &sort {
            let o = sort_key(b, k).cmp(&sort_key(a, k));
            if o.is_ne() {
                return o;
            }
        }
        b.post_id.cmp(&a.post_id)
    });
    let total = hits.len();
    let results: Vec<Value> = hits
        .into_iter()
        .skip(offset as usize)
        .take(limit as usize)
        .map(Post::to_json)
        .collect();
    ok(json!({"search_results": results, "total": total, "offset": offset, "limit": limit}))
}

fn post_pin(cx: &mut Cx, st: &mut State, pin: bool) -> R {
    let me = me(cx)?;
    let post_id = cx.a.req_i64("post_id")?;
    visible_post(st, post_id, me)?;
    member_channel(st, channel_of(post_id), me)?;
    let p = st.posts.get_mut(&post_id).ok_or_else(|| err(117))?;
    p.is_sticky = pin;
    p.last_pin_at = if pin { now_ms() } else { 0 };
    ok_empty()
}

fn thread_list(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let channel_id = cx.a.req_i64("channel_id")?;
    visible_channel(st, channel_id, me)?;
    let offset = cx.a.opt_i64("offset")?.unwrap_or(0).max(0) as usize;
    let limit = cx.a.opt_i64("limit")?.unwrap_or(20).max(0) as usize;
    let related = cx.a.opt_i64("related_comment_count")?.unwrap_or(3).max(0) as usize;
    let mut roots: Vec<&Post> = st
        .channel_posts(channel_id)
        .filter(|p| p.thread_id == p.post_id && p.comment_count > 0)
        .collect();
    roots.sort_by_key(|p| std::cmp::Reverse(p.last_comment_at));
    let total = roots.len();
    let page: Vec<&Post> = roots.into_iter().skip(offset).take(limit).collect();
    let mut related_posts = Vec::new();
    for r in &page {
        let replies: Vec<&Post> = st
            .channel_posts(channel_id)
            .filter(|p| p.thread_id == r.post_id && p.is_reply())
            .collect();
        related_posts.extend(
            replies[replies.len().saturating_sub(related)..]
                .iter()
                .map(|p| p.to_json()),
        );
    }
    let results: Vec<Value> = page.into_iter().map(Post::to_json).collect();
    ok(json!({"search_results": results, "related_posts": related_posts, "total": total}))
}

pub(crate) fn file_reply(p: &Post) -> R {
    let f = p.file.as_ref().ok_or_else(|| err(117))?;
    Ok(Reply::Binary {
        content_type: f.content_type.clone(),
        filename: f.name.clone(),
        data: f.data.clone(),
    })
}

fn post_file(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let p = visible_post(st, cx.a.req_i64("post_id")?, me)?;
    if cx.method == "thumbnail"
        && !p
            .file
            .as_ref()
            .is_some_and(|f| f.content_type.starts_with("image/"))
    {
        return Err(err(117));
    }
    file_reply(p)
}

fn attachment_list(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let channel_id = cx.a.req_i64("channel_id")?;
    visible_channel(st, channel_id, me)?;
    let limit = cx.a.opt_i64("limit")?.unwrap_or(50).max(0) as usize;
    let files: Vec<&Post> = st
        .channel_posts(channel_id)
        .rev()
        .filter(|p| p.file.is_some())
        .collect();
    let total = files.len();
    let list: Vec<Value> = files.into_iter().take(limit).map(Post::to_json).collect();
    ok(json!({"attachments": list, "total": total}))
}

fn reaction(cx: &mut Cx, st: &mut State, add: bool) -> R {
    let me = me(cx)?;
    let post_id = cx.a.req_i64("post_id")?;
    let sticker = cx.a.req_str("sticker_name")?;
    if sticker.trim().is_empty() {
        return Err(err(101));
    }
    visible_post(st, post_id, me)?;
    member_channel(st, channel_of(post_id), me)?;
    let p = st.posts.get_mut(&post_id).ok_or_else(|| err(117))?;
    match p.reactions.iter_mut().find(|(s, _)| *s == sticker) {
        Some((_, users)) if add && !users.contains(&me) => users.push(me),
        Some(_) if add => {}
        Some((_, users)) => users.retain(|u| *u != me),
        None if add => p.reactions.push((sticker, vec![me])),
        None => {}
    }
    p.reactions.retain(|(_, u)| !u.is_empty());
    ok_empty()
}

fn reminder_get(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let post_id = cx.a.req_i64("post_id")?;
    visible_post(st, post_id, me)?;
    let at = st.reminders.get(&(me, post_id)).copied().unwrap_or(0);
    ok(json!({"post_id": post_id, "remind_at": at}))
}

fn reminder_set(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let post_id = cx.a.req_i64("post_id")?;
    let at = cx.a.req_i64("remind_at")?;
    if at < 0 {
        return Err(err(101));
    }
    visible_post(st, post_id, me)?;
    if at == 0 {
        st.reminders.remove(&(me, post_id));
    } else {
        st.reminders.insert((me, post_id), at);
    }
    ok_empty()
}

fn reminder_delete(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let post_id = cx.a.req_i64("post_id")?;
    visible_post(st, post_id, me)?;
    st.reminders
        .remove(&(me, post_id))
        .ok_or_else(|| err(117))?;
    ok_empty()
}

fn reminder_list(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let channel = cx.a.opt_i64("channel_id")?;
    let posts: Vec<Value> = st
        .reminders
        .iter()
        .filter(|((u, pid), _)| *u == me && channel.is_none_or(|c| channel_of(*pid) == c))
        .filter_map(|((_, pid), at)| {
            st.posts.get(pid).map(|p| {
                let mut j = p.to_json();
                j["remind_at"] = json!(at);
                j
            })
        })
        .collect();
    ok(json!({"posts": posts}))
}

fn schedule_json(s: &super::store::Scheduled) -> Value {
    json!({"cronjob_id": s.cronjob_id, "channel_id": s.channel_id, "creator_id": s.creator_id, "message": s.message, "send_at": s.send_at})
}

fn schedule_list(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let channel = cx.a.opt_i64("channel_id")?;
    let list: Vec<Value> = st
        .schedules
        .values()
        .filter(|s| s.creator_id == me && channel.is_none_or(|c| s.channel_id == c))
        .map(schedule_json)
        .collect();
    ok(json!({"schedule_posts": list}))
}

fn schedule_create(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let channel_id = cx.a.req_i64("channel_id")?;
    let message = cx.a.req_text("message")?;
    let send_at = cx.a.req_i64("send_at")?;
    if message.trim().is_empty() || send_at <= now_ms() {
        return Err(err(101));
    }
    check_message(cx, &message)?;
    member_channel(st, channel_id, me)?;
    let id = st.next_cronjob_id;
    st.next_cronjob_id += 1;
    st.schedules.insert(
        id,
        super::store::Scheduled {
            cronjob_id: id,
            channel_id,
            creator_id: me,
            message,
            send_at,
        },
    );
    ok(json!({"cronjob_id": id}))
}

fn schedule_set(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let id = cx.a.req_i64("cronjob_id")?;
    let message = cx.a.opt_text("message");
    let send_at = cx.a.opt_i64("send_at")?;
    if let Some(m) = &message {
        if m.trim().is_empty() {
            return Err(err(101));
        }
        check_message(cx, m)?;
    }
    if send_at.is_some_and(|t| t <= now_ms()) {
        return Err(err(101));
    }
    let s = st
        .schedules
        .get_mut(&id)
        .filter(|s| s.creator_id == me)
        .ok_or_else(|| err(117))?;
    if let Some(m) = message {
        s.message = m;
    }
    if let Some(t) = send_at {
        s.send_at = t;
    }
    ok_empty()
}

fn schedule_delete(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let id = cx.a.req_i64("cronjob_id")?;
    if st.schedules.get(&id).is_none_or(|s| s.creator_id != me) {
        return Err(err(117));
    }
    st.schedules.remove(&id);
    ok_empty()
}

/// Post.forward v5: copies a readable post into channels the caller belongs to.
fn post_forward(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let post_id = cx.a.req_i64("post_id")?;
    // channel_ids must be JSON numbers (LS-DOC).
    let targets =
        cx.a.strict_num_array("channel_ids")?
            .ok_or_else(|| err(114))?;
    let src = visible_post(st, post_id, me)?.clone();
    for c in &targets {
        let ch = member_channel(st, *c, me)?;
        if ch.archived {
            return Err(err(105));
        }
    }
    let mut ids = Vec::new();
    for c in targets {
        let pid = st
            .add_post(c, me, &src.message, 0, now_ms())
            .ok_or_else(|| err(117))?;
        if let Some(p) = st.posts.get_mut(&pid) {
            p.kind = src.kind.clone();
            p.file = src.file.clone();
        }
        ids.push(pid);
    }
    ok(json!({"post_ids": ids}))
}

// ---------------------------------------------------------------- votes

fn new_choice_id() -> String {
    super::rand::alnum(8)
}

/// `choices` must be a JSON array of `{"text": ...}` objects (string arrays -> 101, LS-OBS).
fn parse_choices(cx: &Cx) -> Result<Vec<VoteChoice>, ApiErr> {
    let raw = cx.a.p.raw("choices").ok_or_else(|| err(114))?;
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(raw) else {
        return Err(err(101));
    };
    let mut out = Vec::new();
    for it in items {
        let text = it
            .get("text")
            .and_then(Value::as_str)
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| err(101))?;
        out.push(VoteChoice {
            id: new_choice_id(),
            text: text.to_string(),
            voters: Vec::new(),
        });
    }
    if out.is_empty() {
        return Err(err(101));
    }
    Ok(out)
}

/// `options` must be a JSON object; double-encoded JSON text -> 117 (LS-OBS).
fn parse_options(cx: &Cx) -> Result<Option<Map<String, Value>>, ApiErr> {
    let Some(raw) = cx.a.p.raw("options") else {
        return Ok(None);
    };
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(Value::String(_)) => Err(err(117)),
        _ => Err(err(101)),
    }
}

fn opt_flag(m: &Map<String, Value>, k: &str) -> Result<Option<bool>, ApiErr> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(err(101)),
    }
}

fn vote_create(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let channel_id = cx.a.req_i64("channel_id")?;
    let message = cx.a.req_text("message")?;
    check_message(cx, &message)?;
    let choices = parse_choices(cx)?;
    let opts = parse_options(cx)?.unwrap_or_default();
    let expire_at = match opts.get("expire_at") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_i64().ok_or_else(|| err(101))?,
    };
    let vote = Vote {
        state: "open".into(),
        choices,
        multiple: opt_flag(&opts, "multiple")?.unwrap_or(false),
        anonymous: opt_flag(&opts, "anonymous")?.unwrap_or(false),
        add_option: opt_flag(&opts, "add_option")?.unwrap_or(false),
        expire_at,
    };
    let ch = member_channel(st, channel_id, me)?;
    if ch.archived {
        return Err(err(105));
    }
    let pid = st
        .add_post(channel_id, me, &message, 0, now_ms())
        .ok_or_else(|| err(117))?;
    let p = st.posts.get_mut(&pid).ok_or_else(|| err(117))?;
    p.kind = "vote".into();
    p.vote = Some(vote);
    ok(p.to_json())
}

fn vote_post<'a>(cx: &Cx, st: &'a mut State) -> Result<&'a mut Post, ApiErr> {
    let me = me(cx)?;
    let post_id = cx.a.req_i64("post_id")?;
    visible_post(st, post_id, me)?;
    st.posts
        .get_mut(&post_id)
        .filter(|p| p.vote.is_some())
        .ok_or_else(|| err(117))
}

fn vote_get_choices(cx: &mut Cx, st: &mut State) -> R {
    let p = vote_post(cx, st)?;
    let v = p.vote.as_ref().map(Vote::to_json).unwrap_or(Value::Null);
    ok(json!({"post_id": p.post_id, "state": v["state"], "choices": v["choices"]}))
}

fn vote_vote(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    // choice_ids must be a JSON array of strings (LS-OBS).
    let raw = cx.a.p.raw("choice_ids").ok_or_else(|| err(114))?;
    let ids: Vec<String> = match serde_json::from_str::<Value>(raw) {
        Ok(Value::Array(a)) => a
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(err(101)),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(err(101)),
    };
    let post_id = cx.a.req_i64("post_id")?;
    member_channel(st, channel_of(post_id), me)?;
    let p = vote_post(cx, st)?;
    let vote = p.vote.as_mut().ok_or_else(|| err(117))?;
    if vote.effective_state(now_ms()) != "open" {
        return Err(err(117));
    }
    if (!vote.multiple && ids.len() > 1)
        || ids
            .iter()
            .any(|id| !vote.choices.iter().any(|c| &c.id == id))
    {
        return Err(err(117));
    }
    for c in vote.choices.iter_mut() {
        c.voters.retain(|u| *u != me);
        if ids.contains(&c.id) {
            c.voters.push(me);
        }
    }
    ok(json!({"choices": vote.to_json()["choices"]}))
}

fn vote_state(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let state = if cx.method == "close" {
        "close"
    } else {
        "delete"
    };
    let p = vote_post(cx, st)?;
    if p.creator_id != me {
        return Err(err(105));
    }
    if let Some(v) = p.vote.as_mut() {
        v.state = state.into();
    }
    ok_empty()
}

fn vote_set(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let opts = parse_options(cx)?;
    let message = cx.a.opt_text("message");
    if let Some(m) = &message {
        check_message(cx, m)?;
    }
    let p = vote_post(cx, st)?;
    if p.creator_id != me {
        return Err(err(105));
    }
    if let Some(m) = message {
        p.message = m;
        p.update_at = now_ms();
    }
    if let (Some(o), Some(v)) = (opts, p.vote.as_mut()) {
        if let Some(b) = opt_flag(&o, "multiple")? {
            v.multiple = b;
        }
        if let Some(b) = opt_flag(&o, "add_option")? {
            v.add_option = b;
        }
        if let Some(e) = o.get("expire_at") {
            v.expire_at = e.as_i64().ok_or_else(|| err(101))?;
        }
    }
    ok_empty()
}

fn vote_create_option(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let text = cx.a.req_text("text")?;
    if text.trim().is_empty() {
        return Err(err(101));
    }
    let p = vote_post(cx, st)?;
    let creator = p.creator_id;
    let v = p.vote.as_mut().ok_or_else(|| err(117))?;
    if !v.add_option && creator != me {
        return Err(err(105));
    }
    if v.effective_state(now_ms()) != "open" {
        return Err(err(117));
    }
    let id = new_choice_id();
    v.choices.push(VoteChoice {
        id: id.clone(),
        text,
        voters: Vec::new(),
    });
    ok(json!({"id": id}))
}

// ---------------------------------------------------------------- misc

fn sticker_list() -> R {
    let list: Vec<Value> = STICKERS
        .iter()
        .map(|(n, c)| json!({"name": n, "category": c}))
        .collect();
    ok(json!({"stickers": list}))
}

fn admin_get(cx: &mut Cx, st: &mut State) -> R {
    cx.admin()?;
    ok(Value::Object(st.admin_settings.clone()))
}

fn admin_set(cx: &mut Cx, st: &mut State) -> R {
    cx.admin()?;
    let defaults = st.admin_settings.clone();
    merge_known(cx, &defaults, &mut st.admin_settings)?;
    ok_empty()
}

fn app_get(cx: &mut Cx, _st: &mut State) -> R {
    let me = cx.me()?;
    ok(json!({
        "name": "Chat",
        "version": "2.4.5-22148",
        "is_admin": me.admin,
        "user_id": me.user_id,
        "max_message_length": cx.config.max_message_len,
    }))
}

fn misc_get(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let unread: usize = st
        .channels
        .values()
        .filter(|c| c.members.contains(&me))
        .map(|c| st.channel_json(c, me)["unread"].as_u64().unwrap_or(0) as usize)
        .sum();
    ok(json!({
        "server_time": now_ms(),
        "unread_count": unread,
        "max_file_size": 32 * 1024 * 1024,
        "max_message_length": cx.config.max_message_len,
    }))
}
