//! parse_body -> detect / event_key -> render (every format, forced or detected, templates off
//! and on) -> plain markup, as src/api/hooks.rs `read_message` calls them. Checks: no panic,
//! output bounded by a multiple of the input, no super-linear time.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::time::Instant;
use syno_chat_gateway::formats::{self, Format};

const CONTENT_TYPES: [Option<&str>; 7] = [
    None,
    Some("application/json"),
    Some("text/plain"),
    Some("application/x-www-form-urlencoded"),
    Some("text/plain; charset=ISO-8859-1"),
    Some("application/json; charset=latin1"),
    Some("multipart/form-data"),
];

const FORMATS: [Option<Format>; 17] = [
    None,
    Some(Format::Slack),
    Some(Format::Mattermost),
    Some(Format::Alertmanager),
    Some(Format::Grafana),
    Some(Format::Discord),
    Some(Format::Arr),
    Some(Format::Forge),
    Some(Format::Ntfy),
    Some(Format::Teams),
    Some(Format::TeamsWorkflows),
    Some(Format::GoogleChat),
    Some(Format::Webex),
    Some(Format::Matrix),
    Some(Format::Telegram),
    Some(Format::Generic),
    Some(Format::Text),
];

const TEMPLATES: [&str; 3] = [
    "{{ title }}: {{ message }}",
    "{% for a in alerts %}{{ a.labels.alertname }} {{ a.status }}\n{% endfor %}{{ text | default('none') }}",
    "{{ payload | tojson }}",
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let content_type = CONTENT_TYPES[data[0] as usize % CONTENT_TYPES.len()];
    let sel = data[1];
    let body = &data[2..];
    let t0 = Instant::now();
    let parsed = formats::parse_body(content_type, body);
    let Ok(payload) = parsed else { return };
    let detected = formats::detect(&payload, false);
    let _ = formats::event_key(&payload);
    let forced = FORMATS[(sel & 0x1f) as usize % FORMATS.len()];
    let template = match sel >> 5 {
        1 => Some(TEMPLATES[0]),
        2 => Some(TEMPLATES[1]),
        3 => Some(TEMPLATES[2]),
        _ => None,
    };
    let rendered = formats::render(&payload, forced, template);
    let files = if sel & 0x80 != 0 {
        vec!["a<b>.txt".to_owned()]
    } else {
        vec![]
    };
    let rendered = formats::with_files(rendered, &files, forced.unwrap_or(Format::Discord));
    if let Ok(r) = &rendered {
        if forced.is_none() && template.is_none() && files.is_empty() {
            assert_eq!(r.format, detected, "render's format differs from detect's");
        }
        assert!(!r.text.trim().is_empty());
        assert!(!r.text.contains('\0'));
        // A template is the operator's, not the sender's: its constant text is allowed.
        let bound = 16 * body.len() + 4096;
        assert!(
            r.text.len() <= bound,
            "output {} bytes for input {} bytes",
            r.text.len(),
            body.len()
        );
        if formats::may_carry_markup(&payload) {
            let plain = formats::plain_markup(&r.text);
            assert!(
                plain.len() <= r.text.len() + 64,
                "plain grew: {} -> {}",
                r.text.len(),
                plain.len()
            );
        }
    }
    let el = t0.elapsed();
    // 200 KB in a second is 5 us/byte: far too slow for a linear pass.
    if el.as_millis() > 1000 {
        panic!("slow: {:?} for {} bytes", el, body.len());
    }
});
