//! The judgement on a sensitive procedure: was it made by the customer?
//!
//! A literal "IP seen in the past year" check is useless against takeovers: the attacker's own
//! login minutes before the change puts its IP into the history. So familiarity is judged on the
//! history that predates the procedure's *session* (the run of the customer's events with gaps under
//! 30 minutes that ends at the procedure), and history that only began in the last weeks (an
//! attacker who logs in on several days before striking) is "recent", not "established". Networks
//! (/24, /48, ASN) and devices count as well as exact IPs, so dynamic home IPs, carrier NAT and
//! moves mostly stay `ok`; the IP's use by other customers and by failed logins across many
//! accounts, and hosting/VPN networks when IP data is configured, weigh against.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::history::{Access, IpActivity, Windows};
use crate::net::{ip_key, key_ip, prefix_key};

/// What IP data says about an address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IpFacts {
    pub asn: Option<u32>,
    pub org: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: Option<String>,
    /// On a list of VPN provider networks, or flagged as VPN / anonymous proxy.
    pub vpn: bool,
    /// On a list of hosting/datacenter networks, or flagged as hosting provider.
    pub hosting: bool,
    /// A Tor exit or public proxy per the Anonymous IP database.
    pub anonymous: bool,
    /// Where the address is, per a City database.
    pub location: Option<Location>,
}

/// A place per a City database: millionths of a degree, and the radius of its uncertainty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Location {
    pub latitude_e6: i32,
    pub longitude_e6: i32,
    pub accuracy_km: u16,
}

impl Location {
    pub fn new(latitude: f64, longitude: f64, accuracy_km: u16) -> Self {
        Location {
            latitude_e6: (latitude * 1e6).round() as i32,
            longitude_e6: (longitude * 1e6).round() as i32,
            accuracy_km,
        }
    }

    /// Great-circle distance in km (haversine, mean Earth radius).
    pub fn km_to(&self, other: &Location) -> f64 {
        let rad = |e6: i32| f64::from(e6) * 1e-6 * std::f64::consts::PI / 180.0;
        let (p1, p2) = (rad(self.latitude_e6), rad(other.latitude_e6));
        let dp = p2 - p1;
        let dl = rad(other.longitude_e6) - rad(self.longitude_e6);
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * 6371.0088 * a.sqrt().min(1.0).asin()
    }
}

/// A source of IP data (ASN, country, VPN/hosting lists). [`NoIntel`] when none is configured.
pub trait IpIntel: Send + Sync {
    fn facts(&self, ip: IpAddr) -> IpFacts;
    /// Just the AS number (implementations may answer this faster than [`IpIntel::facts`]).
    fn asn(&self, ip: IpAddr) -> Option<u32> {
        self.facts(ip).asn
    }
    /// Just the location (likewise).
    fn location(&self, ip: IpAddr) -> Option<Location> {
        self.facts(ip).location
    }
    /// Whether any data is configured at all.
    fn is_configured(&self) -> bool {
        true
    }
}

/// No IP data configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoIntel;

impl IpIntel for NoIntel {
    fn facts(&self, _: IpAddr) -> IpFacts {
        IpFacts::default()
    }
    fn asn(&self, _: IpAddr) -> Option<u32> {
        None
    }
    fn is_configured(&self) -> bool {
        false
    }
}

/// The outcome of an investigation row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    Review,
    Suspicious,
}

