//! Where the service may send requests on a tenant's behalf. Endpoints a
//! tenant supplies (a provider's URL, later a webhook) are untrusted: by
//! default they may not reach loopback, private, link-local (cloud metadata
//! included), unique-local, multicast or otherwise special addresses.
//!
//! The check applies to the address actually connected to: [`client`] gives a
//! reqwest client whose DNS resolver drops refused addresses (so a name that
//! resolves to a private address, DNS rebinding included, gets none), that
//! follows no redirect and uses no proxy, and [`check_url`] refuses an IP
//! literal (which reqwest does not resolve) before any request, also when a
//! stored endpoint is used.
//! `--provider-allow-private` lifts all of it, for a local Ollama or vLLM.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use reqwest::Url;

/// Why an endpoint is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointError {
    NotHttp,
    Malformed,
    Credentials,
    Query,
    Internal,
}

/// Said of a provider configuration's `endpoint`.
impl std::fmt::Display for EndpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointError::Query => f.write_str(
                "endpoint must not carry a query or fragment (give secrets in secret or key)",
            ),
            other => f.write_str(&other.of("endpoint")),
        }
    }
}

impl std::error::Error for EndpointError {}

impl EndpointError {
    /// The error as said of the field `field` (`endpoint`, a webhook's `url`).
    pub fn of(&self, field: &str) -> String {
        match self {
            EndpointError::NotHttp => format!("{field} must be an http or https URL"),
            EndpointError::Malformed => format!("{field} is not a valid URL"),
            EndpointError::Credentials => {
                format!("{field} must not carry a user name or password")
            }
            EndpointError::Query => format!("{field} must not carry a query or fragment"),
            EndpointError::Internal => format!(
                "{field} reaches a private, loopback, link-local or otherwise internal address"
            ),
        }
    }
}

/// Whether a tenant's endpoint may reach `ip`: a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254.0.0/16: cloud metadata lives here
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    // Addresses that carry an IPv4 address are judged by it.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        // local-use NAT64 (64:ff9b:1::/48)
        return false;
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        // NAT64 (64:ff9b::/96)
        let [h, l] = [s[6], s[7]];
        return is_public_v4(Ipv4Addr::new(
            (h >> 8) as u8,
            h as u8,
            (l >> 8) as u8,
            l as u8,
        ));
    }
    if s[0] == 0x2002 {
        // 6to4 (2002::/16)
        return is_public_v4(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local (fd00:ec2::254: AWS metadata)
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && s[1] == 0) // Teredo (2001::/32)
        || (s[0] == 0x0100 && s[1..4] == [0; 3]) // discard (100::/64)
        || s[..6] == [0; 6]) // IPv4-compatible (deprecated) and the like
}

/// Checks an endpoint a tenant gives: an http(s) URL with a host, no user
/// name or password, and (unless `allow_private`) no internal IP literal.
pub fn check_url(endpoint: &str, allow_private: bool) -> Result<Url, EndpointError> {
    let url = Url::parse(endpoint.trim()).map_err(|_| EndpointError::Malformed)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(EndpointError::NotHttp);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(EndpointError::Credentials);
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(EndpointError::Query);
    }
    let host = url.host().ok_or(EndpointError::Malformed)?;
    let literal = match host {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        // A name DNS can hold: letters, digits, hyphens and dots (a
        // non-ASCII name arrives here as punycode).
        url::Host::Domain(name) => {
            if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                return Err(EndpointError::Malformed);
            }
            None
        }
    };
    if !allow_private && literal.is_some_and(|ip| !is_public(ip)) {
        return Err(EndpointError::Internal);
    }
    Ok(url)
}

/// A DNS resolver that keeps only the addresses a tenant's endpoint may
/// reach; a name with none left fails to resolve.
struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let allowed: Vec<SocketAddr> = found.filter(|a| is_public(a.ip())).collect();
            if allowed.is_empty() {
                return Err(Box::new(EndpointError::Internal) as Box<_>);
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// A client for tenants' endpoints: no redirects followed (a redirect would
/// carry the prompt, and headers such as `x-api-key`, to another host), no
/// proxy from the environment (a proxy would resolve names past the guard),
/// and, unless `allow_private`, the resolver above.
pub fn client(timeout: Duration, allow_private: bool) -> reqwest::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    if allow_private {
        return builder.build();
    }
    builder
        .dns_resolver(std::sync::Arc::new(GuardedResolver))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused() {
        let refused = [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.0.0.8",
            "172.16.5.4",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.7",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "2001:db8::1",
            "64:ff9b:1::a00:1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "100::1",
        ];
        for ip in refused {
            assert!(!is_public(ip.parse().expect(ip)), "{ip} must be refused");
        }
        let allowed = [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ];
        for ip in allowed {
            assert!(is_public(ip.parse().expect(ip)), "{ip} must be allowed");
        }
    }

    #[test]
    fn endpoints_are_http_urls_without_internal_literals() {
        assert!(check_url("https://api.openai.com/v1", false).is_ok());
        assert!(check_url("http://8.8.8.8:8080/v1", false).is_ok());
        assert_eq!(
            check_url("ftp://example.com", false),
            Err(EndpointError::NotHttp)
        );
        assert_eq!(
            check_url("file:///etc/passwd", false),
            Err(EndpointError::NotHttp)
        );
        assert_eq!(check_url("not a url", false), Err(EndpointError::Malformed));
        assert_eq!(
            check_url("https://user:pw@example.com", false),
            Err(EndpointError::Credentials)
        );
        assert_eq!(
            check_url("https://example.com/v1?key=secret", false),
            Err(EndpointError::Query)
        );
        for internal in [
            "http://127.0.0.1:11434/v1",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:8000",
            "http://[::ffff:10.0.0.1]/",
            "http://0x7f000001/",
            "http://2130706433/",
        ] {
            assert_eq!(
                check_url(internal, false),
                Err(EndpointError::Internal),
                "{internal}"
            );
            assert!(check_url(internal, true).is_ok(), "{internal} when allowed");
        }
    }

    #[tokio::test]
    async fn names_that_resolve_inside_are_not_connected_to() {
        // A real server on loopback, reached by a name that resolves to it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "inside" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("http://localhost:{port}/");
        let guarded = client(Duration::from_secs(5), false).expect("client");
        let refused = guarded.get(&url).send().await.expect_err("refused");
        assert!(refused.is_connect() || refused.is_request(), "{refused:?}");
        let open = client(Duration::from_secs(5), true).expect("client");
        let body = open
            .get(&url)
            .send()
            .await
            .expect("allowed")
            .text()
            .await
            .expect("body");
        assert_eq!(body, "inside");
    }
}
