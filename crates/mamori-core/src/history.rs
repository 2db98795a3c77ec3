//! A customer's access history and the literal columns an auditor recomputes with SQL.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::event::{Channel, Kind};
use crate::net::prefix_key;
use crate::time::{DAY_US, MINUTE_US, tokyo_day};

/// One past event of a customer, reduced to what history questions need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// UTC microseconds.
    pub at: i64,
    pub kind: Kind,
    pub channel: Channel,
    /// [`crate::net::ip_key`] of the IP, when there is one.
    pub ip: Option<u128>,
    /// [`device_hash`] of the device id, when there is one.
    pub device: Option<u64>,
}

/// A stable 64-bit hash of a device id (SipHash with fixed keys: the same in every process).
#[inline]
pub fn device_hash(device_id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    device_id.hash(&mut h);
    h.finish()
}

/// The windows of history questions. Defaults are the investigation contract's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// How far back a customer's own history reaches (365 days).
    pub history: i64,
    /// How far back "other customers on this IP" reaches (30 days).
    pub others: i64,
    /// Events closer together than this belong to one session (30 minutes).
    pub session_gap: i64,
    /// History older than this before the procedure's session is "established" (30 days).
    pub established: i64,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            history: 365 * DAY_US,
            others: 30 * DAY_US,
            session_gap: 30 * MINUTE_US,
            established: 30 * DAY_US,
        }
    }
}

/// The literal columns of a procedure: exact, definitional, recomputable with SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Literal {
    /// The procedure's IP occurs in the customer's history before it.
    pub ip_seen_before: bool,
    /// Its /24 (/48) occurs there.
    pub prefix_seen_before: bool,
    /// The earliest such occurrence of the IP.
    pub ip_first_seen_at: Option<i64>,
    /// Distinct Asia/Tokyo dates on which the IP occurs there.
    pub ip_days_seen: u32,
    /// Size of the history: the customer's events but `login_failed` in `[t − 365 d, t)`.
    pub history_events: u32,
    /// Distinct other customers with any event from the IP in `[t − 30 d, t)`.
    pub other_customers_30d: u32,
}

/// Whether an access belongs to the history of a procedure at `t`.
pub fn in_history(a: &Access, t: i64, w: &Windows) -> bool {
    a.kind.counts_in_history() && a.at < t && a.at >= t - w.history
}

/// Computes the literal columns from the customer's accesses (any order, any span: those outside
/// the window are ignored) and the count of other customers on the IP.
pub fn literal(
    t: i64,
    ip: Option<u128>,
    accesses: &[Access],
    other_customers_30d: u32,
    w: &Windows,
) -> Literal {
    let mut lit = Literal {
        other_customers_30d,
        ..Literal::default()
    };
    let prefix = ip.map(prefix_key);
    let mut days = HashSet::new();
    for a in accesses.iter().filter(|a| in_history(a, t, w)) {
        lit.history_events += 1;
        let Some(aip) = a.ip else { continue };
        if Some(aip) == ip {
            lit.ip_seen_before = true;
            lit.ip_first_seen_at = Some(lit.ip_first_seen_at.map_or(a.at, |f| f.min(a.at)));
            days.insert(tokyo_day(a.at));
        }
        if Some(prefix_key(aip)) == prefix {
            lit.prefix_seen_before = true;
        }
    }
    lit.ip_days_seen = days.len() as u32;
    lit
}

/// How often one value (an IP, a network, a device) occurs in a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub first: i64,
    pub last: i64,
    /// Distinct Asia/Tokyo dates.
    pub days: u32,
    pub events: u32,
}

/// A customer's history before `t`, summarised per IP, network and device.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub events: u32,
    pub ips: std::collections::BTreeMap<u128, Seen>,
    pub networks: std::collections::BTreeMap<u128, Seen>,
    pub devices: std::collections::BTreeMap<u64, Seen>,
}

/// Summarises the history of a customer before `t` (the same window as [`literal`]).
pub fn profile(t: i64, accesses: &[Access], w: &Windows) -> Profile {
    use std::collections::{BTreeMap, HashMap};
    fn add<K: Ord + Copy + Hash>(
        m: &mut BTreeMap<K, Seen>,
        d: &mut HashMap<K, HashSet<i64>>,
        k: K,
        at: i64,
    ) {
        let s = m.entry(k).or_insert(Seen {
            first: at,
            last: at,
            days: 0,
            events: 0,
        });
        s.first = s.first.min(at);
        s.last = s.last.max(at);
        s.events += 1;
        let days = d.entry(k).or_default();
        days.insert(tokyo_day(at));
        s.days = days.len() as u32;
    }
    let mut p = Profile::default();
    let (mut di, mut dn, mut dd) = (HashMap::new(), HashMap::new(), HashMap::new());
    for a in accesses.iter().filter(|a| in_history(a, t, w)) {
        p.events += 1;
        if let Some(ip) = a.ip {
            add(&mut p.ips, &mut di, ip, a.at);
            add(&mut p.networks, &mut dn, prefix_key(ip), a.at);
        }
        if let Some(d) = a.device {
            add(&mut p.devices, &mut dd, d, a.at);
        }
    }
    p
}

/// What happened on an IP in the 30 days before a procedure, across all customers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IpActivity {
    /// Distinct customers other than the procedure's with any event from the IP.
    pub other_customers: u32,
    /// Distinct customers (the procedure's included) with a `login_failed` from the IP.
    pub failed_login_accounts: u32,
    /// `login_failed` events from the IP.
    pub failed_logins: u32,
    /// Successful `login` events from the IP.
    pub logins: u32,
}

