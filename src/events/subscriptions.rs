//! HTTP subscriptions: events POSTed as JSON to a URL, signed as the Standard Webhooks
//! specification says (<https://www.standardwebhooks.com/>), and `respond: true` subscriptions
//! called synchronously so their `{"text": …}` answer goes back to Chat.
//!
//! This module signs and sends one request; retrying is the outbox's job (`delivery`), and
//! the store makes the one delivery per (subscription, event).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::{Event, EventFilter, Events, now_ms};
use crate::config::SubscriptionsSettings;
use crate::store::subscriptions::SubscriptionDelivery;

/// A subscription as stored.
#[derive(Clone, Debug)]
pub struct Subscription {
    /// A UUID.
    pub id: String,
    pub url: String,
    /// `whsec_<base64>`: shown once, when the subscription is created.
    pub secret: SecretString,
    pub filter: EventFilter,
    pub respond: bool,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub consecutive_failures: i64,
    pub last_delivered_event_id: Option<i64>,
    pub created_at: i64,
    /// When it was disabled (ms), while it is.
    pub disabled_at: Option<i64>,
    /// The secret a rotation replaced, and until when (ms) it still signs beside `secret`.
    pub previous_secret: Option<(SecretString, i64)>,
    /// Events up to this id were deleted by the retention before it was handed them.
    pub events_missed_through: Option<i64>,
}

impl Subscription {
    /// `webhook-signature` for a delivery at `timestamp` (Unix seconds): signed with the secret
    /// and, while a rotation's grace lasts, with the one it replaced too (space-separated, as
    /// Standard Webhooks lets a receiver accept either).
    pub fn signatures(&self, id: &str, timestamp: i64, body: &str) -> String {
        let current = signature(&self.secret, id, timestamp, body);
        match &self.previous_secret {
            Some((previous, until)) if now_ms() < *until => {
                format!("{current} {}", signature(previous, id, timestamp, body))
            }
            _ => current,
        }
    }
}

impl Subscription {
    /// The outbox target: one per subscription, so its deliveries go out in order.
    pub fn target(&self) -> String {
        target(&self.id)
    }
}

/// What every subscription's outbox target starts with.
pub const TARGET_PREFIX: &str = "subscription:";

pub fn target(subscription_id: &str) -> String {
    format!("{TARGET_PREFIX}{subscription_id}")
}

/// Whether an outbox target is a subscription's (see `target`).
pub fn is_target(target: &str) -> bool {
    target.starts_with(TARGET_PREFIX)
}

/// The outbox job of a subscription delivery (stored as JSON in the delivery).
pub fn job(subscription_id: &str, event_id: i64) -> crate::delivery::Job {
    crate::delivery::Job::Subscription {
        subscription_id: subscription_id.to_owned(),
        event_id,
    }
}

/// A new signing secret: 32 random bytes, as Standard Webhooks libraries read them.
pub fn new_secret() -> SecretString {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    SecretString::from(format!("whsec_{}", BASE64.encode(bytes)))
}

/// `webhook-id`: the same for every attempt at one event for one subscription (retries and a
/// synchronous reply included), so receivers can drop duplicates.
pub fn message_id(subscription_id: &str, event_id: i64) -> String {
    format!("msg_{event_id}_{}", subscription_id.replace('-', ""))
}

/// `webhook-signature`: `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` keyed with
/// the base64-decoded part of the secret after `whsec_`.
pub fn signature(secret: &SecretString, id: &str, timestamp: i64, body: &str) -> String {
    let raw = secret.expose_secret();
    let key = BASE64
        .decode(raw.strip_prefix("whsec_").unwrap_or(raw))
        .unwrap_or_else(|_| raw.as_bytes().to_vec());
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// The JSON body a subscription receives for an event: the Standard Webhooks convention.
#[derive(Serialize)]
struct Body<'a> {
    /// `chat.<kind>`, e.g. `chat.slash_command`.
    #[serde(rename = "type")]
    kind: String,
    /// When the gateway received the event, RFC 3339 (UTC, milliseconds).
    timestamp: String,
    data: &'a Event,
}

pub fn body(event: &Event) -> String {
    serde_json::to_string(&Body {
        kind: format!("chat.{}", event.kind.as_str()),
        timestamp: crate::domain::rfc3339_ms(event.received_at),
        data: event,
    })
    .unwrap_or_default()
}

