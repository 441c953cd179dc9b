//! Synology Chat's own incoming-webhook call, as the tools with a native Synology Chat notifier
//! make it (Apprise's `synology://`, Home Assistant's `synology_chat`, scripts written from
//! Synology's help): `entry.cgi?api=SYNO.Chat.External&method=incoming&version=2&token=…` with
//! `payload={"text": …, "file_url": …}` (upstream-protocol §4.2). The text is Chat's own
//! markup already and goes as it is.
//!
//! The call's fields are read wherever DSM reads them: the query, a form body, or (the
//! payload) the raw body. A form body is read by its shape when it has no `Content-Type`
//! (Home Assistant posts a bare string).
//!
//! Most of these senders do not URL-encode the payload (Apprise, Home Assistant, Qinglong and
//! ioBroker write `payload={"text": …}` as it is; ioBroker escapes only `%` and `&`), and DSM
//! decodes it as a form anyway: an `&` in the text cuts the message short, a `+` becomes a
//! space. A payload sent so (its `{` not encoded, which every encoder would encode) is read
//! whole to the end of the body, its `%XX` escapes decoded as DSM decodes them but its `+`
//! kept. Raw line breaks inside its strings (Qinglong's template) are read as `\n`.

use serde_json::Value;

use super::FormatError;
use crate::domain::UserId;

/// The fields of a call, as sent (the token still in whichever quotes the sender used).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Call {
    pub api: Option<String>,
    pub method: Option<String>,
    pub version: Option<String>,
    pub token: Option<String>,
    /// The payload's JSON text, from a `payload` field or the raw body.
    pub payload: Option<String>,
}

/// What a payload asks to post.
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    pub text: String,
    pub file_url: Option<String>,
    /// A chatbot's recipients (`method=chatbot`); empty for `incoming`.
    pub user_ids: Vec<UserId>,
}

/// The most users one chatbot message goes to: each is a send the outbox tracks.
pub const MAX_RECIPIENTS: usize = 100;

/// Which of the two sending methods the payload is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// An incoming webhook's post to its channel.
    Incoming,
    /// A chatbot's message to each of `user_ids`.
    Chatbot,
}

const FIELDS: [&str; 5] = ["api", "method", "version", "token", "payload"];

impl Call {
    /// The call's fields from the query and the body (the query's first; the payload from the
    /// body first, as a form posts it).
    pub fn read(query: &str, content_type: Option<&str>, body: &[u8]) -> Self {
        let mut call = Self::default();
        call.take_form(query.as_bytes());
        // Read by its shape without a `Content-Type` (Home Assistant) or labelled as text. A
        // JSON object labelled as a form is the whole-body payload `curl -d '{…}'` sends (no
        // form of the call's fields starts with `{`).
        let body_is_form =
            (super::media_type_is(content_type, "application/x-www-form-urlencoded")
                && !super::looks_like_an_object(body))
                || ((content_type.is_none() || super::media_type_is(content_type, "text/plain"))
                    && looks_like_form(body));
        let mut sent = Self::default();
        if body_is_form {
            // An unencoded payload runs to the end of the body, `&`s and all: only the fields
            // before it are the form's.
            match unencoded_payload(body) {
                Some((fields, whole)) => {
                    sent.take_form(fields);
                    sent.payload = Some(whole);
                }
                None => sent.take_form(body),
            }
        } else if !body.iter().all(u8::is_ascii_whitespace) {
            // Synology's help: the JSON may be the whole POST body.
            let text = String::from_utf8_lossy(body);
            sent.payload = Some(text.strip_prefix('\u{feff}').unwrap_or(&text).to_owned());
        }
        // The query's fields first, as DSM reads them; the payload from the body first.
        call.api = call.api.or(sent.api);
        call.method = call.method.or(sent.method);
        call.version = call.version.or(sent.version);
        call.token = call.token.or(sent.token);
        call.payload = sent.payload.or(call.payload);
        call
    }