impl Verdict {
    pub const ALL: [Verdict; 3] = [Verdict::Ok, Verdict::Review, Verdict::Suspicious];
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Review => "review",
            Verdict::Suspicious => "suspicious",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How well the customer knows a value (an IP, a network, a device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Familiarity {
    /// Not in the history before the session.
    New,
    /// Only in the weeks just before the session.
    Recent,
    /// Seen before that.
    Established,
}

/// Reason codes. Stable: reports and downstream rules refer to them.
pub mod reason {
    pub const NO_HISTORY: &str = "no_history";
    pub const NEW_ACCOUNT: &str = "new_account";
    pub const DORMANT_ACCOUNT: &str = "dormant_account";
    pub const YOUNG_ACCOUNT: &str = "young_account";
    pub const NEW_IP: &str = "new_ip";
    pub const RECENT_IP: &str = "recent_ip";
    pub const NEW_NETWORK: &str = "new_network";
    pub const NEW_ASN: &str = "new_asn";
    pub const NEW_DEVICE: &str = "new_device";
    pub const RECENT_DEVICE: &str = "recent_device";
    pub const NO_DEVICE: &str = "no_device";
    pub const SHARED_IP: &str = "shared_ip";
    pub const FAILED_LOGINS_MANY_ACCOUNTS: &str = "failed_logins_many_accounts";
    pub const HOSTING_IP: &str = "hosting_ip";
    pub const VPN_IP: &str = "vpn_ip";
    pub const ANONYMOUS_IP: &str = "anonymous_ip";
    pub const FOREIGN_COUNTRY: &str = "foreign_country";
    pub const CREDENTIAL_CHANGE_IN_SESSION: &str = "credential_change_in_session";
    pub const FAILED_LOGIN_IN_SESSION: &str = "failed_login_in_session";

    /// Every code with its meaning, for reports.
    pub const ALL: &[(&str, &str)] = &[
        (
            NO_HISTORY,
            "the customer has no history before this session",
        ),
        (
            NEW_IP,
            "the IP is not in the customer's history before this session",
        ),
        (
            RECENT_IP,
            "the IP first appeared in the customer's history only in the last weeks",
        ),
        (
            NEW_NETWORK,
            "the IP's /24 (/48) network is not in the customer's history",
        ),
        (
            NEW_ASN,
            "the IP's AS (provider) is not in the customer's history",
        ),
        (
            NEW_DEVICE,
            "the device is not in the customer's history before this session",
        ),
        (
            RECENT_DEVICE,
            "the device first appeared only in the last weeks",
        ),
        (NO_DEVICE, "no device id was recorded"),
        (
            SHARED_IP,
            "other customers used this IP in the last 30 days",
        ),
        (
            FAILED_LOGINS_MANY_ACCOUNTS,
            "failed logins on several accounts from this IP",
        ),
        (HOSTING_IP, "the IP belongs to a hosting/datacenter network"),
        (VPN_IP, "the IP belongs to a VPN provider"),
        (ANONYMOUS_IP, "the IP is a Tor exit or public proxy"),
        (
            FOREIGN_COUNTRY,
            "the IP is abroad while the customer's history is domestic",
        ),
        (
            CREDENTIAL_CHANGE_IN_SESSION,
            "credentials or contact data were changed in this session",
        ),
    ];
}

/// Thresholds of the judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Other customers on the IP in 30 days from which it counts as shared.
    pub shared_ip_customers: u32,
    /// Accounts with failed logins from the IP in 30 days from which it looks like stuffing.
    pub failed_login_accounts: u32,
    /// Distinct days an IP or device must have been seen on to be established even if recent.
    pub established_days: u32,
    /// The customer's home country, for the foreign-country signal.
    pub home_country: [u8; 2],
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            shared_ip_customers: 3,
            failed_login_accounts: 3,
            established_days: 8,
            home_country: *b"JP",
        }
    }
}

/// The procedure being judged.
#[derive(Debug, Clone, Copy)]
pub struct Subject {
    pub at: i64,
    pub ip: Option<IpAddr>,
    pub device: Option<u64>,
}

/// The judgement with the features behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Judgement {
    pub verdict: Verdict,
    pub reasons: Vec<&'static str>,
    /// Start of the procedure's session (UTC µs).
    pub session_start: i64,
    pub ip: Option<Familiarity>,
    pub network: Option<Familiarity>,
    pub device: Option<Familiarity>,
    /// `None` when no IP data is configured or the IP's AS is unknown.
    pub asn_known: Option<bool>,
    pub facts: IpFacts,
}

