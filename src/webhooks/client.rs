//! The guarded HTTP client deliveries go through: https checked against the Mozilla
//! roots (and any CA the operator adds), and public addresses only unless the server
//! allows private ones, checked when a URL is given and again when its name resolves.

use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::subscription::{MAX_URL_BYTES, RetryPolicy};
use crate::error::Error;

/// The client deliveries go through.
pub(super) type Http = Client<hyper_rustls::HttpsConnector<HttpConnector<Guarded>>, Full<Bytes>>;

/// Reads extra trusted CA certificates (PEM) for https receivers with a private CA.
pub fn read_ca(path: &std::path::Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| anyhow::anyhow!("cannot read CA certificates from {}: {e}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no PEM certificate", path.display());
    Ok(certs)
}

/// Whether deliveries may go to `ip`: public addresses only, unless the server allows
/// private ones (`--webhook-allow-private`, for receivers on the same host or network).
#[must_use]
pub fn deliverable(ip: std::net::IpAddr, allow_private: bool) -> bool {
    use std::net::IpAddr;
    if allow_private {
        return true;
    }
    match ip {
        IpAddr::V4(v) => {
            !(v.is_private()
                || v.is_loopback()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast()
                || v.is_documentation()
                || v.octets()[0] == 100 && (v.octets()[1] & 0xc0) == 64
                || v.octets()[0] == 0)
        }
        IpAddr::V6(v) => {
            if let Some(v4) = v.to_ipv4_mapped() {
                return deliverable(IpAddr::V4(v4), false);
            }
            !(v.is_loopback()
                || v.is_unspecified()
                || v.is_unique_local()
                || v.is_unicast_link_local()
                || v.is_multicast())
        }
    }
}

/// A resolver that drops addresses deliveries may not go to (so a public name that
/// resolves to an internal address is refused at connect time, not only at subscribe).
#[derive(Clone)]
pub(super) struct Guarded {
    inner: hyper_util::client::legacy::connect::dns::GaiResolver,
    allow_private: bool,
}

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for Guarded {
    type Response = std::vec::IntoIter<std::net::SocketAddr>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let allow = self.allow_private;
        let fut = self.inner.call(name);
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = fut.await?.filter(|a| deliverable(a.ip(), allow)).collect();
            if addrs.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the receiver's name resolves only to private addresses",
                ));
            }
            Ok(addrs.into_iter())
        })
    }
}

/// Whether deliveries may go to `url`: http or https, with a host, and not a private
/// address unless the server allows those.
pub(super) fn check_url(url: &str, allow_private: bool) -> Result<(), Error> {
    if url.len() > MAX_URL_BYTES {
        return Err(Error::rejected(format!("url is longer than {MAX_URL_BYTES} bytes")));
    }
    let uri: hyper::Uri = url.parse().map_err(|e| Error::rejected(format!("url '{url}' does not parse: {e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(Error::rejected(format!("url '{url}' must start with http:// or https://"))),
    }
    let host = uri.host().unwrap_or_default();
    if host.is_empty() {
        return Err(Error::rejected(format!("url '{url}' has no host")));
    }
    let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>();
    if literal.is_ok_and(|ip| !deliverable(ip, allow_private)) || (!allow_private && host == "localhost") {
        return Err(Error::rejected(format!(
            "url '{url}' points at a private address; this server delivers to public addresses only"
        )));
    }
    Ok(())
}

/// The client for `policy`: https receivers are checked against the Mozilla root store
/// (`webpki-roots`) and `extra_roots`; names resolve to deliverable addresses only.
pub(super) fn build(policy: &RetryPolicy, extra_roots: Vec<CertificateDer<'static>>) -> anyhow::Result<Http> {
    let resolver = Guarded {
        inner: hyper_util::client::legacy::connect::dns::GaiResolver::new(),
        allow_private: policy.allow_private,
    };
    let mut http = HttpConnector::new_with_resolver(resolver);
    http.set_connect_timeout(Some(policy.timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    for ca in extra_roots {
        roots.add(ca).map_err(|e| anyhow::anyhow!("a CA certificate is not usable: {e}"))?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).pool_max_idle_per_host(4).build(https))
}
