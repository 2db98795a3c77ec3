//! Loads the real reference data of `../shared/data` (relative to the project root) and checks
//! known facts. Skips with a message when the folder is absent, unless `CI=true`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Instant;

use ipnet::IpNet;
use mamori_core::verdict::{IpFacts, IpIntel};
use mamori_intel::{Intel, IntelConfig, IntelError, ListKind};
use serde_json::Value;

fn data_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if dir.join("README.md").is_file() {
        return Some(dir);
    }
    let msg = format!(
        "reference data folder {} is absent: tests on real IP data skipped",
        dir.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg} (CI=true requires it)");
    }
    eprintln!("{msg}");
    None
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn load(config: &IntelConfig) -> Intel {
    match Intel::load(config) {
        Ok(intel) => intel,
        Err(e) => panic!("loading {config:?}: {e}"),
    }
}

#[test]
fn real_csvs_and_lists() {
    let Some(dir) = data_dir() else { return };
    let config = IntelConfig::from_dir(&dir);
    assert_eq!(config.asn_csv.len(), 2);
    assert_eq!(config.country_csv.len(), 2);
    assert_eq!(config.vpn_lists.len(), 2);
    assert_eq!(config.hosting_lists.len(), 2);

    let start = Instant::now();
    let intel = load(&config);
    eprintln!("loaded in {:?}: {}", start.elapsed(), intel.summary());
    assert!(intel.is_configured());

    // NTT OCN: 153.128.0.0-153.253.255.255 is AS4713 and JP in the CSVs.
    let f = intel.facts(ip("153.128.0.1"));
    assert_eq!(f.asn, Some(4713));
    assert_eq!(f.org.as_deref(), Some("NTT Communications Corporation"));
    assert_eq!(f.country.as_deref(), Some("JP"));
    assert!(!f.vpn && !f.hosting && !f.anonymous);
    assert_eq!(intel.asn(ip("153.253.255.255")), Some(4713));

    // Google Public DNS.
    let f = intel.facts(ip("8.8.8.8"));
    assert_eq!(f.asn, Some(15169));
    assert_eq!(f.org.as_deref(), Some("Google LLC"));
    assert_eq!(f.country.as_deref(), Some("US"));
    assert_eq!(intel.asn(ip("8.8.8.8")), Some(15169));
    // An IPv4-mapped IPv6 address is the IPv4 address.
    assert_eq!(intel.asn(ip("::ffff:8.8.8.8")), Some(15169));
    let f = intel.facts(ip("2001:4860:4860::8888"));
    assert_eq!(f.asn, Some(15169));

    // Range boundaries: 1.0.0.0-1.0.0.255 is Cloudflare, 1.0.1.0 is in no ASN range.
    assert_eq!(intel.asn(ip("1.0.0.0")), Some(13335));
    assert_eq!(intel.asn(ip("1.0.0.255")), Some(13335));
    assert_eq!(
        intel.facts(ip("1.0.0.255")).org.as_deref(),
        Some("Cloudflare, Inc.")
    );
    assert_eq!(intel.asn(ip("1.0.1.0")), None);
    assert_eq!(intel.facts(ip("1.0.1.0")).country.as_deref(), Some("CN"));
    // Quoted org names with doubled quotes.
    assert_eq!(
        intel.facts(ip("2.26.200.1")).org.as_deref(),
        Some("LLC \"SPUTNIK\"")
    );
    // Overlapping ranges: the more specific one wins.
    // 2.58.196.0-2.58.197.255 DE holds 2.58.197.15 BE.
    assert_eq!(
        intel.facts(ip("2.58.197.14")).country.as_deref(),
        Some("DE")
    );
    assert_eq!(
        intel.facts(ip("2.58.197.15")).country.as_deref(),
        Some("BE")
    );
    assert_eq!(
        intel.facts(ip("2.58.197.16")).country.as_deref(),
        Some("DE")
    );
    // 214.95.0.0-215.0.255.255 AS749 partly overlaps 215.0.0.0-215.1.3.255 AS721.
    assert_eq!(intel.asn(ip("214.255.255.255")), Some(749));
    assert_eq!(intel.asn(ip("215.0.0.0")), Some(721));
    assert_eq!(intel.asn(ip("215.1.3.255")), Some(721));

    // Private addresses are in no table. (2001:db8::/32, the documentation prefix, is JP in the
    // country CSV.)
    assert_eq!(intel.facts(ip("10.1.2.3")), IpFacts::default());
    assert_eq!(intel.facts(ip("fd12:3456::1")), IpFacts::default());

    // Lists: 1.12.0.0/14 (Tencent) is on the datacenter list, 2.26.157.0/24 on the VPN list.
    let f = intel.facts(ip("1.12.0.1"));
    assert!(f.hosting);
    assert_eq!(f.asn, Some(45090));
    assert!(intel.facts(ip("1.15.255.255")).hosting);
    assert!(intel.facts(ip("2.26.157.255")).vpn);
    assert!(!intel.facts(ip("2.26.158.0")).vpn);
    assert!(intel.facts(ip("2001:310::1")).hosting);
    assert!(intel.on_list(ListKind::Hosting, ip("1.12.0.1")));
    assert!(!intel.on_list(ListKind::Vpn, ip("1.12.0.1")));

    // For the simulator.
    let ocn = intel.ipv4_ranges_of_asn(4713);
    assert!(ocn.len() > 10, "{} ranges", ocn.len());
    assert!(
        ocn.windows(2).all(|w| w[0].1 < w[1].0),
        "sorted and disjoint"
    );
    assert!(ocn.iter().all(|(lo, hi)| lo <= hi));
    assert!(ocn.contains(&(
        Ipv4Addr::new(153, 128, 0, 0),
        Ipv4Addr::new(153, 253, 255, 255)
    )));
    assert!(intel.ipv4_ranges_of_asn(4_000_000_000).is_empty());
    let hosting = intel.list_ranges_v4(ListKind::Hosting);
    assert!(hosting.contains(&(Ipv4Addr::new(1, 12, 0, 0), Ipv4Addr::new(1, 15, 255, 255))));
    assert!(
        hosting
            .windows(2)
            .all(|w| u32::from(w[0].1) + 1 < u32::from(w[1].0))
    );
    let vpn = intel.list_ranges_v4(ListKind::Vpn);
    assert!(vpn.len() > 1000, "{} VPN ranges", vpn.len());

    let summary = intel.summary();
    assert!(
        summary.contains("ASN CSV: 515158 entries from 2 files"),
        "{summary}"
    );
}

