//! Whole-simulation tests: determinism, scale, validity, labels, attacker infrastructure, shared
//! addresses, streaming.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::OnceLock;

use mamori_core::parse::parse_json_line;
use mamori_core::{Channel, Event, Kind};

use super::*;

struct Run {
    cfg: SimConfig,
    events: Vec<Event>,
    labels: HashMap<String, Label>,
    stats: SimStats,
}

const CUSTOMERS: u32 = 1500;

/// One shared run (debug builds are slow; every test reads the same output).
fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let mut cfg = SimConfig::new(CUSTOMERS, 7);
        cfg.campaigns = 10;
        let mut events = Vec::new();
        let mut labels = HashMap::new();
        let stats = simulate(
            &cfg,
            &mut |e| {
                events.push(e.clone());
                Ok(())
            },
            &mut |l| {
                labels.insert(l.event_id.clone(), l.clone());
                Ok(())
            },
        )
        .expect("simulate");
        Run {
            cfg,
            events,
            labels,
            stats,
        }
    })
}

fn v4(e: &Event) -> Option<u32> {
    match e.ip {
        Some(IpAddr::V4(a)) => Some(u32::from(a)),
        _ => None,
    }
}

fn in_ranges(ip: u32, ranges: &[Range4]) -> bool {
    ranges
        .iter()
        .any(|(a, b)| ip >= u32::from(*a) && ip <= u32::from(*b))
}

fn asn_of(ip: u32, isps: &[(u32, Vec<Range4>)]) -> Option<u32> {
    isps.iter()
        .find(|(_, rs)| in_ranges(ip, rs))
        .map(|(asn, _)| *asn)
}

fn to_lines(cfg: &SimConfig) -> (Vec<u8>, Vec<u8>, SimStats) {
    let mut out = Vec::new();
    let mut lab = Vec::new();
    let stats = simulate(
        cfg,
        &mut |e| {
            out.extend_from_slice(e.to_json().as_bytes());
            out.push(b'\n');
            Ok(())
        },
        &mut |l| {
            lab.extend_from_slice(
                format!("{},{},{}\n", l.event_id, l.campaign, l.style).as_bytes(),
            );
            Ok(())
        },
    )
    .unwrap();
    (out, lab, stats)
}

#[test]
fn same_config_gives_identical_bytes() {
    let cfg = SimConfig::new(300, 11);
    let a = to_lines(&cfg);
    let b = to_lines(&cfg);
    assert!(!a.0.is_empty() && !a.1.is_empty());
    assert_eq!(a.0, b.0);
    assert_eq!(a.1, b.1);
    assert_eq!(a.2, b.2);
    let c = to_lines(&SimConfig::new(300, 12));
    assert_ne!(a.0, c.0);
}

#[test]
fn customers_are_generated_independently() {
    // Consecutive ranges of customers, generated separately, give the full run's bytes: each
    // customer depends only on the seed, the shared world and the campaign plan.
    let cfg = SimConfig::new(240, 21);
    let full = to_lines(&cfg);
    let mut out = Vec::new();
    let mut lab = Vec::new();
    let mut events = 0;
    for range in [0..1, 1..100, 100..101, 101..240, 240..500] {
        let st = simulate_range(
            &cfg,
            range,
            &mut |e| {
                out.extend_from_slice(e.to_json().as_bytes());
                out.push(b'\n');
                Ok(())
            },
            &mut |l| {
                lab.extend_from_slice(
                    format!("{},{},{}\n", l.event_id, l.campaign, l.style).as_bytes(),
                );
                Ok(())
            },
        )
        .unwrap();
        events += st.events;
    }
    assert_eq!(out, full.0);
    assert_eq!(lab, full.1);
    assert_eq!(events, full.2.events);
}

