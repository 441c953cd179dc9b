//! A page of posts (`Post.list`) from DSM's bytes straight to the API's bytes: one pass, no
//! `Post` values, no owned strings, field names matched as bytes. On the 16 KB page of
//! `make bench` the general way (serde decode into borrowed wire posts, conversion, serde
//! encode) spent about two thirds of the gateway's instructions per request on JSON.
//!
//! DSM writes every post of a page alike, so the posts after the first are read against the
//! first post's shape ([`Shape`]): the bytes before each value (`,"type":`) are matched as one,
//! where the general way reads a key and looks it up, and a value that has been the same bytes
//! in every post so far (`"channel_id":1`, `"hashtags":[]`) is matched as a whole and taken as
//! read. A run of members that DSM spells as the API does (`{"post_id":…,"update_at":…`) is
//! copied in one piece. A post that differs is read by name from where it differs.
//!
//! The result is the document the general way writes, `{"items":[Post, ...]}` in
//! [`crate::domain::Post`]'s serialised form, byte for byte: the differential test below holds
//! the two to that on generated pages. Where this reader meets anything it does not expect (an
//! error envelope, a key with escapes, a duplicate field, an id out of range, a number that is
//! not a plain unsigned integer, invalid JSON), it gives up and the page goes the general way,
//! which decides the verdict and words the error. So it may only ever refuse more than the
//! general way, never accept more.

use serde::Serialize;

use crate::domain::Post;

/// The API's page document, by the general way (and for pages the one-pass reader gives up on).
pub(in crate::upstream) fn items_json(posts: &[Post]) -> sonic_rs::Result<Vec<u8>> {
    #[derive(Serialize)]
    struct Items<'a> {
        items: &'a [Post],
    }
    // About the page's size: no regrowth, no copy afterwards.
    let mut body = Vec::with_capacity(16 + 400 * posts.len());
    sonic_rs::to_writer(&mut body, &Items { items: posts })?;
    Ok(body)
}

/// The API's page document from a whole `Post.list` answer, with the number of posts in it,
/// or `None`: the general way decides. Also `None` for an answer of more than `limit` posts (a
/// NAS that ignores `limit`: Chat 2.4.1 answers its newest ten, PROTOCOL.md [C4]), which the
/// general way cuts to size.
pub(in crate::upstream) fn posts_page(body: &[u8], limit: usize) -> Option<(Vec<u8>, usize)> {
    // Strings are copied as they are, so the whole answer must be UTF-8 first. (simdutf8 checks
    // the mostly ASCII page in a third of std's instructions: 2,600 against 7,400.)
    simdutf8::basic::from_utf8(body).ok()?;
    let mut out = Vec::with_capacity(body.len() + 64);
    let mut r = Reader {
        b: body,
        i: 0,
        item_start: 0,
    };
    let (mut success, mut data) = (false, false);
    let mut count = 0;
    r.object(|r, key| match key {
        b"success" if !success => {
            success = true;
            r.literal(b"true")
        }
        b"data" if !data => {
            data = true;
            let mut posts = false;
            r.object(|r, key| match key {
                b"posts" if !posts => {
                    posts = true;
                    count = write_posts(r, &mut out, limit)?;
                    Some(())
                }
                b"posts" => None,
                _ => r.skip(0),
            })?;
            posts.then_some(())
        }
        b"success" | b"data" => None,
        _ => r.skip(0),
    })?;
    r.ws();
    (success && data && r.i == body.len()).then_some((out, count))
}

/// `[post, ...]` as `{"items":[...]}`, and how many; `None` for more than `limit` posts. The
/// API lists newest first: a page DSM lists oldest first is written in reverse, and one in
/// neither order goes the general way, which sorts it.
fn write_posts<'a>(r: &mut Reader<'a>, out: &mut Vec<u8>, limit: usize) -> Option<usize> {
    out.extend_from_slice(b"{\"items\":[");
    let mut shape = Shape::default();
    // Where each post begins in `out`.
    let mut starts: Vec<usize> = Vec::new();
    let mut previous: Option<&[u8]> = None;
    let mut order = None;
    r.array(|r| {
        if !starts.is_empty() {
            out.push(b',');
        }
        starts.push(out.len());
        let post_id = write_post(r, out, &mut shape)?;
        if let Some(previous) = previous {
            // Canonical digits: the shorter number is the smaller.
            let step = (post_id.len(), post_id).cmp(&(previous.len(), previous));
            if step == std::cmp::Ordering::Equal || order.is_some_and(|order| order != step) {
                return None;
            }
            order = Some(step);
        }
        previous = Some(post_id);
        Some(())
    })?;
    if order == Some(std::cmp::Ordering::Greater) {
        reverse_posts(out, &starts);
    }
    out.extend_from_slice(b"]}");
    (starts.len() <= limit).then_some(starts.len())
}

/// The posts written from `starts[0]` on (comma-separated, each beginning at its start) in the
/// reverse order: copied once into a buffer of the same capacity, which takes `out`'s place.
fn reverse_posts(out: &mut Vec<u8>, starts: &[usize]) {
    let Some(&first) = starts.first() else {
        return;
    };
    let mut reversed = Vec::with_capacity(out.capacity());
    reversed.extend_from_slice(&out[..first]);
    for k in (0..starts.len()).rev() {
        // Each post ends before the next one's comma; the last at the end.
        let end = starts.get(k + 1).map_or(out.len(), |next| next - 1);
        reversed.extend_from_slice(&out[starts[k]..end]);
        if k > 0 {
            reversed.push(b',');
        }
    }
    *out = reversed;
}

/// A string's bytes with its quotes, and whether it holds escapes.
#[derive(Clone, Copy)]
struct Str<'a> {
    quoted: &'a [u8],
    escaped: bool,
}

/// An unsigned integer as read: its digits, canonical in JSON, so they are what an encoder
/// writes for its value.
#[derive(Clone, Copy)]
struct Int<'a> {
    digits: &'a [u8],
}

/// A string member's bytes with its quotes, or a number member's digits: which one is told by
/// the member (`MESSAGE` and `TYPE` are strings). A bare slice, with no tag or flag beside it:
/// as the profile showed, copying a flag's byte with the words around it stalled the CPU on
/// every value (a store forwarded to a wider load), about a tenth of the page's time. Whether a
/// string holds escapes is kept apart ([`Fields::escaped`]).
type Scalar<'a> = &'a [u8];

