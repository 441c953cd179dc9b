//! Alertmanager `webhook_configs` (version 4; prometheus/alertmanager notify/webhook): a
//! headline like Alertmanager's own `__subject` (`[FIRING:2] HighCPU (prod)`), a line per alert,
//! the link back to Alertmanager and "…and N more" for truncated alerts. Label values (which
//! service discovery, exporters or anyone deploying a workload may set) and the annotations
//! made of them are shown as typed ([`literal_text`]): only the links built here are links.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::markup::{self, link, literal_text};
use super::{FormatError, text_field};

/// What makes two notifications the same one: the receiver, the group, its status and each
/// alert's fingerprint, status and start (senders-delivery-events A.2). The members of an
/// Alertmanager (or Grafana) cluster each send the group, and a notification whose answer was
/// lost is sent again; both copies have this key. A later repeat of a group that has not
/// changed (`repeat_interval`) has it too, which is why the key only holds for a short while.
/// `None` when an alert has no fingerprint (nothing then tells copies apart from repeats).
pub fn event_key(message: &Map<String, Value>) -> Option<String> {
    let text = |key: &str| message.get(key).and_then(Value::as_str);
    let (group, status) = (text("groupKey")?, text("status")?);
    let mut alerts = message
        .get("alerts")?
        .as_array()?
        .iter()
        .map(|alert| {
            let field = |key: &str| alert.get(key).and_then(Value::as_str);
            // `startsAt` tells an alert that fired again after it resolved from its first run.
            let started = field("startsAt").unwrap_or_default();
            Some(format!(
                "{}:{}:{started}",
                field("fingerprint")?,
                field("status")?
            ))
        })
        .collect::<Option<Vec<String>>>()?;
    alerts.sort_unstable();
    // With `max_alerts`, a group that gained alerts past the ones shown differs only in how
    // many were left out: a new notification, not a copy. (Left out when none were, so the
    // keys of untruncated groups stay as they were; an alert's part has two colons.)
    let truncated = message
        .get("truncatedAlerts")
        .and_then(Value::as_u64)
        .filter(|n| *n > 0)
        .map(|n| format!("truncated:{n}"));
    let mut hash = Sha256::new();
    for part in [text("receiver").unwrap_or_default(), group, status]
        .into_iter()
        .chain(alerts.iter().map(String::as_str))
        .chain(truncated.as_deref())
    {
        // Length-prefixed, so no two lists of parts hash alike.
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    Some(format!("alerts:{}", hex::encode(hash.finalize())))
}

pub fn render(message: &Map<String, Value>) -> Result<String, FormatError> {
    let alerts = message
        .get("alerts")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            FormatError::InvalidPayload("an Alertmanager payload has `alerts`".into())
        })?;
    let labels = |key: &str| message.get(key).and_then(Value::as_object);
    let status = text_field(message, "status").unwrap_or("firing");
    let firing = alerts
        .iter()
        .filter(|a| a.get("status").and_then(Value::as_str) != Some("resolved"))
        .count();
    let mut lines = vec![headline(
        status,
        firing,
        labels("groupLabels"),
        labels("commonLabels"),
    )];
    let common_annotations = labels("commonAnnotations");
    for alert in alerts.iter().filter_map(Value::as_object) {
        lines.push(alert_line(alert, status, common_annotations));
    }
    lines.extend(shared_annotations(common_annotations));
    if let Some(more) = message.get("truncatedAlerts").and_then(Value::as_u64)
        && more > 0
    {
        lines.push(format!("…and {more} more"));
    }
    if let Some(url) = text_field(message, "externalURL") {
        lines.push(link(url, "Alertmanager"));
    }
    Ok(lines.join("\n"))
}