/// The outbox delivery of `event` to `subscription`. A `respond: true` subscription's waits
/// for the synchronous reply to be over: when that reached the subscriber, it counts as the
/// delivery and this one is never sent.
pub fn delivery(
    subscription: &Subscription,
    event: &Event,
    reply_budget_ms: i64,
    max_age_ms: i64,
) -> SubscriptionDelivery {
    let now = now_ms();
    let after_reply = event.received_at + reply_budget_ms + REPLY_MARGIN_MS;
    SubscriptionDelivery {
        id: uuid::Uuid::new_v4().to_string(),
        target: subscription.target(),
        request: serde_json::to_string(&job(&subscription.id, event.event_id)).unwrap_or_default(),
        body: body(event),
        next_attempt_at: if subscription.respond && replies_to(event) {
            after_reply.max(now)
        } else {
            now
        },
        expires_at: now + max_age_ms,
    }
}

/// Time left after the reply budget before the durable delivery may start.
const REPLY_MARGIN_MS: i64 = 2_000;

/// Chat reads the answer of every kind of call (outgoing webhooks, slash commands, chatbots and
/// their buttons).
fn replies_to(event: &Event) -> bool {
    matches!(
        event.kind,
        super::EventKind::Message
            | super::EventKind::TriggerWord
            | super::EventKind::SlashCommand
            | super::EventKind::Chatbot
            | super::EventKind::ButtonClick
    )
}

/// Why a URL is refused, if it is (at creation: the literal host; at delivery: every address
/// the name resolves to).
pub fn refuse_host(url: &url::Url) -> Option<String> {
    let internal = match url.host()? {
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            crate::domain::is_loopback_name(&name).then_some("a loopback host name")
        }
        url::Host::Ipv4(ip) => crate::domain::internal_kind(ip.into()),
        url::Host::Ipv6(ip) => {
            crate::domain::internal_kind(ip.to_ipv4_mapped().map_or(ip.into(), Into::into))
        }
    }?;
    Some(format!(
        "the URL names {internal}; the gateway would call inside its own network. \
         An operator can allow it with subscriptions.allow_private"
    ))
}

fn refuse_address(addr: &SocketAddr) -> Option<String> {
    let ip = match addr.ip() {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr.ip(), Into::into),
        v4 => v4,
    };
    crate::domain::internal_kind(ip).map(|kind| {
        format!("the host resolves to {kind} ({ip}); set subscriptions.allow_private to allow it")
    })
}

/// How one signed POST ended.
#[derive(Debug)]
pub enum Sent {
    /// A 2xx answer, with its body.
    Accepted(bytes::Bytes),
    /// Not delivered.
    Failed(NotDelivered),
}

/// Why a POST did not deliver (no secret in it).
#[derive(Debug)]
pub struct NotDelivered {
    pub reason: String,
    /// The receiver's status, when it answered.
    pub status: Option<u16>,
    /// How long the receiver asked to be left alone (`Retry-After` on 429, 502, 503, 504).
    pub retry_after: Option<Duration>,
}

impl NotDelivered {
    /// A failure before any answer from the receiver.
    fn unanswered(reason: impl Into<String>) -> Sent {
        Sent::Failed(Self {
            reason: reason.into(),
            status: None,
            retry_after: None,
        })
    }
}

/// An HTTP client for subscriptions: public CA roots and `subscriptions.ca_file`'s; HTTP/1.1;
/// redirects not followed (a redirect could lead past the address check).
pub fn client(ca_file: Option<&std::path::Path>) -> Result<awc::Client, String> {
    let config = crate::tls::public_roots_and(ca_file)?;
    Ok(awc::Client::builder()
        .disable_redirects()
        .connector(awc::Connector::new().rustls_0_23(config))
        .finish())
}

