//! `SYNO.Chat.User*`: users, presence, avatars and preferences.

use super::*;

pub(super) fn user_list(_cx: &mut Cx, st: &mut State) -> R {
    let users: Vec<Value> = st.users.values().map(|u| st.user_json(u)).collect();
    ok(json!({"users": users}))
}

pub(super) fn user_get(cx: &mut Cx, st: &mut State) -> R {
    let uid = cx.a.req_i64("user_id")?;
    let u = st.users.get(&uid).ok_or_else(|| err(117))?;
    ok(json!({"user": st.user_json(u)}))
}

pub(super) fn user_status(cx: &mut Cx, st: &mut State) -> R {
    let uid = cx.a.opt_i64("user_id")?.unwrap_or(me(cx)?);
    let u = st.users.get(&uid).ok_or_else(|| err(117))?;
    let j = st.user_json(u);
    ok(json!({"user_id": uid, "status": j["status"]}))
}

pub(super) fn user_avatar(cx: &mut Cx, st: &mut State) -> R {
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
        data: super::super::png::avatar(64, rgb).into(),
    })
}

pub(super) fn default_user_prefs() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("language".into(), json!("def"));
    m.insert("timezone".into(), json!("UTC"));
    m.insert("enter_to_send".into(), json!(true));
    m.insert("notification_sound".into(), json!(true));
    m.insert("desktop_notification".into(), json!(true));
    m.insert("show_preview".into(), json!(true));
    m
}

pub(super) fn user_pref(cx: &mut Cx, st: &mut State, set: bool) -> R {
    let me = me(cx)?;
    let defaults = default_user_prefs();
    let prefs = st.user_prefs.entry(me).or_insert_with(default_user_prefs);
    if set {
        merge_known(cx, &defaults, prefs)?;
        return ok_empty();
    }
    ok(Value::Object(prefs.clone()))
}
