//! ntfy's publish API (docs.ntfy.sh/publish): a JSON object (`topic`, `message`, `title`, `tags`,
//! `priority`, `click`, `attach`, `actions`), or a topic URL's body with the same fields in
//! headers (`X-Title`, `Title`, `t`, ...) or query parameters. Curl scripts, Apprise's `ntfy://`,
//! Uptime Kuma's and Healthchecks' ntfy types, shoutrrr and many more speak
//! it.
//!
//! It renders as ntfy's apps show a notification: the tags that are emoji short codes
//! (`warning`, `white_check_mark`) in front of the title, or of the message when there is no
//! title; the other tags listed; a high (4) or urgent (5) priority marked; the click, the
//! attachment and view actions as links.

use serde_json::{Map, Value};

use super::{FormatError, markup};

/// ntfy's message when none is given (a `curl -X POST` to the topic, a GET to `/publish`).
const TRIGGERED: &str = "triggered";

/// Each field's names in headers and query parameters, as ntfy reads them (case-insensitive).
const FIELDS: [(&str, &[&str]); 13] = [
    ("message", &["x-message", "message", "m"]),
    ("title", &["x-title", "title", "ti", "t"]),
    ("priority", &["x-priority", "priority", "prio", "p"]),
    ("tags", &["x-tags", "tags", "tag", "ta"]),
    ("click", &["x-click", "click"]),
    ("attach", &["x-attach", "attach", "a"]),
    ("actions", &["x-actions", "actions", "action"]),
    ("delay", &["x-delay", "delay", "x-at", "at", "x-in", "in"]),
    ("template", &["x-template", "template", "tpl"]),
    (
        "email",
        &["x-email", "x-e-mail", "email", "e-mail", "mail", "e"],
    ),
    ("call", &["x-call", "call"]),
    ("filename", &["x-filename", "filename", "file", "f"]),
    ("markdown", &["x-markdown", "markdown", "md"]),
];

/// The publish object a topic URL's request stands for: `body` is the message unless a field
/// names one. Each field is looked up under all its names in the headers first, then in the
/// query (`header`, `query`); an empty value counts as none, and a `Priority: u=…` header is
/// HTTP's own (RFC 9218, which proxies and browsers add), not ntfy's.
pub fn from_fields(
    body: &str,
    header: impl Fn(&str) -> Option<String>,
    query: impl Fn(&str) -> Option<String>,
) -> Value {
    let mut object = Map::new();
    for (key, names) in FIELDS {
        let given = |lookup: &dyn Fn(&str) -> Option<String>| {
            names.iter().find_map(|name| {
                lookup(name)
                    .filter(|v| !v.trim().is_empty())
                    .filter(|v| key != "priority" || !is_http_priority(v))
            })
        };
        if let Some(value) = given(&header).or_else(|| given(&query)) {
            // ntfy reads `\n` in a header's or query's message as a line break.
            let value = match key {
                "message" => value.replace("\\n", "\n"),
                _ => value,
            };
            object.insert(key.to_owned(), Value::String(value));
        }
    }
    if !object.contains_key("message") && !body.is_empty() {
        object.insert("message".into(), Value::String(body.to_owned()));
    }
    Value::Object(object)
}

/// ntfy's JSON publish with the fields its sender put in headers or the query beside it (as
/// Apprise does for priority, tags, click, actions and delay): a field the JSON leaves empty
/// is taken from there, as ntfy takes it.
pub fn with_fields(
    json: Value,
    header: impl Fn(&str) -> Option<String>,
    query: impl Fn(&str) -> Option<String>,
) -> Value {
    let Value::Object(mut object) = json else {
        return json;
    };
    if let Value::Object(fields) = from_fields("", header, query) {
        for (key, value) in fields {
            if object.get(&key).is_none_or(is_empty) {
                object.insert(key, value);
            }
        }
    }
    Value::Object(object)
}

/// A JSON field ntfy treats as not given: null, an empty string or list, a zero.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Number(n) => n.as_u64() == Some(0),
        _ => false,
    }
}

/// `u=3`, `u=3, i`: an RFC 9218 priority, which ntfy ignores.
fn is_http_priority(value: &str) -> bool {
    let value = value.trim();
    value.starts_with("u=") && value.len() >= 3 && value.as_bytes()[2].is_ascii_digit()
}

/// Whether an object looks like ntfy's JSON publish: a `topic` beside its message or title.
pub fn looks_like(map: &Map<String, Value>) -> bool {
    map.get("topic").is_some_and(Value::is_string)
        && (map.contains_key("message") || map.contains_key("title"))
}

