//! ntfy's publish API (docs.ntfy.sh/publish): a JSON object (`topic`, `message`, `title`, `tags`,
//! `priority`, `click`, `attach`, `actions`), or a topic URL's body with the same fields in
//! headers (`X-Title`, `Title`, `t`, ...) or query parameters. Curl scripts, Apprise's `ntfy://`,
//! Uptime Kuma's, Healthchecks' and Home Assistant's ntfy types, shoutrrr and many more speak
//! it.
//!
//! It renders as ntfy's apps show a notification: the tags that are emoji short codes
//! (`warning`, `white_check_mark`) in front of the title, or of the message when there is no
//! title; the other tags listed; a high (4) or urgent (5) priority marked; the click, the
//! attachment and view actions as links.

use serde_json::{Map, Value};

use super::FormatError;

/// ntfy's message when none is given (a `curl -X POST` to the topic, a GET to `/publish`).
const TRIGGERED: &str = "triggered";

/// Each field's names in headers and query parameters, as ntfy reads them (case-insensitive).
const FIELDS: [(&str, &[&str]); 8] = [
    ("message", &["x-message", "message", "m"]),
    ("title", &["x-title", "title", "ti", "t"]),
    ("priority", &["x-priority", "priority", "prio", "p"]),
    ("tags", &["x-tags", "tags", "tag", "ta"]),
    ("click", &["x-click", "click"]),
    ("attach", &["x-attach", "attach", "a"]),
    ("actions", &["x-actions", "actions", "action"]),
    ("delay", &["x-delay", "delay", "x-at", "at", "x-in", "in"]),
];

/// The publish object a topic URL's request stands for: `body` is the message unless a field
/// names one; `field` looks a name up (the request's headers, then its query).
pub fn from_fields(body: &str, field: impl Fn(&str) -> Option<String>) -> Value {
    let mut object = Map::new();
    for (key, names) in FIELDS {
        if let Some(value) = names.iter().find_map(|name| field(name)) {
            object.insert(key.to_owned(), Value::String(value));
        }
    }
    if !object.contains_key("message") && !body.is_empty() {
        object.insert("message".into(), Value::String(body.to_owned()));
    }
    Value::Object(object)
}

/// Whether an object looks like ntfy's JSON publish: a `topic` beside its message or title.
pub fn looks_like(map: &Map<String, Value>) -> bool {
    map.get("topic").is_some_and(Value::is_string)
        && (map.contains_key("message") || map.contains_key("title"))
}

/// The Chat text of a publish object.
pub fn render(map: &Map<String, Value>) -> Result<String, FormatError> {
    if let Some(delay) = map.get("delay").filter(|v| !v.is_null()) {
        return Err(FormatError::InvalidPayload(format!(
            "ntfy's scheduled delivery (`delay` {delay}) is not offered: the message would be \
             posted now; send it when it is due"
        )));
    }
    let text_of = |key: &str| -> Result<Option<String>, FormatError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
            Some(other) => Err(FormatError::InvalidPayload(format!(
                "`{key}` must be a string, not {other}"
            ))),
        }
    };
    let title = text_of("title")?;
    let message = text_of("message")?;
    let mark = priority_mark(map.get("priority"))?;
    let (emojis, named) = tags(map.get("tags"))?;
    let mut head = String::new();
    head.push_str(mark);
    head.push_str(&emojis.concat());
    let mut lines: Vec<String> = Vec::new();
    let lead = |text: &str| match head.is_empty() {
        true => text.to_owned(),
        false => format!("{head} {text}"),
    };
    match (&title, &message) {
        (Some(title), Some(message)) => {
            lines.push(lead(title));
            lines.push(message.clone());
        }
        (Some(only), None) | (None, Some(only)) => lines.push(lead(only)),
        (None, None) => lines.push(lead(TRIGGERED)),
    }
    if !named.is_empty() {
        lines.push(format!("Tags: {}", named.join(", ")));
    }
    if let Some(click) = text_of("click")? {
        lines.push(click);
    }
    if let Some(attach) = text_of("attach")? {
        lines.push(format!("📎 {attach}"));
    }
    lines.extend(view_actions(map.get("actions")));
    Ok(lines.join("\n"))
}

/// ‼️ for urgent (5), ❗ for high (4), nothing below; ntfy's names and numbers, as a number or a
/// string.
fn priority_mark(priority: Option<&Value>) -> Result<&'static str, FormatError> {
    let level = match priority {
        None | Some(Value::Null) => return Ok(""),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "" => return Ok(""),
            "min" => Some(1),
            "low" => Some(2),
            "default" => Some(3),
            "high" => Some(4),
            "max" | "urgent" => Some(5),
            other => other.parse().ok(),
        },
        Some(_) => None,
    };
    match level {
        Some(1..=3) => Ok(""),
        Some(4) => Ok("❗"),
        Some(5) => Ok("‼️"),
        _ => Err(FormatError::InvalidPayload(
            "`priority` must be 1 to 5, or min, low, default, high, max or urgent".into(),
        )),
    }
}

