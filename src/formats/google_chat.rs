//! Google Chat incoming-webhook messages, as Grafana, Uptime Kuma, Flux, Argo CD, Healthchecks,
//! Jenkins and GitLab post them: `text` in Google Chat's markup (Slack's `<url|label>` links,
//! `<users/…>` mentions), and cards, v1 (`cards`) or v2 (`cardsV2`), whose widgets hold a small
//! HTML (`<b>`, `<font>`, `<a href>`, `<br>`).

use serde_json::{Map, Value};

use super::markup::{self, link};
use super::{FormatError, scalar_field, text_field};

/// Cards nest (columns); deeper than this is not read.
const MAX_DEPTH: usize = 8;

/// Whether a body is a Google Chat message: it has cards as Google Chat's are written (v1's with
/// a `header` or `sections`, v2's `{cardId, card}`), or names a thread by key as only Google
/// Chat's messages do (`{"text", "thread": {"threadKey"}}`: Jenkins, GitLab, Apprise).
pub fn looks_like(map: &Map<String, Value>) -> bool {
    let cards = |key: &str, members: &[&str]| {
        map.get(key).and_then(Value::as_array).is_some_and(|cards| {
            cards
                .iter()
                .filter_map(Value::as_object)
                .any(|card| members.iter().any(|member| card.contains_key(*member)))
        })
    };
    cards("cards", &["header", "sections"])
        || cards("cardsV2", &["card", "cardId"])
        || map
            .get("thread")
            .and_then(Value::as_object)
            .is_some_and(|thread| {
                ["threadKey", "thread_key"]
                    .iter()
                    .any(|key| thread.contains_key(*key))
            })
}

pub fn render(message: &Map<String, Value>) -> Result<String, FormatError> {
    let mut sections = Vec::new();
    if let Some(text) = text_field(message, "text") {
        sections.push(chat_text(text));
    }
    for card in list(message, "cards") {
        sections.push(card_text(card));
    }
    for card in list(message, "cardsV2") {
        // `{cardId, card}`; a card given bare is read too.
        sections.push(card_text(
            card.get("card").and_then(Value::as_object).unwrap_or(card),
        ));
    }
    sections.retain(|s| !s.trim().is_empty());
    if sections.is_empty() {
        sections.extend(
            text_field(message, "fallbackText").map(|t| markup::literal_text(t).into_owned()),
        );
    }
    match sections.is_empty() {
        true => Err(FormatError::NoText),
        false => Ok(sections.join("\n\n")),
    }
}

/// A member that is a list of objects, or one object where senders give one (Healthchecks'
/// `sections`).
fn list<'a>(map: &'a Map<String, Value>, key: &str) -> Vec<&'a Map<String, Value>> {
    match map.get(key) {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_object).collect(),
        Some(Value::Object(one)) => vec![one],
        _ => Vec::new(),
    }
}

fn object<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Map<String, Value>> {
    map.get(key).and_then(Value::as_object)
}

/// Google Chat's message markup: mentions (`<users/123>`, `<users/all>`) as `@…`, then as
/// Slack's (`<url|label>` links).
fn chat_text(text: &str) -> String {
    markup::slack(&markup::mentions(text, "<users/", |user| user))
}

/// A card: its header, then each section's header and widgets.
fn card_text(card: &Map<String, Value>) -> String {
    let mut lines = Vec::new();
    if let Some(header) = object(card, "header") {
        lines.extend(text_field(header, "title").map(card_html));
        lines.extend(text_field(header, "subtitle").map(card_html));
    }
    for section in list(card, "sections") {
        lines.extend(text_field(section, "header").map(card_html));
        widgets(section, 0, &mut lines);
    }
    lines.retain(|line| !line.trim().is_empty());
    lines.join("\n")
}

fn widgets(parent: &Map<String, Value>, depth: usize, lines: &mut Vec<String>) {
    if depth > MAX_DEPTH {
        return;
    }
    for widget in list(parent, "widgets") {
        widget_lines(widget, depth, lines);
    }
}

/// One widget (both card versions): each kind is a member; unknown ones and inputs are left
/// out. Flux writes every kind's member, the unused ones `null`.
fn widget_lines(widget: &Map<String, Value>, depth: usize, lines: &mut Vec<String>) {
    if let Some(paragraph) = object(widget, "textParagraph") {
        lines.extend(text_field(paragraph, "text").map(card_html));
    }
    // v1's `keyValue`, v2's `decoratedText`.
    for (kind, value_key) in [("keyValue", "content"), ("decoratedText", "text")] {
        if let Some(item) = object(widget, kind) {
            let label = text_field(item, "topLabel").map(card_html);
            let value = scalar_field(item, value_key).map(|v| card_html(&v));
            let line = match (label, value) {
                (Some(l), Some(v)) => format!("{l}: {v}"),
                (Some(one), None) | (None, Some(one)) => one,
                (None, None) => continue,
            };
            let line = match text_field(item, "bottomLabel").map(card_html) {
                Some(bottom) => format!("{line} ({bottom})"),
                None => line,
            };
            lines.push(match open_link(item) {
                Some(url) => format!("{line} {}", link(url, "open")),
                None => line,
            });
            lines.extend(object(item, "button").and_then(button));
        }
    }
    if let Some((image, url)) = object(widget, "image").and_then(|image| {
        Some((
            image,
            text_field(image, "imageUrl").filter(|url| markup::is_web_url(url))?,
        ))
    }) {
        lines.push(link(url, text_field(image, "altText").unwrap_or("image")));
    }
    // v1's `buttons: [{textButton}]`, v2's `buttonList: {buttons: [...]}`.
    let buttons: Vec<String> = widget
        .get("buttons")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .chain(object(widget, "buttonList").into_iter().flat_map(|list| {
            list.get("buttons")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
        }))
        .filter_map(button)
        .collect();
    if !buttons.is_empty() {
        lines.push(buttons.join(" · "));
    }
    if let Some(chips) = object(widget, "chipList") {
        let chips: Vec<String> = list(chips, "chips")
            .into_iter()
            .filter_map(|chip| {
                let label = text_field(chip, "label").unwrap_or("link");
                Some(link(open_link(chip)?, label))
            })
            .collect();
        if !chips.is_empty() {
            lines.push(chips.join(" · "));
        }
    }
    if let Some(grid) = object(widget, "grid") {
        lines.extend(text_field(grid, "title").map(card_html));
        for item in list(grid, "items") {
            let title = text_field(item, "title").map(card_html);
            let subtitle = text_field(item, "subtitle").map(card_html);
            lines.extend(match (title, subtitle) {
                (Some(t), Some(s)) => Some(format!("{t}: {s}")),
                (one, other) => one.or(other),
            });
        }
    }
    if let Some(columns) = object(widget, "columns") {
        for column in list(columns, "columnItems") {
            widgets(column, depth + 1, lines);
        }
    }
}

