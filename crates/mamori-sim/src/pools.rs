//! Address pools: where the simulated customers and attackers connect from.

use std::net::Ipv4Addr;

use crate::rng::{SimRng, between, unit};

/// An inclusive IPv4 range `(first, last)`.
pub type Range4 = (Ipv4Addr, Ipv4Addr);

/// The address space the simulation draws from. Every list must be non-empty.
///
/// * `residential`: fixed-line (FTTH/DSL/CATV) ISPs as `(asn, ranges)`: home lines, offices
///   (business lines of the same ISPs), domestic hotel Wi-Fi, residential proxies.
/// * `mobile`: mobile carriers as `(asn, ranges)`: the carrier-grade NAT egress addresses of app
///   and smartphone-browser sessions. An ASN may appear in both lists (KDDI, SoftBank) with
///   different ranges.
/// * `hosting`: data centres and clouds (honest VPS traders, some managed hotel Wi-Fi, credential
///   stuffing bots).
/// * `vpn`: commercial VPN exits (privacy-minded honest customers, VPN-hopping attackers).
/// * `foreign`: residential and hotel networks abroad (travelling customers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpPools {
    pub residential: Vec<(u32, Vec<Range4>)>,
    pub mobile: Vec<(u32, Vec<Range4>)>,
    pub hosting: Vec<Range4>,
    pub vpn: Vec<Range4>,
    pub foreign: Vec<Range4>,
}

type Raw = ([u8; 4], [u8; 4]);

const fn r(a: [u8; 4], b: [u8; 4]) -> Raw {
    (a, b)
}

// Real, well-known prefixes (checked against RouteViews/DB-IP ASN data and the X4BNet
// datacenter/VPN lists of ../shared/data): the simulation is only as honest as its networks look.
const RESIDENTIAL: &[(u32, &[Raw])] = &[
    (
        4713, // NTT Communications (OCN)
        &[
            r([153, 128, 0, 0], [153, 253, 255, 255]),
            r([180, 0, 0, 0], [180, 63, 255, 255]),
            r([114, 144, 0, 0], [114, 191, 255, 255]),
            r([118, 0, 0, 0], [118, 23, 255, 255]),
            r([60, 32, 0, 0], [60, 47, 255, 255]),
            r([122, 16, 0, 0], [122, 31, 255, 255]),
        ],
    ),
    (
        2516, // KDDI (au Hikari)
        &[
            r([111, 96, 0, 0], [111, 111, 255, 255]),
            r([59, 131, 0, 0], [59, 143, 255, 255]),
            r([222, 0, 0, 0], [222, 8, 255, 255]),
            r([36, 8, 0, 0], [36, 15, 255, 255]),
            r([124, 208, 0, 0], [124, 215, 255, 255]),
            r([121, 104, 0, 0], [121, 111, 255, 255]),
            r([118, 152, 0, 0], [118, 159, 255, 255]),
            r([125, 48, 0, 0], [125, 55, 255, 255]),
        ],
    ),
    (
        17676, // SoftBank (SoftBank Hikari / Yahoo! BB)
        &[
            r([60, 64, 0, 0], [60, 159, 255, 255]),
            r([219, 168, 0, 0], [219, 215, 255, 255]),
            r([221, 48, 0, 0], [221, 111, 255, 255]),
            r([218, 112, 0, 0], [218, 143, 255, 255]),
        ],
    ),
    (
        2527, // Sony Network Communications (So-net)
        &[
            r([223, 132, 0, 0], [223, 135, 255, 255]),
            r([182, 168, 0, 0], [182, 171, 255, 255]),
            r([118, 236, 0, 0], [118, 238, 127, 255]),
            r([59, 146, 0, 0], [59, 147, 255, 255]),
        ],
    ),
    (
        2518, // BIGLOBE
        &[
            r([133, 200, 0, 0], [133, 209, 255, 255]),
            r([125, 192, 0, 0], [125, 199, 255, 255]),
            r([119, 238, 0, 0], [119, 244, 255, 255]),
            r([122, 130, 0, 0], [122, 135, 255, 255]),
        ],
    ),
    (
        17511, // OPTAGE (eo, Kansai)
        &[
            r([121, 80, 0, 0], [121, 87, 255, 255]),
            r([58, 188, 0, 0], [58, 191, 255, 255]),
            r([182, 164, 0, 0], [182, 167, 255, 255]),
            r([180, 144, 0, 0], [180, 147, 255, 255]),
        ],
    ),
    (
        18126, // Chubu Telecommunications (commufa, Chubu)
        &[
            r([180, 196, 0, 0], [180, 199, 255, 255]),
            r([115, 36, 0, 0], [115, 39, 255, 255]),
            r([118, 104, 0, 0], [118, 106, 255, 255]),
        ],
    ),
];

