//! The configuration of `serve`: the command-line arguments (and their
//! environment variables) are the configuration, with the one set of
//! defaults written here. [`ServeArgs::into_config`] resolves them into the
//! [`Config`] the server runs with; [`Config::local`] is the same defaults on
//! loopback ports the OS picks (tests, tools).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};
use secrecy::SecretString;

use crate::auth::jwt::JwtConfig;
use crate::provider::ProviderConfig;
use crate::tls::TlsFiles;

/// How `serve` listens and what it accepts.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the REST/JSON gateway.
    #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Address of the gRPC server.
    #[arg(long, env = "GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Serve GET /metrics on this address alone instead of on the HTTP port.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// PEM certificate chain: serve both listeners over TLS (needs --tls-key).
    #[arg(long, env = "TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Longest a request may take: REST answers 504, gRPC DEADLINE_EXCEEDED.
    /// Requests that call a model provider (prompts, validating a
    /// configuration, listing models) may take twice --provider-timeout and
    /// twice --policy-judge-timeout, and 5 s more.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// API requests in flight at most (both transports together); more are
    /// refused at once with 503 / RESOURCE_EXHAUSTED instead of queueing.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_concurrent_requests: u32,
    /// How long an HTTP client may take to send a request's head (slow clients
    /// and idle keep-alive connections are closed after it).
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// How long a streamed prompt's events stay available for resuming
    /// (GET /conversation/{id}/prompt/{turnId}/events) once it is done.
    #[arg(long, env = "STREAM_RETENTION", default_value = "10m", value_parser = parse_duration)]
    pub stream_retention: Duration,
    /// How long an Idempotency-Key is remembered after the create it answered.
    #[arg(long, env = "IDEMPOTENCY_TTL", default_value = "24h", value_parser = parse_duration)]
    pub idempotency_ttl: Duration,
    /// After SIGTERM or Ctrl-C: how long to keep serving while health says
    /// NOT_SERVING and /readyz 503, so load balancers stop sending first.
    #[arg(long, env = "SHUTDOWN_DELAY", default_value = "1s", value_parser = parse_duration_or_zero)]
    pub shutdown_delay: Duration,
    /// Then: how long requests in flight may take to finish.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    #[command(flatten)]
    pub jwt: JwtArgs,
    #[command(flatten)]
    pub provider: ProviderArgs,
    #[command(flatten)]
    pub secrets: SecretsArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Create a demo organization (once) and print a fresh token and ready-to-paste commands.
    #[arg(long, env = "DEMO")]
    pub demo: bool,
}

/// JWTs from an identity provider, accepted beside API tokens once a key is given.
#[derive(Debug, Args)]
pub struct JwtArgs {
    /// Shared HMAC secret (32 bytes or more) for HS256/384/512 JWTs.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, value_parser = secret)]
    pub jwt_secret: Option<SecretString>,
    /// PEM public key (RSA or EC) for RS*/PS*/ES* JWTs.
    #[arg(long, env = "JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// JWKS file; a JWT's `kid` picks the key.
    #[arg(long, env = "JWT_JWKS")]
    pub jwt_jwks: Option<PathBuf>,
    /// Accepted `alg` values, comma-separated [default: HS256 with a secret,
    /// RS256 with an RSA key or a JWKS, ES256 with an EC key].
    #[arg(long, env = "JWT_ALGORITHMS", value_delimiter = ',')]
    pub jwt_algorithms: Vec<String>,
    /// Required `iss` claim.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Accepted `aud` values, comma-separated; a JWT must name one.
    #[arg(long, env = "JWT_AUDIENCE", value_delimiter = ',')]
    pub jwt_audience: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in whole seconds (`0` for none).
    #[arg(long, env = "JWT_LEEWAY", default_value = "30s", value_parser = parse_duration_or_zero)]
    pub jwt_leeway: Duration,
}

/// The model provider: any OpenAI-compatible Chat Completions API.
#[derive(Debug, Args)]
pub struct ProviderArgs {
    /// Its API base, such as https://api.openai.com/v1 or http://127.0.0.1:11434/v1
    /// (Ollama): repositories with no AI configuration attached use it.
    #[arg(long, env = "PROVIDER_URL")]
    pub provider_url: Option<String>,
    /// Its API key, sent as a bearer token.
    #[arg(long, env = "PROVIDER_API_KEY", hide_env_values = true, value_parser = secret)]
    pub provider_api_key: Option<SecretString>,
    /// The models callers may ask for, comma-separated [default: any].
    #[arg(long, env = "PROVIDER_MODELS", value_delimiter = ',')]
    pub provider_models: Vec<String>,
    /// Longest a model provider's answer may take (then 504), the operator's
    /// and tenants' alike.
    #[arg(long, env = "PROVIDER_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub provider_timeout: Duration,
}

