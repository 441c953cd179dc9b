//! Reading a file post's `multipart/form-data` body within the upload limit.

use std::cell::Cell;
use std::rc::Rc;

use actix_multipart::{Field, Multipart};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{HttpRequest, web};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use crate::api::error::{ApiError, ProblemCode};
use crate::upstream::Upload;

/// Largest caption part read.
const MESSAGE_PART_LIMIT: usize = 64 * 1024;
/// Room for part headers, boundaries and the caption next to the file.
const FORM_OVERHEAD_BYTES: usize = MESSAGE_PART_LIMIT + 16 * 1024;

/// The parts of a file post.
pub struct FileForm {
    /// Caption; empty when the part was not sent.
    pub message: String,
    pub file: Upload,
}

fn too_large(what: &str, limit: usize) -> ApiError {
    ApiError::new(
        ProblemCode::PayloadTooLarge,
        format!("{what} exceeds {limit} bytes"),
    )
}

fn malformed(error: impl std::fmt::Display) -> ApiError {
    ApiError::invalid(format!("malformed multipart/form-data body: {error}"))
}

/// The raw body, ended with an error once more than `limit` bytes arrived, whatever
/// `Content-Length` said (a chunked body has none, and the multipart parser buffers a
/// preamble without a boundary for as long as it lasts). `exceeded` tells why it ended.
fn capped(
    payload: web::Payload,
    limit: usize,
    exceeded: Rc<Cell<bool>>,
) -> impl Stream<Item = Result<Bytes, PayloadError>> + 'static {
    let mut received = 0usize;
    payload.map(move |chunk| {
        let chunk = chunk?;
        received = received.saturating_add(chunk.len());
        if received > limit {
            exceeded.set(true);
            return Err(PayloadError::Overflow);
        }
        Ok(chunk)
    })
}

/// Reads parts `file` (at most `max_file_bytes`) and optional `message`. Stops reading as soon
/// as a part, or the body as a whole, grows past its limit, so no more than the limit is ever
/// buffered.
pub async fn read_file_form(
    req: &HttpRequest,
    payload: web::Payload,
    max_file_bytes: usize,
) -> Result<FileForm, ApiError> {
    let body_limit = max_file_bytes.saturating_add(FORM_OVERHEAD_BYTES);
    let declared_length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared_length.is_some_and(|n| n > body_limit) {
        return Err(too_large("the upload", max_file_bytes));
    }

    let exceeded = Rc::new(Cell::new(false));
    let mut form = Multipart::new(req.headers(), capped(payload, body_limit, exceeded.clone()));
    let failed = |error: actix_multipart::MultipartError| {
        // The parser's own buffer limit (a preamble or part head that never ends) is a body
        // too large as well.
        let overflow = matches!(
            error,
            actix_multipart::MultipartError::Payload(PayloadError::Overflow)
        );
        if exceeded.get() || overflow {
            too_large("the upload", max_file_bytes)
        } else {
            crate::body_deadline::read_failed(req, malformed(error))
        }
    };
    let mut message = None;
    let mut file = None;
    while let Some(field) = form.next().await {
        let mut field = field.map_err(failed)?;
        match field.name().unwrap_or_default() {
            "file" if file.is_none() => {
                let file_name = field
                    .content_disposition()
                    .and_then(upload_name)
                    .unwrap_or_else(|| "file".to_owned());
                let content_type = field
                    .content_type()
                    .map_or_else(|| "application/octet-stream".to_owned(), |m| m.to_string());
                let bytes = read_part(&mut field, max_file_bytes, "the file", &failed).await?;
                file = Some(Upload {
                    field: "file",
                    file_name,
                    content_type,
                    bytes,
                });
            }
            "message" if message.is_none() => {
                let bytes =
                    read_part(&mut field, MESSAGE_PART_LIMIT, "the message", &failed).await?;
                let text = String::from_utf8(bytes.to_vec())
                    .map_err(|_| ApiError::invalid("the message part must be UTF-8 text"))?;
                // As the JSON routes' `MessageText` (a caption may be empty, though).
                if text.contains('\0') {
                    return Err(ApiError::invalid(
                        "the message part must not contain a NUL character (U+0000)",
                    ));
                }
                message = Some(text);
            }
            name @ ("file" | "message") => {
                return Err(ApiError::invalid(format!(
                    "the `{name}` part is sent more than once"
                )));
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "unexpected part `{other}`; send `file` and optionally `message`"
                )));
            }
        }
    }
    let file = file.ok_or_else(|| ApiError::invalid("the `file` part is missing"))?;
    Ok(FileForm {
        message: message.unwrap_or_default(),
        file,
    })
}

