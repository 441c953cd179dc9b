//! Microsoft Teams incoming-webhook payloads, as the tools that notify Teams send them: the
//! Office 365 connector's MessageCard (`title`, `text`, `sections` with activity lines and
//! facts, `potentialAction` links), and Adaptive Cards, bare or as the attachments of a
//! Workflows message (`{"type": "message", "attachments": [{"contentType":
//! "application/vnd.microsoft.card.adaptive", "content": {…}}]}`). Text is Teams' Markdown:
//! its links become Chat links; `<at>name</at>` mentions become `@name`.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::markup::{self, link};
use super::{FormatError, text_field};

const ADAPTIVE: &str = "application/vnd.microsoft.card.adaptive";
const CONNECTOR: &str = "application/vnd.microsoft.teams.card.o365connector";
const HERO: &str = "application/vnd.microsoft.card.hero";
const THUMBNAIL: &str = "application/vnd.microsoft.card.thumbnail";

/// Cards nest (containers, columns, cards shown by an action); deeper than this is not read.
const MAX_DEPTH: usize = 24;

/// Which of Teams' webhooks a body was written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The Office 365 connector's MessageCard. Its senders know its answer, `200` and `1`,
    /// and some check for it (Argo CD, Zabbix's "MS Teams", pymsteams), or for 200 alone.
    Connector,
    /// Adaptive Cards, as a Workflows (Power Automate) webhook takes them. It answers `202`,
    /// and Zabbix's "MS Teams Workflow" takes nothing else; the others take any 2xx.
    Workflows,
}

/// Which Teams webhook a body was written for, if it is one. A MessageCard is told by its
/// type (`@type`, or Alertmanager's `type`), its context (`@context`, or Argo CD's `context`),
/// or the members only a card has: pymsteams and Zabbix send no type at all.
pub fn kind(map: &Map<String, Value>) -> Option<Kind> {
    if is_type(map, "type", "AdaptiveCard")
        || attachments(map).any(|(content_type, _)| is_adaptive(content_type))
    {
        return Some(Kind::Workflows);
    }
    let context = ["@context", "context"].iter().any(|key| {
        map.get(*key)
            .and_then(Value::as_str)
            .is_some_and(|c| c.contains("schema.org/extensions"))
    });
    // Sections and actions as only a card writes them.
    const SECTION_KEYS: [&str; 7] = [
        "activityTitle",
        "activitySubtitle",
        "activityText",
        "activityImage",
        "facts",
        "heroImage",
        "startGroup",
    ];
    let sections = objects_or_one(map, "sections")
        .into_iter()
        .any(|section| SECTION_KEYS.iter().any(|key| section.contains_key(*key)));
    let actions = objects(map, "potentialAction").any(|action| action.contains_key("@type"));
    let has_text = |key: &str| map.get(key).is_some_and(Value::is_string);
    // A card of a title or summary and text (pymsteams, Argo CD's templates): Slack has no
    // top-level title; a bare `{"text"}` stays Slack's (`format = "teams"` reads it as a card).
    let titled = has_text("text") && (has_text("title") || has_text("summary"));
    let card = is_type(map, "@type", "MessageCard")
        || is_type(map, "type", "MessageCard")
        || context
        || sections
        || actions
        || titled
        || (map.contains_key("themeColor") && (has_text("title") || has_text("text")))
        || attachments(map).any(|(content_type, _)| is_card(content_type));
    card.then_some(Kind::Connector)
}

fn is_type(map: &Map<String, Value>, key: &str, name: &str) -> bool {
    map.get(key)
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case(name))
}

fn is_adaptive(content_type: &str) -> bool {
    content_type.eq_ignore_ascii_case(ADAPTIVE)
}

fn is_card(content_type: &str) -> bool {
    [ADAPTIVE, CONNECTOR, HERO, THUMBNAIL]
        .iter()
        .any(|card| content_type.eq_ignore_ascii_case(card))
}