/// POSTs `body` to the subscription, signed, with the address checked after resolving (and
/// used for the connection, so a second resolution cannot point elsewhere).
pub async fn post_signed(
    client: &awc::Client,
    subscription: &Subscription,
    event_id: i64,
    body: &str,
    settings: &SubscriptionsSettings,
    timeout: Duration,
) -> Sent {
    let Ok(url) = url::Url::parse(&subscription.url) else {
        return NotDelivered::unanswered("the URL cannot be parsed");
    };
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return NotDelivered::unanswered("the URL has no host");
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addresses =
        match tokio::time::timeout(timeout, tokio::net::lookup_host((host.to_owned(), port))).await
        {
            Ok(Ok(found)) => found.collect::<Vec<_>>(),
            Ok(Err(error)) => {
                return NotDelivered::unanswered(format!("cannot resolve {host}: {error}"));
            }
            Err(_) => return NotDelivered::unanswered(format!("resolving {host} timed out")),
        };
    let Some(address) = addresses.first().copied() else {
        return NotDelivered::unanswered(format!("{host} has no address"));
    };
    if !settings.allow_private
        && let Some(reason) = addresses.iter().find_map(refuse_address)
    {
        return NotDelivered::unanswered(reason);
    }
    let id = message_id(&subscription.id, event_id);
    let timestamp = now_ms() / 1000;
    // The reply is read as sent: awc would inflate a compressed chunk whole, before the limit.
    let request = client
        .post(url.as_str())
        .address(address)
        .timeout(timeout)
        .no_decompress()
        .insert_header(("accept-encoding", "identity"))
        .insert_header(("content-type", "application/json"))
        .insert_header(("webhook-id", id.as_str()))
        .insert_header(("webhook-timestamp", timestamp.to_string()))
        .insert_header((
            "webhook-signature",
            subscription.signatures(&id, timestamp, body),
        ));
    match request.send_body(body.to_owned()).await {
        Ok(mut response) if response.status().is_success() => {
            let encoded = response
                .headers()
                .get(actix_web::http::header::CONTENT_ENCODING)
                .is_some_and(|coding| !coding.as_bytes().eq_ignore_ascii_case(b"identity"));
            // awc's timeout ends at the answer's head: a receiver that stalls in its body
            // would hold this delivery lane for good.
            let reply = match encoded {
                true => None,
                false => tokio::time::timeout(timeout, response.body().limit(64 * 1024))
                    .await
                    .ok()
                    .and_then(Result::ok),
            };
            Sent::Accepted(reply.unwrap_or_default())
        }
        Ok(response) => {
            let status = response.status().as_u16();
            let throttled = matches!(status, 429 | 502 | 503 | 504);
            Sent::Failed(NotDelivered {
                reason: format!("the receiver answered {}", response.status()),
                status: Some(status),
                retry_after: response
                    .headers()
                    .get(actix_web::http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .filter(|_| throttled)
                    .and_then(|v| crate::domain::retry_after(v, std::time::SystemTime::now())),
            })
        }
        Err(error) => NotDelivered::unanswered(format!("the request failed: {error}")),
    }
}

/// Fans every new event out to the subscriptions: when a local or remote event is broadcast,
/// and every few seconds (a new subscription, a missed wake). Runs on every replica; the
/// store makes each delivery once.
pub fn spawn_fan_out(events: Arc<Events>, outbox: Arc<crate::delivery::Outbox>) {
    crate::store::task::spawn(async move {
        let mut live = events.subscribe();
        loop {
            tokio::select! {
                _ = live.recv() => {}
                () = tokio::time::sleep(FAN_OUT_EVERY) => {}
            }
            if outbox.is_stopping() {
                // What is left waiting is fanned out by the next start (or another replica).
                break;
            }
            // Everything waiting is read from the table, whatever woke us.
            while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) =
                live.try_recv()
            {}
            if let Err(error) = fan_out(&events, &outbox).await {
                if outbox.is_stopping() {
                    break;
                }
                tracing::warn!(%error, "subscriptions: cannot fan events out");
            }
        }
    });
}

const FAN_OUT_EVERY: Duration = Duration::from_secs(2);

async fn fan_out(
    events: &Events,
    outbox: &crate::delivery::Outbox,
) -> Result<(), crate::store::StoreError> {
    let (budget, max_age) = limits(events);
    let build = |s: &Subscription, e: &Event| delivery(s, e, budget, max_age);
    let mut made = 0;
    for subscription in events.store.subscriptions().await? {
        if !subscription.enabled {
            continue;
        }
        loop {
            let n = events
                .store
                .fan_out(&subscription.id, 500, now_ms(), &build)
                .await?;
            made += n;
            if n < 500 {
                break;
            }
        }
    }
    if made > 0 {
        outbox.wake();
    }
    Ok(())
}

/// A `respond: true` subscription's `{"text": …, "file_url": …}` answer, as it came: the
/// receiver decides what Chat may be given (`file_url` is checked there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    /// A file for Chat to attach (outgoing webhooks and chatbots; not slash commands).
    pub file_url: Option<String>,
}

