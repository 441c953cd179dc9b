//! Sonarr, Radarr, Lidarr and Readarr "Webhook" connections (Servarr's WebhookBase: `eventType`,
//! `instanceName`, `applicationUrl`, and the series, movie, artist or author concerned): one
//! headline per event, as senders-delivery-events A.6 suggests. `Test` gives a short
//! confirmation, so the Test button in the sender's settings shows success. Titles come from
//! public metadata and release names from indexers: they are shown as typed
//! ([`literal_text`]), never as links.

use serde_json::{Map, Value};

use super::markup::{link, literal_text};
use super::{FormatError, text_field};

/// Whether the body is a Servarr webhook: an `eventType` next to a field they all send.
pub fn looks_like(message: &Map<String, Value>) -> bool {
    text_field(message, "eventType").is_some()
        && [
            "instanceName",
            "applicationUrl",
            "series",
            "movie",
            "artist",
            "author",
        ]
        .iter()
        .any(|key| message.contains_key(*key))
}

pub fn render(message: &Map<String, Value>) -> Result<String, FormatError> {
    let event = text_field(message, "eventType").ok_or_else(|| {
        FormatError::InvalidPayload("a Sonarr/Radarr payload has `eventType`".into())
    })?;
    let subject = subject(message);
    let about = |verb: &str| match &subject {
        Some(s) => format!("{verb} {s}"),
        None => verb.to_owned(),
    };
    let object = |key: &str| message.get(key).and_then(Value::as_object);
    let quality = |key: &str| {
        object(key)
            .and_then(|o| text_field(o, "quality"))
            .map(|q| format!(" [{q}]"))
            .unwrap_or_default()
    };
    let field = |key: &str| text_field(message, key);
    let headline = match event {
        "Test" => "✅ Test notification: this connection reaches Synology Chat".to_owned(),
        "Grab" => {
            let indexer = object("release")
                .and_then(|r| text_field(r, "indexer"))
                .map(|i| format!(" from {i}"))
                .unwrap_or_default();
            format!("📥 {}{}{indexer}", about("Grabbed"), quality("release"))
        }
        "Download" => {
            let upgrade = message.get("isUpgrade").and_then(Value::as_bool) == Some(true);
            let file = ["episodeFile", "movieFile", "bookFile"]
                .into_iter()
                .map(quality)
                .find(|q| !q.is_empty())
                .unwrap_or_default();
            if upgrade {
                format!("⬆️ {}{file}", about("Upgraded"))
            } else {
                format!("✅ {}{file}", about("Imported"))
            }
        }
        "Rename" => format!("✏️ {}", about("Renamed the files of")),
        "Retag" => format!("🏷️ {}", about("Retagged")),
        "SeriesAdd" | "MovieAdded" | "ArtistAdd" | "AuthorAdded" => {
            format!("➕ {}", about("Added"))
        }
        "SeriesDelete" | "MovieDelete" | "ArtistDelete" | "AuthorDelete" => {
            let files = message.get("deletedFiles").and_then(Value::as_bool) == Some(true);
            let with = if files { ", with its files" } else { "" };
            format!("🗑️ {}{with}", about("Deleted"))
        }
        "EpisodeFileDelete" | "MovieFileDelete" | "TrackFileDelete" | "BookFileDelete" => {
            let reason = field("deleteReason")
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            format!("🗑️ {}{reason}", about("Deleted a file of"))
        }
        "Health" => {
            let level = field("level")
                .map(|l| format!(" ({l})"))
                .unwrap_or_default();
            format!(
                "⚠️ Health{level}: {}",
                field("message").unwrap_or("a problem")
            )
        }
        "HealthRestored" => format!("✅ Health restored: {}", field("message").unwrap_or("")),
        "ApplicationUpdate" => match (field("previousVersion"), field("newVersion")) {
            (Some(old), Some(new)) => format!("⬆️ Updated from {old} to {new}"),
            _ => format!("⬆️ {}", field("message").unwrap_or("Updated")),
        },
        "ManualInteractionRequired" => {
            let release = object("downloadInfo")
                .and_then(|d| text_field(d, "title"))
                .map(|t| format!(": {t}"))
                .unwrap_or_default();
            format!("✋ {}{release}", about("Manual interaction required for"))
        }
        other => about(other),
    };
    // The headline holds no link of the gateway's own: all of it is text as typed.
    let headline = format!("[{}] {headline}", application(message));
    let mut lines = vec![literal_text(&headline).into_owned()];
    if event == "Health"
        && let Some(url) = field("wikiUrl")
    {
        lines.push(link(url, "wiki"));
    }
    if event == "ManualInteractionRequired"
        && let Some(messages) = message
            .get("downloadStatusMessages")
            .and_then(Value::as_array)
    {
        for status in messages.iter().filter_map(Value::as_object) {
            for text in status
                .get("messages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                lines.push(format!("• {}", literal_text(text)));
            }
        }
    }
    Ok(lines.join("\n"))
}

/// `instanceName`, or the application its payload's shape names.
fn application(message: &Map<String, Value>) -> &str {
    text_field(message, "instanceName").unwrap_or_else(|| {
        [
            ("series", "Sonarr"),
            ("movie", "Radarr"),
            ("artist", "Lidarr"),
            ("author", "Readarr"),
        ]
        .into_iter()
        .find(|(key, _)| message.contains_key(*key))
        .map_or("Servarr", |(_, name)| name)
    })
}

