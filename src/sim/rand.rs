//! Random identifiers (sids, SynoTokens, integration tokens, device ids).

use std::sync::atomic::{AtomicU64, Ordering};

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const SID_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";
const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const DIGITS: &[u8] = b"0123456789";

static FALLBACK: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);

pub(crate) fn bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    if getrandom::fill(&mut buf).is_err() {
        // OS entropy unavailable: a splitmix64 stream is still unique enough for a simulator.
        for b in buf.iter_mut() {
            let mut z = FALLBACK.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            *b = (z ^ (z >> 31)) as u8;
        }
    }
    buf
}

fn pick(set: &[u8], b: u8) -> char {
    set[b as usize % set.len()] as char
}

/// 40-70 chars of [A-Za-z0-9._-]; about a third start with a digit, because real DSM sids
/// sometimes do and clients have been seen to mishandle them.
pub(crate) fn sid_like() -> String {
    let r = bytes(72);
    let len = 40 + (r[0] as usize % 31);
    let mut s = String::with_capacity(len);
    s.push(if r[1].is_multiple_of(3) {
        pick(DIGITS, r[2])
    } else {
        pick(LETTERS, r[2])
    });
    for &b in &r[3..3 + len - 1] {
        s.push(pick(SID_CHARS, b));
    }
    s
}

/// Integration tokens: 64 chars [A-Za-z0-9].
pub(crate) fn token64() -> String {
    bytes(64).into_iter().map(|b| pick(ALNUM, b)).collect()
}

pub(crate) fn alnum(n: usize) -> String {
    bytes(n).into_iter().map(|b| pick(ALNUM, b)).collect()
}