/// Calls the enabled `respond: true` subscriptions matching `event` at once, within the reply
/// budget counted from the event's arrival, and returns the first answer with a `text` (in the
/// subscriptions' order) as soon as it is known: when the first subscription answered with a
/// text, or every one before the first that did has finished without one. The calls still
/// running then go on in the background until the budget is over. Each call that reached its
/// subscriber is its delivery of the event, recorded as it comes (the outbox will not send it
/// again); the others are left to the outbox, which sends them after the budget with the same
/// `webhook-id`. A subscription that is failing, or has an earlier event the outbox is sending
/// or will try again, is not called: the event follows those through the outbox, in order, and
/// its failures keep counting there.
pub async fn reply(events: &Events, event: &Event) -> Option<Reply> {
    if !replies_to(event) {
        return None;
    }
    let subscriptions = match events.store.subscriptions().await {
        Ok(all) => all,
        Err(error) => {
            tracing::warn!(%error, "subscriptions: cannot read them for a reply");
            return None;
        }
    };
    let mut responders: Vec<Subscription> = Vec::new();
    let (reply_budget_ms, max_age_ms) = limits(events);
    for s in subscriptions {
        if !(s.enabled && s.respond && s.filter.matches(event)) {
            continue;
        }
        // The deliveries of this event and of every earlier one exist from here, made in
        // event order: whether an earlier one is unfinished (its call still running, or not
        // yet begun by another request or replica) is then a fact the check can see.
        let build = |s: &Subscription, e: &Event| delivery(s, e, reply_budget_ms, max_age_ms);
        let made = events
            .store
            .fan_out_through(&s.id, event.event_id, now_ms(), &build)
            .await;
        let backlog = match (made, s.consecutive_failures) {
            (Err(error), _) => Err(error),
            (Ok(()), 0) => {
                events
                    .store
                    .subscription_has_backlog(&s.id, event.event_id)
                    .await
            }
            (Ok(()), _) => Ok(true),
        };
        match backlog {
            Ok(false) => responders.push(s),
            // Not called: its delivery of this event (made above) goes through the outbox,
            // behind the earlier ones, and a later event waits behind it in turn.
            Ok(true) => {}
            Err(error) => {
                tracing::warn!(%error, "subscriptions: cannot read a backlog for a reply");
                return None;
            }
        }
    }
    if responders.is_empty() {
        return None;
    }
    // From the event's arrival: the outbox's copy becomes due a margin after the same budget.
    let spent = Duration::from_millis(now_ms().saturating_sub(event.received_at).max(0) as u64);
    let deadline = tokio::time::Instant::now() + events.reply_timeout.saturating_sub(spent);
    let client = match client(events.subscriptions.ca_file.as_deref()) {
        Ok(client) => client,
        Err(error) => {
            tracing::warn!(%error, "subscriptions: no client for a reply (subscriptions.ca_file)");
            return None;
        }
    };
    // `Rc`: the calls run on this worker (awc's client is not `Send`).
    let call = std::rc::Rc::new(ReplyCall {
        store: events.store.clone(),
        settings: events.subscriptions.clone(),
        payload: body(event),
        event: event.clone(),
        client,
        deadline,
        reply_budget_ms,
        max_age_ms,
    });
    // Each call on a task of its own: those still running when the answer is known finish
    // (and are recorded) after Chat has it, or after Chat hung up.
    let count = responders.len();
    let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
    for (at, subscription) in responders.into_iter().enumerate() {
        let (call, done) = (call.clone(), done.clone());
        crate::store::task::spawn(async move {
            let reply = call.send(&subscription).await;
            let _ = done.send((at, reply));
        });
    }
    drop(done);
    // `None` while a call runs; `Some(None)` once it finished without a text.
    let mut answers: Vec<Option<Option<Reply>>> = (0..count).map(|_| None).collect();
    while let Some((at, reply)) = finished.recv().await {
        answers[at] = Some(reply);
        // The first call, in order, that is running or answered a text decides.
        if let Some(first) = answers.iter_mut().find(|a| !matches!(a, Some(None)))
            && matches!(first, Some(Some(_)))
        {
            return first.take().flatten();
        }
    }
    None
}

/// The subscription's delivery of `event_id` gets no synchronous reply (the call failed, or
/// was not made): it counts as tried, so a later event waits behind it. The delivery may not
/// be made yet: made now, in event order. `limits`: see [`limits`].
async fn note_missed(
    store: &crate::store::Store,
    subscription_id: &str,
    event_id: i64,
    (budget, max_age): (i64, i64),
) {
    let build = |s: &Subscription, e: &Event| delivery(s, e, budget, max_age);
    let noted = async {
        store
            .fan_out_through(subscription_id, event_id, now_ms(), &build)
            .await?;
        store.note_reply_missed(subscription_id, event_id).await
    };
    if let Err(error) = noted.await {
        tracing::warn!(subscription = %subscription_id, %error, "subscriptions: cannot note a missed reply");
    }
}

