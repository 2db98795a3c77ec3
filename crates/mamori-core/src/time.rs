//! Time: instants are `i64` microseconds since the Unix epoch in UTC; dates and display are in
//! Asia/Tokyo (UTC+09:00 all year: Japan has had no daylight saving time since 1951).

/// Microseconds in a second.
pub const SECOND_US: i64 = 1_000_000;
/// Microseconds in a minute.
pub const MINUTE_US: i64 = 60 * SECOND_US;
/// Microseconds in an hour.
pub const HOUR_US: i64 = 60 * MINUTE_US;
/// Microseconds in a day.
pub const DAY_US: i64 = 24 * HOUR_US;
/// Asia/Tokyo's offset from UTC.
pub const TOKYO_OFFSET_US: i64 = 9 * HOUR_US;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The civil date of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let s = b.get(at..at + n)?;
    let mut v = 0u32;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as u32;
    }
    Some(v)
}

fn parse_date(b: &[u8]) -> Result<i64, String> {
    let (y, m, d) = match (
        digits(b, 0, 4),
        b.get(4),
        digits(b, 5, 2),
        b.get(7),
        digits(b, 8, 2),
    ) {
        (Some(y), Some(b'-'), Some(m), Some(b'-'), Some(d)) => (y as i64, m, d),
        _ => return Err("expected a date YYYY-MM-DD".into()),
    };
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return Err(format!("no such date {y:04}-{m:02}-{d:02}"));
    }
    Ok(days_from_civil(y, m, d))
}

/// Parses an RFC 3339 timestamp with an offset (`2020-09-16T22:25:00+09:00`, `…Z`, fractional
/// seconds up to nanoseconds, kept to the microsecond) into UTC microseconds.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let b = s.as_bytes();
    let days = parse_date(b).map_err(|e| format!("{e} in {s:?} (RFC 3339 with offset)"))?;
    let bad =
        || format!("expected RFC 3339 with offset, like 2020-09-16T22:25:00+09:00, got {s:?}");
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return Err(bad());
    }
    let (hh, mm, ss) = match (
        digits(b, 11, 2),
        b.get(13),
        digits(b, 14, 2),
        b.get(16),
        digits(b, 17, 2),
    ) {
        (Some(h), Some(b':'), Some(m), Some(b':'), Some(s)) => (h, m, s),
        _ => return Err(bad()),
    };
    if hh > 23 || mm > 59 || ss > 60 {
        return Err(format!("time out of range in {s:?}"));
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 6 {
                micros = micros * 10 + (b[i] - b'0') as i64;
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 9 {
            return Err(bad());
        }
        for _ in n..6 {
            micros *= 10;
        }
    }
    let offset = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() => {
            let (oh, om) = match (digits(b, i + 1, 2), b.get(i + 3), digits(b, i + 4, 2)) {
                (Some(h), Some(b':'), Some(m)) if h <= 23 && m <= 59 => (h as i64, m as i64),
                _ => return Err(bad()),
            };
            let o = oh * HOUR_US + om * MINUTE_US;
            if *sign == b'-' { -o } else { o }
        }
        None => return Err(format!("missing UTC offset in {s:?} (add Z or +09:00)")),
        _ => return Err(bad()),
    };
    // A leap second (:60) is kept as the last microsecond of :59.
    let (ss, micros) = if ss == 60 {
        (59, 999_999)
    } else {
        (ss as i64, micros)
    };
    Ok(
        days * DAY_US + hh as i64 * HOUR_US + mm as i64 * MINUTE_US + ss * SECOND_US + micros
            - offset,
    )
}

/// The Asia/Tokyo day number (days since 1970-01-01 in Tokyo) of an instant.
pub fn tokyo_day(t: i64) -> i64 {
    (t + TOKYO_OFFSET_US).div_euclid(DAY_US)
}

