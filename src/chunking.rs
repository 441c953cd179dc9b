//! Long messages as several consecutive posts. DSM refuses an over-long message with 410
//! "message too long" but does not document the threshold (upstream/PROTOCOL.md [C2]), so texts
//! longer than `delivery.max_message_chars` are split before sending, and a part DSM still
//! refuses is split further.
//!
//! [`split_message`] is pure. Its contract:
//! - lengths are counted in Unicode scalar values (`char`s);
//! - no part ends inside a user-perceived character: every break is an extended grapheme
//!   cluster boundary (Unicode UAX #29), so an emoji ZWJ sequence (👨‍👩‍👧), a flag (a pair of
//!   regional indicators), a letter with combining marks (e + U+0301), an emoji with a skin-tone
//!   modifier or a variation selector stays in one part. Only a single cluster longer than
//!   `max_chars` (which no real text has at the default) is cut inside, as nothing else can be
//!   done;
//! - every part has at most `max_chars` characters and is non-empty;
//! - the parts, concatenated, are exactly the input (the whitespace at a break stays at the
//!   **end of the part before it**; a part may end with `"\n\n"`), with one exception: a
//!   fenced code block longer than a part is closed at the end of each part it is cut in and
//!   opened again, with its opening line (and its language), at the start of the next, so
//!   every post shows code as code. Nothing else is added or removed;
//! - breaks fall, by preference, after a blank line (paragraph), after a new line, after any
//!   whitespace but a no-break space (word); a break before a chosen position of the first two kinds is only taken
//!   when it leaves the part at least half full, so a text is not cut into crumbs;
//! - no break falls inside a Chat link or token written `<…>` (`<https://url|label with
//!   spaces>`), unless that link alone is longer than `max_chars`;
//! - nor inside a fenced code block (CommonMark's: from a line opening one with three or more
//!   backticks or tildes to the line closing it; "```x``` text" is inline code) when a break outside it is possible and the block fits in a part: a break
//!   inside would leave one part's fence open and make the next part's closing fence open one.
//!   A block longer than a part breaks between its lines where it can (never inside its
//!   opening or closing line), and is closed and opened again there;
//! - only a text without any usable break point is cut in the middle of a word, at the last
//!   grapheme cluster boundary that fits; so is a word longer than a part (a token, a hash),
//!   which fills the part it starts in rather than leaving it holding only the text before
//!   it. A link (a Chat link, or an address after its scheme's `://`) still starts a part of
//!   its own.

use std::future::Future;

use unicode_segmentation::UnicodeSegmentation;

/// The default of `delivery.max_message_chars`: the figure ACE's Chat client splits at as a
/// safety margin below DSM's undocumented limit (upstream/PROTOCOL.md [C3]).
pub const DEFAULT_MAX_MESSAGE_CHARS: usize = 1800;

/// The pause before a rate-limited part is sent again (DSM allows about one post a second per
/// token).
pub const PACE: std::time::Duration = std::time::Duration::from_millis(1100);
/// How often one rate-limited part is sent again before giving up.
const MAX_PACED_RETRIES: u32 = 5;

/// The smallest part the 410 re-split goes down to; a DSM refusing even this is reported.
pub(crate) const MIN_RESPLIT_CHARS: usize = 50;

/// A part DSM refused as too long (410), as parts of at most half its characters (or half of
/// `limit`, the part's limit so far, when that is less), where [`split_message`] breaks
/// (whitespace, never inside a `<url|label>` link when it can help it, never inside a
/// character), with the new limit. Parts of only white space are dropped, as at enqueue (DSM
/// refuses blank messages). `None` below [`MIN_RESPLIT_CHARS`]: a 410 that halving down to
/// there did not end is about the content, and would end in a run of tiny fragments. The
/// synchronous path and the outbox both halve this way.
pub fn halve(part: &str, limit: usize) -> Option<(Vec<String>, usize)> {
    let chars = part.chars().count().min(limit);
    if chars / 2 < MIN_RESPLIT_CHARS {
        return None;
    }
    Some((halves(part, chars), chars.div_ceil(2)))
}

fn halves(part: &str, chars: usize) -> Vec<String> {
    split_message(part, chars.div_ceil(2))
        .into_iter()
        .filter(|p| !crate::domain::is_blank(p))
        .collect()
}

/// The default of `delivery.max_message_parts`: 20 posts of 1,800 characters is 36,000
/// characters, about where Slack starts cutting a message (40,000), and a minute of one
/// token's pace at most.
pub const DEFAULT_MAX_MESSAGE_PARTS: usize = 20;

/// How a text is cut into posts: each of at most `max_chars` characters
/// (`delivery.max_message_chars`), at most `max_parts` of them for one message
/// (`delivery.max_message_parts`), so one caller's text cannot hold a channel's turn for hours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartLimits {
    pub max_chars: usize,
    pub max_parts: usize,
}

/// A message's text as the posts it is sent as, none of them blank, within [`PartLimits`]:
/// made only by [`PartLimits::split`] or [`PartLimits::split_cutting`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parts(Vec<String>);

impl Parts {
    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

/// A text longer than one message may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the text would be {parts} posts of at most {max_chars} characters, and one message is at \
     most {max_parts} posts (delivery.max_message_parts); send it as several messages"
)]
pub struct TooManyParts {
    pub parts: usize,
    pub max_chars: usize,
    pub max_parts: usize,
}

impl PartLimits {
    /// `text`'s posts, or why it is too long to send.
    pub fn split(self, text: &str) -> Result<Parts, TooManyParts> {
        let parts = self.non_blank_parts(text);
        if parts.len() > self.max_parts {
            return Err(TooManyParts {
                parts: parts.len(),
                max_chars: self.max_chars,
                max_parts: self.max_parts,
            });
        }
        Ok(Parts(parts))
    }

    /// `text`'s posts, for a sender that cannot be asked to shorten it (a hook's tool): past
    /// `max_parts`, the rest is left out and the last post says how many of the text's
    /// characters were. A cut text is split with room for that note in every part, so the last
    /// one holds its note within `max_chars`. Answers the posts and the characters left out.
    pub fn split_cutting(self, text: &str) -> (Parts, usize) {
        let parts = self.non_blank_parts(text);
        if parts.len() <= self.max_parts {
            return (Parts(parts), 0);
        }
        let chars: Vec<char> = text.chars().collect();
        // Room for the note with the largest number it could hold.
        let room = self
            .max_chars
            .saturating_sub(cut_note(chars.len()).chars().count())
            .max(1);
        let (mut kept, mut end) = (Vec::new(), 0);
        for part in plan_parts(text, &chars, room) {
            let rendered = part.render(&chars);
            if crate::domain::is_blank(&rendered) {
                continue;
            }
            end = part.range.end;
            kept.push(rendered);
            if kept.len() == self.max_parts {
                break;
            }
        }
        let left_out = chars.len() - end;
        if let Some(last) = kept.last_mut() {
            last.push_str(&cut_note(left_out));
        }
        (Parts(kept), left_out)
    }

