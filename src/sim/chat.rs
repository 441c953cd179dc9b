//! Session-authenticated SYNO.Chat.* APIs (channels, users, posts).
//!
//! Error convention (Chat has no official table): an id that does not exist or is not
//! visible to the caller -> 117; visible but not allowed (not a member, not the owner) -> 105.

use serde_json::{Value, json};

use super::server::Cx;
use super::store::{ChanKind, Channel, Post, State, channel_of, now_ms};
use super::wire::{ApiErr, R, err, ok};

const METHODS: &[(&str, &[&str])] = &[
    ("SYNO.Chat.Channel", &["list"]),
    ("SYNO.Chat.User", &["list", "get"]),
    ("SYNO.Chat.Post", &["list", "create"]),
];

pub(crate) fn has_method(api: &str, method: &str) -> bool {
    METHODS
        .iter()
        .any(|(a, ms)| *a == api && ms.contains(&method))
}

pub(crate) fn handle(api: &str, cx: &mut Cx, st: &mut State) -> R {
    match (api, cx.method) {
        ("SYNO.Chat.Channel", "list") => channel_list(cx, st),
        ("SYNO.Chat.User", "list") => user_list(cx, st),
        ("SYNO.Chat.User", "get") => user_get(cx, st),
        ("SYNO.Chat.Post", "list") => post_list(cx, st),
        ("SYNO.Chat.Post", "create") => post_create(cx, st),
        _ => Err(err(103)),
    }
}

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

fn channel_list(cx: &mut Cx, st: &mut State) -> R {
    let me = cx.me()?.user_id;
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

fn user_list(_cx: &mut Cx, st: &mut State) -> R {
    let users: Vec<Value> = st.users.values().map(|u| st.user_json(u)).collect();
    ok(json!({"users": users}))
}

fn user_get(cx: &mut Cx, st: &mut State) -> R {
    let uid = cx.a.req_i64("user_id")?;
    let u = st.users.get(&uid).ok_or_else(|| err(117))?;
    ok(json!({"user": st.user_json(u)}))
}

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
    let me = cx.me()?.user_id;
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
    let me = cx.me()?.user_id;
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
    let message = match cx.a.opt_str("message") {
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
        post.file = Some(super::store::FileBlob {
            name: f.filename,
            content_type: f.content_type,
            data: f.data,
        });
    }
    ok(post.to_json())
}
