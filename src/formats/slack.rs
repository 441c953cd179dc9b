//! Slack (and Mattermost) incoming-webhook payloads: `text`, then each attachment, then the
//! blocks (senders-delivery-events A.1, B.2), then Mattermost's `props.card`.

use std::collections::HashSet;

use foldhash::quality::RandomState;
use serde_json::{Map, Value};

use super::markup::{self, color_marker, link, literal_text};
use super::{flag_field, scalar_field, text_field};

pub fn render(message: &Map<String, Value>) -> String {
    let mut sections: Vec<String> = Vec::new();
    let blocks = message
        .get("blocks")
        .and_then(Value::as_array)
        .map(|b| render_blocks(b))
        .unwrap_or_default();
    let attachments: Vec<String> = message
        .get("attachments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .map(render_attachment)
        .collect();
    let text = text_field(message, "text").map(markup::slack);
    // With blocks, `text` is Slack's notification fallback: shown only when it adds something,
    // a line that the blocks or attachments do not already show (Uptime Kuma sends its message
    // as `text` and again in an attachment's blocks).
    // Compared as Chat shows them: a link by its label, so a word of a hidden URL
    // (`https://grafana/d/rollback|Dashboard`) does not count as showing `rollback`.
    if let Some(text) = text {
        let shown: Vec<String> = std::iter::once(blocks.as_str())
            .chain(attachments.iter().map(String::as_str))
            .map(visible)
            .collect();
        let shown: Vec<&str> = shown.iter().map(String::as_str).collect();
        let repeated = (!blocks.trim().is_empty() || !attachments.is_empty())
            && all_shown(&visible(&text), &shown, SEARCH_BUDGET);
        if !repeated {
            sections.push(text);
        }
    }
    sections.extend(attachments);
    sections.push(blocks);
    // Mattermost shows `props.card` (Alertmanager's `mattermost_configs` puts it there) in a
    // side panel; Chat has none, so it is the message's last paragraph.
    if let Some(card) = message
        .get("props")
        .and_then(Value::as_object)
        .and_then(|props| text_field(props, "card"))
    {
        sections.push(markup::slack(card));
    }
    sections.retain(|s| !s.trim().is_empty());
    sections.join("\n\n")
}

/// `text` as Chat shows it: each `<url|label>` link as its label (a bare `<url>` as its URL).
fn visible(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let link = markup::opens_link(after)
            .then(|| after.find(['>', '\n']))
            .flatten()
            .filter(|&end| after.as_bytes()[end] == b'>');
        match link {
            Some(end) => {
                let inner = &after[..end];
                out.push_str(inner.split_once('|').map_or(inner, |(_, label)| label));
                rest = &after[end + 1..];
            }
            None => {
                out.push('<');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// How many bytes the searches of [`all_shown`] may read for one message: far more than a
/// sender's message needs, far less than the square of a hostile one (5 MiB of `text` lines
/// each looked for in 5 MiB of blocks).
const SEARCH_BUDGET: usize = 1 << 25;

/// Whether every non-empty line of `text` is shown by one of `shown` (see [`shows`]).
/// Searching all of `shown` for each line costs lines × size, so a line is searched for once,
/// a line that is a whole line of `shown` is found without a search, and the searches read at
/// most about `budget` bytes: past that a line counts as not shown, and the text is kept
/// (which loses nothing).
fn all_shown(text: &str, shown: &[&str], mut budget: usize) -> bool {
    let whole: HashSet<&str, RandomState> = shown
        .iter()
        .flat_map(|s| s.lines())
        .map(str::trim)
        .collect();
    let mut seen: HashSet<&str, RandomState> = HashSet::default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        // A line seen before was shown, or `all` would have stopped there.
        .filter(|line| !whole.contains(line) && seen.insert(line))
        .all(|line| {
            shown.iter().any(|s| {
                if budget == 0 {
                    return false;
                }
                let (found, read) = shows(s, line);
                // A search also reads the whole line before it starts.
                budget = budget.saturating_sub(line.len() + read);
                found
            })
        })
}

/// Whether `shown` holds `line` as words of its own: `Deploy` is not shown by `Deployment
/// finished`, so a text line that only begins another is kept. Also how many bytes of `shown`
/// the search read.
fn shows(shown: &str, line: &str) -> (bool, usize) {
    for (at, _) in shown.match_indices(line) {
        let before = shown[..at].chars().next_back();
        let after = shown[at + line.len()..].chars().next();
        if !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric) {
            return (true, at + line.len());
        }
    }
    (false, shown.len())
}

fn render_attachment(a: &Map<String, Value>) -> String {
    let mut lines: Vec<String> = Vec::new();
    let field = |key: &str| text_field(a, key).map(markup::slack);
    if let Some(pretext) = field("pretext") {
        lines.push(pretext);
    }
    let mut body: Vec<String> = Vec::new();
    if let Some(author) = field("author_name") {
        body.push(match text_field(a, "author_link") {
            Some(url) => link(url, &author),
            None => author,
        });
    }
    if let Some(title) = field("title") {
        body.push(match text_field(a, "title_link") {
            Some(url) => link(url, &title),
            None => title,
        });
    }
    if let Some(text) = field("text") {
        body.push(text);
    }
    body.extend(render_fields(a.get("fields"), "title", "value", "short"));
    if let Some(url) = text_field(a, "image_url") {
        body.push(link(url, "image"));
    }
    if let Some(blocks) = a.get("blocks").and_then(Value::as_array) {
        body.push(render_blocks(blocks));
    }
    for action in a
        .get("actions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let (Some(url), Some(label)) = (
            action.get("url").and_then(Value::as_str),
            action.get("text").and_then(Value::as_str),
        ) {
            body.push(link(url, label));
        }
    }
    let footer = field("footer");
    let ts = a.get("ts").and_then(|ts| {
        ts.as_i64()
            .or_else(|| ts.as_f64().map(|f| f as i64))
            .or_else(|| ts.as_str().and_then(|s| s.split('.').next()?.parse().ok()))
    });
    match (footer, ts) {
        (Some(footer), Some(ts)) => body.push(format!("{footer} · {}", markup::utc(ts))),
        (Some(footer), None) => body.push(footer),
        (None, Some(ts)) => body.push(markup::utc(ts)),
        (None, None) => {}
    }
    body.retain(|l| !l.trim().is_empty());
    if body.is_empty()
        && let Some(fallback) = field("fallback")
    {
        body.push(fallback);
    }
    let marker = a
        .get("color")
        .and_then(Value::as_str)
        .and_then(color_marker);
    if let (Some(marker), Some(first)) = (marker, body.first_mut()) {
        *first = format!("{marker} {first}");
    }
    lines.extend(body);
    lines.join("\n")
}

/// Slack's `fields`: `title: value` lines; consecutive `short` fields share a line. A value may
/// be a number or a boolean, and `short` the string `"true"` (Mattermost accepts both).
fn render_fields(fields: Option<&Value>, name: &str, value: &str, short: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut previous_short = false;
    for f in fields
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
    {
        let title = text_field(f, name).map(markup::slack);
        let text = scalar_field(f, value).map(|v| markup::slack(&v));
        let entry = match (title, text) {
            (Some(t), Some(v)) if v.contains('\n') => format!("{t}:\n{v}"),
            (Some(t), Some(v)) => format!("{t}: {v}"),
            (Some(t), None) => t,
            (None, Some(v)) => v,
            (None, None) => continue,
        };
        let is_short = flag_field(f, short);
        match lines.last_mut() {
            Some(last) if is_short && previous_short && !entry.contains('\n') => {
                last.push_str(" · ");
                last.push_str(&entry);
            }
            _ => lines.push(entry),
        }
        previous_short = is_short && !lines.last().is_some_and(|l| l.contains('\n'));
    }
    lines
}

/// A Block Kit text object (`{type: mrkdwn|plain_text, text}`) or a bare string.
fn text_object(value: Option<&Value>) -> Option<String> {
    let value = value?;
    let (kind, text) = match value {
        Value::String(s) => ("mrkdwn", s.as_str()),
        Value::Object(o) => (
            o.get("type").and_then(Value::as_str).unwrap_or("mrkdwn"),
            o.get("text").and_then(Value::as_str)?,
        ),
        _ => return None,
    };
    if text.trim().is_empty() {
        return None;
    }
    Some(if kind == "plain_text" {
        // Shown as typed by Slack: a `<https://…|…>` in it is no link.
        literal_text(text).into_owned()
    } else {
        markup::slack(text)
    })
}

pub fn render_blocks(blocks: &[Value]) -> String {
    let mut lines: Vec<String> = Vec::new();
    for block in blocks.iter().filter_map(Value::as_object) {
        match block.get("type").and_then(Value::as_str).unwrap_or("") {
            "header" => lines.extend(text_object(block.get("text"))),
            "section" => {
                lines.extend(text_object(block.get("text")));
                for field in block
                    .get("fields")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    lines.extend(text_object(Some(field)));
                }
                if let Some(accessory) = block.get("accessory") {
                    lines.extend(element(accessory));
                }
            }
            "context" => {
                let parts: Vec<String> = block
                    .get("elements")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(element)
                    .collect();
                if !parts.is_empty() {
                    lines.push(parts.join(" · "));
                }
            }
            // An empty line, as senders-delivery-events B.3 renders it.
            "divider" => lines.push(DIVIDER.to_owned()),
            "image" => {
                if let Some(url) = block.get("image_url").and_then(Value::as_str) {
                    let label = text_object(block.get("title"))
                        .or_else(|| {
                            block
                                .get("alt_text")
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                        })
                        .unwrap_or_else(|| "image".to_owned());
                    lines.push(link(url, &label));
                }
            }
            "actions" => {
                let parts: Vec<String> = block
                    .get("elements")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(element)
                    .collect();
                if !parts.is_empty() {
                    lines.push(parts.join(" · "));
                }
            }
            "markdown" => {
                if let Some(text) = block.get("text").and_then(Value::as_str) {
                    lines.push(markup::markdown_links(text));
                }
            }
            "rich_text" => lines.push(rich_text(block.get("elements"))),
            _ => {}
        }
    }
    lines.retain(|l| l == DIVIDER || !l.trim().is_empty());
    lines.join("\n").replace(DIVIDER, "")
}

/// Stands for a divider's empty line until the empty lines of other blocks are dropped.
const DIVIDER: &str = "\u{0}";

/// An element of a context or actions block, or a section accessory: texts, images (their
/// alternative text) and buttons with a URL (as links).
fn element(value: &Value) -> Option<String> {
    let o = value.as_object()?;
    match o.get("type").and_then(Value::as_str)? {
        "mrkdwn" | "plain_text" => text_object(Some(value)),
        "image" => o
            .get("alt_text")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(|alt| literal_text(alt).into_owned()),
        "button" => {
            let label = text_object(o.get("text")).unwrap_or_else(|| "open".to_owned());
            o.get("url")
                .and_then(Value::as_str)
                .map(|url| link(url, &label))
        }
        _ => None,
    }
}

/// The deepest list `rich_text` renders indented (Slack's own limit).
const MAX_LIST_INDENT: u64 = 8;

/// `rich_text` elements: sections, lists, quotes and preformatted text.
fn rich_text(elements: Option<&Value>) -> String {
    let mut out: Vec<String> = Vec::new();
    for e in elements.and_then(Value::as_array).into_iter().flatten() {
        let inner = e.get("elements");
        match e.get("type").and_then(Value::as_str).unwrap_or("") {
            "rich_text_section" => out.push(rich_inline(inner)),
            "rich_text_quote" => out.extend(rich_inline(inner).lines().map(|l| format!("> {l}"))),
            "rich_text_preformatted" => out.push(format!("```\n{}\n```", rich_inline(inner))),
            "rich_text_list" => {
                let ordered = e.get("style").and_then(Value::as_str) == Some("ordered");
                // Slack nests lists at most eight deep; a sender's number decides no more.
                let depth = e.get("indent").and_then(Value::as_u64).unwrap_or(0);
                let indent = "  ".repeat(depth.min(MAX_LIST_INDENT) as usize);
                for (i, item) in inner
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let bullet = if ordered {
                        format!("{}.", i + 1)
                    } else {
                        "•".to_owned()
                    };
                    out.push(format!(
                        "{indent}{bullet} {}",
                        rich_inline(item.get("elements"))
                    ));
                }
            }
            _ => {}
        }
    }
    out.join("\n")
}

