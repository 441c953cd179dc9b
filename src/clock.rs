//! The process's monotonic clock, for ages and spacing: not the wall clock, which steps (a step
//! during an outage once said the store had been gone an hour, or hid a real outage).

/// Milliseconds since the clock's first reading in this process, plus one, so 0 can mean
/// "never" or "not now" to its callers.
pub fn monotonic_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
        + 1
}
