//! Markup conversions to what Chat shows (senders-delivery-events B.3).

use std::borrow::Cow;
use std::fmt::Write as _;

/// A Chat link: `<url|label>`, or `<url>` without a label. `|` and `>` in the label would end
/// it early, so they are replaced, and a line break would split it (Chat, and the splitting of
/// long messages, take a link to be one line), so it becomes a space; a link written in the
/// label stays text ([`literal_text`]). In the URL those and spaces, `<` and control characters
/// are percent-encoded, which leaves its meaning as it was.
pub fn link(url: &str, label: &str) -> String {
    let label: String = literal_text(label)
        .trim()
        .chars()
        .map(|c| match c {
            '|' => '¦',
            '>' => '›',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    let url = link_url(url.trim());
    if label.is_empty() {
        format!("<{url}>")
    } else {
        format!("<{url}|{label}>")
    }
}

fn link_url(url: &str) -> std::borrow::Cow<'_, str> {
    let breaks = |c: char| c.is_ascii_control() || matches!(c, ' ' | '<' | '>' | '|');
    if !url.contains(breaks) {
        return url.into();
    }
    let mut encoded = String::with_capacity(url.len() + 8);
    for c in url.chars() {
        if breaks(c) {
            let _ = write!(encoded, "%{:02X}", c as u32);
        } else {
            encoded.push(c);
        }
    }
    encoded.into()
}

/// Put after a `<` that must not open a Chat link: U+2060 WORD JOINER, which shows nothing.
pub const LINK_BREAK: char = '\u{2060}';

/// Text a sender means as typed, not as markup (a commit message, an issue title, a label
/// value): a `<` that starts what Chat would show as a link (`<https://evil|Approve>`,
/// `<mailto:x>`: a URL scheme and `:`) gets [`LINK_BREAK`] after it, so Chat shows the text as
/// written instead of a link whose label may hide its target. Anyone who can push a commit or
/// set a label writes such text; only the links the gateway builds (with [`link`]) and the
/// markup of formats that have it (Slack's unescaped `<url|label>`, Markdown `[t](u)`) are links.
pub fn literal_text(text: &str) -> Cow<'_, str> {
    if !text
        .match_indices('<')
        .any(|(at, _)| opens_link(&text[at + 1..]))
    {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for (i, piece) in text.split('<').enumerate() {
        if i > 0 {
            out.push('<');
            if opens_link(piece) {
                out.push(LINK_BREAK);
            }
        }
        out.push_str(piece);
    }
    Cow::Owned(out)
}

/// Whether text right after a `<` makes it a link for Chat: a URL scheme (a letter, then
/// letters, digits, `+`, `-` or `.`) and `:`.
pub fn opens_link(after: &str) -> bool {
    let scheme = after
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .unwrap_or(after.len());
    after.starts_with(|c: char| c.is_ascii_alphabetic()) && after[scheme..].starts_with(':')
}

/// [`unescape`] for text a Slack sender escaped: a `<` written `&lt;` is text, so one that would
/// open a Chat link gets [`LINK_BREAK`] after it (`&lt;https://x|y&gt;` shows as typed); other
/// `&lt;` are plain `<` (`&lt;html&gt;` → `<html>`).
fn unescape_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, piece) in text.split("&lt;").enumerate() {
        if i > 0 {
            out.push('<');
            // A scheme holds no `&`, so the piece reads the same before and after unescaping.
            if opens_link(piece) {
                out.push(LINK_BREAK);
            }
        }
        out.push_str(&piece.replace("&gt;", ">").replace("&amp;", "&"));
    }
    out
}

/// Slack mrkdwn to Chat text: links pass through; user, group, channel and broadcast tokens
/// become readable `@name`/`#name` (two in a row, as Grafana writes its mentions, a space
/// apart); dates become their fallback text; `&amp;`, `&lt;` and `&gt;` are unescaped, a link
/// the sender escaped staying text ([`unescape_text`]); Markdown links `[t](u)` (Mattermost,
/// Gitea) become Chat links.
pub fn slack(text: &str) -> String {
    // Slack escapes `&`, `<` and `>` in code too, and shows them there as themselves; its
    // link markup there is text.
    outside_code(text, slack_prose, |code| {
        Cow::Owned(literal_text(&unescape(code)).into_owned())
    })
}

fn slack_prose(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Where the last mention written ends in `out`: a mention right after it is set apart.
    let mut mention_end = None;
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        let Some(len) = rest[start..].find('>') else {
            break;
        };
        let inner = &rest[start + 1..start + len];
        if let Some(last) = inner.rfind('<') {
            // Only the last `<` before this `>` can open a token: the text up to it is kept as
            // written (and each character is read a bounded number of times).
            let upto = start + 1 + last;
            out.push_str(&unescape_text(&rest[..upto]));
            rest = &rest[upto..];
            continue;
        }
        if !is_slack_token(inner) {
            // A `<` of the text itself (`free space < 10%`, which senders' templates do not
            // escape): kept as written, and the scan goes on after it.
            out.push_str(&unescape_text(&rest[..=start]));
            rest = &rest[start + 1..];
            continue;
        }
        out.push_str(&unescape_text(&rest[..start]));
        let token = slack_token(inner);
        let mention = inner.starts_with(['@', '#', '!']) && token.starts_with(['@', '#']);
        if mention && mention_end == Some(out.len()) {
            out.push(' ');
        }
        out.push_str(&token);
        mention_end = mention.then_some(out.len());
        rest = &rest[start + len + 1..];
    }
    out.push_str(&unescape_text(rest));
    markdown_links_with(&out, |between| Cow::Borrowed(between))
}

/// Whether `<inner>` is one of Slack's tokens: a mention (`@`, `#`, `!`) or a URL with a
/// scheme, on one line and without a `<` of its own.
fn is_slack_token(inner: &str) -> bool {
    if inner.contains('\n') {
        return false;
    }
    let target = inner.split('|').next().unwrap_or(inner);
    if target.starts_with(['@', '#', '!']) {
        return true;
    }
    let Some((scheme, after)) = target.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !after.is_empty()
        && !target.contains(char::is_whitespace)
}

fn slack_token(inner: &str) -> String {
    let (target, label) = match inner.split_once('|') {
        Some((t, l)) => (t, Some(l)),
        None => (inner, None),
    };
    // A label holds no `<` of its own (see `slack`): one there was written `&lt;`.
    let label = label.map(unescape_text);
    if let Some(user) = target.strip_prefix('@') {
        return format!(
            "@{}",
            label.as_deref().unwrap_or(user).trim_start_matches('@')
        );
    }
    if let Some(channel) = target.strip_prefix('#') {
        return format!(
            "#{}",
            label.as_deref().unwrap_or(channel).trim_start_matches('#')
        );
    }
    if let Some(special) = target.strip_prefix('!') {
        let name = special.split('^').next().unwrap_or(special);
        // Broadcasts read as typed (`<!here|here>` too): B.3 gives `@here`.
        if matches!(name, "here" | "channel" | "everyone") {
            return format!("@{name}");
        }
        if let Some(label) = label {
            // <!subteam^S1|@ops>, <!date^1700000000^{date}|Nov 14>: the readable fallback.
            return label;
        }
        // <!subteam^S01OPS> (Grafana's groups): the group's id says who was paged.
        if name == "subteam"
            && let Some(id) = special.split('^').nth(1).filter(|id| !id.is_empty())
        {
            return format!("@{id}");
        }
        return format!("@{name}");
    }
    // Slack senders escape `&` in URLs too.
    let target = unescape(target);
    match label {
        Some(label) => link(&target, &label),
        None => format!("<{target}>"),
    }
}

