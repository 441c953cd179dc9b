//! src/chunking.rs: split_message, PartLimits::split / split_cutting, halve. Checks the module
//! contract: every part non-empty and at most `max_chars` chars; without fenced blocks the
//! parts concatenate to the input; breaks on grapheme cluster boundaries when every cluster
//! fits; split_cutting's last part holds its note within `max_chars`; linear-ish time.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::time::Instant;
use syno_chat_gateway::chunking::{self, PartLimits};
use unicode_segmentation::UnicodeSegmentation;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let max_chars = match data[0] {
        0..=199 => data[0] as usize,
        200..=249 => 1 + (data[0] as usize - 200) * 40,
        _ => 1800,
    }
    .max(if data[1] & 0x80 != 0 { 0 } else { 1 });
    let max_parts = (data[1] & 0x7f) as usize % 25;
    let text = String::from_utf8_lossy(&data[2..]).into_owned();
    let chars = text.chars().count();
    let t0 = Instant::now();

    let parts = chunking::split_message(&text, max_chars);
    let limit = max_chars.max(1);
    let fenced = text.contains("```") || text.contains("~~~");
    assert!(!parts.is_empty());
    for (i, p) in parts.iter().enumerate() {
        let n = p.chars().count();
        assert!(
            n <= limit,
            "part {i} has {n} chars > {limit}: {p:?}\nall: {parts:?}"
        );
        assert!(
            !p.is_empty() || text.is_empty(),
            "empty part {i}: {parts:?}"
        );
    }
    if !fenced {
        let joined: String = parts.concat();
        assert_eq!(joined, text, "parts do not concatenate to the input");
        // Breaks on cluster boundaries, when no cluster is longer than a part.
        let longest = text
            .graphemes(true)
            .map(|g| g.chars().count())
            .max()
            .unwrap_or(0);
        if longest <= limit {
            let mut bounds = std::collections::HashSet::new();
            let mut at = 0;
            for g in text.graphemes(true) {
                bounds.insert(at);
                at += g.chars().count();
            }
            bounds.insert(at);
            let mut pos = 0;
            for p in &parts {
                pos += p.chars().count();
                assert!(
                    bounds.contains(&pos),
                    "break at {pos} inside a cluster: {parts:?}"
                );
            }
        }
    }

    let limits = PartLimits {
        max_chars: limit,
        max_parts,
    };
    if let Ok(parts) = limits.split(&text) {
        let parts = parts.into_vec();
        assert!(parts.len() <= max_parts);
        for p in &parts {
            assert!(p.chars().count() <= limit);
            assert!(!syno_chat_gateway::domain::is_blank(p));
        }
    }
    let (cut, left_out) = limits.split_cutting(&text);
    let cut = cut.into_vec();
    assert!(cut.len() <= max_parts.max(1) || max_parts == 0 || left_out == 0);
    assert!(left_out <= chars);
    let note = format!("\n\n… ({chars} more characters not shown)")
        .chars()
        .count();
    if limit > note {
        for (i, p) in cut.iter().enumerate() {
            assert!(
                p.chars().count() <= limit,
                "split_cutting part {i} has {} chars > {limit} (left out {left_out}): {p:?}",
                p.chars().count()
            );
        }
    }

    if let Some((halves, new_limit)) = chunking::halve(&text, limit) {
        assert!(new_limit < limit.max(chars) || new_limit <= 1);
        for h in &halves {
            assert!(
                h.chars().count() <= new_limit,
                "halve part > {new_limit}: {h:?}"
            );
        }
    }
    let el = t0.elapsed();
    if el.as_millis() > 1000 {
        panic!("slow: {:?} for {} chars, max {}", el, chars, max_chars);
    }
});
