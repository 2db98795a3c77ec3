//! mamori-intel: what IP data says about an address (AS number and organisation, country, VPN,
//! hosting, anonymising proxies), behind [`mamori_core::verdict::IpIntel`].
//!
//! Sources, all optional (see [`IntelConfig`]):
//! * MaxMind DB files (GeoIP2/GeoLite2 ASN, City or Country, Anonymous IP), checked at load so a
//!   corrupt file fails at start-up;
//! * range CSVs `start_ip,end_ip,asn,org` and `start_ip,end_ip,country` (the ip-location-db
//!   layout, IPv4 or IPv6, header line optional);
//! * CIDR lists of VPN and hosting networks, one block per line, `#` comments.
//!
//! A MaxMind DB answers before the CSVs. Range data is held as sorted, disjoint ranges of
//! [`mamori_core::net::ip_key`] keys (IPv4 mapped into IPv6 space) looked up by binary search;
//! where the CSV ranges overlap, the most specific range wins.

mod error;
mod mmdb;
mod ranges;
mod table;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use mamori_core::net::ip_key;
use mamori_core::verdict::{IpFacts, IpIntel};
use serde::Deserialize;

pub use error::IntelError;

use mmdb::{DbKind, Mmdb};
use ranges::{RangeMap, RangeSet};
use table::{AsnVal, CountryCode, Orgs};

/// Which IP data to load. Every source is optional; an empty configuration loads nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntelConfig {
    /// GeoLite2-ASN (or compatible) MaxMind DB.
    pub asn_mmdb: Option<PathBuf>,
    /// GeoIP2/GeoLite2-City MaxMind DB (for the country).
    pub city_mmdb: Option<PathBuf>,
    /// GeoIP2/GeoLite2-Country MaxMind DB.
    pub country_mmdb: Option<PathBuf>,
    /// GeoIP2-Anonymous-IP MaxMind DB.
    pub anonymous_mmdb: Option<PathBuf>,
    /// Range CSVs `start_ip,end_ip,asn,org`.
    pub asn_csv: Vec<PathBuf>,
    /// Range CSVs `start_ip,end_ip,country`.
    pub country_csv: Vec<PathBuf>,
    /// Lists of VPN provider networks, one CIDR block per line.
    pub vpn_lists: Vec<PathBuf>,
    /// Lists of hosting/datacenter networks, one CIDR block per line.
    pub hosting_lists: Vec<PathBuf>,
    /// Verify every MaxMind DB in full at load (its whole search tree and data section) rather
    /// than a sample of its records. Catches more corruption; takes seconds on full-size files.
    pub verify_mmdb: bool,
}

impl IntelConfig {
    /// Adds `other` on top: its MaxMind files replace these, its lists are added to these.
    pub fn merge(&mut self, other: IntelConfig) {
        self.asn_mmdb = other.asn_mmdb.or(self.asn_mmdb.take());
        self.city_mmdb = other.city_mmdb.or(self.city_mmdb.take());
        self.country_mmdb = other.country_mmdb.or(self.country_mmdb.take());
        self.anonymous_mmdb = other.anonymous_mmdb.or(self.anonymous_mmdb.take());
        self.asn_csv.extend(other.asn_csv);
        self.country_csv.extend(other.country_csv);
        self.vpn_lists.extend(other.vpn_lists);
        self.hosting_lists.extend(other.hosting_lists);
        self.verify_mmdb |= other.verify_mmdb;
    }

    /// The standard files of a reference-data folder that exist in `dir`:
    /// `ipintel/asn-ipv4.csv`, `ipintel/asn-ipv6.csv`,
    /// `ipintel/geo-whois-asn-country-ipv4.csv`, `ipintel/geo-whois-asn-country-ipv6.csv`,
    /// `iplists/vpn-ipv4.txt`, `iplists/vpn-ipv6.txt`, `iplists/datacenter-ipv4.txt` and
    /// `iplists/datacenter-ipv6.txt`. MaxMind DBs are not picked up.
    pub fn from_dir(dir: impl AsRef<Path>) -> IntelConfig {
        let dir = dir.as_ref();
        let existing = |names: &[&str]| -> Vec<PathBuf> {
            names
                .iter()
                .map(|n| dir.join(n))
                .filter(|p| p.is_file())
                .collect()
        };
        IntelConfig {
            asn_csv: existing(&["ipintel/asn-ipv4.csv", "ipintel/asn-ipv6.csv"]),
            country_csv: existing(&[
                "ipintel/geo-whois-asn-country-ipv4.csv",
                "ipintel/geo-whois-asn-country-ipv6.csv",
            ]),
            vpn_lists: existing(&["iplists/vpn-ipv4.txt", "iplists/vpn-ipv6.txt"]),
            hosting_lists: existing(&[
                "iplists/datacenter-ipv4.txt",
                "iplists/datacenter-ipv6.txt",
            ]),
            ..IntelConfig::default()
        }
    }