/// `&amp;`, `&lt;`, `&gt;` (the entities Slack senders escape) to their characters.
pub fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The small HTML of chat cards (Google Chat's, Teams') and chat messages (Matrix's) as Chat
/// text: `<br>` (any spelling) a line break; a paragraph, a heading, a list, a quote, a table's
/// row a line of its own (a list item `• `, table cells apart by ` | `); `<pre>` a fenced
/// block; `<a href="u">label</a>` a Chat link (web addresses only), `<at>name</at>` (a Teams
/// mention) `@name`, the styling tags (`<b>`, `<i>`, `<u>`, `<s>`, `<font>`…) dropped, entities
/// decoded. Anything else after a `<` is text. The
/// text between the links built here is written by `segment` once it is whole, so a Chat link
/// typed in it stays text however tags or entities split it (`&lt;<b></b>https://…|…&gt;`).
/// Each byte is looked at a bounded number of times, whatever the tags.
pub fn html_text(html: &str, segment: fn(&str) -> Cow<'_, str>) -> String {
    read_html(html, segment, false)
}

/// [`html_text`]; a `document` (a Matrix message's) also has pictures, and elements no reader
/// shows, which card text shows as typed.
fn read_html(html: &str, segment: fn(&str) -> Cow<'_, str>, document: bool) -> String {
    let mut out = String::with_capacity(html.len());
    // The text since the last link built here, tags dropped and entities decoded.
    let mut text = String::new();
    // The open `<a>`: its URL, and where its label starts in `text`.
    let mut anchor: Option<(String, usize)> = None;
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        text.push_str(&decode_entities(&rest[..start]));
        let after = &rest[start + 1..];
        let name: String = after
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        let known = is_block(&name)
            || matches!(
                name.as_str(),
                "br" | "li"
                    | "td"
                    | "th"
                    | "pre"
                    | "hr"
                    | "tg"
                    | "ins"
                    | "a"
                    | "at"
                    | "b"
                    | "strong"
                    | "i"
                    | "em"
                    | "u"
                    | "s"
                    | "strike"
                    | "del"
                    | "font"
                    | "span"
                    | "code"
            )
            || (document && matches!(name.as_str(), "img" | "script" | "style" | "mx"));
        let Some(end) = known.then(|| tag_end(after)).flatten() else {
            // Not a tag: a `<` of the text.
            text.push('<');
            rest = after;
            continue;
        };
        let tag = &after[..end];
        let closing = tag.starts_with('/');
        // A block opens on a line of its own.
        let open_line = |text: &mut String| {
            // White space after a line's end is no text on the next line.
            let written = text.trim_end_matches(' ');
            let at_start = out.is_empty() && written.is_empty();
            if !at_start && !written.ends_with('\n') {
                text.push('\n');
            }
        };
        match name.as_str() {
            "br" => text.push('\n'),
            "pre" => {
                open_line(&mut text);
                text.push_str("```\n");
            }
            "hr" => {
                open_line(&mut text);
                text.push_str("———\n");
            }
            "li" if !closing => {
                open_line(&mut text);
                text.push_str("• ");
            }
            "td" | "th" if !closing && !text.is_empty() && !text.ends_with('\n') => {
                text.push_str(" | ");
            }
            block if is_block(block) && closing => text.push('\n'),
            block if is_block(block) => open_line(&mut text),
            // What no reader shows: a script, a style sheet, Matrix's quote of the message
            // answered (`<mx-reply>`); dropped whole, to its end (or the text's).
            "script" | "style" | "mx" if !closing => {
                let body = &after[end + 1..];
                let close = match name.as_str() {
                    "mx" => "</mx-".to_owned(),
                    other => format!("</{other}"),
                };
                let closing_at = find_ignoring_case(body, &close);
                rest = closing_at
                    .and_then(|at| Some(&body[at + body[at..].find('>')? + 1..]))
                    .unwrap_or_default();
                continue;
            }
            // A picture: a link to it, by its `alt` (inside a link, its `alt` alone).
            "img" => {
                let alt = attribute(tag, "alt").unwrap_or_default();
                match attribute(tag, "src").filter(|src| is_web_url(src)) {
                    Some(src) if anchor.is_none() => {
                        out.push_str(&segment(&text));
                        let label = if alt.trim().is_empty() {
                            "image"
                        } else {
                            alt.trim()
                        };
                        out.push_str(&link(&src, label));
                        text.clear();
                    }
                    _ => text.push_str(&alt),
                }
            }
            "at" if !closing => text.push('@'),
            "a" if !closing => anchor = href(tag).map(|url| (url, text.len())),
            "a" => {
                if let Some((url, label_at)) = anchor.take() {
                    let label = text.split_off(label_at);
                    out.push_str(&segment(&text));
                    out.push_str(&link(&url, &label));
                    text.clear();
                }
            }
            _ => {}
        }
        rest = &after[end + 1..];
    }
    text.push_str(&decode_entities(rest));
    out.push_str(&segment(&text));
    out
}

/// Tags that stand on lines of their own.
fn is_block(name: &str) -> bool {
    matches!(
        name,
        "p" | "div"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "ul"
            | "ol"
            | "blockquote"
            | "table"
            | "tr"
    )
}

/// A document's HTML (Matrix's `formatted_body`) as Chat text: as [`html_text`], with HTML's
/// white space: a line break in the source is a space, runs of spaces are one, but for a
/// `<pre>` block's, which is kept as written.
pub fn html_document(html: &str) -> String {
    let mut collapsed = String::with_capacity(html.len());
    let mut rest = html;
    while !rest.is_empty() {
        let (flowing, pre) = match find_ignoring_case(rest, "<pre") {
            Some(at) => {
                let end =
                    find_ignoring_case(&rest[at..], "</pre").map_or(rest.len(), |end| at + end);
                (&rest[..at], &rest[at..end])
            }
            None => (rest, ""),
        };
        let mut space = false;
        for c in flowing.chars() {
            if c.is_ascii_whitespace() {
                space = true;
                continue;
            }
            if space {
                collapsed.push(' ');
                space = false;
            }
            collapsed.push(c);
        }
        if space {
            collapsed.push(' ');
        }
        collapsed.push_str(pre);
        rest = &rest[flowing.len() + pre.len()..];
    }
    let text = read_html(&collapsed, literal_text, true);
    // The spaces around a block's tags, off its lines; a fenced block's lines as written.
    let mut in_code = false;
    let mut lines = Vec::new();
    for line in text.split('\n') {
        let fence = line.trim() == "```";
        lines.push(if in_code && !fence { line } else { line.trim() });
        in_code ^= fence;
    }
    lines.join("\n")
}

