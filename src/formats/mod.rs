//! Sender formats: pure functions from what a tool sends (Slack/Mattermost/Teams incoming webhooks,
//! Alertmanager, Grafana, Discord, Webex, Google Chat, Sonarr/Radarr, GitHub/Gitea, generic JSON with a template,
//! plain text) to one Chat text.
//! No actix here: the `/hooks` routes parse the HTTP request and call [`parse_body`] and
//! [`render`].
//!
//! Chat renders links written `<https://url|label>` (Slack's syntax, upstream/PROTOCOL.md [C5]), so
//! links are written that way. Slack mentions, channels and broadcasts, Discord mention tokens
//! and Markdown links, which Chat cannot show, become readable text; nothing is dropped
//! silently. Emphasis (`*b*`, `**b**`) is left as sent (senders-delivery-events B.3: stripping
//! misfires on text like `rate(x[5m])*100`).

mod alertmanager;
mod arr;
mod discord;
mod forge;
mod generic;
mod gitlab;
mod google_chat;
mod grafana;
mod markup;
mod matrix;
pub mod ntfy;
mod slack;
pub mod synology;
mod teams;
mod telegram;
mod webex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use generic::check_template;
pub use markup::plain as plain_markup;

/// The markup helpers, for the fuzz crate (`tests/fuzz`, `make fuzz`) alone: not the
/// gateway's API.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::markup::*;
}

/// What a hook does with the markup Chat shows as typed (senders-delivery-events B.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Markup {
    /// Links, entities and mention tokens converted; emphasis left as sent (lossless).
    #[default]
    Raw,
    /// Also strips emphasis markers and heading marks.
    Plain,
}

/// A sender format, forced by a hook's `format` or detected from the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Slack incoming webhook: `text`, `attachments`, `blocks` (JSON or form `payload=`).
    Slack,
    /// Mattermost incoming webhook: Slack's payload with Markdown text.
    Mattermost,
    /// Prometheus Alertmanager `webhook_configs` (version 4).
    Alertmanager,
    /// Grafana alerting webhook contact point (version 1).
    Grafana,
    /// Discord execute-webhook: `content` and `embeds`.
    Discord,
    /// Sonarr, Radarr, Lidarr and Readarr "Webhook" connections (`eventType`).
    #[serde(
        rename = "arr",
        alias = "sonarr",
        alias = "radarr",
        alias = "lidarr",
        alias = "readarr"
    )]
    Arr,
    /// GitHub, Gitea, Forgejo, Gogs and GitLab native webhooks (push, issues, pull and merge
    /// requests, releases).
    #[serde(
        rename = "forge",
        alias = "github",
        alias = "gitea",
        alias = "forgejo",
        alias = "gogs",
        alias = "gitlab"
    )]
    Forge,
    /// ntfy's publish object (`topic`, `message`, `title`, `tags`, `priority`, `click`), also
    /// as a topic URL's body and headers.
    Ntfy,
    /// Microsoft Teams' Office 365 connector: a MessageCard (answered `200 1`, as it was).
    #[serde(rename = "teams", alias = "msteams")]
    Teams,
    /// Microsoft Teams' Workflows webhook: Adaptive Cards, as a message's attachments or bare
    /// (answered `202`, as Power Automate answers).
    #[serde(rename = "teams_workflows", alias = "workflows")]
    TeamsWorkflows,
    /// Google Chat incoming webhook: `text`, and cards (`cards`, `cardsV2`).
    #[serde(rename = "google_chat", alias = "googlechat", alias = "gchat")]
    GoogleChat,
    /// Webex messages (`markdown` or `text` for a `roomId`), as Alertmanager's `webex_configs`
    /// and Grafana's Webex contact point post them.
    Webex,
    /// Matrix room messages (`msgtype`, `body`, `formatted_body`), as notifiers send them to a
    /// homeserver (the gateway's `/_matrix/client/…` routes).
    Matrix,
    /// Telegram bot messages (`chat_id`, `text`, `parse_mode`), as notifiers send them to the
    /// Bot API (the gateway's `/telegram/bot{token}/sendMessage`).
    Telegram,
    /// Any JSON rendered with the hook's template (or its `title` and `message`/`text` fields).
    Generic,
    /// The body is the text.
    Text,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::Mattermost => "mattermost",
            Self::Alertmanager => "alertmanager",
            Self::Grafana => "grafana",
            Self::Discord => "discord",
            Self::Arr => "arr",
            Self::Forge => "forge",
            Self::Ntfy => "ntfy",
            Self::Teams => "teams",
            Self::TeamsWorkflows => "teams_workflows",
            Self::Webex => "webex",
            Self::Matrix => "matrix",
            Self::Telegram => "telegram",
            Self::GoogleChat => "google_chat",
            Self::Generic => "generic",
            Self::Text => "text",
        }
    }

    /// The body of a success in the sender's own words, for senders that read it: Slack's
    /// `ok`, and the Teams connector's `1` (Workflows senders get the usual `202` receipt).
    pub fn plain_success(self) -> Option<&'static str> {
        match self {
            Self::Slack | Self::Mattermost => Some("ok"),
            Self::Teams => Some("1"),
            _ => None,
        }
    }

    /// Senders of these formats expect Slack's answers (`ok`, `invalid_payload`, `no_text`).
    pub fn answers_like_slack(self) -> bool {
        matches!(self, Self::Slack | Self::Mattermost)
    }
}

