//! A deadline over the heads of a connection's later requests.
//!
//! actix-http gives a connection's first request head 5 s and closes a keep-alive connection
//! that stays silent for `server.keep_alive_secs`; but once a byte of a later request has
//! arrived, neither runs (its dispatcher sets the head timer for the first request only). A
//! caller that sends a request, then the next one's head a byte at a time, held the connection
//! for as long as it liked, and with enough such connections every one the gateway accepts.
//!
//! So each client connection gets a [`ConnectionClock`]: the front door counts the requests
//! being served on it and notes when the last answer's body was handed over. A sweeper looks
//! once a second at the connections between requests: where bytes have arrived since the last
//! answer (the kernel's `TCP_INFO` says when data last came), a head has begun, and it gets
//! the first head's 5 s from when the sweeper first saw it; a connection between requests for
//! longer than keep-alive plus those 5 s is closed in any case (where `TCP_INFO` is not
//! available). Closing is shutting the socket down, which actix sees as the client leaving.
//!
//! The same sweeper closes a connection whose request body ran out of time (408) once the answer
//! is handed over: actix says `Connection: close` but, for a chunked body, goes on reading it
//! and serves the next request on the connection.

use std::net::Shutdown;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::web::Bytes;

/// actix-web's own deadline for a connection's first request head.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(5);

/// How often the sweeper looks.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Not between requests: before the first (actix times that head) or while one is served.
const NOT_IDLE: u64 = u64::MAX;

/// Milliseconds on a monotonic clock of the process.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(NOT_IDLE - 1)
}

/// One client connection's requests, as the front door sees them.
#[derive(Debug)]
pub struct ConnectionClock {
    /// A second descriptor of the connection's socket, to shut it down from outside the
    /// connection's task (shutting down ends the connection for both descriptors; the
    /// connection's own closes when its task ends).
    socket: std::net::TcpStream,
    /// For the log line when it is cut off.
    peer: Option<std::net::SocketAddr>,
    requests: AtomicU32,
    idle_since_ms: AtomicU64,
    /// When the sweeper first saw bytes of the next request's head ([`NOT_IDLE`]: not yet).
    head_begun_ms: AtomicU64,
    /// To be closed once between requests ([`Self::close_when_answered`]).
    closing: AtomicBool,
}

/// Why the sweeper closes a connection.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Cut {
    HeadTooSlow,
    BodyTimedOut,
}

impl ConnectionClock {
    /// A request on this connection is being served.
    pub fn request_started(&self) {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.idle_since_ms.store(NOT_IDLE, Ordering::Release);
        self.head_begun_ms.store(NOT_IDLE, Ordering::Release);
    }

    /// The answer's body was handed over (sent, or dropped with the connection).
    pub fn request_finished(&self) {
        if self.requests.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since_ms.store(now_ms(), Ordering::Release);
        }
    }

    /// The connection is to be closed once its answer is handed over: its request's body ran
    /// out of time, and the rest of it must not be read as another request.
    pub fn close_when_answered(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Why the connection is to be closed now, if it is: it has been between requests for
    /// longer than `allowed`, its next head has taken longer than [`HEAD_DEADLINE`], or it was
    /// marked to close once answered.
    fn stalled(&self, now: u64, allowed: Duration) -> Option<Cut> {
        let since = match self.idle_since_ms.load(Ordering::Acquire) {
            NOT_IDLE => return None,
            since => since,
        };
        if self.closing.load(Ordering::Acquire) {
            return Some(Cut::BodyTimedOut);
        }
        let idle = now.saturating_sub(since);
        if Duration::from_millis(idle) > allowed {
            return Some(Cut::HeadTooSlow);
        }
        let begun = match self.head_begun_ms.load(Ordering::Acquire) {
            NOT_IDLE => match last_data_received_ms_ago(&self.socket) {
                // Data came after the last answer was handed over: the next head's.
                Some(ago) if ago < idle => {
                    let begun = now.saturating_sub(ago);
                    self.head_begun_ms.store(begun, Ordering::Release);
                    begun
                }
                _ => return None,
            },
            begun => begun,
        };
        (Duration::from_millis(now.saturating_sub(begun)) > HEAD_DEADLINE)
            .then_some(Cut::HeadTooSlow)
    }

    /// Wraps an answer's body so that its end (or its drop) marks the request finished.
    pub fn watch(self: Arc<Self>, body: BoxBody) -> BoxBody {
        BoxBody::new(Watched {
            body,
            clock: Some(self),
        })
    }
}

/// The client connections of one server and the sweeper that closes the stalled ones.
#[derive(Debug)]
pub struct LaterHeads {
    clocks: Mutex<Vec<Weak<ConnectionClock>>>,
    /// How long a connection may be between requests: keep-alive plus the head deadline.
    allowed: Duration,
}

impl LaterHeads {
    /// For a server whose keep-alive is `keep_alive` (zero: off); the sweeper runs on the
    /// current actix system until the returned value and every clone of it are dropped.
    pub fn start(keep_alive: Duration) -> Arc<Self> {
        let heads = Arc::new(Self {
            clocks: Mutex::new(Vec::new()),
            allowed: keep_alive + HEAD_DEADLINE,
        });
        let watching = Arc::downgrade(&heads);
        actix_web::rt::spawn(async move {
            let mut every = actix_web::rt::time::interval(SWEEP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                match watching.upgrade() {
                    Some(heads) => heads.sweep(),
                    None => return,
                }
            }
        });
        heads
    }