const MOBILE: &[(u32, &[Raw])] = &[
    (
        9605, // NTT docomo (sp-mode)
        &[
            r([49, 98, 60, 0], [49, 99, 255, 255]),
            r([49, 100, 160, 0], [49, 101, 255, 255]),
            r([49, 103, 128, 0], [49, 104, 252, 255]),
            r([49, 110, 124, 0], [49, 111, 255, 255]),
            r([1, 66, 96, 0], [1, 67, 237, 255]),
            r([1, 72, 0, 0], [1, 73, 77, 255]),
            r([1, 77, 0, 0], [1, 78, 99, 255]),
            r([110, 160, 0, 0], [110, 161, 195, 255]),
        ],
    ),
    (
        2516, // KDDI (au 4G LTE)
        &[r([106, 128, 0, 0], [106, 191, 255, 255])],
    ),
    (
        17676, // SoftBank mobile
        &[
            r([126, 166, 0, 0], [126, 182, 255, 255]),
            r([126, 138, 0, 0], [126, 163, 255, 255]),
        ],
    ),
    (
        138384, // Rakuten Mobile
        &[
            r([157, 192, 0, 0], [157, 192, 255, 255]),
            r([133, 106, 8, 0], [133, 106, 255, 255]),
        ],
    ),
];

const HOSTING: &[Raw] = &[
    r([13, 112, 0, 0], [13, 115, 255, 255]),   // AWS Tokyo
    r([52, 192, 0, 0], [52, 199, 255, 255]),   // AWS Tokyo
    r([54, 64, 0, 0], [54, 65, 255, 255]),     // AWS Tokyo
    r([54, 248, 0, 0], [54, 250, 255, 255]),   // AWS Tokyo
    r([34, 84, 0, 0], [34, 85, 255, 255]),     // Google Cloud Tokyo
    r([163, 43, 0, 0], [163, 43, 255, 255]),   // SAKURA Internet
    r([160, 251, 0, 0], [160, 251, 63, 255]),  // GMO (ConoHa)
    r([150, 95, 128, 0], [150, 95, 255, 255]), // GMO
    r([118, 27, 0, 0], [118, 27, 63, 255]),    // GMO
    r([45, 76, 0, 0], [45, 77, 255, 255]),     // Vultr
    r([139, 162, 0, 0], [139, 162, 255, 255]), // Linode
    r([167, 99, 0, 0], [167, 99, 255, 255]),   // DigitalOcean
    r([95, 216, 0, 0], [95, 217, 255, 255]),   // Hetzner
];

const VPN: &[Raw] = &[
    r([5, 180, 76, 0], [5, 180, 79, 255]),
    r([31, 133, 196, 0], [31, 133, 199, 255]),
    r([85, 115, 96, 0], [85, 115, 111, 255]),
    r([185, 80, 112, 0], [185, 80, 115, 255]),
    r([193, 135, 220, 0], [193, 135, 223, 255]),
    r([194, 110, 88, 0], [194, 110, 91, 255]),
    r([45, 11, 1, 0], [45, 11, 2, 255]),
    r([37, 19, 205, 0], [37, 19, 205, 255]),
    r([138, 199, 21, 0], [138, 199, 21, 255]),
    r([212, 102, 51, 0], [212, 102, 51, 255]),
    r([86, 48, 12, 0], [86, 48, 15, 255]),
    r([85, 254, 8, 0], [85, 254, 11, 255]),
    r([146, 70, 8, 0], [146, 70, 15, 255]),
    r([149, 102, 224, 0], [149, 102, 255, 255]),
    r([185, 242, 4, 0], [185, 242, 7, 255]),
];

const FOREIGN: &[Raw] = &[
    r([73, 0, 0, 0], [73, 255, 255, 255]),     // US, Comcast
    r([175, 192, 0, 0], [175, 255, 255, 255]), // KR, KT
    r([114, 32, 0, 0], [114, 47, 255, 255]),   // TW, HiNet
    r([1, 160, 0, 0], [1, 175, 255, 255]),     // TW, HiNet
    r([171, 96, 0, 0], [171, 103, 255, 255]),  // TH
    r([49, 228, 0, 0], [49, 231, 255, 255]),   // TH
    r([86, 0, 0, 0], [86, 7, 255, 255]),       // GB, Virgin Media
    r([90, 0, 0, 0], [90, 7, 255, 255]),       // FR, Orange
    r([113, 160, 0, 0], [113, 191, 255, 255]), // VN, VNPT
    r([101, 160, 0, 0], [101, 175, 255, 255]), // AU, Telstra
];

fn conv(raw: &[Raw]) -> Vec<Range4> {
    raw.iter()
        .map(|(a, b)| (Ipv4Addr::from(*a), Ipv4Addr::from(*b)))
        .collect()
}

impl IpPools {
    /// Built-in pools of real, well-known prefixes: seven Japanese fixed-line ISPs (OCN, KDDI,
    /// SoftBank, So-net, BIGLOBE, OPTAGE, Chubu Telecom), four mobile carriers (docomo, au,
    /// SoftBank, Rakuten Mobile), Tokyo cloud regions and other hosting, VPN exits (mostly located
    /// in Japan) and foreign residential networks (US, KR, TW, TH, GB, FR, VN, AU).
    pub fn builtin() -> Self {
        IpPools {
            residential: RESIDENTIAL.iter().map(|(a, r)| (*a, conv(r))).collect(),
            mobile: MOBILE.iter().map(|(a, r)| (*a, conv(r))).collect(),
            hosting: conv(HOSTING),
            vpn: conv(VPN),
            foreign: conv(FOREIGN),
        }
    }