fn mmdb(dir: &Path, name: &str) -> PathBuf {
    dir.join("mmdb").join(name)
}

fn json(path: PathBuf) -> Vec<(IpNet, Value)> {
    let text = std::fs::read_to_string(&path).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|o| o.as_object().unwrap().iter())
        .map(|(net, data)| (net.parse::<IpNet>().unwrap(), data.clone()))
        .collect()
}

/// The address to look up for a network of a test database's JSON: its first address, as IPv4
/// when it is written in the `::a.b.c.d/n` (IPv4 subtree) form.
fn first_addr(net: &IpNet) -> IpAddr {
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 && u128::from(n.network()) >> 32 == 0 => IpAddr::V4(
            Ipv4Addr::from((u128::from(n.network()) & 0xffff_ffff) as u32),
        ),
        n => n.network(),
    }
}

/// Each network's first address with the data of the most specific network holding it.
fn expectations(entries: &[(IpNet, Value)]) -> Vec<(IpAddr, &Value)> {
    entries
        .iter()
        .map(|(net, _)| {
            let addr = net.network();
            let (_, data) = entries
                .iter()
                .filter(|(n, _)| n.contains(&addr))
                .max_by_key(|(n, _)| n.prefix_len())
                .unwrap();
            (first_addr(net), data)
        })
        .collect()
}