/// Why a body does not become a message. The first two are the sender's problem, never
/// transient; the last is no problem at all.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Not a body of the format (malformed JSON in a form, not UTF-8, wrong shape).
    #[error("invalid payload: {0}")]
    InvalidPayload(String),
    /// Well formed, but nothing in it can be shown.
    #[error("the payload has no text to post")]
    NoText,
    /// An event the format posts elsewhere or not at all (the reason says which): GitHub's
    /// repeats of one release, CI runs still in progress.
    #[error("not posted: {0}")]
    NotPosted(&'static str),
}

/// A request body, parsed once.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Json(Value),
    Text(String),
}

/// The message for Chat and the format it was read as.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub format: Format,
    pub text: String,
}

/// Whether the sender's message may carry markup to strip: not a Slack message that says
/// `"mrkdwn": false` (its text is meant as typed, so `*` and `_` in it are characters).
pub fn may_carry_markup(payload: &Payload) -> bool {
    match payload {
        Payload::Json(value) => value.get("mrkdwn") != Some(&Value::Bool(false)),
        Payload::Text(_) => true,
    }
}

/// Parses a body by its content type: a form's `payload` (Slack's legacy form, Gitea) or
/// `payload_json` as JSON, another form by its fields or as a raw body;
/// `text/plain` as text; anything else as JSON when it is JSON, else as text (shoutrrr sends raw
/// text labelled `application/json`).
pub fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<Payload, FormatError> {
    if media_type_is(content_type, "application/x-www-form-urlencoded") {
        let fields: Vec<(String, String)> = form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if let Some((_, payload)) = fields
            .iter()
            .find(|(key, _)| key == "payload" || key == "payload_json")
        {
            return serde_json::from_str(payload)
                .map(Payload::Json)
                .map_err(|e| FormatError::InvalidPayload(format!("`payload` is not JSON: {e}")));
        }
        // `curl -d '{…}'` labels JSON as a form; Discord and others post `content=…`: a form
        // naming a text field is read as an object of its fields, anything else as the body.
        if fields
            .iter()
            .any(|(key, _)| ["text", "content", "message", "msg"].contains(&key.as_str()))
        {
            let object = fields
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            return Ok(Payload::Json(Value::Object(object)));
        }
        return parse_body(None, body);
    }
    let decoded;
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        // Latin-1 said so: each byte is the code point of the same number.
        Err(_) if charset_is_latin1(content_type) => {
            decoded = body.iter().map(|&b| char::from(b)).collect::<String>();
            &decoded
        }
        Err(_) => {
            return Err(FormatError::InvalidPayload(
                "the body is not UTF-8 text".into(),
            ));
        }
    };
    // A byte order mark (Windows PowerShell 5.1 writes one) is no part of the text or JSON
    // (RFC 8259 §8.1 lets a parser ignore it).
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let trimmed = text.trim_start();
    // Text said to be text is posted as written, even when it looks like JSON (a hook forced
    // to a JSON format still reads it as JSON, in `render`).
    if !media_type_is(content_type, "text/plain")
        && (trimmed.starts_with('{') || trimmed.starts_with('['))
    {
        match serde_json::from_str(text) {
            Ok(value) => return Ok(Payload::Json(value)),
            // Labelled JSON and begun as an object's first key, it was meant as JSON: broken
            // (cut short, a lone surrogate), it is refused, not posted as its raw bytes. Text
            // such as `[ALERT] disk full` or `{app} deployed` is still text.
            Err(error)
                if media_type_is(content_type, "application/json")
                    && trimmed[1..].trim_start().starts_with('"') =>
            {
                return Err(FormatError::InvalidPayload(format!(
                    "the body is not valid JSON: {error}"
                )));
            }
            Err(_) => {}
        }
    }
    Ok(Payload::Text(text.to_owned()))
}

