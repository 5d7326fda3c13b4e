use std::net::IpAddr;
use std::str::FromStr;

/// One CIDR block, e.g. `127.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, canonical(address)) {
            (IpAddr::V4(net), IpAddr::V4(addr)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(addr) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(addr)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(addr) & mask
            }
            _ => false,
        }
    }
}

/// IPv4 addresses hidden in IPv6 (mapped `::ffff:a.b.c.d`) are judged as the IPv4 they are.
pub fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(address),
        v4 => v4,
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => {
                p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("{text:?} has a bad prefix length"))?
            }
            None => max,
        };
        Ok(Self {
            network: canonical(network),
            prefix: if network.is_ipv6() && canonical(network).is_ipv4() { prefix.saturating_sub(96) } else { prefix },
        })
    }
}

/// The operator's allow-list (`ALLOWED_TARGET_CIDRS`): comma-separated CIDR blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrList(Vec<Cidr>);

impl CidrList {
    pub fn loopback() -> Self {
        Self(vec![
            Cidr { network: IpAddr::from([127, 0, 0, 0]), prefix: 8 },
            Cidr { network: IpAddr::from(std::net::Ipv6Addr::LOCALHOST), prefix: 128 },
        ])
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        self.0.iter().any(|cidr| cidr.contains(address))
    }

    pub fn extend(&mut self, other: &CidrList) {
        self.0.extend(other.0.iter().copied());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for CidrList {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.split(',').filter(|part| !part.trim().is_empty()).map(str::parse).collect::<Result<Vec<_>, _>>().map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_blocks_match_their_range_only() {
        let list: CidrList = "10.0.0.0/8, ::1/128,192.168.1.7".parse().unwrap();

        assert!(list.contains("10.255.0.1".parse().unwrap()));
        assert!(list.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(list.contains("::1".parse().unwrap()));
        assert!(list.contains("192.168.1.7".parse().unwrap()));
        assert!(!list.contains("192.168.1.8".parse().unwrap()));
        assert!(!list.contains("11.0.0.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<CidrList>().is_err());
        assert!("banana".parse::<CidrList>().is_err());
    }
}
