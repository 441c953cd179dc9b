//! DSM's wire form of integrations (webhook, slash-command and chatbot lists, and what a
//! `create` answers) and their conversions into the API's types. The list structs have no
//! `token` field: DSM's integration tokens are skipped while decoding and never reach the API's
//! types; the only token converted is the one a `create` just issued.

use std::borrow::Cow;

use serde::Deserialize;

use super::optional_id;
use crate::domain::{ChannelId, Chatbot, ChatbotProps, CreatedIntegration, UserId, Webhook};
use crate::upstream::error::Result;

/// DSM sends empty strings for settings a kind of integration does not have: read as none.
fn non_empty(text: Option<Cow<'_, str>>) -> Option<String> {
    text.filter(|t| !t.is_empty()).map(Cow::into_owned)
}

/// An incoming or outgoing webhook or a slash command as DSM lists it (PROTOCOL.md [C1]);
/// `token`, `app_id`, `bot_type` and the rest are skipped.
#[derive(Deserialize)]
pub(in crate::upstream) struct WireWebhook<'a> {
    user_id: UserId,
    #[serde(default, borrow)]
    name: Cow<'a, str>,
    #[serde(default, borrow)]
    nickname: Cow<'a, str>,
    /// 0: any channel (PROTOCOL.md [C4]).
    #[serde(default)]
    channel_id: u64,
    #[serde(default)]
    is_disabled: bool,
    #[serde(default)]
    creator_id: Option<u64>,
    #[serde(default)]
    create_at: Option<u64>,
    #[serde(default, borrow)]
    url: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    trigger_word: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    command: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    icon_url: Option<Cow<'a, str>>,
    #[serde(default)]
    events: Option<Vec<String>>,
}

impl WireWebhook<'_> {
    pub(in crate::upstream) fn into_webhook(self) -> Result<Webhook> {
        Ok(Webhook {
            user_id: self.user_id,
            name: self.name.into_owned(),
            nickname: self.nickname.into_owned(),
            channel_id: optional_id("webhook", self.channel_id, ChannelId::new)?,
            is_disabled: self.is_disabled,
            creator_id: optional_id("webhook", self.creator_id.unwrap_or(0), UserId::new)?,
            create_at: self.create_at,
            url: non_empty(self.url),
            trigger_word: non_empty(self.trigger_word),
            command: non_empty(self.command),
            icon_url: non_empty(self.icon_url),
            events: self.events,
        })
    }
}

#[derive(Default, Deserialize)]
struct WireChatbotProps<'a> {
    #[serde(default)]
    hide_from_user: bool,
    #[serde(default, borrow)]
    purpose: Cow<'a, str>,
    #[serde(default, borrow)]
    welcome_note: Cow<'a, str>,
}

/// A chatbot as `Chatbot.list` sends it; `token`, `app_id` and `bot_type` are skipped.
#[derive(Deserialize)]
pub(in crate::upstream) struct WireChatbot<'a> {
    user_id: UserId,
    #[serde(default, borrow)]
    nickname: Cow<'a, str>,
    #[serde(default)]
    is_disabled: bool,
    #[serde(default)]
    creator_id: Option<u64>,
    #[serde(default)]
    create_at: Option<u64>,
    #[serde(default, borrow)]
    url: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    chatbot_props: WireChatbotProps<'a>,
}

impl WireChatbot<'_> {
    pub(in crate::upstream) fn into_chatbot(self) -> Result<Chatbot> {
        let props = self.chatbot_props;
        Ok(Chatbot {
            user_id: self.user_id,
            nickname: self.nickname.into_owned(),
            is_disabled: self.is_disabled,
            creator_id: optional_id("chatbot", self.creator_id.unwrap_or(0), UserId::new)?,
            create_at: self.create_at,
            url: non_empty(self.url),
            chatbot_props: ChatbotProps {
                hide_from_user: props.hide_from_user,
                purpose: props.purpose.into_owned(),
                welcome_note: props.welcome_note.into_owned(),
            },
        })
    }
}

/// What a webhook's, slash command's or chatbot's `create` answers: the new bot user and its
/// token.
#[derive(Deserialize)]
pub(in crate::upstream) struct WireCreatedIntegration {
    user_id: UserId,
    token: String,
}

