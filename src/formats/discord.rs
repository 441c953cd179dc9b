//! Discord execute-webhook payloads: `content`, then each embed (author, title with its link,
//! description, fields, image, footer and time), colour as a marker.

use serde_json::{Map, Value};

use super::markup::{self, link, rgb_marker};
use super::{scalar_field, text_field};

pub fn render(message: &Map<String, Value>) -> String {
    let mut sections: Vec<String> = Vec::new();
    if let Some(content) = text_field(message, "content") {
        sections.push(markup::discord(content));
    }
    for embed in message
        .get("embeds")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
    {
        sections.push(render_embed(embed));
    }
    sections.retain(|s| !s.trim().is_empty());
    sections.join("\n\n")
}

fn nested<'a>(embed: &'a Map<String, Value>, key: &str, field: &str) -> Option<&'a str> {
    embed
        .get(key)
        .and_then(Value::as_object)
        .and_then(|o| text_field(o, field))
}

fn render_embed(embed: &Map<String, Value>) -> String {
    let mut lines: Vec<String> = Vec::new();
    if let Some(author) = nested(embed, "author", "name") {
        lines.push(match nested(embed, "author", "url") {
            Some(url) => link(url, author),
            None => author.to_owned(),
        });
    }
    if let Some(title) = text_field(embed, "title").map(markup::discord) {
        lines.push(match text_field(embed, "url") {
            Some(url) => link(url, &title),
            None => title,
        });
    }
    if let Some(description) = text_field(embed, "description") {
        lines.push(markup::discord(description));
    }
    let mut previous_inline = false;
    for field in embed
        .get("fields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
    {
        let name = text_field(field, "name").map(markup::discord);
        let value = scalar_field(field, "value").map(|v| markup::discord(&v));
        let entry = match (name, value) {
            (Some(n), Some(v)) if v.contains('\n') => format!("{n}:\n{v}"),
            (Some(n), Some(v)) => format!("{n}: {v}"),
            (Some(one), None) | (None, Some(one)) => one,
            (None, None) => continue,
        };
        let inline = field
            .get("inline")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        match lines.last_mut() {
            Some(last) if inline && previous_inline && !entry.contains('\n') => {
                last.push_str(" · ");
                last.push_str(&entry);
            }
            _ => lines.push(entry.clone()),
        }
        previous_inline = inline && !entry.contains('\n');
    }
    // `attachment://name` points at a file sent beside the body (Grafana's screenshot), which
    // is not forwarded and which a link cannot open: the file's own line says so.
    if let Some(url) = nested(embed, "image", "url").filter(|url| !is_attachment(url)) {
        lines.push(link(url, "image"));
    }
    let footer = nested(embed, "footer", "text").map(markup::discord);
    let time = text_field(embed, "timestamp").map(markup::rfc3339);
    match (footer, time) {
        (Some(f), Some(t)) => lines.push(format!("{f} · {t}")),
        (Some(one), None) | (None, Some(one)) => lines.push(one),
        (None, None) => {}
    }
    let marker = embed
        .get("color")
        .and_then(Value::as_u64)
        .and_then(|c| rgb_marker(c as u32));
    if let (Some(marker), Some(first)) = (marker, lines.first_mut()) {
        *first = format!("{marker} {first}");
    }
    lines.join("\n")
}

/// Whether a URL names a file of the request (`attachment://screenshot.png`) rather than the web.
fn is_attachment(url: &str) -> bool {
    url.trim_start()
        .get(..13)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("attachment://"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rendered(body: Value) -> String {
        render(body.as_object().unwrap())
    }

    #[test]
    fn an_image_sent_as_a_file_is_not_linked() {
        // Grafana's screenshot: `attachment://` names the multipart file, said by its own line.
        for url in [
            "attachment://abc123.png",
            "Attachment://x.png",
            " attachment://y.png",
        ] {
            let body = json!({"embeds": [{"title": "DiskFull", "image": {"url": url}}]});
            assert_eq!(rendered(body), "DiskFull", "{url}");
        }
        let body = json!({"embeds": [{"title": "DiskFull",
            "image": {"url": "https://g.example/d.png"}}]});
        assert_eq!(rendered(body), "DiskFull\n<https://g.example/d.png|image>");
    }

    #[test]
    fn field_values_may_be_numbers_or_booleans() {
        let body = json!({"embeds": [{"fields": [
            {"name": "Used %", "value": 93, "inline": true},
            {"name": "Healthy", "value": false, "inline": true},
        ]}]});
        assert_eq!(rendered(body), "Used %: 93 · Healthy: false");
    }
}
