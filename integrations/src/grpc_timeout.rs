//! The `grpc-timeout` request header: the caller's deadline, which also bounds the wait for an
//! endpoint.

use std::time::Duration;

/// Parses a `grpc-timeout` value: up to eight digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub(crate) fn parse(value: &http::HeaderValue) -> Option<Duration> {
    let bytes = value.as_bytes();
    let (digits, unit) = bytes.split_at(bytes.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(amount * 3600),
        b"M" => Duration::from_secs(amount * 60),
        b"S" => Duration::from_secs(amount),
        b"m" => Duration::from_millis(amount),
        b"u" => Duration::from_micros(amount),
        b"n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The earlier of the request's `grpc-timeout` and the configured timeout.
pub(crate) fn deadline(
    headers: &http::HeaderMap,
    configured: Option<Duration>,
) -> Option<Duration> {
    let requested = headers.get("grpc-timeout").and_then(parse);
    match (requested, configured) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_garbage() {
        let parse = |s: &'static str| parse(&http::HeaderValue::from_static(s));
        assert_eq!(parse("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("7n"), Some(Duration::from_nanos(7)));
        assert_eq!(parse("123456789S"), None, "at most eight digits");
        assert_eq!(parse("S"), None);
        assert_eq!(parse("5x"), None);
        assert_eq!(parse("-5S"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn the_earlier_deadline_wins() {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-timeout", http::HeaderValue::from_static("2S"));
        assert_eq!(
            deadline(&headers, Some(Duration::from_secs(1))),
            Some(Duration::from_secs(1))
        );
        assert_eq!(deadline(&headers, None), Some(Duration::from_secs(2)));
        assert_eq!(deadline(&http::HeaderMap::new(), None), None);
    }
}
