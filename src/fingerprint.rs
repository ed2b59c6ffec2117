//! SHA-256 fingerprints, as lower-case hex or as the digest's bytes (for lookups
//! in memory): how finsync stores what it must recognise but never reveal (API
//! keys, OAuth states) and names versions (connector files, vault keys); the
//! HMAC-SHA256 that signs webhooks both ways; and a comparison of secrets that
//! takes as long whatever they hold.

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

pub type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 keyed with `secret` over `parts`, one after the other; finalize it, or
/// clone it to verify several candidate signatures in constant time each.
pub fn hmac_sha256(secret: &SecretString, parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes keys of any length (longer ones are hashed first), so this cannot
    // fail whatever the secret is.
    let mut mac = HmacSha256::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac
}

/// The digest itself, for keys of in-memory maps: no text to format on a hot path.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    // One allocation: API keys the key cache has not seen, and idempotency keys,
    // are hashed per request.
    hex::encode(Sha256::digest(bytes))
}

/// Compares two secrets (or their hashes) without an early exit.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Compares a presented secret with the expected one by their SHA-256, so the
/// time taken says nothing of either, their lengths included.
pub fn same_secret(expected: &str, presented: &str) -> bool {
    same(
        &sha256_hex(expected.as_bytes()),
        &sha256_hex(presented.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_the_standard_test_vector() {
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
