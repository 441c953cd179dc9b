//! `SYNO.Chat.Channel*`: listing, named channels, membership, direct conversations and preferences.

use super::*;

pub(super) fn channel_list(cx: &mut Cx, st: &mut State) -> R {
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

pub(super) fn channel_get(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let ch = visible_channel(st, cx.a.req_i64("channel_id")?, me)?;
    ok(json!({"channel": st.channel_json(ch, me)}))
}

/// Closes the conversation for the caller only; it comes back with the next post.
pub(super) fn channel_close(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let id = cx.a.req_i64("channel_id")?;
    visible_channel(st, id, me)?;
    channel_mut(st, id)?.closed_for.insert(me);
    ok_empty()
}

pub(super) fn channel_archive(cx: &mut Cx, st: &mut State) -> R {
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

pub(super) fn channel_view(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    let id = cx.a.req_i64("channel_id")?;
    let at = cx.a.opt_i64("last_view_at")?.unwrap_or_else(now_ms);
    visible_channel(st, id, me)?;
    channel_mut(st, id)?.last_view.insert(me, at);
    ok_empty()
}

pub(super) fn named_create(cx: &mut Cx, st: &mut State) -> R {
    let me = me(cx)?;
    // N8N: passing member_ids to create answers 119.
    if cx.a.p.raw("member_ids").is_some() {
        return Err(err(119));
    }
    // One n8n note: `type` "rejected with 407" (a toggle: another says it is required).
    if st.named_create_refuses_type && cx.a.p.raw("type").is_some() {
        return Err(err(407));
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

pub(super) fn st_admin_flag(st: &State, key: &str) -> bool {
    st.admin_settings
        .get(key)
        .and_then(Value::as_bool)
        .unwrap_or(true)
}

pub(super) fn named_join(cx: &mut Cx, st: &mut State) -> R {
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

pub(super) fn named_disjoin(cx: &mut Cx, st: &mut State) -> R {
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

pub(super) fn named_invite(cx: &mut Cx, st: &mut State) -> R {
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

pub(super) fn named_kick(cx: &mut Cx, st: &mut State) -> R {
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
pub(super) fn anonymous_initiate(cx: &mut Cx, st: &mut State) -> R {
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

pub(super) fn member_get(cx: &mut Cx, st: &mut State) -> R {
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

pub(super) fn default_chan_prefs() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("notification".into(), json!("all"));
    m.insert("is_muted".into(), json!(false));
    m.insert("is_favorite".into(), json!(false));
    m.insert("is_hidden".into(), json!(false));
    m
}

/// Applies the known keys of `defaults` from the request to `target`, keeping their JSON type.
pub(super) fn merge_known(
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

pub(super) fn chan_pref(cx: &mut Cx, st: &mut State, set: bool) -> R {
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