/// The reply budget and `subscriptions.max_age_secs`, in milliseconds, for [`delivery`].
fn limits(events: &Events) -> (i64, i64) {
    let budget = i64::try_from(events.reply_timeout.as_millis()).unwrap_or(i64::MAX);
    let max_age =
        i64::try_from(events.subscriptions.max_age_secs).unwrap_or(i64::MAX / 2_000) * 1000;
    (budget, max_age)
}

/// What the synchronous calls of one event share.
struct ReplyCall {
    store: crate::store::Store,
    settings: SubscriptionsSettings,
    event: Event,
    payload: String,
    client: awc::Client,
    deadline: tokio::time::Instant,
    reply_budget_ms: i64,
    max_age_ms: i64,
}

impl ReplyCall {
    /// Calls `subscription` within the budget and records how it went; its answer when it has
    /// a text.
    async fn send(&self, subscription: &Subscription) -> Option<Reply> {
        let event_id = self.event.event_id;
        let left = self
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        let sent = tokio::time::timeout(
            left,
            post_signed(
                &self.client,
                subscription,
                event_id,
                &self.payload,
                &self.settings,
                left,
            ),
        )
        .await
        .unwrap_or_else(|_| NotDelivered::unanswered("no answer within the reply budget"));
        match sent {
            Sent::Accepted(body) => {
                let d = delivery(subscription, &self.event, 0, 0);
                if let Err(error) = self
                    .store
                    .record_reply(&subscription.id, event_id, &d, now_ms())
                    .await
                {
                    tracing::warn!(subscription = %subscription.id, %error, "subscriptions: cannot record a reply");
                }
                reply_body(&body)
            }
            Sent::Failed(failed) => {
                tracing::info!(
                    subscription = %subscription.id, event_id, reason = %failed.reason,
                    "subscriptions: no synchronous reply; the outbox will deliver the event"
                );
                let limits = (self.reply_budget_ms, self.max_age_ms);
                note_missed(&self.store, &subscription.id, event_id, limits).await;
                None
            }
        }
    }
}

/// [`reply`] for the event just stored as `event_id`.
pub async fn reply_to_stored(events: &Events, event_id: i64) -> Option<Reply> {
    match events
        .store
        .events_after(event_id - 1, &EventFilter::default(), 1)
        .await
    {
        Ok(found) => match found.first() {
            Some(event) if event.event_id == event_id => reply(events, event).await,
            _ => None,
        },
        Err(error) => {
            tracing::warn!(%error, "subscriptions: cannot read the event for a reply");
            None
        }
    }
}