#[test]
fn maxmind_test_databases() {
    let Some(dir) = data_dir() else { return };

    // ASN.
    let intel = load(&IntelConfig {
        asn_mmdb: Some(mmdb(&dir, "GeoLite2-ASN-Test.mmdb")),
        ..IntelConfig::default()
    });
    assert!(intel.is_configured());
    assert!(
        intel.summary().contains("GeoLite2-ASN"),
        "{}",
        intel.summary()
    );
    let entries = json(mmdb(&dir, "GeoLite2-ASN-Test.json"));
    assert!(entries.len() > 500);
    for (addr, data) in expectations(&entries) {
        let f = intel.facts(addr);
        let want_asn = data["autonomous_system_number"].as_u64().map(|n| n as u32);
        let want_org = data["autonomous_system_organization"].as_str();
        assert_eq!(f.asn, want_asn, "{addr}");
        assert_eq!(f.org.as_deref(), want_org, "{addr}");
        assert_eq!(intel.asn(addr), want_asn, "{addr}");
        assert_eq!(f.country, None);
    }
    let f = intel.facts(ip("1.128.0.1"));
    assert_eq!(f.asn, Some(1221));
    assert_eq!(f.org.as_deref(), Some("Telstra Pty Ltd"));
    assert_eq!(intel.facts(ip("12.81.96.1")).org, None);
    assert_eq!(intel.facts(ip("10.0.0.1")).asn, None);

    // City: the country, else the registered country.
    let intel = load(&IntelConfig {
        city_mmdb: Some(mmdb(&dir, "GeoLite2-City-Test.mmdb")),
        ..IntelConfig::default()
    });
    let entries = json(mmdb(&dir, "GeoLite2-City-Test.json"));
    for (addr, data) in expectations(&entries) {
        let want = data["country"]["iso_code"]
            .as_str()
            .or(data["registered_country"]["iso_code"].as_str());
        assert_eq!(intel.facts(addr).country.as_deref(), want, "{addr}");
        // And the location, to the millionth of a degree, for impossible travel.
        let loc = &data["location"];
        let want = loc["latitude"].as_f64().zip(loc["longitude"].as_f64());
        let got = intel.location(addr);
        assert_eq!(got, intel.facts(addr).location, "{addr}");
        assert_eq!(
            got.map(|l| (l.latitude_e6, l.longitude_e6, u64::from(l.accuracy_km))),
            want.map(|(la, lo)| (
                (la * 1e6).round() as i32,
                (lo * 1e6).round() as i32,
                loc["accuracy_radius"].as_u64().unwrap_or(0)
            )),
            "{addr}"
        );
    }
    let london = intel.location(ip("81.2.69.142")).expect("London");
    let jp = intel.location(ip("2001:218::1")).expect("Japan");
    assert!((9_000.0..10_000.0).contains(&london.km_to(&jp)));
    assert_eq!(intel.location(ip("8.8.8.8")), None);
    assert_eq!(
        intel.facts(ip("2.125.160.216")).country.as_deref(),
        Some("GB")
    );
    assert_eq!(
        intel.facts(ip("2001:218::1")).country.as_deref(),
        Some("JP")
    );
    assert_eq!(intel.facts(ip("8.8.8.8")).country, None);

    // Country.
    let intel = load(&IntelConfig {
        country_mmdb: Some(mmdb(&dir, "GeoLite2-Country-Test.mmdb")),
        ..IntelConfig::default()
    });
    assert_eq!(
        intel.facts(ip("81.2.69.160")).country.as_deref(),
        Some("GB")
    );
    assert_eq!(
        intel.facts(ip("2001:218::1")).country.as_deref(),
        Some("JP")
    );

    // Anonymous IP.
    let intel = load(&IntelConfig {
        anonymous_mmdb: Some(mmdb(&dir, "GeoIP2-Anonymous-IP-Test.mmdb")),
        ..IntelConfig::default()
    });
    let entries = json(mmdb(&dir, "GeoIP2-Anonymous-IP-Test.json"));
    assert!(entries.len() >= 10);
    for (addr, data) in expectations(&entries) {
        let flag = |k: &str| data[k].as_bool().unwrap_or(false);
        let f = intel.facts(addr);
        assert_eq!(f.vpn, flag("is_anonymous_vpn"), "{addr}");
        assert_eq!(f.hosting, flag("is_hosting_provider"), "{addr}");
        assert_eq!(
            f.anonymous,
            flag("is_tor_exit_node") || flag("is_public_proxy") || flag("is_residential_proxy"),
            "{addr}"
        );
    }
    let f = intel.facts(ip("1.2.3.4"));
    assert!(f.vpn && !f.hosting && !f.anonymous);
    let f = intel.facts(ip("71.160.223.9"));
    assert!(!f.vpn && f.hosting && !f.anonymous);
    assert!(intel.facts(ip("1.124.213.1")).anonymous);
    assert!(intel.facts(ip("6.1.0.4")).anonymous);
    assert!(intel.facts(ip("abcd:1000::7")).anonymous);
    assert_eq!(intel.facts(ip("8.8.8.8")), IpFacts::default());

    // Everything at once: the MaxMind DBs answer first, the CSVs fill in.
    let mut config = IntelConfig::from_dir(&dir);
    config.asn_mmdb = Some(mmdb(&dir, "GeoLite2-ASN-Test.mmdb"));
    config.city_mmdb = Some(mmdb(&dir, "GeoLite2-City-Test.mmdb"));
    config.anonymous_mmdb = Some(mmdb(&dir, "GeoIP2-Anonymous-IP-Test.mmdb"));
    config.verify_mmdb = true;
    let intel = load(&config);
    // 1.0.0.0/24 is Google in the ASN test database, Cloudflare in the CSV.
    assert_eq!(intel.asn(ip("1.0.0.1")), Some(15169));
    assert_eq!(
        intel.facts(ip("1.0.0.1")).org.as_deref(),
        Some("Google Inc.")
    );
    // Not in the test databases: from the CSVs.
    let f = intel.facts(ip("153.128.0.1"));
    assert_eq!((f.asn, f.country.as_deref()), (Some(4713), Some("JP")));
    // 2.125.160.216 is GB in the City database.
    assert_eq!(
        intel.facts(ip("2.125.160.216")).country.as_deref(),
        Some("GB")
    );
}