/// Whether `content_type` names ISO-8859-1 (Latin-1) as its charset.
fn charset_is_latin1(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else {
        return false;
    };
    content_type.split(';').skip(1).any(|parameter| {
        let Some((name, value)) = parameter.split_once('=') else {
            return false;
        };
        let value = value.trim().trim_matches('"');
        name.trim().eq_ignore_ascii_case("charset")
            && ["iso-8859-1", "latin1", "latin-1", "iso_8859-1", "l1"]
                .iter()
                .any(|alias| value.eq_ignore_ascii_case(alias))
    })
}

/// A body whose first character, after white space and a byte order mark, opens a JSON
/// object: what `curl -d '{…}'` sends under a form's label (no form of fields starts so).
pub fn looks_like_an_object(body: &[u8]) -> bool {
    let body = body.strip_prefix("\u{feff}".as_bytes()).unwrap_or(body);
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// A `GET` hook call's query string as a body (Uptime Kuma's GET webhook sends `msg`, and
/// `heartbeat` and `monitor` as JSON): a `payload` field as JSON, else an object of the fields,
/// each read as JSON when it is a JSON object or array.
pub fn query_payload(query: &str) -> Result<Payload, FormatError> {
    let fields: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if let Some((_, payload)) = fields.iter().find(|(key, _)| key == "payload") {
        return serde_json::from_str(payload)
            .map(Payload::Json)
            .map_err(|e| FormatError::InvalidPayload(format!("`payload` is not JSON: {e}")));
    }
    Ok(Payload::Json(fields_object(fields)))
}

/// Form fields (a query string's, or a multipart body's without a JSON field) as an object of
/// the fields, each read as JSON when it is a JSON object or array.
pub fn fields_object(fields: Vec<(String, String)>) -> Value {
    let object = fields
        .into_iter()
        .map(|(key, value)| {
            let trimmed = value.trim_start();
            let json = (trimmed.starts_with('{') || trimmed.starts_with('['))
                .then(|| serde_json::from_str::<Value>(&value).ok())
                .flatten();
            (key, json.unwrap_or(Value::String(value)))
        })
        .collect();
    Value::Object(object)
}

/// The message with a line naming each file the sender attached, which Chat does not get (a
/// hook passes on text only): nothing is dropped silently, and a message of files alone still
/// says what was sent. `rendered` is what the body gave: its text, or why it gave none; a
/// message of files alone is read as `files_only` (Discord's, unless the hook forces a format).
pub fn with_files(
    rendered: Result<Rendered, FormatError>,
    files: &[String],
    files_only: Format,
) -> Result<Rendered, FormatError> {
    if files.is_empty() {
        return rendered;
    }
    // A name is the sender's text, not markup: `<https://x|click>` in it must not become a
    // live link in Chat.
    let lines: Vec<String> = files
        .iter()
        .map(|name| name.trim())
        .filter(|name| !name.is_empty())
        .map(|name| {
            let name = name.replace('<', "‹").replace('>', "›");
            format!("📎 {name} (file not forwarded)")
        })
        .collect();
    if lines.is_empty() {
        return rendered;
    }
    match rendered {
        Ok(Rendered { format, text }) => Ok(Rendered {
            format,
            text: format!("{text}\n{}", lines.join("\n")),
        }),
        // Discord's message may be a file alone (senders-delivery-events A.4).
        Err(FormatError::NoText) => Ok(Rendered {
            format: files_only,
            text: lines.join("\n"),
        }),
        Err(error) => Err(error),
    }
}

/// Whether a `Content-Type` names `media_type` (ignoring its parameters and case).
pub fn media_type_is(content_type: Option<&str>, media_type: &str) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|ct| ct.trim().eq_ignore_ascii_case(media_type))
}

