//! JSON Web Tokens from an identity provider, beside our own API tokens.
//!
//! The operator pins what is accepted: the algorithms (a token whose header
//! names another one, `none` included, is refused before any key is touched),
//! the key (an HMAC secret, a PEM public key, or a JWKS file whose keys are
//! chosen by `kid`), and optionally the issuer and audience. `exp` is
//! required; `nbf` is checked when present. The caller's user id is the
//! platform's `userId` claim, else `sub`, and must be a UUID; the service then
//! checks that user against the users table like an API token's owner.
//!
//! Every refusal is the same 401 to the caller; the reason goes to the debug log.

use std::path::PathBuf;
use std::str::FromStr as _;

use anyhow::{Context as _, bail};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use uuid::Uuid;

/// How JWTs are checked, as the operator configured it.
#[derive(Debug, Clone, Default)]
pub struct JwtConfig {
    /// Accepted `alg` values; empty means "the one the key implies".
    pub algorithms: Vec<String>,
    /// Shared secret for HS256/384/512.
    pub secret: Option<SecretString>,
    /// A PEM public key (RSA or EC) for RS*/PS*/ES*.
    pub public_key: Option<PathBuf>,
    /// A JWKS document (a file) whose keys are picked by `kid`.
    pub jwks: Option<PathBuf>,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Accepted `aud` values, if set (a token must name one of them).
    pub audience: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
}

impl JwtConfig {
    /// Whether any key is configured (JWTs are refused otherwise).
    pub fn enabled(&self) -> bool {
        self.secret.is_some() || self.public_key.is_some() || self.jwks.is_some()
    }
}

/// The kind of key an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

impl Family {
    fn of(alg: Algorithm) -> Family {
        match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Family::Hmac,
            Algorithm::ES256 | Algorithm::ES384 => Family::Ec,
            Algorithm::EdDSA => Family::Ed,
            _ => Family::Rsa,
        }
    }

    /// The algorithm accepted when the operator pins none.
    fn default_algorithm(self) -> Algorithm {
        match self {
            Family::Hmac => Algorithm::HS256,
            Family::Rsa => Algorithm::RS256,
            Family::Ec => Algorithm::ES256,
            Family::Ed => Algorithm::EdDSA,
        }
    }
}

/// One verification key.
struct Key {
    kid: Option<String>,
    family: Family,
    key: DecodingKey,
}

/// The checker built from a [`JwtConfig`] at startup: keys parsed once.
pub struct JwtVerifier {
    keys: Vec<Key>,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.keys.len())
            .field("algorithms", &self.validation.algorithms)
            .finish()
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    #[serde(rename = "userId")]
    user_id: Option<String>,
}

impl JwtVerifier {
    /// Parses the keys and pins the algorithms; fails with a reason an
    /// operator can act on (never printing the secret).
    pub fn new(config: &JwtConfig) -> anyhow::Result<Self> {
        let keys = configured_keys(config)?;
        let algorithms = pinned_algorithms(config, &keys)?;
        if config.secret.is_none() && config.audience.is_empty() {
            tracing::warn!(
                "JWT: no --jwt-audience: tokens the identity provider issued for other applications are accepted too"
            );
        }
        Ok(Self {
            keys,
            validation: validation(config, algorithms),
        })
    }

    /// The user a token speaks for, or why it is refused (for the log only).
    pub fn verify(&self, token: &str) -> Result<Uuid, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e}"))?;
        if !self.validation.algorithms.contains(&header.alg) {
            return Err(format!("algorithm {:?} is not accepted", header.alg));
        }
        let family = Family::of(header.alg);
        let candidates: Vec<&Key> = self.keys.iter().filter(|k| k.family == family).collect();
        let named = candidates.iter().any(|k| k.kid.is_some());
        let key = match (&header.kid, candidates.as_slice()) {
            (_, []) => return Err(format!("no {family:?} key")),
            // Keys with ids (a JWKS): the token's `kid` must name one.
            (Some(kid), _) if named => candidates
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid.as_str()))
                .ok_or_else(|| format!("no {family:?} key with kid {kid:?}"))?,
            (_, [only]) => only,
            (_, _) => return Err("no kid, and several keys".into()),
        };
        // The key decides the algorithm's family; the header only picks
        // among the pinned algorithms of that family.
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| format!("{e}"))?;
        let subject = data
            .claims
            .user_id
            .or(data.claims.sub)
            .ok_or("no userId or sub claim")?;
        Uuid::try_parse(&subject).map_err(|_| "the subject is not a user id".into())
    }
}