/// A button that opens a page, as a link: v1's `{textButton: {text, onClick}}` or v2's
/// `{text, onClick}`; an image button is labelled by its alt text.
fn button(button: &Map<String, Value>) -> Option<String> {
    let button = object(button, "textButton")
        .or_else(|| object(button, "imageButton"))
        .unwrap_or(button);
    let url = open_link(button)?;
    let label = text_field(button, "text")
        .or_else(|| text_field(button, "altText"))
        .unwrap_or("link");
    Some(link(url, &card_html(label)))
}

/// The page a widget's `onClick` opens (http or https only).
fn open_link(item: &Map<String, Value>) -> Option<&str> {
    let open = object(object(item, "onClick")?, "openLink")?;
    text_field(open, "url").filter(|url| markup::is_web_url(url))
}

/// A card's HTML as Chat text ([`markup::html_text`]); its text is not Markdown.
fn card_html(html: &str) -> String {
    markup::html_text(html, markup::literal_text)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rendered(value: Value) -> String {
        crate::formats::claimed_and_rendered(&value, looks_like, render)
    }

    #[test]
    fn cards_of_both_versions_read_as_chat_text() {
        assert_eq!(
            rendered(json!({
                "text": "",
                "cards": [{"header": {"title": "[FIRING:1] HighCPU", "subtitle": null},
                    "sections": [{"widgets": [
                        {"textParagraph": {"text": "<b>web-1</b> is at <font color=\"#ff0000\">97%</font><br>see <a href=\"https://wiki.example/cpu?a=1&amp;b=2\">runbook</a>"}, "keyValue": null},
                        {"textParagraph": null, "keyValue": {"topLabel": "instance", "content": "web-1:9100"}},
                        {"buttons": [{"textButton": {"text": "OPEN IN GRAFANA", "onClick": {"openLink": {"url": "https://grafana.example/d/1"}}}}]},
                        {"image": {"imageUrl": "https://grafana.example/render.png"}}
                    ]}]}],
                "cardsV2": [{"cardId": "x", "card": {"sections": {"widgets": [
                    {"decoratedText": {"topLabel": "Last Ping", "text": "7 minutes ago"}},
                    {"buttonList": {"buttons": [{"text": "View", "onClick": {"openLink": {"url": "https://hc.example/1"}}},
                                                {"text": "Run", "onClick": {"action": {"function": "x"}}}]}},
                    {"divider": {}}
                ]}}}]
            })),
            "[FIRING:1] HighCPU\nweb-1 is at 97%\nsee <https://wiki.example/cpu?a=1&b=2|runbook>\n\
             instance: web-1:9100\n<https://grafana.example/d/1|OPEN IN GRAFANA>\n\
             <https://grafana.example/render.png|image>\n\nLast Ping: 7 minutes ago\n<https://hc.example/1|View>"
        );
    }

    #[test]
    fn text_reads_as_google_chat_writes_it() {
        assert_eq!(
            rendered(
                json!({"text": "Pipeline <https://gitlab.example/p/1|#1> failed <users/all> <users/123>",
                "thread": {"threadKey": "p1"}})
            ),
            "Pipeline <https://gitlab.example/p/1|#1> failed @all @123"
        );
    }

    #[test]
    fn card_text_cannot_make_links_and_odd_tags_stay_text() {
        assert_eq!(
            card_html(
                "&lt;https://evil.example|Approve&gt; 1 < 2 <script>x</script> <a href=\"javascript:x\">y</a>"
            ),
            "<\u{2060}https://evil.example|Approve> 1 < 2 <script>x</script> y"
        );
    }

    #[test]
    fn other_bodies_are_not_google_chat_and_empty_cards_have_no_text() {
        for other in [
            json!({"text": "slack"}),
            json!({"content": "discord"}),
            json!({"thread_ts": "1.2", "text": "slack reply"}),
            json!({"board": "b", "cards": [{"name": "todo"}], "message": "Board updated"}),
            json!({"thread": {"name": "t"}, "text": "x"}),
        ] {
            assert!(!looks_like(other.as_object().unwrap()), "{other}");
        }
        let empty = json!({"cards": [{"sections": [{"widgets": [{"divider": {}}]}]}]});
        assert_eq!(render(empty.as_object().unwrap()), Err(FormatError::NoText));
        let fallback =
            json!({"cardsV2": [{"cardId": "c", "card": {}}], "fallbackText": "web-1 down"});
        assert_eq!(rendered(fallback), "web-1 down");
    }
}