/// The members of the API's post that are strings or numbers, in its order and spelling, each
/// with what comes before it. Where DSM's answer spells a run of the first eight the same way,
/// with nothing in between, that run is already the output and is copied in one piece.
const SCALARS: [&[u8]; 9] = [
    b"{\"post_id\":",
    b",\"channel_id\":",
    b",\"creator_id\":",
    b",\"message\":",
    b",\"create_at\":",
    b",\"update_at\":",
    b",\"thread_id\":",
    b",\"comment_count\":",
    // `last_comment_at` comes between in the output, when it is set.
    b",\"type\":",
];
const POST_ID: usize = 0;
const CHANNEL_ID: usize = 1;
const CREATOR_ID: usize = 2;
const MESSAGE: usize = 3;
const THREAD_ID: usize = 6;
/// Always written, and before `last_comment_at`: a run copied in one piece ends here at the latest.
const OPENING: usize = 8;
const TYPE: usize = 8;

/// The fields of `WirePost` (the general way's reader).
#[derive(Clone, Copy, PartialEq)]
enum Field {
    /// `SCALARS[k]`.
    Scalar(usize),
    LastCommentAt,
    FileProps,
    /// Read, checked and left out of the API's post.
    Other,
}

impl Field {
    fn named(key: &[u8]) -> Field {
        match key {
            b"post_id" => Field::Scalar(POST_ID),
            b"channel_id" => Field::Scalar(CHANNEL_ID),
            b"creator_id" => Field::Scalar(CREATOR_ID),
            b"message" => Field::Scalar(MESSAGE),
            b"create_at" => Field::Scalar(4),
            b"update_at" => Field::Scalar(5),
            b"thread_id" => Field::Scalar(THREAD_ID),
            b"comment_count" => Field::Scalar(7),
            b"type" => Field::Scalar(TYPE),
            b"last_comment_at" => Field::LastCommentAt,
            b"file_props" => Field::FileProps,
            _ => Field::Other,
        }
    }
}

/// How the first post of a page spelled its members. DSM writes every post of a page alike, so
/// the posts after it are read by matching these bytes, not by reading each key and looking it
/// up; a post that differs is read by name from where it differs.
#[derive(Default)]
struct Shape<'a> {
    members: Vec<Member<'a>>,
    /// The members as steps: each matches the bytes up to a value that is read, or up to the
    /// end of the post, taking the values that have stayed the same on the way as read.
    steps: Vec<Step<'a>>,
    /// The values the steps take as read, each step's in a range of its own (one buffer for
    /// them all: no allocation per step).
    kept: Vec<(usize, Scalar<'a>)>,
    /// Where the first post begins and ends.
    start: usize,
    end: usize,
    learned: bool,
    /// The first post had more than `MAX_SHAPE` members: every post is read by name.
    too_large: bool,
}

/// A first post with more members than this does not become the page's shape: DSM's posts have
/// about fifteen, and a hostile answer must not make the reader keep a member (about 150 bytes)
/// for every few bytes it sends.
const MAX_SHAPE: usize = 64;

struct Member<'a> {
    /// What comes before the value: `{"post_id":`, `,"type":`.
    before: Pattern<'a>,
    /// Where `before` begins and the value ends, in the first post.
    from: usize,
    to: usize,
    field: Field,
    /// `before` and `field` are the output's member `k`, as the output spells it.
    as_output: bool,
    /// The value, while it has been the same bytes in every post so far (`"channel_id":1`,
    /// `"hashtags":[]`): the same bytes followed by `,` or `}` are the same JSON value, already
    /// checked, so it is taken as read the first time.
    same: Option<Same<'a>>,
}

/// Members from `first` on, up to the one read (`read`) or to the end of the post.
struct Step<'a> {
    /// The first post's bytes from `first`'s `before` to `read`'s `before`, or to its end.
    bytes: Pattern<'a>,
    first: usize,
    read: Option<usize>,
    /// The values of the scalar members before `read`, the same in every post so far: a range
    /// of [`Shape::kept`].
    keeps: std::ops::Range<usize>,
    /// How many of the members before `read` lead the step spelled as the output spells them,
    /// and how many bytes they take.
    copies: usize,
    copies_len: usize,
}

impl<'a> Shape<'a> {
    /// The steps for the members as they are now; `b` holds the first post.
    fn build_steps(&mut self, b: &'a [u8]) {
        self.steps.clear();
        self.kept.clear();
        if self.too_large {
            return;
        }
        self.steps.reserve(self.members.len() + 1);
        self.kept.reserve(self.members.len());
        let mut from = self.start;
        let (mut first, mut copies, mut copies_to) = (0, 0, from);
        // Where the step being built begins in `kept`.
        let mut kept_from = 0;
        for (k, m) in self.members.iter().enumerate() {
            if let Some(same) = m.same {
                if let (Field::Scalar(field), Some(scalar)) = (m.field, same.scalar) {
                    self.kept.push((field, scalar));
                }
                if copies == k - first && m.as_output && same.as_output {
                    (copies, copies_to) = (copies + 1, m.to);
                }
                continue;
            }
            let bytes = Pattern::new(&b[from..m.from + m.before.bytes.len()]);
            let copies_len = copies_to - from;
            self.steps.push(Step {
                bytes,
                first,
                read: Some(k),
                keeps: kept_from..self.kept.len(),
                copies,
                copies_len,
            });
            (from, first, copies, copies_to) = (m.to, k + 1, 0, m.to);
            kept_from = self.kept.len();
        }
        let bytes = Pattern::new(&b[from..self.end]);
        let copies_len = copies_to - from;
        self.steps.push(Step {
            bytes,
            first,
            read: None,
            keeps: kept_from..self.kept.len(),
            copies,
            copies_len,
        });
    }
}

#[derive(Clone, Copy)]
struct Same<'a> {
    bytes: Pattern<'a>,
    scalar: Option<Scalar<'a>>,
    as_output: bool,
}

/// Bytes to find at a place, with their first eight bytes as a word: most patterns here are
/// a word or two long, and a call to `memcmp` cost more than the comparison. (Longer ones,
/// about three a post, are left to `memcmp`: compared word by word or sixteen bytes at a time
/// they took 3,800 and 7,100 more instructions a page, and no less CPU in alternated rounds.)
#[derive(Clone, Copy)]
struct Pattern<'a> {
    bytes: &'a [u8],
    head: u64,
    head_mask: u64,
}