/// The Chat text of a publish object.
pub fn render(map: &Map<String, Value>) -> Result<String, FormatError> {
    // What ntfy would do and Chat cannot is refused, not done differently.
    let refusals = [
        (
            "delay",
            "ntfy's scheduled delivery (`delay`) is not offered: the message would be posted \
             now; send it when it is due",
        ),
        (
            "email",
            "ntfy's e-mail forwarding (`email`) is not offered: the message goes to Chat only",
        ),
        ("call", "ntfy's phone calls (`call`) are not offered"),
        (
            "filename",
            "files are not passed on (`filename`): give the file's URL in `attach`",
        ),
    ];
    for (key, reason) in refusals {
        if map.get(key).is_some_and(|v| !is_empty(v)) {
            return Err(FormatError::InvalidPayload(reason.into()));
        }
    }
    if map
        .get("template")
        .and_then(Value::as_str)
        .is_some_and(|t| {
            !matches!(
                t.trim().to_ascii_lowercase().as_str(),
                "" | "no" | "false" | "0"
            )
        })
    {
        return Err(FormatError::InvalidPayload(
            "ntfy's message templates (`tpl`) are not offered: give the hook a `template`, or \
             send the text itself"
                .into(),
        ));
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
    // ntfy shows its text as typed, or as Markdown when asked to: a Chat link written in it
    // (a monitored page's text, say) stays text, and only Markdown's links are links.
    let markdown = match map.get("markdown") {
        Some(Value::Bool(on)) => *on,
        Some(Value::String(on)) => {
            matches!(
                on.trim().to_ascii_lowercase().as_str(),
                "yes" | "true" | "1"
            )
        }
        _ => false,
    };
    let text_of = |key: &str| -> Result<Option<String>, FormatError> {
        Ok(text_of(key)?.map(|text| match (key, markdown) {
            ("message", true) => markup::markdown_text(&text),
            _ => markup::literal_text(&text).into_owned(),
        }))
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
        Some(Value::Number(n)) if n.as_u64() == Some(0) => return Ok(""),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "" | "0" => return Ok(""),
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

/// `view` actions as links; the others (HTTP requests, Android broadcasts) are things a phone
/// does when tapped, and Chat has no button for them. A JSON list, or a header's or query's
/// text in ntfy's simple (`view, Open, https://…; http, …`) or `key=value` form. Only an
/// http(s) URL becomes a link, and neither it nor its label can break out of Chat's `<url|label>`.
fn view_actions(actions: Option<&Value>) -> Vec<String> {
    let listed: Vec<(String, String)> = match actions {
        Some(Value::Array(actions)) => actions
            .iter()
            .filter(|a| a.get("action").and_then(Value::as_str) == Some("view"))
            .filter_map(|a| {
                let url = a.get("url").and_then(Value::as_str)?;
                let label = a.get("label").and_then(Value::as_str).unwrap_or(url);
                Some((label.to_owned(), url.to_owned()))
            })
            .collect(),
        Some(Value::String(text)) if text.trim_start().starts_with('[') => {
            match serde_json::from_str::<Value>(text) {
                Ok(list @ Value::Array(_)) => return view_actions(Some(&list)),
                _ => Vec::new(),
            }
        }
        Some(Value::String(text)) => text.split(';').filter_map(simple_view).collect(),
        _ => Vec::new(),
    };
    listed
        .into_iter()
        .filter(|(_, url)| {
            (url.starts_with("https://") || url.starts_with("http://"))
                && !url.contains(|c: char| c.is_whitespace() || matches!(c, '|' | '<' | '>'))
        })
        .map(|(label, url)| {
            let label: String = label
                .chars()
                .filter(|c| !matches!(c, '|' | '<' | '>'))
                .collect();
            format!("<{url}|{}>", label.trim())
        })
        .collect()
}

/// One action of ntfy's simple form, if it is a `view`: `view, label, url` or
/// `action=view, label=…, url=…`.
fn simple_view(action: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = action.split(',').map(str::trim).collect();
    let keyed = |key: &str| {
        parts
            .iter()
            .find_map(|p| p.strip_prefix(key)?.trim_start().strip_prefix('='))
            .map(|v| v.trim().to_owned())
    };
    if parts.first()?.contains('=') {
        return (keyed("action")?.eq_ignore_ascii_case("view"))
            .then(|| Some((keyed("label")?, keyed("url")?)))
            .flatten();
    }
    match parts.as_slice() {
        [kind, label, url, ..] if kind.eq_ignore_ascii_case("view") => {
            Some(((*label).to_owned(), (*url).to_owned()))
        }
        _ => None,
    }
}

/// A header value as ntfy reads it: RFC 2047 encoded words (`=?UTF-8?B?…?=`, as clients send a
/// title beyond ASCII, in UTF-8 or ISO-8859-1, one or several), else the bytes as UTF-8, else
/// as ISO-8859-1 (HTTP's own reading of a header's bytes).
pub fn header_text(raw: &[u8]) -> Option<String> {
    let text = match std::str::from_utf8(raw) {
        Ok(text) => text.trim(),
        Err(_) => {
            return Some(
                raw.iter()
                    .map(|&b| b as char)
                    .collect::<String>()
                    .trim()
                    .to_owned(),
            );
        }
    };
    if !text.starts_with("=?") {
        return Some(text.to_owned());
    }
    // Words apart only by white space are one text (RFC 2047 §6.2).
    let mut decoded = String::new();
    for word in text.split_whitespace() {
        decoded.push_str(&encoded_word(word)?);
    }
    Some(decoded)
}

/// One `=?charset?encoding?text?=`; `None` for anything else.
fn encoded_word(word: &str) -> Option<String> {
    let inner = word.strip_prefix("=?")?.strip_suffix("?=")?;
    let (charset, rest) = inner.split_once('?')?;
    let (encoding, data) = rest.split_once('?')?;
    let bytes = if encoding.eq_ignore_ascii_case("b") {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .ok()?
    } else if encoding.eq_ignore_ascii_case("q") {
        percent_decode_q(&data.replace('_', " "))
    } else {
        return None;
    };
    match charset.to_ascii_lowercase().as_str() {
        "utf-8" | "us-ascii" => String::from_utf8(bytes).ok(),
        "iso-8859-1" | "latin1" => Some(bytes.iter().map(|&b| b as char).collect()),
        _ => None,
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
    fn a_chat_link_in_the_text_stays_text_and_markdown_links_are_links_when_asked() {
        // Uptime Kuma's message carries a monitored page's text.
        assert_eq!(
            rendered(
                json!({"topic": "ops", "title": "<https://evil.example|Ack>",
                "message": "Keyword not found: <https://evil.example|Approve>"})
            ),
            "<\u{2060}https://evil.example|Ack>\nKeyword not found: <\u{2060}https://evil.example|Approve>"
        );
        assert_eq!(
            rendered(json!({"topic": "ops", "markdown": true,
                "message": "see [logs](https://nas.example/logs) <https://evil.example|x>"})),
            "see <https://nas.example/logs|logs> <\u{2060}https://evil.example|x>"
        );
        assert_eq!(
            rendered(json!({"topic": "ops", "message": "[logs](https://nas.example/logs)"})),
            "[logs](https://nas.example/logs)"
        );
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
            json!({"message": "x", "email": "a@b.example"}),
            json!({"message": "x", "call": "yes"}),
            json!({"message": "x", "filename": "a.log"}),
            json!({"message": "x", "template": "yes"}),
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
        let value = from_fields("95% full", fields, |_| None);
        assert_eq!(rendered(value), "❗💾 Disk\n95% full\nTags: sda");
        // A message named in a field wins over the body.
        let value = from_fields(
            "ignored",
            |_| None,
            |name| (name == "m").then(|| "given\\nsecond line".to_owned()),
        );
        assert_eq!(rendered(value), "given\nsecond line");
        // Headers before the query, whatever the name; empty values and HTTP's own priority
        // count as none.
        let value = from_fields(
            "x",
            |name| match name {
                "title" => Some("A".to_owned()),
                "x-title" => Some(" ".to_owned()),
                "priority" => Some("u=1, i".to_owned()),
                _ => None,
            },
            |name| (name == "x-title").then(|| "B".to_owned()),
        );
        assert_eq!(rendered(value), "A\nx");
    }

    #[test]
    fn a_json_publish_takes_what_it_leaves_empty_from_headers_as_ntfy_does() {
        let json = json!({"topic": "ops", "title": "T", "message": "M", "delay": "",
            "priority": 0});
        let header = |name: &str| match name {
            "x-priority" => Some("5".to_owned()),
            "x-tags" => Some("warning".to_owned()),
            "x-title" => Some("not this".to_owned()),
            _ => None,
        };
        assert_eq!(rendered(with_fields(json, header, |_| None)), "‼️⚠️ T\nM");
        let delayed = with_fields(
            json!({"topic": "ops", "message": "M"}),
            |n: &str| (n == "x-delay").then(|| "30m".to_owned()),
            |_| None,
        );
        assert!(render(delayed.as_object().unwrap()).is_err());
    }

    #[test]
    fn actions_in_a_header_are_read_in_each_of_ntfys_forms() {
        let with = |actions: &str| rendered(json!({"message": "m", "actions": actions}));
        assert_eq!(
            with("view, Open portal, https://home.example/; http, Close, https://api.example/x"),
            "m\n<https://home.example/|Open portal>"
        );
        assert_eq!(
            with("action=view, label=Logs, url=https://ci.example/1"),
            "m\n<https://ci.example/1|Logs>"
        );
        assert_eq!(
            with(r#"[{"action": "view", "label": "J", "url": "https://j.example"}]"#),
            "m\n<https://j.example|J>"
        );
        // Nothing that could break out of Chat's link, or run script.
        assert_eq!(with("view, x, javascript:alert(1)"), "m");
        assert_eq!(
            with("view, a|b>c, https://ok.example/a"),
            "m\n<https://ok.example/a|abc>"
        );
        assert_eq!(with("view, x, https://bad.example/a|b"), "m");
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
        assert_eq!(header_text(b"caf\xe9").as_deref(), Some("café"));
        assert_eq!(
            header_text(b"=?UTF-8?B?w6l0w6k=?= =?UTF-8?Q?_chaud?=").as_deref(),
            Some("été chaud")
        );
        assert_eq!(
            header_text(b"=?ISO-8859-1?Q?caf=E9?=").as_deref(),
            Some("café")
        );
    }
}