#[test]
fn event_counts_scale_and_are_heavy_tailed() {
    let r = run();
    let years = (r.cfg.end - r.cfg.start) as f64 / (365.25 * mamori_core::time::DAY_US as f64);
    let per_year = r.stats.events as f64 / f64::from(CUSTOMERS) / years;
    assert!(
        (60.0..110.0).contains(&per_year),
        "{per_year} events per customer-year"
    );
    assert_eq!(r.stats.events as usize, r.events.len());
    let mut per: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &r.events {
        *per.entry(e.customer_id.as_str()).or_default() += 1;
    }
    let mut counts: Vec<u64> = per.values().copied().collect();
    counts.sort_unstable();
    let median = counts[counts.len() / 2];
    let top = counts[counts.len() - 1];
    assert!(top > 15 * median.max(1), "median {median}, max {top}");
    assert_eq!(top, r.stats.max_customer_events);
    // Every kind occurs.
    for k in Kind::ALL {
        assert!(r.stats.kind(*k) > 0, "no {k}");
    }
    let sum: u64 = r.stats.by_kind.iter().sum();
    assert_eq!(sum, r.stats.events);
    // Mostly logins, page views and trades; sensitive procedures are rare.
    assert!(r.stats.kind(Kind::DestinationChange) * 100 < r.stats.events);
    assert!(r.stats.kind(Kind::Access) > r.stats.kind(Kind::Login));
}

#[test]
fn every_event_round_trips_through_the_contract() {
    let r = run();
    let mut ids = HashSet::new();
    for e in &r.events {
        let line = e.to_json();
        let mut fast = Vec::new();
        write_event_json(e, &mut fast);
        assert_eq!(fast, line.as_bytes());
        let back = parse_json_line(&line).unwrap_or_else(|err| panic!("{err}: {line}"));
        assert_eq!(&back, e, "{line}");
        assert!(
            ids.insert(e.event_id.as_str()),
            "duplicate id {}",
            e.event_id
        );
        assert!(e.occurred_at >= r.cfg.start && e.occurred_at < r.cfg.end);
        assert_eq!(e.occurred_at % mamori_core::time::SECOND_US, 0);
        assert!(e.event_id.starts_with(&e.customer_id));
        match e.kind {
            Kind::Trade => assert!(e.amount.is_some() && e.side.is_some()),
            Kind::Withdrawal => assert!(e.amount.is_some_and(|a| a > 0)),
            Kind::DestinationChange => {
                let d = e.destination.as_ref().expect("destination");
                assert_eq!(d.account_type, "ordinary");
                assert!(
                    d.holder_kana
                        .chars()
                        .all(|c| c == ' ' || ('\u{30A0}'..='\u{30FF}').contains(&c))
                );
            }
            _ => assert!(e.amount.is_none() && e.destination.is_none()),
        }
        if e.channel.is_online() {
            assert!(e.device_id.is_some() && e.user_agent.is_some());
        } else {
            assert!(e.ip.is_none() && e.device_id.is_none());
        }
    }
}

#[test]
fn the_sink_sees_customers_in_order_and_each_in_time_order() {
    let r = run();
    let mut seen = BTreeSet::new();
    let mut prev: Option<&Event> = None;
    for e in &r.events {
        if let Some(p) = prev {
            if p.customer_id == e.customer_id {
                assert!(
                    p.occurred_at <= e.occurred_at,
                    "{} after {}",
                    e.event_id,
                    p.event_id
                );
                assert!(p.event_id < e.event_id);
            } else {
                assert!(p.customer_id < e.customer_id);
                assert!(
                    seen.insert(p.customer_id.clone()),
                    "customer {} twice",
                    p.customer_id
                );
            }
        }
        prev = Some(e);
    }
    // The only per-customer buffer is bounded by the busiest customer, far below the total.
    assert!(r.stats.max_customer_events * 20 < r.stats.events);
}