/// A message's attachments: each one's content type and content.
fn attachments(map: &Map<String, Value>) -> impl Iterator<Item = (&str, &Map<String, Value>)> {
    map.get("attachments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .filter_map(|attachment| {
            Some((
                attachment.get("contentType")?.as_str()?,
                attachment.get("content")?.as_object()?,
            ))
        })
}

/// Either kind of body, whichever it is (a hook may force the format).
pub fn render(message: &Map<String, Value>) -> Result<String, FormatError> {
    let mut sections = Vec::new();
    if is_type(message, "type", "AdaptiveCard") {
        sections.push(adaptive_card(message, 0));
    } else if !attachments(message).any(|(content_type, _)| is_card(content_type)) {
        sections.push(message_card(message));
    } else {
        // A Workflows or Bot Framework message: its own text, then each card.
        if let Some(text) = text_field(message, "text") {
            sections.push(teams_text(text));
        }
        for (content_type, content) in attachments(message) {
            sections.push(match content_type.to_ascii_lowercase().as_str() {
                ADAPTIVE => adaptive_card(content, 0),
                CONNECTOR => message_card(content),
                HERO | THUMBNAIL => hero_card(content),
                _ => continue,
            });
        }
    }
    sections.retain(|s| !s.trim().is_empty());
    match sections.is_empty() {
        true => Err(FormatError::NoText),
        false => Ok(sections.join("\n\n")),
    }
}

/// Teams' text as Chat text: Markdown, in which Teams also takes a little HTML (`<br>`, `<p>`,
/// `<at>` mentions, `<a href>`, entities): see [`markup::html_text`]. Markdown links become
/// Chat links; any other `<url|…>` stays text.
fn teams_text(text: &str) -> String {
    markup::html_text(text, markdown_segment)
}

fn markdown_segment(text: &str) -> Cow<'_, str> {
    Cow::Owned(markup::markdown_text(text))
}

fn field(map: &Map<String, Value>, key: &str) -> Option<String> {
    text_field(map, key).map(teams_text)
}

/// The connector's card: a colour marker and the title, the text, each section (activity
/// title, subtitle and text, its own title and text, its facts), then its links.
fn message_card(card: &Map<String, Value>) -> String {
    let mut lines: Vec<String> = Vec::new();
    let title = field(card, "title");
    let text = field(card, "text");
    let sections = objects_or_one(card, "sections");
    match (title, text.is_none() && sections.is_empty()) {
        (Some(title), _) => lines.push(title),
        // A card of a summary alone: Teams shows it in the notification.
        (None, true) => lines.extend(field(card, "summary")),
        (None, false) => {}
    }
    lines.extend(text);
    for section in sections {
        for key in [
            "activityTitle",
            "activitySubtitle",
            "activityText",
            "title",
            "text",
        ] {
            lines.extend(field(section, key));
        }
        lines.extend(facts(section, "name", "value"));
        lines.extend(objects(section, "potentialAction").filter_map(connector_action));
    }
    let actions: Vec<String> = objects(card, "potentialAction")
        .filter_map(connector_action)
        .collect();
    if !actions.is_empty() {
        lines.push(actions.join(" · "));
    }
    let marker = text_field(card, "themeColor").and_then(markup::color_marker);
    if let (Some(marker), Some(first)) = (marker, lines.first_mut()) {
        *first = format!("{marker} {first}");
    }
    lines.join("\n")
}

/// A connector card's action that opens a page (`OpenUri`, the older `ViewAction`) as a link;
/// actions Chat cannot carry out (`HttpPOST`, `ActionCard`) are left out.
fn connector_action(action: &Map<String, Value>) -> Option<String> {
    let name = text_field(action, "name").unwrap_or("link");
    let url = match action.get("@type").and_then(Value::as_str)? {
        "OpenUri" => objects(action, "targets")
            .find(|t| text_field(t, "os").is_none_or(|os| os.eq_ignore_ascii_case("default")))
            .and_then(|target| text_field(target, "uri")),
        "ViewAction" => action
            .get("target")
            .and_then(Value::as_array)
            .and_then(|targets| targets.first())
            .and_then(Value::as_str),
        _ => None,
    }?;
    markup::is_web_url(url).then(|| link(url, name))
}

