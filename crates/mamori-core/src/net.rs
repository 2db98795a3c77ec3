//! IP keys and networks.
//!
//! Every address is kept as a 128-bit key: IPv6 as itself, IPv4 as its IPv4-mapped IPv6 form
//! (`::ffff:a.b.c.d`), so one ordered key space holds both and a CIDR block is a key range.
//! The network used for familiarity is the /24 of an IPv4 address and the /48 of an IPv6 one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The 128-bit key of an address (IPv4 mapped into IPv6; an IPv4-mapped IPv6 text is IPv4).
#[inline]
pub fn ip_key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of a key.
pub fn key_ip(key: u128) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(key)).to_canonical()
}

fn is_v4_key(key: u128) -> bool {
    key >> 32 == 0xffff
}

/// The key of the familiarity network (/24 for IPv4, /48 for IPv6) holding the key `key`.
pub fn prefix_key(key: u128) -> u128 {
    if is_v4_key(key) {
        key & !0xff
    } else {
        key & !((1u128 << 80) - 1)
    }
}

/// The key range `[lo, hi]` of the familiarity network holding the key `key`.
pub fn prefix_range(key: u128) -> (u128, u128) {
    let lo = prefix_key(key);
    if is_v4_key(key) {
        (lo, lo | 0xff)
    } else {
        (lo, lo | ((1u128 << 80) - 1))
    }
}

/// The familiarity network of an address, as a CIDR block.
pub fn prefix_net(ip: IpAddr) -> IpNet {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpNet::new(IpAddr::V4(v4), 24).map(|n| n.trunc()),
        IpAddr::V6(v6) => IpNet::new(IpAddr::V6(v6), 48).map(|n| n.trunc()),
    }
    .unwrap_or_else(|_| IpNet::from(ip))
}

/// The inclusive key range `[lo, hi]` covered by a CIDR block.
pub fn net_range(net: IpNet) -> (u128, u128) {
    match net {
        IpNet::V4(n) => (
            ip_key(IpAddr::V4(n.network())),
            ip_key(IpAddr::V4(n.broadcast())),
        ),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// Parses an address or a CIDR block (`203.0.113.7`, `203.0.113.0/24`, `2001:db8::/48`).
pub fn parse_ip_or_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip.to_canonical()));
    }
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .map_err(|_| format!("{s:?} is neither an IP address nor a CIDR block"))
}

/// The 16-byte big-endian form of a key, as stored in databases (orders like the key).
pub fn key_bytes(key: u128) -> [u8; 16] {
    key.to_be_bytes()
}

/// The key of a stored 16-byte form.
pub fn bytes_key(b: &[u8]) -> Option<u128> {
    <[u8; 16]>::try_from(b).ok().map(u128::from_be_bytes)
}

/// An unspecified IPv4 address, for defaults.
pub const UNSPECIFIED_V4: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn keys_round_trip_and_canonicalise() {
        for s in ["203.0.113.7", "2001:db8::1", "::1", "0.0.0.0"] {
            assert_eq!(key_ip(ip_key(ip(s))), ip(s));
        }
        assert_eq!(ip_key(ip("::ffff:203.0.113.7")), ip_key(ip("203.0.113.7")));
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            prefix_key(ip_key(ip("203.0.113.7"))),
            ip_key(ip("203.0.113.0"))
        );
        assert_eq!(
            prefix_key(ip_key(ip("2001:db8:1:2::5"))),
            ip_key(ip("2001:db8:1::"))
        );
        assert_eq!(prefix_net(ip("203.0.113.7")).to_string(), "203.0.113.0/24");
        assert_eq!(
            prefix_net(ip("2001:db8:1:2::5")).to_string(),
            "2001:db8:1::/48"
        );
    }

    #[test]
    fn ranges() {
        let (lo, hi) = net_range(parse_ip_or_net("203.0.113.9/24").unwrap());
        assert_eq!(key_ip(lo), ip("203.0.113.0"));
        assert_eq!(key_ip(hi), ip("203.0.113.255"));
        let (lo, hi) = net_range(parse_ip_or_net("198.51.100.1").unwrap());
        assert_eq!(lo, hi);
        assert!(parse_ip_or_net("not-an-ip").is_err());
    }
}