    /// The call's fields of a form, each as it first occurs.
    fn take_form(&mut self, form: &[u8]) {
        for (key, value) in form_urlencoded::parse(form) {
            let slot = match key.as_ref() {
                "api" => &mut self.api,
                "method" => &mut self.method,
                "version" => &mut self.version,
                "token" => &mut self.token,
                "payload" => &mut self.payload,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value.into_owned());
            }
        }
    }
}

/// A body without a `Content-Type` that starts as a form of the call's fields.
fn looks_like_form(body: &[u8]) -> bool {
    FIELDS.iter().any(|field| {
        body.strip_prefix(field.as_bytes())
            .is_some_and(|rest| rest.first() == Some(&b'='))
    })
}

/// The fields before a `payload=` that is not URL-encoded (it opens with a bare `{`), and that
/// payload read to the end of the body: `%XX` decoded, `+` kept. `None` when there is no such
/// payload, or it is not one JSON value (other fields follow it): the body is then read as the
/// form it claims to be.
fn unencoded_payload(body: &[u8]) -> Option<(&[u8], String)> {
    const FIELD: &[u8] = b"payload={";
    let at = (0..body.len())
        .filter(|&at| at == 0 || body[at - 1] == b'&')
        .find(|&at| body[at..].starts_with(FIELD))?;
    let (fields, rest) = (&body[..at], &body[at + FIELD.len() - 1..]);
    // Escapes are decoded as DSM decodes them. Where a decoded quote or backslash would end a
    // string (Qinglong's notify.js percent-encodes its text into a JSON template), they are
    // taken as the characters the sender meant; where the escapes do not decode to UTF-8
    // (`100%AB`), they were the sender's text.
    let raw = std::str::from_utf8(rest).ok();
    let decoded = percent_encoding::percent_decode(rest).decode_utf8().ok();
    let json = [
        decoded,
        decoded_as_json_text(rest).map(Into::into),
        raw.map(Into::into),
    ]
    .into_iter()
    .flatten()
    .map(|text| with_raw_controls_escaped(&text).into_owned())
    .find(|json| serde_json::from_str::<serde::de::IgnoredAny>(json).is_ok())?;
    Some((fields, json))
}

