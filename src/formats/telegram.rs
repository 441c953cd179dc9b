//! Telegram bot messages, as the notifiers whose Bot API URL can be set send them to
//! `<api_url>/bot<token>/sendMessage`: Alertmanager's `telegram_configs`, Uptime Kuma (2.0),
//! Gatus, Home Assistant. `text` in the markup `parse_mode` names (none, `HTML`, `Markdown`,
//! `MarkdownV2`); `reply_markup`'s buttons that open a page.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::markup::{self, link};
use super::{FormatError, text_field};

pub fn looks_like(map: &Map<String, Value>) -> bool {
    map.contains_key("chat_id") && map.get("text").is_some_and(Value::is_string)
}

pub fn render(message: &Map<String, Value>) -> Result<String, FormatError> {
    let text = text_field(message, "text").ok_or(FormatError::NoText)?;
    let mode = message
        .get("parse_mode")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut lines = vec![match mode.as_str() {
        // Telegram's HTML keeps the text's line breaks, unlike a page's.
        "html" => markup::html_text(text, markup::literal_text),
        "markdownv2" => markdown_v2(text),
        "markdown" => markdown_v1(text),
        _ => markup::literal_text(text).into_owned(),
    }];
    lines.extend(buttons(message));
    Ok(lines.join("\n"))
}

/// MarkdownV2: its links become Chat links, and the characters it escapes (`\.`, `\-`, `\!`,
/// `\\`…) read as themselves.
fn markdown_v2(text: &str) -> String {
    escaped_markdown(text, |c| c.is_ascii_punctuation())
}

/// Telegram's first Markdown: as MarkdownV2, with fewer characters to escape.
fn markdown_v1(text: &str) -> String {
    escaped_markdown(text, |c| matches!(c, '_' | '*' | '`' | '['))
}

/// Markdown whose `\`-escaped characters are text: each is read as itself, and an escaped
/// bracket never delimits a link. The escapes go before any reading, so text that spells a Chat
/// link only once they are gone (`<https\://evil|Approve\>`) is seen, and shown, as typed.
fn escaped_markdown(text: &str, escapable: fn(char) -> bool) -> String {
    // The escaped link brackets and backticks wait as noncharacters (none is left in the text) while the links
    // are read, and become themselves afterwards (in a link's address too: `\)` in a URL).
    const HELD: [(char, char); 5] = [
        ('[', '\u{FDD0}'),
        (']', '\u{FDD1}'),
        ('(', '\u{FDD2}'),
        (')', '\u{FDD3}'),
        // An escaped backtick opens no code.
        ('`', '\u{FDD4}'),
    ];
    let mut plain = String::with_capacity(text.len());
    let mut chars = text
        .chars()
        .filter(|c| !HELD.iter().any(|(_, held)| held == c));
    while let Some(c) = chars.next() {
        let c = match c {
            '\\' => match chars.clone().next().filter(|next| escapable(*next)) {
                Some(next) => {
                    chars.next();
                    HELD.iter()
                        .find(|(bracket, _)| *bracket == next)
                        .map_or(next, |(_, held)| *held)
                }
                None => c,
            },
            c => c,
        };
        plain.push(c);
    }
    markup::markdown_text(&plain)
        .chars()
        .map(|c| {
            HELD.iter()
                .find(|(_, held)| *held == c)
                .map_or(c, |(bracket, _)| *bracket)
        })
        .collect()
}