/// What the event is about: `Show S01E02 “Pilot”`, `Movie (1999)`, `Artist – Album`,
/// `Author – Book`.
fn subject(message: &Map<String, Value>) -> Option<String> {
    let object = |key: &str| message.get(key).and_then(Value::as_object);
    if let Some(series) = object("series") {
        let title = text_field(series, "title")?;
        let episodes: Vec<String> = message
            .get("episodes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
            .map(episode)
            .collect();
        const SHOWN: usize = 5;
        let mut listed = episodes
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if episodes.len() > SHOWN {
            listed.push_str(&format!(" …and {} more", episodes.len() - SHOWN));
        }
        return Some(if listed.is_empty() {
            title.to_owned()
        } else {
            format!("{title} {listed}")
        });
    }
    if let Some(movie) = object("movie") {
        let title = text_field(movie, "title")?;
        return Some(
            match movie.get("year").and_then(Value::as_u64).filter(|y| *y > 0) {
                Some(year) => format!("{title} ({year})"),
                None => title.to_owned(),
            },
        );
    }
    for (owner, owner_name, work) in [("artist", "name", "album"), ("author", "name", "book")] {
        if let Some(who) = object(owner).and_then(|o| text_field(o, owner_name)) {
            return Some(match object(work).and_then(|w| text_field(w, "title")) {
                Some(title) => format!("{who} – {title}"),
                None => who.to_owned(),
            });
        }
    }
    None
}

/// `S01E02 “Pilot”`.
fn episode(e: &Map<String, Value>) -> String {
    let number = |key: &str| e.get(key).and_then(Value::as_u64).unwrap_or(0);
    let code = format!(
        "S{:02}E{:02}",
        number("seasonNumber"),
        number("episodeNumber")
    );
    match text_field(e, "title") {
        Some(title) => format!("{code} “{title}”"),
        None => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn only_servarr_shapes_are_taken_for_servarr() {
        assert!(looks_like(&map(json!({"eventType": "Grab", "series": {}}))));
        assert!(looks_like(&map(
            json!({"eventType": "Test", "instanceName": "Radarr"})
        )));
        assert!(!looks_like(&map(
            json!({"eventType": "push", "repository": {}})
        )));
        assert!(!looks_like(&map(json!({"eventType": "", "series": {}}))));
        assert!(!looks_like(&map(json!({"text": "hi", "series": {}}))));
    }

    #[test]
    fn titles_and_messages_are_text_as_typed() {
        let link_break = crate::formats::markup::LINK_BREAK;
        let text = render(&map(json!({"eventType": "Grab", "instanceName": "Sonarr",
            "series": {"title": "<https://evil.example|Show>"},
            "episodes": [{"seasonNumber": 1, "episodeNumber": 2, "title": "<mailto:x@evil.example|Pilot>"}],
            "release": {"quality": "HDTV-720p", "indexer": "<https://evil.example|Indexer>"}})))
        .unwrap();
        assert_eq!(
            text,
            format!(
                "[Sonarr] 📥 Grabbed <{link_break}https://evil.example|Show> S01E02 \
                 “<{link_break}mailto:x@evil.example|Pilot>” [HDTV-720p] from \
                 <{link_break}https://evil.example|Indexer>"
            )
        );
        let text = render(&map(
            json!({"eventType": "Health", "instanceName": "Radarr",
            "level": "warning", "message": "<https://evil.example|Update now>",
            "wikiUrl": "https://wiki.servarr.com/radarr/system#x"}),
        ))
        .unwrap();
        assert_eq!(
            text,
            format!(
                "[Radarr] ⚠️ Health (warning): <{link_break}https://evil.example|Update now>\n\
                 <https://wiki.servarr.com/radarr/system#x|wiki>"
            )
        );
    }

    #[test]
    fn long_episode_lists_are_counted_and_unknown_events_named() {
        let episodes: Vec<Value> = (1..=8)
            .map(|n| json!({"seasonNumber": 1, "episodeNumber": n}))
            .collect();
        let text = render(&map(
            json!({"eventType": "Grab", "series": {"title": "Show"},
            "episodes": episodes}),
        ))
        .unwrap();
        assert_eq!(
            text,
            "[Sonarr] 📥 Grabbed Show S01E01, S01E02, S01E03, S01E04, S01E05 …and 3 more"
        );
        let text = render(&map(
            json!({"eventType": "SomethingNew", "author": {"name": "Le Guin"},
            "book": {"title": "The Dispossessed"}}),
        ))
        .unwrap();
        assert_eq!(text, "[Readarr] SomethingNew Le Guin – The Dispossessed");
        let text = render(&map(json!({"eventType": "ManualInteractionRequired",
            "instanceName": "Sonarr", "series": {"title": "Show"},
            "downloadInfo": {"title": "Show.S01E01.720p"},
            "downloadStatusMessages": [{"title": "x", "messages": ["Unknown episode"]}]})))
        .unwrap();
        assert_eq!(
            text,
            "[Sonarr] ✋ Manual interaction required for Show: Show.S01E01.720p\n• Unknown episode"
        );
    }
}
