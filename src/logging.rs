//! Log lines: how they are formatted and written.
//!
//! Every request writes its access line at `info`, the default level, so each line's cost is
//! paid by every request. tracing-subscriber's own formatters spent about 19,000 instructions on
//! an access line as text and 53,000 as JSON, against 35,000 for the whole cached channel list
//! without one: the text formatter paints each field name through `nu_ansi_term` even with colours
//! off, re-formats the time from the calendar on every line, and the JSON one renders a span's
//! fields as JSON, then parses them back for every line (twice: `span` and `spans`). The lines
//! here are the same (JSON without the `spans` list, which repeated `span`), written field by
//! field. The request's fields (`request{request_id=… method=… path=… client_ip=…}`) are
//! written as a span's, from the request's task-local ([`crate::telemetry`]): a tracing span
//! cost every request more than the rest of its line. On a terminal the text is coloured as
//! tracing-subscriber colours it ([`init`]).
//!
//! Lines are written by a thread of their own, in batches ([`background`]): a worker appends its
//! line and goes on, and a slow or stuck reader of the log (a full pipe to journald or Docker)
//! cannot stall the requests. Lines that do not fit in the bounded batch are dropped, counted
//! ([`dropped_lines`], the `synochat_log_lines_dropped_total` metric) and reported in the log.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{LogFormat, LogSettings};

/// `log.level` with actix-http's dispatcher quiet when the level is a plain `info`, `warn` or
/// `error`: it logs a request it could not parse (a malformed header line, a head over the
/// limit) at ERROR, though that is the caller's mistake, answered 400/431, and a hostile
/// caller could fill the log with such lines. At `debug`, `trace` or with targets named, the
/// level is taken as written.
fn with_quiet_parse_errors(level: &str) -> String {
    let plain = ["info", "warn", "error"]
        .iter()
        .any(|l| level.trim().eq_ignore_ascii_case(l));
    match plain {
        true => format!("{},actix_http::h1::dispatcher=off", level.trim()),
        false => level.to_owned(),
    }
}

