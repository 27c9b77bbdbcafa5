//! Signatures of the Standard Webhooks specification (<https://www.standardwebhooks.com>):
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">`,
//! keyed with the base64 part of a `whsec_…` secret. During a secret rotation the header
//! carries one signature per valid secret, separated by spaces; receivers accept any.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

/// A secret that is not `whsec_` followed by base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a signing secret must be whsec_ followed by base64")]
pub struct BadSecret;

fn key(secret: &str) -> Result<hmac::Key, BadSecret> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    let raw = STANDARD.decode(encoded).map_err(|_| BadSecret)?;
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &raw))
}

/// The `v1,…` signature of one message with one secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, BadSecret> {
    let mut ctx = hmac::Context::with_key(&key(secret)?);
    ctx.update(id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    Ok(format!("v1,{}", STANDARD.encode(ctx.sign().as_ref())))
}

/// The `webhook-signature` header value: one signature per secret.
pub fn signature_header(
    secrets: &[String],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, BadSecret> {
    let signatures = secrets
        .iter()
        .map(|s| sign(s, id, timestamp, body))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(signatures.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specification_test_vector_verifies() {
        // From the Standard Webhooks specification and its reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let signature = sign(
            secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            signature.as_deref(),
            Ok("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
    }

    #[test]
    fn every_part_of_the_message_is_signed() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let base = sign(secret, "msg_1", 100, b"{}");
        assert_ne!(base, sign(secret, "msg_2", 100, b"{}"));
        assert_ne!(base, sign(secret, "msg_1", 101, b"{}"));
        assert_ne!(base, sign(secret, "msg_1", 100, b"{ }"));
        assert_ne!(
            base,
            sign("whsec_AAAAAAAAAAAAAAAAAAAAAAAA", "msg_1", 100, b"{}")
        );
    }

    #[test]
    fn a_rotation_sends_one_signature_per_secret() {
        let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned();
        let new = "whsec_AAAAAAAAAAAAAAAAAAAAAAAA".to_owned();
        let header = signature_header(&[new.clone(), old.clone()], "msg_1", 7, b"x");
        let expected = format!(
            "{} {}",
            sign(&new, "msg_1", 7, b"x").unwrap_or_default(),
            sign(&old, "msg_1", 7, b"x").unwrap_or_default()
        );
        assert_eq!(header, Ok(expected));
        assert_eq!(sign("whsec_***", "msg_1", 7, b"x"), Err(BadSecret));
    }
}