    fn non_blank_parts(self, text: &str) -> Vec<String> {
        let mut parts = split_message(text, self.max_chars);
        parts.retain(|part| !crate::domain::is_blank(part));
        parts
    }
}

/// What ends the last post of a cut message.
fn cut_note(left_out: usize) -> String {
    format!("\n\n… ({left_out} more characters not shown)")
}

/// Splits `text` into consecutive parts of at most `max_chars` characters (see the module
/// documentation for where breaks fall). `max_chars` of 0 is treated as 1.
pub fn split_message(text: &str, max_chars: usize) -> Vec<String> {
    // A text of at most `max_chars` bytes has at most as many characters: one part, as the
    // plan would make it, without the plan's work (every short message takes this way).
    if text.len() <= max_chars.max(1) {
        return vec![text.to_owned()];
    }
    let chars: Vec<char> = text.chars().collect();
    plan_parts(text, &chars, max_chars)
        .into_iter()
        .map(|part| part.render(&chars))
        .collect()
}

/// One part: a range of the text, with the fence it reopens before it and the fence marker
/// that closes it after, when it falls inside a fenced block longer than a part.
#[derive(Debug, Clone, PartialEq)]
struct Part {
    range: std::ops::Range<usize>,
    /// The block's opening line (`[start, end)`, its line break included), written first.
    reopen: Option<Span>,
    /// The block's backtick run (`[start, end)`), written after the part on a line of its own.
    close: Option<Span>,
}

impl Part {
    fn render(&self, chars: &[char]) -> String {
        let mut part = String::new();
        if let Some((s, e)) = self.reopen {
            part.extend(&chars[s..e]);
        }
        part.extend(&chars[self.range.clone()]);
        if let Some((s, e)) = self.close {
            if !part.ends_with('\n') {
                part.push('\n');
            }
            part.extend(&chars[s..e]);
        }
        part
    }
}

/// The parts of `chars`, in order (see [`split_message`]).
fn plan_parts(text: &str, chars: &[char], max_chars: usize) -> Vec<Part> {
    let max_chars = max_chars.max(1);
    let links = link_spans(chars);
    // A link longer than a part cannot be kept whole: it breaks between words like any text
    // (the fallback below still starts it on a part of its own when it has no space).
    let whole_links: Vec<Span> = links
        .iter()
        .copied()
        .filter(|&(s, e)| e - s <= max_chars)
        .collect();
    let fences = fences(chars);
    let long: Vec<LongFence> = fences
        .iter()
        .filter(|f| f.span.1 - f.span.0 > max_chars)
        .filter_map(|f| LongFence::of(chars, f, max_chars))
        .collect();
    let mut keep: Vec<Span> = fences
        .iter()
        .map(|f| f.span)
        .filter(|&(s, e)| e - s <= max_chars)
        .collect();
    // A long block breaks in its body: never in its opening line or right after it (a part
    // ending with an empty block, the next one's body without its fence), and not inside its
    // closing line where another break will do.
    let opening_lines: Vec<Span> = long.iter().map(|f| (f.span.0, f.open_end + 1)).collect();
    keep.extend(
        long.iter()
            .filter(|f| f.close_start < f.span.1)
            .map(|f| (f.close_start - 1, f.span.1)),
    );
    let breaks = Breaks {
        clusters: cluster_boundaries(text, chars.len()),
        in_link: inside(&whole_links, chars.len()),
        in_fence: inside(&keep, chars.len()),
        in_opening_line: inside(&opening_lines, chars.len()),
        links,
    };
    let mut parts = Vec::new();
    let mut start = 0;
    let mut reopen: Option<&LongFence> = None;
    loop {
        let prefix = reopen.map_or(0, |f| f.open_end - f.span.0);
        let mut budget = max_chars - prefix;
        if chars.len() - start <= budget {
            break;
        }
        // Room for the closing marker when the part could end inside a long block's body: the
        // longest of the blocks it could end in (room for only the first one's let a part
        // ending in a later block with a longer fence run pass `max_chars`).
        let close_room = long
            .iter()
            .skip(long.partition_point(|f| f.close_start <= start))
            .take_while(|f| f.open_end < start + budget)
            .map(LongFence::close_len)
            .max();
        if let Some(room) = close_room {
            // Never all of it: the opening line and the close each take at most half a part.
            budget = budget.saturating_sub(room).max(1);
        }
        let end = start + break_within(&chars[start..], budget, &breaks, start);
        let inside_body = long
            .get(long.partition_point(|f| f.close_start <= end))
            .filter(|f| f.open_end < end);
        parts.push(Part {
            range: start..end,
            reopen: reopen.map(LongFence::opening_line),
            close: inside_body.map(|f| f.marker),
        });
        reopen = inside_body;
        start = end;
    }
    if start < chars.len() || parts.is_empty() {
        parts.push(Part {
            range: start..chars.len(),
            reopen: reopen.map(LongFence::opening_line),
            close: None,
        });
    }
    parts
}

/// A fenced block longer than a part, which is closed and reopened where it is cut.
struct LongFence {
    /// The whole block, `[start, end)`.
    span: Span,
    /// The end of its opening line (after its line break).
    open_end: usize,
    /// The start of its closing line (`span.1` for a block left open).
    close_start: usize,
    /// Its fence run (backticks or tildes), which closes it.
    marker: Span,
}

impl LongFence {
    /// `None` for a block whose opening line takes too much of a part to be repeated (the
    /// block is then cut like any text).
    fn of(chars: &[char], block: &Fence, max_chars: usize) -> Option<Self> {
        let (start, end) = block.span;
        let open_end = chars[start..end]
            .iter()
            .position(|&c| c == '\n')
            .map_or(end, |i| start + i + 1);
        let fence = LongFence {
            span: block.span,
            open_end,
            close_start: block.close_start.unwrap_or(end),
            marker: block.marker,
        };
        let overhead = (open_end - start) + fence.close_len();
        (open_end < end && overhead <= max_chars / 2).then_some(fence)
    }

    fn opening_line(&self) -> Span {
        (self.span.0, self.open_end)
    }

    /// The characters a close adds at most: a line break and the backtick run.
    fn close_len(&self) -> usize {
        1 + self.marker.1 - self.marker.0
    }
}

