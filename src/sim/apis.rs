//! The one API table: what SYNO.API.Info reports and what version checks (104) use.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// No session (Info, Auth, Encryption, UIConfig).
    Public,
    /// Needs a DSM session.
    Session,
    /// SYNO.Chat.External: integration token (its `list` method needs a session instead).
    External,
}

#[derive(Debug)]
pub(crate) struct ApiDef {
    pub name: &'static str,
    pub path: &'static str,
    pub min: u32,
    pub max: u32,
    /// `requestFormat: "JSON"` in Info (LS-OBS, Chat 2.4.1).
    pub json: bool,
    pub access: Access,
}

const fn def(
    name: &'static str,
    path: &'static str,
    min: u32,
    max: u32,
    json: bool,
    access: Access,
) -> ApiDef {
    ApiDef {
        name,
        path,
        min,
        max,
        json,
        access,
    }
}

use Access::*;

pub(crate) const APIS: &[ApiDef] = &[
    def("SYNO.API.Info", "query.cgi", 1, 1, false, Public),
    def("SYNO.API.Auth", "entry.cgi", 1, 7, false, Public),
    def("SYNO.API.Encryption", "encryption.cgi", 1, 1, false, Public),
    def("SYNO.API.Auth.UIConfig", "entry.cgi", 1, 1, false, Public),
    def("SYNO.Chat.Channel", "entry.cgi", 1, 5, false, Session),
    def("SYNO.Chat.Channel.Named", "entry.cgi", 1, 1, true, Session),
    def(
        "SYNO.Chat.Channel.Anonymous",
        "entry.cgi",
        1,
        2,
        true,
        Session,
    ),
    def("SYNO.Chat.Channel.Member", "entry.cgi", 1, 1, true, Session),
    def(
        "SYNO.Chat.Channel.Preference",
        "entry.cgi",
        1,
        2,
        false,
        Session,
    ),
    def("SYNO.Chat.User", "entry.cgi", 1, 3, false, Session),
    def("SYNO.Chat.User.Status", "entry.cgi", 1, 1, false, Session),
    def("SYNO.Chat.User.Avatar", "entry.cgi", 1, 1, false, Session),
    def(
        "SYNO.Chat.User.Preference",
        "entry.cgi",
        1,
        1,
        false,
        Session,
    ),
    def(
        "SYNO.Chat.Webhook.Incoming",
        "entry.cgi",
        1,
        1,
        false,
        Session,
    ),
    def(
        "SYNO.Chat.Webhook.Outgoing",
        "entry.cgi",
        1,
        1,
        false,
        Session,
    ),
    def("SYNO.Chat.Webhook.Slash", "entry.cgi", 1, 2, false, Session),
    def(
        "SYNO.Chat.Webhook.BuiltIn",
        "entry.cgi",
        1,
        2,
        false,
        Session,
    ),
    def(
        "SYNO.Chat.Webhook.Broadcast",
        "entry.cgi",
        1,
        1,
        false,
        Session,
    ),
    def("SYNO.Chat.Bot", "entry.cgi", 1, 1, false, Session),
    def("SYNO.Chat.External", "entry.cgi", 1, 3, false, External),
    def("SYNO.Chat.Post", "entry.cgi", 1, 8, false, Session),
    def("SYNO.Chat.Post.File", "entry.cgi", 1, 2, false, Session),
    def(
        "SYNO.Chat.Post.Attachment",
        "entry.cgi",
        1,
        1,
        false,
        Session,
    ),
    def("SYNO.Chat.Post.Reaction", "entry.cgi", 1, 1, false, Session),
    def("SYNO.Chat.Post.Reminder", "entry.cgi", 1, 1, false, Session),
    def("SYNO.Chat.Post.Schedule", "entry.cgi", 1, 1, false, Session),
    def("SYNO.Chat.Post.Vote", "entry.cgi", 1, 1, false, Session),
    def("SYNO.Chat.Chatbot", "entry.cgi", 1, 1, false, Session),
    def("SYNO.Chat.Sticker", "entry.cgi", 1, 2, false, Session),
    def("SYNO.Chat.Admin.Setting", "entry.cgi", 1, 5, false, Session),
    def("SYNO.Chat.App", "entry.cgi", 1, 1, false, Session),
    def("SYNO.Chat.Misc", "entry.cgi", 1, 1, false, Session),
];

pub(crate) fn find(name: &str) -> Option<&'static ApiDef> {
    APIS.iter().find(|a| a.name == name)
}

/// Which CGI may serve an API: the legacy CGIs only serve their own API, entry.cgi serves all.
pub(crate) fn path_serves(path: &str, api: &str) -> bool {
    match path {
        "/webapi/query.cgi" => api == "SYNO.API.Info",
        "/webapi/auth.cgi" => api == "SYNO.API.Auth",
        "/webapi/encryption.cgi" => api == "SYNO.API.Encryption",
        _ => true,
    }
}

pub(crate) fn is_known_path(path: &str) -> bool {
    matches!(
        path,
        "/webapi/query.cgi" | "/webapi/auth.cgi" | "/webapi/entry.cgi" | "/webapi/encryption.cgi"
    ) || path
        .strip_prefix("/webapi/entry.cgi/")
        .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
}

/// An API of the Chat package (what a NAS whose Chat is stopped does not offer).
pub fn is_chat(name: &str) -> bool {
    name.starts_with("SYNO.Chat.")
}
