//! The shared world: calendar, regions, networks (with carrier NAT pools, offices and hotels that
//! many customers share), names and banks. Built once per run from the seed.

use mamori_core::time::{DAY_US, HOUR_US, TOKYO_OFFSET_US, days_from_civil};

use crate::SimConfig;
use crate::pools::{IpPools, Space};
use crate::rng::{self, SimRng, between, chance, unit, weighted};

/// Midnight of a date in Asia/Tokyo, as UTC microseconds.
pub(crate) fn jst(y: i64, m: u32, d: u32) -> i64 {
    days_from_civil(y, m, d) * DAY_US - TOKYO_OFFSET_US
}

/// Tokyo day number of an instant.
pub(crate) fn day_of(t: i64) -> i64 {
    (t + TOKYO_OFFSET_US).div_euclid(DAY_US)
}

/// UTC instant of the Tokyo midnight starting day `day`.
pub(crate) fn day_start(day: i64) -> i64 {
    day * DAY_US - TOKYO_OFFSET_US
}

/// Tokyo hour (0..24) of an instant.
pub(crate) fn hour_of(t: i64) -> u32 {
    ((t + TOKYO_OFFSET_US).rem_euclid(DAY_US) / HOUR_US) as u32
}

/// Day of week of a Tokyo day number, 0 = Monday.
pub(crate) fn weekday(day: i64) -> u32 {
    (day + 3).rem_euclid(7) as u32
}

pub(crate) fn is_weekend(day: i64) -> bool {
    weekday(day) >= 5
}

/// Regions of Japan with their share of the population (%).
pub(crate) const REGIONS: [f64; 8] = [
    4.2,  // Hokkaido
    7.0,  // Tohoku
    34.5, // Kanto
    17.0, // Chubu
    17.8, // Kansai
    5.8,  // Chugoku
    3.0,  // Shikoku
    10.7, // Kyushu-Okinawa
];
pub(crate) const KANTO: usize = 2;
const CHUBU: usize = 3;
const KANSAI: usize = 4;

/// Session start hours (JST) on weekdays: before the open, lunch break, evening.
pub(crate) const HOURS_WEEKDAY: [f64; 24] = [
    1.0, 0.5, 0.3, 0.2, 0.2, 0.5, 1.5, 3.0, 4.5, 5.0, 4.0, 3.5, 5.0, 3.5, 3.5, 3.5, 2.5, 2.5, 3.0,
    3.5, 4.5, 5.0, 4.5, 2.5,
];
/// Session start hours (JST) on weekends and holidays.
pub(crate) const HOURS_WEEKEND: [f64; 24] = [
    1.5, 0.8, 0.4, 0.2, 0.2, 0.3, 0.8, 1.5, 2.5, 3.5, 4.0, 4.0, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5,
    4.0, 4.5, 4.5, 4.0, 2.5,
];
/// Attackers work around the clock, somewhat more in market hours and at night.
pub(crate) const HOURS_ATTACK: [f64; 24] = [
    3.0, 3.0, 2.5, 2.0, 1.5, 1.2, 1.2, 1.5, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 2.5, 2.0, 2.0, 2.0,
    2.5, 3.0, 3.0, 3.0, 3.0,
];

