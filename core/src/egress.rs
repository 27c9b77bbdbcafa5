//! Outbound connections to addresses that users give us (webhook targets): the SSRF guard.
//!
//! A target is refused when it is, or resolves to, an address of this machine or its
//! networks: loopback, unspecified, private (RFC 1918), shared (CGNAT), link-local (which
//! holds the cloud metadata service 169.254.169.254), unique-local IPv6 (which holds AWS's
//! fd00:ec2::254), multicast, broadcast and reserved ranges. IPv4 embedded in IPv6
//! (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) is
//! judged as the IPv4 address it carries. URLs are parsed as browsers do, so decimal, hex and
//! octal spellings (`http://2130706433/`, `http://0x7f.1/`) become the address they mean.
//!
//! The check runs where the connection is made ([`EgressPolicy::resolve`] before connecting,
//! [`EgressPolicy::permits`] on the connected peer), so a name that resolved to a public
//! address when the target was saved and to a private one later (DNS rebinding) is refused.
//! `allow` lists networks that are accepted anyway, for on-premises receivers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Why an outbound target is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// Not a URL we send to.
    #[error("invalid target URL: {0}")]
    Url(String),
    /// The address is in a refused range.
    #[error("{ip} is a {kind} address; webhook targets must be public (or in webhooks.allow)")]
    Refused {
        /// The address.
        ip: IpAddr,
        /// Which range.
        kind: &'static str,
    },
    /// The name does not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host name.
        host: String,
        /// Why.
        reason: String,
    },
}

/// Which outbound addresses are allowed besides public ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressPolicy {
    /// Networks accepted although they are not public (`"10.20.0.0/16"`, `"127.0.0.1/32"`).
    pub allow: Vec<IpNet>,
}

/// The IPv4 address an IPv6 address carries, if it is one of the embeddings.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // IPv4-mapped ::ffff:a.b.c.d and IPv4-compatible ::a.b.c.d (not :: and ::1).
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => Some(low),
        // NAT64 64:ff9b::/96.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        // 6to4 2002:AABB:CCDD::/48.
        [0x2002, a, b, ..] => Some(Ipv4Addr::new(
            (a >> 8) as u8,
            a as u8,
            (b >> 8) as u8,
            b as u8,
        )),
        _ => None,
    }
}

/// The refused range `ip` is in, if any.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            Some(match o {
                [127, ..] => "loopback",
                [0, ..] => "unspecified (this network)",
                [10, ..] | [192, 168, ..] => "private",
                [172, b, ..] if (16..32).contains(&b) => "private",
                [100, b, ..] if (64..128).contains(&b) => "shared (carrier-grade NAT)",
                [169, 254, ..] => "link-local (cloud metadata)",
                [192, 0, 0, _] => "IETF protocol assignment",
                [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => "documentation",
                [198, 18 | 19, ..] => "benchmarking",
                [224..=239, ..] => "multicast",
                [255, 255, 255, 255] => "broadcast",
                [240..=255, ..] => "reserved",
                _ => return None,
            })
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return non_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            Some(if v6.is_loopback() {
                "loopback"
            } else if v6.is_unspecified() {
                "unspecified"
            } else if first & 0xfe00 == 0xfc00 {
                "unique-local (cloud metadata)"
            } else if first & 0xffc0 == 0xfe80 {
                "link-local"
            } else if first & 0xffc0 == 0xfec0 {
                "site-local"
            } else if first & 0xff00 == 0xff00 {
                "multicast"
            } else if first == 0x2001 && v6.segments()[1] == 0x0db8 {
                "documentation"
            } else if first == 0x0100 && v6.segments()[1..4] == [0, 0, 0] {
                "discard-only"
            } else if first == 0x2001 && v6.segments()[1] == 0 {
                "Teredo"
            } else {
                return None;
            })
        }
    }
}

impl EgressPolicy {
    /// Whether a connection to `ip` is allowed.
    pub fn permits(&self, ip: IpAddr) -> Result<(), EgressError> {
        let canonical = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self
            .allow
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
        {
            return Ok(());
        }
        match non_public(ip) {
            Some(kind) => Err(EgressError::Refused { ip, kind }),
            None => Ok(()),
        }
    }

    /// Checks a target URL as it is saved: `http` or `https`, a host, no credentials, and a
    /// literal address that [`permits`](Self::permits) allows. Returns the URL normalized
    /// (the address a numeric spelling means). Names are judged when connecting.
    pub fn check_url(&self, url: &str) -> Result<url::Url, EgressError> {
        let parsed = url::Url::parse(url).map_err(|e| EgressError::Url(format!("{url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(EgressError::Url(format!(
                "{url:?}: the scheme must be http or https"
            )));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(EgressError::Url(format!(
                "{url:?}: credentials in the URL are not allowed"
            )));
        }
        match parsed.host() {
            Some(url::Host::Ipv4(v4)) => self.permits(IpAddr::V4(v4))?,
            Some(url::Host::Ipv6(v6)) => self.permits(IpAddr::V6(v6))?,
            Some(url::Host::Domain(name)) => {
                // A name that is an address in another spelling, or names this machine.
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name == "localhost" || name.ends_with(".localhost") {
                    self.permits(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
                }
            }
            None => return Err(EgressError::Url(format!("{url:?}: no host"))),
        }
        Ok(parsed)
    }