    /// Whether no source is configured.
    pub fn is_empty(&self) -> bool {
        self.asn_mmdb.is_none()
            && self.city_mmdb.is_none()
            && self.country_mmdb.is_none()
            && self.anonymous_mmdb.is_none()
            && self.asn_csv.is_empty()
            && self.country_csv.is_empty()
            && self.vpn_lists.is_empty()
            && self.hosting_lists.is_empty()
    }
}

/// A kind of CIDR list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListKind {
    /// VPN provider networks ([`IntelConfig::vpn_lists`]).
    Vpn,
    /// Hosting/datacenter networks ([`IntelConfig::hosting_lists`]).
    Hosting,
}

/// Lines read from the files of one kind of source.
#[derive(Debug, Clone, Copy, Default)]
struct Count {
    files: usize,
    entries: usize,
}

/// Loaded IP data. Cheap to query from many threads.
#[derive(Default)]
pub struct Intel {
    asn_db: Option<Mmdb>,
    city_db: Option<Mmdb>,
    country_db: Option<Mmdb>,
    anonymous_db: Option<Mmdb>,
    asn: RangeMap<AsnVal>,
    orgs: Orgs,
    country: RangeMap<CountryCode>,
    vpn: RangeSet,
    hosting: RangeSet,
    asn_read: Count,
    country_read: Count,
    vpn_read: Count,
    hosting_read: Count,
}

impl fmt::Debug for Intel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Intel").field(&self.summary()).finish()
    }
}

fn open_db(path: &Option<PathBuf>, kind: DbKind, verify: bool) -> Result<Option<Mmdb>, IntelError> {
    path.as_deref()
        .map(|p| Mmdb::open(p, kind, verify))
        .transpose()
}

fn load_lists(paths: &[PathBuf]) -> Result<(RangeSet, Count), IntelError> {
    let mut items = Vec::new();
    let mut count = Count::default();
    for p in paths {
        count.entries += table::read_cidr_list(p, &mut items)?;
        count.files += 1;
    }
    Ok((RangeMap::build(items), count))
}

fn load_asn(paths: &[PathBuf]) -> Result<(RangeMap<AsnVal>, Orgs, Count), IntelError> {
    let mut items = Vec::new();
    let mut orgs = Orgs::default();
    let mut count = Count::default();
    for p in paths {
        count.entries += table::read_asn_csv(p, &mut orgs, &mut items)?;
        count.files += 1;
    }
    orgs.finish();
    Ok((RangeMap::build(items), orgs, count))
}

fn load_country(paths: &[PathBuf]) -> Result<(RangeMap<CountryCode>, Count), IntelError> {
    let mut items = Vec::new();
    let mut count = Count::default();
    for p in paths {
        count.entries += table::read_country_csv(p, &mut items)?;
        count.files += 1;
    }
    Ok((RangeMap::build(items), count))
}

fn v4(key: u128) -> Ipv4Addr {
    // The low 32 bits of an IPv4-mapped key are the address.
    Ipv4Addr::from((key & 0xffff_ffff) as u32)
}

/// Adjacent or overlapping IPv4 key ranges, sorted, merged.
fn merged_v4(ranges: impl Iterator<Item = (u128, u128)>) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let mut out: Vec<(u128, u128)> = Vec::new();
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if last.1.saturating_add(1) >= lo => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out.into_iter().map(|(lo, hi)| (v4(lo), v4(hi))).collect()
}

fn code_string(code: CountryCode) -> String {
    code.iter().map(|&b| char::from(b)).collect()
}

impl Intel {
    /// No IP data: every answer is empty and [`IpIntel::is_configured`] is false.
    pub fn none() -> Intel {
        Intel::default()
    }