/// Where a text may break, by character position (each `len + 1` long), worked out once: a
/// part's search looks up each candidate, where scanning the spans for each one made a text of
/// many links cost the square of its length.
struct Breaks {
    /// An extended grapheme cluster boundary.
    clusters: Vec<bool>,
    /// Strictly inside a `<…>` link that fits in a part, or a fenced block that does.
    in_link: Vec<bool>,
    in_fence: Vec<bool>,
    /// In the opening line of a block longer than a part, or right after it: never a break.
    in_opening_line: Vec<bool>,
    /// Every link span, in order.
    links: Vec<Span>,
}

/// `result[p]`: `p` falls strictly inside one of `spans` (which do not overlap).
fn inside(spans: &[Span], len: usize) -> Vec<bool> {
    let mut mask = vec![false; len + 1];
    for &(s, e) in spans {
        mask[s + 1..e].fill(true);
    }
    mask
}

/// `result[i]`: whether a part may end before character `i`, i.e. `i` is an extended grapheme
/// cluster boundary (`0` and `len` always are).
fn cluster_boundaries(text: &str, len: usize) -> Vec<bool> {
    let mut boundaries = vec![false; len + 1];
    let mut at = 0;
    for cluster in text.graphemes(true) {
        boundaries[at] = true;
        at += cluster.chars().count();
    }
    boundaries[len] = true;
    boundaries
}

/// Where to end the part starting at `offset` (relative to `window`, `1..=max`).
fn break_within(window: &[char], max: usize, breaks: &Breaks, offset: usize) -> usize {
    let boundary = |p: usize| breaks.clusters[p + offset] && !breaks.in_opening_line[p + offset];
    let half = max.div_ceil(2);
    // Break after position p-1: the candidates from the end of the window backwards.
    let best = |class: fn(&[char], usize) -> bool, min: usize, keep_fences: bool| {
        (min.max(1)..=max).rev().find(|&p| {
            class(window, p)
                && boundary(p)
                && !breaks.in_link[p + offset]
                && !(keep_fences && breaks.in_fence[p + offset])
        })
    };
    let paragraph = |w: &[char], p: usize| p >= 2 && w[p - 1] == '\n' && w[p - 2] == '\n';
    let line = |w: &[char], p: usize| w[p - 1] == '\n';
    // A no-break space asks for no break (`12 km`, `10 000`).
    let word = |w: &[char], p: usize| {
        w[p - 1].is_whitespace() && !matches!(w[p - 1], '\u{a0}' | '\u{2007}' | '\u{202f}')
    };
    // A word longer than a part is cut whatever happens: starting it on a part of its own would
    // leave this one holding only the text before it (`see ` and a 5,000-character token). It
    // fills this part instead, but for a link, which starts its own (below).
    let cut_anyway = |p: usize| {
        window[p..]
            .iter()
            .take_while(|c| !c.is_whitespace())
            .nth(max)
            .is_some()
            && breaks
                .links
                .binary_search_by_key(&(p + offset), |&(s, _)| s)
                .is_err()
            && !begins_with_scheme(&window[p..])
    };
    for keep_fences in [true, false] {
        if let Some(p) =
            best(paragraph, half, keep_fences).or_else(|| best(line, half, keep_fences))
        {
            return p;
        }
        if let Some(p) = best(word, 1, keep_fences) {
            if !cut_anyway(p) {
                return p;
            }
            let fill = (p + 1..=max).rev().find(|&q| {
                boundary(q)
                    && !breaks.in_link[q + offset]
                    && !(keep_fences && breaks.in_fence[q + offset])
            });
            return fill.unwrap_or(p);
        }
    }
    // No whitespace: cut before a link the limit would cut, else at the last cluster boundary
    // within the limit (a lone cluster longer than the limit is cut at the limit).
    let cut = max + offset;
    let link_start = breaks
        .links
        .partition_point(|&(s, _)| s < cut)
        .checked_sub(1)
        .and_then(|last| breaks.links.get(last))
        .filter(|&&(_, e)| e > cut)
        .map(|&(s, _)| s);
    match link_start {
        Some(s) if s > offset && boundary(s - offset) => s - offset,
        _ => (1..=max).rev().find(|&p| boundary(p)).unwrap_or(max),
    }
}

/// A character range `[start, end)` to keep in one part.
type Span = (usize, usize);

/// A fenced code block: `span` `[start, end)` from the start of its opening line to the end of
/// its closing line (its line break included), or to the end of the text when left open.
#[derive(Debug, PartialEq)]
struct Fence {
    span: Span,
    /// The opening line's run of backticks or tildes.
    marker: Span,
    /// Where its closing line starts; `None` for a block left open.
    close_start: Option<usize>,
}

/// The fenced code blocks of `chars`, as CommonMark reads them: a line of at most three
/// spaces, then three or more backticks or tildes, opens one (after backticks, no backtick on
/// the rest of the line: "```x``` is code" is inline code, not a fence); the first later line
/// of at least as many of the same character with nothing but blanks after them closes it.
fn fences(chars: &[char]) -> Vec<Fence> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, Span)> = None;
    let mut line_start = 0;
    while line_start < chars.len() {
        let line_end = chars[line_start..]
            .iter()
            .position(|&c| c == '\n')
            .map_or(chars.len(), |i| line_start + i + 1);
        let line = &chars[line_start..line_end];
        let indent = line.iter().take_while(|&&c| c == ' ').count();
        let run_char = line.get(indent).copied().filter(|&c| c == '`' || c == '~');
        let run = run_char.map_or(0, |c| {
            line[indent..].iter().take_while(|&&x| x == c).count()
        });
        if indent <= 3 && run >= 3 {
            let rest = &line[indent + run..];
            let marker = (line_start + indent, line_start + indent + run);
            match open {
                None if run_char != Some('`') || !rest.contains(&'`') => {
                    open = Some((line_start, marker));
                }
                Some((start, opener))
                    if chars[opener.0] == line[indent]
                        && run >= opener.1 - opener.0
                        && rest.iter().all(|c| matches!(c, ' ' | '\t' | '\r' | '\n')) =>
                {
                    blocks.push(Fence {
                        span: (start, line_end),
                        marker: opener,
                        close_start: Some(line_start),
                    });
                    open = None;
                }
                _ => {}
            }
        }
        line_start = line_end;
    }
    if let Some((start, marker)) = open {
        blocks.push(Fence {
            span: (start, chars.len()),
            marker,
            close_start: None,
        });
    }
    blocks
}

