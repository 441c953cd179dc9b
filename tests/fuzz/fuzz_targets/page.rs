//! Differential: the one-pass page reader against the general way (src/upstream/wire/page.rs).
//! When the fast reader answers, its bytes equal the general way's; it never accepts more.
#![no_main]
use libfuzzer_sys::fuzz_target;
use syno_chat_gateway::upstream::fuzzing::{general_page as general, posts_page};

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let limit = match data[0] {
        0 => usize::MAX,
        x if x >= 200 => 50,
        x => x as usize,
    };
    let body = &data[1..];
    let Some((fast, count)) = posts_page(body, limit) else {
        let _ = general(body, limit);
        return;
    };
    let items: serde_json::Value =
        serde_json::from_slice(&fast).expect("the fast reader wrote invalid JSON");
    assert_eq!(items["items"].as_array().expect("items").len(), count);
    assert!(count <= limit);
    match general(body, limit) {
        Some(slow) => assert_eq!(
            String::from_utf8_lossy(&fast),
            String::from_utf8_lossy(&slow),
            "fast and general differ for {}",
            String::from_utf8_lossy(body)
        ),
        None => panic!(
            "the fast reader accepted what the general way refuses: {}\n=> {}",
            String::from_utf8_lossy(body),
            String::from_utf8_lossy(&fast)
        ),
    }
});