/// `%XX` escapes decoded, with a decoded quote or backslash written as its JSON escape (`\"`,
/// `\\`), so it stays inside the string it was written in.
fn decoded_as_json_text(raw: &[u8]) -> Option<String> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let escaped = (raw[i] == b'%')
            .then(|| Some(hex(*raw.get(i + 1)?)? * 16 + hex(*raw.get(i + 2)?)?))
            .flatten();
        match escaped.and_then(|byte| u8::try_from(byte).ok()) {
            Some(byte) => {
                if matches!(byte, b'"' | b'\\') {
                    out.push(b'\\');
                }
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(raw[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// JSON text with the control characters that stand raw inside its strings escaped (`\n` for
/// a line break): strict JSON refuses them, and senders that fill a template write them so.
fn with_raw_controls_escaped(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.bytes().any(|b| b < 0x20) {
        return text.into();
    }
    let (mut out, mut in_string, mut escaped) = (String::with_capacity(text.len()), false, false);
    for c in text.chars() {
        match c {
            _ if escaped => {
                escaped = false;
                out.push(c);
            }
            '\\' if in_string => {
                escaped = true;
                out.push(c);
            }
            '"' => {
                in_string = !in_string;
                out.push(c);
            }
            '\n' if in_string => out.push_str("\\n"),
            '\r' if in_string => out.push_str("\\r"),
            '\t' if in_string => out.push_str("\\t"),
            c if in_string && (c as u32) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.into()
}

/// The message a payload asks to post. Its `text` is required (Chat's own tools always send
/// one); buttons (`attachments`) are refused rather than dropped (the gateway's outbox keeps
/// text and a file URL only), and so are `user_ids` but for a chatbot, which needs them.
pub fn message(payload: &str, method: Method) -> Result<Message, FormatError> {
    let payload = with_raw_controls_escaped(payload.trim_start_matches('\u{feff}'));
    let value: Value = serde_json::from_str(&payload)
        .map_err(|e| FormatError::InvalidPayload(format!("`payload` is not JSON: {e}")))?;
    let Value::Object(members) = value else {
        return Err(FormatError::InvalidPayload(
            "`payload` must be a JSON object".into(),
        ));
    };
    let string = |name: &str| match members.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(FormatError::InvalidPayload(format!(
            "`{name}` must be a string"
        ))),
    };
    if members
        .get("attachments")
        .is_some_and(|a| !matches!(a, Value::Null) && a.as_array().is_none_or(|a| !a.is_empty()))
    {
        return Err(FormatError::InvalidPayload(
            "`attachments` (buttons) are not passed on by the gateway; send them to the NAS \
             directly"
                .into(),
        ));
    }
    let user_ids = match (method, members.get("user_ids")) {
        (Method::Incoming, None) => Vec::new(),
        (Method::Incoming, Some(_)) => {
            return Err(FormatError::InvalidPayload(
                "`user_ids` belongs to a chatbot's `method=chatbot`; an incoming webhook posts \
                 to its channel"
                    .into(),
            ));
        }
        (Method::Chatbot, ids) => {
            let ids: Vec<UserId> = ids
                .cloned()
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| {
                    FormatError::InvalidPayload(format!("`user_ids` must list user ids: {e}"))
                })?
                .unwrap_or_default();
            if ids.is_empty() {
                return Err(FormatError::InvalidPayload(
                    "a chatbot's message needs `user_ids`, the users to send it to".into(),
                ));
            }
            let mut ids = ids;
            ids.sort();
            ids.dedup();
            if ids.len() > MAX_RECIPIENTS {
                return Err(FormatError::InvalidPayload(format!(
                    "`user_ids` may name at most {MAX_RECIPIENTS} users"
                )));
            }
            ids
        }
    };
    let file_url = string("file_url")?.filter(|url| !url.trim().is_empty());
    let text = string("text")?.unwrap_or_default();
    // An incoming webhook's file may go alone, as DSM posts it.
    if crate::domain::is_blank(&text) && (file_url.is_none() || method == Method::Chatbot) {
        return Err(FormatError::NoText);
    }
    Ok(Message {
        text,
        file_url,
        user_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(payload: &str) -> Result<Message, FormatError> {
        message(payload, Method::Incoming)
    }

    fn call(query: &str, content_type: Option<&str>, body: &str) -> Call {
        Call::read(query, content_type, body.as_bytes())
    }

    const QUERY: &str = "api=SYNO.Chat.External&method=incoming&version=2&token=%22abc%22";

    #[test]
    fn the_fields_come_from_the_query_and_an_encoded_form() {
        // Apprise: the token in the query, the payload as a URL-encoded form field.
        let read = call(
            QUERY,
            Some("application/x-www-form-urlencoded"),
            "payload=%7B%22text%22%3A%2250%25+done+%26+more%22%7D",
        );
        assert_eq!(read.api.as_deref(), Some("SYNO.Chat.External"));
        assert_eq!(read.method.as_deref(), Some("incoming"));
        assert_eq!(read.version.as_deref(), Some("2"));
        assert_eq!(read.token.as_deref(), Some("\"abc\""));
        assert_eq!(
            read.payload.as_deref(),
            Some(r#"{"text":"50% done & more"}"#)
        );
        // Every field in the body, none in the query.
        let read = call(
            "",
            Some("application/x-www-form-urlencoded"),
            &format!("{QUERY}&payload=%7B%7D"),
        );
        assert_eq!(read.token.as_deref(), Some("\"abc\""));
        assert_eq!(read.payload.as_deref(), Some("{}"));
    }

    #[test]
    fn a_json_body_labelled_as_a_form_is_the_payload() {
        // `curl -d '{…}'` labels its body a form.
        for body in [r#"{"text":"a & b=c"}"#, "\u{feff} \n{\"text\":\"a & b=c\"}"] {
            let read = call(QUERY, Some("application/x-www-form-urlencoded"), body);
            let payload = read.payload.as_deref().expect(body);
            assert_eq!(incoming(payload).unwrap().text, "a & b=c");
        }
    }

    #[test]
    fn a_bare_string_body_is_read_as_the_form_it_is() {
        // Home Assistant: `data="payload=" + json`, no Content-Type, nothing encoded. A `%`
        // that starts no escape stays as it is.
        let read = call(QUERY, None, r#"payload={"text": "CPU at 50% now"}"#);
        assert_eq!(
            read.payload.as_deref(),
            Some(r#"{"text": "CPU at 50% now"}"#)
        );
        // An `&` would cut the payload short as a form: read whole.
        let read = call(QUERY, None, r#"payload={"text": "Tom & Jerry"}"#);
        assert_eq!(
            incoming(read.payload.as_deref().unwrap()).unwrap().text,
            "Tom & Jerry"
        );
        // Labelled as text, the same.
        let read = call(QUERY, Some("text/plain"), r#"payload={"text": "a & b"}"#);
        assert_eq!(
            message(read.payload.as_deref().unwrap(), Method::Incoming)
                .unwrap()
                .text,
            "a & b"
        );
        // Labelled a form, the same.
        let read = call(
            QUERY,
            Some("application/x-www-form-urlencoded"),
            r#"payload={"text":"a&b=c"}"#,
        );
        assert_eq!(
            incoming(read.payload.as_deref().unwrap()).unwrap().text,
            "a&b=c"
        );
        // As DSM decodes a form (MoviePilot percent-encodes inside raw JSON): decoded.
        let read = call(QUERY, None, r#"payload={"text":"50%25 and %E2%9C%93"}"#);
        assert_eq!(
            incoming(read.payload.as_deref().unwrap()).unwrap().text,
            "50% and ✓"
        );
    }

    #[test]
    fn an_unencoded_payload_keeps_its_plus_and_its_line_breaks() {
        let text = |body: &str| {
            let read = call(QUERY, Some("application/x-www-form-urlencoded"), body);
            incoming(read.payload.as_deref().unwrap()).map(|m| m.text)
        };
        // Apprise: `json.dumps` as it is.
        assert_eq!(
            text(r#"payload={"text": "C++ & more"}"#),
            Ok("C++ & more".into())
        );
        // ioBroker escapes `%` and `&` only, for DSM to decode.
        assert_eq!(
            text(r#"payload={"text": "50%25 %26 1+1"}"#),
            Ok("50% & 1+1".into())
        );
        // Qinglong's template: raw line breaks inside the string.
        assert_eq!(
            text("payload={\"text\":\"title\ncontent\tx\"}"),
            Ok("title\ncontent\tx".into())
        );
        // Not an escape that decodes to UTF-8, or one that would break the JSON: the sender's
        // text.
        assert_eq!(
            text(r#"payload={"text": "at 100%AB"}"#),
            Ok("at 100%AB".into())
        );
        // A decoded quote or backslash stays inside its string: Qinglong's notify.js
        // percent-encodes its text into a JSON template.
        assert_eq!(
            text(r#"payload={"text":"job\nhe%20said%20%22hi%22%20in%20C:%5Cdir"}"#),
            Ok("job\nhe said \"hi\" in C:\\dir".into())
        );
        assert_eq!(
            text(r#"payload={"text": "<https://x.example/?q=%22a%22|q>"}"#),
            Ok("<https://x.example/?q=\"a\"|q>".into())
        );
        // Encoded properly: a form, where `+` is a space.
        assert_eq!(
            text("payload=%7B%22text%22%3A%22a+b%22%7D"),
            Ok("a b".into())
        );
        // Fields before an unencoded payload are the form's; what looks like one inside its
        // text is text.
        let read = call("", None, r#"token=abc&payload={"text":"a &method=x & b"}"#);
        assert_eq!(
            (read.token.as_deref(), read.method.as_deref()),
            (Some("abc"), None)
        );
        assert_eq!(
            message(read.payload.as_deref().unwrap(), Method::Incoming)
                .unwrap()
                .text,
            "a &method=x & b"
        );
        // More fields after an unencoded payload: read as a form.
        let read = call(
            "",
            Some("application/x-www-form-urlencoded"),
            r#"payload={"text":"x"}&token=abc"#,
        );
        assert_eq!(read.token.as_deref(), Some("abc"));
        assert_eq!(
            incoming(read.payload.as_deref().unwrap()).unwrap().text,
            "x"
        );
    }

    #[test]
    fn a_json_body_is_the_payload() {
        let read = call(QUERY, Some("application/json"), "\u{feff}{\"text\":\"hi\"}");
        assert_eq!(read.payload.as_deref(), Some("{\"text\":\"hi\"}"));
        let read = call(QUERY, None, " {\"text\":\"hi\"} ");
        assert_eq!(
            incoming(read.payload.as_deref().unwrap()).unwrap().text,
            "hi"
        );
        // Nothing in the body: no payload, unless the query has one (a GET).
        assert_eq!(call(QUERY, None, "").payload, None);
        let read = call(
            &format!("{QUERY}&payload=%7B%22text%22%3A%22q%22%7D"),
            None,
            "",
        );
        assert_eq!(read.payload.as_deref(), Some(r#"{"text":"q"}"#));
    }

    #[test]
    fn the_payload_gives_text_and_a_file_url() {
        assert_eq!(
            incoming(
                r#"{"text":"see <https://x.example|x>","file_url":"https://f.example/a.png"}"#
            ),
            Ok(Message {
                text: "see <https://x.example|x>".into(),
                file_url: Some("https://f.example/a.png".into()),
                user_ids: Vec::new(),
            })
        );
        assert_eq!(
            incoming(r#"{"text":"t","file_url":"","attachments":[]}"#),
            Ok(Message {
                text: "t".into(),
                file_url: None,
                user_ids: Vec::new(),
            })
        );
        // A chatbot's recipients, as numbers or as digits.
        let sent = message(r#"{"text":"t","user_ids":[4,"5"]}"#, Method::Chatbot).unwrap();
        let ids: Vec<u64> = sent.user_ids.into_iter().map(u64::from).collect();
        assert_eq!(ids, [4, 5]);
    }

    #[test]
    fn what_cannot_be_posted_is_refused_not_dropped() {
        for refused in [
            r#"{"text":"t"}"#,
            r#"{"text":"t","user_ids":[]}"#,
            r#"{"text":"t","user_ids":[0]}"#,
            r#"{"text":"t","user_ids":"4"}"#,
        ] {
            assert!(
                matches!(
                    message(refused, Method::Chatbot),
                    Err(FormatError::InvalidPayload(_))
                ),
                "{refused}"
            );
        }
        assert_eq!(incoming(r#"{"text":"  "}"#), Err(FormatError::NoText));
        assert_eq!(
            message(
                r#"{"file_url":"https://f.example/a","user_ids":[2]}"#,
                Method::Chatbot
            ),
            Err(FormatError::NoText)
        );
        // A file alone: posted without text, as DSM posts it.
        assert_eq!(
            incoming(r#"{"file_url":"https://f.example/a"}"#).map(|m| m.text),
            Ok(String::new())
        );
        for refused in [
            "not json",
            "[1]",
            r#"{"text":5}"#,
            r#"{"text":"t","file_url":3}"#,
            r#"{"text":"t","attachments":[{"actions":[]}]}"#,
            r#"{"text":"t","user_ids":[4]}"#,
        ] {
            assert!(
                matches!(incoming(refused), Err(FormatError::InvalidPayload(_))),
                "{refused}"
            );
        }
    }
}
