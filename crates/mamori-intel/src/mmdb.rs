//! MaxMind DB files (GeoIP2/GeoLite2 ASN, City, Country, Anonymous IP).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{MaxMindDbError, Reader, WithinOptions};
use serde::Deserialize;

use crate::error::IntelError;

/// What a database is expected to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DbKind {
    Asn,
    Country,
    Anonymous,
}

impl DbKind {
    fn what(self) -> &'static str {
        match self {
            DbKind::Asn => "AS numbers (autonomous_system_number)",
            DbKind::Country => "countries (country.iso_code)",
            DbKind::Anonymous => "anonymous-IP flags (is_anonymous, is_anonymous_vpn, ...)",
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct AsnRecord<'a> {
    #[serde(default)]
    pub autonomous_system_number: Option<u32>,
    #[serde(default, borrow)]
    pub autonomous_system_organization: Option<&'a str>,
}

#[derive(Deserialize, Default)]
struct IsoCode<'a> {
    #[serde(default, borrow)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct CountryRecord<'a> {
    #[serde(default, borrow)]
    country: Option<IsoCode<'a>>,
    #[serde(default, borrow)]
    registered_country: Option<IsoCode<'a>>,
}

impl CountryRecord<'_> {
    /// The country of the address, else the country where the block is registered.
    fn code(&self) -> Option<[u8; 2]> {
        [&self.country, &self.registered_country]
            .into_iter()
            .filter_map(|c| c.as_ref()?.iso_code)
            .find_map(country_code)
    }
}

fn country_code(s: &str) -> Option<[u8; 2]> {
    match s.as_bytes() {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
        }
        _ => None,
    }
}

/// The location of a City database's record.
#[derive(Deserialize)]
struct LocationRecord {
    location: Option<LocationFields>,
}

#[derive(Deserialize)]
struct LocationFields {
    latitude: Option<f64>,
    longitude: Option<f64>,
    accuracy_radius: Option<u16>,
}

/// The flags of the GeoIP2 Anonymous IP database.
#[derive(Deserialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
#[serde(default)]
pub(crate) struct AnonymousRecord {
    pub is_anonymous: bool,
    pub is_anonymous_vpn: bool,
    pub is_hosting_provider: bool,
    pub is_public_proxy: bool,
    pub is_residential_proxy: bool,
    pub is_tor_exit_node: bool,
}

impl AnonymousRecord {
    fn any(&self) -> bool {
        *self != AnonymousRecord::default()
    }
}

/// Addresses looked up at load time, so that a database whose search tree or data section is
/// broken fails at start-up.
const PROBES: &[&str] = &[
    "1.1.1.1",
    "8.8.8.8",
    "81.2.69.160",
    "153.128.0.1",
    "202.196.224.1",
    "2001:4860:4860::8888",
    "2001:218::1",
    "2a02:ff80::1",
];

/// How many networks with data are decoded at load time.
const SAMPLE: usize = 512;

/// An opened, checked MaxMind DB.
pub(crate) struct Mmdb {
    path: PathBuf,
    reader: Reader<Vec<u8>>,
}

impl std::fmt::Debug for Mmdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mmdb")
            .field("path", &self.path)
            .field("database_type", &self.reader.metadata().database_type)
            .finish_non_exhaustive()
    }
}

fn mmdb_err(path: &Path, e: MaxMindDbError) -> IntelError {
    match e {
        MaxMindDbError::Io(source) => IntelError::Io {
            path: path.to_path_buf(),
            source,
        },
        e => IntelError::Mmdb {
            path: path.to_path_buf(),
            message: e.to_string(),
        },
    }
}

