//! The current time, at the precision the store keeps (microseconds), so a value returned when
//! a row is written equals the value read back later.

use time::OffsetDateTime;

pub fn now() -> OffsetDateTime {
    truncate_micros(OffsetDateTime::now_utc())
}

/// `t` without its sub-microsecond part, as the store keeps it.
pub fn truncate_micros(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000).unwrap_or(t)
}
