//! Credentials: Argon2id hashes for passwords and API-token secrets, and the token format.
//!
//! A token reads `dw_<lookup>_<secret>`: `lookup` is 16 hex digits that find one row by
//! index, `secret` 32 random bytes in unpadded base64url of which only the Argon2id hash is
//! stored. So checking a token costs one indexed read and one hash, never a scan of every
//! token's hash, and a leaked database yields no usable token.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, Salt, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::TryRngCore;

use super::StoreError;

/// What every token starts with, so a leaked one is recognisable (secret scanners, logs).
pub(crate) const TOKEN_PREFIX: &str = "dw_";
const LOOKUP_BYTES: usize = 8;
const LOOKUP_HEX: usize = LOOKUP_BYTES * 2;
const SECRET_BYTES: usize = 32;
/// Unpadded base64 of 32 bytes.
const SECRET_B64: usize = 43;
/// Longer passwords are refused: Argon2 would take them, but the hash input is the caller's
/// to bound.
pub(crate) const MAX_PASSWORD_BYTES: usize = 1024;

/// A freshly drawn token and the parts the store keeps.
pub(crate) struct NewToken {
    pub(crate) lookup: String,
    pub(crate) secret_hash: String,
    pub(crate) token: String,
}

/// Draw a token and hash its secret.
pub(crate) async fn new_token() -> Result<NewToken, StoreError> {
    let lookup = hex::encode(random_bytes::<LOOKUP_BYTES>()?);
    let secret = URL_SAFE_NO_PAD.encode(random_bytes::<SECRET_BYTES>()?);
    let token = format!("{TOKEN_PREFIX}{lookup}_{secret}");
    let secret_hash = hash(secret.into_bytes()).await?;
    Ok(NewToken {
        lookup,
        secret_hash,
        token,
    })
}

/// Split a token into (lookup, secret), or `None` if it is not one of ours.
pub(crate) fn parse_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    // The lookup has a fixed length: base64url's alphabet includes '_', so splitting at the
    // separator alone would be ambiguous.
    let lookup = rest.get(..LOOKUP_HEX)?;
    let secret = rest.get(LOOKUP_HEX..)?.strip_prefix('_')?;
    let lookup_ok = lookup
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let secret_ok = secret.len() == SECRET_B64
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (lookup_ok && secret_ok).then_some((lookup, secret))
}

/// Argon2id (the crate's defaults: 19 MiB, 2 passes, OWASP's recommendation) of `secret`
/// with a fresh salt, as a PHC string. Runs on the blocking pool: it takes tens of ms.
pub(crate) async fn hash(secret: Vec<u8>) -> Result<String, StoreError> {
    let salt = random_bytes::<{ Salt::RECOMMENDED_LENGTH }>()?;
    blocking(move || {
        let salt = SaltString::encode_b64(&salt).map_err(|e| StoreError::Crypto(e.to_string()))?;
        Argon2::default()
            .hash_password(&secret, &salt)
            .map(|h| h.to_string())
            .map_err(|e| StoreError::Crypto(e.to_string()))
    })
    .await
}

/// Whether `secret` matches the PHC string `phc` (parameters are read from the string, so
/// hashes made with older settings keep working).
pub(crate) async fn verify(secret: Vec<u8>, phc: String) -> Result<bool, StoreError> {
    blocking(move || {
        let parsed = PasswordHash::new(&phc)
            .map_err(|e| StoreError::Corrupt(format!("stored credential hash: {e}")))?;
        Ok(Argon2::default().verify_password(&secret, &parsed).is_ok())
    })
    .await
}

/// Spend the time of one verification without a stored hash, so a login for an unknown
/// name takes as long as one with a wrong password (names are not revealed by timing).
pub(crate) async fn verify_nothing(secret: Vec<u8>) -> Result<(), StoreError> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let phc = match DUMMY.get() {
        Some(phc) => phc.clone(),
        None => {
            let phc = hash(b"deskwire-no-such-user".to_vec()).await?;
            DUMMY.get_or_init(|| phc).clone()
        }
    };
    verify(secret, phc).await.map(|_| ())
}

fn random_bytes<const N: usize>() -> Result<[u8; N], StoreError> {
    let mut bytes = [0u8; N];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| StoreError::Crypto(format!("the system random source failed: {e}")))?;
    Ok(bytes)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Crypto(format!("hashing task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_only_in_their_exact_shape() {
        let secret = "A".repeat(SECRET_B64);
        let good = format!("dw_0123456789abcdef_{secret}");
        assert_eq!(
            parse_token(&good),
            Some(("0123456789abcdef", secret.as_str()))
        );
        // The secret may itself contain '_' and '-'.
        let tricky = format!("dw_0123456789abcdef__-{}", "b".repeat(SECRET_B64 - 2));
        assert!(parse_token(&tricky).is_some());
        for bad in [
            String::new(),
            "dw_".into(),
            format!("xx_0123456789abcdef_{secret}"),
            format!("dw_0123456789ABCDEF_{secret}"),
            format!("dw_0123456789abcde_{secret}"),
            format!("dw_0123456789abcdef{secret}"),
            format!("dw_0123456789abcdef_{secret}x"),
            format!("dw_0123456789abcdef_{}+", "A".repeat(SECRET_B64 - 1)),
            // Multi-byte characters must not make slicing panic.
            format!("dw_0123456789abcdé_{secret}"),
        ] {
            assert_eq!(parse_token(&bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_hash_verifies_its_secret_only() {
        let phc = hash(b"correct horse".to_vec()).await.unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify(b"correct horse".to_vec(), phc.clone())
            .await
            .unwrap());
        assert!(!verify(b"correct horsf".to_vec(), phc).await.unwrap());
        assert!(matches!(
            verify(b"x".to_vec(), "not a hash".into()).await,
            Err(StoreError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn new_tokens_are_distinct_and_parse() {
        let a = new_token().await.unwrap();
        let b = new_token().await.unwrap();
        assert_ne!(a.token, b.token);
        let (lookup, secret) = parse_token(&a.token).unwrap();
        assert_eq!(lookup, a.lookup);
        assert!(verify(secret.as_bytes().to_vec(), a.secret_hash)
            .await
            .unwrap());
    }
}
