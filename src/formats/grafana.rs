//! Grafana alerting webhook contact point (version 1; grafana/alerting receivers/webhook):
//! `title` and `message` (Grafana's default template already lists each alert's values and
//! links), then each alert's links the message does not already carry.

use serde_json::{Map, Value};

use super::markup::{self, link};
use super::{FormatError, text_field};

pub fn render(message: &Map<String, Value>) -> Result<String, FormatError> {
    let Some(alerts) = message.get("alerts").and_then(Value::as_array) else {
        if is_legacy(message) {
            return Ok(legacy(message));
        }
        return Err(FormatError::InvalidPayload(
            "a Grafana payload has `alerts` (or, from legacy alerting, `ruleName`)".into(),
        ));
    };
    let marker = marker(message);
    let mut lines: Vec<String> = Vec::new();
    if let Some(title) = text_field(message, "title") {
        lines.push(format!("{marker}{}", title.trim()));
    }
    let body = text_field(message, "message")
        .map(markup::markdown_links)
        .unwrap_or_default();
    lines.push(body.clone());
    for alert in alerts.iter().filter_map(Value::as_object) {
        let mut extra: Vec<String> = Vec::new();
        let labels = alert.get("labels").and_then(Value::as_object);
        let name = labels
            .and_then(|l| text_field(l, "alertname"))
            .unwrap_or("alert");
        if !body.contains("Value:")
            && let Some(values) = text_field(alert, "valueString")
        {
            extra.push(format!("values {values}"));
        }
        for (key, label) in [
            ("generatorURL", "source"),
            ("silenceURL", "silence"),
            ("dashboardURL", "dashboard"),
            ("panelURL", "panel"),
            ("imageURL", "image"),
        ] {
            if let Some(url) = text_field(alert, key)
                && !body.contains(url)
            {
                extra.push(link(url, label));
            }
        }
        if !extra.is_empty() {
            lines.push(format!("• {name}: {}", extra.join(" · ")));
        }
    }
    // Alerts beyond the contact point's `max_alerts` are left out of `alerts` and counted here.
    if let Some(more) = message.get("truncatedAlerts").and_then(Value::as_u64)
        && more > 0
    {
        lines.push(format!("…and {more} more"));
    }
    if lines.iter().all(|l| l.trim().is_empty())
        && let Some(url) = text_field(message, "externalURL")
    {
        lines.push(link(url, "Grafana"));
    }
    Ok(lines.join("\n"))
}

/// `🔥 ` for a firing state (unified `alerting`/`firing`, legacy `alerting`), and so on.
fn marker(message: &Map<String, Value>) -> &'static str {
    match text_field(message, "state").or_else(|| text_field(message, "status")) {
        Some("alerting" | "firing") => "🔥 ",
        Some("ok" | "resolved") => "✅ ",
        Some("no_data") => "❔ ",
        Some("pending") => "⏳ ",
        Some("paused") => "⏸ ",
        _ => "",
    }
}

/// A body of Grafana's legacy (dashboard) alerting, before version 8 and in instances that
/// still run it: `title`, `ruleName`, `ruleUrl`, `state`, `message`, `evalMatches`, `imageUrl`.
pub fn is_legacy(message: &Map<String, Value>) -> bool {
    message.contains_key("state")
        && (message.contains_key("ruleName")
            || message.contains_key("ruleUrl")
            || message.contains_key("evalMatches"))
}

/// The title (else the rule's name), the message, a line per evaluated metric, then the links
/// to the rule and the panel's image.
fn legacy(message: &Map<String, Value>) -> String {
    let mut lines: Vec<String> = Vec::new();
    if let Some(title) = text_field(message, "title").or_else(|| text_field(message, "ruleName")) {
        lines.push(format!("{}{}", marker(message), title.trim()));
    }
    if let Some(body) = text_field(message, "message") {
        lines.push(markup::markdown_links(body));
    }
    for item in message
        .get("evalMatches")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
    {
        let metric = text_field(item, "metric").unwrap_or("value");
        let value = match item.get("value") {
            Some(Value::String(value)) => value.clone(),
            Some(Value::Null) | None => "no value".to_owned(),
            Some(value) => value.to_string(),
        };
        lines.push(format!("• {metric}: {value}"));
    }
    let links: Vec<String> = [("ruleUrl", "rule"), ("imageUrl", "image")]
        .into_iter()
        .filter_map(|(key, label)| text_field(message, key).map(|url| link(url, label)))
        .collect();
    if !links.is_empty() {
        lines.push(links.join(" · "));
    }
    lines.join("\n")
}