fn objects<'a>(
    map: &'a Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a Map<String, Value>> {
    map.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

/// A member that is a list of objects, or one object where a sender gives one.
fn objects_or_one<'a>(map: &'a Map<String, Value>, key: &str) -> Vec<&'a Map<String, Value>> {
    match map.get(key) {
        Some(Value::Object(one)) => vec![one],
        _ => objects(map, key).collect(),
    }
}

/// `name: value` lines of a fact list (a connector section's `name`, an Adaptive `FactSet`'s
/// `title`).
fn facts<'a>(
    map: &'a Map<String, Value>,
    name: &'a str,
    value: &'a str,
) -> impl Iterator<Item = String> + 'a {
    objects(map, "facts").filter_map(move |fact| {
        // Some senders end a fact's name with its colon (Healthchecks).
        let name = super::scalar_field(fact, name)
            .map(|n| teams_text(&n).trim_end().trim_end_matches(':').to_owned());
        match (
            name.filter(|n| !n.is_empty()),
            super::scalar_field(fact, value),
        ) {
            (Some(n), Some(v)) => Some(format!("{n}: {}", teams_text(&v))),
            (Some(one), None) => Some(one),
            (None, Some(v)) => Some(teams_text(&v)),
            (None, None) => None,
        }
    })
}

/// An Adaptive Card: its body's elements in order, then its actions, with a colour marker
/// when the card says how things stand (a `good`, `warning` or `attention` style or colour).
fn adaptive_card(card: &Map<String, Value>, depth: usize) -> String {
    let mut lines = Vec::new();
    let mut marker = None;
    elements(card, "body", depth, &mut lines, &mut marker);
    let actions = actions(card, depth);
    if !actions.is_empty() {
        lines.push(actions);
    }
    if lines.is_empty() {
        lines.extend(field(card, "fallbackText"));
    }
    if let (Some(marker), Some(first)) = (marker, lines.first_mut()) {
        *first = format!("{marker} {first}");
    }
    lines.join("\n")
}

/// The card's state as a marker: Adaptive Cards' container styles and text colours.
fn state_marker(element: &Map<String, Value>) -> Option<&'static str> {
    ["style", "color"].iter().find_map(|key| {
        match element.get(*key)?.as_str()?.to_ascii_lowercase().as_str() {
            "good" => Some("🟢"),
            "warning" => Some("🟡"),
            "attention" => Some("🔴"),
            _ => None,
        }
    })
}

fn elements(
    parent: &Map<String, Value>,
    key: &str,
    depth: usize,
    lines: &mut Vec<String>,
    marker: &mut Option<&'static str>,
) {
    if depth > MAX_DEPTH {
        return;
    }
    for element in objects(parent, key) {
        element_lines(element, depth + 1, lines, marker);
    }
}

