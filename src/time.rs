//! Wall-clock time as RFC 3339 text, without a date-time dependency.
//!
//! The client sends the current time on every tick, as the Go example does. That is the only
//! calendar arithmetic wsecho needs, so a dozen lines here beat a crate in the binary.

use std::time::{SystemTime, UNIX_EPOCH};

/// Formats `t` as UTC RFC 3339 with microseconds, e.g. `2026-11-26T15:50:15.123456Z`, so ticks
/// sort as text and a reader can see the sub-second spacing between them.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`, which is exact for every day an `i64` can count here).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::new(951_782_400, 5_000); // the leap day of 2000
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000005Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_708_215);
        assert_eq!(rfc3339(t), "2026-11-26T15:50:15.000000Z");
    }
}
