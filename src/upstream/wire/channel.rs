//! DSM's wire form of channels and users (`Channel.list`, `Channel.Named.create`, `User.list`
//! and their `External` twins) and their conversions into the API's [`Channel`] and [`User`].

use std::borrow::Cow;

use serde::Deserialize;

use super::{invalid, optional_id};
use crate::domain::{Channel, ChannelId, ChannelKind, ChannelType, User, UserId, UserProps};
use crate::upstream::error::Result;

/// A channel as DSM lists it; `purpose`, `create_at` and the rest are skipped.
#[derive(Deserialize)]
pub(in crate::upstream) struct WireChannel<'a> {
    channel_id: ChannelId,
    #[serde(default, borrow)]
    name: Cow<'a, str>,
    /// Empty when DSM leaves it out.
    #[serde(rename = "type", default, borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    members: Vec<u64>,
    /// 0: no creator (PROTOCOL.md [C4]).
    #[serde(default)]
    creator_id: Option<u64>,
    #[serde(default)]
    total_member_count: Option<u64>,
    #[serde(default)]
    is_joined: Option<bool>,
    #[serde(default)]
    last_post_at: Option<u64>,
    #[serde(default)]
    last_view_at: Option<u64>,
    #[serde(default)]
    unread: Option<u64>,
    #[serde(default)]
    encrypted: Option<bool>,
}

impl WireChannel<'_> {
    /// A listed channel. A type this gateway does not know becomes [`ChannelKind::Unknown`]
    /// (PROTOCOL.md [C4]): one new kind of conversation must not make the whole list fail.
    pub(in crate::upstream) fn into_channel(self) -> Result<Channel> {
        let kind = ChannelKind::from_word(&self.kind);
        self.convert(kind, None)
    }

    /// What `Channel.Named.create` answered: at least the new channel's id; a name or type it
    /// leaves out is the one just sent.
    pub(in crate::upstream) fn into_created(
        self,
        name: &str,
        kind: ChannelType,
    ) -> Result<Channel> {
        let kind = match &*self.kind {
            "" => kind.into(),
            word => ChannelKind::from_word(word),
        };
        self.convert(kind, Some(name))
    }

    fn convert(self, kind: ChannelKind, sent_name: Option<&str>) -> Result<Channel> {
        let name = match (self.name, sent_name) {
            (name, Some(sent)) if name.is_empty() => sent.to_owned(),
            (name, _) => name.into_owned(),
        };
        Ok(Channel {
            channel_id: self.channel_id,
            name,
            kind,
            members: self
                .members
                .into_iter()
                .map(|id| UserId::new(id).map_err(|e| invalid("channel member", e)))
                .collect::<Result<_>>()?,
            creator_id: optional_id("channel", self.creator_id.unwrap_or(0), UserId::new)?,
            total_member_count: self.total_member_count,
            is_joined: self.is_joined,
            last_post_at: self.last_post_at,
            last_view_at: self.last_view_at,
            unread: self.unread,
            encrypted: self.encrypted,
        })
    }
}

#[derive(Deserialize)]
struct WireUserProps<'a> {
    #[serde(default, borrow)]
    email: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    description: Option<Cow<'a, str>>,
}

/// A user as `User.list` and `External`'s `user_list` send it; `avatar_version` and the rest
/// are skipped.
#[derive(Deserialize)]
pub(in crate::upstream) struct WireUser<'a> {
    user_id: UserId,
    #[serde(default, borrow)]
    username: Cow<'a, str>,
    #[serde(default, borrow)]
    nickname: Cow<'a, str>,
    #[serde(default, borrow)]
    status: Option<Cow<'a, str>>,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    is_disabled: bool,
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    user_props: Option<WireUserProps<'a>>,
}

