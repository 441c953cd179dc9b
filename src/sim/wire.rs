//! Request decoding (query + urlencoded/multipart body), lenient value parsing, replies.

use bytes::Bytes;
use serde_json::{Value, json};

#[derive(Clone, Debug)]
pub(crate) struct FilePart {
    pub name: String,
    pub filename: String,
    pub content_type: String,
    pub data: Bytes,
}

/// All request fields after merging the query string and the body, in arrival order.
#[derive(Default, Debug)]
pub(crate) struct Params {
    pub fields: Vec<(String, String)>,
    pub files: Vec<FilePart>,
    /// Fields for the request log (file parts as "<file N bytes>").
    pub logged: Vec<(String, String)>,
    pub raw_body: Bytes,
    /// A multipart part came after a file part.
    pub file_not_last: bool,
}

impl Params {
    pub fn parse(query: &str, content_type: &str, body: Bytes) -> Params {
        let mut p = Params::default();
        for (k, v) in form_pairs(query.as_bytes()) {
            p.push(k, v);
        }
        let ct = content_type.to_ascii_lowercase();
        if ct.starts_with("application/x-www-form-urlencoded") {
            for (k, v) in form_pairs(&body) {
                p.push(k, v);
            }
        } else if ct.starts_with("multipart/form-data")
            && let Some(boundary) = boundary_of(content_type)
        {
            for part in multipart_parts(&body, &boundary) {
                if !p.files.is_empty() {
                    // The binary must be the last part (File Station's rule, LS-DOC §5.6).
                    p.file_not_last = true;
                }
                match part.filename {
                    Some(filename) => {
                        p.logged.push((
                            part.name.clone(),
                            format!("<file {} bytes>", part.data.len()),
                        ));
                        p.files.push(FilePart {
                            name: part.name,
                            filename,
                            content_type: part.content_type,
                            data: part.data,
                        });
                    }
                    None => {
                        let v = String::from_utf8_lossy(&part.data).into_owned();
                        p.push(part.name, v);
                    }
                }
            }
        }
        p.raw_body = body;
        p
    }

    fn push(&mut self, k: String, v: String) {
        self.logged.push((k.clone(), v.clone()));
        self.fields.push((k, v));
    }

    /// First occurrence of a field, raw.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A string value: `x` and `"x"` (JSON-quoted, as DSM's requestFormat=JSON clients send) both mean x.
    pub fn string(&self, name: &str) -> Option<String> {
        self.raw(name).map(unquote)
    }

    pub fn file(&self, name: &str) -> Option<&FilePart> {
        self.files.iter().find(|f| f.name == name)
    }
}

pub(crate) fn unquote(v: &str) -> String {
    let t = v.trim();
    if t.len() >= 2
        && t.starts_with('"')
        && t.ends_with('"')
        && let Ok(Value::String(s)) = serde_json::from_str::<Value>(t)
    {
        return s;
    }
    v.to_string()
}