/// One customer's use of an IP: a single event, or all its events on the IP during one UTC day
/// (then `at` is the day's start), as counts of logins and failed logins. A day of uses may stand
/// for its events only where no window edge falls inside that day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpUse<C> {
    pub at: i64,
    pub customer: C,
    pub logins: u32,
    pub failed_logins: u32,
}

impl<C> IpUse<C> {
    /// The use of one event.
    pub fn event(at: i64, customer: C, kind: Kind) -> Self {
        IpUse {
            at,
            customer,
            logins: u32::from(kind == Kind::Login),
            failed_logins: u32::from(kind == Kind::LoginFailed),
        }
    }
}

/// Summarises the uses of an IP already restricted to the window.
pub fn ip_activity<'a, C: Eq + Hash + 'a>(
    customer: &C,
    uses: impl IntoIterator<Item = &'a IpUse<C>>,
) -> IpActivity {
    // foldhash: these sets are built on every assessment, SipHash's cost showed.
    let mut others = foldhash::HashSet::default();
    let mut failed = foldhash::HashSet::default();
    let mut act = IpActivity::default();
    for u in uses {
        if u.customer != *customer {
            others.insert(&u.customer);
        }
        if u.failed_logins > 0 {
            failed.insert(&u.customer);
        }
        act.failed_logins += u.failed_logins;
        act.logins += u.logins;
    }
    act.other_customers = others.len() as u32;
    act.failed_login_accounts = failed.len() as u32;
    act
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::ip_key;
    use crate::time::parse_rfc3339;

    fn acc(at: &str, kind: Kind, ip: &str) -> Access {
        Access {
            at: parse_rfc3339(at).unwrap(),
            kind,
            channel: Channel::Web,
            ip: Some(ip_key(ip.parse().unwrap())),
            device: None,
        }
    }

    #[test]
    fn literal_columns_follow_the_contract() {
        let w = Windows::default();
        let t = parse_rfc3339("2020-09-16T22:25:00+09:00").unwrap();
        let ip = Some(ip_key("203.0.113.7".parse().unwrap()));
        let h = [
            acc("2019-09-10T10:00:00+09:00", Kind::Login, "203.0.113.7"), // older than 365 d
            acc("2020-01-05T23:30:00+09:00", Kind::Login, "203.0.113.7"),
            acc("2020-01-05T23:50:00+09:00", Kind::Trade, "203.0.113.7"), // same Tokyo day
            acc("2020-01-06T00:10:00+09:00", Kind::Logout, "203.0.113.7"), // next Tokyo day
            acc("2020-05-01T10:00:00+09:00", Kind::Login, "203.0.113.99"), // same /24
            acc(
                "2020-09-16T22:20:00+09:00",
                Kind::LoginFailed,
                "203.0.113.7",
            ), // not history
            acc("2020-09-16T22:25:00+09:00", Kind::Login, "203.0.113.7"), // not before t
            acc("2020-09-10T10:00:00+09:00", Kind::Login, "198.51.100.1"),
        ];
        let l = literal(t, ip, &h, 2, &w);
        assert!(l.ip_seen_before);
        assert!(l.prefix_seen_before);
        assert_eq!(l.ip_first_seen_at, Some(h[1].at));
        assert_eq!(l.ip_days_seen, 2);
        assert_eq!(l.history_events, 5);
        assert_eq!(l.other_customers_30d, 2);

        let l = literal(t, Some(ip_key("192.0.2.1".parse().unwrap())), &h, 0, &w);
        assert!(!l.ip_seen_before && !l.prefix_seen_before);
        assert_eq!((l.ip_first_seen_at, l.ip_days_seen), (None, 0));

        let p = profile(t, &h, &w);
        assert_eq!(p.events, 5);
        let key = ip_key("203.0.113.7".parse().unwrap());
        let s = &p.ips[&key];
        assert_eq!((s.first, s.days, s.events), (h[1].at, 2, 3));
        assert_eq!(p.networks[&prefix_key(key)].events, 4);
    }

    #[test]
    fn ip_activity_counts_distinct_accounts() {
        let ev = [
            ("a", Kind::Login),
            ("b", Kind::LoginFailed),
            ("b", Kind::LoginFailed),
            ("c", Kind::LoginFailed),
            ("a", Kind::LoginFailed),
        ];
        let uses: Vec<IpUse<&str>> = ev.iter().map(|(c, k)| IpUse::event(0, *c, *k)).collect();
        let act = ip_activity(&"a", &uses);
        assert_eq!(act.other_customers, 2);
        assert_eq!(act.failed_login_accounts, 3);
        assert_eq!(act.failed_logins, 4);
        assert_eq!(act.logins, 1);
        // A day of uses counts as the events it stands for; a use with no login still counts
        // its customer.
        let day = [
            IpUse::event(0, "a", Kind::Login),
            IpUse {
                at: 0,
                customer: "b",
                logins: 0,
                failed_logins: 2,
            },
            IpUse::event(0, "c", Kind::LoginFailed),
            IpUse::event(0, "a", Kind::LoginFailed),
            IpUse::event(0, "d", Kind::Trade),
        ];
        let day_act = ip_activity(&"a", &day);
        assert_eq!(day_act.other_customers, 3);
        assert_eq!(
            (
                day_act.failed_login_accounts,
                day_act.failed_logins,
                day_act.logins
            ),
            (3, 4, 1)
        );
    }

    #[test]
    fn device_hash_is_stable() {
        assert_eq!(device_hash("d1"), device_hash("d1"));
        assert_ne!(device_hash("d1"), device_hash("d2"));
    }
}