impl Mmdb {
    /// Opens the database and checks it: the metadata, the records of up to [`SAMPLE`] networks
    /// and a few probe lookups must decode, and the sampled records must hold the data of `kind`.
    /// With `verify`, the whole search tree and data section are verified as well (slower).
    pub(crate) fn open(path: &Path, kind: DbKind, verify: bool) -> Result<Mmdb, IntelError> {
        let reader = Reader::open_readfile(path).map_err(|e| mmdb_err(path, e))?;
        let db = Mmdb {
            path: path.to_path_buf(),
            reader,
        };
        if !db.check(kind).map_err(|e| mmdb_err(path, e))? {
            return Err(IntelError::Mmdb {
                path: path.to_path_buf(),
                message: format!(
                    "this {:?} database holds no {}",
                    db.reader.metadata().database_type,
                    kind.what()
                ),
            });
        }
        if verify {
            db.reader.verify().map_err(|e| mmdb_err(path, e))?;
        }
        Ok(db)
    }

    /// Decodes sample records and probes; whether any holds data of `kind`.
    fn check(&self, kind: DbKind) -> Result<bool, MaxMindDbError> {
        let mut found = false;
        for item in self.reader.networks(WithinOptions::default())?.take(SAMPLE) {
            let item = item?;
            found |= match kind {
                DbKind::Asn => item
                    .decode::<AsnRecord>()?
                    .is_some_and(|r| r.autonomous_system_number.is_some()),
                DbKind::Country => item
                    .decode::<CountryRecord>()?
                    .is_some_and(|r| r.code().is_some()),
                DbKind::Anonymous => item.decode::<AnonymousRecord>()?.is_some_and(|r| r.any()),
            };
        }
        let v6 = self.reader.metadata().ip_version == 6;
        for ip in PROBES.iter().filter_map(|s| s.parse::<IpAddr>().ok()) {
            if ip.is_ipv6() && !v6 {
                continue;
            }
            let res = self.reader.lookup(ip)?;
            match kind {
                DbKind::Asn => res.decode::<AsnRecord>().map(drop)?,
                DbKind::Country => res.decode::<CountryRecord>().map(drop)?,
                DbKind::Anonymous => res.decode::<AnonymousRecord>().map(drop)?,
            }
        }
        Ok(found)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// The address to look up: canonical, and none for IPv6 in an IPv4-only database.
    fn target(&self, ip: IpAddr) -> Option<IpAddr> {
        let ip = ip.to_canonical();
        (ip.is_ipv4() || self.reader.metadata().ip_version == 6).then_some(ip)
    }

    /// AS number and organisation. Lookup errors (a corrupt record) count as no data.
    pub(crate) fn asn(&self, ip: IpAddr) -> Option<(u32, Option<String>)> {
        let res = self.reader.lookup(self.target(ip)?).ok()?;
        let rec = res.decode::<AsnRecord>().ok()??;
        let asn = rec.autonomous_system_number.filter(|&n| n != 0)?;
        Some((asn, rec.autonomous_system_organization.map(str::to_owned)))
    }

    /// Just the AS number.
    pub(crate) fn asn_number(&self, ip: IpAddr) -> Option<u32> {
        let res = self.reader.lookup(self.target(ip)?).ok()?;
        res.decode::<AsnRecord>()
            .ok()??
            .autonomous_system_number
            .filter(|&n| n != 0)
    }

    /// Country code of the address (else of the block's registration).
    pub(crate) fn country(&self, ip: IpAddr) -> Option<[u8; 2]> {
        let res = self.reader.lookup(self.target(ip)?).ok()?;
        res.decode::<CountryRecord>().ok()??.code()
    }

    /// Latitude, longitude and accuracy radius (km) of the address (City databases).
    pub(crate) fn location(&self, ip: IpAddr) -> Option<mamori_core::verdict::Location> {
        let res = self.reader.lookup(self.target(ip)?).ok()?;
        let l = res.decode::<LocationRecord>().ok()??.location?;
        Some(mamori_core::verdict::Location::new(
            l.latitude?,
            l.longitude?,
            l.accuracy_radius.unwrap_or(0),
        ))
    }

    /// Anonymous-IP flags.
    pub(crate) fn anonymous(&self, ip: IpAddr) -> Option<AnonymousRecord> {
        let res = self.reader.lookup(self.target(ip)?).ok()?;
        res.decode::<AnonymousRecord>().ok()?
    }
}
