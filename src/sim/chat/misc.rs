//! Stickers, admin settings, `SYNO.Chat.App` and `SYNO.Chat.Misc`.

use super::*;

pub(super) fn sticker_list() -> R {
    let list: Vec<Value> = STICKERS
        .iter()
        .map(|(n, c)| json!({"name": n, "category": c}))
        .collect();
    ok(json!({"stickers": list}))
}

pub(super) fn admin_get(cx: &mut Cx, st: &mut State) -> R {
    cx.admin()?;
    ok(Value::Object(st.admin_settings.clone()))
}

pub(super) fn admin_set(cx: &mut Cx, st: &mut State) -> R {
    cx.admin()?;
    let defaults = st.admin_settings.clone();
    merge_known(cx, &defaults, &mut st.admin_settings)?;
    ok_empty()
}

pub(super) fn app_get(cx: &mut Cx, _st: &mut State) -> R {
    let me = cx.me()?;
    ok(json!({
        "name": "Chat",
        "version": "2.4.5-22148",
        "is_admin": me.admin,
        "user_id": me.user_id,
        "max_message_length": cx.config.max_message_len,
    }))
}

pub(super) fn misc_get(cx: &mut Cx, st: &mut State) -> R {
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