fn element_lines(
    element: &Map<String, Value>,
    depth: usize,
    lines: &mut Vec<String>,
    marker: &mut Option<&'static str>,
) {
    // Hidden until a button shows it, which Chat has not.
    if element.get("isVisible") == Some(&Value::Bool(false)) {
        return;
    }
    if marker.is_none() {
        *marker = state_marker(element);
    }
    let kind = element.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "TextBlock" => lines.extend(field(element, "text")),
        "RichTextBlock" => {
            let line: String = element
                .get("inlines")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|inline| match inline {
                    Value::String(text) => Some(teams_text(text)),
                    Value::Object(run) => {
                        let text = text_field(run, "text")?;
                        Some(match open_url(run.get("selectAction")) {
                            Some(url) => link(url, text),
                            None => teams_text(text),
                        })
                    }
                    _ => None,
                })
                .collect();
            if !line.trim().is_empty() {
                lines.push(line);
            }
        }
        "FactSet" => lines.extend(facts(element, "title", "value")),
        // A flow layout sets its items side by side (Uptime Kuma's tags as badges).
        "Container" if flows(element) => {
            let mut inner = Vec::new();
            elements(element, "items", depth, &mut inner, marker);
            if !inner.is_empty() {
                lines.push(inner.join(" · "));
            }
        }
        "Container" => elements(element, "items", depth, lines, marker),
        "Badge" => lines.extend(field(element, "text")),
        "CodeBlock" => {
            if let Some(code) = text_field(element, "codeSnippet") {
                lines.push(format!("```\n{}\n```", code.trim_end_matches('\n')));
            }
        }
        "Column" => elements(element, "items", depth, lines, marker),
        "ColumnSet" => {
            // Short columns side by side on one line, as Teams shows them.
            let columns: Vec<String> = objects(element, "columns")
                .filter(|column| column.get("isVisible") != Some(&Value::Bool(false)))
                .map(|column| {
                    let mut inner = Vec::new();
                    elements(column, "items", depth, &mut inner, marker);
                    inner.join("\n")
                })
                .filter(|column| !column.trim().is_empty())
                .collect();
            match columns.iter().any(|column| column.contains('\n')) {
                true => lines.extend(columns),
                false if !columns.is_empty() => lines.push(columns.join(" · ")),
                false => {}
            }
        }
        "Table" => {
            for row in objects(element, "rows") {
                let cells: Vec<String> = objects(row, "cells")
                    .map(|cell| {
                        let mut inner = Vec::new();
                        elements(cell, "items", depth, &mut inner, marker);
                        inner.join(" ")
                    })
                    .collect();
                if cells.iter().any(|cell| !cell.trim().is_empty()) {
                    lines.push(cells.join(" | "));
                }
            }
        }
        "Image" => lines.extend(image(element)),
        "ImageSet" => lines.extend(objects(element, "images").filter_map(image)),
        "ActionSet" => {
            let actions = actions(element, depth);
            if !actions.is_empty() {
                lines.push(actions);
            }
        }
        _ => {
            // An element this reader does not know: its fallback, when the card gives one.
            if let Some(fallback) = element.get("fallback").and_then(Value::as_object) {
                element_lines(fallback, depth + 1, lines, marker);
            }
        }
    }
}

fn flows(container: &Map<String, Value>) -> bool {
    objects(container, "layouts").any(|layout| is_type(layout, "type", "Layout.Flow"))
}

/// A picture as a link to it; an icon beside a title (a person's style, a small size, at most
/// 64 pixels wide or high: Apprise's and Uptime Kuma's logos) is decoration and left out.
fn image(element: &Map<String, Value>) -> Option<String> {
    let small = |key: &str| {
        text_field(element, key)
            .and_then(|size| size.trim().strip_suffix("px"))
            .and_then(|pixels| pixels.trim().parse::<u32>().ok())
            .is_some_and(|pixels| pixels <= 64)
    };
    if is_type(element, "style", "Person")
        || is_type(element, "size", "Small")
        || small("width")
        || small("height")
    {
        return None;
    }
    let url = text_field(element, "url").filter(|url| markup::is_web_url(url))?;
    Some(link(url, text_field(element, "altText").unwrap_or("image")))
}

/// The URL of an `Action.OpenUrl`.
fn open_url(action: Option<&Value>) -> Option<&str> {
    open_url_of(action?.as_object()?)
}

fn open_url_of(action: &Map<String, Value>) -> Option<&str> {
    (action.get("type")?.as_str()? == "Action.OpenUrl")
        .then(|| text_field(action, "url"))
        .flatten()
        .filter(|url| markup::is_web_url(url))
}