/// Where `needle` (ASCII) starts in `haystack`, in any case.
fn find_ignoring_case(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|window| window.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Where a tag that starts `after` (the text after its `<`) ends: its `>`, outside quoted
/// attribute values (which may hold `<` and `>`, as HTML allows: `title="a<b"`). None when a
/// `<` outside quotes comes first, or the text ends: then it was no tag, its `<` is text, and
/// the reading goes on from the next `<`, which may be one this scan passed.
///
/// That stays linear: a scan is outside quotes or inside `"…"` or `'…'`, and each character
/// moves every scan's state by the same one-to-one map, so scans begun at different `<` (one
/// outside quotes, the others not, or they would have ended there) never share a state. At
/// most three scans pass over any byte.
fn tag_end(after: &str) -> Option<usize> {
    let mut quote = None;
    for (at, byte) in after.bytes().enumerate() {
        match (quote, byte) {
            (None, b'>') => return Some(at),
            (None, b'<') => return None,
            (Some(q), b) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(byte),
            (None, _) => {}
        }
    }
    None
}

/// The longest character reference between `&` and `;`.
const MAX_REFERENCE: usize = 32;

/// HTML's character references: named ones (`&amp;`, `&copy;`, `&auml;`, `&hellip;`: every
/// one of HTML's list, from `htmlize`'s table of it) and numbered ones (`&#60;`, `&#x3C;`),
/// each with its `;`. Without it, or unknown, a reference stays as written (`?a=1&copy=2`).
fn decode_entities(text: &str) -> Cow<'_, str> {
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        // The longest name is `CounterClockwiseContourIntegral`, 31 characters. The `;` is
        // looked for only that far: searched to the end, a text of `&`s without one took
        // quadratic time (400 KB: 5 s).
        let entity = after.as_bytes()[..after.len().min(MAX_REFERENCE + 1)]
            .iter()
            .position(|&b| b == b';')
            .and_then(|end| Some((entity_text(&after[..end])?, end)));
        match entity {
            Some((decoded, end)) => {
                out.push_str(&decoded);
                rest = &after[end + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

fn entity_text(name: &str) -> Option<Cow<'static, str>> {
    let number = |digits: &str, radix| u32::from_str_radix(digits, radix).ok();
    match name {
        // A no-break space is a space in Chat: it would only keep a split from breaking there.
        "nbsp" => Some(Cow::Borrowed(" ")),
        _ if name.starts_with('#') => {
            let code = match name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                Some(hex) => number(hex, 16),
                None => number(&name[1..], 10),
            }?;
            let c = char::from_u32(code).filter(|c| *c != '\0')?;
            Some(Cow::Owned(c.to_string()))
        }
        _ => {
            let named = htmlize::ENTITIES.get(format!("&{name};").as_bytes())?;
            std::str::from_utf8(named).ok().map(Cow::Borrowed)
        }
    }
}

/// The `href` of an `<a …>` tag, when it is a web address.
fn href(tag: &str) -> Option<String> {
    attribute(tag, "href").filter(|url| is_web_url(url))
}

/// An attribute's value in a tag (`name="v"`, `name='v'` or `name=v`, the name in any case;
/// the first of that name, as HTML takes it), its character references decoded. The tag's
/// attributes are read in order, as HTML reads them, so a `name=` inside another attribute's
/// value (`title="see href=…"`) is not taken for it.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let separator = |c: char| c.is_ascii_whitespace() || c == '/';
    // Past the tag's own name.
    let mut rest = tag.trim_start_matches('/');
    rest = &rest[rest.find(separator).unwrap_or(rest.len())..];
    loop {
        rest = rest.trim_start_matches(separator);
        // A name's first character may be `=` (HTML reads `<a =x>` so); it ends at white
        // space, `/` or `=`.
        let first = rest.chars().next()?.len_utf8();
        let name_end = rest[first..]
            .find(|c: char| separator(c) || c == '=')
            .map_or(rest.len(), |at| first + at);
        let key = &rest[..name_end];
        rest = rest[name_end..].trim_start_matches(|c: char| c.is_ascii_whitespace());
        let value = match rest.strip_prefix('=') {
            None => "",
            Some(after) => {
                let after = after.trim_start_matches(|c: char| c.is_ascii_whitespace());
                let (value, left) = match after.chars().next() {
                    Some(q @ ('"' | '\'')) => {
                        let quoted = &after[1..];
                        let end = quoted.find(q).unwrap_or(quoted.len());
                        (&quoted[..end], quoted.get(end + 1..).unwrap_or_default())
                    }
                    _ => after.split_at(
                        after
                            .find(|c: char| c.is_ascii_whitespace())
                            .unwrap_or(after.len()),
                    ),
                };
                rest = left;
                value
            }
        };
        if key.eq_ignore_ascii_case(name) {
            return Some(decode_entities(value).trim().to_owned());
        }
    }
}

/// Whether `url` is a web address (http or https, any case): the only links senders may make.
pub fn is_web_url(url: &str) -> bool {
    let url = url.trim_start();
    ["http://", "https://"].iter().any(|scheme| {
        url.get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
    })
}

/// A chat tool's mentions, `<{opener}…>`, as `@name`: `name_of` reads the name from what is
/// between the opener and the `>`.
pub fn mentions(text: &str, opener: &str, name_of: fn(&str) -> &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(opener) {
        let Some(len) = rest[start..].find('>') else {
            break;
        };
        out.push_str(&rest[..start]);
        out.push('@');
        out.push_str(name_of(&rest[start + opener.len()..start + len]).trim());
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

/// Markdown links `[label](http…)` to Chat links; other brackets are left alone. A label holds
/// no brackets and no line break: `[FIRING:1] see [dashboard](u)` links only `dashboard`. Each
/// character is read a bounded number of times, whatever the brackets (sender text is large).
pub fn markdown_links(text: &str) -> String {
    markdown_links_in_prose(text, |between| Cow::Borrowed(between))
}

/// Markdown written by people (a comment, an alert's message): its links `[t](u)` become Chat
/// links, and the text around them is [`literal_text`], so a `<https://…|…>` typed in it is not
/// one.
pub fn markdown_text(text: &str) -> String {
    markdown_links_in_prose(text, literal_text)
}

/// [`markdown_links`], the text between the links written as `between` gives it; code is
/// left as typed ([`outside_code`]), through `between` too.
fn markdown_links_in_prose(text: &str, between: fn(&str) -> Cow<'_, str>) -> String {
    outside_code(text, |prose| markdown_links_with(prose, between), between)
}

/// [`markdown_links_in_prose`] for text that holds no code.
fn markdown_links_with(text: &str, between: fn(&str) -> Cow<'_, str>) -> String {
    let mut out = String::with_capacity(text.len());
    // `text[..copied]` is in `out`; the next `[` is looked for from `from`.
    let (mut copied, mut from) = (0, 0);
    // Where the last look for a URL's end stopped (the first `)` or whitespace after it): a
    // later URL that starts before it ends there too, so the text after it is not read again.
    let mut url_stop = 0;
    while let Some(open) = text[from..].find('[').map(|i| from + i) {
        let Some(close) = text[open + 1..].find(']').map(|i| open + 1 + i) else {
            break; // no `]` after this `[`: none after any later one either
        };
        // A `[` inside opens a label of its own: the label follows the last one.
        let open = text[open + 1..close]
            .rfind('[')
            .map_or(open, |i| open + 1 + i);
        let label = &text[open + 1..close];
        from = close + 1;
        if !text[close..].starts_with("](") || label.contains('\n') {
            continue;
        }
        let url_start = close + 2;
        if url_stop < url_start {
            url_stop = url_start + destination_end(&text[url_start..]);
        }
        let url = &text[url_start..url_stop];
        // Discord's `[t](<u>)`: a link whose preview is suppressed.
        let url = url
            .strip_prefix('<')
            .and_then(|u| u.strip_suffix('>'))
            .unwrap_or(url);
        if !text[url_stop..].starts_with(')')
            || !(url.starts_with("http://") || url.starts_with("https://"))
        {
            continue;
        }
        // An image, `![alt](url)`, is a link to it too: without the `!`, labelled by its alt text.
        let image = open > copied && text[..open].ends_with('!');
        out.push_str(&between(&text[copied..open - usize::from(image)]));
        let label = match label.trim() {
            "" if image => "image",
            _ => label,
        };
        out.push_str(&link(url, label));
        copied = url_stop + 1;
        from = copied;
    }
    out.push_str(&between(&text[copied..]));
    out
}

/// Where a Markdown link's destination ends: at white space, or at the `)` that closes the
/// link. Parentheses inside it are part of it when they pair up, as CommonMark reads them
/// (`https://en.wikipedia.org/wiki/Foo_(bar)`).
fn destination_end(text: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return i,
            ')' => depth -= 1,
            c if c.is_whitespace() => return i,
            _ => {}
        }
    }
    text.len()
}

/// Discord's tokens, which Chat cannot resolve, as readable text: `<@123>` → `@123`,
/// `<@&1>` → `@role-1`, `<#1>` → `#1`, `<:name:1>` → `:name:`, `<t:1700000000:R>` → a UTC
/// time; a Slack-style `<url|label>`, which Discord shows as typed, stays text
/// ([`literal_text`]); then Markdown links.
pub fn discord(text: &str) -> String {
    outside_code(text, discord_prose, literal_text)
}

fn discord_prose(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        let Some(len) = rest[start..].find('>') else {
            break;
        };
        let inner = &rest[start + 1..start + len];
        if let Some(last) = inner.rfind('<') {
            // Only the last `<` before this `>` can open a token (see `slack`).
            let upto = start + 1 + last;
            out.push_str(&rest[..upto]);
            rest = &rest[upto..];
            continue;
        }
        let Some(token) = discord_token(inner) else {
            // Not a token (a `<` of the text, a URL): kept as written, the scan going on after
            // the `<`, so a token later on is still read.
            out.push_str(&rest[..=start]);
            // Discord has no labelled links: `<https://evil|Approve>` (a commit message in
            // Gitea's Discord payload) is text there, and must not become a link in Chat.
            if inner.contains('|') && opens_link(inner) {
                out.push(LINK_BREAK);
            }
            rest = &rest[start + 1..];
            continue;
        };
        out.push_str(&rest[..start]);
        out.push_str(&token);
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    markdown_links_with(&out, |between| Cow::Borrowed(between))
}

/// `prose` applied to what is not code in `text`, `code` to what is: an inline span
/// (`` `x` ``, closed by the next run of as many backticks on its line) or a block (a run of
/// three or more, closed by the next run at least as long: Markdown's fences, Slack's
/// ```` ```x``` ```` on one line). Senders show code as typed (B.3: "Code: unchanged"), so their
/// tokens and links are converted in the prose only; a run nothing closes is prose. Linear in
/// the text: the runs are listed once, with where each length next occurs.
fn outside_code<'t>(
    text: &'t str,
    prose: impl Fn(&str) -> String,
    code: impl Fn(&'t str) -> Cow<'t, str>,
) -> String {
    let runs = backtick_runs(text);
    if runs.is_empty() {
        return prose(text);
    }
    // For each run: the next run as long (for inline spans) and the longest after it.
    let mut next_as_long = vec![None; runs.len()];
    let mut longest_after = vec![0; runs.len()];
    let (mut last_of, mut longest) = ([None; 3], 0);
    for (at, &(_, len)) in runs.iter().enumerate().rev() {
        longest_after[at] = longest;
        if len < 3 {
            next_as_long[at] = last_of[len];
            last_of[len] = Some(at);
        }
        longest = longest.max(len);
    }
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut at) = (0, 0);
    while at < runs.len() {
        let (start, len) = runs[at];
        let close = match len {
            // An inline span stays on its line: a stray backtick does not make the lines up
            // to the next one code. (The text between two runs as long is read once.)
            1 | 2 => next_as_long[at].filter(|&c| !text[start..runs[c].0].contains('\n')),
            _ if longest_after[at] >= len => (at + 1..runs.len()).find(|&c| runs[c].1 >= len),
            _ => None,
        };
        let Some(close) = close else {
            at += 1;
            continue;
        };
        let end = runs[close].0 + runs[close].1;
        if copied < start {
            out.push_str(&prose(&text[copied..start]));
        }
        out.push_str(&code(&text[start..end]));
        (copied, at) = (end, close + 1);
    }
    out.push_str(&prose(&text[copied..]));
    out
}