/// Parses a bound given on the command line: a date `YYYY-MM-DD` is midnight in Asia/Tokyo;
/// anything else must be RFC 3339 with an offset.
pub fn parse_bound(s: &str) -> Result<i64, String> {
    if s.len() == 10 {
        return Ok(
            parse_date(s.as_bytes()).map_err(|e| format!("{e} in {s:?}"))? * DAY_US
                - TOKYO_OFFSET_US,
        );
    }
    parse_rfc3339(s)
}

/// Formats an instant as RFC 3339 in Asia/Tokyo, e.g. `2020-09-16T22:25:00+09:00`
/// (fractional seconds only when present).
pub fn format_tokyo(t: i64) -> String {
    let local = t + TOKYO_OFFSET_US;
    let days = local.div_euclid(DAY_US);
    let rem = local.rem_euclid(DAY_US);
    let (y, m, d) = civil_from_days(days);
    let (h, mi, s, us) = (
        rem / HOUR_US,
        rem % HOUR_US / MINUTE_US,
        rem % MINUTE_US / SECOND_US,
        rem % SECOND_US,
    );
    if us == 0 {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}+09:00")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}+09:00")
    }
}

/// Formats a Tokyo day number as `YYYY-MM-DD`.
pub fn format_day(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Parses a duration such as `400d`, `36h`, `30m`, `90s` into microseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("expected a duration like 400d, 36h or 30m, got {s:?}"))?;
    let unit_us = match unit {
        "d" => DAY_US,
        "h" => HOUR_US,
        "m" => MINUTE_US,
        "s" => SECOND_US,
        _ => return Err(format!("unknown unit in {s:?}: use d, h, m or s")),
    };
    n.checked_mul(unit_us)
        .ok_or_else(|| format!("duration {s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_to_the_same_instant() {
        let a = parse_rfc3339("2020-09-16T22:25:00+09:00").unwrap();
        let b = parse_rfc3339("2020-09-16T13:25:00Z").unwrap();
        let c = parse_rfc3339("2020-09-16T08:25:00-05:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(a, 1_600_262_700 * SECOND_US);
    }

    #[test]
    fn keeps_microseconds() {
        let t = parse_rfc3339("2020-01-01T00:00:00.123456789Z").unwrap();
        assert_eq!(t % SECOND_US, 123_456);
        assert_eq!(
            parse_rfc3339("2020-01-01T00:00:00.5Z").unwrap() % SECOND_US,
            500_000
        );
    }

    #[test]
    fn refuses_bad_timestamps() {
        for s in [
            "2020-09-16T22:25:00",
            "2020-02-30T00:00:00Z",
            "2020-13-01T00:00:00Z",
            "2020-09-16 22:25Z",
            "2020-09-16T24:00:00Z",
            "2020-09-16T22:25:00+0900",
            "2020-09-16T22:25:00.Z",
            "",
            "yesterday",
        ] {
            assert!(parse_rfc3339(s).is_err(), "{s} accepted");
        }
    }

    #[test]
    fn tokyo_dates_and_formatting_round_trip() {
        let t = parse_rfc3339("2020-09-16T23:59:59+09:00").unwrap();
        assert_eq!(format_day(tokyo_day(t)), "2020-09-16");
        assert_eq!(format_day(tokyo_day(t + SECOND_US)), "2020-09-17");
        assert_eq!(format_tokyo(t), "2020-09-16T23:59:59+09:00");
        assert_eq!(parse_bound("2020-09-17").unwrap(), t + SECOND_US);
        let f = parse_rfc3339("1999-12-31T15:00:00.000250Z").unwrap();
        assert_eq!(format_tokyo(f), "2000-01-01T00:00:00.000250+09:00");
        assert_eq!(parse_rfc3339(&format_tokyo(f)).unwrap(), f);
    }

    #[test]
    fn civil_round_trip() {
        for d in [-800_000, -1, 0, 1, 18_000, 20_000, 2_000_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("400d").unwrap(), 400 * DAY_US);
        assert_eq!(parse_duration("2h").unwrap(), 2 * HOUR_US);
        assert!(parse_duration("4 weeks").is_err());
        assert!(parse_duration("d").is_err());
    }
}
