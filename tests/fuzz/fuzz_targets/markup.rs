//! The markup helpers (src/formats/markup.rs): no panic, output bounded, no super-linear time.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::borrow::Cow;
use std::time::Instant;
use syno_chat_gateway::formats::fuzzing as m;

fn ident(s: &str) -> Cow<'_, str> {
    Cow::Borrowed(s)
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let which = data[0];
    let text = String::from_utf8_lossy(&data[1..]);
    let text: &str = &text;
    let n = text.len();
    let t0 = Instant::now();
    let out: String = match which % 18 {
        0 => m::html_text(text, m::literal_text),
        1 => m::html_text(text, ident),
        2 => m::html_document(text),
        3 => m::slack(text),
        4 => m::discord(text),
        5 => m::markdown_text(text),
        6 => m::markdown_links(text),
        7 => m::mentions(text, "<@", |inner| {
            inner.split('|').next_back().unwrap_or(inner)
        }),
        8 => m::mentions(text, "<users/", |u| u),
        9 => m::unescape(text),
        10 => m::rfc3339(text),
        11 => m::plain(text),
        12 => {
            let (url, label) = text.split_once('\u{1}').unwrap_or((text, ""));
            m::link(url, label)
        }
        13 => m::literal_text(text).into_owned(),
        14 => {
            let _ = m::opens_link(text);
            let _ = m::is_web_url(text);
            let _ = m::color_marker(text);
            String::new()
        }
        15 => {
            let mut b = [0u8; 8];
            for (i, x) in data[1..].iter().take(8).enumerate() {
                b[i] = *x;
            }
            let v = i64::from_le_bytes(b);
            let _ = m::rgb_marker(v as u32);
            m::utc(v)
        }
        16 => m::plain(&m::slack(text)),
        _ => m::html_text(&m::markdown_text(text), m::literal_text),
    };
    let el = t0.elapsed();
    // Percent-encoding a URL may triple it; a link doubles a label-less URL.
    assert!(
        out.len() <= 8 * n + 64,
        "fn {}: output {} bytes for input {} bytes",
        which % 18,
        out.len(),
        n
    );
    if el.as_millis() > 1000 {
        panic!("fn {}: slow: {:?} for {} bytes", which % 18, el, n);
    }
});