/// Where each run of backticks in `text` starts, and how long it is.
fn backtick_runs(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut runs = Vec::new();
    let mut from = 0;
    while let Some(start) = text[from..].find('`').map(|i| from + i) {
        let len = bytes[start..].iter().take_while(|b| **b == b'`').count();
        runs.push((start, len));
        from = start + len;
    }
    runs
}

fn discord_token(inner: &str) -> Option<String> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(role) = inner.strip_prefix("@&") {
        return digits(role).then(|| format!("@role-{role}"));
    }
    if let Some(user) = inner.strip_prefix("@!").or_else(|| inner.strip_prefix('@')) {
        return digits(user).then(|| format!("@{user}"));
    }
    if let Some(channel) = inner.strip_prefix('#') {
        return digits(channel).then(|| format!("#{channel}"));
    }
    if let Some(time) = inner.strip_prefix("t:") {
        let secs = time.split(':').next()?.parse().ok()?;
        return Some(utc(secs));
    }
    let emoji = inner
        .strip_prefix("a:")
        .or_else(|| inner.strip_prefix(':'))?;
    let (name, id) = emoji.split_once(':')?;
    digits(id).then(|| format!(":{name}:"))
}

/// A colour (Slack `good`/`warning`/`danger` or `#rrggbb`) as an emoji marker.
pub fn color_marker(color: &str) -> Option<&'static str> {
    match color.trim().to_ascii_lowercase().as_str() {
        "good" => Some("🟢"),
        "warning" => Some("🟡"),
        "danger" => Some("🔴"),
        hex => u32::from_str_radix(hex.trim_start_matches('#'), 16)
            .ok()
            .filter(|_| hex.trim_start_matches('#').len() == 6)
            .and_then(rgb_marker),
    }
}