    /// Loads every configured source. A missing, unreadable, malformed or corrupt file is an
    /// error naming it (and the line and field, for CSVs and lists).
    pub fn load(config: &IntelConfig) -> Result<Intel, IntelError> {
        let verify = config.verify_mmdb;
        let asn_db = open_db(&config.asn_mmdb, DbKind::Asn, verify)?;
        let city_db = open_db(&config.city_mmdb, DbKind::Country, verify)?;
        let country_db = open_db(&config.country_mmdb, DbKind::Country, verify)?;
        let anonymous_db = open_db(&config.anonymous_mmdb, DbKind::Anonymous, verify)?;

        // The ASN table is the largest source: read it on a thread of its own (or here, if no
        // thread can be started).
        let rest = || {
            let country = load_country(&config.country_csv)?;
            let vpn = load_lists(&config.vpn_lists)?;
            let hosting = load_lists(&config.hosting_lists)?;
            Ok::<_, IntelError>((country, vpn, hosting))
        };
        let (asn, rest) = std::thread::scope(|s| {
            match std::thread::Builder::new()
                .name("mamori-intel-asn".into())
                .spawn_scoped(s, || load_asn(&config.asn_csv))
            {
                Ok(handle) => {
                    let rest = rest();
                    let asn = handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                    (asn, rest)
                }
                Err(_) => (load_asn(&config.asn_csv), rest()),
            }
        });
        let (asn, orgs, asn_read) = asn?;
        let ((country, country_read), (vpn, vpn_read), (hosting, hosting_read)) = rest?;

        Ok(Intel {
            asn_db,
            city_db,
            country_db,
            anonymous_db,
            asn,
            orgs,
            country,
            vpn,
            hosting,
            asn_read,
            country_read,
            vpn_read,
            hosting_read,
        })
    }

    /// Every IPv4 range the ASN CSVs attribute to AS `asn`, sorted, adjacent ranges merged.
    /// (A linear scan of the table.)
    pub fn ipv4_ranges_of_asn(&self, asn: u32) -> Vec<(Ipv4Addr, Ipv4Addr)> {
        merged_v4(
            self.asn
                .iter_v4()
                .filter(|&(_, _, v)| v.asn == asn)
                .map(|(lo, hi, _)| (lo, hi)),
        )
    }

    /// The IPv4 ranges of a CIDR list kind, sorted and merged.
    pub fn list_ranges_v4(&self, kind: ListKind) -> Vec<(Ipv4Addr, Ipv4Addr)> {
        let set = match kind {
            ListKind::Vpn => &self.vpn,
            ListKind::Hosting => &self.hosting,
        };
        merged_v4(set.iter_v4().map(|(lo, hi, ())| (lo, hi)))
    }

    /// Whether the address is on a CIDR list of `kind` (lists only, not the Anonymous IP database).
    pub fn on_list(&self, kind: ListKind, ip: IpAddr) -> bool {
        match kind {
            ListKind::Vpn => self.vpn.contains(ip_key(ip)),
            ListKind::Hosting => self.hosting.contains(ip_key(ip)),
        }
    }

    /// A one-line description of what is loaded, for logs.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let dbs = [
            ("ASN", &self.asn_db),
            ("city", &self.city_db),
            ("country", &self.country_db),
            ("anonymous-IP", &self.anonymous_db),
        ];
        for (what, db) in dbs {
            if let Some(db) = db {
                parts.push(format!(
                    "{what} mmdb {} ({})",
                    db.path().display(),
                    db.database_type()
                ));
            }
        }
        let tables = [
            ("ASN CSV", self.asn_read, self.asn.len()),
            ("country CSV", self.country_read, self.country.len()),
            ("VPN list", self.vpn_read, self.vpn.len()),
            ("hosting list", self.hosting_read, self.hosting.len()),
        ];
        for (what, read, ranges) in tables {
            if read.files > 0 {
                let mut s = format!(
                    "{what}: {} entries from {} file{} ({ranges} merged ranges",
                    read.entries,
                    read.files,
                    if read.files == 1 { "" } else { "s" },
                );
                if what == "ASN CSV" {
                    s.push_str(&format!(", {} organisations", self.orgs.len()));
                }
                s.push(')');
                parts.push(s);
            }
        }
        if parts.is_empty() {
            "IP data: none".to_string()
        } else {
            format!("IP data: {}", parts.join("; "))
        }
    }

    fn csv_asn(&self, key: u128) -> Option<AsnVal> {
        self.asn.get(key)
    }
}