impl<'a> Pattern<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let head = bytes
            .iter()
            .take(8)
            .enumerate()
            .fold(0, |word, (i, &b)| word | u64::from(b) << (8 * i));
        let head_mask = match bytes.len() {
            0..8 => (1 << (8 * bytes.len())) - 1,
            _ => u64::MAX,
        };
        Pattern {
            bytes,
            head,
            head_mask,
        }
    }

    /// `text` begins with the pattern.
    fn begins(&self, text: &[u8]) -> bool {
        let word = |s: &[u8], at: usize| {
            s.get(at..)?
                .first_chunk::<8>()
                .map(|w| u64::from_le_bytes(*w))
        };
        match word(text, 0) {
            Some(first) if (first ^ self.head) & self.head_mask != 0 => false,
            Some(_) if self.bytes.len() <= 8 => true,
            // The second word overlaps the first.
            Some(_) if self.bytes.len() <= 16 => {
                let last = self.bytes.len() - 8;
                word(text, last) == word(self.bytes, last)
            }
            _ => text.starts_with(self.bytes),
        }
    }
}

/// The fields read from one post, each `None` until seen once.
#[derive(Default)]
struct Fields<'a> {
    scalars: [Option<Scalar<'a>>; SCALARS.len()],
    /// Bit `k`: `scalars[k]` is a string with escapes.
    escaped: u16,
    last_comment_at: Option<Option<Int<'a>>>,
    file_props: Option<Option<(Option<Str<'a>>, Option<Int<'a>>)>>,
}

impl<'a> Fields<'a> {
    /// Reads `field`'s value; `Some(true)` if it is spelled as the output spells it.
    // Inlined into the steps, where a post's values are read: 8 % fewer instructions a page.
    #[inline(always)]
    fn read(&mut self, r: &mut Reader<'a>, field: Field) -> Option<bool> {
        match field {
            Field::Scalar(k) => {
                let at = r.i;
                let (value, as_output) = if k == MESSAGE || k == TYPE {
                    let s = r.string()?;
                    self.escaped |= u16::from(s.escaped) << k;
                    (s.quoted, !s.escaped && r.i - at == s.quoted.len())
                } else {
                    let int = r.int()?;
                    (int.digits, r.i - at == int.digits.len())
                };
                self.keep(field, Some(value))?;
                return Some(as_output);
            }
            Field::LastCommentAt => {
                let value = if r.null() {
                    Some(None)
                } else {
                    r.int().map(Some)
                };
                once(&mut self.last_comment_at, value)?;
            }
            Field::FileProps => {
                let value = if r.null() {
                    Some(None)
                } else {
                    let (mut name, mut size) = (None, None);
                    r.object(|r, key| match key {
                        b"name" => once(&mut name, r.string()),
                        b"size" => once(&mut size, r.int()),
                        _ => r.skip(1),
                    })
                    .map(|()| Some((name, size)))
                };
                once(&mut self.file_props, value)?;
            }
            Field::Other => r.skip(1)?,
        }
        Some(false)
    }

    /// Keeps a scalar field's value, read before; other fields keep nothing.
    fn keep(&mut self, field: Field, value: Option<Scalar<'a>>) -> Option<()> {
        match field {
            Field::Scalar(k) => once(&mut self.scalars[k], value),
            _ => Some(()),
        }
    }

    fn int(&self, k: usize) -> Option<Int<'a>> {
        self.scalars[k].map(|digits| Int { digits })
    }

    fn str(&self, k: usize) -> Option<Str<'a>> {
        self.scalars[k].map(|quoted| Str {
            quoted,
            escaped: self.escaped & 1 << k != 0,
        })
    }
}

/// Sets a field read once; a second occurrence gives up (serde refuses duplicate fields).
fn once<T>(slot: &mut Option<T>, value: Option<T>) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value?);
    Some(())
}

/// DSM's ids are int64 (`domain`'s id types): 1 to `i64::MAX`, 0 where an id is optional.
fn is_id(int: Option<Int<'_>>, optional: bool) -> bool {
    match int.map(|int| int.digits) {
        Some(b"0") | None => optional,
        Some(digits) => {
            digits.len() < 19 || (digits.len() == 19 && digits <= &b"9223372036854775807"[..])
        }
    }
}

/// How far a post has been read in its page's shape: `read` members, of which the first
/// `copied` are spelled as the output spells them, up to `copied_to`; `closed` once its `}` is.
struct Progress {
    read: usize,
    copied: usize,
    copied_to: usize,
    closed: bool,
}

impl Progress {
    /// Member `k` has been read, up to `end`; `as_output` if spelled as the output spells it.
    fn member(&mut self, k: usize, as_output: bool, end: usize) {
        self.read = k + 1;
        if as_output && self.copied == k {
            (self.copied, self.copied_to) = (k + 1, end);
        }
    }
}

impl<'a> Shape<'a> {
    /// Reads a post by the steps, as far as they match.
    fn read_steps(&self, r: &mut Reader<'a>, f: &mut Fields<'a>, p: &mut Progress) -> Option<()> {
        for step in &self.steps {
            if !step.bytes.begins(&r.b[r.i..]) {
                break;
            }
            let at = r.i;
            r.i += step.bytes.bytes.len();
            for &(k, scalar) in &self.kept[step.keeps.clone()] {
                once(&mut f.scalars[k], Some(scalar))?;
            }
            if p.copied == step.first {
                (p.copied, p.copied_to) = (p.copied + step.copies, at + step.copies_len);
            }
            let Some(k) = step.read else {
                (p.read, p.closed) = (self.members.len(), true);
                break;
            };
            let m = &self.members[k];
            let as_output = f.read(r, m.field)?;
            p.member(k, as_output && m.as_output, r.i);
        }
        Some(())
    }

    /// Reads on member by member from where the steps stopped, as long as the post keeps the
    /// first post's keys and order. A value that is not the same as before is read, and is no
    /// longer taken as the same in later posts.
    fn read_members(
        &mut self,
        r: &mut Reader<'a>,
        f: &mut Fields<'a>,
        p: &mut Progress,
    ) -> Option<()> {
        if p.closed {
            return Some(());
        }
        let mut changed = false;
        while let Some(m) = self.members.get_mut(p.read) {
            if !m.before.begins(&r.b[r.i..]) {
                break;
            }
            r.i += m.before.bytes.len();
            let as_output = match m.same {
                Some(same) if r.same_value(same.bytes) => {
                    f.keep(m.field, same.scalar)?;
                    same.as_output
                }
                _ => {
                    changed |= m.same.take().is_some();
                    f.read(r, m.field)?
                }
            };
            p.member(p.read, as_output && m.as_output, r.i);
        }
        if changed {
            self.build_steps(r.b);
        }
        Some(())
    }

