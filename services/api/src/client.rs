//! Facts about the caller: address, user agent and language.

use std::net::IpAddr;

use actix_web::HttpRequest;
use actix_web::http::header;
use newsletter_domain::{Locale, UserAgent};

/// The client's address: the peer, or, when the peer is a trusted proxy, the last address in
/// `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(request: &HttpRequest, trusted_proxies: &[IpAddr]) -> Option<IpAddr> {
    let peer = request.peer_addr().map(|addr| addr.ip())?;
    if !trusted_proxies.contains(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = request
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|part| part.trim().parse().ok())
        .collect();
    forwarded
        .iter()
        .rev()
        .find(|ip| !trusted_proxies.contains(ip))
        .copied()
        .or(Some(peer))
}

/// The `User-Agent`, cleaned as consent evidence.
pub fn user_agent(request: &HttpRequest) -> Option<UserAgent> {
    request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| UserAgent::parse(value).ok())
}

/// The language from `Accept-Language`, else Danish.
pub fn preferred_locale(request: &HttpRequest) -> Locale {
    request
        .headers()
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|value| value.to_str().ok())
        .and_then(Locale::from_accept_language)
        .unwrap_or(Locale::Da)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn request(peer: &str, forwarded: Option<&str>) -> HttpRequest {
        let mut builder = TestRequest::default().peer_addr(peer.parse().unwrap());
        if let Some(value) = forwarded {
            builder = builder.insert_header(("X-Forwarded-For", value));
        }
        builder.to_http_request()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let spoofed = request("203.0.113.9:5000", Some("198.51.100.1"));
        assert_eq!(
            client_ip(&spoofed, &[proxy]),
            Some("203.0.113.9".parse().unwrap())
        );
        let proxied = request("10.0.0.1:5000", Some("198.51.100.1, 10.0.0.1"));
        assert_eq!(
            client_ip(&proxied, &[proxy]),
            Some("198.51.100.1".parse().unwrap())
        );
        let garbage = request("10.0.0.1:5000", Some("not-an-ip"));
        assert_eq!(client_ip(&garbage, &[proxy]), Some(proxy));
    }

    #[test]
    fn language_falls_back_to_danish() {
        let english = TestRequest::default()
            .insert_header(("Accept-Language", "en-GB,en;q=0.9"))
            .to_http_request();
        assert_eq!(preferred_locale(&english), Locale::En);
        assert_eq!(
            preferred_locale(&TestRequest::default().to_http_request()),
            Locale::Da
        );
    }
}
