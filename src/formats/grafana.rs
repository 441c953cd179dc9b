//! Grafana alerting webhook contact point (version 1; grafana/alerting receivers/webhook):
//! `title` and `message` (Grafana's default template already lists each alert's values and
//! links), then each alert's links the message does not already carry. The title and message
//! carry label values (which anyone deploying a workload may set): they are shown as typed
//! ([`literal_text`]), but for the message's Markdown links.

use serde_json::{Map, Value};

use super::markup::{self, link, literal_text};
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
        lines.push(format!("{marker}{}", literal_text(title.trim())));
    }
    let body = text_field(message, "message")
        .map(markup::markdown_text)
        .unwrap_or_default();
    lines.push(body.clone());
    for alert in alerts.iter().filter_map(Value::as_object) {
        let mut extra: Vec<String> = Vec::new();
        let labels = alert.get("labels").and_then(Value::as_object);
        let name = labels
            .and_then(|l| text_field(l, "alertname"))
            .unwrap_or("alert");
        let name = literal_text(name);
        if !body.contains("Value:")
            && let Some(values) = text_field(alert, "valueString")
        {
            extra.push(format!("values {}", literal_text(values)));
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
        lines.push(format!("{}{}", marker(message), literal_text(title.trim())));
    }
    if let Some(body) = text_field(message, "message") {
        lines.push(markup::markdown_text(body));
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
        lines.push(literal_text(&format!("• {metric}: {value}")).into_owned());
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_title_and_message_show_a_typed_link_as_text() {
        let evil = "<https://evil.example/login|Approve>";
        let body = json!({"state": "alerting", "title": format!("[FIRING:1] Crash ({evil})"),
            "message": format!("Labels:\n - pod = {evil}\nsee [the runbook](https://wiki.example/r)"),
            "alerts": [{"labels": {"alertname": evil}, "valueString": evil,
                "generatorURL": "https://grafana.example/g"}]});
        let text = render(body.as_object().unwrap())
            .unwrap()
            .replace(markup::LINK_BREAK, "[WJ]");
        assert_eq!(
            text,
            "🔥 [FIRING:1] Crash (<[WJ]https://evil.example/login|Approve>)\n\
             Labels:\n - pod = <[WJ]https://evil.example/login|Approve>\n\
             see <https://wiki.example/r|the runbook>\n\
             • <[WJ]https://evil.example/login|Approve>: values \
             <[WJ]https://evil.example/login|Approve> · <https://grafana.example/g|source>"
        );
        let legacy = json!({"state": "alerting", "ruleName": evil, "message": evil,
            "evalMatches": [{"metric": evil, "value": 3}]});
        let text = render(legacy.as_object().unwrap())
            .unwrap()
            .replace(markup::LINK_BREAK, "[WJ]");
        assert_eq!(
            text,
            "🔥 <[WJ]https://evil.example/login|Approve>\n\
             <[WJ]https://evil.example/login|Approve>\n\
             • <[WJ]https://evil.example/login|Approve>: 3"
        );
    }
}