/// The master key that seals tenants' secrets (provider API keys).
#[derive(Debug, Clone, Args)]
pub struct SecretsArgs {
    /// File holding the master key (32 bytes, base64) [default on SQLite:
    /// secrets.key beside the database, made on first start with mode 0600;
    /// on PostgreSQL: none, and AI configurations cannot be created].
    #[arg(long, env = "SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// The master key itself (32 bytes, base64), instead of a file.
    #[arg(long, env = "SECRETS_KEY", hide_env_values = true, value_parser = secret)]
    pub secrets_key: Option<SecretString>,
    /// Earlier master keys (base64, comma-separated): values they sealed
    /// still open; `admin secrets rotate` re-seals them with the current key.
    #[arg(long, env = "SECRETS_PREVIOUS_KEYS", hide_env_values = true, value_delimiter = ',', value_parser = secret)]
    pub secrets_previous_keys: Vec<SecretString>,
    /// Let tenants' endpoints reach loopback and private addresses (a local
    /// Ollama or vLLM); refused by default.
    #[arg(long, env = "PROVIDER_ALLOW_PRIVATE")]
    pub provider_allow_private: bool,
}

/// How governance policies are judged, alerts delivered, and token budgets
/// held.
#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// The judge: an OpenAI-compatible Chat Completions API base [default:
    /// each conversation's own provider].
    #[arg(long, env = "POLICY_JUDGE_URL")]
    pub policy_judge_url: Option<String>,
    /// The judge's model [default: the prompt's model].
    #[arg(long, env = "POLICY_JUDGE_MODEL")]
    pub policy_judge_model: Option<String>,
    /// The judge's API key, sent as a bearer token.
    #[arg(long, env = "POLICY_JUDGE_API_KEY", hide_env_values = true, value_parser = secret)]
    pub policy_judge_api_key: Option<SecretString>,
    /// Longest a judge call may take; then blocking policies fail closed
    /// (503) and the others open.
    #[arg(long, env = "POLICY_JUDGE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub policy_judge_timeout: Duration,
    /// While a reply streams and a blocking policy applies, check it each
    /// time this many more characters have arrived (and hold them back
    /// until then).
    #[arg(long, env = "POLICY_STREAM_INTERVAL", default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..))]
    pub policy_stream_interval: u32,
    /// The first retry of a failed webhook delivery waits this long; each
    /// next one twice as long (at most an hour; 10 attempts).
    #[arg(long, env = "WEBHOOK_RETRY_BASE", default_value = "5s", value_parser = parse_duration)]
    pub webhook_retry_base: Duration,
    /// Tokens a prompt holds on its budgets for the model's reply, beside
    /// its estimated prompt and context (Anthropic's replies are capped at
    /// 4096; a longer reply from another provider is counted when settled).
    #[arg(long, env = "BUDGET_REPLY_TOKENS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub budget_reply_tokens: u32,
}

impl PolicyArgs {
    /// The policy settings these arguments describe.
    pub fn config(&self) -> crate::service::policies::PolicyConfig {
        crate::service::policies::PolicyConfig {
            judge_url: self.policy_judge_url.clone(),
            judge_model: self.policy_judge_model.clone(),
            judge_api_key: self.policy_judge_api_key.clone(),
            judge_timeout: self.policy_judge_timeout,
            stream_interval: self.policy_stream_interval as usize,
        }
    }
}

/// How the service is run, resolved from [`ServeArgs`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The REST/JSON gateway.
    pub http_addr: SocketAddr,
    /// The gRPC server.
    pub grpc_addr: SocketAddr,
    /// A listener for `GET /metrics` alone; on the HTTP port when `None`.
    pub metrics_addr: Option<SocketAddr>,
    /// TLS for both the HTTP and the gRPC listener; plaintext when `None`.
    pub tls: Option<TlsFiles>,
    /// JWTs accepted beside API tokens, when a key is configured.
    pub jwt: JwtConfig,
    /// The operator's model provider, for repositories with no configuration attached.
    pub provider: ProviderConfig,
    /// Longest a request may take (REST: 504, gRPC: DEADLINE_EXCEEDED).
    pub request_timeout: Duration,
    /// How long an idempotency key is remembered.
    pub idempotency_ttl: Duration,
    /// How long a streamed prompt can be resumed once it is done.
    pub stream_retention: Duration,
    /// How long an HTTP client may take to send a request's head.
    pub header_read_timeout: Duration,
    /// API requests in flight at most, both transports together; more are
    /// refused at once (REST 503, gRPC RESOURCE_EXHAUSTED).
    pub max_concurrent_requests: usize,
    /// How long, once shutdown starts, the service keeps serving while
    /// reporting NOT_SERVING (gRPC health) and 503 (`/readyz`), so that load
    /// balancers stop sending before it stops accepting.
    pub shutdown_delay: Duration,
    /// How long requests in flight may take to finish once it stops accepting.
    pub shutdown_grace: Duration,
    /// The master key's sources, and whether tenants' endpoints may be private.
    pub secrets: SecretsArgs,
    /// The policy judge and the webhook deliverer.
    pub policy: PolicyArgs,
}