/// A `{"text": …}` answer with a non-blank text, and its `file_url` when it is a non-blank
/// string (upstream/PROTOCOL.md [I1]).
fn reply_body(body: &[u8]) -> Option<Reply> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let text = value
        .get("text")?
        .as_str()
        .filter(|t| !t.trim().is_empty())?
        .to_owned();
    let file_url = value
        .get("file_url")
        .and_then(serde_json::Value::as_str)
        .filter(|u| !u.trim().is_empty())
        .map(str::to_owned);
    Some(Reply { text, file_url })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_the_standard_webhooks_example() {
        // The example of the specification's reference libraries (standard-webhooks tests).
        let secret = SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let sig = signature(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn timestamps_are_rfc3339_in_utc() {
        assert_eq!(crate::domain::rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            crate::domain::rfc3339_ms(1_647_060_330_657),
            "2022-03-12T04:45:30.657Z"
        );
        // A leap day, and the last millisecond of a century year.
        assert_eq!(
            crate::domain::rfc3339_ms(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            crate::domain::rfc3339_ms(4_102_444_799_999),
            "2099-12-31T23:59:59.999Z"
        );
        assert_eq!(crate::domain::rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            crate::domain::retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(crate::domain::retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            crate::domain::retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(1_445_412_600 - 1_445_412_480))
        );
        // A date in the past: now.
        assert_eq!(
            crate::domain::retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(crate::domain::retry_after("soon", now), None);
        assert_eq!(crate::domain::retry_after("-5", now), None);
    }

    #[test]
    fn secrets_are_prefixed_and_carry_32_random_bytes() {
        let a = new_secret();
        let b = new_secret();
        let raw = a.expose_secret();
        assert!(raw.starts_with("whsec_"));
        assert_eq!(BASE64.decode(&raw[6..]).unwrap().len(), 32);
        assert_ne!(raw, b.expose_secret());
    }

    #[test]
    fn internal_hosts_are_refused() {
        for url in [
            "http://localhost/x",
            "http://a.localhost/x",
            "http://127.0.0.1/",
            "http://10.1.2.3/",
            "http://192.168.1.1/",
            "http://172.16.0.1/",
            "http://169.254.169.254/latest",
            "http://100.64.0.1/",
            "http://[::1]/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
            // IPv4 inside IPv6 (NAT64, 6to4, the old compatible form), multicast, benchmarking
            // and reserved ranges.
            "http://[64:ff9b::7f00:1]/",
            "http://[2002:7f00:1::]/",
            "http://[::127.0.0.1]/",
            "http://[ff02::1]/",
            "http://224.0.0.1/",
            "http://198.18.0.1/",
            "http://240.0.0.1/",
        ] {
            assert!(
                refuse_host(&url::Url::parse(url).unwrap()).is_some(),
                "{url}"
            );
        }
        for url in [
            "https://example.org/hook",
            "http://93.184.215.14:8080/",
            // A public IPv4 host through NAT64 or 6to4, and a public IPv6 one.
            "http://[64:ff9b::5db8:d70e]/",
            "http://[2002:5db8:d70e::1]/",
            "http://[2606:2800:220:1::1]/",
        ] {
            assert!(
                refuse_host(&url::Url::parse(url).unwrap()).is_none(),
                "{url}"
            );
        }
    }

    /// A name that is not `localhost` at creation but resolves inside is refused when sent.
    #[actix_web::test]
    async fn names_resolving_to_internal_addresses_are_refused_at_delivery() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let subscription = Subscription {
            id: "0b6f7c1e-5d0a-4f61-9d7c-2d1f1f4e8a10".into(),
            // Built directly (the API refuses `localhost` already): this checks the resolution.
            url: format!("http://localhost:{port}/hook"),
            secret: new_secret(),
            filter: EventFilter::default(),
            respond: false,
            enabled: true,
            disabled_reason: None,
            consecutive_failures: 0,
            last_delivered_event_id: None,
            created_at: 0,
            disabled_at: None,
            previous_secret: None,
            events_missed_through: None,
        };
        let settings = SubscriptionsSettings::default();
        let sent = post_signed(
            &client(None).unwrap(),
            &subscription,
            1,
            "{}",
            &settings,
            Duration::from_secs(2),
        )
        .await;
        match sent {
            Sent::Failed(failed) => assert!(failed.reason.contains("loopback"), "{failed:?}"),
            Sent::Accepted(_) => panic!("an internal address was called"),
        }
        // Allowed, the same request is made (and fails only because nobody answers HTTP).
        drop(listener);
        let allowed = SubscriptionsSettings {
            allow_private: true,
            ..SubscriptionsSettings::default()
        };
        match post_signed(
            &client(None).unwrap(),
            &subscription,
            1,
            "{}",
            &allowed,
            Duration::from_secs(2),
        )
        .await
        {
            Sent::Failed(failed) => assert!(!failed.reason.contains("loopback"), "{failed:?}"),
            Sent::Accepted(_) => panic!("nothing listens"),
        }
    }

    #[test]
    fn replies_need_a_non_blank_text_and_may_carry_a_file_url() {
        let reply = |text: &str, file_url: Option<&str>| Reply {
            text: text.into(),
            file_url: file_url.map(Into::into),
        };
        assert_eq!(reply_body(br#"{"text":"hi"}"#), Some(reply("hi", None)));
        assert_eq!(
            reply_body(br#"{"text":"chart","file_url":"https://f.example/a.png"}"#),
            Some(reply("chart", Some("https://f.example/a.png")))
        );
        assert_eq!(
            reply_body(br#"{"text":"hi","file_url":""}"#),
            Some(reply("hi", None))
        );
        assert_eq!(
            reply_body(br#"{"text":"hi","file_url":3}"#),
            Some(reply("hi", None))
        );
        assert_eq!(reply_body(br#"{"text":"  "}"#), None);
        assert_eq!(
            reply_body(br#"{"file_url":"https://f.example/a.png"}"#),
            None
        );
        assert_eq!(reply_body(b"ok"), None);
    }
}