impl IpIntel for Intel {
    fn facts(&self, ip: IpAddr) -> IpFacts {
        let key = ip_key(ip);
        let mut facts = IpFacts::default();

        if let Some((asn, org)) = self.asn_db.as_ref().and_then(|db| db.asn(ip)) {
            facts.asn = Some(asn);
            facts.org = org;
        } else if let Some(v) = self.csv_asn(key) {
            facts.asn = Some(v.asn);
            facts.org = v.org.and_then(|i| self.orgs.get(i)).map(str::to_owned);
        }

        facts.country = self
            .city_db
            .as_ref()
            .and_then(|db| db.country(ip))
            .or_else(|| self.country_db.as_ref().and_then(|db| db.country(ip)))
            .or_else(|| self.country.get(key))
            .map(code_string);

        facts.location = self.city_db.as_ref().and_then(|db| db.location(ip));

        let anon = self
            .anonymous_db
            .as_ref()
            .and_then(|db| db.anonymous(ip))
            .unwrap_or_default();
        facts.vpn = anon.is_anonymous_vpn || self.vpn.contains(key);
        facts.hosting = anon.is_hosting_provider || self.hosting.contains(key);
        // `is_anonymous` is set for every flagged network (VPN and hosting too); it only counts
        // here when no more specific flag explains it.
        facts.anonymous = anon.is_tor_exit_node
            || anon.is_public_proxy
            || anon.is_residential_proxy
            || (anon.is_anonymous && !anon.is_anonymous_vpn && !anon.is_hosting_provider);
        facts
    }

    fn asn(&self, ip: IpAddr) -> Option<u32> {
        self.asn_db
            .as_ref()
            .and_then(|db| db.asn_number(ip))
            .or_else(|| self.csv_asn(ip_key(ip)).map(|v| v.asn))
    }

    fn location(&self, ip: IpAddr) -> Option<mamori_core::verdict::Location> {
        self.city_db.as_ref().and_then(|db| db.location(ip))
    }