    /// The first post's member just read: `field`, its key from `from` and its value from `at`
    /// to `r.i`; `as_output` if the value is spelled as the output spells it.
    fn learn(
        &mut self,
        r: &Reader<'a>,
        from: usize,
        at: usize,
        field: Field,
        f: &Fields<'a>,
        as_output: bool,
    ) {
        if self.members.len() == MAX_SHAPE {
            (self.too_large, self.members) = (true, Vec::new());
        }
        if self.too_large {
            return;
        }
        let k = self.members.len();
        if k == 0 {
            // DSM's posts have about fifteen members: one allocation, not four.
            self.members.reserve(16);
        }
        let before = &r.b[from..at];
        let same = match field {
            // A string with escapes is read in every post, never taken as read: what is kept
            // for later posts is its bytes alone.
            Field::Scalar(k) if f.escaped & 1 << k != 0 => None,
            Field::Scalar(k) => Some(f.scalars[k]),
            Field::Other => Some(None),
            Field::LastCommentAt | Field::FileProps => None,
        };
        self.members.push(Member {
            before: Pattern::new(before),
            from,
            to: r.i,
            field,
            as_output: k < OPENING && field == Field::Scalar(k) && before == SCALARS[k],
            same: same.map(|scalar| Same {
                bytes: Pattern::new(&r.b[at..r.i]),
                scalar,
                as_output,
            }),
        });
    }
}

/// Writes a post; answers its id's digits.
fn write_post<'a>(
    r: &mut Reader<'a>,
    out: &mut Vec<u8>,
    shape: &mut Shape<'a>,
) -> Option<&'a [u8]> {
    let mut f = Fields::default();
    let start = r.i;
    let mut p = Progress {
        read: 0,
        copied: 0,
        copied_to: start,
        closed: false,
    };
    let learning = !shape.learned;
    if !learning {
        shape.read_steps(r, &mut f, &mut p)?;
        shape.read_members(r, &mut f, &mut p)?;
    }
    // The rest by name; the first post is the page's shape.
    let mut member = |r: &mut Reader<'a>, key: &[u8]| {
        let field = Field::named(key);
        let (from, at) = (r.item_start, r.i);
        let as_output = f.read(r, field)?;
        if learning {
            shape.learn(r, from, at, field, &f, as_output);
        }
        Some(())
    };
    match p {
        Progress { closed: true, .. } => {}
        Progress { read: 0, .. } => r.object(&mut member)?,
        _ => r.rest_of_object(true, &mut member)?,
    }
    if learning {
        (shape.start, shape.end, shape.learned) = (start, r.i, true);
        shape.build_steps(r.b);
    }
    if !(is_id(f.int(POST_ID), false)
        && is_id(f.int(CHANNEL_ID), false)
        && is_id(f.int(CREATOR_ID), true)
        && is_id(f.int(THREAD_ID), true))
    {
        return None;
    }
    out.extend_from_slice(&r.b[start..p.copied_to]);
    f.write(out, p.copied)?;
    f.int(POST_ID).map(|id| id.digits)
}

impl Fields<'_> {
    /// Writes the post's members after the first `copied`, which are written already.
    fn write(&self, out: &mut Vec<u8>, copied: usize) -> Option<()> {
        // A range, not `enumerate().take().skip()`: that skips by `nth` on every post (2 % of
        // the page's instructions).
        #[allow(clippy::needless_range_loop)]
        for k in copied..OPENING {
            if k == MESSAGE {
                str_member(out, SCALARS[k], self.str(k))?;
            } else {
                int_member(out, SCALARS[k], self.int(k));
            }
        }
        if let Some(Some(at)) = self.last_comment_at {
            int_member(out, b",\"last_comment_at\":", Some(at));
        }
        str_member(out, SCALARS[TYPE], self.str(TYPE))?;
        if let Some(Some((name, size))) = self.file_props {
            str_member(out, b",\"file_props\":{\"name\":", name)?;
            int_member(out, b",\"size\":", size);
            out.push(b'}');
        }
        out.push(b'}');
        Some(())
    }
}

/// `key` (with what comes before it), then the number; an absent number is 0, as
/// `#[serde(default)]` makes it.
fn int_member(out: &mut Vec<u8>, key: &[u8], int: Option<Int<'_>>) {
    out.extend_from_slice(key);
    match int {
        Some(int) => out.extend_from_slice(int.digits),
        None => out.push(b'0'),
    }
}

/// `key` (with what comes before it), then the string; an absent string is `""`. Without escapes, the bytes between the quotes are what the encoder
/// writes (it escapes only `"`, `\` and control characters, which cannot appear unescaped); a
/// string with escapes is decoded and encoded again, as the general way does.
fn str_member(out: &mut Vec<u8>, key: &[u8], s: Option<Str<'_>>) -> Option<()> {
    out.extend_from_slice(key);
    match s {
        None => out.extend_from_slice(b"\"\""),
        Some(Str {
            quoted,
            escaped: false,
        }) => out.extend_from_slice(quoted),
        Some(Str { quoted, .. }) => {
            let text: String = sonic_rs::from_slice(quoted).ok()?;
            sonic_rs::to_writer(&mut *out, &text).ok()?;
        }
    }
    Some(())
}

/// Deeper nesting in a skipped value gives up (the decoders stop at 128 levels).
const MAX_DEPTH: u32 = 120;

/// A strict JSON reader over the answer's bytes; every method returns `None` to give up.
struct Reader<'a> {
    b: &'a [u8],
    i: usize,
    /// Where the item being read began, with the whitespace and punctuation before it.
    item_start: usize,
}