pub(crate) const FAMILY: &[&str] = &[
    "サトウ",
    "スズキ",
    "タカハシ",
    "タナカ",
    "イトウ",
    "ワタナベ",
    "ヤマモト",
    "ナカムラ",
    "コバヤシ",
    "カトウ",
    "ヨシダ",
    "ヤマダ",
    "ササキ",
    "ヤマグチ",
    "マツモト",
    "イノウエ",
    "キムラ",
    "ハヤシ",
    "サイトウ",
    "シミズ",
    "ヤマザキ",
    "モリ",
    "アベ",
    "イケダ",
    "ハシモト",
    "ヤマシタ",
    "イシカワ",
    "ナカジマ",
    "マエダ",
    "フジタ",
    "オガワ",
    "ゴトウ",
    "オカダ",
    "ハセガワ",
    "ムラカミ",
    "コンドウ",
    "イシイ",
    "サカモト",
    "エンドウ",
    "アオキ",
    "フジイ",
    "ニシムラ",
    "フクダ",
    "オオタ",
    "ミウラ",
    "フジワラ",
    "オカモト",
    "マツダ",
    "ナカガワ",
    "ナカノ",
];
pub(crate) const GIVEN: &[&str] = &[
    "ヒロシ",
    "タカシ",
    "アキラ",
    "マコト",
    "ケンジ",
    "ダイスケ",
    "シンジ",
    "ヨウイチ",
    "テツヤ",
    "カズヤ",
    "ショウタ",
    "ユウキ",
    "ヒロユキ",
    "マサト",
    "タロウ",
    "ケンタ",
    "ツヨシ",
    "ナオキ",
    "オサム",
    "ミノル",
    "ヨウコ",
    "ケイコ",
    "ユミコ",
    "アキコ",
    "ヒロミ",
    "マユミ",
    "トモミ",
    "ユウコ",
    "サチコ",
    "ミホ",
    "ナオミ",
    "メグミ",
    "アヤ",
    "ユイ",
    "マイ",
    "カズコ",
    "ノリコ",
    "ミカ",
    "エミ",
    "サユリ",
];

/// Bank codes with weights for honest customers' own accounts.
pub(crate) const BANKS_HONEST: &[(&str, f64)] = &[
    ("0001", 11.0), // Mizuho
    ("0005", 14.0), // MUFG
    ("0009", 12.0), // SMBC
    ("0010", 4.0),  // Resona
    ("9900", 17.0), // Japan Post Bank
    ("0033", 3.0),  // Japan Net Bank / PayPay
    ("0036", 6.0),  // Rakuten
    ("0038", 5.0),  // SBI Sumishin Net
    ("0039", 1.5),  // au Jibun
    ("0116", 1.5),
    ("0117", 1.0),
    ("0128", 1.0),
    ("0134", 1.5),
    ("0137", 1.0),
    ("0138", 2.0),
    ("0143", 1.0),
    ("0149", 1.5),
    ("0150", 1.0),
    ("0153", 1.0),
    ("0158", 1.5),
    ("0159", 1.0),
    ("0163", 1.0),
    ("0168", 1.0),
    ("0169", 1.0),
    ("0177", 2.0),
    ("0179", 1.0),
    ("0184", 1.0),
    ("0190", 1.0),
];
/// Banks where accounts opened with forged identity documents were used: mostly internet banks
/// and the postal bank, but every code also occurs among honest customers.
pub(crate) const BANKS_ATTACK: &[(&str, f64)] = &[
    ("0033", 14.0),
    ("0036", 18.0),
    ("0038", 14.0),
    ("0039", 7.0),
    ("9900", 16.0),
    ("0005", 8.0),
    ("0009", 8.0),
    ("0001", 6.0),
    ("0010", 2.0),
    ("0138", 1.0),
    ("0177", 1.0),
];

/// A bank account: bank, branch, number (the holder is always the customer's name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Account {
    pub bank: &'static str,
    pub branch: u16,
    pub number: u32,
}

