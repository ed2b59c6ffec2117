//! Webhook signatures: `finsync-signature: t=<unix seconds>,v1=<hex>` where the hex
//! is HMAC-SHA256, keyed with the endpoint's secret, of `"<t>.<body>"`. The
//! timestamp is signed so that a captured request cannot be replayed later;
//! [`verify`] is what a receiver (and our tests) run.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::Mac;
use secrecy::SecretString;

use crate::fingerprint::{HmacSha256, hmac_sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("the signature header is malformed")]
    Malformed,
    #[error("no signature in the header matches the body")]
    Mismatch,
    #[error("the signature's timestamp is outside the tolerance")]
    OutsideTolerance,
}

/// The `finsync-signature` header value for `body` sent at `timestamp`.
pub fn sign(secret: &SecretString, timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(digest))
}

/// Checks a `finsync-signature` header against the raw request body: some `v1`
/// must be the body's signature under `secret`, and its timestamp must lie within
/// `tolerance` of `now` (either side, for clocks that disagree). Unknown schemes
/// in the header are ignored, so a later scheme can be sent alongside `v1`.
pub fn verify(
    secret: &SecretString,
    header: &str,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (scheme, value) = part.trim().split_once('=').ok_or(VerifyError::Malformed)?;
        match scheme {
            "t" => {
                let t = value.parse::<i64>().map_err(|_| VerifyError::Malformed)?;
                if timestamp.replace(t).is_some() {
                    return Err(VerifyError::Malformed);
                }
            }
            "v1" => signatures.push(hex::decode(value).map_err(|_| VerifyError::Malformed)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(VerifyError::Malformed)?;
    if signatures.is_empty() {
        return Err(VerifyError::Malformed);
    }
    // The comparison is constant-time (`verify_slice`): timing reveals nothing.
    if !signatures
        .iter()
        .any(|s| mac(secret, timestamp, body).verify_slice(s).is_ok())
    {
        return Err(VerifyError::Mismatch);
    }
    if now.timestamp().abs_diff(timestamp) > tolerance.as_secs() {
        return Err(VerifyError::OutsideTolerance);
    }
    Ok(())
}

fn mac(secret: &SecretString, timestamp: i64, body: &[u8]) -> HmacSha256 {
    hmac_sha256(secret, &[timestamp.to_string().as_bytes(), b".", body])
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"id":"evt"}"#;
    const T: i64 = 1_767_225_600;
    const TOLERANCE: Duration = Duration::from_secs(300);

    fn secret() -> SecretString {
        SecretString::from("whsec_test")
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).unwrap()
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: Python's hmac.new(b"whsec_test",
        // b'1767225600.{"id":"evt"}', hashlib.sha256).hexdigest().
        assert_eq!(
            sign(&secret(), T, BODY),
            "t=1767225600,v1=84735707d40f99c717fca15841b49ff0f5cc4c9a5e0894df10432ced79aa118a"
        );
    }

    #[test]
    fn a_signed_body_verifies_within_the_tolerance() {
        let header = sign(&secret(), T, BODY);
        assert_eq!(verify(&secret(), &header, BODY, at(T), TOLERANCE), Ok(()));
        assert_eq!(
            verify(&secret(), &header, BODY, at(T + 300), TOLERANCE),
            Ok(())
        );
        assert_eq!(
            verify(&secret(), &header, BODY, at(T - 300), TOLERANCE),
            Ok(())
        );
    }

    #[test]
    fn a_wrong_secret_is_rejected() {
        let header = sign(&SecretString::from("whsec_other"), T, BODY);
        assert_eq!(
            verify(&secret(), &header, BODY, at(T), TOLERANCE),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn a_tampered_body_is_rejected() {
        let header = sign(&secret(), T, BODY);
        assert_eq!(
            verify(&secret(), &header, br#"{"id":"evu"}"#, at(T), TOLERANCE),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn a_moved_timestamp_is_rejected() {
        // Replaying the signature with a fresh timestamp does not work either.
        let header = sign(&secret(), T, BODY).replace("t=1767225600", "t=1767225700");
        assert_eq!(
            verify(&secret(), &header, BODY, at(T + 100), TOLERANCE),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn a_timestamp_outside_the_tolerance_is_rejected() {
        let header = sign(&secret(), T, BODY);
        assert_eq!(
            verify(&secret(), &header, BODY, at(T + 301), TOLERANCE),
            Err(VerifyError::OutsideTolerance)
        );
        assert_eq!(
            verify(&secret(), &header, BODY, at(T - 301), TOLERANCE),
            Err(VerifyError::OutsideTolerance)
        );
    }

    #[test]
    fn any_matching_v1_is_accepted_and_other_schemes_are_ignored() {
        let good = sign(&secret(), T, BODY);
        let v1 = good.split_once(",v1=").unwrap().1;
        let header = format!("t={T},v1={},v2=abc,v1={v1}", "00".repeat(32));
        assert_eq!(verify(&secret(), &header, BODY, at(T), TOLERANCE), Ok(()));
    }

    #[test]
    fn malformed_headers_are_rejected() {
        for header in [
            "",
            "v1=00",
            "t=1767225600",
            "t=abc,v1=00",
            "t=1767225600,v1=zz",
            "t=1767225600,t=1767225600,v1=00",
            "t=1767225600;v1=00",
        ] {
            assert_eq!(
                verify(&secret(), header, BODY, at(T), TOLERANCE),
                Err(VerifyError::Malformed),
                "{header}"
            );
        }
    }
}
