//! `SYNO.Chat.Post`: listing, creating, editing, deleting and searching posts.

use super::*;

/// Selects posts like Post.list / External post_list. Listing order is newest first, unless
/// `post_list_oldest_first`.
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
    // ACE saw this on session `Post.list` v8 only; for `External post_list` the library
    // documents "omit `post_id` for the newest" (upstream/PROTOCOL.md [C4]).
    let mut picked: Vec<&Post> = if st.post_list_anchor_only && !cx.a.external && anchor.is_none() {
        // ACE's v8: without an anchor, the oldest post alone, whatever the counts.
        set[..set.len().min(1)].to_vec()
    } else if anchor.is_some() || prev.is_some() || next.is_some() {
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
    } else if st.post_list_ignores_offset || cx.a.external {
        // External `post_list` takes counts and an anchor only (upstream-protocol's External
        // table): `offset` and `limit` mean nothing to it. Without counts the reference says
        // nothing; the simulator answers the newest 10, as v5's list does.
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
    // A thread read anchored on its own root answers the root alone, whatever the counts
    // (upstream-protocol §6.4: ACE, LS-OBS); the replies come with another anchor.
    if thread_id != 0 && anchor == Some(thread_id) {
        picked.retain(|p| p.post_id == thread_id);
    }
    if !st.post_list_oldest_first {
        picked.reverse();
    }
    Ok((picked.into_iter().map(Post::to_json).collect(), total))
}

pub(super) fn post_list(cx: &mut Cx, st: &mut State) -> R {
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

pub(super) fn post_create(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let channel_id = cx.a.req_i64("channel_id")?;
    let file = cx.a.p.file("file").cloned();
    // An upload as the library sends it: `type=file`, the file in a part named `file`, last
    // (ref §4.6 and the File Station rule). A file under another name is not taken for text.
    if !cx.a.p.files.is_empty() && (file.is_none() || cx.a.p.file_not_last) {
        return Err(err(101));
    }
    let raw_type = cx.a.opt_str("type");
    // Numeric types (e.g. type=0) are accepted but stored as an invisible system post (N8N).
    let kind = match raw_type.as_deref().map(str::trim) {
        None | Some("") if file.is_some() => return Err(err(114)),
        None | Some("") => "normal".to_string(),
        Some("normal" | "sticker") if file.is_some() => return Err(err(101)),
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
    let (props_only, no_data) = (
        st.upload_answers_file_props_only,
        st.upload_answers_without_data,
    );
    let post = st.posts.get_mut(&post_id).ok_or_else(|| err(117))?;
    post.kind = kind;
    if let Some(f) = file {
        post.file = Some(FileBlob {
            name: f.filename,
            content_type: f.content_type,
            data: f.data,
        });
        if no_data {
            return ok_empty();
        }
        if props_only {
            let answer = post.to_json();
            return ok(json!({"file_props": answer["file_props"]}));
        }
    }
    ok(post.to_json())
}

pub(super) fn post_get(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let p = visible_post(st, cx.a.req_i64("post_id")?, me)?;
    ok(json!({"post": p.to_json()}))
}

/// Edit own post (LS-OBS v8), if the admin setting allows editing.
pub(super) fn post_set(cx: &mut Cx, st: &mut State) -> R {
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
pub(super) fn post_delete(cx: &mut Cx, st: &mut State) -> R {
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

pub(super) fn sort_key(p: &Post, key: &str) -> i64 {
    match key {
        "update_at" => p.update_at,
        "last_pin_at" => p.last_pin_at,
        "last_comment_at" => p.last_comment_at,
        "is_sticky" => i64::from(p.is_sticky),
        _ => p.create_at,
    }
}

pub(super) fn post_search(cx: &mut Cx, st: &mut State) -> R {
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