pub(crate) fn draw_account(rng: &mut SimRng, table: &[(&'static str, f64)]) -> Account {
    let weights: Vec<f64> = table.iter().map(|(_, w)| *w).collect();
    let bank = table[weighted(rng, &weights)].0;
    let branch = if bank == "9900" {
        (between(rng, 0, 99) * 10 + 8) as u16
    } else {
        between(rng, 1, 999) as u16
    };
    let number = between(rng, 1_000_000, 9_999_999);
    Account {
        bank,
        branch,
        number,
    }
}

/// A fixed-line ISP.
pub(crate) struct Isp {
    pub space: Space,
    /// Share of the ISP among customers of each region.
    pub weight: [f64; 8],
}

/// A mobile carrier and its carrier-grade NAT egress addresses per region.
pub(crate) struct Carrier {
    pub asn: u32,
    pub weight: f64,
    pub nat: Vec<Vec<u32>>,
}

/// Launch of Rakuten Mobile's own network (customers can only have switched to it afterwards).
pub(crate) fn rakuten_launch() -> i64 {
    jst(2020, 4, 8)
}

pub(crate) const RAKUTEN: u32 = 138384;

fn isp_weight(asn: u32, region: usize) -> f64 {
    match asn {
        4713 => 22.0,
        2516 => 20.0,
        17676 => 18.0,
        2527 => 8.0,
        2518 => 7.0,
        17511 if region == KANSAI => 25.0,
        17511 => 0.0,
        18126 if region == CHUBU => 20.0,
        18126 => 0.0,
        _ => 5.0,
    }
}

fn carrier_weight(asn: u32) -> f64 {
    match asn {
        9605 => 44.0,
        2516 => 28.0,
        17676 => 21.0,
        RAKUTEN => 4.0,
        _ => 5.0,
    }
}

/// Share of customers with a smartphone they use for the broker (app or browser).
pub(crate) const PHONE_SHARE: f64 = 0.55;

pub(crate) struct World {
    pub start: i64,
    pub end: i64,
    pub isps: Vec<Isp>,
    pub carriers: Vec<Carrier>,
    pub hosting: Space,
    pub vpn: Space,
    pub foreign: Space,
    /// Static office NAT addresses (business lines); colleagues share one.
    pub offices: Vec<u32>,
    /// Domestic hotel Wi-Fi addresses; guests share one.
    pub hotels: Vec<u32>,
    /// The largest fixed-line ISPs (residential proxies sit there).
    pub big_isps: Vec<usize>,
    covid_crash: i64,
    covid_after: i64,
}

impl World {
    pub(crate) fn new(cfg: &SimConfig) -> World {
        let builtin;
        let pools = match &cfg.ip_pools {
            Some(p) => p,
            None => {
                builtin = IpPools::builtin();
                &builtin
            }
        };
        let mut rng = rng::stream(cfg.seed, rng::WORLD, 0);
        let mut isps: Vec<Isp> = pools
            .residential
            .iter()
            .map(|(asn, rs)| {
                let mut weight = [0.0; 8];
                for (r, w) in weight.iter_mut().enumerate() {
                    *w = isp_weight(*asn, r);
                }
                Isp {
                    space: Space::new(rs),
                    weight,
                }
            })
            .collect();
        for r in 0..8 {
            if isps.iter().all(|i| i.weight[r] == 0.0) {
                for i in &mut isps {
                    i.weight[r] = 1.0;
                }
            }
        }
        let mut big: Vec<usize> = (0..isps.len()).collect();
        big.sort_by(|a, b| {
            isps[*b]
                .space
                .size()
                .cmp(&isps[*a].space.size())
                .then(a.cmp(b))
        });
        big.truncate(3);

        let total_cw: f64 = pools.mobile.iter().map(|(a, _)| carrier_weight(*a)).sum();
        let customers = f64::from(cfg.customers);
        let per_ip = cfg.cgnat_customers_per_ip.max(1.0);
        let carriers = pools
            .mobile
            .iter()
            .map(|(asn, rs)| {
                let space = Space::new(rs);
                let weight = carrier_weight(*asn);
                let nat = REGIONS
                    .iter()
                    .map(|rw| {
                        let users = customers * PHONE_SHARE * weight / total_cw * rw / 100.0;
                        let n = ((users / per_ip).ceil() as usize).max(4);
                        nat_pool(&mut rng, &space, n)
                    })
                    .collect();
                Carrier {
                    asn: *asn,
                    weight,
                    nat,
                }
            })
            .collect();
        let hosting = Space::new(&pools.hosting);
        let vpn = Space::new(&pools.vpn);
        let foreign = Space::new(&pools.foreign);
        let mut w = World {
            start: cfg.start,
            end: cfg.end,
            isps,
            carriers,
            hosting,
            vpn,
            foreign,
            offices: Vec::new(),
            hotels: Vec::new(),
            big_isps: big,
            covid_crash: jst(2020, 2, 24),
            covid_after: jst(2020, 5, 1),
        };
        let n_offices = ((customers * cfg.office_share / 3.0).round() as usize).max(1);
        w.offices = (0..n_offices)
            .map(|_| {
                let isp = w.pick_isp(&mut rng, KANTO);
                w.isps[isp].space.sample(&mut rng)
            })
            .collect();
        let n_hotels = ((cfg.customers / 400) as usize).max(8);
        w.hotels = (0..n_hotels)
            .map(|_| {
                if chance(&mut rng, 0.25) {
                    w.hosting.sample(&mut rng)
                } else {
                    let region = weighted(&mut rng, &REGIONS);
                    let isp = w.pick_isp(&mut rng, region);
                    w.isps[isp].space.sample(&mut rng)
                }
            })
            .collect();
        w
    }

    /// A fixed-line ISP for a customer of `region`.
    pub(crate) fn pick_isp(&self, rng: &mut SimRng, region: usize) -> usize {
        let ws: Vec<f64> = self.isps.iter().map(|i| i.weight[region]).collect();
        weighted(rng, &ws)
    }

    /// A mobile carrier (optionally never `avoid`).
    pub(crate) fn pick_carrier(&self, rng: &mut SimRng, avoid: Option<usize>) -> usize {
        let ws: Vec<f64> = self
            .carriers
            .iter()
            .enumerate()
            .map(|(i, c)| if Some(i) == avoid { 0.0 } else { c.weight })
            .collect();
        if ws.iter().sum::<f64>() <= 0.0 {
            return 0;
        }
        weighted(rng, &ws)
    }

    /// Activity multiplier of the calendar: the COVID-19 crash (late February–April 2020) brought
    /// a surge of retail trading and new accounts; activity stayed elevated afterwards.
    pub(crate) fn season(&self, t: i64) -> f64 {
        if t < self.covid_crash {
            1.0
        } else if t < self.covid_after {
            1.7
        } else {
            1.3
        }
    }

    /// Maximum of [`World::season`].
    pub(crate) const SEASON_MAX: f64 = 1.7;
}

/// `n` carrier NAT egress addresses: contiguous runs in a few /24s of the carrier.
fn nat_pool(rng: &mut SimRng, space: &Space, n: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let net = space.sample(rng) >> 8;
        let take = (n - out.len()).min(between(rng, 64, 192) as usize);
        let off = between(rng, 0, 253);
        for j in 0..take as u32 {
            let ip = (net << 8) | (1 + (off + j * 37) % 254);
            if space.contains(ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// A session start time on `day`: hour from the table (or the customer's habit), minute and
/// second uniform.
pub(crate) fn time_on_day(rng: &mut SimRng, day: i64, habit: Option<f64>) -> i64 {
    let hours = if is_weekend(day) {
        &HOURS_WEEKEND
    } else {
        &HOURS_WEEKDAY
    };
    let h = match habit {
        Some(h) => {
            let x = h + crate::rng::normal(rng) * 0.8;
            x.rem_euclid(24.0)
        }
        None => weighted(rng, hours) as f64 + unit(rng),
    };
    day_start(day) + (h * HOUR_US as f64) as i64 / 1_000_000 * 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar() {
        let t = jst(2020, 9, 16);
        assert_eq!(
            mamori_core::time::format_tokyo(t),
            "2020-09-16T00:00:00+09:00"
        );
        assert_eq!(weekday(day_of(t)), 2); // a Wednesday
        assert_eq!(hour_of(t + 22 * HOUR_US + 5), 22);
        assert_eq!(day_start(day_of(t + 5 * HOUR_US)), t);
    }

    #[test]
    fn carrier_nat_pools_scale_with_customers() {
        let small = World::new(&SimConfig::new(1000, 1));
        let big = World::new(&SimConfig::new(1_000_000, 1));
        let n = |w: &World| {
            w.carriers
                .iter()
                .map(|c| c.nat.iter().map(Vec::len).sum::<usize>())
                .sum::<usize>()
        };
        assert!(n(&small) >= 4 * 8 * 4);
        assert!(n(&big) > 50 * n(&small), "{} {}", n(&big), n(&small));
        let space = Space::new(&IpPools::builtin().mobile[0].1);
        for ip in &big.carriers[0].nat[KANTO] {
            assert!(space.contains(*ip));
        }
    }
}