/// A card's buttons that open pages, as links on one line; a button that shows a card adds
/// that card's text. Buttons that post back (`Action.Submit`, `Action.Execute`) are left out.
fn actions(card: &Map<String, Value>, depth: usize) -> String {
    let mut links = Vec::new();
    let mut shown = Vec::new();
    for action in objects(card, "actions") {
        let title = text_field(action, "title").unwrap_or("link");
        if let Some(url) = open_url_of(action) {
            links.push(link(url, title));
        } else if let Some(card) = action
            .get("card")
            .and_then(Value::as_object)
            .filter(|_| is_type(action, "type", "Action.ShowCard") && depth < MAX_DEPTH)
        {
            let text = adaptive_card(card, depth + 1);
            if !text.trim().is_empty() {
                shown.push(format!("{}:\n{text}", teams_text(title)));
            }
        }
    }
    let mut out = links.join(" · ");
    for card in shown {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&card);
    }
    out
}

/// A Bot Framework hero or thumbnail card: title, subtitle, text, and its `openUrl` buttons.
fn hero_card(card: &Map<String, Value>) -> String {
    let mut lines: Vec<String> = ["title", "subtitle", "text"]
        .iter()
        .filter_map(|key| field(card, key))
        .collect();
    let buttons: Vec<String> = objects(card, "buttons")
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("openUrl"))
        .filter_map(|b| {
            let url = text_field(b, "value").filter(|url| markup::is_web_url(url))?;
            Some(link(url, text_field(b, "title").unwrap_or("link")))
        })
        .collect();
    if !buttons.is_empty() {
        lines.push(buttons.join(" · "));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rendered(value: Value) -> String {
        crate::formats::claimed_and_rendered(&value, |map| kind(map).is_some(), render)
    }

    #[test]
    fn a_message_card_shows_title_text_sections_facts_and_links() {
        let text = rendered(json!({
            "@type": "MessageCard",
            "@context": "http://schema.org/extensions",
            "themeColor": "FF0000",
            "summary": "HighCPU",
            "title": "[FIRING:1] HighCPU",
            "text": "CPU above 90% on **web-1**<br>see [runbook](https://wiki.example/cpu)",
            "sections": [{
                "activityTitle": "web-1",
                "activitySubtitle": "production",
                "activityImage": "https://example.org/icon.png",
                "facts": [{"name": "Severity", "value": "critical"}, {"name": "Value", "value": 93}],
                "markdown": true
            }],
            "potentialAction": [
                {"@type": "OpenUri", "name": "Open Grafana",
                 "targets": [{"os": "default", "uri": "https://grafana.example/d/1"}]},
                {"@type": "HttpPOST", "name": "Ack", "target": "https://x.example/ack"}
            ]
        }));
        assert_eq!(
            text,
            "🔴 [FIRING:1] HighCPU\nCPU above 90% on **web-1**\nsee <https://wiki.example/cpu|runbook>\n\
             web-1\nproduction\nSeverity: critical\nValue: 93\n<https://grafana.example/d/1|Open Grafana>"
        );
    }

    #[test]
    fn a_workflows_message_shows_each_adaptive_card() {
        let text = rendered(json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {"type": "Container", "style": "attention", "items": [
                            {"type": "TextBlock", "text": "Alert firing", "weight": "Bolder", "size": "Large"}
                        ]},
                        {"type": "TextBlock", "text": "Hello <at>Ops</at>, disk **full**", "wrap": true},
                        {"type": "TextBlock", "text": "hidden", "isVisible": false},
                        {"type": "FactSet", "facts": [{"title": "host", "value": "web-1"}]},
                        {"type": "ColumnSet", "columns": [
                            {"type": "Column", "items": [{"type": "TextBlock", "text": "left"}]},
                            {"type": "Column", "items": [{"type": "TextBlock", "text": "right"}]}
                        ]},
                        {"type": "Table", "rows": [
                            {"type": "TableRow", "cells": [
                                {"type": "TableCell", "items": [{"type": "TextBlock", "text": "a"}]},
                                {"type": "TableCell", "items": [{"type": "TextBlock", "text": "b"}]}
                            ]}
                        ]},
                        {"type": "RichTextBlock", "inlines": [
                            "see ",
                            {"type": "TextRun", "text": "the logs",
                             "selectAction": {"type": "Action.OpenUrl", "url": "https://logs.example/1"}}
                        ]},
                        {"type": "Image", "url": "https://example.org/graph.png", "altText": "graph"},
                        {"type": "Input.Text", "id": "comment"},
                        {"type": "Rating", "fallback": {"type": "TextBlock", "text": "4 of 5"}}
                    ],
                    "actions": [
                        {"type": "Action.OpenUrl", "title": "View", "url": "https://am.example/#/alerts"},
                        {"type": "Action.Submit", "title": "Silence"},
                        {"type": "Action.ShowCard", "title": "Details",
                         "card": {"type": "AdaptiveCard", "body": [{"type": "TextBlock", "text": "more"}]}}
                    ],
                    "msteams": {"width": "Full"}
                }
            }]
        }));
        assert_eq!(
            text,
            "🔴 Alert firing\nHello @Ops, disk **full**\nhost: web-1\nleft · right\na | b\n\
             see <https://logs.example/1|the logs>\n<https://example.org/graph.png|graph>\n4 of 5\n\
             <https://am.example/#/alerts|View>\nDetails:\nmore"
        );
    }

    #[test]
    fn typed_links_stay_text_and_unsafe_urls_are_not_links() {
        let text = rendered(json!({
            "type": "AdaptiveCard",
            "body": [{"type": "TextBlock", "text": "<https://evil.example|Approve>"}],
            "actions": [{"type": "Action.OpenUrl", "title": "x", "url": "javascript:alert(1)"}]
        }));
        assert_eq!(text, "<\u{2060}https://evil.example|Approve>");
    }

    #[test]
    fn empty_cards_have_no_text_and_other_bodies_are_not_teams() {
        let empty = json!({"type": "message", "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive",
             "content": {"type": "AdaptiveCard", "body": []}}
        ]});
        assert_eq!(render(empty.as_object().unwrap()), Err(FormatError::NoText));
        for other in [
            json!({"text": "hi"}),
            json!({"attachments": [{"fallback": "x", "text": "slack"}]}),
            json!({"content": "discord"}),
        ] {
            assert_eq!(kind(other.as_object().unwrap()), None, "{other}");
        }
    }

    #[test]
    fn short_cards_are_cards_and_lookalikes_are_not() {
        assert_eq!(
            rendered(json!({"title": "Backup finished", "text": "2.1 GB in 312 s"})),
            "Backup finished\n2.1 GB in 312 s"
        );
        assert_eq!(rendered(json!({"summary": "s", "text": "t"})), "t");
        for other in [
            json!({"title": "Backup", "message": "done", "sections": [{"name": "a"}]}),
            json!({"title": "Backup", "message": "done", "potentialAction": [{"name": "x"}]}),
            json!({"themeColor": "red", "message": "done"}),
        ] {
            assert_eq!(kind(other.as_object().unwrap()), None, "{other}");
        }
    }

    #[test]
    fn teams_html_in_text_reads_as_text() {
        assert_eq!(
            rendered(json!({"@type": "MessageCard",
                "text": "a<Br>b</br>c<br >d<p>e</p>f &amp; g&nbsp;h <AT>Ops</AT> <at id=\"0\">Ann</at> 1 < 2",
                "sections": [{"facts": [{"name": 2, "value": false}]}]})),
            "a\nb\nc\nd\ne\nf & g h @Ops @Ann 1 < 2\n2: false"
        );
    }

    #[test]
    fn hostile_nesting_is_read_to_a_depth() {
        let mut card = json!({"type": "TextBlock", "text": "deep"});
        for _ in 0..100 {
            card = json!({"type": "Container", "items": [card]});
        }
        let text = render(
            json!({"type": "AdaptiveCard", "body": [card]})
                .as_object()
                .unwrap(),
        );
        assert_eq!(text, Err(FormatError::NoText));
    }
}
