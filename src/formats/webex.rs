//! Webex messages, as Alertmanager's `webex_configs` and Grafana's Webex contact point post
//! them to Webex's `/v1/messages` (its `api_url` may be a hook's URL): `markdown` (or `text`)
//! for a room (`roomId`) or a person, and `files`, the URLs of attached pictures.

use serde_json::{Map, Value};

use super::markup::{self, link};
use super::{FormatError, text_field};

/// Where a Webex message goes: only Webex's messages name it so.
const ADDRESSES: [&str; 3] = ["roomId", "toPersonId", "toPersonEmail"];

pub fn looks_like(map: &Map<String, Value>) -> bool {
    let addressed = ADDRESSES.iter().any(|key| map.contains_key(*key));
    let written = ["markdown", "text"]
        .iter()
        .any(|key| map.get(*key).is_some_and(Value::is_string));
    (addressed && written)
        || (map.get("markdown").is_some_and(Value::is_string) && map.contains_key("files"))
}

pub fn render(message: &Map<String, Value>) -> Result<String, FormatError> {
    let mut lines = Vec::new();
    if let Some(markdown) = text_field(message, "markdown") {
        lines.push(webex_markdown(markdown));
    } else if let Some(text) = text_field(message, "text") {
        lines.push(markup::literal_text(text).into_owned());
    }
    for url in message
        .get("files")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|url| markup::is_web_url(url))
    {
        lines.push(link(url, "image"));
    }
    match lines.is_empty() {
        true => Err(FormatError::NoText),
        false => Ok(lines.join("\n")),
    }
}

/// Webex's Markdown: its links become Chat links; mentions (`<@personEmail:a@b|Ann>`,
/// `<@personId:…|Ann>`, `<@all>`) become `@Ann` and `@all`.
fn webex_markdown(text: &str) -> String {
    let named = markup::mentions(text, "<@", |inner| match inner.split_once('|') {
        Some((_, name)) => name,
        None => inner.split_once(':').map_or(inner, |(_, id)| id),
    });
    markup::markdown_text(&named)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rendered(value: Value) -> String {
        crate::formats::claimed_and_rendered(&value, looks_like, render)
    }

    #[test]
    fn markdown_links_mentions_and_files_read_as_chat_text() {
        assert_eq!(
            rendered(json!({
                "roomId": "Y2lzY29zcGFyazovL3VzL1JPT00v",
                "markdown": "**Firing** HighCPU on web-1, <@personEmail:ann@example.com|Ann> <@all>: [runbook](https://wiki.example/cpu)",
                "files": ["https://grafana.example/render/1.png"]
            })),
            "**Firing** HighCPU on web-1, @Ann @all: <https://wiki.example/cpu|runbook>\n\
             <https://grafana.example/render/1.png|image>"
        );
        assert_eq!(
            rendered(
                json!({"toPersonEmail": "ann@example.com", "text": "see <https://x.example|this>"})
            ),
            "see <\u{2060}https://x.example|this>"
        );
    }

    #[test]
    fn other_bodies_are_not_webex_and_an_empty_one_has_no_text() {
        for other in [
            json!({"text": "slack"}),
            json!({"markdown": "no address"}),
            json!({"content": "discord"}),
        ] {
            assert!(!looks_like(other.as_object().unwrap()), "{other}");
        }
        let empty = json!({"roomId": "r", "markdown": " "});
        assert_eq!(render(empty.as_object().unwrap()), Err(FormatError::NoText));
    }
}