impl WireCreatedIntegration {
    pub(in crate::upstream) fn into_created(self) -> Result<CreatedIntegration> {
        Ok(CreatedIntegration {
            user_id: self.user_id,
            token: self.token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::invalid;
    use super::super::tests::assert_renames_are_noticed;
    use super::*;

    /// An outgoing webhook as DSM 7 lists it, with its token (PROTOCOL.md [C1]).
    const DSM_WEBHOOK: &str = r#"{"user_id":7,"token":"SECRET-WEBHOOK-TOKEN","name":"CI","nickname":"CI bot","channel_id":1,"app_id":0,"bot_type":"outgoing","type":"bot","create_at":1700000000000,"creator_id":8,"deleted":false,"is_disabled":true,"icon_url":"https://ci.example.org/i.png","url":"https://ci.example.org/chat","trigger_word":"deploy","command":"ci","description":"","events":["message"]}"#;

    /// A chatbot as `Chatbot.list` sends it.
    const DSM_CHATBOT: &str = r#"{"user_id":9,"nickname":"helper","token":"SECRET-BOT-TOKEN","app_id":0,"bot_type":"chatbot","create_at":1700000000000,"creator_id":8,"is_disabled":true,"url":"https://bot.example.org/chat","chatbot_props":{"hide_from_user":true,"purpose":"Answers","welcome_note":"Hi"}}"#;

    fn webhook(json: &str) -> Result<Webhook> {
        serde_json::from_str::<WireWebhook>(json)
            .map_err(|e| invalid("test", e.to_string()))?
            .into_webhook()
    }

    fn chatbot(json: &str) -> Result<Chatbot> {
        serde_json::from_str::<WireChatbot>(json)
            .map_err(|e| invalid("test", e.to_string()))?
            .into_chatbot()
    }

    #[test]
    fn a_dsm_webhook_becomes_the_api_webhook_field_by_field_without_its_token() {
        let served = serde_json::to_string(&webhook(DSM_WEBHOOK).unwrap()).unwrap();
        assert_eq!(
            served,
            r#"{"user_id":7,"name":"CI","nickname":"CI bot","channel_id":1,"is_disabled":true,"creator_id":8,"create_at":1700000000000,"url":"https://ci.example.org/chat","trigger_word":"deploy","command":"ci","icon_url":"https://ci.example.org/i.png","events":["message"]}"#
        );
        assert!(!served.contains("SECRET"));
    }

    #[test]
    fn a_renamed_dsm_webhook_field_fails_the_conversion_or_changes_the_answer() {
        assert_renames_are_noticed(
            DSM_WEBHOOK,
            &[
                "name",
                "nickname",
                "channel_id",
                "is_disabled",
                "creator_id",
                "create_at",
                "url",
                "trigger_word",
                "command",
                "icon_url",
                "events",
            ],
            &["user_id"],
            webhook,
        );
    }

    #[test]
    fn empty_settings_are_none_and_channel_zero_is_any_channel() {
        let incoming = r#"{"user_id":7,"name":"CI","channel_id":0,"creator_id":0,"url":"","trigger_word":"","command":"","icon_url":""}"#;
        let webhook = webhook(incoming).unwrap();
        assert_eq!(webhook.channel_id, None);
        assert_eq!(webhook.creator_id, None);
        assert_eq!(
            serde_json::to_string(&webhook).unwrap(),
            r#"{"user_id":7,"name":"CI","nickname":"","channel_id":0,"is_disabled":false}"#,
            "channel 0 is still served as 0"
        );
    }

    #[test]
    fn a_dsm_chatbot_becomes_the_api_chatbot_field_by_field_without_its_token() {
        let served = serde_json::to_string(&chatbot(DSM_CHATBOT).unwrap()).unwrap();
        assert_eq!(
            served,
            r#"{"user_id":9,"nickname":"helper","is_disabled":true,"creator_id":8,"create_at":1700000000000,"url":"https://bot.example.org/chat","chatbot_props":{"hide_from_user":true,"purpose":"Answers","welcome_note":"Hi"}}"#
        );
        assert!(!served.contains("SECRET"));
        // Missing settings take the defaults the API has always served.
        assert_eq!(
            serde_json::to_string(&chatbot(r#"{"user_id":9,"url":""}"#).unwrap()).unwrap(),
            r#"{"user_id":9,"nickname":"","is_disabled":false,"chatbot_props":{"hide_from_user":false,"purpose":"","welcome_note":""}}"#
        );
    }

    #[test]
    fn a_renamed_dsm_chatbot_field_fails_the_conversion_or_changes_the_answer() {
        assert_renames_are_noticed(
            DSM_CHATBOT,
            &[
                "nickname",
                "is_disabled",
                "creator_id",
                "create_at",
                "url",
                "chatbot_props",
                "hide_from_user",
                "purpose",
                "welcome_note",
            ],
            &["user_id"],
            chatbot,
        );
    }

    #[test]
    fn a_creation_answer_keeps_its_token_and_needs_both_fields() {
        let created = |json: &str| {
            serde_json::from_str::<WireCreatedIntegration>(json)
                .map_err(|e| invalid("test", e.to_string()))
                .and_then(WireCreatedIntegration::into_created)
        };
        let answer = r#"{"token":"issued-once","user_id":12}"#;
        assert_eq!(
            serde_json::to_string(&created(answer).unwrap()).unwrap(),
            r#"{"user_id":12,"token":"issued-once"}"#
        );
        assert_renames_are_noticed(answer, &[], &["user_id", "token"], created);
    }
}