/// Installs the global subscriber: text or JSON lines on `writer`, filtered by `RUST_LOG` when
/// set, else by `log.level`. Text on a terminal is coloured.
pub fn init<W>(settings: &LogSettings, writer: W) -> Result<(), String>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    // A `RUST_LOG` that does not parse is refused, not quietly replaced by `log.level`.
    let filter = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(directives) if !directives.trim().is_empty() => {
            EnvFilter::try_new(directives).map_err(|e| format!("RUST_LOG: {e}"))?
        }
        _ => EnvFilter::try_new(with_quiet_parse_errors(&settings.level))
            .map_err(|e| format!("log.level: {e}"))?,
    };
    let style = match settings.format {
        LogFormat::Json => Style::Json,
        LogFormat::Pretty => Style::Text,
    };
    let format = LineFormat {
        style,
        colours: style == Style::Text && std::io::stderr().is_terminal(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .event_format(format)
        .fmt_fields(LineFields(style))
        .try_init()
        .map_err(|e| e.to_string())
}

/// How many bytes of lines may wait for the writer thread: about 13,000 access lines. A reader
/// of the log that falls further behind loses lines rather than the gateway its memory.
const WAITING_BYTES: usize = 4 << 20;
/// How long the writer thread lets lines gather after the first one of a batch: a line reaches
/// the log at most about this late, and all the lines of that time take one system call.
const GATHER: Duration = Duration::from_millis(10);
/// How long the end of the process waits for the last lines to be written: a reader that is
/// stuck must not keep the gateway from exiting.
const EXIT_WAIT: Duration = Duration::from_secs(2);
/// How often the log is told how many lines were dropped since it was last told.
const GAP_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Lines dropped because the log's reader fell behind, since the process started.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Lines dropped so far because the log's reader fell behind ([`background`]).
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// `sink`, written by a thread of its own: the writer to log to, and the guard that writes what
/// is still waiting when it is dropped (keep it until the process ends). Lines dropped because
/// too much was waiting are counted ([`dropped_lines`]) and reported in the log itself: a
/// warning where a gap is.
///
/// A line is appended to the waiting batch under a lock and nothing more: no allocation, no
/// system call, and a wake-up only for the first line of a batch. tracing-appender, tried first,
/// sends each line through a channel to its thread, which wakes for it: under `strace`, a
/// `write` and a `sched_yield` for every request (4.04 system calls a request on the cached
/// list, against 2.03 for this writer and at `warn`).
pub fn background<S>(sink: S) -> (BatchWriter, WrittenAtExit)
where
    S: std::io::Write + Send + 'static,
{
    let batches = start_batches(sink, WAITING_BYTES, GATHER);
    report_gaps(GAP_REPORT_EVERY, |dropped| {
        tracing::warn!(
            dropped,
            "log lines were dropped: the log's reader fell behind \
             (synochat_log_lines_dropped_total counts them)"
        )
    });
    batches
}

fn start_batches<S>(mut sink: S, capacity: usize, gather: Duration) -> (BatchWriter, WrittenAtExit)
where
    S: std::io::Write + Send + 'static,
{
    let shared = Arc::new(Batches {
        waiting: Mutex::new(Waiting::default()),
        wake: Condvar::new(),
        written: Condvar::new(),
        capacity,
    });
    let batches = shared.clone();
    let thread = std::thread::Builder::new()
        .name("log-writer".to_owned())
        .spawn(move || {
            let mut batch = Vec::new();
            loop {
                let closing = {
                    let mut waiting = batches.lock();
                    while waiting.lines.is_empty() && !waiting.closing {
                        waiting = batches
                            .wake
                            .wait(waiting)
                            .unwrap_or_else(|e| e.into_inner());
                    }
                    if !waiting.closing {
                        drop(waiting);
                        std::thread::sleep(gather);
                        waiting = batches.lock();
                    }
                    std::mem::swap(&mut batch, &mut waiting.lines);
                    waiting.closing
                };
                // Nowhere left to report a failed write: the batch is lost, the next one tried.
                let _ = sink.write_all(&batch).and_then(|()| sink.flush());
                // A burst's buffer is not kept for the quiet that follows.
                if batch.capacity() > 256 * 1024 {
                    batch = Vec::new();
                } else {
                    batch.clear();
                }
                if closing {
                    let mut waiting = batches.lock();
                    if waiting.lines.is_empty() {
                        waiting.written = true;
                        batches.written.notify_all();
                        return;
                    }
                }
            }
        });
    if let Err(error) = &thread {
        eprintln!("syno-chat-gateway: no log writer thread ({error}); lines are dropped");
        shared.lock().written = true;
    }
    (BatchWriter(shared.clone()), WrittenAtExit(shared))
}

struct Batches {
    waiting: Mutex<Waiting>,
    /// The writer thread waits on it for a first line.
    wake: Condvar,
    /// The end of the process waits on it for the last batch.
    written: Condvar,
    /// Bytes that may wait; a line that does not fit is dropped.
    capacity: usize,
}

#[derive(Default)]
struct Waiting {
    lines: Vec<u8>,
    closing: bool,
    /// The writer thread has written everything and ended.
    written: bool,
}

impl Batches {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        // A thread that panicked while appending left whole lines at worst.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where the log's lines go: each `write` is one whole line (tracing-subscriber writes a line
/// with one `write_all`), appended to the waiting batch.
#[derive(Clone)]
pub struct BatchWriter(Arc<Batches>);

impl std::io::Write for BatchWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut waiting = self.0.lock();
        if waiting.lines.len() + line.len() > self.0.capacity {
            drop(waiting);
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return Ok(line.len());
        }
        let first = waiting.lines.is_empty();
        waiting.lines.extend_from_slice(line);
        drop(waiting);
        if first {
            self.0.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;

    fn make_writer(&'a self) -> BatchWriter {
        self.clone()
    }
}

/// Writes the lines still waiting when dropped, waiting at most [`EXIT_WAIT`] for them.
pub struct WrittenAtExit(Arc<Batches>);

impl Drop for WrittenAtExit {
    fn drop(&mut self) {
        let mut waiting = self.0.lock();
        waiting.closing = true;
        self.0.wake.notify_one();
        let deadline = std::time::Instant::now() + EXIT_WAIT;
        while !waiting.written {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            waiting = self
                .0
                .written
                .wait_timeout(waiting, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Every `every`, calls `report` with the lines dropped since the last call, if there were any.
/// (A report dropped too is counted, and the next one includes its lines.)
fn report_gaps(every: Duration, report: impl Fn(u64) + Send + 'static) {
    let mut reported = dropped_lines();
    let reporter = std::thread::Builder::new()
        .name("log-gaps".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let dropped = dropped_lines();
                if dropped > reported {
                    report(dropped - reported);
                    reported = dropped;
                }
            }
        });
    if let Err(error) = reporter {
        eprintln!("syno-chat-gateway: dropped log lines will not be reported in the log: {error}");
    }
}

/// A duration in milliseconds to the microsecond, for a log field: `0.248`, where the exact
/// double would print as `0.24775699999999998`.
pub fn millis(duration: std::time::Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

/// `value` as `{:?}` writes it. A number of thousandths (what [`millis`] gives: the access
/// line's `elapsed_ms`) is written from its digits: `{:?}` writes the shortest decimal that reads
/// back as the same double, and for a double that is the nearest to `k / 1000` with fewer than
/// 15 significant digits, that decimal is `k / 1000` itself (any other decimal of as many digits
/// or fewer lies further away than the double's neighbours). `{:?}` spent about 700
/// instructions on it.
fn write_f64(out: &mut impl fmt::Write, value: f64) -> fmt::Result {
    let thousandths = (value * 1000.0).round();
    if !(value.is_sign_positive() && thousandths < 1e12 && thousandths / 1000.0 == value) {
        return write!(out, "{value:?}");
    }
    let thousandths = thousandths as u64;
    out.write_str(itoa::Buffer::new().format(thousandths / 1000))?;
    let fraction = (thousandths % 1000) as u16;
    let digits = [
        b'.',
        b'0' + (fraction / 100) as u8,
        b'0' + (fraction / 10 % 10) as u8,
        b'0' + (fraction % 10) as u8,
    ];
    // Trailing zeros are left out, but one digit always stays (`3.0`, as `{:?}` writes it).
    let len = match fraction {
        f if f % 100 == 0 => 2,
        f if f % 10 == 0 => 3,
        _ => 4,
    };
    out.write_str(std::str::from_utf8(&digits[..len]).map_err(|_| fmt::Error)?)
}

/// An IP address as a log field (the access line's `client_ip`), as `Display` writes it; an
/// IPv4 address digit by digit (std's `Display` went through `fmt` for each octet: 1,650
/// instructions, a seventh of the access line).
fn write_address(f: &mut impl fmt::Write, ip: std::net::IpAddr) -> fmt::Result {
    let std::net::IpAddr::V4(v4) = ip else {
        return write!(f, "{ip}");
    };
    let mut text = [0u8; 15];
    let mut len = 0;
    for (at, octet) in v4.octets().into_iter().enumerate() {
        if at > 0 {
            text[len] = b'.';
            len += 1;
        }
        let digits = [octet / 100, octet / 10 % 10, octet % 10];
        let first = match octet {
            100.. => 0,
            10.. => 1,
            _ => 2,
        };
        for digit in &digits[first..] {
            text[len] = b'0' + digit;
            len += 1;
        }
    }
    f.write_str(std::str::from_utf8(&text[..len]).map_err(|_| fmt::Error)?)
}

#[derive(Clone, Copy, PartialEq)]
enum Style {
    /// `2026-12-05T15:13:21.684345Z  INFO request{request_id=… method="GET"}: target: message a=1`
    Text,
    /// One JSON object a line: `timestamp`, `level`, the event's fields, `target`, `span`.
    Json,
}

/// Formats a span's fields (once, when the span is created) and an event's: `name=value ...` as
/// text, `"name":value,...` as JSON.
pub struct LineFields(Style);

impl<'w> FormatFields<'w> for LineFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = FieldWriter::new(writer, self.0, true);
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let first = current.fields.is_empty();
        let mut visitor = FieldWriter::new(current.as_writer(), self.0, first);
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes fields one after another, each preceded by its separator unless it is the `first`.
struct FieldWriter<'w> {
    out: Writer<'w>,
    style: Style,
    first: bool,
    result: fmt::Result,
}

impl<'w> FieldWriter<'w> {
    fn new(out: Writer<'w>, style: Style, first: bool) -> Self {
        FieldWriter {
            out,
            style,
            first,
            result: Ok(()),
        }
    }

    /// Writes the field's name and separators, then the value by `value`; `None` for the
    /// fields a bridged `log` record carries as metadata (`log.target`, ...), which are not
    /// written.
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'w>, Style) -> fmt::Result) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = (|| {
            match (self.style, self.first) {
                (Style::Text, false) => self.out.write_char(' ')?,
                (Style::Json, false) => self.out.write_char(',')?,
                (_, true) => self.first = false,
            }
            match self.style {
                // The message goes first without its name, as tracing-subscriber writes it.
                Style::Text if name == "message" => {}
                Style::Text => {
                    self.out.write_str(name)?;
                    self.out.write_char('=')?;
                }
                Style::Json => {
                    json_string(&mut self.out, name)?;
                    self.out.write_char(':')?;
                }
            }
            value(&mut self.out, self.style)
        })();
    }

    /// A value written by `fmt` (`Display` or `Debug`): as it comes in text (with control
    /// characters escaped, so a value cannot start a line of its own), a string in JSON.
    fn formatted(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        self.field(field, |out, style| match style {
            Style::Text => Escaped::text(out).write_fmt(value),
            Style::Json => {
                out.write_char('"')?;
                Escaped::json(out).write_fmt(value)?;
                out.write_char('"')
            }
        });
    }

    /// A number or `true`/`false`: the same in both styles.
    fn bare(&mut self, field: &Field, value: impl fmt::Display) {
        self.field(field, |out, _| write!(out, "{value}"));
    }
}

impl Visit for FieldWriter<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        match self.style {
            Style::Text if field.name() == "message" => {
                self.field(field, |out, _| Escaped::text(out).write_str(value))
            }
            // Quoted as `{:?}` quotes it; plain text (the usual case) without `Debug`'s walk.
            Style::Text
                if value
                    .bytes()
                    .all(|b| matches!(b, b' '..=b'~') && b != b'"' && b != b'\\') =>
            {
                self.field(field, |out, _| {
                    out.write_char('"')?;
                    out.write_str(value)?;
                    out.write_char('"')
                })
            }
            Style::Text => self.formatted(field, format_args!("{value:?}")),
            Style::Json => self.field(field, |out, _| json_string(out, value)),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.formatted(field, format_args!("{value:?}"));
    }

    // Integers by itoa: the same digits as `Display`, without the formatting machinery (about
    // 350 instructions a field, the access line's status among them).
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |out, _| {
            out.write_str(itoa::Buffer::new().format(value))
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |out, _| {
            out.write_str(itoa::Buffer::new().format(value))
        });
    }

    // In JSON as strings, as tracing-subscriber writes them: most readers of JSON take numbers
    // as doubles, which would round them.
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.formatted(field, format_args!("{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.formatted(field, format_args!("{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.bare(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        match self.style {
            // JSON has no infinity or NaN (serde_json writes them as null).
            Style::Json if !value.is_finite() => self.bare(field, "null"),
            _ => self.field(field, |out, _| write_f64(out, value)),
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        match value.source() {
            None => self.formatted(field, format_args!("{value}")),
            // `error=outer error.sources=[cause, its cause]`, as tracing-subscriber writes it.
            Some(source) => self.formatted(
                field,
                format_args!(
                    "{value} {}.sources={:?}",
                    field.name(),
                    Sources(Some(source))
                ),
            ),
        }
    }
}

/// An error's chain of causes, as a list.
struct Sources<'a>(Option<&'a (dyn std::error::Error + 'static)>);

impl fmt::Debug for Sources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        let mut next = self.0;
        while let Some(error) = next {
            list.entry(&format_args!("{error}"));
            next = error.source();
        }
        list.finish()
    }
}

/// The event as one line, in its [`Style`]; text with colours on a terminal.
pub struct LineFormat {
    style: Style,
    colours: bool,
}

impl LineFormat {
    #[cfg(test)]
    fn plain(style: Style) -> Self {
        LineFormat {
            style,
            colours: false,
        }
    }
}

/// ANSI styles, as tracing-subscriber's coloured text uses them.
const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut out: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // A record from the `log` crate, bridged: its own level and target.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let paint = |out: &mut Writer<'_>, style: &str| match self.colours {
            true => out.write_str(style),
            false => Ok(()),
        };
        match self.style {
            Style::Text => {
                paint(&mut out, DIM)?;
                UtcMicros.format_time(&mut out)?;
                paint(&mut out, RESET)?;
                out.write_char(' ')?;
                paint(&mut out, level_colour(meta.level()))?;
                out.write_str(padded(meta.level()))?;
                paint(&mut out, RESET)?;
                out.write_char(' ')?;
                // The request being served, as the span `request` with its fields.
                let request = crate::telemetry::with_current_request(|request| {
                    paint(&mut out, BOLD)?;
                    out.write_str("request{")?;
                    paint(&mut out, RESET)?;
                    request_fields(&mut out, request, Style::Text)?;
                    paint(&mut out, BOLD)?;
                    out.write_str("}")?;
                    paint(&mut out, RESET)?;
                    out.write_char(':')
                });
                let mut in_span = request.transpose()?.is_some();
                if let Some(scope) = ctx.event_scope() {
                    for span in scope.from_root() {
                        paint(&mut out, BOLD)?;
                        out.write_str(span.name())?;
                        paint(&mut out, RESET)?;
                        let extensions = span.extensions();
                        if let Some(fields) = extensions.get::<FormattedFields<N>>()
                            && !fields.is_empty()
                        {
                            out.write_char('{')?;
                            out.write_str(fields)?;
                            out.write_char('}')?;
                        }
                        out.write_char(':')?;
                        in_span = true;
                    }
                }
                if in_span {
                    out.write_char(' ')?;
                }
                paint(&mut out, DIM)?;
                out.write_str(meta.target())?;
                out.write_str(":")?;
                paint(&mut out, RESET)?;
                out.write_char(' ')?;
                let mut fields = FieldWriter::new(out.by_ref(), Style::Text, true);
                event.record(&mut fields);
                fields.result?;
            }
            Style::Json => {
                out.write_str("{\"timestamp\":\"")?;
                UtcMicros.format_time(&mut out)?;
                out.write_str("\",\"level\":\"")?;
                out.write_str(meta.level().as_str())?;
                out.write_char('"')?;
                let mut fields = FieldWriter::new(out.by_ref(), Style::Json, false);
                event.record(&mut fields);
                fields.result?;
                out.write_str(",\"target\":")?;
                json_string(&mut out, meta.target())?;
                // The request being served as the span, else the innermost span there is.
                let request = crate::telemetry::with_current_request(|request| {
                    out.write_str(",\"span\":{")?;
                    request_fields(&mut out, request, Style::Json)?;
                    out.write_str(",\"name\":\"request\"}")
                });
                if request.transpose()?.is_none()
                    && let Some(span) = ctx.event_scope().and_then(|mut scope| scope.next())
                {
                    out.write_str(",\"span\":{")?;
                    let extensions = span.extensions();
                    if let Some(fields) = extensions.get::<FormattedFields<N>>()
                        && !fields.is_empty()
                    {
                        out.write_str(fields)?;
                        out.write_char(',')?;
                    }
                    out.write_str("\"name\":")?;
                    json_string(&mut out, span.name())?;
                    out.write_char('}')?;
                }
                out.write_char('}')?;
            }
        }
        out.write_char('\n')
    }
}

