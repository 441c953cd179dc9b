//! Other parsers of untrusted bytes: DSM's error details (src/upstream/envelope.rs), the
//! inbound form/JSON reader (src/events/inbound.rs), domain validation (src/domain.rs) and
//! forwarding headers (src/forwarded.rs). No panic; error details stay short and masked.
#![no_main]
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use syno_chat_gateway::config::{InboundKind, InboundVerify};
use syno_chat_gateway::domain;
use syno_chat_gateway::events::Inbound;
use syno_chat_gateway::events::inbound::{self, Fields};

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let body = &data[1..];
    let text = String::from_utf8_lossy(body);
    match data[0] % 6 {
        0 => {
            let sent = ["secret-token-1234", "sid0123456789", "ab"];
            if let Some(d) = syno_chat_gateway::upstream::fuzzing::error_details(body, &sent) {
                assert!(
                    d.chars().count() <= 241,
                    "details too long: {}",
                    d.chars().count()
                );
                for s in &sent[..2] {
                    assert!(!d.contains(s), "sent value {s} not masked: {d}");
                }
            }
        }
        1 | 2 => {
            let fields = if data[0] % 6 == 1 {
                Ok(Fields::from_form(body))
            } else {
                Fields::from_json(body)
            };
            let Ok(fields) = fields else { return };
            for kind in [
                InboundKind::OutgoingWebhook,
                InboundKind::Chatbot,
                InboundKind::SlashCommand,
            ] {
                let inbound = Inbound {
                    token: Some(SecretString::from("tok".to_owned())),
                    kind,
                    verify: InboundVerify::Token,
                };
                let _ = inbound::accept("x", &inbound, &fields);
            }
        }
        3 => {
            let _ = domain::MessageText::parse(text.to_string());
            let _ = domain::parse_whole_number(&text);
            let _ = domain::clipped(&text);
            let _ = domain::shown_file_name(&text);
            let _ = text.parse::<domain::ChannelId>();
            let _ = text.parse::<domain::PostId>();
            let _ = domain::HttpUrl::parse("url", &text);
            let _ = domain::retry_after(&text, std::time::SystemTime::now());
            let _ = domain::ChannelKind::from_word(&text);
            let _ = domain::is_loopback_name(&text);
        }
        4 => {
            let mut b = [0u8; 8];
            for (i, x) in body.iter().take(8).enumerate() {
                b[i] = *x;
            }
            let v = i64::from_le_bytes(b);
            let _ = domain::rfc3339_ms(v);
            let _ = domain::civil_date(v);
        }
        _ => {
            use actix_web::http::header::HeaderValue;
            use actix_web::test::TestRequest;
            use syno_chat_gateway::forwarded::{PublicOrigin, TrustedProxies};
            let mut parts = body.split(|&b| b == 0);
            let mut req = TestRequest::get()
                .uri("/x")
                .peer_addr("127.0.0.1:4000".parse().unwrap());
            for name in [
                "host",
                "forwarded",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
                "x-forwarded-prefix",
            ] {
                if let Some(v) = parts.next()
                    && let Ok(v) = HeaderValue::from_bytes(v)
                {
                    req = req.insert_header((name, v));
                }
            }
            let proxies = TrustedProxies::new(vec![
                "127.0.0.0/8".parse().unwrap(),
                "::1/128".parse().unwrap(),
            ]);
            let origin = PublicOrigin::resolve(&req.to_srv_request(), &proxies);
            let base = origin.base_url();
            assert!(base.starts_with("http://") || base.starts_with("https://"));
            let _ = syno_chat_gateway::forwarded::Host::new(&text);
        }
    }
});