fn form_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn boundary_of(content_type: &str) -> Option<String> {
    content_type.split(';').find_map(|seg| {
        let seg = seg.trim();
        let (k, v) = seg.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

struct Part {
    name: String,
    filename: Option<String>,
    content_type: String,
    data: Bytes,
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Minimal RFC 7578 reader; malformed parts are skipped rather than failing the request.
fn multipart_parts(body: &Bytes, boundary: &str) -> Vec<Part> {
    let delim = format!("--{boundary}");
    let mut out = Vec::new();
    let Some(mut pos) = find(body, delim.as_bytes(), 0) else {
        return out;
    };
    loop {
        pos += delim.len();
        if body.get(pos..pos + 2) == Some(b"--") {
            break;
        }
        // Skip the CRLF after the delimiter.
        if body.get(pos..pos + 2) == Some(b"\r\n") {
            pos += 2;
        } else if body.get(pos..pos + 1) == Some(b"\n") {
            pos += 1;
        }
        let Some(hdr_end) = find(body, b"\r\n\r\n", pos) else {
            break;
        };
        let headers = String::from_utf8_lossy(&body[pos..hdr_end]).into_owned();
        let data_start = hdr_end + 4;
        let end_marker = format!("\r\n--{boundary}");
        let Some(data_end) = find(body, end_marker.as_bytes(), data_start) else {
            break;
        };
        let mut name = None;
        let mut filename = None;
        let mut content_type = String::from("application/octet-stream");
        for line in headers.split("\r\n") {
            let Some((h, v)) = line.split_once(':') else {
                continue;
            };
            if h.trim().eq_ignore_ascii_case("content-disposition") {
                name = disposition_param(v, "name");
                filename = disposition_param(v, "filename");
            } else if h.trim().eq_ignore_ascii_case("content-type") {
                content_type = v.trim().to_string();
            }
        }
        if let Some(name) = name {
            out.push(Part {
                name,
                filename,
                content_type,
                data: body.slice(data_start..data_end),
            });
        }
        pos = data_end + 2;
    }
    out
}

/// A parameter of a part's `Content-Disposition`, its quoted value read as browsers write it
/// (WHATWG: nothing escaped but `"`, CR and LF as `%22`, `%0D`, `%0A`, kept as written): a `;`
/// inside the quotes is part of the value.
fn disposition_param(header: &str, key: &str) -> Option<String> {
    let mut rest = header.split_once(';')?.1;
    loop {
        let (name, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"').unwrap_or(quoted.len());
                let next = quoted[end..].split_once(';').map_or("", |(_, n)| n);
                (&quoted[..end], next)
            }
            None => after.split_once(';').unwrap_or((after, "")),
        };
        if name.trim().eq_ignore_ascii_case(key) {
            return Some(value.trim().to_string());
        }
        if next.is_empty() {
            return None;
        }
        rest = next;
    }
}

/// An API-level failure: becomes `{"success":false,"error":{"code":N[,"errors":...]}}`.
#[derive(Debug, Clone)]
pub(crate) struct ApiErr {
    pub code: i64,
    pub errors: Option<Value>,
}

pub(crate) fn err(code: i64) -> ApiErr {
    ApiErr { code, errors: None }
}

pub(crate) fn err_with(code: i64, errors: Value) -> ApiErr {
    ApiErr {
        code,
        errors: Some(errors),
    }
}

#[derive(Debug)]
pub(crate) enum Reply {
    /// `{"success":true}` plus `data` when given.
    Ok(Option<Value>),
    Binary {
        content_type: String,
        filename: String,
        data: Bytes,
    },
}

pub(crate) type R = Result<Reply, ApiErr>;

pub(crate) fn ok(data: Value) -> R {
    Ok(Reply::Ok(Some(data)))
}

pub(crate) fn ok_empty() -> R {
    Ok(Reply::Ok(None))
}

pub(crate) fn envelope_ok(data: Option<Value>) -> Value {
    match data {
        Some(d) => json!({"success": true, "data": d}),
        None => json!({"success": true}),
    }
}

pub(crate) fn envelope_err(e: &ApiErr) -> Value {
    match &e.errors {
        Some(errors) => json!({"success": false, "error": {"code": e.code, "errors": errors}}),
        None => json!({"success": false, "error": {"code": e.code}}),
    }
}

/// Typed access to parameters; `missing` is 114 for session APIs and 120 (with errors) for External.
pub(crate) struct Args<'a> {
    pub p: &'a Params,
    pub external: bool,
    /// The API declares requestFormat=JSON, so free text may arrive JSON-quoted.
    pub json_format: bool,
}

impl<'a> Args<'a> {
    pub fn missing(&self, name: &str) -> ApiErr {
        if self.external {
            err_with(120, json!({"name": name, "reason": "required"}))
        } else {
            err(114)
        }
    }

    fn invalid(&self, name: &str) -> ApiErr {
        if self.external {
            err_with(120, json!({"name": name, "reason": "invalid"}))
        } else {
            // Chat answers 101 for wrongly-typed values (LS-OBS, Vote choices).
            err(101)
        }
    }

    pub fn opt_str(&self, name: &str) -> Option<String> {
        self.p.string(name)
    }

    pub fn req_str(&self, name: &str) -> Result<String, ApiErr> {
        self.p.string(name).ok_or_else(|| self.missing(name))
    }

    /// A string parameter decoded as a requestFormat=JSON API decodes it: JSON text first
    /// (`"team"` is team, `null` is absent, `123` or `true` is not a string: 101), falling back
    /// to the raw value when it is not JSON (`team`), as DSM does (upstream/PROTOCOL.md [T2]).
    /// Other APIs take the value as it is.
    pub fn req_json_str(&self, name: &str) -> Result<String, ApiErr> {
        if !self.json_format {
            return self.req_str(name);
        }
        let raw = self.p.raw(name).ok_or_else(|| self.missing(name))?;
        match serde_json::from_str::<Value>(raw.trim()) {
            Ok(Value::String(s)) => Ok(s),
            Ok(Value::Null) => Err(self.missing(name)),
            Ok(_) => Err(self.invalid(name)),
            Err(_) => Ok(raw.to_string()),
        }
    }

    /// Free text (messages, keywords): taken verbatim unless the API is requestFormat=JSON,
    /// so a message that really starts and ends with `"` keeps its quotes.
    pub fn opt_text(&self, name: &str) -> Option<String> {
        if self.json_format {
            self.p.string(name)
        } else {
            self.p.raw(name).map(str::to_string)
        }
    }

    pub fn req_text(&self, name: &str) -> Result<String, ApiErr> {
        self.opt_text(name).ok_or_else(|| self.missing(name))
    }

    pub fn opt_i64(&self, name: &str) -> Result<Option<i64>, ApiErr> {
        match self.p.raw(name) {
            None => Ok(None),
            Some(raw) => parse_i64(raw).map(Some).ok_or_else(|| self.invalid(name)),
        }
    }

    pub fn req_i64(&self, name: &str) -> Result<i64, ApiErr> {
        self.opt_i64(name)?.ok_or_else(|| self.missing(name))
    }

    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, ApiErr> {
        match self.p.raw(name).map(unquote) {
            None => Ok(None),
            // `true`/`false`, as every source sends them (ref §1: Python's booleans as text);
            // `1`, `yes` or an empty value would hide a client that sends something else.
            Some(v) => match v.trim() {
                "true" => Ok(Some(true)),
                "false" => Ok(Some(false)),
                _ => Err(self.invalid(name)),
            },
        }
    }

    /// Lenient id list: `[3,4]`, `["3"]`, `3`, `3,4`.
    pub fn opt_ids(&self, name: &str) -> Result<Option<Vec<i64>>, ApiErr> {
        let Some(raw) = self.p.raw(name) else {
            return Ok(None);
        };
        let t = raw.trim();
        if let Ok(v) = serde_json::from_str::<Value>(t) {
            let items = match v {
                Value::Array(a) => a,
                Value::String(s) => return self.ids_from_text(name, &s).map(Some),
                other => vec![other],
            };
            let mut out = Vec::new();
            for it in items {
                match it {
                    Value::Number(n) => out.push(n.as_i64().ok_or_else(|| self.invalid(name))?),
                    Value::String(s) => out.push(parse_i64(&s).ok_or_else(|| self.invalid(name))?),
                    _ => return Err(self.invalid(name)),
                }
            }
            return Ok(Some(out));
        }
        self.ids_from_text(name, t).map(Some)
    }

    fn ids_from_text(&self, name: &str, s: &str) -> Result<Vec<i64>, ApiErr> {
        s.split(',')
            .filter(|x| !x.trim().is_empty())
            .map(|x| parse_i64(x).ok_or_else(|| self.invalid(name)))
            .collect()
    }

    /// Strict: a JSON array of numbers, as `Post.search in` requires.
    pub fn strict_num_array(&self, name: &str) -> Result<Option<Vec<i64>>, ApiErr> {
        let Some(raw) = self.p.raw(name) else {
            return Ok(None);
        };
        match serde_json::from_str::<Value>(raw.trim()) {
            Ok(Value::Array(a)) => a
                .into_iter()
                .map(|v| v.as_i64().ok_or_else(|| err(101)))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            _ => Err(err(101)),
        }
    }

    /// A JSON array of strings (`["pin"]`); a bare word is taken as a one-element list.
    pub fn opt_str_list(&self, name: &str) -> Result<Option<Vec<String>>, ApiErr> {
        let Some(raw) = self.p.raw(name) else {
            return Ok(None);
        };
        match serde_json::from_str::<Value>(raw.trim()) {
            Ok(Value::Array(a)) => a
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(self.invalid(name)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Ok(Value::String(s)) => Ok(Some(vec![s])),
            Ok(_) => Err(self.invalid(name)),
            Err(_) if !raw.trim().is_empty() => Ok(Some(vec![raw.trim().to_string()])),
            Err(_) => Ok(Some(Vec::new())),
        }
    }
}

/// `5`, `"5"`, ` 5 ` are all 5.
pub(crate) fn parse_i64(raw: &str) -> Option<i64> {
    let t = unquote(raw);
    let t = t.trim();
    if let Ok(n) = t.parse::<i64>() {
        return Some(n);
    }
    // Whole-valued floats such as 5.0 from loosely typed clients.
    t.parse::<f64>()
        .ok()
        .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
        .map(|f| f as i64)
}