impl WireUser<'_> {
    pub(in crate::upstream) fn into_user(self) -> Result<User> {
        Ok(User {
            user_id: self.user_id,
            username: self.username.into_owned(),
            nickname: self.nickname.into_owned(),
            status: self.status.map(Cow::into_owned),
            deleted: self.deleted,
            is_disabled: self.is_disabled,
            kind: self.kind.map(Cow::into_owned),
            user_props: self.user_props.map(|props| UserProps {
                email: props.email.map(Cow::into_owned),
                description: props.description.map(Cow::into_owned),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::assert_renames_are_noticed;
    use super::*;

    /// A channel as DSM 7 lists it, with two fields the API drops.
    const DSM_CHANNEL: &str = r#"{"channel_id":3,"name":"ops","type":"private","members":[1,8],"creator_id":8,"total_member_count":2,"is_joined":true,"last_post_at":1700000061000,"last_view_at":1700000050000,"unread":2,"encrypted":false,"purpose":"on call","create_at":1690000000000}"#;

    /// A user as DSM 7 lists it.
    const DSM_USER: &str = r#"{"user_id":8,"username":"alice","nickname":"Alice","status":"online","deleted":true,"is_disabled":true,"type":"user","avatar_version":3,"user_props":{"email":"alice@example.org","description":"SRE"}}"#;

    fn channel(json: &str) -> Result<Channel> {
        serde_json::from_str::<WireChannel>(json)
            .map_err(|e| invalid("test", e.to_string()))?
            .into_channel()
    }

    fn user(json: &str) -> Result<User> {
        serde_json::from_str::<WireUser>(json)
            .map_err(|e| invalid("test", e.to_string()))?
            .into_user()
    }

    #[test]
    fn a_dsm_channel_becomes_the_api_channel_field_by_field() {
        let channel = channel(DSM_CHANNEL).unwrap();
        assert_eq!(
            serde_json::to_string(&channel).unwrap(),
            r#"{"channel_id":3,"name":"ops","type":"private","members":[1,8],"creator_id":8,"total_member_count":2,"is_joined":true,"last_post_at":1700000061000,"last_view_at":1700000050000,"unread":2,"encrypted":false}"#
        );
        assert_eq!(channel.kind, ChannelKind::Private);
        assert_eq!(channel.creator_id.map(UserId::get), Some(8));
    }

    #[test]
    fn a_renamed_dsm_channel_field_fails_the_conversion_or_changes_the_answer() {
        assert_renames_are_noticed(
            DSM_CHANNEL,
            &[
                "name",
                "type",
                "members",
                "creator_id",
                "total_member_count",
                "is_joined",
                "last_post_at",
                "last_view_at",
                "unread",
                "encrypted",
            ],
            &["channel_id"],
            channel,
        );
    }

    #[test]
    fn every_documented_channel_type_is_served_as_dsm_spells_it() {
        for word in ["public", "private", "anonymous", "chatbot", "synobot"] {
            let json = DSM_CHANNEL.replace(r#""type":"private""#, &format!(r#""type":"{word}""#));
            let channel = channel(&json).unwrap();
            assert_eq!(channel.kind.as_str(), word);
            assert_eq!(serde_json::to_value(&channel).unwrap()["type"], word);
        }
    }

    #[test]
    fn an_unknown_channel_type_is_listed_as_unknown_instead_of_failing_the_list() {
        let forum = DSM_CHANNEL.replace(r#""type":"private""#, r#""type":"forum""#);
        let list = format!("[{DSM_CHANNEL},{forum}]");
        let items: serde_json::Value = serde_json::from_str(&list).unwrap();
        let channels =
            super::super::list_from_value("channels", &items, WireChannel::into_channel).unwrap();
        assert_eq!(channels.len(), 2);
        assert_eq!(channels[1].kind, ChannelKind::Unknown);
        assert_eq!(
            serde_json::to_value(&channels[1]).unwrap()["type"],
            "unknown"
        );
    }

    #[test]
    fn dsm_s_zero_creator_is_no_creator_and_bad_members_are_refused() {
        let system =
            channel(&DSM_CHANNEL.replace(r#""creator_id":8"#, r#""creator_id":0"#)).unwrap();
        assert_eq!(system.creator_id, None);
        assert!(
            serde_json::to_value(&system)
                .unwrap()
                .get("creator_id")
                .is_none()
        );
        assert!(channel(&DSM_CHANNEL.replace("[1,8]", "[0,8]")).is_err());
        assert!(channel(&DSM_CHANNEL.replace(r#""channel_id":3"#, r#""channel_id":0"#)).is_err());
    }

    #[test]
    fn a_created_channel_is_completed_from_what_was_sent() {
        let wire: WireChannel = serde_json::from_str(r#"{"channel_id":9}"#).unwrap();
        let created = wire.into_created("ops", ChannelType::Private).unwrap();
        assert_eq!(
            serde_json::to_string(&created).unwrap(),
            r#"{"channel_id":9,"name":"ops","type":"private","members":[]}"#
        );
        // What DSM did answer wins over what was sent.
        let wire: WireChannel =
            serde_json::from_str(r#"{"channel_id":9,"name":"ops2","type":"public"}"#).unwrap();
        let created = wire.into_created("ops", ChannelType::Private).unwrap();
        assert_eq!(
            (created.name.as_str(), created.kind),
            ("ops2", ChannelKind::Public)
        );
    }

    #[test]
    fn a_channel_name_without_escapes_is_borrowed_from_the_body() {
        let wire: WireChannel = serde_json::from_str(DSM_CHANNEL).unwrap();
        assert!(matches!(wire.name, Cow::Borrowed("ops")));
        assert!(matches!(wire.kind, Cow::Borrowed("private")));
    }

    #[test]
    fn a_dsm_user_becomes_the_api_user_field_by_field() {
        assert_eq!(
            serde_json::to_string(&user(DSM_USER).unwrap()).unwrap(),
            r#"{"user_id":8,"username":"alice","nickname":"Alice","status":"online","deleted":true,"is_disabled":true,"type":"user","user_props":{"email":"alice@example.org","description":"SRE"}}"#
        );
        // Missing fields take the defaults the API has always served.
        assert_eq!(
            serde_json::to_string(&user(r#"{"user_id":8}"#).unwrap()).unwrap(),
            r#"{"user_id":8,"username":"","nickname":"","deleted":false,"is_disabled":false}"#
        );
    }

    #[test]
    fn a_renamed_dsm_user_field_fails_the_conversion_or_changes_the_answer() {
        assert_renames_are_noticed(
            DSM_USER,
            &[
                "username",
                "nickname",
                "status",
                "deleted",
                "is_disabled",
                "type",
                "user_props",
                "email",
                "description",
            ],
            &["user_id"],
            user,
        );
    }
}