async fn read_part(
    field: &mut Field,
    limit: usize,
    what: &str,
    failed: &impl Fn(actix_multipart::MultipartError) -> ApiError,
) -> Result<Bytes, ApiError> {
    let mut buffer = BytesMut::new();
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(failed)?;
        if buffer.len() + chunk.len() > limit {
            return Err(too_large(what, limit));
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

/// Longest file name passed on, in bytes (most file systems' limit).
const MAX_FILE_NAME_BYTES: usize = 255;

/// The name a client gave its file: `filename*` (RFC 6266: preferred when both are sent) or
/// `filename`, without the path some clients include (RFC 7578 §4.2 says to ignore it),
/// at most [`MAX_FILE_NAME_BYTES`]; `None` when nothing is left.
fn upload_name(disposition: &actix_web::http::header::ContentDisposition) -> Option<String> {
    use actix_web::http::header::Charset;
    let name = match disposition.get_filename_ext() {
        Some(ext) if ext.charset == Charset::Iso_8859_1 => {
            ext.value.iter().map(|&b| char::from(b)).collect()
        }
        Some(ext) => String::from_utf8_lossy(&ext.value).into_owned(),
        None => disposition.get_filename()?.to_owned(),
    };
    let name = crate::domain::shown_file_name(&name);
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    if base.is_empty() || base == "." || base == ".." {
        return None;
    }
    if base.len() <= MAX_FILE_NAME_BYTES {
        return Some(base.to_owned());
    }
    // Cut in the stem, keeping a short extension (`.pdf`): the kind of file stays known.
    let extension = base
        .rfind('.')
        .map(|dot| &base[dot..])
        .filter(|ext| ext.len() <= 16)
        .unwrap_or_default();
    let mut end = MAX_FILE_NAME_BYTES - extension.len();
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    Some(format!("{}{extension}", &base[..end]))
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{ContentDisposition, HeaderValue};

    use super::upload_name;

    fn named(raw: &str) -> Option<String> {
        let value = HeaderValue::from_bytes(raw.as_bytes()).unwrap();
        upload_name(&ContentDisposition::from_raw(&value).unwrap())
    }

    #[test]
    fn a_file_name_is_kept_without_path_controls_or_direction_marks() {
        let part = |params: &str| format!("form-data; name=\"file\"; {params}");
        assert_eq!(
            named(&part(r#"filename="../../etc/passwd""#)).as_deref(),
            Some("passwd")
        );
        assert_eq!(
            named(&part(
                "filename=\"fallback.txt\"; filename*=UTF-8''%C3%A9t%C3%A9.txt"
            ))
            .as_deref(),
            Some("été.txt")
        );
        assert_eq!(
            named(&part("filename*=ISO-8859-1''caf%E9.txt")).as_deref(),
            Some("café.txt")
        );
        // Only a control character, or a direction override: nothing, or the name as it shows.
        assert_eq!(named(&part("filename*=UTF-8''%07")), None);
        assert_eq!(
            named(&part("filename*=UTF-8''%E2%80%AEtxt.exe")).as_deref(),
            Some("txt.exe")
        );
        // Cut at 255 bytes in the stem: the extension stays.
        let long = format!("{}.pdf", "a".repeat(400));
        let kept = named(&part(&format!("filename=\"{long}\""))).unwrap();
        assert_eq!(kept.len(), 255);
        assert!(kept.ends_with("aaa.pdf"), "{kept}");
    }
}
