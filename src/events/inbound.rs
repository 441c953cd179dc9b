//! What Chat sends to an inbound URL, read into an event (upstream/PROTOCOL.md [I1]). Pure: no HTTP,
//! no store.

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::{ButtonAction, ButtonClick, EventKind, Inbound, NewEvent};
use crate::config::InboundKind;

/// Why a call was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No token, or not the configured one.
    BadToken,
    /// A field that must be a number is not (the message names it).
    Malformed(String),
}

/// The fields of a call, all strings as Chat sends them (form or JSON), and the button of a
/// button click.
pub struct Fields {
    fields: Vec<(String, String)>,
    button: Option<ButtonClick>,
}

impl Fields {
    /// A form-urlencoded body. A click on a chatbot's button comes as a form with one field,
    /// `payload`, holding JSON: `{actions, callback_id, post_id, token, user: {user_id,
    /// username}}` (upstream/PROTOCOL.md [I1]); its fields are read as a call's.
    pub fn from_form(body: &[u8]) -> Self {
        let fields: Vec<(String, String)> = form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let value = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        // A click: the lone `payload` field, or one that holds a click's JSON beside other
        // fields (a `token` outside it too), which would otherwise be an empty message.
        if let Some(payload) = value("payload")
            && (value("token").is_none() || is_click(payload))
        {
            let Ok(mut click) = Self::button_click(payload) else {
                // Its token is inside the payload that cannot be read (there is none beside
                // it): refused as any call without the token (403), telling the caller nothing
                // of the body.
                return Self {
                    fields: Vec::new(),
                    button: None,
                };
            };
            if click.get("token").is_none()
                && let Some(outer) = value("token")
            {
                click.fields.push(("token".to_owned(), outer.clone()));
            }
            return click;
        }
        Self {
            fields,
            button: None,
        }
    }

    /// A JSON object body; numbers and booleans are taken as their text, like a form.
    pub fn from_json(body: &[u8]) -> Result<Self, Refusal> {
        let map = json_object(body, "the body")?;
        Ok(Self {
            fields: map
                .into_iter()
                .filter_map(|(k, v)| Some((k, as_text(v)?)))
                .collect(),
            button: None,
        })
    }

