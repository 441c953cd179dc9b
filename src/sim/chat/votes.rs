//! `SYNO.Chat.Post.Vote`: polls.

use super::*;

pub(super) fn new_choice_id() -> String {
    super::super::rand::alnum(8)
}

/// `choices` must be a JSON array of `{"text": ...}` objects (string arrays -> 101, LS-OBS).
pub(super) fn parse_choices(cx: &Cx) -> Result<Vec<VoteChoice>, ApiErr> {
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
pub(super) fn parse_options(cx: &Cx) -> Result<Option<Map<String, Value>>, ApiErr> {
    let Some(raw) = cx.a.p.raw("options") else {
        return Ok(None);
    };
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(Value::String(_)) => Err(err(117)),
        _ => Err(err(101)),
    }
}

pub(super) fn opt_flag(m: &Map<String, Value>, k: &str) -> Result<Option<bool>, ApiErr> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(err(101)),
    }
}

pub(super) fn vote_create(cx: &mut Cx, st: &mut State) -> R {
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

pub(super) fn vote_post<'a>(cx: &Cx, st: &'a mut State) -> Result<&'a mut Post, ApiErr> {
    let me = me(cx)?;
    let post_id = cx.a.req_i64("post_id")?;
    visible_post(st, post_id, me)?;
    st.posts
        .get_mut(&post_id)
        .filter(|p| p.vote.is_some())
        .ok_or_else(|| err(117))
}

pub(super) fn vote_get_choices(cx: &mut Cx, st: &mut State) -> R {
    let p = vote_post(cx, st)?;
    let v = p.vote.as_ref().map(Vote::to_json).unwrap_or(Value::Null);
    ok(json!({"post_id": p.post_id, "state": v["state"], "choices": v["choices"]}))
}

pub(super) fn vote_vote(cx: &mut Cx, st: &mut State) -> R {
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

pub(super) fn vote_state(cx: &mut Cx, st: &mut State) -> R {
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

pub(super) fn vote_set(cx: &mut Cx, st: &mut State) -> R {
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

pub(super) fn vote_create_option(cx: &mut Cx, st: &mut State) -> R {
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