    /// Checks that every pool is non-empty and every range is ordered.
    pub fn validate(&self) -> Result<(), String> {
        fn ranges(name: &str, rs: &[Range4]) -> Result<(), String> {
            if rs.is_empty() {
                return Err(format!("IP pool {name}: no ranges"));
            }
            for (a, b) in rs {
                if a > b {
                    return Err(format!("IP pool {name}: range {a}-{b} is reversed"));
                }
            }
            Ok(())
        }
        for (label, isps) in [("residential", &self.residential), ("mobile", &self.mobile)] {
            if isps.is_empty() {
                return Err(format!("IP pool {label}: no networks"));
            }
            for (asn, rs) in isps {
                ranges(&format!("{label} AS{asn}"), rs)?;
            }
        }
        ranges("hosting", &self.hosting)?;
        ranges("vpn", &self.vpn)?;
        ranges("foreign", &self.foreign)
    }
}

/// A set of ranges to draw addresses from, uniformly over the addresses.
#[derive(Debug, Clone)]
pub(crate) struct Space {
    ranges: Vec<(u32, u32)>,
    cum: Vec<u64>,
}

impl Space {
    pub(crate) fn new(rs: &[Range4]) -> Self {
        let mut ranges: Vec<(u32, u32)> = rs
            .iter()
            .map(|(a, b)| (u32::from(*a), u32::from(*b)))
            .collect();
        ranges.sort_unstable();
        let mut cum = Vec::with_capacity(ranges.len());
        let mut total = 0u64;
        for (a, b) in &ranges {
            total += u64::from(b - a) + 1;
            cum.push(total);
        }
        Space { ranges, cum }
    }

    /// Number of addresses.
    pub(crate) fn size(&self) -> u64 {
        self.cum.last().copied().unwrap_or(0)
    }

    /// A uniformly drawn address (host part kept away from .0 and .255 where the range allows).
    pub(crate) fn sample(&self, rng: &mut SimRng) -> u32 {
        let x = (unit(rng) * self.size() as f64) as u64;
        let i = self
            .cum
            .partition_point(|c| *c <= x)
            .min(self.ranges.len() - 1);
        let before = if i == 0 { 0 } else { self.cum[i - 1] };
        let (a, b) = self.ranges[i];
        let ip = a.saturating_add((x - before) as u32).min(b);
        tidy(ip, a, b)
    }

    /// A random host of the /24 `net24` (an address >> 8), within the space.
    pub(crate) fn host_in(&self, rng: &mut SimRng, net24: u32) -> u32 {
        let base = net24 << 8;
        let (lo, hi) = match self.range_of(base).or_else(|| self.range_of(base | 0xff)) {
            Some((a, b)) => (a.max(base), b.min(base | 0xff)),
            None => (base, base | 0xff),
        };
        let ip = lo + between(rng, 0, hi - lo);
        tidy(ip, lo, hi)
    }

    /// The range holding `ip`.
    pub(crate) fn range_of(&self, ip: u32) -> Option<(u32, u32)> {
        let i = self.ranges.partition_point(|(a, _)| *a <= ip);
        if i == 0 {
            return None;
        }
        let (a, b) = self.ranges[i - 1];
        (ip <= b).then_some((a, b))
    }

    pub(crate) fn contains(&self, ip: u32) -> bool {
        self.range_of(ip).is_some()
    }
}

/// Moves a .0 or .255 host to .1 or .254 when the range allows it.
fn tidy(ip: u32, lo: u32, hi: u32) -> u32 {
    match ip & 0xff {
        0 if ip < hi => ip + 1,
        255 if ip > lo => ip - 1,
        _ => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::stream;

    #[test]
    fn builtin_is_valid_and_samples_stay_inside() {
        let p = IpPools::builtin();
        p.validate().unwrap();
        let s = Space::new(&p.hosting);
        let mut rng = stream(1, 1, 1);
        for _ in 0..2000 {
            let ip = s.sample(&mut rng);
            assert!(s.contains(ip));
            assert!(!matches!(ip & 0xff, 0 | 255));
            let h = s.host_in(&mut rng, ip >> 8);
            assert_eq!(h >> 8, ip >> 8);
            assert!(s.contains(h));
        }
    }

    #[test]
    fn refuses_empty_pools() {
        let mut p = IpPools::builtin();
        p.vpn.clear();
        assert!(p.validate().is_err());
        let mut p = IpPools::builtin();
        p.foreign
            .push((Ipv4Addr::new(9, 9, 9, 9), Ipv4Addr::new(9, 9, 9, 1)));
        assert!(p.validate().is_err());
    }
}