/// The request's fields as the span `request` had them: `request_id=… method="GET" path=…
/// client_ip=…` as text, `"request_id":"…",…` as JSON; `client_ip` only when it is known.
/// Written straight into the line: the id is made of `[A-Za-z0-9-_.:]` and the method is one of
/// [`crate::telemetry::method_label`]'s names, so only the path needs escaping.
fn request_fields(
    out: &mut Writer<'_>,
    request: &crate::telemetry::RequestInfo,
    style: Style,
) -> fmt::Result {
    match style {
        Style::Text => {
            out.write_str("request_id=")?;
            out.write_str(&request.id)?;
            out.write_str(" method=\"")?;
            out.write_str(request.method)?;
            out.write_str("\" path=")?;
            Escaped::text(out).write_str(request.logged_path())?;
            if let Some(ip) = request.client_ip {
                out.write_str(" client_ip=")?;
                write_address(out, ip)?;
            }
        }
        Style::Json => {
            out.write_str("\"request_id\":\"")?;
            out.write_str(&request.id)?;
            out.write_str("\",\"method\":\"")?;
            out.write_str(request.method)?;
            out.write_str("\",\"path\":")?;
            json_string(out, request.logged_path())?;
            if let Some(ip) = request.client_ip {
                out.write_str(",\"client_ip\":\"")?;
                write_address(out, ip)?;
                out.write_char('"')?;
            }
        }
    }
    Ok(())
}

