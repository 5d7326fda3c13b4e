//! Which IP addresses a delivery may connect to (SPEC §6.4).
//!
//! Webhook URLs are written by tenants, so without a check a URL could make the sender reach the
//! cloud metadata service, the VPC, or the sender's own loopback. This module owns the judgement
//! of a single address; `client` applies it to every address actually connected to. It is a
//! deny-by-default judgement: an address is global only when it is not in any special-purpose
//! range, and for IPv6 only when it is inside global unicast `2000::/3` at all, so ranges IANA
//! adds later stay refused until someone looks at them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::cidr::CidrList;

/// True when `ip` is an ordinary, publicly routed unicast address.
///
/// IPv4 hidden in IPv6 (mapped `::ffff:0:0/96`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) is judged
/// as the IPv4 it carries, because that is where the packets end up.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, network: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(network)) & mask
}

fn in_v6(ip: Ipv6Addr, network: Ipv6Addr, prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(ip) & mask == u128::from(network) & mask
}

/// IPv4 special-purpose blocks (IANA registry) that no webhook receiver legitimately lives in.
const NON_GLOBAL_V4: &[([u8; 4], u32)] = &[
    ([0, 0, 0, 0], 8),       // "this network", includes the unspecified address
    ([10, 0, 0, 0], 8),      // private
    ([100, 64, 0, 0], 10),   // CGNAT shared address space
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link-local, includes the cloud metadata service 169.254.169.254
    ([172, 16, 0, 0], 12),   // private
    ([192, 0, 0, 0], 24),    // IETF protocol assignments (e.g. DS-Lite 192.0.0.0/29)
    ([192, 0, 2, 0], 24),    // documentation TEST-NET-1
    ([192, 88, 99, 0], 24),  // deprecated 6to4 relay anycast
    ([192, 168, 0, 0], 16),  // private
    ([198, 18, 0, 0], 15),   // benchmarking
    ([198, 51, 100, 0], 24), // documentation TEST-NET-2
    ([203, 0, 113, 0], 24),  // documentation TEST-NET-3
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved, includes broadcast 255.255.255.255
];

fn is_global_v4(ip: Ipv4Addr) -> bool {
    !NON_GLOBAL_V4.iter().any(|(network, prefix)| in_v4(ip, *network, *prefix))
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);

    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_global_v4(v4);
    }
    if in_v6(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        return is_global_v4(low32);
    }
    // Everything outside global unicast is non-global: ::/128, ::1, IPv4-compatible ::/96,
    // the local-use NAT64 prefix 64:ff9b:1::/48, discard 100::/64, ULA fc00::/7, link-local
    // fe80::/10, site-local fec0::/10 and multicast ff00::/8 among them.
    if !in_v6(ip, Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3) {
        return false;
    }
    if in_v6(ip, Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        // 6to4 carries the IPv4 of its relay in bits 16..48; the relay forwards to it.
        return is_global_v4(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    // IETF protocol assignments 2001::/23 hold Teredo 2001::/32 (its embedded address is
    // obfuscated, so it cannot be judged), benchmarking 2001:2::/48 and ORCHID; refuse them all.
    let special: [(Ipv6Addr, u32); 3] = [
        (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),
        (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
        (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),     // documentation (RFC 9637)
    ];
    !special.iter().any(|(network, prefix)| in_v6(ip, *network, *prefix))
}

/// Where deliveries may connect: any global address, plus the operator's allow-list
/// (`ALLOWED_TARGET_CIDRS`; local mode adds loopback). With `DENY_PUBLIC_TARGETS`, only the
/// allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPolicy {
    allowed: CidrList,
    allow_public: bool,
}

impl Default for AddressPolicy {
    fn default() -> Self {
        Self { allowed: CidrList::default(), allow_public: true }
    }
}

impl AddressPolicy {
    pub fn new(allowed: CidrList) -> Self {
        Self { allowed, allow_public: true }
    }

    /// Only the allow-list, no public addresses: egress limited to known networks.
    pub fn allow_list_only(allowed: CidrList) -> Self {
        Self { allowed, allow_public: false }
    }

    /// Global addresses only: the production default.
    pub fn global_only() -> Self {
        Self::default()
    }

    /// True when no address at all is permitted, so names need not even be resolved.
    pub fn permits_nothing(&self) -> bool {
        !self.allow_public && self.allowed.is_empty()
    }

    pub fn allowed(&self) -> &CidrList {
        &self.allowed
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        (self.allow_public && is_global(ip)) || self.allowed.contains(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn public_unicast_addresses_are_global() {
        for text in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "2001:200::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_global(ip(text)), "{text} should be global");
        }
    }

    #[test]
    fn special_purpose_ipv4_ranges_are_not_global() {
        for text in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "169.254.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.0.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!is_global(ip(text)), "{text} should not be global");
        }
    }

    #[test]
    fn special_purpose_ipv6_ranges_are_not_global() {
        for text in [
            "::",
            "::1",
            "::127.0.0.1",
            "::8.8.8.8",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
            "100::1",
            "64:ff9b:1::808:808",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "2001:db8::1",
            "2001:db8:ffff::1",
            "3fff::1",
        ] {
            assert!(!is_global(ip(text)), "{text} should not be global");
        }
    }

    #[test]
    fn ipv4_hidden_in_ipv6_is_judged_as_the_ipv4_it_carries() {
        for text in [
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::ffff:0.0.0.0",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::192.168.1.1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "2002:c0a8:101::1",
        ] {
            assert!(!is_global(ip(text)), "{text} should not be global");
        }
    }

    #[test]
    fn the_allow_list_extends_but_never_narrows_what_is_permitted() {
        let global_only = AddressPolicy::global_only();
        assert!(global_only.permits(ip("8.8.8.8")));
        assert!(!global_only.permits(ip("127.0.0.1")));
        assert!(!global_only.permits(ip("::1")));

        let local = AddressPolicy::new(CidrList::loopback());
        assert!(local.permits(ip("127.0.0.1")));
        assert!(local.permits(ip("127.0.0.2")));
        assert!(local.permits(ip("::ffff:127.0.0.1")));
        assert!(local.permits(ip("::1")));
        assert!(local.permits(ip("8.8.8.8")));
        assert!(!local.permits(ip("169.254.169.254")));
        assert!(!local.permits(ip("10.0.0.1")));

        let vpc = AddressPolicy::new("10.1.0.0/16".parse().unwrap());
        assert!(vpc.permits(ip("10.1.2.3")));
        assert!(!vpc.permits(ip("10.2.0.1")));
    }

    #[test]
    fn allow_list_only_refuses_public_addresses_and_an_empty_one_permits_nothing() {
        let loopback_only = AddressPolicy::allow_list_only(CidrList::loopback());
        let nothing = AddressPolicy::allow_list_only(CidrList::default());

        assert!(loopback_only.permits(ip("127.0.0.1")));
        assert!(!loopback_only.permits(ip("8.8.8.8")));
        assert!(!loopback_only.permits_nothing());
        assert!(nothing.permits_nothing());
        assert!(!nothing.permits(ip("8.8.8.8")));
        assert!(!AddressPolicy::global_only().permits_nothing());
    }
}
