//! Any JSON (or text) with the hook's MiniJinja template; without a template, the usual
//! fields of generic senders: `title` (shoutrrr) and `message`, `msg` (Uptime Kuma), `text`
//! or `content`.

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
    let lines: Vec<String> = [field("title"), body]
        .into_iter()
        .flatten()
        .map(markup::markdown_links)
        .collect();
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