fn rich_inline(elements: Option<&Value>) -> String {
    let mut out = String::new();
    for e in elements.and_then(Value::as_array).into_iter().flatten() {
        let s = |key: &str| e.get(key).and_then(Value::as_str).unwrap_or("");
        match s("type") {
            // Rich text is structured: its `text` elements are text (a `<` ending one and a
            // URL starting the next too), its links `link` elements.
            "text" => {
                let text = s("text");
                if out.ends_with('<') && markup::opens_link(text) {
                    out.push(markup::LINK_BREAK);
                }
                out.push_str(&literal_text(text));
            }
            "link" => out.push_str(&link(
                s("url"),
                if s("text").is_empty() {
                    s("url")
                } else {
                    s("text")
                },
            )),
            "user" => out.push_str(&format!("@{}", s("user_id"))),
            "usergroup" => out.push_str(&format!("@{}", s("usergroup_id"))),
            "channel" => out.push_str(&format!("#{}", s("channel_id"))),
            "broadcast" => out.push_str(&format!("@{}", s("range"))),
            "emoji" => match e
                .get("unicode")
                .and_then(Value::as_str)
                .and_then(unicode_emoji)
            {
                Some(emoji) => out.push_str(&emoji),
                None => out.push_str(&format!(":{}:", s("name"))),
            },
            "date" => out.push_str(
                &e.get("timestamp")
                    .and_then(Value::as_i64)
                    .map(markup::utc)
                    .unwrap_or_default(),
            ),
            _ => {}
        }
    }
    out
}