/// An RGB colour (Discord's integer) as the nearest of 🔴 🟡 🟢 🔵, or none for grey.
pub fn rgb_marker(rgb: u32) -> Option<&'static str> {
    let (r, g, b) = ((rgb >> 16) & 0xff, (rgb >> 8) & 0xff, rgb & 0xff);
    let (max, min) = (r.max(g).max(b), r.min(g).min(b));
    if max - min < 40 {
        return None;
    }
    Some(if r >= g && r >= b {
        if g * 10 >= r * 6 { "🟡" } else { "🔴" }
    } else if g >= b {
        if r * 10 >= g * 6 { "🟡" } else { "🟢" }
    } else {
        "🔵"
    })
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC`.
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = crate::domain::civil_date(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// An RFC 3339 time (`2024-05-01T12:34:56.789Z`) shortened to `2024-05-01 12:34 UTC` when it is
/// in UTC; other times as sent.
pub fn rfc3339(time: &str) -> String {
    let utc = time.ends_with('Z') || time.ends_with("+00:00");
    // Checked byte by byte before it is cut: a sender's malformed time may hold any character.
    let shaped = time.as_bytes().get(..16).is_some_and(|b| {
        b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 => c == b':',
            _ => c.is_ascii_digit(),
        })
    });
    if utc && shaped {
        format!("{} {} UTC", &time[..10], &time[11..16])
    } else {
        time.to_owned()
    }
}

/// The `plain` markup of a hook: also strips emphasis markers (`**b**`, `__b__`, `~~s~~`,
/// `*b*`, `_i_`, `~s~`) and heading marks (`# h`), which Chat shows as typed. Only pairs that
/// open after a space or an opening bracket and close before a non-letter are taken, so
/// `rate(x[5m])*100`, `snake_case` and URLs stay as they are; code (inline and fenced) and
/// Chat links are never touched.
pub fn plain(text: &str) -> String {
    let mut in_fence = false;
    let lines: Vec<String> = text
        .split('\n')
        .map(|line| {
            if line.trim_start().starts_with("```") {
                in_fence = !in_fence;
                return line.to_owned();
            }
            if in_fence {
                return line.to_owned();
            }
            plain_line(strip_heading(line))
        })
        .collect();
    lines.join("\n")
}

fn strip_heading(line: &str) -> &str {
    let hashes = line.bytes().take_while(|b| *b == b'#').count();
    match line[hashes..].strip_prefix(' ') {
        Some(rest) if (1..=6).contains(&hashes) => rest.trim_start(),
        _ => line,
    }
}

/// One line, its code spans and Chat links kept as they are.
fn plain_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut ends = Ends {
        code: true,
        links: true,
    };
    let mut rest = line;
    loop {
        let Some((start, end)) = protected_span(rest, &mut ends) else {
            out.push_str(&strip_emphasis(rest));
            return out;
        };
        out.push_str(&strip_emphasis(&rest[..start]));
        out.push_str(&rest[start..end]);
        rest = &rest[end..];
    }
}

/// Whether a `` ` `` or a link may still find its end further on in the line. Once one finds
/// none, no later one can, so neither is looked for again: reading on to the end of the line
/// from each of many (or from one in each of many spans) made a line cost the square of its
/// length.
struct Ends {
    code: bool,
    links: bool,
}

/// The first inline code span or `<http…>`/`<mailto:…>` link: its byte range.
fn protected_span(text: &str, ends: &mut Ends) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(offset) = text[from..].find(['`', '<']) {
        let start = from + offset;
        let after = &text[start + 1..];
        let span = |end: usize| Some((start, start + 1 + end + 1));
        if text[start..].starts_with('`') {
            if ends.code {
                match after.find('`') {
                    Some(end) => return span(end),
                    None => ends.code = false,
                }
            }
        } else if ends.links
            && ["http://", "https://", "mailto:"]
                .iter()
                .any(|scheme| after.starts_with(scheme))
        {
            match after.find('>') {
                Some(end) => return span(end),
                None => ends.links = false,
            }
        }
        if !ends.code && !ends.links {
            return None;
        }
        from = start + 1;
    }
    None
}

fn strip_emphasis(text: &str) -> String {
    ["**", "__", "~~", "*", "_", "~"]
        .iter()
        .fold(text.to_owned(), |text, marker| strip_pairs(&text, marker))
}