    /// Gives a new connection (actix's `on_connect`) its clock; a connection that is not a TCP
    /// socket, or whose descriptor cannot be duplicated (no descriptors left), goes unwatched.
    pub fn on_connect(
        &self,
        connection: &dyn std::any::Any,
        data: &mut actix_web::dev::Extensions,
    ) {
        let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() else {
            return;
        };
        let Ok(socket) = tcp.as_fd().try_clone_to_owned() else {
            return;
        };
        let clock = Arc::new(ConnectionClock {
            socket: socket.into(),
            peer: tcp.peer_addr().ok(),
            requests: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(NOT_IDLE),
            head_begun_ms: AtomicU64::new(NOT_IDLE),
            closing: AtomicBool::new(false),
        });
        self.clocks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&clock));
        data.insert(clock);
    }

    fn sweep(&self) {
        let now = now_ms();
        let mut stalled = Vec::new();
        self.clocks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|clock| match clock.upgrade() {
                Some(clock) => {
                    if let Some(cut) = clock.stalled(now, self.allowed) {
                        stalled.push((clock, cut));
                    }
                    true
                }
                None => false,
            });
        for (clock, cut) in stalled {
            // The address as the access line writes it (an absent one is left out).
            let client_ip = clock.peer.map(|peer| tracing::field::display(peer.ip()));
            match cut {
                Cut::HeadTooSlow => tracing::warn!(
                    client_ip,
                    "closing a connection whose next request head did not arrive in time"
                ),
                // The 408 was logged with the request.
                Cut::BodyTimedOut => tracing::debug!(
                    client_ip,
                    "closing a connection whose request body did not arrive in time"
                ),
            }
            // Already closed by the peer: nothing to shut down.
            let _ = clock.socket.shutdown(Shutdown::Both);
            // Told once: the connection ends now.
            clock.idle_since_ms.store(NOT_IDLE, Ordering::Release);
        }
    }
}

/// How long ago data last arrived on the socket, from the kernel (`TCP_INFO`).
#[cfg(target_os = "linux")]
fn last_data_received_ms_ago(socket: &std::net::TcpStream) -> Option<u64> {
    use std::os::fd::AsRawFd;
    // SAFETY: `tcp_info` is plain integers, for which all zeroes is a value; getsockopt writes
    // at most `length` bytes into it and says how many it wrote.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut length = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let done = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut length,
        )
    };
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_last_data_recv) + 4;
    (done == 0 && length as usize >= needed).then_some(u64::from(info.tcpi_last_data_recv))
}

#[cfg(not(target_os = "linux"))]
fn last_data_received_ms_ago(_: &std::net::TcpStream) -> Option<u64> {
    None
}

/// An answer's body, which marks its request finished when it ends.
struct Watched {
    body: BoxBody,
    clock: Option<Arc<ConnectionClock>>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(clock) = self.clock.take() {
            clock.request_finished();
        }
    }
}

impl MessageBody for Watched {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }

    fn try_into_bytes(mut self) -> Result<Bytes, Self> {
        // A body held in memory is handed over whole, as without the wrapper.
        match std::mem::replace(&mut self.body, BoxBody::new(())).try_into_bytes() {
            Ok(bytes) => Ok(bytes),
            Err(body) => {
                self.body = body;
                Err(self)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A clock over the server end of a loopback connection, and the client end.
    fn connection() -> (ConnectionClock, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let clock = ConnectionClock {
            socket: server,
            peer: Some(peer),
            requests: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(NOT_IDLE),
            head_begun_ms: AtomicU64::new(NOT_IDLE),
            closing: AtomicBool::new(false),
        };
        (clock, client)
    }

    const KEEP_ALIVE: Duration = Duration::from_secs(130);

    #[test]
    fn only_a_connection_between_requests_is_timed() {
        let (clock, _client) = connection();
        let allowed = KEEP_ALIVE + HEAD_DEADLINE;
        let far = now_ms() + 1_000_000;
        // Before its first request (actix times that head), and while one is served.
        assert_eq!(clock.stalled(far, allowed), None);
        clock.request_started();
        assert_eq!(clock.stalled(far, allowed), None);
        clock.request_finished();
        // Between requests: silent for keep-alive plus the head deadline at most.
        let since = clock.idle_since_ms.load(Ordering::Acquire);
        assert_eq!(clock.stalled(since + 134_000, allowed), None);
        assert_eq!(
            clock.stalled(since + 136_000, allowed),
            Some(Cut::HeadTooSlow)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_head_begun_gets_the_head_deadline_from_when_it_was_seen() {
        let (clock, mut client) = connection();
        let allowed = KEEP_ALIVE + HEAD_DEADLINE;
        clock.request_started();
        clock.request_finished();
        std::thread::sleep(Duration::from_millis(100));
        let now = now_ms();
        // Nothing has arrived since the answer: no head yet (the kernel's clock is the real
        // one, so only the real time is asked here).
        assert_eq!(clock.stalled(now, allowed), None);
        assert_eq!(clock.head_begun_ms.load(Ordering::Acquire), NOT_IDLE);
        client.write_all(b"GET / HT").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let seen = now_ms();
        assert_eq!(clock.stalled(seen, allowed), None);
        assert_eq!(clock.stalled(seen + 4_500, allowed), None);
        assert_eq!(clock.stalled(seen + 5_500, allowed), Some(Cut::HeadTooSlow));
        // A request that starts clears it.
        clock.request_started();
        clock.request_finished();
        assert_eq!(clock.head_begun_ms.load(Ordering::Acquire), NOT_IDLE);
    }

    #[test]
    fn a_connection_whose_body_timed_out_is_closed_once_answered() {
        let (clock, _client) = connection();
        let allowed = KEEP_ALIVE + HEAD_DEADLINE;
        clock.request_started();
        clock.close_when_answered();
        // Not while the answer is being handed over.
        assert_eq!(clock.stalled(now_ms(), allowed), None);
        clock.request_finished();
        assert_eq!(clock.stalled(now_ms(), allowed), Some(Cut::BodyTimedOut));
    }
}