/// The tags that are emoji short codes, as emoji, and the others as given. A list, or a
/// comma-separated string (headers and query parameters).
fn tags(tags: Option<&Value>) -> Result<(Vec<&'static str>, Vec<String>), FormatError> {
    let names: Vec<String> = match tags {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.split(',').map(|t| t.trim().to_owned()).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.trim().to_owned()),
                other => Err(FormatError::InvalidPayload(format!(
                    "`tags` must be strings, not {other}"
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(FormatError::InvalidPayload(format!(
                "`tags` must be a list or a comma-separated string, not {other}"
            )));
        }
    };
    let (mut emoji, mut named) = (Vec::new(), Vec::new());
    for name in names.into_iter().filter(|n| !n.is_empty()) {
        match emojis::get_by_shortcode(&name) {
            Some(found) => emoji.push(found.as_str()),
            None => named.push(name),
        }
    }
    Ok((emoji, named))
}

/// `view` actions as `label: url` lines; the others (HTTP requests, Android broadcasts) are
/// things a phone does when tapped, and Chat has no button for them.
fn view_actions(actions: Option<&Value>) -> Vec<String> {
    let Some(Value::Array(actions)) = actions else {
        return Vec::new();
    };
    actions
        .iter()
        .filter(|a| a.get("action").and_then(Value::as_str) == Some("view"))
        .filter_map(|a| {
            let url = a.get("url").and_then(Value::as_str)?;
            let label = a.get("label").and_then(Value::as_str).unwrap_or(url);
            Some(format!("<{url}|{label}>"))
        })
        .collect()
}

/// A header value as ntfy reads it: an RFC 2047 encoded word in UTF-8 (`=?UTF-8?B?…?=`, as
/// clients send a title beyond ASCII), else the bytes as UTF-8.
pub fn header_text(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?.trim();
    let encoded = text
        .strip_prefix("=?")
        .and_then(|rest| rest.strip_suffix("?="))
        .and_then(|rest| {
            let (charset, rest) = rest.split_once('?')?;
            let (encoding, data) = rest.split_once('?')?;
            charset
                .eq_ignore_ascii_case("utf-8")
                .then_some((encoding, data))
        });
    match encoded {
        Some((encoding, data)) if encoding.eq_ignore_ascii_case("b") => {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .ok()?;
            String::from_utf8(bytes).ok()
        }
        Some((encoding, data)) if encoding.eq_ignore_ascii_case("q") => {
            let spaced = data.replace('_', " ");
            let bytes: Vec<u8> = percent_decode_q(&spaced);
            String::from_utf8(bytes).ok()
        }
        _ => Some(text.to_owned()),
    }
}

/// `=XX` escapes of RFC 2047's Q encoding.
fn percent_decode_q(data: &str) -> Vec<u8> {
    let bytes = data.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied(),
            bytes.get(i + 2).copied(),
        ) {
            (b'=', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rendered(value: Value) -> String {
        render(value.as_object().unwrap()).unwrap()
    }

    #[test]
    fn a_titled_message_with_tags_and_priority_reads_as_ntfy_shows_it() {
        let text = rendered(json!({"topic": "ops", "title": "Backup failed",
            "message": "vzdump exited 1", "tags": ["warning", "nas", "skull"], "priority": 5,
            "click": "https://nas.example/backups"}));
        assert_eq!(
            text,
            "‼️⚠️💀 Backup failed\nvzdump exited 1\nTags: nas\nhttps://nas.example/backups"
        );
    }

    #[test]
    fn a_message_alone_or_nothing_at_all() {
        assert_eq!(
            rendered(json!({"message": "done", "tags": "tada"})),
            "🎉 done"
        );
        assert_eq!(rendered(json!({"topic": "ops"})), "triggered");
        assert_eq!(
            rendered(json!({"title": "Only a title", "priority": "high"})),
            "❗ Only a title"
        );
    }

    #[test]
    fn views_and_attachments_become_links_and_other_actions_are_left() {
        let text = rendered(
            json!({"message": "Deploy?", "attach": "https://x.example/a.log",
            "actions": [{"action": "view", "label": "Open", "url": "https://ci.example/1"},
                        {"action": "http", "label": "Approve", "url": "https://ci.example/ok"}]}),
        );
        assert_eq!(
            text,
            "Deploy?\n📎 https://x.example/a.log\n<https://ci.example/1|Open>"
        );
    }

    #[test]
    fn bad_fields_and_delays_are_refused_with_the_reason() {
        for bad in [
            json!({"message": "x", "priority": 9}),
            json!({"message": "x", "priority": "loud"}),
            json!({"message": 5}),
            json!({"message": "x", "tags": [1]}),
            json!({"message": "x", "delay": "30m"}),
        ] {
            let refused = render(bad.as_object().unwrap());
            assert!(
                matches!(refused, Err(FormatError::InvalidPayload(_))),
                "{bad}: {refused:?}"
            );
        }
    }

    #[test]
    fn a_topic_urls_fields_come_from_headers_or_query_and_the_body() {
        let fields = |name: &str| match name {
            "t" => Some("Disk".to_owned()),
            "x-tags" => Some("floppy_disk, sda".to_owned()),
            "p" => Some("4".to_owned()),
            _ => None,
        };
        let value = from_fields("95% full", fields);
        assert_eq!(rendered(value), "❗💾 Disk\n95% full\nTags: sda");
        // A message named in a field wins over the body.
        let value = from_fields("ignored", |name| (name == "m").then(|| "given".to_owned()));
        assert_eq!(rendered(value), "given");
    }

    #[test]
    fn encoded_header_words_are_decoded() {
        assert_eq!(header_text(b"=?UTF-8?B?w6l0w6k=?=").as_deref(), Some("été"));
        assert_eq!(
            header_text(b"=?utf-8?Q?caf=C3=A9_ouvert?=").as_deref(),
            Some("café ouvert")
        );
        assert_eq!(header_text(b"plain title").as_deref(), Some("plain title"));
        assert_eq!(header_text("déjà".as_bytes()).as_deref(), Some("déjà"));
        assert_eq!(header_text(b"\xff"), None);
    }
}