#[test]
fn every_style_is_present_and_fully_labelled() {
    let r = run();
    assert_eq!(r.labels.len() as u64, r.stats.fraud_events);
    let by_id: HashMap<&str, &Event> = r.events.iter().map(|e| (e.event_id.as_str(), e)).collect();
    for id in r.labels.keys() {
        assert!(
            by_id.contains_key(id.as_str()),
            "label for unknown event {id}"
        );
    }
    let plan = campaign_plan(&r.cfg).unwrap();
    assert_eq!(plan.len(), 10);
    let window = (jst_midnight(2020, 7, 1), jst_midnight(2020, 9, 17));
    for style in Style::ALL {
        let cs: Vec<&CampaignSummary> = plan.iter().filter(|c| c.style == style).collect();
        assert!(!cs.is_empty(), "no {style} campaign");
        assert!(
            cs.iter()
                .any(|c| c.strike >= window.0 && c.strike < window.1)
        );
        for c in cs {
            assert!(!c.victims.is_empty(), "{} has no victim", c.name);
            for v in &c.victims {
                // Every victim: an attacker login, a destination change in the victim's name,
                // sells and a withdrawal, all labelled with this campaign.
                let mine: Vec<&Event> = r
                    .events
                    .iter()
                    .filter(|e| &e.customer_id == v)
                    .filter(|e| {
                        r.labels
                            .get(&e.event_id)
                            .is_some_and(|l| l.campaign == c.name)
                    })
                    .collect();
                for k in [
                    Kind::Login,
                    Kind::DestinationChange,
                    Kind::Trade,
                    Kind::Withdrawal,
                ] {
                    assert!(mine.iter().any(|e| e.kind == k), "{} {v}: no {k}", c.name);
                }
                assert!(
                    mine.iter()
                        .filter(|e| e.kind == Kind::Trade)
                        .all(|e| e.side == Some(mamori_core::Side::Sell))
                );
                for e in &mine {
                    assert_eq!(r.labels[&e.event_id].style, style);
                }
                let first = mine.iter().map(|e| e.occurred_at).min().unwrap();
                let last = mine.iter().map(|e| e.occurred_at).max().unwrap();
                assert!(last - first < 25 * mamori_core::time::DAY_US);
            }
        }
    }
    // Honest events carry no label: the label set is exactly the attackers' events, and every
    // destination change that is not labelled belongs to someone else than an attacker.
    let honest_dest = r
        .events
        .iter()
        .filter(|e| e.kind == Kind::DestinationChange && !r.labels.contains_key(&e.event_id))
        .count();
    assert!(honest_dest > 0);
}