fn load_err(config: &IntelConfig) -> IntelError {
    match Intel::load(config) {
        Ok(intel) => panic!("{config:?} loaded: {}", intel.summary()),
        Err(e) => e,
    }
}

#[test]
fn broken_maxmind_databases_fail_at_load() {
    let Some(dir) = data_dir() else { return };
    let broken = [
        "GeoIP2-City-Test-Broken-Double-Format.mmdb",
        "GeoIP2-City-Test-Invalid-Node-Count.mmdb",
        "MaxMind-DB-test-broken-pointers-24.mmdb",
        "MaxMind-DB-test-broken-search-tree-24.mmdb",
    ];
    for name in broken {
        let path = mmdb(&dir, name);
        assert!(path.is_file(), "{}", path.display());
        for verify in [false, true] {
            let configs = [
                IntelConfig {
                    city_mmdb: Some(path.clone()),
                    verify_mmdb: verify,
                    ..IntelConfig::default()
                },
                IntelConfig {
                    asn_mmdb: Some(path.clone()),
                    verify_mmdb: verify,
                    ..IntelConfig::default()
                },
                IntelConfig {
                    anonymous_mmdb: Some(path.clone()),
                    verify_mmdb: verify,
                    ..IntelConfig::default()
                },
            ];
            for config in &configs {
                let e = load_err(config);
                assert_eq!(e.path(), path);
                let msg = e.to_string();
                assert!(msg.contains(name), "{msg}");
                eprintln!("{name} (verify {verify}): {msg}");
            }
        }
    }

    // A database of the wrong kind.
    let e = load_err(&IntelConfig {
        asn_mmdb: Some(mmdb(&dir, "GeoLite2-City-Test.mmdb")),
        ..IntelConfig::default()
    });
    assert!(e.to_string().contains("holds no AS numbers"), "{e}");
    // A file that is no MaxMind DB at all.
    let e = load_err(&IntelConfig {
        asn_mmdb: Some(dir.join("README.md")),
        ..IntelConfig::default()
    });
    assert!(matches!(e, IntelError::Mmdb { .. }), "{e}");
    // A missing file.
    let e = load_err(&IntelConfig {
        city_mmdb: Some(mmdb(&dir, "absent.mmdb")),
        ..IntelConfig::default()
    });
    assert!(matches!(e, IntelError::Io { .. }), "{e}");
    assert!(e.to_string().contains("absent.mmdb"), "{e}");
}
