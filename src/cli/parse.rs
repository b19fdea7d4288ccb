//! Flag value parsers: a bad value is clap's own usage error (exit 2), reported before any call.

use std::convert::Infallible;

use chrono::{DateTime, Utc};
use prost_types::{Duration, Timestamp};
use secrecy::SecretString;
use tonic::transport::Endpoint;

/// `--server`: an `http://` or `https://` URL tonic can connect to.
pub(super) fn server_url(text: &str) -> Result<String, String> {
    let endpoint = Endpoint::from_shared(text.to_owned()).map_err(|error| error.to_string())?;
    match endpoint.uri().scheme_str() {
        Some("http" | "https") => Ok(text.to_owned()),
        _ => Err("expected a URL such as http://127.0.0.1:50051".to_owned()),
    }
}

/// `--admin-key`: kept wrapped so it cannot be printed by accident.
pub(super) fn secret(text: &str) -> Result<SecretString, Infallible> {
    Ok(SecretString::from(text.trim()))
}

/// `--ttl 30d`, `--grace "1h 30m"`: a humantime duration.
pub(super) fn duration(text: &str) -> Result<Duration, String> {
    let parsed = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    Duration::try_from(parsed).map_err(|error| error.to_string())
}

/// `--refill 1000/30d`: an amount and the interval between refills.
pub(super) fn refill(text: &str) -> Result<(u64, Duration), String> {
    let (amount, interval) = text
        .split_once('/')
        .ok_or("expected AMOUNT/INTERVAL, e.g. 1000/1d")?;
    let amount = amount
        .trim()
        .parse::<u64>()
        .map_err(|error| format!("amount: {error}"))?;
    Ok((amount, duration(interval.trim())?))
}

/// `--expires-at 2030-01-31T00:00:00Z`: an RFC 3339 time with an offset.
pub(super) fn timestamp(text: &str) -> Result<Timestamp, String> {
    let parsed = DateTime::parse_from_rfc3339(text)
        .map_err(|error| format!("{error}; expected RFC 3339, e.g. 2030-01-31T00:00:00Z"))?;
    Ok(proto_timestamp(parsed.to_utc()))
}

pub(super) fn proto_timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        // Below one billion, so it always fits.
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_humantime() {
        assert_eq!(duration("90d").map(|ttl| ttl.seconds), Ok(90 * 86_400));
        assert_eq!(duration("1h 30m").map(|ttl| ttl.seconds), Ok(5_400));
        assert!(duration("soon").is_err());
    }

    #[test]
    fn a_refill_reads_as_an_amount_per_interval() {
        assert_eq!(
            refill("1000/30d").map(|(amount, every)| (amount, every.seconds)),
            Ok((1000, 30 * 86_400))
        );
        assert!(refill("1000").is_err());
        assert!(refill("lots/1d").is_err());
    }

    #[test]
    fn expiry_times_read_as_rfc3339_in_any_offset() {
        let parsed = timestamp("2026-01-31T02:00:00+02:00");
        assert_eq!(
            parsed,
            Ok(Timestamp {
                seconds: 1_769_817_600,
                nanos: 0
            })
        );
        assert!(timestamp("2026-01-31").is_err());
    }

    #[test]
    fn server_urls_need_an_http_scheme() {
        assert!(server_url("http://127.0.0.1:50051").is_ok());
        assert!(server_url("https://tessera.internal").is_ok());
        assert!(server_url("127.0.0.1:50051").is_err());
    }
}