/// The signing keys of a JWKS document: public keys meant for signatures.
fn jwks_keys(path: &std::path::Path) -> anyhow::Result<Vec<Key>> {
    use jsonwebtoken::jwk::{AlgorithmParameters, PublicKeyUse};
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("JWT: cannot read {}", path.display()))?;
    let set: JwkSet = serde_json::from_str(&text)
        .with_context(|| format!("JWT: {} is not a JWKS document", path.display()))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone();
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Family::Rsa,
            AlgorithmParameters::EllipticCurve(_) => Family::Ec,
            AlgorithmParameters::OctetKeyPair(_) => Family::Ed,
            AlgorithmParameters::OctetKey(_) => {
                bail!(
                    "JWT: key {kid:?} in {} is a shared secret; a JWKS must hold public keys",
                    path.display()
                )
            }
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            bail!(
                "JWT: key {kid:?} in {} is for encryption, not signatures",
                path.display()
            );
        }
        let key = DecodingKey::from_jwk(jwk)
            .with_context(|| format!("JWT: unusable key {kid:?} in {}", path.display()))?;
        keys.push(Key { kid, family, key });
    }
    if keys.is_empty() {
        bail!("JWT: {} holds no keys", path.display());
    }
    Ok(keys)
}

/// Whether a bearer credential has the shape of a JWT (three dot-separated
/// parts) rather than one of our API tokens.
pub fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

/// The one key source configured: the secret, a PEM public key, or a JWKS.
fn configured_keys(config: &JwtConfig) -> anyhow::Result<Vec<Key>> {
    let sources = [
        config.secret.is_some(),
        config.public_key.is_some(),
        config.jwks.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        bail!("JWT: give exactly one of --jwt-secret, --jwt-public-key and --jwt-jwks");
    }
    Ok(if let Some(secret) = &config.secret {
        let secret = secret.expose_secret();
        if secret.len() < 32 {
            bail!("JWT: --jwt-secret must be at least 32 bytes long");
        }
        vec![Key {
            kid: None,
            family: Family::Hmac,
            key: DecodingKey::from_secret(secret.as_bytes()),
        }]
    } else if let Some(path) = &config.public_key {
        let pem =
            std::fs::read(path).with_context(|| format!("JWT: cannot read {}", path.display()))?;
        let (family, key) = if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
            (Family::Rsa, key)
        } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
            (Family::Ec, key)
        } else if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
            (Family::Ed, key)
        } else {
            bail!(
                "JWT: {} is not a PEM RSA, EC or Ed25519 public key",
                path.display()
            );
        };
        vec![Key {
            kid: None,
            family,
            key,
        }]
    } else if let Some(path) = &config.jwks {
        jwks_keys(path)?
    } else {
        unreachable!("exactly one source is set");
    })
}

/// The accepted algorithms (pinned, or implied by the keys), each of a
/// configured key's family.
fn pinned_algorithms(config: &JwtConfig, keys: &[Key]) -> anyhow::Result<Vec<Algorithm>> {
    let algorithms = if config.algorithms.is_empty() {
        let mut implied: Vec<Algorithm> = Vec::new();
        for alg in keys.iter().map(|k| k.family.default_algorithm()) {
            if !implied.contains(&alg) {
                implied.push(alg);
            }
        }
        implied
    } else {
        config
            .algorithms
            .iter()
            .map(|a| {
                Algorithm::from_str(a.trim())
                    .map_err(|_| anyhow::anyhow!("JWT: unknown algorithm {a:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    for alg in &algorithms {
        if !keys.iter().any(|k| k.family == Family::of(*alg)) {
            let hint = if config.secret.is_some() || Family::of(*alg) == Family::Hmac {
                " (HS* algorithms go with --jwt-secret only, and the others with a public key)"
            } else {
                ""
            };
            bail!("JWT: {alg:?} does not go with the configured key{hint}");
        }
    }
    Ok(algorithms)
}

/// What a token must satisfy: the algorithms, `exp` (and `nbf`), the issuer
/// and the audience when configured.
fn validation(config: &JwtConfig, algorithms: Vec<Algorithm>) -> Validation {
    let mut validation = Validation::new(algorithms[0]);
    validation.algorithms = algorithms;
    let mut required = vec!["exp"];
    if config.issuer.is_some() {
        required.push("iss");
    }
    if !config.audience.is_empty() {
        required.push("aud");
    }
    validation.set_required_spec_claims(&required);
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.leeway = config.leeway_seconds;
    if let Some(issuer) = &config.issuer {
        validation.set_issuer(&[issuer]);
    }
    if config.audience.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(&config.audience);
    }
    validation
}