/// Renders `payload` in the `forced` format, or the detected one. A `template` makes the
/// detected format [`Format::Generic`].
pub fn render(
    payload: &Payload,
    forced: Option<Format>,
    template: Option<&str>,
) -> Result<Rendered, FormatError> {
    let format = forced.unwrap_or_else(|| detect(payload, template.is_some()));
    let text = match (format, payload) {
        (Format::Text, Payload::Text(text)) => text.clone(),
        (Format::Text, Payload::Json(Value::String(text))) => text.clone(),
        (Format::Text, Payload::Json(value)) => value.to_string(),
        (Format::Generic, payload) => generic::render(payload, template)?,
        (_, Payload::Text(text)) => match serde_json::from_str::<Value>(text) {
            Ok(value @ Value::Object(_)) => {
                return render(&Payload::Json(value), Some(format), template);
            }
            _ => {
                return Err(FormatError::InvalidPayload(format!(
                    "a {} payload must be JSON",
                    format.as_str()
                )));
            }
        },
        (Format::Slack | Format::Mattermost, Payload::Json(value)) => slack::render(object(value)?),
        (Format::Alertmanager, Payload::Json(value)) => alertmanager::render(object(value)?)?,
        (Format::Grafana, Payload::Json(value)) => grafana::render(object(value)?)?,
        (Format::Discord, Payload::Json(value)) => discord::render(object(value)?),
        (Format::Arr, Payload::Json(value)) => arr::render(object(value)?)?,
        (Format::Forge, Payload::Json(value)) => forge::render(object(value)?)?,
        (Format::Ntfy, Payload::Json(value)) => ntfy::render(object(value)?)?,
        (Format::Webex, Payload::Json(value)) => webex::render(object(value)?)?,
        (Format::Matrix, Payload::Json(value)) => matrix::render(object(value)?)?,
        (Format::Telegram, Payload::Json(value)) => telegram::render(object(value)?)?,
        (Format::GoogleChat, Payload::Json(value)) => google_chat::render(object(value)?)?,
        (Format::Teams | Format::TeamsWorkflows, Payload::Json(value)) => {
            teams::render(object(value)?)?
        }
    };
    // U+0000 cannot be stored or sent (DSM's C code would cut the text there). A sender's
    // stray one is dropped rather than the notification refused: senders do not retry a 400.
    let text = match text.contains('\0') {
        true => tidy(&text.replace('\0', "")),
        false => tidy(&text),
    };
    if text.trim().is_empty() {
        return Err(FormatError::NoText);
    }
    Ok(Rendered { format, text })
}

/// What identifies the event a body reports, when its content says (Alertmanager's and
/// Grafana's notifications): a second copy of it is the same event, if it comes soon.
pub fn event_key(payload: &Payload) -> Option<String> {
    match payload {
        Payload::Json(Value::Object(map)) => alertmanager::event_key(map),
        _ => None,
    }
}