/// Character spans `[start, end)` of Chat links (`<scheme:…|label>`) and tokens (`<@…>`, `<#…>`,
/// `<!…>`) on one line, to keep whole; any other `<` is text (`x<y … =>` is no link).
fn link_spans(chars: &[char]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '<'
            && opens_link_or_token(&chars[i + 1..])
            && let Some(len) = chars[i + 1..]
                .iter()
                .take_while(|&&c| c != '\n' && c != '<')
                .position(|&c| c == '>')
        {
            spans.push((i, i + len + 2));
            i += len + 2;
        } else {
            i += 1;
        }
    }
    spans
}

/// Whether `chars` start with a URL's scheme and `://` (a bare address, which Chat shows as a
/// link).
fn begins_with_scheme(chars: &[char]) -> bool {
    let scheme = chars
        .iter()
        .take(16)
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        .count();
    scheme > 0 && chars[0].is_ascii_alphabetic() && chars[scheme..].starts_with(&[':', '/', '/'])
}

/// Whether the text after a `<` starts a Chat link (a URL scheme and `:`) or a token.
fn opens_link_or_token(after: &[char]) -> bool {
    match after.first() {
        Some('@' | '#' | '!') => true,
        Some(c) if c.is_ascii_alphabetic() => {
            after
                .iter()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
                == Some(&':')
        }
        _ => false,
    }
}

/// What sending one part can answer.
pub enum PartOutcome<T, E> {
    Sent(T),
    /// DSM refused the part as too long (410): split it further and try again.
    TooLong(E),
    /// DSM is rate-limiting (411). After the first part this is the gateway's own burst: the
    /// part is sent again after [`PACE`] (a few times); on the first part it is the caller's.
    RateLimited(E),
    Failed(E),
}

/// A send that stopped at a part: the failure, what the parts sent before it returned (they
/// stay posted, so the caller must be told), their texts, and the texts not sent, the failed
/// part first: together the message as it was being sent, for the outbox to finish.
#[derive(Debug)]
pub struct Stopped<T, E> {
    pub error: E,
    pub sent: Vec<T>,
    pub done: Vec<String>,
    pub left: Vec<String>,
}