    /// Resolves `host:port` and keeps the addresses [`permits`](Self::permits) allows; an
    /// error when none is left (it names the first refused address).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, EgressError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let resolved: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((bare, port))
                .await
                .map_err(|e| EgressError::Resolve {
                    host: host.to_owned(),
                    reason: e.to_string(),
                })?
                .collect(),
        };
        let mut refused = None;
        let allowed: Vec<SocketAddr> = resolved
            .into_iter()
            .filter(|a| match self.permits(a.ip()) {
                Ok(()) => true,
                Err(e) => {
                    refused.get_or_insert(e);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), refused) {
            (false, _) => Ok(allowed),
            (true, Some(e)) => Err(e),
            (true, None) => Err(EgressError::Resolve {
                host: host.to_owned(),
                reason: "no addresses".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Targets that must never be reached. Each is refused when saved (a literal address, or
    /// `localhost`) or when resolved before connecting.
    pub(crate) const HOSTILE: &[&str] = &[
        "http://127.0.0.1/",
        "http://127.1.2.3:8080/",
        "http://127.1/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0x7f.0.0.1/",
        "http://0177.0.0.1/",
        "http://017700000001/",
        "http://localhost/",
        "http://LOCALHOST./",
        "http://api.localhost/",
        "http://0.0.0.0/",
        "http://0/",
        "http://[::1]/",
        "http://[::]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[::127.0.0.1]/",
        "http://[64:ff9b::7f00:1]/",
        "http://[2002:7f00:1::]/",
        "http://[0:0:0:0:0:ffff:a9fe:a9fe]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/latest/meta-data/",
        "http://0xa9fea9fe/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://100.100.100.200/",
        "http://10.0.0.1/",
        "http://10.255.255.255/",
        "http://172.16.0.1/",
        "http://172.31.255.254/",
        "http://192.168.1.1/",
        "http://[::ffff:192.168.1.1]/",
        "http://[fc00::1]/",
        "http://[fe80::1]/",
        "http://[fec0::1]/",
        "http://224.0.0.1/",
        "http://239.255.255.250:1900/",
        "http://[ff02::1]/",
        "http://255.255.255.255/",
        "http://240.0.0.1/",
        "http://100.64.0.1/",
        "http://198.18.0.1/",
        "http://192.0.0.170/",
    ];

    #[test]
    fn hostile_targets_are_refused_when_saved() {
        let policy = EgressPolicy::default();
        assert!(HOSTILE.len() >= 30);
        for url in HOSTILE {
            let err = policy.check_url(url).expect_err(url);
            assert!(matches!(err, EgressError::Refused { .. }), "{url}: {err}");
        }
    }

    #[test]
    fn public_targets_and_allowed_networks_pass() {
        let policy = EgressPolicy::default();
        for url in [
            "https://hooks.example.com/meterstack",
            "http://93.184.216.34:8080/x",
            "http://[2606:4700::1111]/",
            "http://[::ffff:8.8.8.8]/",
        ] {
            policy.check_url(url).expect(url);
        }
        let on_prem = EgressPolicy {
            allow: vec!["10.20.0.0/16".parse().unwrap_or_else(|_| unreachable!())],
        };
        on_prem.check_url("http://10.20.3.4/hook").expect("allowed");
        assert!(on_prem.check_url("http://10.21.3.4/hook").is_err());
        assert!(
            on_prem
                .permits(
                    "::ffff:10.20.0.9"
                        .parse()
                        .unwrap_or_else(|_| unreachable!())
                )
                .is_ok()
        );
    }

    #[test]
    fn numeric_spellings_are_normalized() {
        let policy = EgressPolicy {
            allow: vec!["127.0.0.0/8".parse().unwrap_or_else(|_| unreachable!())],
        };
        let url = policy.check_url("http://0x7f.1:9000/x").expect("allowed");
        assert_eq!(url.host_str(), Some("127.0.0.1"));
    }

    #[test]
    fn bad_urls_are_refused() {
        let policy = EgressPolicy::default();
        for url in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "http://user:pw@example.com/",
            "not a url",
            "gopher://example.com/",
        ] {
            assert!(
                matches!(policy.check_url(url), Err(EgressError::Url(_))),
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn names_are_judged_by_what_they_resolve_to() {
        let policy = EgressPolicy::default();
        // `localhost` resolves (from /etc/hosts) to loopback only.
        let err = policy.resolve("localhost", 80).await.expect_err("loopback");
        assert!(matches!(err, EgressError::Refused { .. }), "{err}");
        let allowed = EgressPolicy {
            allow: vec![
                "127.0.0.0/8".parse().unwrap_or_else(|_| unreachable!()),
                "::1/128".parse().unwrap_or_else(|_| unreachable!()),
            ],
        };
        assert!(
            !allowed
                .resolve("localhost", 80)
                .await
                .expect("allowed")
                .is_empty()
        );
    }
}
