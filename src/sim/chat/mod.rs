//! Session-authenticated SYNO.Chat.* APIs (channels, users, posts and their satellites).
//!
//! Error convention (Chat has no official table): an id that does not exist or is not
//! visible to the caller -> 117; visible but not allowed (not a member, not the owner) -> 105.

mod channels;
mod misc;
mod post_satellites;
mod posts;
mod users;
mod votes;

use serde_json::{Map, Value, json};

use super::server::Cx;
use super::store::{
    ChanKind, Channel, FileBlob, Post, State, Vote, VoteChoice, channel_of, now_ms,
};
use super::wire::{ApiErr, R, Reply, err, ok, ok_empty};
use channels::*;
use misc::*;
pub(crate) use post_satellites::*;
pub(crate) use posts::*;
use users::*;
use votes::*;

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
