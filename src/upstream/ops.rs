//! Every WebAPI operation the gateway calls, with the versions whose wire format it speaks.
//! The version actually sent is the highest one both this table and the NAS's
//! `SYNO.API.Info` allow (upstream-protocol §2).

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
}

const fn op(api: &'static str, method: &'static str, versions: RangeInclusive<u32>, verb: Verb) -> Op {
    Op {
        api,
        method,
        versions,
        verb,
    }
}

pub const INFO_QUERY: Op = op("SYNO.API.Info", "query", 1..=1, Verb::Get);
pub const AUTH_LOGIN: Op = op("SYNO.API.Auth", "login", 3..=7, Verb::Post);
pub const AUTH_LOGOUT: Op = op("SYNO.API.Auth", "logout", 1..=7, Verb::Post);

pub const CHANNEL_LIST: Op = op("SYNO.Chat.Channel", "list", 1..=5, Verb::Get);
pub const USER_LIST: Op = op("SYNO.Chat.User", "list", 1..=3, Verb::Get);
pub const POST_LIST: Op = op("SYNO.Chat.Post", "list", 1..=8, Verb::Get);
pub const POST_CREATE: Op = op("SYNO.Chat.Post", "create", 1..=8, Verb::Post);

/// The APIs asked for in the `SYNO.API.Info` query.
pub const KNOWN_APIS: &[&str] = &["SYNO.API.Auth", "SYNO.Chat.Channel", "SYNO.Chat.User", "SYNO.Chat.Post"];
