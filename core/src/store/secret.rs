//! Secrets: generation, and the hashes the store keeps instead of them.
//!
//! Meter secrets are hashed with Argon2id (a memory-hard password hash), so a copy of the
//! database does not let anyone connect as a meter. API keys carry 256 random bits, which no
//! dictionary reaches, and are checked on every request: they are stored as SHA-256, compared
//! in constant time.

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use sha2::{Digest, Sha256};

/// Argon2id with 19 MiB, 2 passes, 1 lane: OWASP's recommended minimum. The parameters are
/// recorded in each hash, so changing them here applies to new secrets only.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// `n` random bytes from the operating system, as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A new meter secret: 32 random bytes, hex.
pub fn generate_meter_secret() -> String {
    random_hex(32)
}

/// The Argon2id hash (PHC string) of a meter secret.
pub fn hash_meter_secret(secret: &str) -> Result<String, super::StoreError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| super::StoreError::Invalid(format!("cannot hash the secret: {e}")))
}

/// Whether `secret` matches the Argon2 `hash`. A malformed hash matches nothing.
pub fn verify_meter_secret(secret: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2().verify_password(secret.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// SHA-256 of `data`, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Constant-time equality of two strings of equal length.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}