impl<'a> Reader<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.ws();
        let found = self.b.get(self.i..self.i + word.len())? == word;
        found.then(|| self.i += word.len())
    }

    /// The value here is `value`'s bytes, followed by `,` or `}` (so it is the whole value); if
    /// so it is passed.
    fn same_value(&mut self, value: Pattern<'_>) -> bool {
        let rest = &self.b[self.i..];
        let same = value.begins(rest) && matches!(rest.get(value.bytes.len()), Some(b',' | b'}'));
        if same {
            self.i += value.bytes.len();
        }
        same
    }

    fn null(&mut self) -> bool {
        self.literal(b"null").is_some()
    }

    /// `{ "key": value, ... }`, `member` reading each value. A key with escapes gives up: it
    /// could spell a field's name.
    fn object(&mut self, member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.members(true, member)
    }

    fn members(
        &mut self,
        plain_keys: bool,
        mut member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>,
    ) -> Option<()> {
        self.sequence(b'{', b'}', |r| r.member(plain_keys, &mut member))
    }

    /// What is left of an object after one of its members: `, "key": value ... }`.
    fn rest_of_object(
        &mut self,
        plain_keys: bool,
        mut member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>,
    ) -> Option<()> {
        self.rest(b'}', |r| r.member(plain_keys, &mut member))
    }

    /// `"key": value`, `member` reading the value.
    fn member(
        &mut self,
        plain_keys: bool,
        member: &mut impl FnMut(&mut Self, &'a [u8]) -> Option<()>,
    ) -> Option<()> {
        let key = self.string()?;
        if key.escaped && plain_keys {
            return None;
        }
        self.eat(b':')?;
        member(self, &key.quoted[1..key.quoted.len() - 1])
    }

    /// `[ value, ... ]`, `element` reading each value.
    fn array(&mut self, element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.sequence(b'[', b']', element)
    }

    /// `open item, ... close`, `item` reading each item: what objects and arrays share.
    fn sequence(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.item_start = self.i;
        self.eat(open)?;
        if self.eat(close).is_some() {
            return Some(());
        }
        item(self)?;
        self.rest(close, item)
    }

    /// What is left of a sequence after an item: `, item ... close`.
    fn rest(&mut self, close: u8, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        loop {
            self.item_start = self.i;
            match self.peek()? {
                b',' => self.i += 1,
                c if c == close => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
            item(self)?;
        }
    }

    fn string(&mut self) -> Option<Str<'a>> {
        self.eat(b'"')?;
        let start = self.i - 1;
        let mut escaped = false;
        loop {
            self.i += plain_run(&self.b[self.i..]);
            match *self.b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(Str {
                        quoted: self.b.get(start..self.i)?,
                        escaped,
                    });
                }
                b'\\' => {
                    escaped = true;
                    match *self.b.get(self.i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                        b'u' => {
                            let hex = self.b.get(self.i + 2..self.i + 6)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.i += 6;
                        }
                        _ => return None,
                    }
                }
                0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
    }

    /// A plain unsigned integer up to `u64::MAX`: no sign, fraction or exponent (the general
    /// way's `u64` takes no floats; a negative number gives up too, and the general way decides).
    // Inlined: the bench page has about 250 numbers to read (3 % fewer instructions a page).
    #[inline(always)]
    fn int(&mut self) -> Option<Int<'a>> {
        if !self.b.get(self.i)?.is_ascii_digit() {
            self.ws();
        }
        let start = self.i;
        self.digits();
        let digits = &self.b[start..self.i];
        let canonical = match digits {
            [] | [b'0', _, ..] => false,
            _ => {
                digits.len() < 20 || (digits.len() == 20 && digits <= &b"18446744073709551615"[..])
            }
        };
        let ends = !matches!(self.b.get(self.i), Some(b'.' | b'e' | b'E'));
        (canonical && ends).then_some(Int { digits })
    }

    /// Any JSON number, checked against the grammar.
    fn number(&mut self) -> Option<()> {
        self.ws();
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        self.i += digit_run(&self.b[self.i..]);
        // The last few bytes one at a time.
        while let Some(b'0'..=b'9') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }

    /// Any JSON value, checked, at `depth` levels of nesting.
    fn skip(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.members(false, |r, _| r.skip(depth + 1)),
            b'[' => self.array(|r| r.skip(depth + 1)),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }
}

/// How many bytes `b` begins with that may stand in a string as they are (not `"`, `\\` or a
/// control character); the last few bytes of `b` are left to the caller ([`run_before`]).
/// Strings here are message texts of a hundred bytes or so.
#[inline(always)]
fn plain_run(b: &[u8]) -> usize {
    #[cfg(target_arch = "x86_64")]
    let sixteen = |v| {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of every x86_64 CPU.
        unsafe {
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // Below 0x20: the unsigned maximum with 0x1f is 0x1f.
            let control = _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x1f)), _mm_set1_epi8(0x1f));
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
        }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let sixteen = ();
    run_before(b, sixteen, special_bytes)
}

/// How many ASCII digits `b` begins with (ids and millisecond times run to 13); the last few
/// bytes of `b` are left to the caller ([`run_before`]).
#[inline(always)]
fn digit_run(b: &[u8]) -> usize {
    #[cfg(target_arch = "x86_64")]
    let sixteen = |v| {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of every x86_64 CPU.
        unsafe {
            // A digit less '0' is 0 to 9: the unsigned minimum with 9 is itself.
            let v = _mm_sub_epi8(v, _mm_set1_epi8(b'0' as i8));
            !_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(9)), v)) as u32 & 0xffff
        }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let sixteen = ();
    run_before(b, sixteen, not_digits)
}

/// How many bytes `b` begins with before the first one marked, looked at sixteen at a time with
/// SSE2 on x86_64 (`sixteen`: a bit per byte), then eight at a time (`eight`: SWAR, the lowest
/// marked byte non-zero), so at most seven bytes at the end are not looked at. On the bench
/// page, sixteen at a time took the page's time from 6.6 to 6.1 µs (the numbers, mostly) and 11 %
/// of its instructions. (memchr's search cost more: it looks for one to three bytes, not a class,
/// and is called, not inlined.)
#[inline(always)]
fn run_before(
    b: &[u8],
    #[cfg(target_arch = "x86_64")] sixteen: impl Fn(std::arch::x86_64::__m128i) -> u32,
    #[cfg(not(target_arch = "x86_64"))] _sixteen: (),
    eight: impl Fn(u64) -> u64,
) -> usize {
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    while let Some(chunk) = b.get(i..i + 16) {
        // SAFETY: SSE2 is part of every x86_64 CPU; the load reads the 16 bytes of `chunk`.
        let marks = sixteen(unsafe { std::arch::x86_64::_mm_loadu_si128(chunk.as_ptr().cast()) });
        if marks != 0 {
            return i + marks.trailing_zeros() as usize;
        }
        i += 16;
    }
    while let Some(chunk) = b.get(i..i + 8) {
        let marks = eight(u64::from_le_bytes(chunk.try_into().unwrap_or_default()));
        if marks != 0 {
            return i + marks.trailing_zeros() as usize / 8;
        }
        i += 8;
    }
    i
}

/// The high bit of each of the eight bytes of `word` (little-endian) that is `"`, `\\` or a
/// control character (below 0x20). Bytes above the first such byte may be marked wrongly (a
/// borrow carries); the lowest mark is always right, and only it is used.
fn special_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    // Below 0x20: subtracting 0x20 borrows into the high bit of a byte that had it clear.
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    quote | backslash | control
}