impl ServeArgs {
    /// The configuration these arguments describe.
    pub fn into_config(self) -> Config {
        Config {
            http_addr: self.http_addr,
            grpc_addr: self.grpc_addr,
            metrics_addr: self.metrics_addr,
            tls: self
                .tls_cert
                .zip(self.tls_key)
                .map(|(cert, key)| TlsFiles { cert, key }),
            jwt: JwtConfig {
                algorithms: self.jwt.jwt_algorithms,
                secret: self.jwt.jwt_secret,
                public_key: self.jwt.jwt_public_key,
                jwks: self.jwt.jwt_jwks,
                issuer: self.jwt.jwt_issuer,
                audience: self.jwt.jwt_audience,
                leeway_seconds: self.jwt.jwt_leeway.as_secs(),
            },
            provider: ProviderConfig {
                base_url: self.provider.provider_url,
                api_key: self.provider.provider_api_key,
                models: self.provider.provider_models,
                timeout: self.provider.provider_timeout,
            },
            request_timeout: self.request_timeout,
            idempotency_ttl: self.idempotency_ttl,
            stream_retention: self.stream_retention,
            header_read_timeout: self.header_read_timeout,
            max_concurrent_requests: self.max_concurrent_requests as usize,
            shutdown_delay: self.shutdown_delay,
            shutdown_grace: self.shutdown_grace,
            secrets: self.secrets,
            policy: self.policy,
        }
    }
}

/// How long requests may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Most requests (`--request-timeout`).
    pub request: Duration,
    /// Requests that call a model provider (prompts, validate, models):
    /// what a prompt may spend at most (listing models and the completion,
    /// each up to the provider's time; judging the prompt and the reply,
    /// each up to the judge's) and a little more, never less than `request`.
    pub provider_calls: Duration,
}

impl Config {
    /// The time limits of requests.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            request: self.request_timeout,
            provider_calls: self.request_timeout.max(
                self.provider.timeout * 2
                    + self.policy.policy_judge_timeout * 2
                    + Duration::from_secs(5),
            ),
        }
    }

    /// The defaults of `serve`, on loopback ports the OS picks and with no
    /// shutdown delay (tests, tools).
    pub fn local() -> Self {
        #[derive(Parser)]
        struct Local {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let args = [
            "serve",
            "--http-addr=127.0.0.1:0",
            "--grpc-addr=127.0.0.1:0",
            "--shutdown-delay=0",
        ];
        match Local::try_parse_from(args) {
            Ok(local) => local.serve.into_config(),
            // Only a bad environment variable can make the defaults fail.
            Err(e) => panic!("the default configuration does not parse: {e}"),
        }
    }
}

/// A secret from the command line or the environment; never printed.
fn secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s))
}

/// Parses a lifetime (`humantime`'s forms: 90m, 12h, 30d, 2w, 1h30m, ...):
/// positive, at most 100 years.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration such as 90m, 12h, 30d or 2w ({e})"))?;
    if d.is_zero() {
        return Err("a duration must be positive".into());
    }
    if d > Duration::from_secs(100 * 365 * 86_400) {
        return Err(format!("{s:?} is too long"));
    }
    Ok(d)
}

/// Like [`parse_duration`], and `0` for none.
pub fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        Ok(Duration::ZERO)
    } else {
        parse_duration(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(1_209_600)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration_or_zero("0"), Ok(Duration::ZERO));
        for bad in [
            "",
            "d",
            "30",
            "30x",
            "-1d",
            "0d",
            "h1",
            "99999999999999999w",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn local_is_the_command_line_defaults_on_ephemeral_ports() {
        let c = Config::local();
        assert_eq!(c.http_addr.port(), 0);
        assert_eq!(c.grpc_addr.port(), 0);
        assert_eq!(c.request_timeout, Duration::from_secs(15));
        assert_eq!(c.idempotency_ttl, Duration::from_secs(24 * 3600));
        assert_eq!(c.max_concurrent_requests, 256);
        assert_eq!(c.shutdown_delay, Duration::ZERO);
        assert_eq!(c.provider.timeout, Duration::from_secs(60));
        assert_eq!(
            c.timeouts(),
            Timeouts {
                request: Duration::from_secs(15),
                provider_calls: Duration::from_secs(145)
            }
        );
        assert!(c.provider.base_url.is_none() && !c.jwt.enabled());
    }
}