/// The inline keyboard's buttons that open a web page, as links, a row a line. Telegram also
/// takes `reply_markup` as a JSON string (a form's field).
fn buttons(message: &Map<String, Value>) -> Vec<String> {
    let markup: Cow<'_, Value> = match message.get("reply_markup") {
        Some(Value::String(json)) => match serde_json::from_str(json) {
            Ok(value) => Cow::Owned(value),
            Err(_) => return Vec::new(),
        },
        Some(value) => Cow::Borrowed(value),
        None => return Vec::new(),
    };
    let Some(rows) = markup.get("inline_keyboard").and_then(Value::as_array) else {
        return Vec::new();
    };
    rows.iter()
        .filter_map(Value::as_array)
        .map(|row| {
            row.iter()
                .filter_map(|button| {
                    let url = button
                        .get("url")?
                        .as_str()
                        .filter(|u| markup::is_web_url(u))?;
                    let label = button.get("text").and_then(Value::as_str).unwrap_or(url);
                    Some(link(url, label))
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|line| !line.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rendered(value: Value) -> String {
        crate::formats::claimed_and_rendered(&value, looks_like, render)
    }

    #[test]
    fn each_parse_mode_reads_as_telegram_shows_it() {
        // Alertmanager's default: HTML, every value a string.
        assert_eq!(
            rendered(json!({"chat_id": "-1001234567890", "parse_mode": "HTML",
                "disable_web_page_preview": "true",
                "text": "<b>Alerts Firing:</b> <tg-spoiler>2</tg-spoiler>\nLabels:\n - alertname = HighCPU\n - summary = CPU &gt; 90% <a href=\"http://prom:9090/graph\">graph</a>"})),
            "Alerts Firing: 2\nLabels:\n - alertname = HighCPU\n - summary = CPU > 90% <http://prom:9090/graph|graph>"
        );
        // Gatus: legacy Markdown in capitals; its emphasis stays as sent.
        assert_eq!(
            rendered(json!({"chat_id": "42", "parse_mode": "MARKDOWN",
                "text": "⛑ *Gatus* \nAn alert for *core_api* [status](https://status.example)"})),
            "⛑ *Gatus* \nAn alert for *core_api* <https://status.example|status>"
        );
        assert_eq!(
            rendered(json!({"chat_id": 42, "parse_mode": "MarkdownV2",
                "text": "Disk 95\\% on nas\\-1\\. [runbook](https://wiki.example/disk)"})),
            "Disk 95% on nas-1. <https://wiki.example/disk|runbook>"
        );
        // Uptime Kuma without a template: plain text, a typed Chat link stays text.
        assert_eq!(
            rendered(
                json!({"chat_id": "42", "text": "[web] [🔴 Down] <https://evil.example|ok>",
                "disable_notification": false})
            ),
            "[web] [🔴 Down] <\u{2060}https://evil.example|ok>"
        );
    }

    #[test]
    fn escaped_text_never_spells_a_chat_link_and_escapes_read_as_themselves() {
        let v2 =
            |text: &str| rendered(json!({"chat_id": 1, "parse_mode": "MarkdownV2", "text": text}));
        // Uptime Kuma's MarkdownV2 template escapes a heartbeat's message so.
        assert_eq!(
            v2("down: <https\\://evil\\.example/login\\|Approve\\>"),
            "down: <\u{2060}https://evil.example/login|Approve>"
        );
        assert_eq!(
            v2("<mailto\\:x@evil.example|Mail>"),
            "<\u{2060}mailto:x@evil.example|Mail>"
        );
        // An escaped bracket is no link; an escaped `)` in a link's address is part of it; an
        // escaped backslash is one backslash, which escapes nothing.
        assert_eq!(v2("\\[not](https://x.example)"), "[not](https://x.example)");
        assert_eq!(
            v2("[wiki](https://w.example/a_\\(b\\))"),
            "<https://w.example/a_(b)|wiki>"
        );
        assert_eq!(v2("C:\\\\:"), "C:\\:");
        let v1 = rendered(
            json!({"chat_id": 1, "parse_mode": "Markdown", "text": "snake\\_case \\*x\\*"}),
        );
        assert_eq!(v1, "snake_case *x*");
    }

    #[test]
    fn buttons_that_open_a_page_are_links() {
        assert_eq!(
            rendered(json!({"chat_id": "42", "text": "Backup failed",
                "reply_markup": "{\"inline_keyboard\": [[{\"text\": \"Logs\", \"url\": \"https://nas.example/logs\"}, {\"text\": \"Ack\", \"callback_data\": \"ack\"}]]}"})),
            "Backup failed\n<https://nas.example/logs|Logs>"
        );
    }

    #[test]
    fn a_message_without_text_is_refused() {
        assert!(!looks_like(json!({"text": "x"}).as_object().unwrap()));
        let empty = json!({"chat_id": "42", "text": ""});
        assert_eq!(render(empty.as_object().unwrap()), Err(FormatError::NoText));
    }
}
