//! Matrix room messages (`m.room.message`), as notifiers send them to a homeserver's
//! `/_matrix/client/…/rooms/{room}/send/m.room.message/{txn}`: Uptime Kuma, Gatus, Apprise's
//! `matrix://`, shoutrrr, Healthchecks, Gitea's Matrix webhook. `body` is the plain text;
//! `formatted_body` the same as HTML when `format` is `org.matrix.custom.html`.

use serde_json::{Map, Value};

use super::markup;
use super::{FormatError, text_field};

/// The only rich format Matrix defines.
const HTML: &str = "org.matrix.custom.html";

pub fn looks_like(map: &Map<String, Value>) -> bool {
    map.get("msgtype").is_some_and(Value::is_string)
        && (map.get("body").is_some_and(Value::is_string)
            || map.get("formatted_body").is_some_and(Value::is_string))
}

/// The HTML when there is some (its links are links, where `body` often spells them out or
/// drops them), else `body`, whose Markdown links (Gitea's, Apprise's) become Chat links. An
/// emote reads as Matrix clients show one, after a `*`.
pub fn render(message: &Map<String, Value>) -> Result<String, FormatError> {
    let html = match message.get("format").and_then(Value::as_str) {
        Some(HTML) => text_field(message, "formatted_body"),
        _ => None,
    };
    let text = match (html, text_field(message, "body")) {
        (Some(html), _) => markup::html_document(html),
        (None, Some(body)) => markup::markdown_text(&body.replace("\r\n", "\n")),
        (None, None) => return Err(FormatError::NoText),
    };
    Ok(match message.get("msgtype").and_then(Value::as_str) {
        Some("m.emote") => format!("* {text}"),
        _ => text,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rendered(value: Value) -> String {
        crate::formats::claimed_and_rendered(&value, looks_like, render)
    }

    #[test]
    fn html_is_read_as_a_document_and_plain_bodies_as_markdown() {
        // Gatus: headings and a list, the source's line breaks are spaces.
        assert_eq!(
            rendered(json!({"msgtype": "m.text", "format": HTML,
                "body": "An alert for `core_api`",
                "formatted_body": "<h3>An alert for <code>core_api</code> has been triggered</h3>\n<h5>Condition results</h5><ul><li>❌ - <code>[STATUS] == 200</code></li>\n<li>✅ - <code>[BODY] == ok</code></li></ul>"})),
            "An alert for core_api has been triggered\nCondition results\n• ❌ - [STATUS] == 200\n• ✅ - [BODY] == ok\n"
        );
        // Healthchecks: a link, and `<br>` between lines written on lines of their own.
        assert_eq!(
            rendered(json!({"msgtype": "m.text", "format": HTML, "body": "x",
                "formatted_body": "🔴 The check <a href=\"https://hc.example/c/1\">backup</a> is <b>DOWN</b>.\n<br>\n<br>\n<b>Project:</b> Infra<br>"})),
            "🔴 The check <https://hc.example/c/1|backup> is DOWN.\n\nProject: Infra\n"
        );
        // Uptime Kuma: plain text; Gitea's plain body spells its links in Markdown.
        assert_eq!(
            rendered(json!({"msgtype": "m.text", "body": "[My Website] [🔴 Down] timeout"})),
            "[My Website] [🔴 Down] timeout"
        );
        assert_eq!(
            rendered(
                json!({"msgtype": "m.notice", "body": "[owner/repo](https://git.example/o/r) pushed\r\nok"})
            ),
            "<https://git.example/o/r|owner/repo> pushed\nok"
        );
        assert_eq!(
            rendered(json!({"msgtype": "m.emote", "body": "restarts the NAS"})),
            "* restarts the NAS"
        );
    }

    #[test]
    fn preformatted_text_is_a_fenced_block_and_typed_chat_links_stay_text() {
        assert_eq!(
            rendered(json!({"msgtype": "m.text", "format": HTML, "body": "x",
                "formatted_body": "log:<pre><code>line 1\n  line 2</code></pre>&lt;https://evil.example|Approve&gt;"})),
            "log:\n```\nline 1\n  line 2\n```\n<\u{2060}https://evil.example|Approve>"
        );
    }

    #[test]
    fn other_bodies_are_not_matrix_and_an_empty_one_has_no_text() {
        assert!(!looks_like(json!({"body": "x"}).as_object().unwrap()));
        assert!(!looks_like(
            json!({"msgtype": "m.text"}).as_object().unwrap()
        ));
        let empty = json!({"msgtype": "m.text", "body": " "});
        assert_eq!(render(empty.as_object().unwrap()), Err(FormatError::NoText));
    }
}