/// The level's colour in tracing-subscriber's coloured text.
fn level_colour(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "\x1b[35m",
        Level::DEBUG => "\x1b[34m",
        Level::INFO => "\x1b[32m",
        Level::WARN => "\x1b[33m",
        Level::ERROR => "\x1b[31m",
    }
}

/// The level as tracing-subscriber writes it in text: five wide, to the right.
fn padded(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        Level::ERROR => "ERROR",
    }
}

/// `text` as a JSON string, quotes included.
fn json_string(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped::json(out).write_str(text)?;
    out.write_char('"')
}

/// Writes through to `out`, escaping what may not stand as it is: in JSON, `"`, `\`, control
/// characters (as serde_json escapes them), DEL and the C1 controls (`\u009b`); in text, control
/// characters but the tab, DEL and the C1 controls (`\n`, `\x1b`, `\u{9b}`). So no value can end
/// a line early or send a terminal that shows the log an escape sequence.
struct Escaped<'o, W: fmt::Write> {
    out: &'o mut W,
    json: bool,
}

impl<'o, W: fmt::Write> Escaped<'o, W> {
    fn json(out: &'o mut W) -> Self {
        Escaped { out, json: true }
    }

    fn text(out: &'o mut W) -> Self {
        Escaped { out, json: false }
    }

