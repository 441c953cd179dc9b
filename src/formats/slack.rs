//! Slack (and Mattermost) incoming-webhook payloads: `text`, then each attachment, then the
//! blocks (senders-delivery-events A.1, B.2).

use serde_json::{Map, Value};

use super::markup::{self, color_marker, link};
use super::text_field;

pub fn render(message: &Map<String, Value>) -> String {
    let mut sections: Vec<String> = Vec::new();
    let blocks = message
        .get("blocks")
        .and_then(Value::as_array)
        .map(|b| render_blocks(b))
        .unwrap_or_default();
    let attachments: Vec<String> = message
        .get("attachments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .map(render_attachment)
        .collect();
    let text = text_field(message, "text").map(markup::slack);
    // With blocks, `text` is Slack's notification fallback: shown only when it adds something,
    // a line that the blocks or attachments do not already show (Uptime Kuma sends its message
    // as `text` and again in an attachment's blocks).
    if let Some(text) = text {
        let shown = |line: &str| shows(&blocks, line) || attachments.iter().any(|a| shows(a, line));
        let repeated = (!blocks.trim().is_empty() || !attachments.is_empty())
            && text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .all(shown);
        if !repeated {
            sections.push(text);
        }
    }
    sections.extend(attachments);
    sections.push(blocks);
    sections.retain(|s| !s.trim().is_empty());
    sections.join("\n\n")
}

/// Whether `shown` holds `line` as words of its own: `Deploy` is not shown by `Deployment
/// finished`, so a text line that only begins another is kept.
fn shows(shown: &str, line: &str) -> bool {
    shown.match_indices(line).any(|(at, _)| {
        let before = shown[..at].chars().next_back();
        let after = shown[at + line.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

fn render_attachment(a: &Map<String, Value>) -> String {
    let mut lines: Vec<String> = Vec::new();
    let field = |key: &str| text_field(a, key).map(markup::slack);
    if let Some(pretext) = field("pretext") {
        lines.push(pretext);
    }
    let mut body: Vec<String> = Vec::new();
    if let Some(author) = field("author_name") {
        body.push(match text_field(a, "author_link") {
            Some(url) => link(url, &author),
            None => author,
        });
    }
    if let Some(title) = field("title") {
        body.push(match text_field(a, "title_link") {
            Some(url) => link(url, &title),
            None => title,
        });
    }
    if let Some(text) = field("text") {
        body.push(text);
    }
    body.extend(render_fields(a.get("fields"), "title", "value", "short"));
    if let Some(url) = text_field(a, "image_url") {
        body.push(link(url, "image"));
    }
    if let Some(blocks) = a.get("blocks").and_then(Value::as_array) {
        body.push(render_blocks(blocks));
    }
    for action in a
        .get("actions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let (Some(url), Some(label)) = (
            action.get("url").and_then(Value::as_str),
            action.get("text").and_then(Value::as_str),
        ) {
            body.push(link(url, label));
        }
    }
    let footer = field("footer");
    let ts = a.get("ts").and_then(|ts| {
        ts.as_i64()
            .or_else(|| ts.as_f64().map(|f| f as i64))
            .or_else(|| ts.as_str().and_then(|s| s.split('.').next()?.parse().ok()))
    });
    match (footer, ts) {
        (Some(footer), Some(ts)) => body.push(format!("{footer} · {}", markup::utc(ts))),
        (Some(footer), None) => body.push(footer),
        (None, Some(ts)) => body.push(markup::utc(ts)),
        (None, None) => {}
    }
    body.retain(|l| !l.trim().is_empty());
    if body.is_empty()
        && let Some(fallback) = field("fallback")
    {
        body.push(fallback);
    }
    let marker = a
        .get("color")
        .and_then(Value::as_str)
        .and_then(color_marker);
    if let (Some(marker), Some(first)) = (marker, body.first_mut()) {
        *first = format!("{marker} {first}");
    }
    lines.extend(body);
    lines.join("\n")
}

/// Slack's `fields`: `title: value` lines; consecutive `short` fields share a line.
fn render_fields(fields: Option<&Value>, name: &str, value: &str, short: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut previous_short = false;
    for f in fields
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
    {
        let title = text_field(f, name).map(markup::slack);
        let text = text_field(f, value).map(markup::slack);
        let entry = match (title, text) {
            (Some(t), Some(v)) if v.contains('\n') => format!("{t}:\n{v}"),
            (Some(t), Some(v)) => format!("{t}: {v}"),
            (Some(t), None) => t,
            (None, Some(v)) => v,
            (None, None) => continue,
        };
        let is_short = f.get(short).and_then(Value::as_bool).unwrap_or(false);
        match lines.last_mut() {
            Some(last) if is_short && previous_short && !entry.contains('\n') => {
                last.push_str(" · ");
                last.push_str(&entry);
            }
            _ => lines.push(entry),
        }
        previous_short = is_short && !lines.last().is_some_and(|l| l.contains('\n'));
    }
    lines
}

/// A Block Kit text object (`{type: mrkdwn|plain_text, text}`) or a bare string.
fn text_object(value: Option<&Value>) -> Option<String> {
    let value = value?;
    let (kind, text) = match value {
        Value::String(s) => ("mrkdwn", s.as_str()),
        Value::Object(o) => (
            o.get("type").and_then(Value::as_str).unwrap_or("mrkdwn"),
            o.get("text").and_then(Value::as_str)?,
        ),
        _ => return None,
    };
    if text.trim().is_empty() {
        return None;
    }
    Some(if kind == "plain_text" {
        text.to_owned()
    } else {
        markup::slack(text)
    })
}

pub fn render_blocks(blocks: &[Value]) -> String {
    let mut lines: Vec<String> = Vec::new();
    for block in blocks.iter().filter_map(Value::as_object) {
        match block.get("type").and_then(Value::as_str).unwrap_or("") {
            "header" => lines.extend(text_object(block.get("text"))),
            "section" => {
                lines.extend(text_object(block.get("text")));
                for field in block
                    .get("fields")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    lines.extend(text_object(Some(field)));
                }
                if let Some(accessory) = block.get("accessory") {
                    lines.extend(element(accessory));
                }
            }
            "context" => {
                let parts: Vec<String> = block
                    .get("elements")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(element)
                    .collect();
                if !parts.is_empty() {
                    lines.push(parts.join(" · "));
                }
            }
            // An empty line, as senders-delivery-events B.3 renders it.
            "divider" => lines.push(DIVIDER.to_owned()),
            "image" => {
                if let Some(url) = block.get("image_url").and_then(Value::as_str) {
                    let label = text_object(block.get("title"))
                        .or_else(|| {
                            block
                                .get("alt_text")
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                        })
                        .unwrap_or_else(|| "image".to_owned());
                    lines.push(link(url, &label));
                }
            }
            "actions" => {
                let parts: Vec<String> = block
                    .get("elements")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(element)
                    .collect();
                if !parts.is_empty() {
                    lines.push(parts.join(" · "));
                }
            }
            "markdown" => {
                if let Some(text) = block.get("text").and_then(Value::as_str) {
                    lines.push(markup::markdown_links(text));
                }
            }
            "rich_text" => lines.push(rich_text(block.get("elements"))),
            _ => {}
        }
    }
    lines.retain(|l| l == DIVIDER || !l.trim().is_empty());
    lines.join("\n").replace(DIVIDER, "")
}

/// Stands for a divider's empty line until the empty lines of other blocks are dropped.
const DIVIDER: &str = "\u{0}";

/// An element of a context or actions block, or a section accessory: texts, images (their
/// alternative text) and buttons with a URL (as links).
fn element(value: &Value) -> Option<String> {
    let o = value.as_object()?;
    match o.get("type").and_then(Value::as_str)? {
        "mrkdwn" | "plain_text" => text_object(Some(value)),
        "image" => o
            .get("alt_text")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned),
        "button" => {
            let label = text_object(o.get("text")).unwrap_or_else(|| "open".to_owned());
            o.get("url")
                .and_then(Value::as_str)
                .map(|url| link(url, &label))
        }
        _ => None,
    }
}

/// The deepest list `rich_text` renders indented (Slack's own limit).
const MAX_LIST_INDENT: u64 = 8;

/// `rich_text` elements: sections, lists, quotes and preformatted text.
fn rich_text(elements: Option<&Value>) -> String {
    let mut out: Vec<String> = Vec::new();
    for e in elements.and_then(Value::as_array).into_iter().flatten() {
        let inner = e.get("elements");
        match e.get("type").and_then(Value::as_str).unwrap_or("") {
            "rich_text_section" => out.push(rich_inline(inner)),
            "rich_text_quote" => out.extend(rich_inline(inner).lines().map(|l| format!("> {l}"))),
            "rich_text_preformatted" => out.push(format!("```\n{}\n```", rich_inline(inner))),
            "rich_text_list" => {
                let ordered = e.get("style").and_then(Value::as_str) == Some("ordered");
                // Slack nests lists at most eight deep; a sender's number decides no more.
                let depth = e.get("indent").and_then(Value::as_u64).unwrap_or(0);
                let indent = "  ".repeat(depth.min(MAX_LIST_INDENT) as usize);
                for (i, item) in inner
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let bullet = if ordered {
                        format!("{}.", i + 1)
                    } else {
                        "•".to_owned()
                    };
                    out.push(format!(
                        "{indent}{bullet} {}",
                        rich_inline(item.get("elements"))
                    ));
                }
            }
            _ => {}
        }
    }
    out.join("\n")
}

fn rich_inline(elements: Option<&Value>) -> String {
    let mut out = String::new();
    for e in elements.and_then(Value::as_array).into_iter().flatten() {
        let s = |key: &str| e.get(key).and_then(Value::as_str).unwrap_or("");
        match s("type") {
            "text" => out.push_str(s("text")),
            "link" => out.push_str(&link(
                s("url"),
                if s("text").is_empty() {
                    s("url")
                } else {
                    s("text")
                },
            )),
            "user" => out.push_str(&format!("@{}", s("user_id"))),
            "usergroup" => out.push_str(&format!("@{}", s("usergroup_id"))),
            "channel" => out.push_str(&format!("#{}", s("channel_id"))),
            "broadcast" => out.push_str(&format!("@{}", s("range"))),
            "emoji" => match e
                .get("unicode")
                .and_then(Value::as_str)
                .and_then(unicode_emoji)
            {
                Some(emoji) => out.push_str(&emoji),
                None => out.push_str(&format!(":{}:", s("name"))),
            },
            "date" => out.push_str(
                &e.get("timestamp")
                    .and_then(Value::as_i64)
                    .map(markup::utc)
                    .unwrap_or_default(),
            ),
            _ => {}
        }
    }
    out
}

/// `"1f680"` or `"1f468-200d-1f4bb"` to the characters.
fn unicode_emoji(code: &str) -> Option<String> {
    code.split('-')
        .map(|c| u32::from_str_radix(c, 16).ok().and_then(char::from_u32))
        .collect()
}