/// The start of the session that ends at `t`: walk back over the customer's events while the gaps
/// stay under `w.session_gap`. `accesses` may hold anything; only events before `t` count.
pub fn session_start(t: i64, accesses: &[Access], w: &Windows) -> i64 {
    let mut times: Vec<i64> = accesses
        .iter()
        .filter(|a| a.at < t && a.at >= t - w.history)
        .map(|a| a.at)
        .collect();
    times.sort_unstable();
    let mut start = t;
    for &at in times.iter().rev() {
        if start - at <= w.session_gap {
            start = at;
        } else {
            break;
        }
    }
    start
}

/// Occurrences of one value in the baseline: when first, and on which Asia/Tokyo days.
#[derive(Default)]
struct Seen {
    first: Option<i64>,
    days: Vec<i64>,
}

impl Seen {
    fn add(&mut self, at: i64) {
        self.first = Some(self.first.map_or(at, |f| f.min(at)));
        self.days.push(crate::time::tokyo_day(at));
    }

    fn familiarity(mut self, cutoff: i64, policy: &Policy) -> Familiarity {
        let Some(first) = self.first else {
            return Familiarity::New;
        };
        self.days.sort_unstable();
        self.days.dedup();
        if established(first, self.days.len(), cutoff, policy) {
            Familiarity::Established
        } else {
            Familiarity::Recent
        }
    }
}

fn established(first: i64, days: usize, cutoff: i64, policy: &Policy) -> bool {
    first < cutoff || days as u32 >= policy.established_days
}

