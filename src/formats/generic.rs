//! Any JSON (or text) with the hook's MiniJinja template; without a template, the usual
//! fields of generic senders: `title` (shoutrrr) and `message`, `msg` (Uptime Kuma), `text`
//! or `content`, with a link (`url`, `click`...) and a severity marker (`severity`, `level`,
//! Apprise's `type`).

use minijinja::Environment;
use serde_json::Value;

use super::{FormatError, Payload, markup};

/// Work one render may do (MiniJinja's fuel): a runaway template fails instead of spinning.
const FUEL: u64 = 100_000;

/// Checks that `source` is a valid template (at start-up, so a typo is a configuration error).
pub fn check_template(source: &str) -> Result<(), String> {
    let mut env = Environment::new();
    env.add_template("hook", source)
        .map(drop)
        .map_err(|e| e.to_string())
}

pub fn render(payload: &Payload, template: Option<&str>) -> Result<String, FormatError> {
    match template {
        Some(source) => render_template(payload, source),
        None => Ok(known_fields(payload)),
    }
}

fn render_template(payload: &Payload, source: &str) -> Result<String, FormatError> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    // Templates write Chat text, not HTML: no escaping.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_template("hook", source)
        .map_err(|e| FormatError::InvalidPayload(format!("the hook's template: {e}")))?;
    let context = match payload {
        Payload::Json(Value::Object(map)) => {
            // `body` is the whole payload, unless the payload has a `body` of its own.
            let mut context = map.clone();
            context
                .entry("body")
                .or_insert_with(|| Value::Object(map.clone()));
            Value::Object(context)
        }
        Payload::Json(other) => serde_json::json!({ "body": other }),
        Payload::Text(text) => serde_json::json!({ "body": text, "text": text }),
    };
    let template = env
        .get_template("hook")
        .map_err(|e| FormatError::InvalidPayload(e.to_string()))?;
    // A template that fails on this body (a missing field used strictly, a type error) is a
    // payload the hook cannot show: the sender's 400, with MiniJinja's reason.
    template
        .render(minijinja::Value::from_serialize(&context))
        .map_err(|e| FormatError::InvalidPayload(format!("the hook's template failed: {e}")))
}

fn known_fields(payload: &Payload) -> String {
    let map = match payload {
        Payload::Json(Value::Object(map)) => map,
        Payload::Json(Value::String(text)) | Payload::Text(text) => return text.clone(),
        Payload::Json(_) => return String::new(),
    };
    let field = |key: &str| {
        map.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
    };
    let body = ["message", "msg", "text", "content", "body", "description"]
        .into_iter()
        .find_map(field);
    // Where it points (ntfy's `click`, Sentry's `url`, a forge's `web_url`), and how bad it is
    // (`severity`, `level`, Apprise's `type`), as the other formats show them.
    let url = ["url", "click", "link", "web_url", "html_url"]
        .into_iter()
        .find_map(field)
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"));
    let marker = ["severity", "level", "type"]
        .into_iter()
        .find_map(|key| field(key).and_then(severity_marker));
    let mut lines: Vec<String> = Vec::new();
    match (field("title"), url) {
        (Some(title), Some(url)) => lines.push(markup::link(url, title)),
        (Some(title), None) => lines.push(markup::markdown_links(title)),
        (None, _) => {}
    }
    lines.extend(body.map(markup::markdown_links));
    if let (None, Some(url)) = (field("title"), url) {
        lines.push(markup::link(url, url));
    }
    if let (Some(marker), Some(first)) = (marker, lines.first_mut()) {
        *first = format!("{marker} {first}");
    }
    lines.join("\n")
}

/// A sender's word for how bad it is, as the colour markers of the other formats.
fn severity_marker(word: &str) -> Option<&'static str> {
    match word.trim().to_ascii_lowercase().as_str() {
        "critical" | "crit" | "fatal" | "error" | "err" | "emergency" | "alert" | "failure"
        | "failed" | "high" | "disaster" => Some("🔴"),
        "warning" | "warn" | "average" | "medium" => Some("🟡"),
        "ok" | "success" | "succeeded" | "resolved" | "good" => Some("🟢"),
        "info" | "information" | "notice" | "low" => Some("🔵"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_generic_body_shows_its_severity_and_its_link() {
        let body = Payload::Json(json!({"title": "Backup failed", "message": "pool degraded",
            "severity": "error", "click": "https://nas.example/logs"}));
        assert_eq!(
            render(&body, None).unwrap(),
            "🔴 <https://nas.example/logs|Backup failed>\npool degraded"
        );
        let apprise = Payload::Json(json!({"message": "disk 91%", "type": "warning"}));
        assert_eq!(render(&apprise, None).unwrap(), "🟡 disk 91%");
        let untitled = Payload::Json(json!({"message": "see", "url": "https://x.example/a"}));
        assert_eq!(
            render(&untitled, None).unwrap(),
            "see\n<https://x.example/a|https://x.example/a>"
        );
        // A word that says nothing of severity, and a URL of another scheme, are left out.
        let plain = Payload::Json(json!({"title": "t", "message": "m", "type": "backup",
            "url": "javascript:alert(1)"}));
        assert_eq!(render(&plain, None).unwrap(), "t\nm");
    }

    #[test]
    fn body_is_the_whole_payload_unless_the_payload_has_a_body() {
        let own = Payload::Json(json!({"title": "Backup", "body": "finished in 3 min"}));
        assert_eq!(
            render(&own, Some("{{ title }}: {{ body }}")).unwrap(),
            "Backup: finished in 3 min"
        );
        let without = Payload::Json(json!({"title": "Backup"}));
        assert_eq!(
            render(&without, Some("{{ body.title }}")).unwrap(),
            "Backup"
        );
    }
}
