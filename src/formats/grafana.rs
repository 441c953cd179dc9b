//! Grafana alerting webhook contact point (version 1; grafana/alerting receivers/webhook):
//! `title` and `message` (Grafana's default template already lists each alert's values and
//! links), then each alert's links the message does not already carry.

use serde_json::{Map, Value};

use super::markup::{self, link};
use super::{FormatError, text_field};

pub fn render(message: &Map<String, Value>) -> Result<String, FormatError> {
    let alerts = message
        .get("alerts")
        .and_then(Value::as_array)
        .ok_or_else(|| FormatError::InvalidPayload("a Grafana payload has `alerts`".into()))?;
    let marker = match text_field(message, "state").or_else(|| text_field(message, "status")) {
        Some("alerting" | "firing") => "🔥 ",
        Some("ok" | "resolved") => "✅ ",
        Some("no_data") => "❔ ",
        _ => "",
    };
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