/// Non-zero in each byte of `word` (little-endian) that is not an ASCII digit. Bytes above the
/// first such byte may be marked wrongly (a carry); the lowest mark is always right, and only it
/// is used.
fn not_digits(word: u64) -> u64 {
    const HIGH_NIBBLES: u64 = 0xf0f0_f0f0_f0f0_f0f0;
    const THREES: u64 = 0x3030_3030_3030_3030;
    // A digit is 0x30..=0x39: its high nibble is 3, and still 3 after adding 6.
    let outside = (word & HIGH_NIBBLES) ^ THREES;
    let above_nine = (word.wrapping_add(0x0606_0606_0606_0606) & HIGH_NIBBLES) ^ THREES;
    outside | above_nine
}

/// The general way alone (serde decode, conversion, serde encode), as `DsmClient::posts_json`
/// reads a page the one-pass reader gives up on: what the differential test and the fuzz
/// crate's `page` target hold [`posts_page`] to. `None` where the general way refuses.
pub(in crate::upstream) fn general_page(body: &[u8], limit: usize) -> Option<Vec<u8>> {
    #[derive(serde::Deserialize)]
    struct Data {
        posts: super::Posts,
    }
    let mut posts =
        crate::upstream::envelope::decode_data(body, |data: Data| data.posts.into_result())
            .ok()?
            .ok()?;
    // Newest first, as `DsmClient::posts_json` orders what it reads this way.
    posts.sort_by_key(|post| std::cmp::Reverse(post.post_id));
    items_json(&posts[..posts.len().min(limit)]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::envelope::decode_data;
    use crate::upstream::wire::Posts;

    /// Whether a page's post ids, as DSM lists them, only fall or only rise.
    fn listed_in_order(body: &[u8]) -> bool {
        #[derive(serde::Deserialize)]
        struct Data {
            posts: Posts,
        }
        let posts = decode_data(body, |data: Data| data.posts.into_result())
            .unwrap()
            .unwrap();
        let ids: Vec<_> = posts.iter().map(|post| post.post_id).collect();
        ids.windows(2).all(|w| w[0] > w[1]) || ids.windows(2).all(|w| w[0] < w[1])
    }

    #[test]
    fn the_bench_page_reads_as_the_general_way_reads_it() {
        let page = include_bytes!("../../../tests/bench/data/post_list.json");
        let (fast, count) = posts_page(page, 50).expect("the one-pass reader takes the bench page");
        assert_eq!(fast, general_page(page, 50).unwrap());
        assert_eq!(count, 50);
        // More posts than asked for (a NAS that ignores `limit`): the general way cuts them.
        assert!(posts_page(page, 49).is_none());
        let five: serde_json::Value =
            serde_json::from_slice(&general_page(page, 5).unwrap()).unwrap();
        assert_eq!(five["items"].as_array().unwrap().len(), 5);
        // DSM's page lists its posts oldest first; the API's newest first.
        assert_eq!(five["items"][4]["post_id"], 1000046);
        let items: serde_json::Value = serde_json::from_slice(&fast).unwrap();
        let ids: Vec<u64> = items["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|post| post["post_id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids, (1000001..=1000050).rev().collect::<Vec<u64>>());
    }

    /// The word comparisons agree with `starts_with`: every pattern length up to 40, every place of
    /// a first differing byte, and texts shorter than the pattern.
    #[test]
    fn a_pattern_begins_a_text_as_starts_with_says() {
        let source: Vec<u8> = (0..48u8).map(|i| b'!' + i).collect();
        for len in 0..=40 {
            let pattern = Pattern::new(&source[..len]);
            let mut text = source.clone();
            text.extend_from_slice(b",\"tail\"");
            assert!(pattern.begins(&text), "{len}: the same bytes");
            for cut in 0..len {
                assert_eq!(
                    pattern.begins(&text[..cut]),
                    text[..cut].starts_with(&source[..len]),
                    "{len}: a text of {cut} bytes"
                );
            }
            for at in 0..len {
                let mut differing = text.clone();
                differing[at] ^= 0x20;
                assert!(!pattern.begins(&differing), "{len}: byte {at} differs");
            }
        }
    }

    #[test]
    fn special_bytes_marks_the_first_quote_backslash_or_control_character_first() {
        let first = |bytes: [u8; 8]| match special_bytes(u64::from_le_bytes(bytes)) {
            0 => None,
            marks => Some(marks.trailing_zeros() / 8),
        };
        assert_eq!(first(*b"abc~\x7f\xc3\xa9 "), None);
        for at in 0..8 {
            for c in [b'"', b'\\', 0, 0x1f, b'\n'] {
                let mut bytes = *b"abcdefgh";
                bytes[at] = c;
                assert_eq!(first(bytes), Some(at as u32), "{c} at {at}");
                bytes[7] = 0;
                assert_eq!(first(bytes), Some(at as u32), "{c} at {at}, 0 at 7");
            }
            let mut bytes = *b"abcdefgh";
            bytes[at] = 0x20;
            assert_eq!(first(bytes), None);
        }
    }

    #[test]
    fn not_digits_marks_the_first_byte_that_is_not_a_digit_first() {
        let first = |bytes: [u8; 8]| match not_digits(u64::from_le_bytes(bytes)) {
            0 => None,
            marks => Some(marks.trailing_zeros() / 8),
        };
        assert_eq!(first(*b"01234567"), None);
        assert_eq!(first(*b"98765432"), None);
        for at in 0..8 {
            for &c in b"/:?@a.,}\" \0\xb9\xff" {
                let mut bytes = *b"12345678";
                bytes[at] = c;
                assert_eq!(first(bytes), Some(at as u32), "{c} at {at}");
                bytes[7] = 0xfa;
                assert_eq!(first(bytes), Some(at as u32), "{c} at {at}, 0xfa at 7");
            }
        }
    }

    /// The runs counted sixteen and eight at a time end where the first byte that does not
    /// belong is, on every length and position, and leave at most seven bytes to the caller.
    #[test]
    fn the_runs_end_at_the_first_byte_that_does_not_belong() {
        /// The bytes to draw from (the first three belong), the run, and which bytes belong.
        type Case = (&'static [u8], fn(&[u8]) -> usize, fn(u8) -> bool);
        let cases: [Case; 2] = [
            (b"a~ \x7f\xc3\xa9\"\\\0\x1f\n", plain_run, |c| {
                c >= 0x20 && c != b'"' && c != b'\\'
            }),
            (b"0123456789/:a\0 ,\xb9\xff", digit_run, |c| {
                c.is_ascii_digit()
            }),
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for (alphabet, run, belongs) in cases {
            for _ in 0..20_000 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let len = (seed % 48) as usize;
                // Mostly bytes that belong, so long runs are common.
                let bytes: Vec<u8> = (0..len)
                    .map(|i| {
                        let pick = seed.rotate_left(i as u32 * 5);
                        match pick % 8 {
                            0 => alphabet[(pick >> 8) as usize % alphabet.len()],
                            _ => alphabet[(pick >> 8) as usize % 3],
                        }
                    })
                    .collect();
                let want = bytes.iter().position(|&c| !belongs(c)).unwrap_or(len);
                let got = run(&bytes);
                assert!(
                    got <= want && (got == want || want - got < 8 && len - got < 8),
                    "{bytes:?}: {got}, not {want}"
                );
                assert!(bytes[..got].iter().all(|&c| belongs(c)), "{bytes:?}: {got}");
            }
        }
    }

    /// A first post too large to keep as the page's shape, among posts that are not: every post
    /// is read by name, as the general way reads it.
    #[test]
    fn a_first_post_with_very_many_members_is_not_kept_as_the_shape() {
        let post = |id: u32, extra: usize| {
            let extra: String = (0..extra).map(|i| format!(",\"x{i}\":[{i}]")).collect();
            format!(
                r#"{{"post_id":{id},"channel_id":1,"creator_id":2,"message":"m{id}","create_at":5,"update_at":6,"type":"normal","thread_id":0{extra}}}"#
            )
        };
        for first in [MAX_SHAPE - 8, MAX_SHAPE - 7, MAX_SHAPE, 300] {
            // The first post's members again, all but its id: no step may take them as read.
            let posts = [
                post(5, first),
                post(4, 0),
                post(3, first),
                post(2, first),
                post(1, 0),
            ];
            let page = format!(
                r#"{{"success":true,"data":{{"posts":[{}]}}}}"#,
                posts.join(",")
            );
            let (fast, _) = posts_page(page.as_bytes(), usize::MAX)
                .expect("the one-pass reader takes the page");
            assert_eq!(
                fast,
                general_page(page.as_bytes(), usize::MAX).unwrap(),
                "{first} extra members"
            );
        }
    }

    /// A small deterministic generator (xorshift): the same pages on every run.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len() as u64) as usize]
        }
        fn ws(&mut self) -> &'static str {
            ["", "", "", " ", "\n  ", "\t"][self.below(6) as usize]
        }
    }

    const TEXTS: &[&str] = &[
        r#""Build #4001 deployed on nas-01; volume 2. Ping @ops-1 if shares look off.""#,
        r#""""#,
        r#""déjà vu 😀 — 100% & <b>ok</b> \u2028""#,
        r#""line one\nline \"two\"\ttab \\ back\/slash""#,
        r#""\u00e9\ud83d\ude00 and \u0041""#,
        "\"raw \u{7f} delete and \u{2028} separator and \u{feff}\"",
        r#""a lone \ud800 surrogate""#,
        "\"a raw\u{1}control\"",
        r#""a bad \x escape""#,
        r#""unterminated"#,
        "\"normal\"",
        "\"file\"",
        "\"sticker\"",
        "\"something_new\"",
        "null",
        "17",
    ];
    const INTS: &[&str] = &[
        "0",
        "1",
        "7",
        "1700000061000",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "-1",
        "-0",
        "1.0",
        "1e3",
        "01",
        "null",
        "\"5\"",
        "true",
    ];
    const SKIPPED: &[&str] = &[
        "[]",
        "null",
        r#"[{"k": [1, 2.5e-3, -0, true, false, null]}, "s\"\\", {}]"#,
        r#"{"esc\u0061ped key": {"deep": [[[[]]]]}}"#,
        "-12.5E+7",
        "[1,]",
        "{\"a\" 1}",
        "tru",
        "1.",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    ];

    /// How a page writes its posts. DSM writes every post of a page alike, and the reader
    /// takes the first post's shape for the others', so most posts of a page share their order
    /// of members, the whitespace between them and, on some pages, many of their values.
    struct Style {
        /// The page's order of members: DSM's own (that of `tests/bench/data/`), the API's,
        /// or one of its own.
        order: Order,
        /// In 1000: how many posts keep the page's order and whitespace.
        alike: u64,
        /// Numbers drawn from a few values, so that posts repeat them.
        few_numbers: bool,
        open: &'static str,
        colon: &'static str,
        sep: String,
        close: &'static str,
    }

    enum Order {
        Listed(&'static [&'static str]),
        Hashed(u64),
    }

    const DSM_ORDER: &[&str] = &[
        "post_id",
        "channel_id",
        "creator_id",
        "message",
        "create_at",
        "update_at",
        "type",
        "is_sticky",
        "comment_count",
        "thread_id",
        "last_comment_at",
        "file_props",
        "hashtags",
        "mentions",
        "attachments",
    ];
    const API_ORDER: &[&str] = &[
        "post_id",
        "channel_id",
        "creator_id",
        "message",
        "create_at",
        "update_at",
        "thread_id",
        "comment_count",
        "last_comment_at",
        "type",
        "file_props",
    ];

    impl Style {
        fn new(g: &mut Gen) -> Style {
            let order = match g.below(4) {
                0 => Order::Listed(DSM_ORDER),
                1 => Order::Listed(API_ORDER),
                _ => Order::Hashed(g.next()),
            };
            let compact = g.below(2) == 0;
            Style {
                order,
                alike: [0, 500, 900, 1000][g.below(4) as usize],
                few_numbers: g.below(2) == 0,
                open: if compact { "" } else { g.ws() },
                colon: if compact || g.below(2) == 0 {
                    ":"
                } else {
                    g.pick(&[": ", " :", ":\n "])
                },
                sep: if compact {
                    ",".to_owned()
                } else {
                    format!("{},{}", g.ws(), g.ws())
                },
                close: if compact { "" } else { g.ws() },
            }
        }

        /// The place of a member (`"name":value`) in the page's order.
        fn rank(&self, member: &str) -> u64 {
            let name = member.split(':').next().unwrap_or_default();
            match self.order {
                Order::Listed(names) => {
                    let known = names.iter().position(|n| name == format!("\"{n}\""));
                    known.unwrap_or(names.len()) as u64
                }
                Order::Hashed(seed) => name.bytes().fold(seed, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                }),
            }
        }
    }

    /// A post whose fields are mostly well-formed, in the page's order or any other, sometimes
    /// missing, doubled, or odd; `odd` is how often (in 1000) a field takes a value from the odd
    /// end of a list.
    fn post(g: &mut Gen, odd: u64, style: &Style, id: u64) -> String {
        let mut fields: Vec<String> = Vec::new();
        let int = |g: &mut Gen| {
            if g.below(1000) < odd {
                g.pick(INTS).to_owned()
            } else if style.few_numbers {
                g.pick(&["1", "2", "0", "1700000061000"]).to_owned()
            } else {
                (1 + g.below(1 << 40)).to_string()
            }
        };
        let text = |g: &mut Gen| {
            if g.below(1000) < odd {
                g.pick(TEXTS).to_owned()
            } else {
                g.pick(&TEXTS[..6]).to_owned()
            }
        };
        if g.below(1000) >= odd / 4 {
            let id = match g.below(1000) < odd {
                true => int(g),
                false => id.to_string(),
            };
            fields.push(format!("\"post_id\":{id}"));
        }
        if g.below(1000) >= odd / 4 {
            fields.push(format!("\"channel_id\":{}", int(g)));
        }
        for name in [
            "creator_id",
            "create_at",
            "update_at",
            "thread_id",
            "comment_count",
        ] {
            match g.below(10) {
                0 => {}
                1 => fields.push(format!("\"{name}\":0")),
                _ => fields.push(format!("\"{name}\":{}", int(g))),
            }
        }
        if g.below(2) == 0 {
            let value = if g.below(3) == 0 {
                "null".to_owned()
            } else {
                int(g)
            };
            fields.push(format!("\"last_comment_at\":{value}"));
        }
        for name in ["message", "type"] {
            if g.below(10) > 0 {
                fields.push(format!("\"{name}\":{}", text(g)));
            }
        }
        match g.below(4) {
            0 => fields.push("\"file_props\":null".to_owned()),
            1 => fields.push(format!(
                "\"file_props\":{{\"size\":{},\"path\":[1],\"name\":{}}}",
                int(g),
                text(g)
            )),
            2 => fields.push("\"file_props\":{}".to_owned()),
            _ => {}
        }
        for _ in 0..g.below(4) {
            let name = g.pick(&["hashtags", "mentions", "attachments", "is_sticky", "x"]);
            let value = if g.below(1000) < odd {
                g.pick(SKIPPED)
            } else {
                g.pick(&SKIPPED[..5])
            };
            fields.push(format!("\"{name}\":{value}"));
        }
        if g.below(1000) < odd / 4 {
            let again = fields[g.below(fields.len() as u64) as usize].clone();
            fields.push(again);
        }
        if g.below(1000) < style.alike {
            fields.sort_by_key(|member| style.rank(member));
            for member in &mut fields {
                *member = member.replacen("\":", &format!("\"{}", style.colon), 1);
            }
            let (open, sep, close) = (style.open, &style.sep, style.close);
            return format!("{{{open}{}{close}}}", fields.join(sep));
        }
        // Shuffled, with whitespace around the punctuation.
        for i in (1..fields.len()).rev() {
            fields.swap(i, g.below(i as u64 + 1) as usize);
        }
        let sep = format!("{},{}", g.ws(), g.ws());
        format!("{{{}{}{}}}", g.ws(), fields.join(&sep), g.ws())
    }

    fn page(g: &mut Gen, odd: u64) -> String {
        let style = Style::new(g);
        // Ids newest first as a rule, oldest first often, in no order now and then.
        let (count, base) = (g.below(8), 1 + g.below(1 << 40));
        let order = g.below(10);
        let posts: Vec<String> = (0..count)
            .map(|k| {
                let id = match order {
                    0..6 => base + count - k,
                    6..9 => base + k,
                    _ => 1 + g.below(1 << 40),
                };
                post(g, odd, &style, id)
            })
            .collect();
        let mut data = vec![format!("\"posts\":[{}]", posts.join(","))];
        if g.below(3) == 0 {
            data.push("\"total\":3".to_owned());
        }
        if g.below(4) == 0 {
            data.reverse();
        }
        let success = if g.below(1000) < odd / 4 {
            "false"
        } else {
            "true"
        };
        let body = format!(
            "{{{}\"success\"{}:{}{success},\"data\":{{{}}}}}{}",
            g.ws(),
            g.ws(),
            g.ws(),
            data.join(","),
            g.ws()
        );
        match g.below(1000) {
            n if n < odd / 8 => body + "x",
            n if n < odd / 4 => format!(
                "{{\"error\":{{\"code\":105}},\"success\":false{}",
                &body[1..]
            ),
            _ => body,
        }
    }

    /// On generated pages, well-formed and odd: wherever the one-pass reader answers, the
    /// general way answers the same bytes; and it answers every page the general way accepts
    /// (the generator puts no escapes in the keys it gives up on).
    #[test]
    fn the_one_pass_reader_answers_as_the_general_way_or_gives_up() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        let (mut both, mut neither, mut over_limit, mut unordered) = (0, 0, 0, 0);
        for round in 0..6000 {
            let odd = [0, 10, 60, 250][round % 4];
            let body = page(&mut g, odd);
            let limit = [usize::MAX, 1, 2, 7][round / 4 % 4];
            let fast = posts_page(body.as_bytes(), limit).map(|(page, count)| {
                let items: serde_json::Value = serde_json::from_slice(&page).unwrap();
                assert_eq!(items["items"].as_array().unwrap().len(), count);
                page
            });
            match (fast, general_page(body.as_bytes(), limit)) {
                (Some(fast), Some(general)) => {
                    assert_eq!(
                        String::from_utf8_lossy(&fast),
                        String::from_utf8_lossy(&general),
                        "{body}"
                    );
                    both += 1;
                }
                (Some(fast), None) => panic!(
                    "accepted what the general way refuses: {body}\n=> {}",
                    String::from_utf8_lossy(&fast)
                ),
                (None, Some(_))
                    if serde_json::from_slice::<serde_json::Value>(
                        &general_page(body.as_bytes(), usize::MAX).unwrap(),
                    )
                    .unwrap()["items"]
                        .as_array()
                        .unwrap()
                        .len()
                        > limit =>
                {
                    over_limit += 1
                }
                // Posts in neither order: the general way sorts them.
                (None, Some(_)) if !listed_in_order(body.as_bytes()) => unordered += 1,
                (None, Some(_)) => panic!("gave up on what the general way accepts: {body}"),
                (None, None) => neither += 1,
            }
        }
        // Both kinds of page were met often enough to mean something.
        assert!(
            both > 1500 && neither > 500 && over_limit > 500 && unordered > 50,
            "{both} {neither} {over_limit} {unordered}"
        );
    }
}
