//! How an operation is described: API, method, the versions whose wire format the gateway
//! speaks, and the HTTP verb. The version actually sent is the highest one both the operation
//! and the NAS's `SYNO.API.Info` allow (PROTOCOL.md [T1]). Each resource module declares its
//! own operations next to the code that calls them.

use std::ops::RangeInclusive;

/// HTTP method used for the call: reads go as GET (all in the query), writes as POST forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
}

#[derive(Debug)]
pub struct Op {
    pub api: &'static str,
    pub method: &'static str,
    pub versions: RangeInclusive<u32>,
    pub verb: Verb,
    /// Free-text parameters. On an API whose Info entry says `requestFormat: JSON`, DSM
    /// JSON-decodes every value, so these are sent JSON-encoded: a name `123` or `null` stays
    /// a string (PROTOCOL.md [T2]).
    pub text_params: &'static [&'static str],
}

pub const fn op(
    api: &'static str,
    method: &'static str,
    versions: RangeInclusive<u32>,
    verb: Verb,
) -> Op {
    Op {
        api,
        method,
        versions,
        verb,
        text_params: &[],
    }
}

impl Op {
    /// Declares the operation's free-text parameters (see [`Op::text_params`]).
    pub const fn text(self, params: &'static [&'static str]) -> Op {
        Op {
            text_params: params,
            ..self
        }
    }
}

pub const INFO_QUERY: Op = op("SYNO.API.Info", "query", 1..=1, Verb::Get);
pub const AUTH_LOGIN: Op = op("SYNO.API.Auth", "login", 3..=7, Verb::Post);
pub const AUTH_LOGOUT: Op = op("SYNO.API.Auth", "logout", 1..=7, Verb::Post);

/// The APIs asked for in the `SYNO.API.Info` query: every API any operation uses.
pub const KNOWN_APIS: &[&str] = &[
    "SYNO.API.Auth",
    "SYNO.Chat.Admin.Setting",
    "SYNO.Chat.App",
    "SYNO.Chat.Bot",
    "SYNO.Chat.Channel",
    "SYNO.Chat.Channel.Anonymous",
    "SYNO.Chat.Channel.Member",
    "SYNO.Chat.Channel.Named",
    "SYNO.Chat.Channel.Preference",
    "SYNO.Chat.Chatbot",
    "SYNO.Chat.External",
    "SYNO.Chat.Misc",
    "SYNO.Chat.Post",
    "SYNO.Chat.Post.Attachment",
    "SYNO.Chat.Post.File",
    "SYNO.Chat.Post.Reaction",
    "SYNO.Chat.Post.Reminder",
    "SYNO.Chat.Post.Schedule",
    "SYNO.Chat.Sticker",
    "SYNO.Chat.User",
    "SYNO.Chat.User.Avatar",
    "SYNO.Chat.User.Preference",
    "SYNO.Chat.User.Status",
    "SYNO.Chat.Webhook.BuiltIn",
    "SYNO.Chat.Webhook.Broadcast",
    "SYNO.Chat.Webhook.Incoming",
    "SYNO.Chat.Webhook.Outgoing",
    "SYNO.Chat.Webhook.Slash",
];
