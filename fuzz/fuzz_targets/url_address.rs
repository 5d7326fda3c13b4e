//! Webhook URLs and the SSRF address classification (SPEC §6.4). The input is read three ways:
//! as a URL a tenant writes, as raw IPv4/IPv6 bytes, and as CIDR text. Checks invariants the
//! guard relies on: an address embedded in IPv6 is judged as the IPv4 it carries, and the
//! production policy permits exactly the global addresses.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use webhooks::delivery::{AddressPolicy, Cidr, canonical, is_global};
use webhooks::domain::WebhookUrl;

fn judge(ip: IpAddr) {
    let global = is_global(ip);
    assert_eq!(AddressPolicy::global_only().permits(ip), global, "{ip}");
    if let IpAddr::V4(v4) = ip {
        assert_eq!(is_global(IpAddr::V6(v4.to_ipv6_mapped())), global, "mapped {ip}");
    }
    let _ = canonical(ip);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(bytes) = <[u8; 4]>::try_from(data) {
        judge(IpAddr::V4(Ipv4Addr::from(bytes)));
    }
    if let Some(bytes) = data.get(..16).and_then(|b| <[u8; 16]>::try_from(b).ok()) {
        judge(IpAddr::V6(Ipv6Addr::from(bytes)));
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(ip) = text.parse::<IpAddr>() {
        judge(ip);
    }
    if let Ok(cidr) = text.parse::<Cidr>() {
        let _ = cidr.contains(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    for https_only in [false, true] {
        if let Ok(url) = WebhookUrl::parse(text, https_only) {
            // What is stored parses again to itself.
            let again = WebhookUrl::parse(url.as_str(), https_only).map(|u| u.as_str().to_owned());
            assert_eq!(again.ok().as_deref(), Some(url.as_str()), "{text:?}");
            if let Some(host) = url::Url::parse(url.as_str()).ok().and_then(|u| u.host_str().map(str::to_owned)) {
                if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
                    judge(ip);
                }
            }
        }
    }
});
