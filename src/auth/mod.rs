//! Bearer API tokens: how they are made, how they travel, how they are stored.
//!
//! A token is `fbk_` followed by 32 bytes from the OS RNG in unpadded base64url.
//! It is shown once; the store keeps only its SHA-256, looked up through a
//! unique index. Which token answers which caller is decided by
//! `service::auth` (`Service::authenticate`), against the store.

pub mod jwt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRngCore as _;
use sha2::{Digest, Sha256};

/// The prefix of every token this service issues (easy to spot in a leak scan).
pub const TOKEN_PREFIX: &str = "fbk_";

/// The longest credential we look at (a JWT with a large RSA signature and a
/// few claims fits with room to spare); anything longer is refused unread.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// A freshly made token: the secret for the user, the hash for the store.
pub struct NewToken {
    pub secret: String,
    pub hash: [u8; 32],
}

/// Makes a new random token.
pub fn generate_token() -> NewToken {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random number generator failed");
    let secret = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_token(&secret);
    NewToken { secret, hash }
}

/// The SHA-256 of a token, as stored in `api_tokens.token_hash`.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Extracts the credentials from an `Authorization` value of the `Bearer`
/// scheme (RFC 6750 and RFC 9110 section 11): the scheme name is matched
/// case-insensitively, one or more spaces separate it from a `token68`
/// credential, and surrounding whitespace is ignored. Anything else (another
/// scheme, a missing or malformed credential) is `None`.
pub fn parse_bearer(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim_matches([' ', '\t']);
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start_matches(' ');
    is_token68(token).then_some(token)
}

/// `token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
fn is_token68(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && s.len() <= MAX_TOKEN_LEN
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hashed() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with(TOKEN_PREFIX));
        assert_eq!(a.secret.len(), TOKEN_PREFIX.len() + 43);
        assert_eq!(a.hash, hash_token(&a.secret));
        assert_eq!(
            parse_bearer(format!("Bearer {}", a.secret).as_bytes()),
            Some(a.secret.as_str())
        );
    }

    #[test]
    fn bearer_follows_http_rules() {
        assert_eq!(parse_bearer(b"Bearer abc"), Some("abc"));
        assert_eq!(parse_bearer(b"bearer abc"), Some("abc"));
        assert_eq!(parse_bearer(b"BEARER   abc=="), Some("abc=="));
        assert_eq!(parse_bearer(b"  Bearer abc  "), Some("abc"));
        assert_eq!(parse_bearer(b"Bearer"), None);
        assert_eq!(parse_bearer(b"Bearer "), None);
        assert_eq!(parse_bearer(b"Bearer a b"), None);
        assert_eq!(parse_bearer(b"Bearer ==="), None);
        assert_eq!(parse_bearer(b"Bearer a=b"), None);
        assert_eq!(parse_bearer(b"Basic abc"), None);
        assert_eq!(parse_bearer(b"Bearerabc"), None);
        assert_eq!(parse_bearer(b"abc"), None);
        assert_eq!(parse_bearer(b"Bearer \xff"), None);
        assert_eq!(parse_bearer("Bearer ä".as_bytes()), None);
        assert_eq!(
            parse_bearer(format!("Bearer {}", "a".repeat(9000)).as_bytes()),
            None
        );
    }
}