/// The format a body looks like.
pub fn detect(payload: &Payload, has_template: bool) -> Format {
    if has_template {
        return Format::Generic;
    }
    let Payload::Json(Value::Object(map)) = payload else {
        return match payload {
            Payload::Text(_) | Payload::Json(Value::String(_)) => Format::Text,
            Payload::Json(_) => Format::Generic,
        };
    };
    let has = |key: &str| map.contains_key(key);
    if map.get("alerts").is_some_and(Value::is_array) {
        if has("orgId") || has("state") || (has("title") && has("message")) {
            return Format::Grafana;
        }
        if has("groupKey") || has("version") || has("status") {
            return Format::Alertmanager;
        }
    }
    if grafana::is_legacy(map) {
        return Format::Grafana;
    }
    if arr::looks_like(map) {
        return Format::Arr;
    }
    if forge::looks_like(map) {
        return Format::Forge;
    }
    if ntfy::looks_like(map) {
        return Format::Ntfy;
    }
    if google_chat::looks_like(map) {
        return Format::GoogleChat;
    }
    if webex::looks_like(map) {
        return Format::Webex;
    }
    if matrix::looks_like(map) {
        return Format::Matrix;
    }
    if telegram::looks_like(map) {
        return Format::Telegram;
    }
    match teams::kind(map) {
        Some(teams::Kind::Connector) => return Format::Teams,
        Some(teams::Kind::Workflows) => return Format::TeamsWorkflows,
        None => {}
    }
    if map.get("embeds").is_some_and(Value::is_array) || (has("content") && !has("text")) {
        return Format::Discord;
    }
    // Apprise's `json://` always sends `"attachments": []` beside its `title` and `message`: an
    // empty list says nothing about Slack.
    let listed = |key: &str| {
        map.get(key)
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    if has("text") || listed("attachments") || has("blocks") {
        return Format::Slack;
    }
    Format::Generic
}

fn object(value: &Value) -> Result<&serde_json::Map<String, Value>, FormatError> {
    value
        .as_object()
        .ok_or_else(|| FormatError::InvalidPayload("the payload must be a JSON object".into()))
}

/// Trailing spaces off every line, at most one blank line in a row, no blank lines at the ends;
/// but a fenced code block's lines as written.
fn tidy(text: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    // Inside a fenced code block every line is kept as written: its blank lines and trailing
    // spaces may be the point (a diff, a log excerpt).
    let mut in_code = false;
    for raw in text.lines() {
        let fence = raw.trim_start().starts_with("```");
        if in_code && !fence {
            out.push(raw);
            continue;
        }
        in_code ^= fence;
        let line = raw.trim_end();
        if line.is_empty() && out.last().is_none_or(|l| l.is_empty()) {
            continue;
        }
        out.push(line);
    }
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    out.join("\n")
}

/// A string field of a JSON object, when present and not blank.
fn text_field<'a>(map: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// A field that may be a string, a number or a boolean (Mattermost's attachment field `value`
/// is any JSON value: `93`, `false`), as text; a blank string, `null`, an array or an object
/// as none.
fn scalar_field<'a>(
    map: &'a serde_json::Map<String, Value>,
    key: &str,
) -> Option<std::borrow::Cow<'a, str>> {
    match map.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.as_str().into()),
        Value::Number(n) => Some(n.to_string().into()),
        Value::Bool(b) => Some(b.to_string().into()),
        _ => None,
    }
}

