//! Where deliveries may go. A tenant chooses the URL, so without a rule a webhook
//! could make finsync's workers call its own network (cloud metadata, databases,
//! admin ports) and report what answered. Only public addresses are allowed unless
//! `webhooks.allow_private_targets` is on (development, tests). The host is checked
//! when the endpoint is registered and its addresses again before every attempt,
//! since a name can point elsewhere later.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether an address is reachable on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => public_v4(v4),
            None => public_v6(v6),
        },
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // Shared address space (carrier-grade NAT), 100.64.0.0/10.
        || (a == 100 && (64..128).contains(&b))
        // Benchmarking, 198.18.0.0/15, and reserved, 240.0.0.0/4.
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // Unique local fc00::/7 and link-local fe80::/10.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        // Documentation, 2001:db8::/32.
        || (first == 0x2001 && ip.segments()[1] == 0x0db8))
}

/// At registration: refuses hosts that name a private place outright (an address
/// literal, `localhost`). Names are resolved at delivery.
pub fn check_host(url: &url::Url, allow_private: bool) -> Result<(), &'static str> {
    if allow_private {
        return Ok(());
    }
    match url.host() {
        None => Err("has no host"),
        Some(url::Host::Ipv4(ip)) if !is_public(IpAddr::V4(ip)) => {
            Err("points at a private or reserved address")
        }
        Some(url::Host::Ipv6(ip)) if !is_public(IpAddr::V6(ip)) => {
            Err("points at a private or reserved address")
        }
        Some(url::Host::Domain(name))
            if name.eq_ignore_ascii_case("localhost")
                || name.to_ascii_lowercase().ends_with(".localhost") =>
        {
            Err("points at this machine")
        }
        Some(_) => Ok(()),
    }
}

/// Before an attempt: every address the host resolves to must be public.
pub async fn check_resolved(url: &str, allow_private: bool) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    let parsed = url::Url::parse(url).map_err(|_| "the endpoint URL is not a URL".to_owned())?;
    check_host(&parsed, false).map_err(|why| format!("REFUSED: the endpoint URL {why}"))?;
    let host = parsed.host_str().unwrap_or_default();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addresses: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| "the receiver's name could not be resolved".to_owned())?
        .collect();
    if addresses.iter().any(|a| !is_public(a.ip())) {
        return Err("REFUSED: the receiver's name resolves to a private address".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_reserved_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn registration_refuses_literal_private_hosts_unless_allowed() {
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert!(check_host(&url("http://127.0.0.1:9/x"), false).is_err());
        assert!(check_host(&url("http://[::1]/x"), false).is_err());
        assert!(check_host(&url("http://localhost/x"), false).is_err());
        assert!(check_host(&url("https://169.254.169.254/latest"), false).is_err());
        assert!(check_host(&url("https://hooks.example.com/x"), false).is_ok());
        assert!(check_host(&url("http://127.0.0.1:9/x"), true).is_ok());
    }
}