/// Sends `parts` as consecutive posts, in order, through `send`. A part
/// DSM refuses as too long is split in half-size parts and those are sent instead, down to
/// [`MIN_RESPLIT_CHARS`]; a later part DSM rate-limits is paced; any other failure stops, with
/// what the earlier parts returned. Parts that are only whitespace are not sent (DSM refuses
/// blank messages). Answers what each sent part returned, in order.
pub async fn send_in_parts<T, E, F, Fut>(
    parts: Parts,
    max_chars: usize,
    mut send: F,
) -> Result<Vec<T>, Stopped<T, E>>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = PartOutcome<T, E>>,
{
    let mut sent = Vec::new();
    let mut done = Vec::new();
    // A stack of (part, its limit), next part on top, so re-split parts keep their order.
    let mut pending: Vec<(String, usize)> = parts
        .into_vec()
        .into_iter()
        .rev()
        .map(|part| (part, max_chars))
        .collect();
    let mut paced = 0;
    while let Some((part, limit)) = pending.pop() {
        // Blank as the message's own check has it (ASCII blanks): a part of other white space
        // (U+00A0, U+3000) is sent like any text, never silently dropped.
        if crate::domain::is_blank(&part) {
            continue;
        }
        // The failure, with the parts sent and the parts left (this one first).
        let stop = |error, sent, done, part, pending: Vec<(String, usize)>| {
            let left = std::iter::once(part)
                .chain(pending.into_iter().rev().map(|(p, _)| p))
                .collect();
            Err(Stopped {
                error,
                sent,
                done,
                left,
            })
        };
        match send(part.clone()).await {
            PartOutcome::Sent(value) => {
                sent.push(value);
                done.push(part);
                paced = 0;
            }
            PartOutcome::RateLimited(error) => {
                if sent.is_empty() || paced >= MAX_PACED_RETRIES {
                    return stop(error, sent, done, part, pending);
                }
                paced += 1;
                pending.push((part, limit));
                tokio::time::sleep(PACE).await;
            }
            PartOutcome::TooLong(error) => {
                let Some((halves, smaller)) = halve(&part, limit) else {
                    return stop(error, sent, done, part, pending);
                };
                tracing::warn!(
                    chars = part.chars().count(),
                    next_limit = smaller,
                    "DSM refused a message part as too long; splitting it further (lower delivery.max_message_chars)"
                );
                pending.extend(halves.into_iter().rev().map(|p| (p, smaller)));
            }
            PartOutcome::Failed(error) => return stop(error, sent, done, part, pending),
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halving_keeps_every_character_and_prefers_whitespace() {
        let parts = halves("one two three four", "one two three four".chars().count());
        assert_eq!(parts.concat(), "one two three four");
        assert!(parts.len() >= 2 && parts.iter().all(|p| p.chars().count() <= 9));
        assert!(parts[0].ends_with(' '), "{parts:?}");
        let parts = halves("ééééé", "ééééé".chars().count());
        assert_eq!(parts.concat(), "ééééé");
        assert!(parts.iter().all(|p| p.chars().count() <= 3), "{parts:?}");
        assert!(halve("x", usize::MAX).is_none());
        // Not below the floor: halves of 50 characters, no fewer.
        assert!(halve(&"x".repeat(99), usize::MAX).is_none());
        assert!(halve(&"x ".repeat(50), usize::MAX).unwrap().0.len() >= 2);
        // A part's own limit halves when it is less than its length.
        assert_eq!(halve(&"x ".repeat(200), 120).unwrap().1, 60);
    }

    #[test]
    fn halving_drops_parts_of_only_white_space() {
        // Halves of 21: "x…\n\n" (a paragraph), then ten spaces (a word break before the y's).
        let chunk = format!("{}\n\n{}{}", "x".repeat(10), " ".repeat(10), "y".repeat(20));
        let parts = halves(&chunk, chunk.chars().count());
        assert!(parts.iter().all(|p| !p.trim().is_empty()), "{parts:?}");
        assert_eq!(parts, [format!("{}\n\n", "x".repeat(10)), "y".repeat(20)]);
    }

    #[test]
    fn halving_keeps_a_link_whole() {
        // The middle (character 39 of 78) falls inside the link (25..60), between two words.
        let text = "Disk full on nas-01, see <https://g.example/d|the dashboard> and act on it now";
        let parts = halves(text, text.chars().count());
        assert_eq!(parts.concat(), text);
        assert!(parts.iter().all(|p| p.chars().count() <= 39), "{parts:?}");
        assert!(
            parts
                .iter()
                .any(|p| p.contains("<https://g.example/d|the dashboard>")),
            "{parts:?}"
        );
    }

    fn check_invariants(text: &str, max: usize) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        let plan = plan_parts(text, &chars, max);
        let parts = split_message(text, max);
        let rendered: Vec<String> = plan.iter().map(|p| p.render(&chars)).collect();
        assert_eq!(rendered, parts);
        let mut at = 0;
        for part in &plan {
            assert_eq!(
                part.range.start, at,
                "parts must follow each other: {plan:?}"
            );
            assert!(part.range.end > part.range.start || text.is_empty());
            at = part.range.end;
        }
        assert_eq!(at, chars.len(), "the parts must cover the text");
        if plan.iter().all(|p| p.reopen.is_none() && p.close.is_none()) {
            assert_eq!(parts.concat(), text, "parts must join back to the text");
        }
        for part in &parts {
            assert!(part.chars().count() <= max, "part over {max}: {part:?}");
            assert!(!part.is_empty() || text.is_empty());
        }
        parts
    }

    /// How many lines of `part` are fence lines (three backticks after any spaces).
    fn fence_lines(part: &str) -> usize {
        part.lines()
            .filter(|line| line.trim_start_matches(' ').starts_with("```"))
            .count()
    }

    /// A deterministic generator from `seed`: each call picks a number below its argument.
    fn pseudo_random(seed: u64) -> impl FnMut(usize) -> usize {
        let mut state = seed;
        move |n| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as usize) % n
        }
    }

    /// A deterministic pseudo-random text with words, lines, paragraphs, links, multi-byte
    /// characters and emoji.
    fn sample_text(seed: u64, len_chars: usize) -> String {
        let words = [
            "deploy",
            "ünïcode",
            "✓",
            "🚀",
            "100%",
            "&amp;",
            "<https://example.org/a?b=c|the report with spaces>",
            "<@U123|bob>",
            "backup",
            "日本語テキスト",
            "x",
        ];
        let seps = [" ", " ", " ", " ", "\n", "\n\n", "  "];
        let mut next = pseudo_random(seed);
        let mut text = String::new();
        while text.chars().count() < len_chars {
            text.push_str(words[next(words.len())]);
            text.push_str(seps[next(seps.len())]);
        }
        text
    }

    #[test]
    fn a_6000_character_message_splits_into_ordered_parts_that_join_back() {
        for seed in 0..40 {
            let text = sample_text(seed, 6000);
            for max in [60, 200, 1800, 2000] {
                let parts = check_invariants(&text, max);
                assert!(parts.len() >= text.chars().count().div_ceil(max));
            }
        }
    }

    #[test]
    fn a_code_block_that_fits_is_not_split() {
        let block = "```\nfn main() {\n    println!(\"hi\");\n}\n```\n";
        let text = format!("Build failed at this step, see the code:\n{block}and more after it");
        // A break at the limit (50) would fall in the block (40..83, 43 characters).
        let parts = check_invariants(&text, 50);
        assert!(parts.iter().any(|p| p.contains(block)), "{parts:?}");
        assert_eq!(parts[0], "Build failed at this step, see the code:\n");
        // A block longer than a part is split where it has to be, and closed and opened again.
        let long = format!("intro\n```\n{}\n```\n", "word ".repeat(30));
        let parts = check_invariants(&long, 50);
        assert!(parts.len() >= 3, "{parts:?}");
        assert!(
            parts.iter().all(|p| fence_lines(p).is_multiple_of(2)),
            "{parts:?}"
        );
        let spans = |text: &str| -> Vec<Span> {
            fences(&text.chars().collect::<Vec<_>>())
                .iter()
                .map(|f| f.span)
                .collect()
        };
        assert_eq!(spans("a\n```x\n```\nb\n  ```\nc"), [(2, 11), (13, 20)]);
        // CommonMark's rules: inline code is no fence, a longer fence holds a shorter run, a
        // closing line has nothing after its run, tildes fence too, four spaces indent code.
        assert_eq!(spans("```x``` is inline code\nmore\n"), []);
        assert_eq!(spans("````\n```\nstill code\n````\nout"), [(0, 25)]);
        assert_eq!(spans("```\n``` not a close\n```\n"), [(0, 24)]);
        assert_eq!(spans("~~~sh\nls ```\n~~~\nout"), [(0, 17)]);
        assert_eq!(spans("~~~\n```\n~~~"), [(0, 11)]);
        assert_eq!(spans("    ```\ncode\n"), []);
    }

    #[test]
    fn a_line_of_inline_code_in_triple_backticks_is_text_not_a_block() {
        let words: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
        let text = format!("```x``` is inline code\n{}\nend", words.join(" "));
        let parts = split_message(&text, 100);
        assert!(parts.len() >= 2, "{parts:?}");
        // Nothing repeated, nothing added: the parts are the text.
        assert_eq!(parts.concat(), text);
        check_invariants(&text, 100);
        // A block fenced with more backticks holds a shorter run, and is reopened with its own.
        let body: String = (0..20).map(|i| format!("```\nline {i}\n")).collect();
        let text = format!("````md\n{body}````\nafter");
        let parts = check_invariants(&text, 60);
        assert!(parts[0].starts_with("````md\n"), "{parts:?}");
        for part in &parts[..parts.len() - 1] {
            assert!(part.ends_with("\n````"), "{part:?}");
        }
        for part in &parts[1..] {
            assert!(part.starts_with("````md\n"), "{part:?}");
        }
    }

    #[test]
    fn a_code_block_longer_than_a_part_is_closed_and_opened_again_with_its_language() {
        let lines: String = (0..40).map(|i| format!("    step {i:02}: ok\n")).collect();
        let text = format!("Build log:\n```rust\n{lines}```\nThat is all.");
        let parts = check_invariants(&text, 120);
        assert!(parts.len() >= 5, "{parts:?}");
        assert!(parts[0].starts_with("Build log:\n```rust\n    step 00: ok\n"));
        assert!(parts[0].ends_with("\n```"), "{parts:?}");
        for part in &parts[1..parts.len() - 1] {
            assert!(part.starts_with("```rust\n"), "{part:?}");
            assert!(part.ends_with("\n```"), "{part:?}");
        }
        assert!(parts.last().unwrap().starts_with("```rust\n"));
        assert!(parts.last().unwrap().ends_with("```\nThat is all."));
        // Without the fences added, the parts are the text: nothing lost, nothing reordered,
        // and every cut falls between two lines of the block.
        let joined: String = parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let p = if i > 0 {
                    p.strip_prefix("```rust\n").unwrap()
                } else {
                    p
                };
                let closed = i + 1 < parts.len();
                if closed {
                    p.strip_suffix("```").unwrap()
                } else {
                    p
                }
                .to_owned()
            })
            .collect();
        assert_eq!(joined, text);
        assert!(parts.iter().all(|p| fence_lines(p) == 2), "{parts:?}");
    }

    #[test]
    fn a_long_block_left_open_is_reopened_and_left_open() {
        let text = format!("```\n{}", "x = 1\n".repeat(30));
        let parts = check_invariants(&text, 50);
        assert!(parts.len() >= 4);
        let (last, rest) = parts.split_last().unwrap();
        assert!(rest.iter().all(|p| fence_lines(p) == 2), "{parts:?}");
        assert_eq!(fence_lines(last), 1, "{last:?}");
        // A cut inside a line of the block (no line break fits) still closes it.
        let long_line = format!("```sh\n{}\n```\n", "word ".repeat(40));
        let parts = check_invariants(&long_line, 60);
        assert!(parts.iter().all(|p| fence_lines(p) == 2), "{parts:?}");
        assert!(parts[1].starts_with("```sh\n"));
    }

    #[test]
    fn texts_with_blocks_of_every_length_keep_every_part_balanced() {
        for seed in 0..60 {
            let mut next = pseudo_random(seed);
            let mut text = String::new();
            for _ in 0..6 {
                text.push_str(&sample_text(seed * 7 + next(100) as u64, 20 + next(300)));
                let (open, close) = [
                    ("\n```\n", "\n```\n"),
                    ("\n```yaml\n", "\n```\n"),
                    ("\n  ````\n", "\n  ````\n"),
                    ("\n``````````\n", "\n``````````\n"),
                ][next(4)];
                text.push_str(open);
                text.push_str(&sample_text(seed * 11 + next(100) as u64, next(700)));
                text.push_str(close);
            }
            for max in [60, 200, 500] {
                let parts = check_invariants(&text, max);
                let odd: Vec<_> = parts
                    .iter()
                    .filter(|p| !fence_lines(p).is_multiple_of(2))
                    .collect();
                assert!(odd.is_empty(), "max {max}: {odd:?} in {text:?}");
            }
        }
    }

    #[test]
    fn a_part_ending_in_a_later_block_with_a_longer_fence_still_fits() {
        // Reopening the first block, the part closes the second, whose fence run is longer:
        // room was kept for the first one's close only (25 characters at 24; found by fuzzing).
        let lines = |line: &str, n: usize| line.repeat(n);
        let text = format!(
            "```\n{}```\n`````\n{}`````\n",
            lines("x\n", 9),
            lines("b\n", 12)
        );
        check_invariants(&text, 24);
        for max in [60, 100] {
            let text = format!(
                "```\n{}```\n{fence}\n{}{fence}\n",
                lines("x\n", max / 2),
                lines("b\n", max),
                fence = "`".repeat(10)
            );
            check_invariants(&text, max);
        }
    }

    #[test]
    fn short_text_is_one_part() {
        assert_eq!(split_message("hello", 1800), ["hello"]);
        assert_eq!(split_message("", 10), [""]);
        let exact = "a".repeat(10);
        assert_eq!(split_message(&exact, 10), [exact]);
    }

    #[test]
    fn paragraphs_break_before_lines_before_words() {
        let text = "first paragraph line\nsecond line\n\nnext paragraph words";
        // Window of 40 contains a paragraph break at 34, a line break at 21, words.
        assert_eq!(
            check_invariants(text, 40),
            [
                "first paragraph line\nsecond line\n\n",
                "next paragraph words"
            ]
        );
        let lines = "one two three\nfour five six seven";
        assert_eq!(
            check_invariants(lines, 20),
            ["one two three\n", "four five six seven"]
        );
        let words = "alpha beta gamma delta";
        assert_eq!(check_invariants(words, 12), ["alpha beta ", "gamma delta"]);
    }

    #[test]
    fn an_early_paragraph_break_does_not_leave_a_crumb() {
        // The blank line is at 3 of a 30-character window: breaking there would post "ab\n\n".
        let text = format!("ab\n\n{}", "word ".repeat(10));
        let parts = check_invariants(&text, 30);
        assert!(parts[0].chars().count() > 15, "{parts:?}");
    }

    #[test]
    fn a_word_longer_than_a_part_fills_the_part_it_starts_in() {
        let token = "x".repeat(100);
        let text = format!("the token is {token} and that is all");
        let parts = check_invariants(&text, 30);
        assert_eq!(
            parts[0],
            format!("the token is {}", &token[..17]),
            "{parts:?}"
        );
        // A word that fits in a part still starts the next one.
        let parts = check_invariants(&format!("the token is {}", "y".repeat(25)), 30);
        assert_eq!(parts[0], "the token is ", "{parts:?}");
        // So does a link longer than a part (its start stays a link), bare or Chat's.
        let link = format!("https://example.com/{}", "z".repeat(60));
        let parts = check_invariants(&format!("see {link}"), 30);
        assert_eq!(parts[0], "see ", "{parts:?}");
        let parts = check_invariants(&format!("see <{link}|the-report>"), 30);
        assert_eq!(parts[0], "see ", "{parts:?}");
    }

    #[test]
    fn links_are_never_cut() {
        let link = "<https://grafana.example/d/abc?from=now-1h|open the dashboard>";
        let text = format!("alert fired {link} please look");
        for max in 20..text.chars().count() {
            let parts = check_invariants(&text, max);
            if max >= link.chars().count() {
                assert!(
                    parts.iter().any(|p| p.contains(link)),
                    "max {max}: {parts:?}"
                );
            }
        }
    }

    #[test]
    fn a_text_of_many_links_is_split_in_one_pass() {
        // Every space inside a link: looking through all the links for every candidate break
        // took the square of the length (minutes for a hook's 5 MB body).
        let text = "<@a b>".repeat(60_000);
        let parts = check_invariants(&text, DEFAULT_MAX_MESSAGE_CHARS);
        assert!(
            parts.iter().all(|p| p.starts_with("<@a b>")),
            "a link was cut"
        );
        let fenced = "```\n<@a b>\n```\n".repeat(20_000);
        check_invariants(&fenced, DEFAULT_MAX_MESSAGE_CHARS);
    }

    #[test]
    fn multi_byte_characters_are_counted_and_kept_whole() {
        let text = "é".repeat(25) + &"🚀".repeat(25);
        let parts = check_invariants(&text, 10);
        assert_eq!(parts.len(), 5);
        assert!(parts.iter().all(|p| p.chars().count() == 10));
    }

    /// Characters that cannot begin a user-perceived character: combining marks, ZWJ, variation
    /// selectors and skin-tone modifiers.
    fn continues_a_cluster(c: char) -> bool {
        matches!(c,
            '\u{0300}'..='\u{036F}' | '\u{1AB0}'..='\u{1AFF}' | '\u{20D0}'..='\u{20FF}'
            | '\u{200D}' | '\u{FE00}'..='\u{FE0F}' | '\u{E0020}'..='\u{E007F}'
            | '\u{1F3FB}'..='\u{1F3FF}')
    }

    fn regional_indicator(c: char) -> bool {
        ('\u{1F1E6}'..='\u{1F1FF}').contains(&c)
    }

    /// Splits `text` and checks the grapheme-level contract on top of [`check_invariants`].
    fn check_clusters(text: &str, max: usize) -> Vec<String> {
        let parts = check_invariants(text, max);
        let chars: Vec<char> = text.chars().collect();
        let mut at = 0;
        for part in &parts {
            if at > 0 {
                let first = part.chars().next().unwrap();
                assert!(
                    !continues_a_cluster(first),
                    "max {max}: part starts with U+{:04X}: {part:?}",
                    first as u32
                );
                // A regional indicator preceded by an odd run of them is the second of a flag.
                let before = chars[..at]
                    .iter()
                    .rev()
                    .take_while(|&&c| regional_indicator(c))
                    .count();
                assert!(
                    !(regional_indicator(first) && before % 2 == 1),
                    "max {max}: a flag is cut: {part:?}"
                );
                let byte = chars[..at].iter().map(|c| c.len_utf8()).sum::<usize>();
                assert!(
                    text.grapheme_indices(true).any(|(i, _)| i == byte),
                    "max {max}: a part starts inside a cluster: {part:?}"
                );
            }
            at += part.chars().count();
        }
        parts
    }

    /// Texts made of whole clusters, mostly without white space, as a sender's emoji-heavy
    /// alert might be.
    fn cluster_text(seed: u64, clusters: usize) -> String {
        let pool = [
            "a",
            "Z",
            "7",
            "\u{e9}",                                                       // é, precomposed
            "e\u{301}",                                                     // e + combining acute
            "a\u{301}\u{323}",                                              // two combining marks
            "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}\u{200D}\u{1F466}", // family (7 chars)
            "\u{1F3F3}\u{FE0F}\u{200D}\u{1F308}",                           // rainbow flag
            "\u{1F1E9}\u{1F1EA}",                                           // 🇩🇪
            "\u{1F1EB}\u{1F1F7}",                                           // 🇫🇷
            "\u{1F44D}\u{1F3FD}",                                           // 👍🏽
            "\u{1F469}\u{1F3FE}\u{200D}\u{1F4BB}", // woman technologist, skin tone
            "\u{2764}\u{FE0F}",                    // ❤️
            "1\u{FE0F}\u{20E3}",                   // keycap 1
            "\u{65E5}",                            // 日
            "\u{D55C}",                            // 한 (one syllable)
            "\u{1100}\u{1161}\u{11A8}",            // 각 as conjoining jamo
            "\u{1F3F4}\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}", // Scotland
            "<https://x.example/a|the label>",
            " ",
            "\n",
        ];
        let mut next = pseudo_random(seed);
        // Most texts have no white space at all, so the last-resort cut is what is tested.
        let spaced = next(4) == 0;
        let pool = if spaced {
            &pool[..]
        } else {
            &pool[..pool.len() - 3]
        };
        (0..clusters).map(|_| pool[next(pool.len())]).collect()
    }

    #[test]
    fn no_part_starts_inside_a_grapheme_cluster() {
        for seed in 0..300 {
            let text = cluster_text(seed, 40 + (seed as usize % 200));
            for max in [8, 9, 10, 13, 17, 31, 64, 100] {
                check_clusters(&text, max);
            }
        }
    }

    #[test]
    fn clusters_without_spaces_stay_whole_at_100() {
        // The audit's cases: 100-character parts of long texts with no white space.
        for cluster in [
            "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}\u{200D}\u{1F466}",
            "\u{1F1E9}\u{1F1EA}",
            "e\u{301}",
            "\u{1F44D}\u{1F3FD}",
        ] {
            let text = format!("x{}", cluster.repeat(150));
            let parts = check_clusters(&text, 100);
            assert!(parts.len() > 1);
            for part in &parts[1..] {
                assert!(part.starts_with(cluster), "{part:?}");
            }
        }
        // A single cluster longer than the limit is cut: nothing else can be done.
        let family = "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}\u{200D}\u{1F466}";
        check_invariants(family, 3);
    }

    #[test]
    fn a_text_without_spaces_is_cut_at_the_limit_but_not_inside_a_link() {
        let text = format!("{}<https://x.example/{}>", "a".repeat(15), "b".repeat(10));
        let parts = check_invariants(&text, 20);
        assert_eq!(parts[0], "a".repeat(15));
        // A link longer than the limit is cut: nothing else can be done.
        let long = format!("<https://x.example/{}>", "b".repeat(40));
        check_invariants(&long, 20);
        // With spaces in its label, it breaks between words like any text.
        let labelled = format!("<https://x.example/a|{}>", "word ".repeat(10));
        let parts = check_invariants(&labelled, 30);
        assert!(parts.iter().all(|p| !p.ends_with("wo")), "{parts:?}");
    }

    #[test]
    fn a_less_than_sign_that_opens_no_link_is_text() {
        // `x<y … =>`: the `>` of an arrow further on does not make the line one link.
        let text = format!("x<y {}=> done", "lorem ipsum ".repeat(20));
        let parts = check_invariants(&text, 100);
        assert!(parts[0].starts_with("x<y lorem"), "{parts:?}");
        assert!(
            parts
                .iter()
                .all(|p| p.ends_with(' ') || p.ends_with("done")),
            "{parts:?}"
        );
        // No break after a no-break space.
        let text = format!("{} 12345\u{a0}kmkmkmkmkm", "a".repeat(90));
        assert_eq!(check_invariants(&text, 100)[1], "12345\u{a0}kmkmkmkmkm");
        // Links and tokens are still kept whole.
        for link in [
            "<https://x.example/a b|c d>",
            "<@U1|bob smith>",
            "<#C1|ops room>",
            "<!here>",
        ] {
            let text = format!("{}{link} tail", "z".repeat(15));
            let parts = check_invariants(&text, 30);
            assert!(parts.iter().any(|p| p.contains(link)), "{link}: {parts:?}");
        }
    }

    fn limits(max_chars: usize) -> PartLimits {
        PartLimits {
            max_chars,
            max_parts: 1000,
        }
    }

    #[test]
    fn a_text_of_more_parts_than_allowed_is_refused_with_its_count() {
        let limits = PartLimits {
            max_chars: 100,
            max_parts: 3,
        };
        let text = "word ".repeat(60); // 300 characters: 3 full parts, and 4 at 99
        assert_eq!(limits.split(&text).unwrap().into_vec().concat(), text);
        let longer = "word ".repeat(61);
        let refused = limits.split(&longer).unwrap_err();
        assert_eq!((refused.parts, refused.max_parts), (4, 3));
        assert!(refused.to_string().contains("delivery.max_message_parts"));
        // Blank parts are not posted, so they are not counted.
        let spaced = format!("{}{}{}", "x".repeat(100), " ".repeat(250), "y".repeat(100));
        assert_eq!(limits.split(&spaced).unwrap().into_vec().len(), 2);
    }

    #[test]
    fn a_cut_text_keeps_its_first_parts_and_says_what_was_left_out() {
        let limits = PartLimits {
            max_chars: 100,
            max_parts: 3,
        };
        let text = "word ".repeat(60);
        assert_eq!(
            limits.split_cutting(&text),
            (limits.split(&text).unwrap(), 0)
        );
        let long = "word ".repeat(1000); // 5,000 characters
        let (parts, left_out) = limits.split_cutting(&long);
        let parts = parts.into_vec();
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.chars().count() <= 100), "{parts:?}");
        let note = format!("\n\n… ({left_out} more characters not shown)");
        assert!(parts[2].ends_with(&note), "{parts:?}");
        // What was kept and what was left out are the whole text.
        let kept = parts.concat().chars().count() - note.chars().count();
        assert_eq!(kept + left_out, 5000);
        assert!(long.starts_with(parts.concat().trim_end_matches(&note)));
    }

    #[test]
    fn a_cut_counts_the_texts_own_characters_and_keeps_links_and_the_limit() {
        let limits = PartLimits {
            max_chars: 100,
            max_parts: 2,
        };
        let note_of = |part: &str| {
            let at = part.rfind("\n\n… (").expect("a note");
            let count = part[at + "\n\n… (".len()..]
                .trim_end_matches(" more characters not shown)")
                .parse::<usize>()
                .unwrap();
            (at, count)
        };
        // A fenced block cut in parts: its added fence lines are not counted as left out.
        let code: String = (0..300).map(|i| format!("line {i}\n")).collect();
        let fenced = format!("```\n{code}```\n");
        let (parts, left_out) = limits.split_cutting(&fenced);
        let parts = parts.into_vec();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.chars().count() <= 100), "{parts:?}");
        let (_, count) = note_of(&parts[1]);
        assert_eq!(count, left_out);
        assert!(left_out < fenced.chars().count());
        // A link that fits in a part beside the note's room is not cut.
        let link = format!("<https://example.com/{}|label>", "p".repeat(20));
        let text = format!("{} {link} {}", "a".repeat(50), "tail ".repeat(100));
        let (parts, _) = limits.split_cutting(&text);
        let parts = parts.into_vec();
        let shown = parts.concat();
        assert!(
            !shown.contains("<https") || shown.contains(&link),
            "{parts:?}"
        );
        // White space left out is counted, and no post is the note alone.
        let spaced = format!(
            "{}{}{}",
            "word ".repeat(30),
            " ".repeat(500),
            "end ".repeat(30)
        );
        let (parts, left_out) = limits.split_cutting(&spaced);
        let parts = parts.into_vec();
        let (at, count) = note_of(parts.last().unwrap());
        assert!(!parts.last().unwrap()[..at].trim().is_empty(), "{parts:?}");
        let shown: usize = parts.iter().map(|p| p.chars().count()).sum::<usize>()
            - parts.last().unwrap()[at..].chars().count();
        assert_eq!(shown + count, spaced.chars().count());
        assert_eq!(count, left_out);
    }

    #[test]
    fn a_text_that_fits_is_one_part_as_the_plan_makes_it() {
        for text in [
            "x",
            "```\ncode\n```",
            "<https://a.example|a b>",
            "a\n\nb",
            "é👨‍👩‍👧",
        ] {
            let chars: Vec<char> = text.chars().collect();
            let planned: Vec<String> = plan_parts(text, &chars, text.len())
                .into_iter()
                .map(|part| part.render(&chars))
                .collect();
            assert_eq!(split_message(text, text.len()), planned, "{text:?}");
        }
    }

    #[actix_rt::test]
    async fn refused_parts_are_split_further_in_order() {
        let text = sample_text(7, 3000);
        // A "DSM" that refuses anything over 700 characters, while we start at 1800.
        let sent = send_in_parts(
            limits(1800).split(&text).unwrap(),
            1800,
            |part| async move {
                if part.chars().count() > 700 {
                    PartOutcome::TooLong("410")
                } else {
                    PartOutcome::Sent(part)
                }
            },
        )
        .await
        .unwrap();
        assert!(sent.iter().all(|p| p.chars().count() <= 700));
        assert_eq!(sent.concat(), text, "every part arrives, in order");
    }

    #[actix_rt::test]
    async fn other_failures_stop_and_a_hopeless_part_is_reported() {
        let mut calls = 0;
        let result = send_in_parts(
            limits(100).split(&"word ".repeat(100)).unwrap(),
            100,
            |_| {
                calls += 1;
                async { PartOutcome::<(), _>::Failed("down") }
            },
        )
        .await;
        assert_eq!(result.unwrap_err().error, "down");
        assert_eq!(calls, 1);
        let result = send_in_parts(limits(100).split("short text").unwrap(), 100, |_| async {
            PartOutcome::<(), _>::TooLong("410")
        })
        .await;
        assert_eq!(result.unwrap_err().error, "410");
    }

    #[actix_rt::test]
    async fn a_send_stopped_midway_names_the_parts_already_sent() {
        let mut calls = 0;
        let stopped = send_in_parts(
            limits(100).split(&"word ".repeat(100)).unwrap(),
            100,
            |part| {
                calls += 1;
                let outcome = if calls < 3 {
                    PartOutcome::Sent(part)
                } else {
                    PartOutcome::Failed("down")
                };
                async move { outcome }
            },
        )
        .await
        .unwrap_err();
        assert_eq!(stopped.error, "down");
        assert_eq!(stopped.sent.len(), 2);
        assert_eq!(stopped.done, stopped.sent);
        // Sent and left together are the message, in order.
        let (done, left) = (stopped.done.concat(), stopped.left.concat());
        assert_eq!(done + &left, "word ".repeat(100));
        assert!(stopped.left.len() > 1);
    }
}