/// A flag given as a boolean or as the string `"true"` (Mattermost's `SlackCompatibleBool`).
fn flag_field(map: &serde_json::Map<String, Value>, key: &str) -> bool {
    match map.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.trim().eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// A reader's text for a body it claims (`claims`), in the readers' tests: a body it would not
/// be given fails the test rather than being rendered anyway.
#[cfg(test)]
pub(crate) fn claimed_and_rendered(
    value: &Value,
    claims: impl Fn(&serde_json::Map<String, Value>) -> bool,
    render: impl Fn(&serde_json::Map<String, Value>) -> Result<String, FormatError>,
) -> String {
    let map = value.as_object().expect("a JSON object");
    assert!(claims(map), "not claimed: {value}");
    render(map).expect("rendered")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn copies_of_a_notification_share_a_key_and_changes_do_not() {
        let notification = |external: &str, alerts: Value| {
            Payload::Json(json!({
                "receiver": "chat", "status": "firing", "groupKey": "{}:{alertname=\"Disk\"}",
                "externalURL": external, "alerts": alerts,
            }))
        };
        let two = json!([
            {"fingerprint": "aa", "status": "firing"},
            {"fingerprint": "bb", "status": "firing"},
        ]);
        let key = event_key(&notification("http://am-1", two.clone())).expect("a key");
        // The cluster's other member: another URL, the alerts in another order.
        let reversed = json!([two[1], two[0]]);
        assert_eq!(
            event_key(&notification("http://am-2", reversed)),
            Some(key.clone())
        );
        // One alert resolved, one more alert, another receiver: another notification.
        let resolved = json!([two[0], {"fingerprint": "bb", "status": "resolved"}]);
        assert_ne!(
            event_key(&notification("http://am-1", resolved)),
            Some(key.clone())
        );
        let three = json!([two[0], two[1], {"fingerprint": "cc", "status": "firing"}]);
        assert_ne!(
            event_key(&notification("http://am-1", three)),
            Some(key.clone())
        );
        let mut other = notification("http://am-1", two.clone());
        if let Payload::Json(Value::Object(map)) = &mut other {
            map.insert("receiver".into(), json!("pager"));
        }
        assert_ne!(event_key(&other), Some(key.clone()));
        // The alert fired again after it resolved: a new start, a new notification.
        let again = json!([two[0], {"fingerprint": "bb", "status": "firing", "startsAt": "t2"}]);
        assert_ne!(
            event_key(&notification("http://am-1", again)),
            Some(key.clone())
        );
        // Nothing to tell copies from repeats by: no key.
        let bare = json!([{"status": "firing"}]);
        assert_eq!(event_key(&notification("http://am-1", bare)), None);
        assert_eq!(event_key(&Payload::Json(json!({"text": "hi"}))), None);
    }

    #[test]
    fn tidying_leaves_a_fenced_code_block_as_written() {
        let text = "title  \n\n\n```\nline1\n\n\n\nline5   \n```\n\n\nafter  \n\n";
        assert_eq!(
            tidy(text),
            "title\n\n```\nline1\n\n\n\nline5   \n```\n\nafter"
        );
    }

    #[test]
    fn file_names_are_listed_as_text_and_blank_ones_left_out() {
        let files = vec![
            "evil<https://evil.example|click here>.txt".to_owned(),
            "  ".to_owned(),
        ];
        let text = Ok(Rendered {
            format: Format::Discord,
            text: "hi".into(),
        });
        let listed = with_files(text, &files, Format::Discord).unwrap().text;
        assert_eq!(
            listed,
            "hi\n📎 evil‹https://evil.example|click here›.txt (file not forwarded)"
        );
    }

    #[test]
    fn a_byte_order_mark_and_a_latin1_charset_are_read_as_meant() {
        let bom = "\u{feff}{\"text\": \"bom body\"}".as_bytes();
        assert_eq!(
            parse_body(Some("application/json"), bom).unwrap(),
            Payload::Json(json!({"text": "bom body"}))
        );
        assert_eq!(
            parse_body(Some("text/plain"), "\u{feff}plain".as_bytes()).unwrap(),
            Payload::Text("plain".into())
        );
        let latin1 = b"caf\xe9 \xe0 5\xb0C";
        assert_eq!(
            parse_body(Some("text/plain; charset=ISO-8859-1"), latin1).unwrap(),
            Payload::Text("café à 5°C".into())
        );
        assert_eq!(
            parse_body(Some("text/plain; charset=\"latin1\""), latin1).unwrap(),
            Payload::Text("café à 5°C".into())
        );
        // Without the charset, such bytes are no UTF-8 and refused.
        assert!(parse_body(Some("text/plain"), latin1).is_err());
    }

    #[test]
    fn bodies_are_read_by_content_type() {
        let form = b"payload=%7B%22text%22%3A%22a+%26+b%22%7D";
        assert_eq!(
            parse_body(Some("application/x-www-form-urlencoded"), form).unwrap(),
            Payload::Json(json!({"text": "a & b"}))
        );
        assert_eq!(
            parse_body(Some("application/json"), b"plain words").unwrap(),
            Payload::Text("plain words".into())
        );
        // Text labelled as text stays text, so `curl -H 'Content-Type: text/plain'` posts what
        // it sends; a hook forced to a JSON format still reads it.
        let braces = br#"{"text": "deploy {app}"}"#;
        let as_text = parse_body(Some("text/plain; charset=utf-8"), braces).unwrap();
        assert_eq!(as_text, Payload::Text(r#"{"text": "deploy {app}"}"#.into()));
        assert_eq!(
            render(&as_text, None, None).unwrap().text,
            r#"{"text": "deploy {app}"}"#
        );
        let forced = render(&as_text, Some(Format::Slack), None).unwrap();
        assert_eq!(forced.text, "deploy {app}");
        assert_eq!(
            parse_body(Some("application/json"), braces).unwrap(),
            Payload::Json(json!({"text": "deploy {app}"}))
        );
        // JSON cut short, or with a lone surrogate, is refused; text that merely begins with
        // a bracket or a brace is text.
        for broken in [&br#"{"text":"#[..], br#"{ "text": "a\ud800b"}"#] {
            assert!(
                matches!(
                    parse_body(Some("application/json"), broken),
                    Err(FormatError::InvalidPayload(_))
                ),
                "{}",
                String::from_utf8_lossy(broken)
            );
        }
        for text in ["[ALERT] disk full", "{app} deployed"] {
            assert_eq!(
                parse_body(Some("application/json"), text.as_bytes()).unwrap(),
                Payload::Text(text.into())
            );
        }
        assert!(matches!(
            parse_body(None, b"\xff\xfe"),
            Err(FormatError::InvalidPayload(_))
        ));
        assert!(matches!(
            parse_body(
                Some("application/x-www-form-urlencoded"),
                b"payload=%7Bnope"
            ),
            Err(FormatError::InvalidPayload(_))
        ));
        // What curl sends without `-H`, a Discord-style form, and text under a form's label.
        let form = Some("application/x-www-form-urlencoded");
        assert_eq!(
            parse_body(form, br#"{"text":"a+b & c"}"#).unwrap(),
            Payload::Json(json!({"text": "a+b & c"}))
        );
        assert_eq!(
            parse_body(form, b"content=deployed+v2&username=ci").unwrap(),
            Payload::Json(json!({"content": "deployed v2", "username": "ci"}))
        );
        assert_eq!(
            parse_body(form, b"Backup finished").unwrap(),
            Payload::Text("Backup finished".into())
        );
    }

    #[test]
    fn a_get_calls_query_is_its_body() {
        let kuma = "msg=%5Bweb%5D+%5B%F0%9F%94%B4+Down%5D+timeout&heartbeat=%7B%22status%22%3A0%7D&monitor=%7B%22name%22%3A%22web%22%7D";
        let payload = query_payload(kuma).unwrap();
        assert_eq!(
            payload,
            Payload::Json(json!({"msg": "[web] [🔴 Down] timeout",
                "heartbeat": {"status": 0}, "monitor": {"name": "web"}}))
        );
        assert_eq!(
            render(&payload, None, None).unwrap().text,
            "[web] [🔴 Down] timeout"
        );
        assert_eq!(
            query_payload("payload=%7B%22text%22%3A%22hi%22%7D").unwrap(),
            Payload::Json(json!({"text": "hi"}))
        );
        assert_eq!(
            query_payload("msg=%7Bnot+json").unwrap(),
            Payload::Json(json!({"msg": "{not json"}))
        );
        assert!(query_payload("payload=%7B").is_err());
    }

    #[test]
    fn formats_are_detected_from_the_body() {
        let detect_json = |v: Value| detect(&Payload::Json(v), false);
        assert_eq!(detect_json(json!({"text": "x"})), Format::Slack);
        assert_eq!(
            detect_json(json!({"attachments": [{"text": "x"}]})),
            Format::Slack
        );
        // Apprise's `json://` body: an empty `attachments` is not Slack's.
        assert_eq!(
            detect_json(json!({"title": "t", "message": "m", "attachments": []})),
            Format::Generic
        );
        assert_eq!(detect_json(json!({"content": "x"})), Format::Discord);
        assert_eq!(
            detect_json(json!({"version": "4", "groupKey": "k", "alerts": []})),
            Format::Alertmanager
        );
        assert_eq!(
            detect_json(json!({"version": "1", "orgId": 1, "alerts": [], "state": "alerting"})),
            Format::Grafana
        );
        assert_eq!(detect_json(json!({"msg": "x"})), Format::Generic);
        assert_eq!(detect(&Payload::Text("x".into()), false), Format::Text);
        assert_eq!(detect(&Payload::Text("x".into()), true), Format::Generic);
    }

    #[test]
    fn nothing_to_show_and_wrong_shapes_are_errors() {
        assert_eq!(
            render(&Payload::Json(json!({"text": "  "})), None, None),
            Err(FormatError::NoText)
        );
        assert!(matches!(
            render(&Payload::Text("x".into()), Some(Format::Slack), None),
            Err(FormatError::InvalidPayload(_))
        ));
        assert!(matches!(
            render(&Payload::Json(json!([1])), Some(Format::Slack), None),
            Err(FormatError::InvalidPayload(_))
        ));
    }
}
