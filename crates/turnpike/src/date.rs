//! Calendar arithmetic and UTC time formatting, without a date crate.
//!
//! Turnpike shows times to operators in a few places — a certificate's
//! expiry in log lines and `/status`, the expiry of minted credentials in
//! `turnpike credentials`, the validity of an X.509 certificate read from
//! DER — and needs nothing more than the proleptic Gregorian calendar in
//! UTC: Unix seconds to and from a civil date and a clock time, and two
//! formats. Leap seconds are not counted (as in Unix time); times before
//! 1970 (old certificates) are exact too.
//!
//! The civil-date conversions are Howard Hinnant's `days_from_civil` and
//! `civil_from_days` (<https://howardhinnant.github.io/date_algorithms.html>).

#![forbid(unsafe_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds in a day.
const DAY: i64 = 86_400;

/// Whole seconds since the Unix epoch (negative before it; saturating far
/// outside `i64`).
pub fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// Seconds since the Unix epoch (negative before it) as a `SystemTime`.
pub fn from_unix_seconds(secs: i64) -> SystemTime {
    match u64::try_from(secs) {
        Ok(after) => UNIX_EPOCH + Duration::from_secs(after),
        Err(_) => UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()),
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`). `month` is 1–12, `day` 1–31; other values are not
/// checked and give some nearby day.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day)
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Unix seconds of a UTC date and clock time (`second` may be 60, a leap
/// second, which counts as the first second of the next minute).
pub fn unix_from_utc(date: (i64, i64, i64), clock: (i64, i64, i64)) -> i64 {
    let ((year, month, day), (hour, minute, second)) = (date, clock);
    days_from_civil(year, month, day) * DAY + hour * 3600 + minute * 60 + second
}

/// The time as UTC date and clock, whole seconds; times before 1970 (old
/// certificates) are exact too.
fn utc_parts(time: SystemTime) -> ((i64, i64, i64), (i64, i64, i64)) {
    let secs = unix_seconds(time);
    let (days, rem) = (secs.div_euclid(DAY), secs.rem_euclid(DAY));
    (
        civil_from_days(days),
        (rem / 3600, rem % 3600 / 60, rem % 60),
    )
}

/// `YYYY-MM-DD HH:MM:SS UTC`, for log lines.
pub fn format_utc(time: SystemTime) -> String {
    let ((y, m, d), (hh, mm, ss)) = utc_parts(time);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC")
}

/// RFC 3339 in UTC, whole seconds: `2027-01-31T12:00:00Z`.
pub fn format_rfc3339(time: SystemTime) -> String {
    let ((y, m, d), (hh, mm, ss)) = utc_parts(time);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        let at = |secs: i64| format_utc(from_unix_seconds(secs));
        assert_eq!(at(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(at(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(at(1_798_761_599), "2026-12-31 23:59:59 UTC");
        assert_eq!(at(4_102_444_800), "2100-01-01 00:00:00 UTC");
        assert_eq!(at(-1), "1969-12-31 23:59:59 UTC");
        assert_eq!(at(253_402_300_799), "9999-12-31 23:59:59 UTC");
    }

    #[test]
    fn rfc3339_formatting() {
        let at = |secs: i64| format_rfc3339(from_unix_seconds(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(at(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn unix_seconds_round_trip() {
        for secs in [0, 1, -1, -5, 86_399, 86_400, 1_798_761_600, -2_208_988_800] {
            assert_eq!(unix_seconds(from_unix_seconds(secs)), secs);
        }
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(5)), -5);
    }

    #[test]
    fn civil_dates_round_trip() {
        // Every day from 1600 to 2500: consecutive, and each converts back.
        let first = days_from_civil(1600, 1, 1);
        let last = days_from_civil(2500, 12, 31);
        let mut previous = civil_from_days(first - 1);
        for days in first..=last {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            let next_day = (y, m, d) > previous;
            assert!(next_day, "{previous:?} then {:?}", (y, m, d));
            previous = (y, m, d);
        }
    }

    #[test]
    fn known_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(
            civil_from_days(days_from_civil(1900, 3, 1) - 1),
            (1900, 2, 28)
        );
        assert_eq!(unix_from_utc((2027, 1, 1), (0, 0, 0)), 1_798_761_600);
        assert_eq!(unix_from_utc((1969, 12, 31), (23, 59, 59)), -1);
    }
}
