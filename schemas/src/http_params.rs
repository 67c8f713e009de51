//! The grammar of the HTTP API's query parameters, apart from the server so that it can be
//! fuzzed alone (`fuzz/fuzz_targets/http_params.rs`): times, counts, the series window, and
//! the quoting of a text parameter into a SQL string literal.
//!
//! Invariants (the fuzz target's assertions): nothing here panics or overflows on any input;
//! a series window has `from < to` and a bucket of at least 1 ms, with at most 5000 buckets;
//! [`sql_text`] of any text is one SQL string literal holding exactly that text.

/// Most buckets a series answer has.
pub const MAX_POINTS: i64 = 5000;

/// `2026-11-25T10:00:00Z` (any RFC 3339 time) or `2026-11-25` (midnight UTC), as
/// milliseconds since the epoch.
pub fn parse_time(text: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    let day = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

/// A count parameter: `default` when absent or not a number, at most `max`.
pub fn count(text: Option<&str>, default: usize, max: usize) -> usize {
    text.and_then(|t| t.parse().ok())
        .unwrap_or(default)
        .min(max)
}

/// The time range of a series and the width of its buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesWindow {
    pub from: i64,
    pub to: i64,
    pub bucket: i64,
}

/// Why a series window is refused (the message a client is shown).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("{name}={text:?} is neither an RFC 3339 time nor a YYYY-MM-DD date")]
    BadTime { name: &'static str, text: String },
    #[error("series needs from < to")]
    Empty,
}

/// `from`, `to` (default: the hour up to `now_ms`) and `points` (default 600, clamped to
/// 10..=5000) of a series request.
pub fn series_window(
    from: Option<&str>,
    to: Option<&str>,
    points: Option<&str>,
    now_ms: i64,
) -> Result<SeriesWindow, WindowError> {
    let time = |name: &'static str, text: &str| {
        parse_time(text).ok_or_else(|| WindowError::BadTime {
            name,
            text: text.to_owned(),
        })
    };
    let to = match to {
        Some(t) => time("to", t)?,
        None => now_ms.saturating_add(1),
    };
    let from = match from {
        Some(t) => time("from", t)?,
        None => to.saturating_sub(3_600_000),
    };
    if from >= to {
        return Err(WindowError::Empty);
    }
    let points = points
        .and_then(|n| n.parse::<i64>().ok())
        .unwrap_or(600)
        .clamp(10, MAX_POINTS);
    // Far-apart times (years ±262143) do not fit an i64 difference: i128 does.
    let span = i128::from(to) - i128::from(from);
    let bucket = i64::try_from((span + i128::from(points) - 1) / i128::from(points))
        .unwrap_or(i64::MAX)
        .max(1);
    Ok(SeriesWindow { from, to, bucket })
}

/// `text` as a SQL string literal: single quotes around, each quote doubled.
pub fn sql_text(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_dates() {
        assert_eq!(parse_time("1970-01-02"), Some(86_400_000));
        assert_eq!(parse_time("1970-01-01T00:00:01+00:00"), Some(1000));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn windows_have_bounded_buckets_even_at_the_ends_of_time() {
        let w = series_window(None, None, None, 10_000_000).unwrap();
        assert_eq!((w.from, w.to, w.bucket), (6_400_001, 10_000_001, 6000));
        let far =
            series_window(Some("-262143-01-01"), Some("+262142-12-31"), Some("10"), 0).unwrap();
        assert!(far.bucket > 0);
        assert_eq!(
            series_window(Some("2026-01-02"), Some("2026-01-01"), None, 0),
            Err(WindowError::Empty)
        );
        assert_eq!(count(Some("99999"), 200, 1000), 1000);
        assert_eq!(count(Some("x"), 200, 1000), 200);
    }

    #[test]
    fn text_is_quoted_with_its_quotes_doubled() {
        assert_eq!(sql_text("O'Brien"), "'O''Brien'");
    }
}