/// `marker`…`marker` pairs removed, their content kept.
fn strip_pairs(text: &str, marker: &str) -> String {
    let mark = marker.chars().next().unwrap_or('*');
    let opens = |before: Option<char>, after: Option<char>| {
        before.is_none_or(|c| c.is_whitespace() || "([{\"'".contains(c))
            && after.is_some_and(|c| !c.is_whitespace() && c != mark)
    };
    let closes = |before: Option<char>, after: Option<char>| {
        before.is_some_and(|c| !c.is_whitespace() && c != mark)
            && after.is_none_or(|c| !c.is_alphanumeric() && c != mark)
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'pairs: loop {
        for (open, _) in rest.match_indices(marker) {
            let inner = open + marker.len();
            if !opens(
                rest[..open].chars().next_back(),
                rest[inner..].chars().next(),
            ) {
                continue;
            }
            for (close, _) in rest[inner..].match_indices(marker) {
                let close = inner + close;
                let after = close + marker.len();
                if close > inner
                    && closes(
                        rest[..close].chars().next_back(),
                        rest[after..].chars().next(),
                    )
                {
                    out.push_str(&rest[..open]);
                    out.push_str(&rest[inner..close]);
                    rest = &rest[after..];
                    continue 'pairs;
                }
            }
            // Whether a marker closes does not depend on the opener: none after this one
            // means none after any later opener either (looking again made `*a *a *a…` cost
            // the square of its length).
            break;
        }
        out.push_str(rest);
        return out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_html_cannot_spell_a_link_across_tags_or_entities() {
        for spoof in [
            "&lt;<b></b>https://evil.example|Approve&gt;",
            "<<b>https://evil.example|Approve></b>",
            "&#60;https://evil.example|Approve&#62;",
            "<b>&lt;</b>https://evil.example|Approve>",
            "&LT;https&colon;//evil.example&vert;Approve&GT;",
        ] {
            let text = html_text(spoof, literal_text);
            assert!(!text.contains("<https://"), "{spoof} → {text}");
            assert!(
                text.contains("https://evil.example|Approve"),
                "{spoof} → {text}"
            );
        }
        assert_eq!(
            html_text(
                "see <a href=\"https://x.example/?a=1&amp;b=2\">the <b>logs</b></a> &copy; &#x41;",
                literal_text
            ),
            "see <https://x.example/?a=1&b=2|the logs> © A"
        );
        // Every named reference of HTML's list, with its `;`; others stay as written.
        assert_eq!(
            html_text(
                "Gr&uuml;&szlig;e &hellip; &mdash; &fjlig; &copy=2 &notanentity; &#0; &amp",
                literal_text
            ),
            "Grüße … — fj &copy=2 &notanentity; &#0; &amp"
        );
        assert_eq!(
            html_text(
                "<a title=\"a > b\" href=\" https://x.example \">y</a>",
                literal_text
            ),
            "<https://x.example|y>"
        );
    }

    #[test]
    fn pictures_are_links_and_what_no_reader_shows_is_dropped() {
        assert_eq!(
            html_document(
                "<mx-reply><blockquote>In reply to <b>old</b></blockquote></mx-reply>Disk full \
                 <img src=\"https://grafana.example/r.png\" alt=\"graph\"><img src=\"mxc://x/y\" alt=\"icon\">\
                 <script>alert(1)</script><STYLE>p{}</style> done"
            ),
            "Disk full <https://grafana.example/r.png|graph>icon done"
        );
        // An element left open drops the rest, read once.
        assert_eq!(html_document("ok<script>never shown"), "ok");
    }

    #[test]
    fn card_html_is_read_in_linear_time() {
        // Each `<b` opens what looks like a tag with no end: read once, not once per `<`.
        // `<` inside quotes, closed or left open, each start a scan of their own.
        for hostile in [
            "<b".repeat(200_000) + &"<b \"".repeat(100_000),
            "<b title=\"".to_owned() + &"<b ".repeat(200_000),
            "<b \"<".repeat(200_000) + "<b '" + &"<b \"<i '".repeat(100_000),
        ] {
            let started = std::time::Instant::now();
            let text = html_text(&hostile, literal_text);
            assert_eq!(text.len(), hostile.len());
            // Generous: quadratic reading took minutes.
            assert!(started.elapsed() < std::time::Duration::from_secs(20));
        }
        // `&`s with no `;` near: each looks only as far as the longest reference goes.
        // (A hook's body may hold 5 MB; two of `&`s took minutes.)
        for hostile in [
            "&".repeat(2_000_000),
            "&#".repeat(1_000_000),
            "&amp".repeat(500_000) + ";",
        ] {
            let started = std::time::Instant::now();
            assert_eq!(
                html_text(&hostile, literal_text).len(),
                hostile.len() - 4 * usize::from(hostile.ends_with(';'))
            );
            let in_a_value = format!("<a href=\"https://x.example/?{hostile}\">y</a>");
            assert!(html_text(&in_a_value, literal_text).ends_with("|y>"));
            assert!(started.elapsed() < std::time::Duration::from_secs(20));
        }
    }

    #[test]
    fn quoted_attribute_values_may_hold_what_ends_a_tag() {
        assert_eq!(
            html_text(
                "<a title=\"a<b > c\" href='https://x.example/?q=1&amp;r=2'>y</a> <b>z</b>",
                literal_text
            ),
            "<https://x.example/?q=1&r=2|y> z"
        );
        // The first `href` of the tag's own, not one written inside another value.
        assert_eq!(
            html_text(
                "<a title=\"see href=https://evil.example\" HREF=\"https://good.example\" \
                 href=\"https://second.example\">y</a>",
                literal_text
            ),
            "<https://good.example|y>"
        );
        assert_eq!(
            html_document("<img alt=\"1 &lt; 2 <ok>\" src=https://x.example/p.png>"),
            "<https://x.example/p.png|1 < 2 <ok›>"
        );
        // A quote never closed: no tag, its `<` is text.
        assert_eq!(
            html_text("<b title=\"x <i>y</i>", literal_text),
            "<b title=\"x y"
        );
    }

    #[test]
    fn a_link_stays_one_link_on_one_line() {
        assert_eq!(
            link("https://g.example/d?q=a|b c", "CPU > 90%\non web|db"),
            "<https://g.example/d?q=a%7Cb%20c|CPU › 90% on web¦db>"
        );
        assert_eq!(
            link(" https://g.example/<x>\n", "  "),
            "<https://g.example/%3Cx%3E>"
        );
        assert_eq!(
            link("https://g.example/ok", "fine"),
            "<https://g.example/ok|fine>"
        );
    }

    /// What Chat would show, the word joiner made visible.
    fn shown(text: &str) -> String {
        text.replace(LINK_BREAK, "[WJ]")
    }

    #[test]
    fn a_link_the_slack_sender_escaped_stays_text() {
        // Gitea's Slack push: the commit message is the literal text of a disguised link.
        let gitea = "<https://git.example/o/r/commit/abc1234567|abc1234>: \
            &lt;https://evil.example/login|Approve deploy #42&gt; - Mallory";
        assert_eq!(
            slack(gitea),
            "<https://git.example/o/r/commit/abc1234567|abc1234>: \
             <\u{2060}https://evil.example/login|Approve deploy #42> - Mallory"
        );
        // Alertmanager's annotation, and other schemes; other escaped text reads as before.
        assert_eq!(
            shown(&slack(
                "target &lt;http://10.0.0.5:8080/health&gt; &amp; body &lt;html&gt; &lt;mailto:a@b.example&gt;"
            )),
            "target <[WJ]http://10.0.0.5:8080/health> & body <html> <[WJ]mailto:a@b.example>"
        );
        for text in [
            "&lt;b&gt;",
            "a &lt; b",
            "&lt;10:30&gt;",
            "&lt;@U1&gt;",
            "&lt;&lt;x",
        ] {
            assert!(!slack(text).contains(LINK_BREAK), "{text}");
        }
        // Escaped only in part (`>` as typed), escaped twice, and right before a real link.
        assert_eq!(
            shown(&slack(
                "&lt;https://evil.example|Approve> &lt;&lt;https://x.example&gt;"
            )),
            "<[WJ]https://evil.example|Approve> <<[WJ]https://x.example>"
        );
        assert_eq!(
            shown(&slack("&lt;<https://ok.example|ok>")),
            "<<https://ok.example|ok>"
        );
        // What the sender wrote unescaped is a link, as before.
        assert_eq!(
            slack("<https://x.example/?a=1&amp;b=2|x &amp; y>"),
            "<https://x.example/?a=1&b=2|x & y>"
        );
    }

    #[test]
    fn an_escaped_link_in_a_tokens_label_stays_text() {
        assert_eq!(
            shown(&slack(
                "<!date^1700000000^{date}|&lt;https://evil.example|Approve&gt;> \
                 <@U1|&lt;https://evil.example|bob&gt;> <https://ok.example|&lt;https://evil.example&gt;>"
            )),
            "<[WJ]https://evil.example|Approve> @<[WJ]https://evil.example|bob> \
             <https://ok.example|<[WJ]https://evil.example›>"
        );
    }

    #[test]
    fn literal_text_breaks_only_what_chat_would_link() {
        assert_eq!(
            shown(&literal_text(
                "<https://evil.example|Approve> and <mailto:x@y.example>"
            )),
            "<[WJ]https://evil.example|Approve> and <[WJ]mailto:x@y.example>"
        );
        assert_eq!(
            shown(&literal_text("<<svn+ssh://h/r> <x-y.z:1>")),
            "<<[WJ]svn+ssh://h/r> <[WJ]x-y.z:1>"
        );
        for kept in [
            "<html> a < b <@U1> <#C1> <!here> <10:30> < https://x.example> <:tada:1> <",
            "plain text",
            "",
        ] {
            assert!(
                matches!(literal_text(kept), Cow::Borrowed(text) if text == kept),
                "{kept}"
            );
        }
        // Applied twice, it changes nothing more; and a link's label is literal text too.
        let once = literal_text("<https://e.example|x>").into_owned();
        assert_eq!(literal_text(&once), once);
        assert_eq!(
            shown(&link(
                "https://ok.example",
                "<https://evil.example|Approve>"
            )),
            "<https://ok.example|<[WJ]https://evil.example¦Approve›>"
        );
        // Each character is read a bounded number of times.
        let many = "<a".repeat(200_000) + ":";
        assert_eq!(literal_text(&many).matches(LINK_BREAK).count(), 1);
        let escaped = "&lt;a".repeat(200_000);
        assert_eq!(slack(&escaped), "<a".repeat(200_000));
    }

    #[test]
    fn markdown_text_converts_links_and_keeps_the_rest_as_typed() {
        assert_eq!(
            shown(&markdown_text(
                "see [the log](https://ci.example/1) or <https://evil.example|Approve>"
            )),
            "see <https://ci.example/1|the log> or <[WJ]https://evil.example|Approve>"
        );
        assert_eq!(
            markdown_text("![](https://g.example/a.png) <b>"),
            "<https://g.example/a.png|image> <b>"
        );
    }

    #[test]
    fn grafanas_mentions_are_set_apart_and_groups_keep_their_id() {
        assert_eq!(
            slack("<!here|here> <!subteam^S01OPS><!subteam^S02DBA> <@U01ALICE><@U02BOB>"),
            "@here @S01OPS @S02DBA @U01ALICE @U02BOB"
        );
        assert_eq!(slack("<!subteam^S1|@ops><!subteam^S2>"), "@ops @S2");
        assert_eq!(slack("<#C1><#C2|ops><!channel>"), "#C1 #ops @channel");
        assert_eq!(slack("<!subteam>"), "@subteam");
        // Only two mentions in a row: text, a link or a date between them stays as it is.
        assert_eq!(slack("<@U1>,<@U2>"), "@U1,@U2");
        assert_eq!(
            slack("<@U1><https://x.example|x><@U2>"),
            "@U1<https://x.example|x>@U2"
        );
        assert_eq!(slack("<!date^1700000000^{date}|Nov 14><@U1>"), "Nov 14@U1");
    }

    #[test]
    fn a_labelled_link_in_discord_text_stays_text() {
        // Discord has no `<url|label>`: Gitea's Discord push shows a commit message as typed.
        assert_eq!(
            shown(&discord(
                "[abc1234](https://git.example/c/1) <https://evil.example|Approve> - Mallory"
            )),
            "<https://git.example/c/1|abc1234> <[WJ]https://evil.example|Approve> - Mallory"
        );
        // Discord's own `<url>` (a link without a preview) is still one.
        assert_eq!(discord("<https://x.example>"), "<https://x.example>");
    }

    #[test]
    fn labelled_broadcasts_and_masked_links_read_as_chat_shows_them() {
        assert_eq!(
            slack("<!here|here> and <!channel> <!everyone|all>"),
            "@here and @channel @everyone"
        );
        assert_eq!(slack("<!subteam^S1|@ops>"), "@ops");
        assert_eq!(
            markdown_links("see [the run](<https://ci.example/1>) now"),
            "see <https://ci.example/1|the run> now"
        );
        assert_eq!(
            discord("[docs](<https://d.example/a>)"),
            "<https://d.example/a|docs>"
        );
    }

    #[test]
    fn parentheses_that_pair_up_belong_to_the_link() {
        assert_eq!(
            markdown_links("see [Foo](https://en.wikipedia.org/wiki/Foo_(bar)) now"),
            "see <https://en.wikipedia.org/wiki/Foo_(bar)|Foo> now"
        );
        // One that does not pair up still ends the link.
        assert_eq!(
            markdown_links("([x](https://x.example/a) b)"),
            "(<https://x.example/a|x> b)"
        );
    }

    #[test]
    fn markdown_images_become_links_to_the_image() {
        assert_eq!(
            markdown_links("graph: ![CPU](https://g.example/cpu.png)!"),
            "graph: <https://g.example/cpu.png|CPU>!"
        );
        assert_eq!(
            markdown_links("![](https://g.example/a.png)"),
            "<https://g.example/a.png|image>"
        );
        assert_eq!(
            markdown_links("wow! [x](https://x.example)"),
            "wow! <https://x.example|x>"
        );
    }

    #[test]
    fn plain_markup_strips_emphasis_and_headings_only() {
        assert_eq!(
            plain("**Firing** _now_ ~gone~ ~~old~~ __big__"),
            "Firing now gone old big"
        );
        assert_eq!(
            plain("# Alert\n## Details\n#ops stays"),
            "Alert\nDetails\n#ops stays"
        );
        for kept in [
            "rate(x[5m])*100 > 0.5",
            "my_snake_case_name",
            "a * b * c",
            "2*3*4",
            "<https://x.example/a_b_c|the *link*>",
            "`*not bold*` and ```inline```",
            "path/_private_/x",
        ] {
            assert_eq!(plain(kept), kept);
        }
        assert_eq!(
            plain("see (*this*) and \"_that_\""),
            "see (this) and \"that\""
        );
        assert_eq!(
            plain("```\n**kept** in a fence\n```\n**gone**"),
            "```\n**kept** in a fence\n```\ngone"
        );
        assert_eq!(plain("rate(x)*100 and *bold*"), "rate(x)*100 and bold");
    }

    #[test]
    fn slack_tokens_become_readable_text() {
        assert_eq!(
            slack("hi <@U123|bob> and <@U9>, see <#C1|ops> <!here> <!subteam^S1|@oncall>"),
            "hi @bob and @U9, see #ops @here @oncall"
        );
        assert_eq!(
            slack(
                "<!date^1700000000^{date}|Nov 14> &lt;b&gt; &amp; <https://x.example/?a=1&amp;b=2|x &amp; y>"
            ),
            "Nov 14 <b> & <https://x.example/?a=1&b=2|x & y>"
        );
        assert_eq!(slack("<https://x.example>"), "<https://x.example>");
        assert_eq!(
            slack("a [review](https://git.example/pr/1) rate(x[5m])*100"),
            "a <https://git.example/pr/1|review> rate(x[5m])*100"
        );
    }

    #[test]
    fn a_lone_less_than_sign_is_text_and_the_link_after_it_stays_a_link() {
        // Alertmanager's and Grafana's Slack templates do not escape the text they fill in.
        assert_eq!(
            slack("Free space < 10% on /volume1\n*Graph:* <http://prom.example/g?x=1|:chart:>"),
            "Free space < 10% on /volume1\n*Graph:* <http://prom.example/g?x=1|:chart:>"
        );
        assert_eq!(
            slack("a<b, then <@U1|bob> and x <y> z > w"),
            "a<b, then @bob and x <y> z > w"
        );
        assert_eq!(slack("10:30 < 11:00 > 9:00"), "10:30 < 11:00 > 9:00");
        assert_eq!(
            discord("latency < 5 ms for <@123>, > 2 <https://x.example>"),
            "latency < 5 ms for @123, > 2 <https://x.example>"
        );
    }

    #[test]
    fn a_markdown_label_is_the_bracket_right_before_the_link() {
        assert_eq!(
            markdown_links("[FIRING:1] Disk full, see [dashboard](https://g.example/d)"),
            "[FIRING:1] Disk full, see <https://g.example/d|dashboard>"
        );
        // Gitea's Slack text: a repository link in brackets, then a Markdown link.
        assert_eq!(
            slack(
                "[<https://git.example/o/r|o/r>] approved: [#12 Fix](https://git.example/o/r/pulls/12)"
            ),
            "[<https://git.example/o/r|o/r>] approved: <https://git.example/o/r/pulls/12|#12 Fix>"
        );
        assert_eq!(
            markdown_links("[a [b](https://x.example/1) [c](https://x.example/2)"),
            "[a <https://x.example/1|b> <https://x.example/2|c>"
        );
        for kept in [
            "[x](ftp://x.example)",
            "[x](https://x.example/a b)",
            "[x\ny](https://x.example)",
            "[x] (https://x.example)",
            "[x](https://x.example",
            "]](([[",
        ] {
            assert_eq!(markdown_links(kept), kept);
        }
        assert_eq!(
            markdown_links("[é](https://x.example/é) ü"),
            "<https://x.example/é|é> ü"
        );
    }

    #[test]
    fn code_is_left_as_the_sender_typed_it() {
        // Fenced (Markdown, on lines of their own, and Slack's on one line) and inline.
        let fenced = "see [docs](https://d.example)\n```\nparse [0](https://x.example)\n```";
        assert_eq!(
            markdown_links(fenced),
            "see <https://d.example|docs>\n```\nparse [0](https://x.example)\n```"
        );
        assert_eq!(
            slack("```[0](https://x.example) &lt;b&gt;``` and <https://y.example|y>"),
            "```[0](https://x.example) <b>``` and <https://y.example|y>"
        );
        assert_eq!(
            markdown_text("`[docs](https://d.example)` [docs](https://d.example)"),
            "`[docs](https://d.example)` <https://d.example|docs>"
        );
        // (`<t:…>` has a scheme's shape: Chat would make it a link, so it gets the break.)
        assert_eq!(
            discord("```\n<@123456> <t:1700000000:R>\n``` <@123456>").replace(LINK_BREAK, "[WJ]"),
            "```\n<@123456> <[WJ]t:1700000000:R>\n``` @123456"
        );
        // A double-backtick span holds single backticks; a longer fence closes a shorter one.
        assert_eq!(
            markdown_links(
                "``a ` [x](https://x.example)`` ````\n```\n[y](https://y.example)\n````"
            ),
            "``a ` [x](https://x.example)`` ````\n```\n[y](https://y.example)\n````"
        );
        // Typed Chat links stay text in code as outside it.
        let typed = "`<https://evil.example|Approve>`";
        for converted in [markdown_text(typed), discord(typed), slack(typed)] {
            assert_eq!(
                converted.replace(LINK_BREAK, "[WJ]"),
                "`<[WJ]https://evil.example|Approve>`"
            );
        }
        // A backtick nothing closes on its line opens no code: the text after it is prose.
        assert_eq!(
            markdown_links("it`s [a](https://a.example)\nand `b` [c](https://c.example)"),
            "it`s <https://a.example|a>\nand `b` <https://c.example|c>"
        );
        assert_eq!(
            markdown_links("``` [a](https://a.example)"),
            "``` <https://a.example|a>"
        );
    }

    #[test]
    fn backtick_runs_are_read_in_one_pass() {
        // Runs of falling length, none closed: looking on from each one to the end is
        // quadratic (and cubic in the number of runs, for fences).
        let falling: String = (3..2_000)
            .rev()
            .map(|n| "`".repeat(n) + " [a](https://x) ")
            .collect();
        let started = std::time::Instant::now();
        assert_eq!(
            markdown_links(&falling).matches("<https://x|a>").count(),
            1_997
        );
        let unclosed = "`` a\n".repeat(100_000) + "``";
        assert_eq!(markdown_links(&unclosed), unclosed);
        // Generous: the quadratic reading took minutes.
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn many_brackets_are_read_in_one_pass() {
        // Reading on from every `[` or `](` to the end of texts like these is quadratic.
        let unclosed = "[a](https://x".repeat(40_000) + " )";
        assert_eq!(markdown_links(&unclosed), unclosed);
        let nested = "[".repeat(100_000) + "]";
        assert_eq!(markdown_links(&nested), nested);
        let opened = "<".repeat(100_000) + ">";
        assert_eq!(slack(&opened), opened);
        assert_eq!(discord(&opened), opened);
        // Openers without a closer, code and links without an end, for `plain`.
        for text in ["*a ".repeat(100_000), "<http://x ".repeat(50_000)] {
            assert_eq!(plain(&text), text);
        }
        let links = "[a](https://x.example) ".repeat(20_000);
        assert_eq!(
            markdown_links(&links)
                .matches("<https://x.example|a>")
                .count(),
            20_000
        );
    }

    #[test]
    fn plain_reads_a_line_of_many_code_spans_once() {
        // Each code span used to restart the search for the unclosed link's `>` to the end.
        let line = "<http:// *b* `a` ".repeat(180_000);
        let started = std::time::Instant::now();
        assert_eq!(plain(&line), line.replace("*b*", "b"));
        let elapsed = started.elapsed();
        assert!(elapsed < std::time::Duration::from_secs(5), "{elapsed:?}");
    }

    /// `plain` as it was: each span searched for from the start of the rest of the line.
    fn plain_reference(text: &str) -> String {
        fn span(text: &str) -> Option<(usize, usize)> {
            let mut from = 0;
            while let Some(offset) = text[from..].find(['`', '<']) {
                let start = from + offset;
                let after = &text[start + 1..];
                let end = if text[start..].starts_with('`') {
                    after.find('`')
                } else if ["http://", "https://", "mailto:"]
                    .iter()
                    .any(|scheme| after.starts_with(scheme))
                {
                    after.find('>')
                } else {
                    None
                };
                if let Some(end) = end {
                    return Some((start, start + 1 + end + 1));
                }
                from = start + 1;
            }
            None
        }
        let mut in_fence = false;
        let lines: Vec<String> = text
            .split('\n')
            .map(|line| {
                if line.trim_start().starts_with("```") {
                    in_fence = !in_fence;
                    return line.to_owned();
                }
                if in_fence {
                    return line.to_owned();
                }
                let mut out = String::new();
                let mut rest = strip_heading(line);
                while let Some((start, end)) = span(rest) {
                    out.push_str(&strip_emphasis(&rest[..start]));
                    out.push_str(&rest[start..end]);
                    rest = &rest[end..];
                }
                out + &strip_emphasis(rest)
            })
            .collect();
        lines.join("\n")
    }

    #[test]
    fn plain_agrees_with_searching_each_span_from_the_start() {
        const PIECES: [&str; 20] = [
            "<", ">", "http://", "https://", "mailto:", "`", "```", "*", "**", "_", "~", "~~", " ",
            "\n", "# ", "(", "a", "b", "é", "😀",
        ];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut below = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for _ in 0..50_000 {
            let text: String = (0..below(30))
                .map(|_| PIECES[below(PIECES.len())])
                .collect();
            assert_eq!(plain(&text), plain_reference(&text), "{text:?}");
        }
    }

    #[test]
    fn discord_tokens_become_readable_text() {
        assert_eq!(
            discord("<@123> <@!4> <@&5> <#6> <:party:7> <a:wave:8> <t:0:R> <b>"),
            "@123 @4 @role-5 #6 :party: :wave: 1970-01-01 00:00 UTC <b>"
        );
    }

    #[test]
    fn colours_become_markers() {
        assert_eq!(color_marker("danger"), Some("🔴"));
        assert_eq!(color_marker("#E01E5A"), Some("🔴"));
        assert_eq!(color_marker("#2EB67D"), Some("🟢"));
        assert_eq!(color_marker("#ECB22E"), Some("🟡"));
        assert_eq!(color_marker("#439FE0"), Some("🔵"));
        assert_eq!(color_marker("#808080"), None);
        assert_eq!(color_marker("nonsense"), None);
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13 UTC");
        assert_eq!(rfc3339("2024-05-01T12:34:56.789Z"), "2024-05-01 12:34 UTC");
        assert_eq!(
            rfc3339("2024-05-01T12:34:56+02:00"),
            "2024-05-01T12:34:56+02:00"
        );
    }

    #[test]
    fn a_malformed_time_is_kept_as_sent() {
        // A multi-byte character where the minutes end, and other shapes that only look alike.
        for time in [
            "2024-05-01T12:3é:56Z",
            "ééééé-01T12:34:56Z",
            "2024-05-01 12:34:56Z",
            "2024-05-01T1:234:56Z",
            "Z",
        ] {
            assert_eq!(rfc3339(time), time);
        }
    }
}
