//! `meterstack health`: the readiness probe of a container (Docker `HEALTHCHECK`, a Kubernetes
//! exec probe) that needs no HTTP client in the image: `GET /readyz` on the process's own
//! configured HTTP address (`http.listen`, with an unspecified address probed on loopback).
//! Exit 0 when the answer is 200, else 1 with the reason.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use meterstack_api::HttpConfig;

/// Arguments of `meterstack health`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The URL to probe [default: http://<http.listen>/readyz, loopback for 0.0.0.0 or ::]
    #[arg(long)]
    url: Option<String>,
    /// Give up after this long.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Probes; returns the body of a ready answer.
pub(crate) fn probe(args: &Args, http: &HttpConfig) -> anyhow::Result<String> {
    let url = match &args.url {
        Some(url) => url.clone(),
        None => readyz_url(http)?,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(args.timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .get(&url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    if status != 200 {
        bail!("GET {url}: {status}: {body}");
    }
    Ok(body)
}

/// `http://<listen>/readyz`, with an unspecified address replaced by loopback.
fn readyz_url(http: &HttpConfig) -> anyhow::Result<String> {
    if http.tls.enabled() {
        bail!(
            "the API serves HTTPS ([http.tls]) and this probe speaks plain HTTP: probe \
             https://…/readyz with an HTTPS client, or pass --url to a plain-HTTP address"
        );
    }
    let mut addr: SocketAddr = http.listen;
    if addr.port() == 0 {
        bail!("http.listen has port 0 (a free port picked at start): pass --url");
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(format!("http://{addr}/readyz"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_url_follows_the_listen_address() {
        let mut http = HttpConfig {
            listen: "0.0.0.0:8080".parse().expect("addr"),
            ..HttpConfig::default()
        };
        assert_eq!(
            readyz_url(&http).expect("url"),
            "http://127.0.0.1:8080/readyz"
        );
        http.listen = "[::]:9090".parse().expect("addr");
        assert_eq!(readyz_url(&http).expect("url"), "http://[::1]:9090/readyz");
        http.listen = "10.1.2.3:8080".parse().expect("addr");
        assert_eq!(
            readyz_url(&http).expect("url"),
            "http://10.1.2.3:8080/readyz"
        );
        http.listen = "127.0.0.1:0".parse().expect("addr");
        assert!(readyz_url(&http).is_err());
        http.listen = "127.0.0.1:8080".parse().expect("addr");
        http.tls.cert = "server.pem".into();
        assert!(readyz_url(&http).is_err());
    }
}