    fn needs_escape(&self, c: char) -> bool {
        match c {
            '"' | '\\' => self.json,
            '\t' => self.json,
            '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => true,
            _ => false,
        }
    }
}

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Most values need nothing escaped: the bytes that may (`"`, `\`, the controls, DEL,
        // and 0xc2, which leads a C1 control) are looked for first, and the text written whole
        // if there are none.
        let Some(first) = text
            .bytes()
            .position(|b| b < 0x20 || matches!(b, b'"' | b'\\' | 0x7f | 0xc2))
        else {
            return self.out.write_str(text);
        };
        self.out.write_str(&text[..first])?;
        let text = &text[first..];
        let mut plain = 0;
        for (at, c) in text.char_indices() {
            if !self.needs_escape(c) {
                continue;
            }
            self.out.write_str(&text[plain..at])?;
            plain = at + c.len_utf8();
            match c {
                '"' => self.out.write_str("\\\"")?,
                '\\' => self.out.write_str("\\\\")?,
                '\n' => self.out.write_str("\\n")?,
                '\r' => self.out.write_str("\\r")?,
                '\t' => self.out.write_str("\\t")?,
                c if self.json => write!(self.out, "\\u{:04x}", c as u32)?,
                c if (c as u32) < 0x80 => write!(self.out, "\\x{:02x}", c as u32)?,
                c => write!(self.out, "\\u{{{:x}}}", c as u32)?,
            }
        }
        self.out.write_str(&text[plain..])
    }
}

/// The time as RFC 3339 in UTC with microseconds (`2026-12-05T15:13:21.684345Z`), as
/// tracing-subscriber writes it; the date and time of day are worked out once a second.
#[derive(Clone, Copy, Default)]
pub struct UtcMicros;

thread_local! {
    /// The second last written, and its text up to the fraction (`2026-12-05T15:13:21.`).
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

impl FormatTime for UtcMicros {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        write_utc(w, now.as_secs(), now.subsec_micros())
    }
}

fn write_utc(out: &mut impl fmt::Write, secs: u64, micros: u32) -> fmt::Result {
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != secs {
            text.clear();
            let (year, month, day) = civil_from_days(secs / 86_400);
            let of_day = secs % 86_400;
            write!(
                text,
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
                of_day / 3600,
                of_day / 60 % 60,
                of_day % 60
            )?;
            *second = secs;
        }
        out.write_str(text)?;
        let mut fraction = *b"000000Z";
        let mut rest = micros.min(999_999);
        for digit in fraction[..6].iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        out.write_str(std::str::from_utf8(&fraction).map_err(|_| fmt::Error)?)
    })
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March, so that February's leap day comes last.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Log lines captured in memory, for the unit tests that read what was logged.
#[cfg(test)]
pub(crate) mod captured {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    /// Lines written to memory.
    #[derive(Clone, Default)]
    pub(crate) struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    impl Lines {
        pub(crate) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::captured::Lines;
    use super::*;

    #[test]
    fn requests_actix_could_not_parse_are_not_logged_as_errors_at_the_plain_levels() {
        assert_eq!(
            with_quiet_parse_errors("info"),
            "info,actix_http::h1::dispatcher=off"
        );
        assert_eq!(
            with_quiet_parse_errors("WARN"),
            "WARN,actix_http::h1::dispatcher=off"
        );
        for written in ["debug", "trace", "off", "syno_chat_gateway=debug,warn"] {
            assert_eq!(with_quiet_parse_errors(written), written);
        }
    }
    use crate::telemetry::RequestInfo;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("the call failed")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// The events every test logs: the access line inside the request's span, and fields of
    /// every kind outside it.
    fn log_events() {
        request_span(Some([127, 0, 0, 1].into())).in_scope(request_lines);
        let error = Outer(std::io::Error::other("connection reset"));
        tracing::error!(
            error = &error as &(dyn std::error::Error + 'static),
            quoted = "say \"hi\" \\ there",
            plain = "a b",
            empty = "",
            unicode = "grüße ✓ ©",
            flag = true,
            big = u128::MAX,
            negative = -5i64,
            largest = u64::MAX,
            smallest = i64::MIN,
            ratio = 1e-7,
            whole = 3.0,
            debug = ?vec![1, 2],
            "mixed {} fields",
            "many"
        );
        tracing::debug!(r#type = "raw name", "a raw identifier");
    }

    type Builder = tracing_subscriber::fmt::SubscriberBuilder<
        tracing_subscriber::fmt::format::DefaultFields,
        tracing_subscriber::fmt::format::Format,
        tracing_subscriber::filter::LevelFilter,
        Lines,
    >;

    /// tracing-subscriber's own text lines.
    fn tracing_text(builder: Builder) -> Box<dyn Subscriber + Send + Sync> {
        Box::new(builder.finish())
    }

    /// tracing-subscriber's own JSON lines, as the gateway's (without the span list).
    fn tracing_json(builder: Builder) -> Box<dyn Subscriber + Send + Sync> {
        Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        )
    }

    /// The lines `events` writes through a subscriber made by `build`.
    fn written_of(
        build: impl FnOnce(Builder) -> Box<dyn Subscriber + Send + Sync>,
        events: impl FnOnce(),
    ) -> String {
        let lines = Lines::default();
        let builder = tracing_subscriber::fmt()
            .with_max_level(Level::DEBUG)
            .with_ansi(false)
            .with_writer(lines.clone());
        tracing::subscriber::with_default(build(builder), events);
        lines.text()
    }

    fn ours(style: Style) -> String {
        ours_of(LineFormat::plain(style), log_events)
    }

    fn ours_of(format: LineFormat, events: impl FnOnce()) -> String {
        let style = format.style;
        written_of(
            |b| {
                Box::new(
                    b.event_format(format)
                        .fmt_fields(LineFields(style))
                        .finish(),
                )
            },
            events,
        )
    }

    const REQUEST_ID: &str = "48eb4ecf-5667-4e62-862e-8a8cc80c192d";

    /// Lines logged while a request is served, behind a proxy with a public prefix (which the
    /// log leaves out); with a client address and without.
    fn request_events() {
        for client_ip in [Some([127, 0, 0, 1].into()), None] {
            let request = RequestInfo::new(
                REQUEST_ID.into(),
                "GET",
                "/chat",
                "/api/v1/channels",
                client_ip,
            );
            crate::telemetry::in_request(request, request_lines);
        }
    }

    /// The same lines, logged inside a tracing span with the request's fields, as the gateway
    /// logged them before the request's fields were a task-local.
    fn request_span_events() {
        for client_ip in [Some([127, 0, 0, 1].into()), None] {
            request_span(client_ip).in_scope(request_lines);
        }
    }

    /// A span with the request's fields, as the gateway's request span had them.
    fn request_span(client_ip: Option<std::net::IpAddr>) -> tracing::Span {
        tracing::info_span!(
            "request",
            request_id = %REQUEST_ID,
            method = "GET",
            path = %"/api/v1/channels",
            client_ip = client_ip.map(tracing::field::display),
        )
    }

    /// Lines a request logs: its access line and a warning.
    fn request_lines() {
        tracing::info!(status = 200u16, elapsed_ms = 0.319199, "request finished");
        tracing::warn!(dsm_code = 119i64, "DSM session lost; logging in again");
    }

    /// `2026-12-05T15:13:21.684345Z` at the start of each line, checked and cut off.
    fn without_time(lines: &str, json: bool) -> Vec<String> {
        lines
            .lines()
            .map(|line| {
                let (prefix, at) = if json {
                    ("{\"timestamp\":\"", 14)
                } else {
                    ("", 0)
                };
                assert!(line.starts_with(prefix), "{line}");
                let time = &line[at..at + 27];
                assert!(
                    time.len() == 27
                        && time.as_bytes()[10] == b'T'
                        && time.ends_with('Z')
                        && time.as_bytes()[19] == b'.',
                    "{line}"
                );
                format!("{}{}", &line[..at], &line[at + 27..])
            })
            .collect()
    }

    #[test]
    fn text_lines_are_tracing_subscribers_full_format() {
        let reference = written_of(tracing_text, log_events);
        let ours = ours(Style::Text);
        assert_eq!(without_time(&ours, false), without_time(&reference, false));
        assert!(ours.contains(
            " INFO request{request_id=48eb4ecf-5667-4e62-862e-8a8cc80c192d method=\"GET\" \
             path=/api/v1/channels client_ip=127.0.0.1}: syno_chat_gateway::logging::tests: \
             request finished status=200 elapsed_ms=0.319199\n"
        ));
        assert!(ours.contains(
            "error=the call failed error.sources=[connection reset] \
             quoted=\"say \\\"hi\\\" \\\\ there\" plain=\"a b\""
        ));
    }

    #[test]
    fn json_lines_are_tracing_subscribers_json_without_the_span_list() {
        let reference = written_of(tracing_json, log_events);
        let ours = ours(Style::Json);
        let parse = |lines: &str| -> Vec<serde_json::Value> {
            lines
                .lines()
                .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
                .collect()
        };
        let (ours_parsed, reference) = (parse(&ours), parse(&reference));
        assert_eq!(ours_parsed.len(), 4);
        for (mut ours, mut reference) in ours_parsed.into_iter().zip(reference) {
            for line in [&mut ours, &mut reference] {
                line.as_object_mut().unwrap().remove("timestamp");
            }
            // An error's causes too, as the text has them (tracing-subscriber's JSON drops them).
            if let Some(error) = ours.as_object_mut().unwrap().remove("error") {
                assert_eq!(error, "the call failed error.sources=[connection reset]");
                assert_eq!(
                    reference.as_object_mut().unwrap().remove("error").unwrap(),
                    "the call failed"
                );
            }
            assert_eq!(ours, reference);
        }
        assert!(
            ours.lines()
                .all(|line| line.starts_with("{\"timestamp\":\"") && line.ends_with('}'))
        );
    }

    /// The request's fields come from its task-local, not a span, and the lines are the ones
    /// the span gave: tracing-subscriber's own, as text and as JSON.
    #[test]
    fn lines_inside_a_request_are_those_of_the_request_span() {
        let reference = written_of(tracing_text, request_span_events);
        let ours = ours_of(LineFormat::plain(Style::Text), request_events);
        assert_eq!(without_time(&ours, false), without_time(&reference, false));
        assert_eq!(ours.lines().count(), 4, "{ours}");
        assert!(ours.contains(
            " INFO request{request_id=48eb4ecf-5667-4e62-862e-8a8cc80c192d method=\"GET\" \
             path=/api/v1/channels client_ip=127.0.0.1}: syno_chat_gateway::logging::tests: \
             request finished status=200 elapsed_ms=0.319199\n"
        ));

        let reference = written_of(tracing_json, request_span_events);
        let ours = ours_of(LineFormat::plain(Style::Json), request_events);
        let parse = |lines: &str| -> Vec<serde_json::Value> {
            lines
                .lines()
                .map(|line| {
                    let mut line: serde_json::Value = serde_json::from_str(line).unwrap();
                    line.as_object_mut().unwrap().remove("timestamp");
                    line
                })
                .collect()
        };
        assert_eq!(parse(&ours), parse(&reference));
        assert_eq!(parse(&ours)[0]["span"]["request_id"], REQUEST_ID);
    }

    /// On a terminal: the same text, its time and target dimmed, its level coloured, the
    /// request's span name bold.
    #[test]
    fn coloured_lines_are_the_text_lines_painted() {
        let plain = ours_of(LineFormat::plain(Style::Text), request_events);
        let coloured = ours_of(
            LineFormat {
                style: Style::Text,
                colours: true,
            },
            request_events,
        );
        let unpainted = [
            DIM,
            BOLD,
            RESET,
            level_colour(&Level::INFO),
            level_colour(&Level::WARN),
        ]
        .iter()
        .fold(coloured.clone(), |text, code| text.replace(code, ""));
        assert_eq!(without_time(&unpainted, false), without_time(&plain, false));
        assert!(coloured.contains("\x1b[32m INFO\x1b[0m \x1b[1mrequest{\x1b[0mrequest_id="));
        assert!(coloured.contains("\x1b[33m WARN\x1b[0m"));
    }

    /// A value cannot start a line of its own or send a terminal an escape sequence.
    #[test]
    fn control_characters_are_escaped_in_both_styles() {
        let hostile = "one\ntwo\r\u{1b}[31mred\u{9b}\u{7f}\ttab\u{0}";
        for style in [Style::Text, Style::Json] {
            let lines = Lines::default();
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(lines.clone())
                .event_format(LineFormat::plain(style))
                .fmt_fields(LineFields(style))
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                let span = tracing::info_span!("request", path = %hostile);
                span.in_scope(|| tracing::info!(value = %hostile, "{hostile}"));
                let request = RequestInfo::new(REQUEST_ID.into(), "GET", "", hostile, None);
                crate::telemetry::in_request(request, || tracing::info!("in a request"));
            });
            let text = lines.text();
            assert_eq!(text.lines().count(), 2, "{text}");
            assert!(!text.contains(['\r', '\u{1b}', '\u{9b}', '\0']), "{text:?}");
            if style == Style::Json {
                let lines: Vec<serde_json::Value> = text
                    .lines()
                    .map(|line| serde_json::from_str(line).unwrap())
                    .collect();
                assert_eq!(lines[0]["message"], hostile);
                assert_eq!(lines[0]["value"], hostile);
                assert_eq!(lines[0]["span"]["path"], hostile);
                assert_eq!(lines[1]["span"]["path"], hostile);
            } else {
                assert!(text.contains(r"value=one\ntwo\r\x1b[31mred\u{9b}\x7f	tab\x00"));
                assert!(text.contains(r"path=one\ntwo\r\x1b[31mred\u{9b}\x7f	tab\x00}"));
            }
        }
    }

    /// A sink whose writes wait until it is let go, as a pipe nobody reads does; `entered` is
    /// set once a write waits.
    #[derive(Clone, Default)]
    struct Stuck {
        lines: Lines,
        entered: Arc<std::sync::atomic::AtomicBool>,
        open: Arc<(Mutex<bool>, std::sync::Condvar)>,
    }

    impl std::io::Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.entered
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let (open, opened) = &*self.open;
            let mut is_open = open.lock().unwrap();
            while !*is_open {
                is_open = opened.wait(is_open).unwrap();
            }
            self.lines.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Until `done`, for at most ten seconds.
    fn wait_for(done: impl Fn() -> bool) {
        let start = std::time::Instant::now();
        while !done() {
            assert!(start.elapsed().as_secs() < 10, "waited ten seconds");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn batched_lines_are_written_whole_in_order_and_all_by_the_exit() {
        use std::io::Write;
        let lines = Lines::default();
        let (writer, at_exit) = start_batches(lines.clone(), 1 << 20, Duration::from_millis(1));
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let mut writer = writer.clone();
                std::thread::spawn(move || {
                    for n in 0..2000 {
                        let line = format!("thread {thread} line {n:04}\n");
                        writer.write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(at_exit);
        let text = lines.text();
        assert_eq!(text.lines().count(), 8000);
        for thread in 0..4 {
            let own: Vec<_> = text
                .lines()
                .filter(|line| line.starts_with(&format!("thread {thread} ")))
                .collect();
            let expected: Vec<_> = (0..2000)
                .map(|n| format!("thread {thread} line {n:04}"))
                .collect();
            assert_eq!(own, expected);
        }
    }

    #[test]
    fn a_stuck_reader_drops_and_reports_lines_over_the_capacity_and_stalls_no_writer() {
        use std::io::Write;
        let sink = Stuck::default();
        let (mut writer, at_exit) = start_batches(sink.clone(), 1000, Duration::from_millis(1));
        let reports = Arc::new(Mutex::new(Vec::new()));
        let reported = reports.clone();
        let dropped_before = dropped_lines();
        report_gaps(Duration::from_millis(20), move |dropped| {
            reported.lock().unwrap().push(dropped)
        });
        // The first line is taken and stuck in the sink; ten more fit in the 1,000 bytes.
        let line = format!("{}\n", "x".repeat(99));
        writer.write_all(line.as_bytes()).unwrap();
        wait_for(|| sink.entered.load(std::sync::atomic::Ordering::SeqCst));
        for _ in 0..1000 {
            writer.write_all(line.as_bytes()).unwrap();
        }
        assert_eq!(dropped_lines() - dropped_before, 990);
        wait_for(|| !reports.lock().unwrap().is_empty());
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            *reports.lock().unwrap(),
            [990],
            "one report, of all of them"
        );
        *sink.open.0.lock().unwrap() = true;
        sink.open.1.notify_all();
        drop(at_exit);
        assert_eq!(sink.lines.text().lines().count(), 11);
        assert!(sink.lines.text().lines().all(|l| l == &line[..99]));
    }

    /// A reader stuck for good does not keep the process from ending.
    #[test]
    fn the_exit_waits_for_a_stuck_reader_only_so_long() {
        use std::io::Write;
        let sink = Stuck::default();
        let (mut writer, at_exit) = start_batches(sink.clone(), 1000, Duration::from_millis(1));
        writer.write_all(b"stuck\n").unwrap();
        wait_for(|| sink.entered.load(std::sync::atomic::Ordering::SeqCst));
        let exiting = std::time::Instant::now();
        drop(at_exit);
        let waited = exiting.elapsed();
        assert!(waited >= EXIT_WAIT && waited < EXIT_WAIT * 3, "{waited:?}");
        *sink.open.0.lock().unwrap() = true;
        sink.open.1.notify_all();
    }

    /// A dependency's `log` record: its own level and target, without the bridge's `log.*` fields.
    #[test]
    fn log_records_keep_their_level_and_target() {
        let _ = tracing_log::LogTracer::init();
        for (style, expected) in [
            (Style::Text, " WARN some_crate::pool: pool exhausted\n"),
            (
                Style::Json,
                "\",\"level\":\"WARN\",\"message\":\"pool exhausted\",\"target\":\"some_crate::pool\"}\n",
            ),
        ] {
            let lines = Lines::default();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(lines.clone())
                .event_format(LineFormat::plain(style))
                .fmt_fields(LineFields(style))
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                tracing_log::log::warn!(target: "some_crate::pool", "pool exhausted");
            });
            let text = lines.text();
            assert!(text.ends_with(expected), "{text}");
        }
    }

    #[test]
    fn durations_are_logged_in_milliseconds_to_the_microsecond() {
        let millis = |nanos| format!("{:?}", millis(std::time::Duration::from_nanos(nanos)));
        assert_eq!(millis(247_757), "0.247");
        assert_eq!(millis(1_017_021), "1.017");
        assert_eq!(millis(12_000_000), "12.0");
        assert_eq!(millis(3_600_000_000_123), "3600000.0");
    }

    /// Every duration to the microsecond up to 1 s, and spread up to the bound, and values
    /// that are not thousandths, as `{:?}` writes them.
    #[test]
    fn floats_are_written_as_debug_writes_them() {
        let check = |value: f64| {
            let mut ours = String::new();
            write_f64(&mut ours, value).unwrap();
            assert_eq!(ours, format!("{value:?}"), "{value:e}");
        };
        for micros in 0..1_000_000u64 {
            check(millis(Duration::from_micros(micros)));
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            check((state % 1_000_000_000_000) as f64 / 1000.0);
            check(millis(Duration::from_micros(state >> 20)));
            check(f64::from_bits(state));
        }
        for value in [
            -0.0,
            0.0,
            -1.5,
            1e-7,
            1e-4,
            0.0001,
            999_999_999.999,
            1e9,
            1e12,
            1e15,
            1e16,
            1e300,
            0.1 + 0.2,
            1.0 / 3.0,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::INFINITY,
            f64::NAN,
        ] {
            check(value);
        }
    }

    fn address(ip: std::net::IpAddr) -> String {
        let mut text = String::new();
        write_address(&mut text, ip).unwrap();
        text
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for octet in 0..=255u8 {
            for ip in [
                std::net::IpAddr::from([octet, 0, 255 - octet, octet / 3]),
                std::net::IpAddr::from([10, octet, 1, octet]),
            ] {
                assert_eq!(address(ip), ip.to_string());
            }
        }
        let v6: std::net::IpAddr = "2001:db8::7".parse().unwrap();
        assert_eq!(address(v6), "2001:db8::7");
    }

    #[test]
    fn non_finite_numbers_are_null_in_json() {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(lines.clone())
            .event_format(LineFormat::plain(Style::Json))
            .fmt_fields(LineFields(Style::Json))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(nan = f64::NAN, inf = f64::INFINITY, "odd numbers")
        });
        let line: serde_json::Value = serde_json::from_str(&lines.text()).unwrap();
        assert!(line["nan"].is_null() && line["inf"].is_null(), "{line}");
    }

    #[test]
    fn times_are_rfc3339_utc_with_microseconds() {
        let at = |secs, micros| {
            let mut text = String::new();
            write_utc(&mut text, secs, micros).unwrap();
            text
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_399, 999_999), "2000-02-28T23:59:59.999999Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(1_796_480_192, 723_000), "2026-12-05T14:16:32.723000Z");
        // 2100 is not a leap year; the second before is cached, the next one is not.
        assert_eq!(at(4_107_542_399, 1), "2100-02-28T23:59:59.000001Z");
        assert_eq!(at(4_107_542_400, 1), "2100-03-01T00:00:00.000001Z");
        assert_eq!(at(4_107_542_400, 2), "2100-03-01T00:00:00.000002Z");
        // Every day for 400 years (a whole Gregorian cycle) against the day before.
        let mut previous = civil_from_days(0);
        for day in 1..146_097 {
            let (year, month, date) = civil_from_days(day);
            let next_day = (previous.0, previous.1, previous.2 + 1);
            let next_month = (previous.0, previous.1 + 1, 1);
            let next_year = (previous.0 + 1, 1, 1);
            assert!(
                [next_day, next_month, next_year].contains(&(year, month, date)),
                "day {day}: {previous:?} then {:?}",
                (year, month, date)
            );
            assert!((1..=12).contains(&month) && (1..=31).contains(&date));
            previous = (year, month, date);
        }
        assert_eq!(previous, (2369, 12, 31));
    }
}
