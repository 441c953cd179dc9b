//! What hangs off a post: pins, threads, files, attachments, reactions, reminders, scheduled posts and forwarding.

use super::*;

pub(super) fn post_pin(cx: &mut Cx, st: &mut State, pin: bool) -> R {
    let me = me(cx)?;
    let post_id = cx.a.req_i64("post_id")?;
    visible_post(st, post_id, me)?;
    member_channel(st, channel_of(post_id), me)?;
    let p = st.posts.get_mut(&post_id).ok_or_else(|| err(117))?;
    p.is_sticky = pin;
    p.last_pin_at = if pin { now_ms() } else { 0 };
    ok_empty()
}

pub(super) fn thread_list(cx: &mut Cx, st: &mut State) -> R {
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

pub(super) fn post_file(cx: &mut Cx, st: &mut State) -> R {
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

pub(super) fn attachment_list(cx: &mut Cx, st: &mut State) -> R {
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

pub(super) fn reaction(cx: &mut Cx, st: &mut State, add: bool) -> R {
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

pub(super) fn reminder_get(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let post_id = cx.a.req_i64("post_id")?;
    visible_post(st, post_id, me)?;
    let at = st.reminders.get(&(me, post_id)).copied().unwrap_or(0);
    ok(json!({"post_id": post_id, "remind_at": at}))
}

pub(super) fn reminder_set(cx: &mut Cx, st: &mut State) -> R {
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

pub(super) fn reminder_delete(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let post_id = cx.a.req_i64("post_id")?;
    visible_post(st, post_id, me)?;
    st.reminders
        .remove(&(me, post_id))
        .ok_or_else(|| err(117))?;
    ok_empty()
}

pub(super) fn reminder_list(cx: &mut Cx, st: &mut State) -> R {
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

pub(super) fn schedule_json(s: &super::super::store::Scheduled) -> Value {
    json!({"cronjob_id": s.cronjob_id, "channel_id": s.channel_id, "creator_id": s.creator_id, "message": s.message, "send_at": s.send_at})
}

pub(super) fn schedule_list(cx: &mut Cx, st: &mut State) -> R {
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

pub(super) fn schedule_create(cx: &mut Cx, st: &mut State) -> R {
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
        super::super::store::Scheduled {
            cronjob_id: id,
            channel_id,
            creator_id: me,
            message,
            send_at,
        },
    );
    ok(json!({"cronjob_id": id}))
}

pub(super) fn schedule_set(cx: &mut Cx, st: &mut State) -> R {
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

pub(super) fn schedule_delete(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let id = cx.a.req_i64("cronjob_id")?;
    if st.schedules.get(&id).is_none_or(|s| s.creator_id != me) {
        return Err(err(117));
    }
    st.schedules.remove(&id);
    ok_empty()
}

/// Post.forward v5: copies a readable post into channels the caller belongs to.
pub(super) fn post_forward(cx: &mut Cx, st: &mut State) -> R {
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