/// The annotations every alert shares, but for the summary and description the alert lines
/// show: `<https://runbooks.example/cpu|runbook_url> · team: web`, sorted by name (a link when
/// the value is a URL).
fn shared_annotations(common: Option<&Map<String, Value>>) -> Option<String> {
    let mut pairs: Vec<(&String, &str)> = common?
        .iter()
        .filter(|(key, _)| !matches!(key.as_str(), "summary" | "description"))
        .filter_map(|(key, value)| Some((key, value.as_str()?.trim())))
        .filter(|(_, value)| !value.is_empty())
        .collect();
    pairs.sort();
    let parts: Vec<String> = pairs
        .into_iter()
        .map(|(key, value)| {
            if value.starts_with("https://") || value.starts_with("http://") {
                link(value, key)
            } else {
                literal_text(&format!("{key}: {value}")).into_owned()
            }
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(" · "))
}

/// `🔥 [FIRING:2] HighCPU (prod)` or `✅ [RESOLVED] HighCPU (prod)`: the group labels' values,
/// then in parentheses the other common labels' values, each sorted by label name.
fn headline(
    status: &str,
    firing: usize,
    group: Option<&Map<String, Value>>,
    common: Option<&Map<String, Value>>,
) -> String {
    let values = |map: Option<&Map<String, Value>>, skip: Option<&Map<String, Value>>| {
        let mut pairs: Vec<(&String, &str)> = map
            .into_iter()
            .flatten()
            .filter(|(k, _)| !skip.is_some_and(|s| s.contains_key(*k)))
            .filter_map(|(k, v)| Some((k, v.as_str()?)))
            .collect();
        pairs.sort();
        pairs
            .into_iter()
            .map(|(_, v)| v)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (marker, tag) = if status == "resolved" {
        ("✅", "[RESOLVED]".to_owned())
    } else {
        ("🔥", format!("[FIRING:{firing}]"))
    };
    let mut line = format!("{marker} {tag}");
    let group_values = values(group, None);
    if !group_values.is_empty() {
        line.push(' ');
        line.push_str(&group_values);
    }
    let rest = values(common, group);
    if !rest.is_empty() {
        line.push_str(&format!(" ({rest})"));
    }
    literal_text(&line).into_owned()
}

/// `• 🔴 critical · HighCPU: summary · since 2024-05-01 12:00 UTC · <url|source>`.
fn alert_line(
    alert: &Map<String, Value>,
    group_status: &str,
    common_annotations: Option<&Map<String, Value>>,
) -> String {
    let labels = alert.get("labels").and_then(Value::as_object);
    let annotations = alert.get("annotations").and_then(Value::as_object);
    let label = |key: &str| labels.and_then(|l| text_field(l, key));
    let annotation = |key: &str| {
        annotations
            .and_then(|a| text_field(a, key))
            .or_else(|| common_annotations.and_then(|a| text_field(a, key)))
    };
    let resolved = alert.get("status").and_then(Value::as_str) == Some("resolved");
    let mut parts: Vec<String> = Vec::new();
    let severity = label("severity");
    let marker = if resolved {
        "✅"
    } else {
        match severity.map(str::to_ascii_lowercase).as_deref() {
            Some("critical" | "page" | "error" | "high") => "🔴",
            Some("warning" | "warn" | "medium") => "🟡",
            Some("info" | "low" | "none") => "🔵",
            _ => "⚪",
        }
    };
    let mut head = marker.to_owned();
    if let Some(severity) = severity {
        head.push(' ');
        head.push_str(severity);
    }
    parts.push(literal_text(&head).into_owned());
    let name = label("alertname").unwrap_or("alert");
    let what = annotation("summary").or_else(|| annotation("description"));
    let mut title = match label("instance") {
        Some(instance) => format!("{name} on {instance}"),
        None => name.to_owned(),
    };
    if let Some(what) = what {
        title.push_str(": ");
        title.push_str(what);
    }
    parts.push(literal_text(&title).into_owned());
    if resolved && group_status != "resolved" {
        parts.push("resolved".to_owned());
    }
    let starts = alert.get("startsAt").and_then(Value::as_str);
    // A resolved alert's end (Alertmanager's zero time, `0001-01-01T00:00:00Z`, means none).
    let ends = alert
        .get("endsAt")
        .and_then(Value::as_str)
        .filter(|ends| resolved && !ends.starts_with("0001-"));
    match (starts, ends) {
        (Some(starts), Some(ends)) => parts.push(format!(
            "{} to {}",
            markup::rfc3339(starts),
            markup::rfc3339(ends)
        )),
        (Some(starts), None) => parts.push(format!("since {}", markup::rfc3339(starts))),
        (None, Some(ends)) => parts.push(format!("ended {}", markup::rfc3339(ends))),
        (None, None) => {}
    }
    if let Some(url) = alert
        .get("generatorURL")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
    {
        parts.push(link(url, "source"));
    }
    format!("• {}", parts.join(" · "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_group_that_left_out_more_alerts_is_another_notification() {
        let key = |truncated: Option<u64>| {
            let mut body = json!({"receiver": "chat", "groupKey": "{}:{alertname=\"X\"}",
                "status": "firing", "alerts": [{"status": "firing", "fingerprint": "a1",
                "startsAt": "2026-12-08T01:00:00Z"}]});
            if let Some(n) = truncated {
                body["truncatedAlerts"] = json!(n);
            }
            event_key(body.as_object().unwrap()).unwrap()
        };
        assert_ne!(key(Some(0)), key(Some(7)));
        assert_ne!(key(Some(7)), key(Some(8)));
        // None left out, said or not: the key as it was before `truncatedAlerts` counted
        // (worked out by hand from the length-prefixed parts).
        assert_eq!(key(None), key(Some(0)));
        assert_eq!(
            key(None),
            "alerts:a42b751ade38927bc55e667d95721135dce3020b3ae9be0de5d14ad0a8e2f9ed"
        );
    }

    #[test]
    fn label_values_and_annotations_are_text_as_typed() {
        let evil = "<https://evil.example/login|Approve>";
        let body = json!({"status": "firing", "groupLabels": {"pod": evil},
            "commonLabels": {"pod": evil, "env": "<mailto:x@evil.example|prod>"},
            "commonAnnotations": {"owner": evil, "runbook_url": "https://runbooks.example/p"},
            "alerts": [{"status": "firing", "labels": {"alertname": "PodCrash",
                "severity": evil, "instance": evil},
                "annotations": {"summary": format!("pod {evil} restarts")},
                "generatorURL": "http://prom.example/g"}]});
        let text = render(body.as_object().unwrap())
            .unwrap()
            .replace(markup::LINK_BREAK, "[WJ]");
        assert_eq!(
            text,
            "🔥 [FIRING:1] <[WJ]https://evil.example/login|Approve> \
             (<[WJ]mailto:x@evil.example|prod>)\n\
             • ⚪ <[WJ]https://evil.example/login|Approve> · PodCrash on \
             <[WJ]https://evil.example/login|Approve>: pod <[WJ]https://evil.example/login|Approve> \
             restarts · <http://prom.example/g|source>\n\
             owner: <[WJ]https://evil.example/login|Approve> · <https://runbooks.example/p|runbook_url>"
        );
    }
}
