//! The current time, at the precision the store keeps (microseconds), so a value returned when
//! a row is written equals the value read back later.

use time::OffsetDateTime;

pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000).unwrap_or(t)
}