/// `"1f680"` or `"1f468-200d-1f4bb"` to the characters.
fn unicode_emoji(code: &str) -> Option<String> {
    code.split('-')
        .map(|c| u32::from_str_radix(c, 16).ok().and_then(char::from_u32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, Instant};

    fn message(text: &str, blocks_text: &str) -> Map<String, Value> {
        let body = json!({
            "text": text,
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": blocks_text}}],
        });
        body.as_object().unwrap().clone()
    }

    fn rendered(body: Value) -> String {
        render(body.as_object().unwrap())
    }

    #[test]
    fn field_values_may_be_numbers_or_booleans_and_short_a_string() {
        let body = json!({"attachments": [{"title": "nas-1", "fields": [
            {"title": "Used %", "value": 93, "short": true},
            {"title": "Healthy", "value": false, "short": "true"},
            {"title": "Load", "value": 1.5, "short": "TRUE"},
            {"title": "Long", "value": "x", "short": "false"},
            {"title": "Empty", "value": null},
            {"title": "List", "value": [1, 2]},
        ]}]});
        assert_eq!(
            rendered(body),
            "nas-1\nUsed %: 93 · Healthy: false · Load: 1.5\nLong: x\nEmpty\nList"
        );
    }

    #[test]
    fn text_is_kept_unless_an_attachment_shows_it_where_chat_shows_text() {
        // "rollback" is only in the link's hidden URL: the text says something new.
        let body = json!({"text": "rollback", "attachments": [{"title": "Dashboard",
            "title_link": "https://grafana.example/d/rollback/overview",
            "text": "3 pods restarted"}]});
        assert_eq!(
            rendered(body),
            "rollback\n\n<https://grafana.example/d/rollback/overview|Dashboard>\n3 pods restarted"
        );
        // Shown as a link's label, or as text: said once.
        let body = json!({"text": "Dashboard", "attachments": [{"title": "Dashboard",
            "title_link": "https://grafana.example/d/x"}]});
        assert_eq!(rendered(body), "<https://grafana.example/d/x|Dashboard>");
        assert_eq!(
            visible("a <https://x.example/y|the label> b <https://z.example> c < d"),
            "a the label b https://z.example c < d"
        );
    }

    #[test]
    fn mattermosts_card_is_the_last_paragraph() {
        let body = json!({"text": "Disk report",
            "attachments": [{"title": "nas-1", "fields": [{"title": "Used %", "value": 93}]}],
            "props": {"card": "Details: [volume1](https://nas.example/v1) &amp; more"}});
        assert_eq!(
            rendered(body),
            "Disk report\n\nnas-1\nUsed %: 93\n\nDetails: <https://nas.example/v1|volume1> & more"
        );
        for props in [
            json!({"card": ""}),
            json!({"card": 3}),
            json!("card"),
            json!({}),
        ] {
            assert_eq!(rendered(json!({"text": "hi", "props": props})), "hi");
        }
    }

    #[test]
    fn plain_and_rich_text_show_a_typed_link_as_text() {
        let link_break = markup::LINK_BREAK;
        let body = json!({"blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "<https://evil.example|Approve>"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "<https://ok.example|ok>"}},
            {"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": [
                {"type": "text", "text": "see <"},
                {"type": "text", "text": "https://evil.example|Approve>"},
                {"type": "link", "url": "https://ok.example", "text": "ok"},
            ]}]},
        ]});
        assert_eq!(
            rendered(body),
            format!(
                "<{link_break}https://evil.example|Approve>\n<https://ok.example|ok>\n\
                 see <{link_break}https://evil.example|Approve><https://ok.example|ok>"
            )
        );
    }

    #[test]
    fn many_text_lines_beside_long_blocks_cost_a_bounded_search() {
        // Each line used to be looked for in all of the blocks: lines × blocks.
        let started = Instant::now();
        let blocks = "x".repeat(1 << 20) + " a";
        assert_eq!(render(&message(&"a\n".repeat(200_000), &blocks)), blocks);
        // Distinct lines, each found only past a megabyte: past the budget the text is kept.
        let distinct = (0..20_000).map(|i| format!("w{i}")).collect::<Vec<_>>();
        let blocks = "x".repeat(1 << 20) + " " + &distinct.join(" ");
        let text = distinct.join("\n");
        assert_eq!(
            render(&message(&text, &blocks)),
            format!("{text}\n\n{blocks}")
        );
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    }

    /// A small generator, so the comparisons below need no dependency.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        fn text(&mut self, max_pieces: usize) -> String {
            const PIECES: [&str; 12] = [
                "a", "b", "ab", "a-a", " ", " ", "-", "\n", "\r", "é", "😀", "1",
            ];
            (0..self.below(max_pieces + 1))
                .map(|_| PIECES[self.below(PIECES.len())])
                .collect()
        }
    }

    /// The search as it was: each line looked for in every shown text.
    fn all_shown_reference(text: &str, shown: &[&str]) -> bool {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .all(|line| shown.iter().any(|s| shows(s, line).0))
    }

    #[test]
    fn the_one_pass_check_agrees_with_searching_for_each_line() {
        let fixed: [(&str, &[&str]); 4] = [
            ("a-a", &["ba-a-a "]),
            ("Deploy", &["Deployment finished"]),
            ("x\n y \nx", &["a\n  y\r\nb", "x"]),
            ("é", &["aé é"]),
        ];
        for (text, shown) in fixed {
            let expected = all_shown_reference(text, shown);
            assert_eq!(
                all_shown(text, shown, SEARCH_BUDGET),
                expected,
                "{text:?} in {shown:?}"
            );
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut agreed_shown = 0;
        for _ in 0..50_000 {
            let shown: Vec<String> = (0..1 + rng.below(3)).map(|_| rng.text(16)).collect();
            let shown: Vec<&str> = shown.iter().map(String::as_str).collect();
            // Half the texts are pieces of a shown text, so that many are shown.
            let text = if rng.below(2) == 0 {
                let s = shown[rng.below(shown.len())];
                let (a, b) = (rng.below(s.len() + 1), rng.below(s.len() + 1));
                let (a, b) = (a.min(b), a.max(b));
                match s.get(a..b) {
                    Some(piece) => format!("{piece}\n{}", rng.text(2)),
                    None => rng.text(6),
                }
            } else {
                rng.text(6)
            };
            let expected = all_shown_reference(&text, &shown);
            assert_eq!(
                all_shown(&text, &shown, SEARCH_BUDGET),
                expected,
                "{text:?} in {shown:?}"
            );
            agreed_shown += usize::from(expected);
        }
        assert!(agreed_shown > 5_000, "{agreed_shown}");
    }

    #[test]
    fn past_the_search_budget_a_line_counts_as_not_shown() {
        let shown = ["xxxx w"];
        assert!(all_shown("w", &shown, SEARCH_BUDGET));
        // Each search reads its line and the text up to where it is found: 1 + 6 bytes for
        // `w`, 4 + 4 for `xxxx`.
        assert!(all_shown("w\nxxxx", &shown, 8));
        assert!(!all_shown("w\nxxxx", &shown, 7));
        assert!(!all_shown("w", &shown, 0));
        // Whole lines are found without reading.
        assert!(all_shown("xxxx w", &shown, 0));
    }
}
