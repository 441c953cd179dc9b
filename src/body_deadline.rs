//! A deadline over reading every request body (`server.body_timeout_ms`), put on the payload
//! by the front door so that no route, extractor or middleware can read a body without one.
//!
//! A body must keep moving (no pause longer than the timeout) and must have arrived within the
//! timeout in total; a `multipart/form-data` upload, which may be large, gets
//! `server.upload_timeout_ms` in total instead. When either runs out the stream ends with an
//! error and the request is marked, so whoever was reading answers 408 `request_timeout`
//! ([`read_failed`]) and the connection is closed.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::HttpMessage;
use actix_web::HttpRequest;
use actix_web::dev::{Payload, ServiceRequest};
use actix_web::error::PayloadError;
use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use crate::api::error::{ApiError, ProblemCode};

/// The configured deadlines (app data).
#[derive(Clone, Copy, Debug)]
pub struct BodyDeadlines {
    /// Longest pause, and for ordinary bodies the longest read in total.
    pub timeout: Duration,
    /// The longest read of a `multipart/form-data` upload in total.
    pub upload_timeout: Duration,
}

/// Set on a request whose body read ran out of time.
#[derive(Clone, Default)]
struct TimedOut(Rc<Cell<bool>>);

impl BodyDeadlines {
    /// Puts the deadline on `req`'s payload (a request without a body is left alone).
    pub fn apply(&self, req: &mut ServiceRequest) {
        let payload = req.take_payload();
        if matches!(payload, Payload::None) {
            return;
        }
        let upload = req
            .mime_type()
            .ok()
            .flatten()
            .is_some_and(|m| m.essence_str() == "multipart/form-data");
        let total = if upload {
            self.upload_timeout.max(self.timeout)
        } else {
            self.timeout
        };
        let flag = TimedOut::default();
        req.extensions_mut().insert(flag.clone());
        let stream = Deadlined::new(payload, self.timeout, total, flag.0);
        req.set_payload(Payload::Stream {
            payload: Box::pin(stream),
        });
    }
}

/// Whether `req`'s body read ran out of time.
pub fn timed_out(req: &HttpRequest) -> bool {
    req.extensions()
        .get::<TimedOut>()
        .is_some_and(|flag| flag.0.get())
}

/// The problem for a body that could not be read: 408 `request_timeout` when its deadline ran
/// out, else `otherwise`. Every reader of a body maps its read errors through this.
pub fn read_failed(req: &HttpRequest, otherwise: ApiError) -> ApiError {
    if timed_out(req) {
        timeout_problem()
    } else {
        otherwise
    }
}

/// 408 `request_timeout`.
pub fn timeout_problem() -> ApiError {
    ApiError::new(
        ProblemCode::RequestTimeout,
        "the request body did not arrive in time (server.body_timeout_ms)",
    )
}

/// A payload stream that fails once it stalls for `idle` or has taken `total`.
struct Deadlined<S> {
    inner: S,
    idle: Duration,
    ends: Instant,
    timer: Pin<Box<Sleep>>,
    flag: Rc<Cell<bool>>,
    done: bool,
}

impl<S> Deadlined<S> {
    fn new(inner: S, idle: Duration, total: Duration, flag: Rc<Cell<bool>>) -> Self {
        let now = Instant::now();
        let ends = now + total;
        Self {
            inner,
            idle,
            ends,
            timer: Box::pin(tokio::time::sleep_until(ends.min(now + idle))),
            flag,
            done: false,
        }
    }
}

impl<S> Stream for Deadlined<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let next = this.ends.min(Instant::now() + this.idle);
                this.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(other) => {
                this.done = true;
                Poll::Ready(other)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.done = true;
                    this.flag.set(true);
                    Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the request body did not arrive in time",
                    )))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn trickle() -> impl Stream<Item = Result<Bytes, PayloadError>> + Unpin {
        Box::pin(futures_util::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Some((Ok(Bytes::from_static(b"x")), ()))
        }))
    }

    #[actix_web::test]
    async fn a_trickle_ends_at_the_total_deadline() {
        let flag = Rc::new(Cell::new(false));
        let mut stream = Deadlined::new(
            trickle(),
            Duration::from_millis(200),
            Duration::from_millis(300),
            flag.clone(),
        );
        let started = std::time::Instant::now();
        let mut chunks = 0;
        let error = loop {
            match stream.next().await {
                Some(Ok(_)) => chunks += 1,
                Some(Err(error)) => break error,
                None => panic!("the stream ended without an error"),
            }
        };
        assert!(chunks > 3, "bytes that move are passed on");
        assert!(
            matches!(error, PayloadError::Io(ref e) if e.kind() == std::io::ErrorKind::TimedOut)
        );
        assert!(flag.get());
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(stream.next().await.is_none());
    }

    #[actix_web::test]
    async fn a_stall_ends_at_the_idle_deadline() {
        let flag = Rc::new(Cell::new(false));
        let stalled = Box::pin(futures_util::stream::pending::<Result<Bytes, PayloadError>>());
        let mut stream = Deadlined::new(
            stalled,
            Duration::from_millis(100),
            Duration::from_secs(60),
            flag.clone(),
        );
        let started = std::time::Instant::now();
        assert!(matches!(stream.next().await, Some(Err(_))));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(flag.get());
    }
}