    fn button_click(payload: &str) -> Result<Self, Refusal> {
        let mut map = json_object(payload.as_bytes(), "payload")?;
        let mut fields = Vec::new();
        for name in ["token", "post_id"] {
            if let Some(text) = map.remove(name).and_then(as_text) {
                fields.push((name.to_owned(), text));
            }
        }
        if let Some(serde_json::Value::Object(mut user)) = map.remove("user") {
            for name in ["user_id", "username"] {
                if let Some(text) = user.remove(name).and_then(as_text) {
                    fields.push((name.to_owned(), text));
                }
            }
        }
        let actions = match map.remove("actions") {
            Some(serde_json::Value::Array(list)) => list
                .into_iter()
                .filter_map(|action| match action {
                    serde_json::Value::Object(mut a) => {
                        let mut take = |name: &str| a.remove(name).and_then(as_text);
                        Some(ButtonAction {
                            kind: take("type"),
                            name: take("name"),
                            value: take("value"),
                            text: take("text"),
                            style: take("style"),
                        })
                    }
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(Self {
            fields,
            button: Some(ButtonClick {
                callback_id: map.remove("callback_id").and_then(as_text),
                actions,
            }),
        })
    }

    /// The name of a field whose value holds a NUL character, if one does: text no store
    /// column may hold (PostgreSQL refuses it), so the call is refused on every backend alike.
    fn holding_nul(&self) -> Option<&str> {
        let nul = |v: &str| v.contains('\0');
        if let Some((name, _)) = self.fields.iter().find(|(_, v)| nul(v)) {
            return Some(name);
        }
        let button = self.button.as_ref()?;
        let in_actions = button.actions.iter().any(|a| {
            [&a.kind, &a.name, &a.value, &a.text, &a.style]
                .into_iter()
                .flatten()
                .any(|v| nul(v))
        });
        (in_actions || button.callback_id.as_deref().is_some_and(nul)).then_some("payload")
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.is_empty()).map(str::to_owned)
    }

    /// A number field. Read after the token is checked, so a value that is not an integer
    /// (`1647060330657.0`) loses the field, not the event: it is stored without it, and logged.
    fn number(&self, name: &str) -> Option<i64> {
        let raw = self.get(name).map(str::trim).filter(|v| !v.is_empty())?;
        let whole = raw.parse::<i64>().ok().or_else(|| {
            let float = raw
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && f.fract() == 0.0)?;
            // Within i64 and exact (2^53): beyond, a float cannot say which integer it was.
            (float.abs() <= 9_007_199_254_740_992.0).then_some(float as i64)
        });
        if whole.is_none() {
            let shown: String = raw.chars().take(40).collect();
            tracing::warn!(field = name, value = %shown, "Chat sent a field that should be an integer and is not; the event is stored without it");
        }
        whole
    }
}

/// Whether a `payload` field holds a button click's JSON (`actions` or `callback_id`).
fn is_click(payload: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(payload)
        .is_ok_and(|value| value.get("actions").is_some() || value.get("callback_id").is_some())
}

/// A JSON object, or why not (`what` names it).
fn json_object(
    body: &[u8],
    what: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, Refusal> {
    match serde_json::from_slice(body) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(Refusal::Malformed(format!("{what} must be a JSON object"))),
        Err(e) => Err(Refusal::Malformed(format!("{what} is not JSON: {e}"))),
    }
}

/// A string, number or boolean as the text a form would carry.
fn as_text(value: serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Checks the token against the configured one (constant time) and reads the call into an
/// event for `inbound_name`.
pub fn accept(inbound_name: &str, inbound: &Inbound, fields: &Fields) -> Result<NewEvent, Refusal> {
    accept_with(inbound_name, inbound, fields, &[])
}

/// The token Chat sent (empty when none).
pub fn token(fields: &Fields) -> &str {
    fields.get("token").unwrap_or_default()
}

/// Whether `given` is one of `tokens`, compared in constant time (each one fully).
pub fn token_matches(given: &str, tokens: &[&SecretString]) -> bool {
    let given = given.as_bytes();
    let mut found = subtle::Choice::from(0);
    for token in tokens {
        found |= given.ct_eq(token.expose_secret().as_bytes());
    }
    !given.is_empty() && bool::from(found)
}

/// Like [`accept`], with DSM's tokens for the inbound's kind accepted too.
pub fn accept_with(
    inbound_name: &str,
    inbound: &Inbound,
    fields: &Fields,
    dsm_tokens: &[SecretString],
) -> Result<NewEvent, Refusal> {
    let accepted: Vec<&SecretString> = inbound.token.iter().chain(dsm_tokens).collect();
    if !token_matches(token(fields), &accepted) {
        return Err(Refusal::BadToken);
    }
    if let Some(name) = fields.holding_nul() {
        return Err(Refusal::Malformed(format!(
            "{name} holds a NUL character, which no event may hold"
        )));
    }
    if let Some(button) = &fields.button {
        return button_click(inbound_name, fields, button);
    }
    let text = fields.get("text").unwrap_or_default().to_owned();
    let trigger_word = fields.text("trigger_word");
    let (kind, command) = match inbound.kind {
        InboundKind::OutgoingWebhook if trigger_word.is_some() => (EventKind::TriggerWord, None),
        InboundKind::OutgoingWebhook => (EventKind::Message, None),
        InboundKind::Chatbot => (EventKind::Chatbot, None),
        // The whole line comes as `text`: the command is its first word.
        InboundKind::SlashCommand => (
            EventKind::SlashCommand,
            text.split_whitespace()
                .next()
                .filter(|w| w.starts_with('/'))
                .map(str::to_owned),
        ),
    };
    Ok(NewEvent {
        kind,
        inbound: inbound_name.to_owned(),
        channel_id: fields.number("channel_id"),
        channel_name: fields.text("channel_name"),
        // Undocumented (a number in real captures): kept when it is one, never a refusal.
        channel_type: fields
            .text("channel_type")
            .and_then(|t| t.trim().parse().ok()),
        user_id: fields.number("user_id"),
        username: fields.text("username"),
        // Chat numbers posts from 1; 0 or absent means "no post" (no deduplication).
        post_id: fields.number("post_id").filter(|id| *id > 0),
        thread_id: fields.number("thread_id"),
        timestamp: fields.number("timestamp"),
        text,
        trigger_word: trigger_word.filter(|_| kind == EventKind::TriggerWord),
        command,
        button: None,
    })
}

/// A click on a chatbot's button. Chat names neither the channel nor a time: the channel is
/// the high half of the message's post id (upstream/PROTOCOL.md [C4]). Every click is an event
/// (a user may click twice, and no id tells two clicks apart).
fn button_click(
    inbound_name: &str,
    fields: &Fields,
    button: &ButtonClick,
) -> Result<NewEvent, Refusal> {
    let post_id = fields.number("post_id").filter(|id| *id > 0);
    Ok(NewEvent {
        kind: EventKind::ButtonClick,
        inbound: inbound_name.to_owned(),
        channel_id: post_id.map(|id| id >> 32).filter(|id| *id > 0),
        channel_name: None,
        channel_type: None,
        user_id: fields.number("user_id"),
        username: fields.text("username"),
        post_id,
        thread_id: None,
        timestamp: None,
        text: button
            .actions
            .first()
            .and_then(|a| a.value.clone())
            .unwrap_or_default(),
        trigger_word: None,
        command: None,
        button: Some(button.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbound(kind: InboundKind) -> Inbound {
        Inbound {
            token: Some(SecretString::from("a".repeat(64))),
            kind,
            verify: crate::config::InboundVerify::Token,
        }
    }

    fn form(extra: &str) -> Fields {
        Fields::from_form(format!("token={}&{extra}", "a".repeat(64)).as_bytes())
    }

    #[test]
    fn an_outgoing_webhook_post_with_a_trigger_word() {
        let event = accept(
            "ops",
            &inbound(InboundKind::OutgoingWebhook),
            &form("channel_id=2&channel_name=general&channel_type=1&user_id=3&username=alice&post_id=146028888230&thread_id=0&timestamp=1647060330657&text=%21deploy+web&trigger_word=%21deploy"),
        )
        .unwrap();
        assert_eq!(event.kind, EventKind::TriggerWord);
        assert_eq!(event.inbound, "ops");
        assert_eq!(event.channel_id, Some(2));
        assert_eq!(event.channel_name.as_deref(), Some("general"));
        assert_eq!(event.user_id, Some(3));
        assert_eq!(event.username.as_deref(), Some("alice"));
        assert_eq!(event.post_id, Some(146_028_888_230));
        assert_eq!(event.thread_id, Some(0));
        assert_eq!(event.timestamp, Some(1_647_060_330_657));
        assert_eq!(event.text, "!deploy web");
        assert_eq!(event.trigger_word.as_deref(), Some("!deploy"));
        assert_eq!(event.command, None);
    }

    #[test]
    fn kinds_follow_the_configured_integration() {
        let message = accept(
            "ops",
            &inbound(InboundKind::OutgoingWebhook),
            &form("text=hi&trigger_word="),
        )
        .unwrap();
        assert_eq!(message.kind, EventKind::Message);
        assert_eq!(message.trigger_word, None);
        let slash = accept(
            "cmd",
            &inbound(InboundKind::SlashCommand),
            &form("text=%2Fdeploy+web+now&user_id=3"),
        )
        .unwrap();
        assert_eq!(slash.kind, EventKind::SlashCommand);
        assert_eq!(slash.command.as_deref(), Some("/deploy"));
        assert_eq!(slash.post_id, None);
        let bot = accept("bot", &inbound(InboundKind::Chatbot), &form("text=help")).unwrap();
        assert_eq!(bot.kind, EventKind::Chatbot);
    }

    #[test]
    fn json_bodies_are_read_like_forms() {
        let body = format!(
            r#"{{"token":"{}","channel_id":2,"post_id":"7","text":"hi"}}"#,
            "a".repeat(64)
        );
        let event = accept(
            "ops",
            &inbound(InboundKind::OutgoingWebhook),
            &Fields::from_json(body.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!((event.channel_id, event.post_id), (Some(2), Some(7)));
        assert!(matches!(
            Fields::from_json(b"[1]"),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn a_wrong_missing_or_partial_token_is_refused() {
        let hook = inbound(InboundKind::OutgoingWebhook);
        for body in [
            "text=hi".to_owned(),
            "token=&text=hi".to_owned(),
            format!("token={}&text=hi", "b".repeat(64)),
            format!("token={}&text=hi", "a".repeat(63)),
            format!("token={}&text=hi", "a".repeat(65)),
        ] {
            assert_eq!(
                accept("ops", &hook, &Fields::from_form(body.as_bytes())),
                Err(Refusal::BadToken),
                "{body}"
            );
        }
    }

    #[test]
    fn dsm_tokens_are_accepted_when_the_inbound_has_none() {
        let dsm = Inbound {
            token: None,
            kind: InboundKind::SlashCommand,
            verify: crate::config::InboundVerify::Dsm,
        };
        let tokens = [
            SecretString::from("d".repeat(64)),
            SecretString::from("e".repeat(64)),
        ];
        let body = format!("token={}&text=%2Fx", "e".repeat(64));
        assert!(accept_with("c", &dsm, &Fields::from_form(body.as_bytes()), &tokens).is_ok());
        for body in ["text=x".to_owned(), format!("token={}", "f".repeat(64))] {
            assert_eq!(
                accept_with("c", &dsm, &Fields::from_form(body.as_bytes()), &tokens),
                Err(Refusal::BadToken)
            );
        }
        assert_eq!(
            accept("c", &dsm, &Fields::from_form(body.as_bytes())),
            Err(Refusal::BadToken),
            "no DSM tokens: nothing matches"
        );
    }

    /// A NUL character is refused as malformed (after the token), in a field or in a button's
    /// payload alike, on every backend: PostgreSQL cannot store it.
    #[test]
    fn a_nul_character_is_refused_after_the_token() {
        let hook = inbound(InboundKind::OutgoingWebhook);
        assert_eq!(
            accept("ops", &hook, &form("text=a%00b")),
            Err(Refusal::Malformed(
                "text holds a NUL character, which no event may hold".into()
            ))
        );
        assert_eq!(
            accept("ops", &hook, &Fields::from_form(b"token=x&text=%00")),
            Err(Refusal::BadToken)
        );
        let payload = format!(
            r#"{{"actions":[{{"type":"button","value":"a\u0000"}}],"token":"{}"}}"#,
            "a".repeat(64)
        );
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload)
            .finish();
        let click = Fields::from_form(body.as_bytes());
        assert!(matches!(
            accept("ops", &inbound(InboundKind::Chatbot), &click),
            Err(Refusal::Malformed(m)) if m.starts_with("payload")
        ));
    }

    /// The form Chat sends when a button is clicked (FHEM's `__botCGIcheckPayload` reads it).
    #[test]
    fn a_button_click_is_read_from_its_payload() {
        let payload = format!(
            r#"{{"actions":[{{"type":"button","name":"approve","value":"approve 42","text":"Approve","style":"green"}}],"callback_id":"deploy-42","post_id":8589934605,"token":"{}","user":{{"user_id":3,"username":"alice"}}}}"#,
            "a".repeat(64)
        );
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload)
            .finish();
        let fields = Fields::from_form(body.as_bytes());
        for kind in [InboundKind::Chatbot, InboundKind::OutgoingWebhook] {
            let event = accept("helper", &inbound(kind), &fields).unwrap();
            assert_eq!(event.kind, EventKind::ButtonClick);
            assert_eq!(event.post_id, Some(8_589_934_605));
            assert_eq!(event.channel_id, Some(2), "8589934605 >> 32");
            assert_eq!(
                (event.user_id, event.username.as_deref()),
                (Some(3), Some("alice"))
            );
            assert_eq!(event.text, "approve 42");
            let button = event.button.unwrap();
            assert_eq!(button.callback_id.as_deref(), Some("deploy-42"));
            assert_eq!(
                button.actions,
                [ButtonAction {
                    kind: Some("button".into()),
                    name: Some("approve".into()),
                    value: Some("approve 42".into()),
                    text: Some("Approve".into()),
                    style: Some("green".into()),
                }]
            );
        }
        // The token inside the payload is checked like any other.
        let wrong = body.replace(&"a".repeat(64), &"b".repeat(64));
        let fields = Fields::from_form(wrong.as_bytes());
        assert_eq!(
            accept("helper", &inbound(InboundKind::Chatbot), &fields),
            Err(Refusal::BadToken)
        );
        // A payload that cannot be read holds no token that could be checked: refused as
        // any call without it (403), the caller told nothing of the body.
        for bad in [
            "payload=%7Bnot+json",
            "payload=%5B1%5D",
            "payload=hello&text=x",
        ] {
            let fields = Fields::from_form(bad.as_bytes());
            assert_eq!(
                accept("helper", &inbound(InboundKind::Chatbot), &fields),
                Err(Refusal::BadToken),
                "{bad}"
            );
        }
    }

    /// The token was right: a number Chat wrote otherwise loses that field, not the event (Chat
    /// does not resend a refused call), and an integer written as a float is read.
    #[test]
    fn a_malformed_number_loses_its_field_not_the_event() {
        let event = accept(
            "ops",
            &inbound(InboundKind::OutgoingWebhook),
            &form("channel_id=abc&user_id=4&timestamp=1647060330657.0&post_id=1.5&text=hi"),
        )
        .unwrap();
        assert_eq!(event.channel_id, None);
        assert_eq!(event.user_id, Some(4));
        assert_eq!(event.timestamp, Some(1_647_060_330_657));
        assert_eq!(event.post_id, None);
        assert_eq!(event.text, "hi");
    }

    /// A click whose form has a `token` beside its `payload` is still a click (it was stored
    /// as an empty chatbot message), checked with the payload's token or else the outer one.
    #[test]
    fn a_click_with_a_token_beside_its_payload_is_a_click() {
        let token = "a".repeat(64);
        let chatbot = inbound(InboundKind::Chatbot);
        for (inner, outer) in [(true, true), (false, true)] {
            let payload = format!(
                r#"{{"actions":[{{"type":"button","value":"approve"}}],"callback_id":"deploy"{}}}"#,
                if inner {
                    format!(r#","token":"{token}""#)
                } else {
                    String::new()
                }
            );
            let mut body = form_urlencoded::Serializer::new(String::new());
            body.append_pair("payload", &payload);
            if outer {
                body.append_pair("token", &token);
            }
            let click = Fields::from_form(body.finish().as_bytes());
            let event = accept("ops", &chatbot, &click).unwrap();
            assert_eq!(event.kind, EventKind::ButtonClick, "inner {inner}");
            assert_eq!(event.button.unwrap().callback_id.as_deref(), Some("deploy"));
        }
        // A `payload` that is no click beside a token: the call's own fields, as before.
        let fields = Fields::from_form(format!("token={token}&payload=hello&text=x").as_bytes());
        let event = accept("ops", &chatbot, &fields).unwrap();
        assert_eq!(event.kind, EventKind::Chatbot);
    }
}