#[test]
fn attackers_use_addresses_and_devices_new_to_the_account() {
    let r = run();
    let mut by_customer: HashMap<&str, Vec<&Event>> = HashMap::new();
    for e in &r.events {
        by_customer
            .entry(e.customer_id.as_str())
            .or_default()
            .push(e);
    }
    let mut checked = 0;
    for evs in by_customer.values() {
        let mut campaigns: BTreeMap<&str, i64> = BTreeMap::new();
        for e in evs {
            if let Some(l) = r.labels.get(&e.event_id) {
                let t = campaigns.entry(l.campaign.as_str()).or_insert(i64::MAX);
                *t = (*t).min(e.occurred_at);
            }
        }
        for (c, first) in campaigns {
            let honest_before: Vec<&&Event> = evs
                .iter()
                .filter(|e| e.occurred_at < first && !r.labels.contains_key(&e.event_id))
                .collect();
            let ips: HashSet<IpAddr> = honest_before.iter().filter_map(|e| e.ip).collect();
            let devs: HashSet<&str> = honest_before
                .iter()
                .filter_map(|e| e.device_id.as_deref())
                .collect();
            for e in evs
                .iter()
                .filter(|e| r.labels.get(&e.event_id).is_some_and(|l| l.campaign == c))
            {
                let ip = e.ip.expect("attackers are online");
                assert!(
                    !ips.contains(&ip),
                    "{}: attacker address {ip} was the customer's",
                    e.event_id
                );
                let d = e.device_id.as_deref().expect("device");
                assert!(
                    !devs.contains(d),
                    "{}: attacker device was the customer's",
                    e.event_id
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, r.labels.len());
}

#[test]
fn styles_look_like_their_description() {
    let r = run();
    let pools = IpPools::builtin();
    let plan = campaign_plan(&r.cfg).unwrap();
    let labelled = |c: &str| -> Vec<&Event> {
        r.events
            .iter()
            .filter(|e| r.labels.get(&e.event_id).is_some_and(|l| l.campaign == c))
            .collect()
    };
    for c in &plan {
        let evs = labelled(&c.name);
        let ips: Vec<u32> = evs.iter().filter_map(|e| v4(e)).collect();
        match c.style {
            Style::CredentialStuffingHosting => {
                assert!(ips.iter().all(|ip| in_ranges(*ip, &pools.hosting)));
                let failed: HashSet<&str> = evs
                    .iter()
                    .filter(|e| e.kind == Kind::LoginFailed)
                    .map(|e| e.customer_id.as_str())
                    .collect();
                let non_victims = failed
                    .iter()
                    .filter(|v| !c.victims.iter().any(|x| x == *v))
                    .count();
                assert!(
                    non_victims >= 10,
                    "{}: only {non_victims} probed non-victims",
                    c.name
                );
                let distinct: HashSet<u32> = ips.iter().copied().collect();
                assert!(distinct.len() <= 12, "bots use few servers");
            }
            Style::VpnHopping => {
                assert!(ips.iter().all(|ip| in_ranges(*ip, &pools.vpn)));
                for v in &c.victims {
                    let mine: Vec<u32> = evs
                        .iter()
                        .filter(|e| &e.customer_id == v)
                        .filter_map(|e| v4(e))
                        .collect();
                    let distinct: HashSet<u32> = mine.iter().copied().collect();
                    assert!(
                        distinct.len() * 10 >= mine.len() * 8,
                        "{v}: VPN address reused"
                    );
                }
            }
            Style::ResidentialProxy => {
                let isps = &pools.residential;
                assert!(ips.iter().all(|ip| asn_of(*ip, isps).is_some()));
                let mut per_victim: Vec<HashSet<u32>> = Vec::new();
                for v in &c.victims {
                    per_victim.push(
                        evs.iter()
                            .filter(|e| &e.customer_id == v)
                            .filter_map(|e| v4(e))
                            .collect(),
                    );
                }
                for (i, a) in per_victim.iter().enumerate() {
                    for b in &per_victim[i + 1..] {
                        assert!(
                            a.is_disjoint(b),
                            "residential proxy address shared by victims"
                        );
                    }
                }
            }
            Style::PatientAttacker => {
                let distinct: HashSet<u32> = ips.iter().copied().collect();
                assert!(distinct.len() <= 2, "{:?}", distinct);
                for v in &c.victims {
                    let mine: Vec<&&Event> = evs.iter().filter(|e| &e.customer_id == v).collect();
                    let dest = mine
                        .iter()
                        .find(|e| e.kind == Kind::DestinationChange)
                        .unwrap()
                        .occurred_at;
                    let days: HashSet<i64> = mine
                        .iter()
                        .filter(|e| e.kind == Kind::Login && e.occurred_at < dest)
                        .map(|e| mamori_core::time::tokyo_day(e.occurred_at))
                        .collect();
                    assert!(days.len() >= 3, "{v}: visits on {} days only", days.len());
                    let span = days.iter().max().unwrap() - days.iter().min().unwrap();
                    assert!((1..=24).contains(&span), "{v}: visits over {span} days");
                }
            }
            Style::SameIsp => {
                let world = world::World::new(&r.cfg);
                for v in &c.victims {
                    let mine: Vec<&&Event> = evs.iter().filter(|e| &e.customer_id == v).collect();
                    let first = mine.iter().map(|e| e.occurred_at).min().unwrap();
                    let nets: HashSet<u32> = r
                        .events
                        .iter()
                        .filter(|e| &e.customer_id == v && e.occurred_at < first)
                        .filter_map(v4)
                        .map(|ip| ip >> 8)
                        .collect();
                    let idx: u32 = v[1..].parse::<u32>().unwrap() - 1;
                    let p = customer::Profile::new(&world, &r.cfg, idx);
                    let isp = &world.isps[p.isp_at(first)].space;
                    for e in &mine {
                        let ip = v4(e).unwrap();
                        assert!(
                            !nets.contains(&(ip >> 8)),
                            "{}: inside the victim's /24",
                            e.event_id
                        );
                        assert!(
                            !p.home_covers(ip >> 8),
                            "{}: inside the victim's area block",
                            e.event_id
                        );
                        assert!(isp.contains(ip), "{}: not the victim's ISP", e.event_id);
                        assert!(asn_of(ip, &pools.residential).is_some());
                    }
                }
            }
        }
    }
}

#[test]
fn carrier_nat_addresses_are_shared_by_many_honest_customers() {
    let r = run();
    let pools = IpPools::builtin();
    let mut users: HashMap<u32, HashSet<&str>> = HashMap::new();
    for e in &r.events {
        if let Some(ip) = v4(e)
            && pools.mobile.iter().any(|(_, rs)| in_ranges(ip, rs))
        {
            assert!(!r.labels.contains_key(&e.event_id));
            users.entry(ip).or_default().insert(e.customer_id.as_str());
        }
    }
    assert!(users.len() > 50);
    let shared = users.values().filter(|u| u.len() >= 2).count();
    assert!(
        shared * 10 >= users.len() * 8,
        "{shared} of {} shared",
        users.len()
    );
    let max = users.values().map(HashSet::len).max().unwrap();
    assert!(max >= 10, "largest NAT address has {max} customers");
    // App sessions are mostly behind a carrier, sometimes on home Wi-Fi.
    let app: Vec<u32> = r
        .events
        .iter()
        .filter(|e| e.channel == Channel::App)
        .filter_map(v4)
        .collect();
    let on_carrier = app.iter().filter(|ip| users.contains_key(ip)).count();
    assert!(on_carrier * 2 > app.len() && on_carrier < app.len());
}

#[test]
fn honest_customers_include_the_hard_cases() {
    let r = run();
    let pools = IpPools::builtin();
    let honest: Vec<&Event> = r
        .events
        .iter()
        .filter(|e| !r.labels.contains_key(&e.event_id))
        .collect();
    let from = |rs: &[Range4]| {
        honest
            .iter()
            .filter(|e| v4(e).is_some_and(|ip| in_ranges(ip, rs)))
            .count()
    };
    assert!(from(&pools.vpn) > 0, "no honest VPN use");
    assert!(
        from(&pools.hosting) > 0,
        "no honest hosting address (VPS, hotel)"
    );
    assert!(from(&pools.foreign) > 0, "no travel abroad");
    // Offline procedures, honest failed logins, a customer with several ISPs (moved house),
    // office NATs shared by colleagues.
    assert!(honest.iter().any(|e| e.channel == Channel::Paper));
    assert!(honest.iter().any(|e| e.channel == Channel::SupportCenter));
    assert!(
        honest
            .iter()
            .filter(|e| e.kind == Kind::LoginFailed)
            .count()
            > 100
    );
    let mut asns: HashMap<&str, BTreeSet<u32>> = HashMap::new();
    let mut fixed: HashMap<u32, BTreeSet<&str>> = HashMap::new();
    for e in &honest {
        if let Some(ip) = v4(e)
            && let Some(a) = asn_of(ip, &pools.residential)
        {
            asns.entry(e.customer_id.as_str()).or_default().insert(a);
            fixed.entry(ip).or_default().insert(e.customer_id.as_str());
        }
    }
    assert!(asns.values().filter(|s| s.len() >= 2).count() >= 10);
    assert!(
        fixed.values().filter(|s| s.len() >= 2).count() >= 5,
        "no shared office/hotel address"
    );
    // Honest destination changes from an address the customer had not used before (earlier
    // than the session itself) exist.
    let mut seen: HashMap<&str, Vec<(i64, IpAddr)>> = HashMap::new();
    let mut fresh_dest = 0;
    for e in &honest {
        let s = seen.entry(e.customer_id.as_str()).or_default();
        if let Some(ip) = e.ip {
            let hour = mamori_core::time::HOUR_US;
            if e.kind == Kind::DestinationChange
                && !s.iter().any(|(t, i)| *i == ip && *t < e.occurred_at - hour)
            {
                fresh_dest += 1;
            }
            s.push((e.occurred_at, ip));
        }
    }
    assert!(fresh_dest > 0);
}

#[test]
fn small_and_empty_runs_and_custom_pools() {
    let st = simulate(&SimConfig::new(0, 1), &mut |_| Ok(()), &mut |_| Ok(())).unwrap();
    assert_eq!(st.events, 0);
    let mut cfg = SimConfig::new(12, 5);
    let mut pools = IpPools::builtin();
    pools.residential.truncate(1);
    pools.mobile.truncate(1);
    cfg.ip_pools = Some(pools.clone());
    let mut styles = HashSet::new();
    let st = simulate(&cfg, &mut |_| Ok(()), &mut |l| {
        styles.insert(l.style);
        Ok(())
    })
    .unwrap();
    assert!(st.events > 0 && st.campaigns == 5);
    assert_eq!(styles.len(), 5);
    // A sink error stops the run.
    let err = simulate(
        &cfg,
        &mut |_| Err(std::io::Error::other("full")),
        &mut |_| Ok(()),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "full");
    // Another, short period outside 2020: every style still there, every event inside.
    let mut later = SimConfig::new(200, 9);
    later.start = jst_midnight(2021, 1, 1);
    later.end = jst_midnight(2021, 2, 1);
    let mut styles = HashSet::new();
    let st = simulate(
        &later,
        &mut |e| {
            assert!(e.occurred_at >= later.start && e.occurred_at < later.end);
            Ok(())
        },
        &mut |l| {
            styles.insert(l.style);
            Ok(())
        },
    )
    .unwrap();
    assert!(st.events > 1000);
    assert_eq!(styles.len(), 5);
    let mut bad = cfg.clone();
    bad.end = bad.start;
    assert!(simulate(&bad, &mut |_| Ok(()), &mut |_| Ok(())).is_err());
    let mut bad = cfg.clone();
    bad.victims_per_campaign = (3, 1);
    assert!(bad.validate().is_err());
    let mut bad = cfg;
    bad.ip_pools = Some(IpPools {
        vpn: Vec::new(),
        ..pools
    });
    assert!(bad.validate().is_err());
}

#[test]
fn styles_parse_and_print() {
    for s in Style::ALL {
        assert_eq!(Style::parse(s.as_str()), Some(s));
        assert_eq!(s.as_str().parse::<Style>().unwrap(), s);
        assert_eq!(s.to_string(), s.as_str());
    }
    assert!("phishing".parse::<Style>().is_err());
    assert_eq!(customer_id(0), "C0000001");
    let mut s = String::new();
    push_padded(&mut s, 42);
    push_padded(&mut s, 1_234_567);
    assert_eq!(s, "0000421234567");
}

#[test]
fn default_config_matches_the_brief() {
    let cfg = SimConfig::new(1_000_000, 1);
    assert_eq!(
        mamori_core::time::format_tokyo(cfg.start),
        "2019-06-01T00:00:00+09:00"
    );
    assert_eq!(
        mamori_core::time::format_tokyo(cfg.end),
        "2020-10-01T00:00:00+09:00"
    );
    assert_eq!(cfg.campaigns, 250);
    assert_eq!(SimConfig::new(100, 1).campaigns, 5);
    cfg.validate().unwrap();
}

/// Throughput in release (single thread):
/// `SIM_CUSTOMERS=100000 cargo test --release -p mamori-sim -- --ignored --nocapture throughput`.
#[test]
#[ignore]
fn throughput() {
    let n: u32 = std::env::var("SIM_CUSTOMERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let cfg = SimConfig::new(n, 1);
    let t = std::time::Instant::now();
    let plan = campaign_plan(&cfg).unwrap();
    let planning = t.elapsed().as_secs_f64();

    let t = std::time::Instant::now();
    let st = simulate(&cfg, &mut |_| Ok(()), &mut |_| Ok(())).unwrap();
    let generate = t.elapsed().as_secs_f64();

    let t = std::time::Instant::now();
    let mut buf = Vec::with_capacity(1 << 16);
    let mut bytes = 0usize;
    simulate(
        &cfg,
        &mut |e| {
            write_event_json(e, &mut buf);
            buf.push(b'\n');
            if buf.len() > 60_000 {
                bytes += buf.len();
                buf.clear();
            }
            Ok(())
        },
        &mut |_| Ok(()),
    )
    .unwrap();
    bytes += buf.len();
    let fast = t.elapsed().as_secs_f64();

    let part = n.min(20_000);
    let t = std::time::Instant::now();
    let mut slow_bytes = 0usize;
    let st_part = simulate_range(
        &cfg,
        0..part,
        &mut |e| {
            slow_bytes += e.to_json().len() + 1;
            Ok(())
        },
        &mut |_| Ok(()),
    )
    .unwrap();
    let slow = t.elapsed().as_secs_f64();
    println!(
        "{n} customers, {} campaigns (planned in {planning:.2}s), {} events ({:.1}/customer), {} attacker events, {:.1} GB of JSON Lines\n  \
         generate only:              {generate:.2}s = {:.0} events/s\n  \
         + write_event_json:         {fast:.2}s = {:.0} events/s\n  \
         + Event::to_json ({part} customers): {slow:.2}s = {:.0} events/s ({slow_bytes} bytes)",
        plan.len(),
        st.events,
        st.events as f64 / f64::from(n.max(1)),
        st.fraud_events,
        bytes as f64 / 1e9,
        st.events as f64 / generate,
        st.events as f64 / fast,
        st_part.events as f64 / slow,
    );
}