    fn is_configured(&self) -> bool {
        self.asn_db.is_some()
            || self.city_db.is_some()
            || self.country_db.is_some()
            || self.anonymous_db.is_some()
            || self.asn_read.files > 0
            || self.country_read.files > 0
            || self.vpn_read.files > 0
            || self.hosting_read.files > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(content.as_bytes()).unwrap();
        path
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn none_is_empty() {
        let intel = Intel::none();
        assert!(!intel.is_configured());
        assert_eq!(intel.facts(ip("8.8.8.8")), IpFacts::default());
        assert_eq!(intel.asn(ip("8.8.8.8")), None);
        assert_eq!(intel.summary(), "IP data: none");
        assert!(intel.ipv4_ranges_of_asn(15169).is_empty());
        assert!(IntelConfig::default().is_empty());
        let intel = Intel::load(&IntelConfig::default()).unwrap();
        assert!(!intel.is_configured());
    }

    #[test]
    fn load_and_look_up() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = IntelConfig {
            asn_csv: vec![
                write(
                    d,
                    "asn4.csv",
                    concat!(
                        "start_ip,end_ip,asn,org\n",
                        "10.0.0.0,10.0.0.255,64500,Example A\n",
                        "10.0.1.0,10.0.1.255,64500,Example A2\n",
                        "10.0.3.0,10.0.3.255,64500,Example A\n",
                        "10.0.0.128,10.0.0.191,64501,Nested B\n",
                        "10.0.2.0,10.0.2.255,64502,\n",
                    ),
                ),
                write(
                    d,
                    "asn6.csv",
                    "2001:db8::,2001:db8:ffff:ffff:ffff:ffff:ffff:ffff,64500,Example A\n",
                ),
            ],
            country_csv: vec![write(
                d,
                "country.csv",
                "10.0.0.0,10.0.1.255,JP\n2001:db8::,2001:db8::ffff,US\n",
            )],
            vpn_lists: vec![write(d, "vpn.txt", "# VPN\n10.0.0.0/25\n2001:db8::/64\n")],
            hosting_lists: vec![write(
                d,
                "hosting.txt",
                "10.0.2.0/24\r\n10.0.3.0/24 # adjacent, merged\r\n10.0.3.128/25\r\n",
            )],
            ..IntelConfig::default()
        };
        let intel = Intel::load(&config).unwrap();
        assert!(intel.is_configured());

        let f = intel.facts(ip("10.0.0.0"));
        assert_eq!(f.asn, Some(64500));
        assert_eq!(f.org.as_deref(), Some("Example A"));
        assert_eq!(f.country.as_deref(), Some("JP"));
        assert!(f.vpn && !f.hosting && !f.anonymous);
        // The nested range wins inside it, the outer one resumes after it.
        assert_eq!(intel.asn(ip("10.0.0.127")), Some(64500));
        assert_eq!(intel.asn(ip("10.0.0.128")), Some(64501));
        assert_eq!(intel.asn(ip("10.0.0.191")), Some(64501));
        assert_eq!(intel.asn(ip("10.0.0.192")), Some(64500));
        assert_eq!(
            intel.facts(ip("10.0.0.192")).org.as_deref(),
            Some("Example A")
        );
        assert!(!intel.facts(ip("10.0.0.128")).vpn);
        let f = intel.facts(ip("10.0.2.1"));
        assert_eq!((f.asn, f.org), (Some(64502), None));
        assert_eq!(f.country, None);
        assert!(f.hosting);
        assert_eq!(intel.asn(ip("10.0.4.0")), None);
        assert_eq!(intel.asn(ip("9.255.255.255")), None);
        // IPv6, and IPv4-mapped IPv6.
        let f = intel.facts(ip("2001:db8::ffff"));
        assert_eq!(
            (f.asn, f.country.as_deref(), f.vpn),
            (Some(64500), Some("US"), true)
        );
        assert_eq!(intel.facts(ip("2001:db8::1:0")).country, None);
        assert!(!intel.facts(ip("2001:db8:0:1::")).vpn);
        assert_eq!(intel.asn(ip("::ffff:10.0.0.130")), Some(64501));

        assert_eq!(
            intel.ipv4_ranges_of_asn(64500),
            vec![
                (v4("10.0.0.0"), v4("10.0.0.127")),
                (v4("10.0.0.192"), v4("10.0.1.255")),
                (v4("10.0.3.0"), v4("10.0.3.255")),
            ]
        );
        assert_eq!(
            intel.list_ranges_v4(ListKind::Hosting),
            vec![(v4("10.0.2.0"), v4("10.0.3.255"))]
        );
        assert_eq!(
            intel.list_ranges_v4(ListKind::Vpn),
            vec![(v4("10.0.0.0"), v4("10.0.0.127"))]
        );
        let summary = intel.summary();
        assert!(
            summary.contains("ASN CSV: 6 entries from 2 files")
                && summary.contains("3 organisations")
                && summary.contains("hosting list: 3 entries from 1 file (1 merged ranges)"),
            "{summary}"
        );
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = write(dir.path(), "good.txt", "10.0.0.0/8\n");
        let bad = write(dir.path(), "bad.txt", "10.0.0.0/8\n\nnot-a-net\n");
        let e = Intel::load(&IntelConfig {
            hosting_lists: vec![good, bad.clone()],
            ..IntelConfig::default()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}:3: \"not-a-net\" is neither an IP address nor a CIDR block",
                bad.display()
            )
        );
        let missing = dir.path().join("missing.csv");
        let e = Intel::load(&IntelConfig {
            asn_csv: vec![missing.clone()],
            ..IntelConfig::default()
        })
        .unwrap_err();
        assert!(matches!(e, IntelError::Io { .. }));
        assert_eq!(e.path(), missing);
        let e = Intel::load(&IntelConfig {
            city_mmdb: Some(bad.clone()),
            ..IntelConfig::default()
        })
        .unwrap_err();
        assert!(matches!(e, IntelError::Mmdb { .. }), "{e}");
        assert!(e.to_string().starts_with(&bad.display().to_string()), "{e}");
    }

    #[test]
    fn config_from_dir_and_serde() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ipintel")).unwrap();
        let asn = write(dir.path(), "ipintel/asn-ipv4.csv", "");
        let config = IntelConfig::from_dir(dir.path());
        assert_eq!(config.asn_csv, vec![asn]);
        assert!(config.country_csv.is_empty() && config.vpn_lists.is_empty());
        assert!(!config.is_empty());

        let config: IntelConfig =
            serde_json::from_str(r#"{"asn_csv": ["a.csv"], "city_mmdb": "c.mmdb"}"#).unwrap();
        assert_eq!(config.asn_csv, vec![PathBuf::from("a.csv")]);
        assert_eq!(config.city_mmdb, Some(PathBuf::from("c.mmdb")));
        assert!(!config.verify_mmdb);
        assert!(serde_json::from_str::<IntelConfig>(r#"{"asn_cvs": []}"#).is_err());
    }
}