/// Judges a procedure from the customer's accesses (any order; events of other customers must not
/// be included), what happened on its IP, and IP data.
pub fn judge(
    subject: &Subject,
    accesses: &[Access],
    activity: &IpActivity,
    intel: &dyn IpIntel,
    w: &Windows,
    policy: &Policy,
) -> Judgement {
    let t = subject.at;
    let start = session_start(t, accesses, w);
    let cutoff = start - w.established;
    let key = subject.ip.map(ip_key);
    let net = key.map(prefix_key);
    // Only the subject's IP, network and device are looked up; the baseline's IPs are kept for
    // the AS and country questions, which most judgements never ask.
    let (mut ip_seen, mut net_seen, mut dev_seen) =
        (Seen::default(), Seen::default(), Seen::default());
    let mut baseline_ips: Vec<(u128, i64)> = Vec::new();
    let mut baseline = 0usize;
    let mut settled = false;
    let mut dormant = false;
    let mut credential_change = false;
    let mut session_failures = false;
    for a in accesses {
        if a.at >= t {
            continue;
        }
        if !a.kind.counts_in_history() {
            session_failures |= a.at >= start;
            continue;
        }
        if a.at < t - w.history {
            dormant = true;
            continue;
        }
        if a.at >= start {
            credential_change |= a.kind.is_credential_change();
            continue;
        }
        baseline += 1;
        settled |= a.at < cutoff;
        if let Some(ip) = a.ip {
            baseline_ips.push((ip, a.at));
            if Some(ip) == key {
                ip_seen.add(a.at);
            }
            if Some(prefix_key(ip)) == net {
                net_seen.add(a.at);
            }
        }
        if a.device.is_some() && a.device == subject.device {
            dev_seen.add(a.at);
        }
    }

    // A new account whose whole history is recent has nothing older to compare with: what it
    // has met, it knows. (Not so a dormant account woken in the last weeks: that is the
    // patient attacker's favourite.)
    let young = baseline > 0 && !settled && !dormant;
    let cutoff = if young { i64::MAX } else { cutoff };
    let ip_f = key.map(|_| ip_seen.familiarity(cutoff, policy));
    let net_f = key.map(|_| net_seen.familiarity(cutoff, policy));
    let dev_f = subject.device.map(|_| dev_seen.familiarity(cutoff, policy));
    let facts = subject.ip.map(|ip| intel.facts(ip)).unwrap_or_default();
    let asn_known = match (facts.asn, intel.is_configured()) {
        (Some(asn), true) => {
            // The established IPs of the baseline, one by one.
            baseline_ips.sort_unstable();
            Some(baseline_ips.chunk_by(|a, b| a.0 == b.0).any(|uses| {
                let mut days: Vec<i64> = uses.iter().map(|u| crate::time::tokyo_day(u.1)).collect();
                days.dedup();
                established(uses[0].1, days.len(), cutoff, policy)
                    && intel.asn(key_ip(uses[0].0)) == Some(asn)
            }))
        }
        _ => None,
    };
    let foreign = facts
        .country
        .as_deref()
        .is_some_and(|c| c.as_bytes() != policy.home_country)
        && {
            baseline_ips.sort_unstable();
            baseline_ips.dedup_by_key(|u| u.0);
            !baseline_ips.iter().any(|(k, _)| {
                intel
                    .facts(key_ip(*k))
                    .country
                    .is_some_and(|c| c.as_bytes() != policy.home_country)
            })
        };

    let mut reasons = Vec::new();
    let mut push = |cond: bool, r: &'static str| {
        if cond {
            reasons.push(r)
        }
    };
    let established = |f: Option<Familiarity>| f == Some(Familiarity::Established);
    push(baseline == 0, reason::NO_HISTORY);
    let new_account = baseline == 0 && !dormant;
    push(new_account, reason::NEW_ACCOUNT);
    push(baseline == 0 && dormant, reason::DORMANT_ACCOUNT);
    push(young, reason::YOUNG_ACCOUNT);
    push(ip_f == Some(Familiarity::New), reason::NEW_IP);
    push(ip_f == Some(Familiarity::Recent), reason::RECENT_IP);
    push(net_f == Some(Familiarity::New), reason::NEW_NETWORK);
    push(asn_known == Some(false), reason::NEW_ASN);
    push(dev_f == Some(Familiarity::New), reason::NEW_DEVICE);
    push(dev_f == Some(Familiarity::Recent), reason::RECENT_DEVICE);
    push(subject.ip.is_some() && dev_f.is_none(), reason::NO_DEVICE);
    let shared = activity.other_customers >= policy.shared_ip_customers;
    push(shared, reason::SHARED_IP);
    // Failed logins on several accounts, and on most of the accounts the IP touched: carrier NAT
    // puts many honest customers (and their typos) behind one address; stuffing mostly fails.
    let stuffing = activity.failed_login_accounts >= policy.failed_login_accounts
        && 2 * activity.failed_login_accounts > activity.other_customers + 1;
    push(stuffing, reason::FAILED_LOGINS_MANY_ACCOUNTS);
    push(facts.hosting, reason::HOSTING_IP);
    push(facts.vpn, reason::VPN_IP);
    push(facts.anonymous, reason::ANONYMOUS_IP);
    push(foreign, reason::FOREIGN_COUNTRY);
    push(credential_change, reason::CREDENTIAL_CHANGE_IN_SESSION);
    push(session_failures, reason::FAILED_LOGIN_IN_SESSION);

    let anonymising = facts.hosting || facts.vpn || facts.anonymous;
    // Evidence about the access itself, whatever the history says.
    let corroborating = stuffing || anonymising || foreign || credential_change || session_failures;
    let verdict = if subject.ip.is_none() {
        // Support center and paper: identity was checked by staff, not by us.
        Verdict::Ok
    } else if baseline == 0 {
        // Nothing to compare with: judge the access alone. A dormant account woken from a
        // stranger's address is a classic target; a first session is usually a new customer
        // (until account records tell the two apart, an account opened long ago and never used
        // looks the same).
        match (dormant, stuffing || anonymising, corroborating) {
            (_, true, _) => Verdict::Suspicious,
            (true, _, true) => Verdict::Suspicious,
            (true, _, false) | (false, _, true) => Verdict::Review,
            (false, _, false) => Verdict::Ok,
        }
    } else {
        let device_established = established(dev_f);
        let ip_established = established(ip_f);
        // A stranger: neither the IP nor the device established (nobody the customer had been,
        // or someone who prepared the account for days). Unfamiliarity alone asks for review
        // (a new AS too: customers switch carriers and take up phones); with evidence against
        // the access itself it is suspicious. The customer's AS does not clear it: an attacker
        // may sit inside the victim's own ISP.
        let stranger = !ip_established && !device_established;
        if (stuffing && !device_established) || (stranger && corroborating) {
            Verdict::Suspicious
        } else if stranger || (corroborating && !device_established) || stuffing {
            // An established device abroad or behind a VPN is the customer travelling or
            // private; a stuffing address is worth a look whoever it seems to be.
            Verdict::Review
        } else {
            Verdict::Ok
        }
    };
    Judgement {
        verdict,
        reasons,
        session_start: start,
        ip: ip_f,
        network: net_f,
        device: dev_f,
        asn_known,
        facts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Channel, Kind};
    use crate::history::device_hash;
    use crate::time::{DAY_US, MINUTE_US};

    const T: i64 = 1_600_262_700_000_000;

    fn a(days_ago: f64, kind: Kind, ip: &str, dev: &str) -> Access {
        Access {
            at: T - (days_ago * DAY_US as f64) as i64,
            kind,
            channel: Channel::Web,
            ip: Some(ip_key(ip.parse().unwrap())),
            device: Some(device_hash(dev)),
        }
    }

    fn honest_year(ip: &str, dev: &str) -> Vec<Access> {
        (0..60)
            .map(|i| a(300.0 - i as f64 * 5.0, Kind::Login, ip, dev))
            .collect()
    }

    fn judge_at(ip: &str, dev: &str, h: &[Access], act: IpActivity) -> Judgement {
        let s = Subject {
            at: T,
            ip: Some(ip.parse().unwrap()),
            device: Some(device_hash(dev)),
        };
        judge(
            &s,
            h,
            &act,
            &NoIntel,
            &Windows::default(),
            &Policy::default(),
        )
    }

    #[test]
    fn the_customer_at_home_is_ok() {
        let h = honest_year("198.51.100.10", "pc");
        let j = judge_at("198.51.100.10", "pc", &h, IpActivity::default());
        assert_eq!(j.verdict, Verdict::Ok, "{j:?}");
        assert!(j.reasons.is_empty());
    }

    #[test]
    fn the_attackers_own_login_does_not_make_the_ip_familiar() {
        let mut h = honest_year("198.51.100.10", "pc");
        h.push(Access {
            at: T - 5 * MINUTE_US,
            ..a(0.0, Kind::Login, "203.0.113.66", "evil")
        });
        let j = judge_at("203.0.113.66", "evil", &h, IpActivity::default());
        // A stranger: flagged for review on unfamiliarity alone…
        assert_eq!(j.verdict, Verdict::Review, "{j:?}");
        assert!(j.reasons.contains(&reason::NEW_IP));
        assert!(j.reasons.contains(&reason::NEW_DEVICE));
        assert_eq!(j.session_start, T - 5 * MINUTE_US);
        // …and suspicious once the session changes the password.
        h.push(Access {
            at: T - 2 * MINUTE_US,
            ..a(0.0, Kind::PasswordChange, "203.0.113.66", "evil")
        });
        let j = judge_at("203.0.113.66", "evil", &h, IpActivity::default());
        assert_eq!(j.verdict, Verdict::Suspicious, "{j:?}");
        assert!(j.reasons.contains(&reason::CREDENTIAL_CHANGE_IN_SESSION));
    }

    #[test]
    fn a_patient_attacker_is_recent_not_established() {
        let mut h = honest_year("198.51.100.10", "pc");
        for d in [9.0, 6.0, 3.0] {
            h.push(a(d, Kind::Login, "203.0.113.66", "evil"));
        }
        let j = judge_at("203.0.113.66", "evil", &h, IpActivity::default());
        assert_eq!(j.verdict, Verdict::Review, "{j:?}");
        assert!(j.reasons.contains(&reason::RECENT_IP));
        assert!(j.reasons.contains(&reason::RECENT_DEVICE));
        // A failed login opening the session corroborates.
        h.push(Access {
            at: T - 3 * MINUTE_US,
            ..a(0.0, Kind::LoginFailed, "203.0.113.66", "evil")
        });
        let j = judge_at("203.0.113.66", "evil", &h, IpActivity::default());
        assert_eq!(j.verdict, Verdict::Suspicious, "{j:?}");
        assert!(j.reasons.contains(&reason::FAILED_LOGIN_IN_SESSION));
    }

    #[test]
    fn a_move_with_the_same_device_is_ok_and_carrier_nat_too() {
        let h = honest_year("198.51.100.10", "pc");
        let j = judge_at("192.0.2.44", "pc", &h, IpActivity::default());
        assert_eq!(j.verdict, Verdict::Ok, "{j:?}");
        assert!(j.reasons.contains(&reason::NEW_IP));
        let nat = IpActivity {
            other_customers: 40,
            logins: 200,
            failed_login_accounts: 1,
            failed_logins: 1,
        };
        let j = judge_at("198.51.100.10", "pc", &h, nat);
        assert_eq!(j.verdict, Verdict::Ok, "{j:?}");
        assert!(j.reasons.contains(&reason::SHARED_IP));
    }

    #[test]
    fn typos_behind_carrier_nat_are_not_stuffing() {
        let h = honest_year("198.51.100.10", "pc");
        let nat = IpActivity {
            other_customers: 25,
            failed_login_accounts: 4,
            failed_logins: 5,
            logins: 300,
        };
        let j = judge_at("198.51.100.10", "new-phone", &h, nat);
        assert!(
            !j.reasons.contains(&reason::FAILED_LOGINS_MANY_ACCOUNTS),
            "{j:?}"
        );
        assert_eq!(j.verdict, Verdict::Ok, "{j:?}");
    }

    #[test]
    fn stuffing_ip_with_a_new_device_is_suspicious() {
        let h = honest_year("198.51.100.10", "pc");
        let act = IpActivity {
            other_customers: 12,
            failed_login_accounts: 30,
            failed_logins: 90,
            logins: 2,
        };
        let j = judge_at("198.51.100.10", "evil", &h, act);
        assert_eq!(j.verdict, Verdict::Suspicious, "{j:?}");
    }

    #[test]
    fn new_dormant_and_young_accounts() {
        // The first session of a new account.
        let j = judge_at("192.0.2.1", "pc", &[], IpActivity::default());
        assert_eq!(j.verdict, Verdict::Ok, "{j:?}");
        assert!(
            j.reasons.contains(&reason::NO_HISTORY) && j.reasons.contains(&reason::NEW_ACCOUNT)
        );
        let stuffing = IpActivity {
            failed_login_accounts: 9,
            ..IpActivity::default()
        };
        assert_eq!(
            judge_at("192.0.2.1", "pc", &[], stuffing).verdict,
            Verdict::Suspicious
        );
        // Nothing in the last year, but older events: dormant.
        let old = [a(400.0, Kind::Login, "198.51.100.10", "pc")];
        let j = judge_at("192.0.2.1", "evil", &old, IpActivity::default());
        assert_eq!(j.verdict, Verdict::Review, "{j:?}");
        assert!(j.reasons.contains(&reason::DORMANT_ACCOUNT));
        assert_eq!(
            judge_at("192.0.2.1", "evil", &old, stuffing).verdict,
            Verdict::Suspicious
        );
        // An account ten days old: what it met, it knows.
        let young: Vec<Access> = [9.0, 6.0, 3.0]
            .iter()
            .map(|d| a(*d, Kind::Login, "198.51.100.10", "pc"))
            .collect();
        let j = judge_at("198.51.100.10", "pc", &young, IpActivity::default());
        assert_eq!(j.verdict, Verdict::Ok, "{j:?}");
        assert!(j.reasons.contains(&reason::YOUNG_ACCOUNT));
        // But a dormant account prepared over the last weeks is not young.
        let mut woken = young.clone();
        woken.push(a(400.0, Kind::Login, "192.0.2.9", "old-pc"));
        let j = judge_at("198.51.100.10", "pc", &woken, IpActivity::default());
        assert_eq!(j.verdict, Verdict::Review, "{j:?}");
        assert!(!j.reasons.contains(&reason::YOUNG_ACCOUNT));
    }
}
