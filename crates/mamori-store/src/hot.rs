//! The server's hot cache: customers' recent events, IPs' recent uses and the resolutions' marks
//! held in memory, so that an assessment reads nothing from the store once its customer and IP
//! have been seen.
//!
//! Every write the cache learns of is **applied** in turn and numbered: the events are added to
//! the customers and IPs held, except to those whose read already saw the write ([`Seen`]), and
//! kept a while for fills.
//! - **Fills** (a customer or IP read on a miss) run beside the writes: a fill notes the number
//!   of the last write applied, then reads the rows and what its read saw (SQLite: the
//!   `store_meta.seq` of the snapshot; PostgreSQL: the snapshot itself). What it holds then gets
//!   the writes applied after that number that the read did not see; a write applied before it
//!   had committed before the read began, so the read saw it. A fill whose later writes are no
//!   longer kept is dropped (it answers its own question).
//! - **SQLite**: the writes of this process, after each commit (seq `s`, from `store_meta.seq`,
//!   which every write transaction of every process increments, migration 0007), still holding
//!   the writer. Writes of other processes (an import into the store while it serves) show as a
//!   seq this process did not make: found by its next write, or by a reader that polls (every
//!   [`POLL`]), they empty the cache. Another process's events thus reach decisions within about
//!   [`POLL`].
//! - **PostgreSQL** (several nodes): the writes of this node after each commit, by transaction
//!   id; every other process's as the change feed brings them (`crate::postgres::feed`): each
//!   transaction that stores events also writes them to the feed table, and each node reads the
//!   transactions committed since its last look, every 10 ms (`TAIL_EVERY` there).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt};
use mamori_core::assess::{Marks, Past};
use mamori_core::history::{IpActivity, IpUse};
use mamori_core::net::{prefix_key, prefix_range};
use mamori_core::time::DAY_US;

use crate::sqlite::utc_day;

/// Writes of this process kept for fills that read before them, and their events at most (a
/// fill that read before the oldest kept is dropped).
const RECENT_WRITES: usize = 4096;
const RECENT_EVENTS: usize = 100_000;

/// How often a reader checks for other processes' writes.
pub const POLL: Duration = Duration::from_millis(50);

/// Days of events read before the first window asked for, on a miss: a later question about an
/// earlier moment (batches of attempts out of order) is still answered from memory.
pub(crate) const FILL_SLACK_US: i64 = 2 * mamori_core::time::DAY_US;

/// A write whose events the cache applies: a SQLite write transaction by its `store_meta.seq`,
/// or a PostgreSQL one by its transaction id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    Seq(i64),
    Xid(u64),
}

/// The writes a read saw: on SQLite every write up to a `store_meta.seq`; on PostgreSQL those a
/// snapshot saw committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    Seq(i64),
    Snap(Arc<Snapshot>),
}

impl Seen {
    /// Whether the read saw the write.
    pub(crate) fn includes(&self, w: Write) -> bool {
        match (self, w) {
            (Seen::Seq(s), Write::Seq(q)) => q <= *s,
            (Seen::Snap(s), Write::Xid(x)) => s.sees(x),
            // One store never mixes them; a read that cannot tell did not see it.
            _ => false,
        }
    }
}

/// A PostgreSQL snapshot as `pg_current_snapshot()` gives it: every transaction below `xmin` had
/// ended; those from `xmax` on had not started; of those between, `xip` were in progress.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub xmin: u64,
    pub xmax: u64,
    pub xip: Vec<u64>,
}

impl Snapshot {
    /// Parses the text form `xmin:xmax:xip,xip,…`.
    pub fn parse(s: &str) -> Option<Snapshot> {
        let mut parts = s.splitn(3, ':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let xip = match parts.next()? {
            "" => Vec::new(),
            l => l
                .split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<Vec<u64>>>()?,
        };
        (xmin <= xmax).then_some(Snapshot { xmin, xmax, xip })
    }

    /// Whether a committed transaction `x` is visible in the snapshot.
    pub fn sees(&self, x: u64) -> bool {
        x < self.xmin || (x < self.xmax && !self.xip.contains(&x))
    }
}

/// A customer's events from `from` on, in time order (ties in the store's order), as of the read
/// `seen` and the writes applied after it.
#[derive(Debug)]
struct Held {
    from: i64,
    seen: Seen,
    rows: Vec<Past>,
    used: u64,
}

/// A write applied: its number, the write, its events by customer.
type Applied = (u64, Write, Vec<(String, Past)>);

/// A familiar mark: (IP key, device hash, since).
type Familiar = (Option<u128>, Option<u64>, i64);

/// Familiar marks by customer, and confirmed-fraud IPs with their time.
type Resolutions = (HashMap<Box<str>, Vec<Familiar>>, Vec<(u128, i64)>);

/// An IP's uses by UTC day, from `from_day` on: per customer and day (as `ip_seen` counts them),
/// and for some days also event by event (the days a question's window starts or ends inside).
#[derive(Debug)]
struct HeldIp {
    from_day: i64,
    /// The read the days came from.
    seen: Seen,
    days: BTreeMap<i64, IpDay>,
    rows: usize,
    used: u64,
    /// The whole days of the last window asked about, summed up: every assessment on the range
    /// that day asks about the same ones.
    whole: Option<WholeDays>,
}

#[derive(Debug, Default)]
struct IpDay {
    /// (logins, failed logins) by customer.
    customers: HashMap<Arc<str>, (u32, u32)>,
    /// The events and the read they came from.
    events: Option<(Seen, Vec<IpUse<String>>)>,
}

/// An IP's uses over the days `first..=last`, as [`mamori_core::history::ip_activity`] counts them: the customers
/// (with whether they had a failed login), and the sums.
#[derive(Debug)]
struct WholeDays {
    first: i64,
    last: i64,
    customers: HashMap<Arc<str>, bool>,
    failed_accounts: u32,
    logins: u32,
    failed_logins: u32,
}

impl WholeDays {
    fn of(days: &BTreeMap<i64, IpDay>, first: i64, last: i64) -> Self {
        let mut w = WholeDays {
            first,
            last,
            customers: HashMap::new(),
            failed_accounts: 0,
            logins: 0,
            failed_logins: 0,
        };
        if first > last {
            return w;
        }
        for d in days.range(first..=last).map(|(_, d)| d) {
            for (c, &(logins, failed_logins)) in &d.customers {
                w.logins += logins;
                w.failed_logins += failed_logins;
                let failed = w.customers.entry(c.clone()).or_insert(false);
                if failed_logins > 0 && !*failed {
                    *failed = true;
                    w.failed_accounts += 1;
                }
            }
        }
        w
    }
}

/// What the cache lacks to answer a question about an IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IpNeed {
    /// The range's days (from before the window on).
    Days,
    /// The events of this day.
    Events(i64),
}

impl Held {
    /// Adds an event of write `w` unless it is before the rows or their read saw it; returns the
    /// rows added.
    fn apply(&mut self, w: Write, p: &Past) -> usize {
        if p.access.at < self.from || self.seen.includes(w) {
            return 0;
        }
        // After every held event at the same time: the store orders ties by event id, but no
        // rule depends on the order of events at the same microsecond.
        let at = self.rows.partition_point(|q| q.access.at <= p.access.at);
        self.rows.insert(at, *p);
        1
    }
}

impl HeldIp {
    fn new(from_day: i64, seen: Seen, used: u64) -> Self {
        HeldIp {
            from_day,
            seen,
            days: BTreeMap::new(),
            rows: 0,
            used,
            whole: None,
        }
    }

    /// Adds a use of write `w` to the day's counts and events, unless their reads saw it (a
    /// day's events are read after the days, so they saw whatever the days' read saw); returns
    /// the rows added.
    fn apply(&mut self, w: Write, customer: &str, p: &Past) -> usize {
        let day = utc_day(p.access.at);
        if day < self.from_day || self.seen.includes(w) {
            return 0;
        }
        let use_ = IpUse::event(p.access.at, customer.to_owned(), p.access.kind);
        let d = self.days.entry(day).or_insert_with(|| IpDay {
            // A day the IP had no use in the read: its events are the writes' after it.
            events: Some((self.seen.clone(), Vec::new())),
            ..IpDay::default()
        });
        let mut n = 0;
        if self
            .whole
            .as_ref()
            .is_some_and(|w| w.first <= day && day <= w.last)
        {
            self.whole = None;
        }
        let c = d.customers.entry(customer.into()).or_insert_with(|| {
            n += 1;
            (0, 0)
        });
        c.0 += use_.logins;
        c.1 += use_.failed_logins;
        if let Some((read, ev)) = &mut d.events
            && !read.includes(w)
        {
            ev.push(use_);
            n += 1;
        }
        self.rows += n;
        n
    }
}

#[derive(Debug, Default)]
struct State {
    customers: HashMap<Box<str>, Held>,
    /// By (network?, key): an address, or a familiarity network by its first key.
    ips: HashMap<(bool, u128), HeldIp>,
    ip_rows: usize,
    rows: usize,
    tick: u64,
    /// Legitimate resolutions by customer, and confirmed-fraud IPs with their time; `None` until
    /// read (again).
    marks: Option<Resolutions>,
    /// Times the resolutions changed (or the cache was emptied): a read of them begun before
    /// a change is not held.
    marks_changes: u64,
    /// SQLite: `store_meta.seq` after this process's last write added here (or its last check).
    seq: i64,
    /// Writes applied so far (each gets the next number); a fill notes the number before it
    /// reads.
    applied: u64,
    /// The last writes applied, by number, for fills that read before them.
    recent: std::collections::VecDeque<Applied>,
    recent_events: usize,
    /// Writes up to this number are no longer in `recent` (or were cleared): a fill that noted
    /// an earlier number is dropped.
    lost: u64,
    checked: Option<Instant>,
    hits: u64,
    misses: u64,
    cleared: u64,
}

/// Counters for `/metrics` and the logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HotStats {
    pub customers: usize,
    pub rows: usize,
    pub ips: usize,
    pub ip_rows: usize,
    pub hits: u64,
    pub misses: u64,
    /// Times the cache was emptied because another process wrote.
    pub cleared: u64,
}

/// The cache (see the module's documentation).
#[derive(Debug)]
pub struct Hot {
    state: Mutex<State>,
    /// Events held at most; the least recently used customers go first.
    max_rows: usize,
}

impl Hot {
    pub(crate) fn new(max_rows: usize, seq: i64) -> Self {
        Hot {
            state: Mutex::new(State {
                seq,
                checked: Some(Instant::now()),
                ..State::default()
            }),
            max_rows,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Room left for the preload (it stops at three quarters, so that use does not evict at once).
    pub(crate) fn preload_room(&self) -> (bool, bool) {
        let s = self.state();
        let full = self.max_rows - self.max_rows / 4;
        (s.rows < full, s.ip_rows < full)
    }

    pub fn stats(&self) -> HotStats {
        let s = self.state();
        HotStats {
            customers: s.customers.len(),
            rows: s.rows,
            ips: s.ips.len(),
            ip_rows: s.ip_rows,
            hits: s.hits,
            misses: s.misses,
            cleared: s.cleared,
        }
    }

    /// The number of the last write applied: a fill notes it before it reads.
    pub(crate) fn applied(&self) -> u64 {
        self.state().applied
    }

    /// The customer's events with `from ≤ at < to`, when held from `from` or earlier.
    pub(crate) fn past(&self, customer: &str, from: i64, to: i64) -> Option<Vec<Past>> {
        let mut s = self.state();
        s.tick += 1;
        let tick = s.tick;
        let Some(h) = s.customers.get_mut(customer) else {
            s.misses += 1;
            return None;
        };
        if h.from > from {
            s.misses += 1;
            return None;
        }
        h.used = tick;
        let lo = h.rows.partition_point(|p| p.access.at < from);
        let hi = h.rows.partition_point(|p| p.access.at < to);
        let out = h.rows[lo..hi].to_vec();
        s.hits += 1;
        Some(out)
    }

    /// Holds a customer's events read from the store (every event with `at ≥ from`, in order)
    /// by the read `seen`, begun after write number `noted` was applied, with the writes applied
    /// since that it did not see.
    pub(crate) fn fill(&self, customer: &str, from: i64, noted: u64, seen: Seen, rows: Vec<Past>) {
        let mut s = self.state();
        s.tick += 1;
        let mut held = Held {
            from,
            seen,
            rows,
            used: s.tick,
        };
        let Some(later) = Self::since(&s, noted) else {
            return;
        };
        for (w, c, p) in later {
            if c == customer {
                held.apply(w, p);
            }
        }
        let s = &mut *s;
        hold(
            &mut s.customers,
            &mut s.rows,
            customer.into(),
            held,
            self.max_rows,
            |h| (h.used, h.rows.len()),
        );
    }

    /// Adds the events of a committed write to the customers and IPs held (unless their reads
    /// saw it) and keeps them for fills that read before: this process's writes after their
    /// commit, other processes' as the store reports them. A SQLite write's seq is recorded as
    /// the last.
    pub(crate) fn stored(&self, w: Write, events: Vec<(String, Past)>) {
        let mut s = self.state();
        let s = &mut *s;
        if let Write::Seq(seq) = w {
            s.seq = s.seq.max(seq);
            s.checked = Some(Instant::now());
        }
        s.applied += 1;
        for (customer, p) in &events {
            for key in p
                .access
                .ip
                .into_iter()
                .flat_map(|ip| [(false, ip), (true, prefix_key(ip))])
            {
                if let Some(h) = s.ips.get_mut(&key) {
                    s.ip_rows += h.apply(w, customer, p);
                }
            }
            if let Some(h) = s.customers.get_mut(customer.as_str()) {
                s.rows += h.apply(w, p);
            }
        }
        s.recent_events += events.len();
        s.recent.push_back((s.applied, w, events));
        while s.recent.len() > RECENT_WRITES || s.recent_events > RECENT_EVENTS {
            let Some((n, _, old)) = s.recent.pop_front() else {
                break;
            };
            s.lost = n;
            s.recent_events -= old.len();
        }
    }

    /// The writes applied after number `noted`, for a fill that noted it before it read; `None`
    /// if some are no longer kept (the fill is then dropped).
    fn since(s: &State, noted: u64) -> Option<impl Iterator<Item = (Write, &String, &Past)>> {
        if s.lost > noted {
            return None;
        }
        Some(
            s.recent
                .iter()
                .filter(move |(n, _, _)| *n > noted)
                .flat_map(|(_, w, evs)| evs.iter().map(move |(c, p)| (*w, c, p))),
        )
    }

    /// The uses of `ip` that [`crate::HistoryReader::ip_uses`] gives for the window
    /// `[from, to)`: each event of the days an edge falls inside, a customer's whole day for the
    /// others. Or what is missing to know them.
    pub(crate) fn ip_uses(
        &self,
        net: bool,
        ip: u128,
        from: i64,
        to: i64,
    ) -> Result<Vec<(u128, IpUse<String>)>, IpNeed> {
        self.with_uses(net, ip, from, to, |uses| {
            uses.iter()
                .map(|u| {
                    (
                        ip,
                        IpUse {
                            at: u.at,
                            customer: u.customer.to_owned(),
                            logins: u.logins,
                            failed_logins: u.failed_logins,
                        },
                    )
                })
                .collect()
        })
    }

    /// What [`mamori_core::history::ip_activity`] makes of the uses of the window `[from, to)` for `customer`, without
    /// copying them out: the whole days inside the window are summed up once per window (and
    /// again after a write to one of them), the days an edge falls inside are counted event by
    /// event.
    pub(crate) fn activity(
        &self,
        net: bool,
        ip: u128,
        customer: &str,
        from: i64,
        to: i64,
    ) -> Result<IpActivity, IpNeed> {
        let mut s = self.state();
        let Some((h, first, last, edges)) = window(&mut s, net, ip, from, to)? else {
            return Ok(IpActivity::default());
        };
        let mut edge_events = Vec::with_capacity(2);
        for day in edges.iter().flatten() {
            if let Some(d) = h.days.get(day) {
                let Some((_, ev)) = &d.events else {
                    s.misses += 1;
                    return Err(IpNeed::Events(*day));
                };
                edge_events.push(ev);
            }
            if edges[0] == edges[1] {
                break;
            }
        }
        let (lo, hi) = (
            first + i64::from(edges[0].is_some()),
            last - i64::from(edges[1].is_some()),
        );
        let whole = match &h.whole {
            Some(w) if (w.first, w.last) == (lo, hi) => w,
            _ => h.whole.insert(WholeDays::of(&h.days, lo, hi)),
        };
        let mut act = IpActivity {
            logins: whole.logins,
            failed_logins: whole.failed_logins,
            ..IpActivity::default()
        };
        // The edges' customers, with whether they failed a login there.
        let mut edge: HashMap<&str, bool> = HashMap::new();
        for u in edge_events
            .into_iter()
            .flatten()
            .filter(|u| from <= u.at && u.at < to)
        {
            act.logins += u.logins;
            act.failed_logins += u.failed_logins;
            *edge.entry(u.customer.as_str()).or_default() |= u.failed_logins > 0;
        }
        let (mut accounts, mut failed) = (whole.customers.len(), whole.failed_accounts);
        for (c, &f) in &edge {
            match whole.customers.get(*c) {
                None => {
                    accounts += 1;
                    failed += u32::from(f);
                }
                Some(&was) => failed += u32::from(f && !was),
            }
        }
        let own = whole.customers.contains_key(customer) || edge.contains_key(customer);
        act.other_customers = (accounts - usize::from(own)) as u32;
        act.failed_login_accounts = failed;
        s.hits += 1;
        Ok(act)
    }

    /// Calls `g` on the uses [`Hot::ip_uses`] gives, borrowed.
    fn with_uses<R>(
        &self,
        net: bool,
        ip: u128,
        from: i64,
        to: i64,
        g: impl FnOnce(&[IpUse<&str>]) -> R,
    ) -> Result<R, IpNeed> {
        let mut s = self.state();
        let Some((h, first, last, edges)) = window(&mut s, net, ip, from, to)? else {
            return Ok(g(&[]));
        };
        let mut uses: Vec<IpUse<&str>> = Vec::new();
        for (&day, d) in h.days.range(first..=last) {
            if edges.contains(&Some(day)) {
                let Some((_, ev)) = &d.events else {
                    s.misses += 1;
                    return Err(IpNeed::Events(day));
                };
                uses.extend(ev.iter().map(|u| IpUse {
                    at: u.at,
                    customer: u.customer.as_str(),
                    logins: u.logins,
                    failed_logins: u.failed_logins,
                }));
            } else {
                uses.extend(
                    d.customers
                        .iter()
                        .map(|(c, &(logins, failed_logins))| IpUse {
                            at: day * DAY_US,
                            customer: &**c,
                            logins,
                            failed_logins,
                        }),
                );
            }
        }
        let out = g(&uses);
        drop(uses);
        s.hits += 1;
        Ok(out)
    }

    /// Holds an IP's uses of every day from `from_day` on, as the store gives them for whole
    /// days (a customer's day may come in two parts, which add up), read by `seen` after write
    /// number `noted`, with the writes applied since that it did not see.
    pub(crate) fn fill_ip(
        &self,
        net: bool,
        ip: u128,
        from_day: i64,
        (noted, seen): (u64, Seen),
        uses: Vec<(u128, IpUse<String>)>,
    ) {
        let mut s = self.state();
        s.tick += 1;
        let mut h = HeldIp::new(from_day, seen, s.tick);
        for (_, u) in uses {
            let d = h.days.entry(utc_day(u.at)).or_default();
            let c = d.customers.entry(u.customer.into()).or_insert_with(|| {
                h.rows += 1;
                (0, 0)
            });
            c.0 += u.logins;
            c.1 += u.failed_logins;
        }
        let Some(later) = Self::since(&s, noted) else {
            return;
        };
        for (w, c, p) in later {
            if on(net, ip, p) {
                h.apply(w, c, p);
            }
        }
        let s = &mut *s;
        hold(
            &mut s.ips,
            &mut s.ip_rows,
            (net, ip),
            h,
            self.max_rows,
            |h| (h.used, h.rows),
        );
    }

    /// Holds the events of an IP's day read by `seen` after write number `noted` (the IP's days
    /// must be held), with the writes applied since that it did not see.
    pub(crate) fn fill_ip_day(
        &self,
        net: bool,
        ip: u128,
        day: i64,
        (noted, seen): (u64, Seen),
        uses: Vec<(u128, IpUse<String>)>,
    ) {
        let mut s = self.state();
        let mut ev: Vec<IpUse<String>> = uses
            .into_iter()
            .filter(|(k, u)| *k == ip && utc_day(u.at) == day)
            .map(|(_, u)| u)
            .collect();
        let Some(later) = Self::since(&s, noted) else {
            return;
        };
        // Only the events: the day's counts have had every write already.
        for (w, c, p) in later {
            if on(net, ip, p) && utc_day(p.access.at) == day && !seen.includes(w) {
                ev.push(IpUse::event(p.access.at, c.clone(), p.access.kind));
            }
        }
        let Some(h) = s.ips.get_mut(&(net, ip)) else {
            return;
        };
        let n = ev.len();
        let d = h.days.entry(day).or_default();
        let old = d.events.replace((seen, ev)).map_or(0, |(_, e)| e.len());
        h.rows = h.rows + n - old;
        s.ip_rows = s.ip_rows + n - old;
    }

    /// Empties the cache (another process wrote, or events were purged); fills that read
    /// before are dropped.
    pub(crate) fn clear(&self) {
        let mut s = self.state();
        s.customers.clear();
        s.ips.clear();
        s.recent.clear();
        s.applied += 1;
        s.lost = s.applied;
        s.recent_events = 0;
        s.ip_rows = 0;
        s.rows = 0;
        s.marks = None;
        s.marks_changes += 1;
        s.cleared += 1;
    }

    /// The resolutions changed: read them again when next asked.
    pub(crate) fn marks_changed(&self) {
        let mut s = self.state();
        s.marks = None;
        s.marks_changes += 1;
    }

    /// What a read of the resolutions notes before it begins ([`Hot::fill_marks`]).
    pub(crate) fn marks_noted(&self) -> u64 {
        self.state().marks_changes
    }

    /// `store_meta.seq` as this process last left it.
    pub(crate) fn seq(&self) -> i64 {
        self.state().seq
    }

    pub(crate) fn set_seq(&self, seq: i64) {
        let mut s = self.state();
        s.seq = seq;
        s.checked = Some(Instant::now());
    }

    /// Whether a reader should look for other processes' writes now.
    pub(crate) fn check_due(&self) -> bool {
        self.state().checked.is_none_or(|c| c.elapsed() >= POLL)
    }

    /// The marks of an attempt, when the resolutions are held.
    pub(crate) fn marks(
        &self,
        customer: &str,
        ip: Option<u128>,
        t: i64,
        customer_ips: &[u128],
    ) -> Option<Marks> {
        let s = self.state();
        let (familiar, fraud) = s.marks.as_ref()?;
        let mut m = Marks::default();
        for (ip, device, at) in familiar.get(customer).map_or(&[][..], |v| v) {
            if *at < t {
                m.familiar_ips.extend(ip);
                m.familiar_devices.extend(device);
            }
        }
        let is_fraud = |k: &u128| fraud.iter().any(|(f, at)| f == k && *at < t);
        m.fraud_ip = ip.as_ref().is_some_and(is_fraud);
        m.fraud_ips_on_customer = customer_ips.iter().filter(|k| is_fraud(k)).count() as u32;
        Some(m)
    }

    /// Holds the resolutions read from the store by a read begun when [`Hot::marks_noted`] said
    /// `noted`, unless they changed since.
    pub(crate) fn fill_marks(
        &self,
        noted: u64,
        familiar: Vec<(String, Option<u128>, Option<u64>, i64)>,
        fraud: Vec<(u128, i64)>,
    ) {
        let mut by: HashMap<Box<str>, Vec<Familiar>> = HashMap::new();
        for (c, ip, device, at) in familiar {
            by.entry(c.into()).or_default().push((ip, device, at));
        }
        let mut s = self.state();
        if s.marks_changes == noted {
            s.marks = Some((by, fraud));
        }
    }
}

/// The held range for the window `[from, to)`, marked used, with the window's first and last UTC
/// day and the days its edges fall inside (`None` for an edge at midnight); `None` for an empty
/// window; what is missing if the range's days are not held from the window's start.
#[allow(clippy::type_complexity)]
fn window(
    s: &mut State,
    net: bool,
    ip: u128,
    from: i64,
    to: i64,
) -> Result<Option<(&mut HeldIp, i64, i64, [Option<i64>; 2])>, IpNeed> {
    s.tick += 1;
    let tick = s.tick;
    if from >= to {
        return Ok(None);
    }
    let (first, last) = (utc_day(from), utc_day(to - 1));
    if s.ips.get(&(net, ip)).is_none_or(|h| h.from_day > first) {
        s.misses += 1;
        return Err(IpNeed::Days);
    }
    let Some(h) = s.ips.get_mut(&(net, ip)) else {
        return Err(IpNeed::Days);
    };
    h.used = tick;
    let edges = [
        (from.rem_euclid(DAY_US) != 0).then_some(first),
        (to.rem_euclid(DAY_US) != 0).then_some(last),
    ];
    Ok(Some((h, first, last, edges)))
}

/// Puts `value` under `key` in `map`, whose entries hold `total` rows (`size` gives an entry's
/// last use and rows); over `max`, drops the least recently used entries down to three quarters.
fn hold<K: std::hash::Hash + Eq + Ord + Clone, V>(
    map: &mut HashMap<K, V>,
    total: &mut usize,
    key: K,
    value: V,
    max: usize,
    size: impl Fn(&V) -> (u64, usize),
) {
    *total += size(&value).1;
    if let Some(old) = map.insert(key, value) {
        *total -= size(&old).1;
    }
    if *total <= max {
        return;
    }
    let keep = max - max / 4;
    let mut order: Vec<(u64, usize, K)> = map
        .iter()
        .map(|(k, v)| {
            let (used, n) = size(v);
            (used, n, k.clone())
        })
        .collect();
    order.sort_unstable();
    for (_, n, k) in order {
        if *total <= keep {
            break;
        }
        map.remove(&k);
        *total -= n;
    }
}

/// Whether the event is on the address `key`, or in the network that starts at `key`.
fn on(net: bool, key: u128, p: &Past) -> bool {
    p.access.ip.is_some_and(|ip| {
        if net {
            prefix_key(ip) == key
        } else {
            ip == key
        }
    })
}

/// The cache and whether `[lo, hi]` is a network, when the cache holds such ranges: an
/// address, or a familiarity network (another block is read from the store). Both stores ask it.
pub(crate) fn range(hot: Option<&Hot>, lo: u128, hi: u128) -> Option<(&Hot, bool)> {
    let h = hot?;
    let net = lo != hi;
    (!net || is_network(lo, hi)).then_some((h, net))
}

/// Whether `[lo, hi]` is a familiarity network (what the cache holds besides addresses).
pub(crate) fn is_network(lo: u128, hi: u128) -> bool {
    prefix_range(lo) == (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mamori_core::event::{Channel, Kind};
    use mamori_core::history::Access;

    fn past(at: i64) -> Past {
        Past {
            access: Access {
                at,
                kind: Kind::Login,
                channel: Channel::Web,
                ip: None,
                device: None,
            },
            ua: None,
            amount: None,
            side: None,
        }
    }

    fn at(v: &[Past]) -> Vec<i64> {
        v.iter().map(|p| p.access.at).collect()
    }

    #[test]
    fn answers_only_windows_it_holds_and_evicts_the_least_recently_used() {
        let h = Hot::new(10, 0);
        assert!(h.past("a", 0, 100).is_none());
        h.fill("a", 10, 0, Seen::Seq(0), vec![past(10), past(20), past(30)]);
        assert!(h.past("a", 5, 100).is_none(), "held from 10 only");
        assert_eq!(at(&h.past("a", 15, 30).unwrap()), vec![20]);
        h.fill("b", 0, 0, Seen::Seq(0), (0..5).map(past).collect());
        h.past("a", 10, 11);
        // 3 + 5 + 4 > 10: b, used least recently, goes.
        h.fill("c", 0, 0, Seen::Seq(0), (0..4).map(past).collect());
        assert!(h.past("b", 0, 10).is_none());
        assert!(h.past("a", 10, 11).is_some() && h.past("c", 0, 1).is_some());
        assert_eq!(h.stats().rows, 7);
    }

    #[test]
    fn a_fill_read_before_writes_gets_them_once_or_is_dropped() {
        let h = Hot::new(1000, 10);
        // A fill notes the writes applied (none), reads in the snapshot of seq 10; write 11 of
        // "a" is applied meanwhile (not held yet): the fill gets it added. One that read at 11
        // already has it.
        let noted = h.applied();
        h.stored(Write::Seq(11), vec![("a".into(), past(50))]);
        h.fill("a", 0, noted, Seen::Seq(10), vec![past(10)]);
        assert_eq!(at(&h.past("a", 0, 100).unwrap()), vec![10, 50]);
        h.fill("b", 0, noted, Seen::Seq(11), vec![past(10), past(50)]);
        // A write applied after a fill is held only where the fill did not see it: "c" read at
        // 12 (before write 12 was applied here) has it already.
        h.fill("c", 0, h.applied(), Seen::Seq(12), vec![past(60)]);
        h.stored(
            Write::Seq(12),
            vec![
                ("b".into(), past(60)),
                ("a".into(), past(60)),
                ("c".into(), past(60)),
            ],
        );
        assert_eq!(at(&h.past("b", 0, 100).unwrap()), vec![10, 50, 60]);
        assert_eq!(at(&h.past("a", 0, 100).unwrap()), vec![10, 50, 60]);
        assert_eq!(at(&h.past("c", 0, 100).unwrap()), vec![60]);
        // An IP's days likewise: a login of write 13 on the IP, a fill read at 12.
        let mut login = past(DAY_US + 5);
        login.access.ip = Some(7);
        let noted = h.applied();
        h.stored(Write::Seq(13), vec![("c".into(), login)]);
        h.fill_ip(false, 7, 0, (noted, Seen::Seq(12)), vec![]);
        let uses = h.ip_uses(false, 7, 0, 3 * DAY_US).expect("held");
        assert_eq!(uses.len(), 1);
        assert_eq!((uses[0].1.customer.as_str(), uses[0].1.logins), ("c", 1));
        // Another process wrote (seq 20): fills that began before the cache was emptied are
        // dropped, later ones kept.
        let noted = h.applied();
        h.clear();
        h.set_seq(20);
        h.fill("d", 0, noted, Seen::Seq(20), vec![past(1)]);
        assert!(h.past("d", 0, 100).is_none());
        h.fill("d", 0, h.applied(), Seen::Seq(20), vec![past(1)]);
        assert!(h.past("d", 0, 100).is_some());
    }

    fn snap(s: &str) -> Seen {
        Seen::Snap(Arc::new(Snapshot::parse(s).expect("snapshot")))
    }

    #[test]
    fn snapshots_parse_and_see_what_had_committed() {
        let s = Snapshot::parse("100:105:101,103").expect("parses");
        assert_eq!(
            (s.xmin, s.xmax, s.xip.as_slice()),
            (100, 105, &[101, 103][..])
        );
        let seen: Vec<u64> = (98..107).filter(|x| s.sees(*x)).collect();
        assert_eq!(seen, vec![98, 99, 100, 102, 104]);
        assert_eq!(
            Snapshot::parse("7:7:"),
            Some(Snapshot {
                xmin: 7,
                xmax: 7,
                xip: vec![]
            })
        );
        for bad in ["", "7", "7:", "8:7:", "1:2:x", "a:2:"] {
            assert_eq!(Snapshot::parse(bad), None, "{bad:?}");
        }
    }

    /// On PostgreSQL writes arrive in commit order, not transaction-id order, and a fill's
    /// snapshot may have seen a write applied after the fill began, or not.
    #[test]
    fn fills_by_snapshot_get_the_writes_they_did_not_see_once() {
        let h = Hot::new(1000, 0);
        let noted = h.applied();
        // Transactions 101 and 103 commit while the fill reads; its snapshot saw 103 (it had
        // committed) but not 101 (still in progress).
        h.stored(Write::Xid(103), vec![("a".into(), past(30))]);
        h.stored(Write::Xid(101), vec![("a".into(), past(20))]);
        h.fill("a", 0, noted, snap("101:104:101"), vec![past(10), past(30)]);
        assert_eq!(at(&h.past("a", 0, 100).unwrap()), vec![10, 20, 30]);
        // 102 committed before the snapshot but reaches this node after the fill: not again.
        // 104 started after it: added.
        h.stored(Write::Xid(102), vec![("a".into(), past(25))]);
        h.stored(Write::Xid(104), vec![("a".into(), past(40))]);
        assert_eq!(at(&h.past("a", 0, 100).unwrap()), vec![10, 20, 30, 40]);
        // An IP's day: counts from the days' read, events from the day's later read.
        let mut ev = past(DAY_US + 5);
        ev.access.ip = Some(9);
        h.fill_ip(false, 9, 0, (h.applied(), snap("110:110:")), vec![]);
        let noted = h.applied();
        h.stored(Write::Xid(111), vec![("b".into(), ev)]);
        // The day's events read by a snapshot that saw 111: it brings the event itself.
        h.fill_ip_day(
            false,
            9,
            1,
            (noted, snap("112:112:")),
            vec![(9, IpUse::event(DAY_US + 5, "b".into(), Kind::Login))],
        );
        let uses = h.ip_uses(false, 9, DAY_US + 1, DAY_US + 9).expect("held");
        assert_eq!(uses.len(), 1, "{uses:?}");
        let act = h.activity(false, 9, "x", 0, 3 * DAY_US).expect("held");
        assert_eq!((act.logins, act.other_customers), (1, 1));
    }

    /// `activity` against `ip_activity` over the uses `ip_uses` gives (what it did before it
    /// summed up whole days), for every customer, as writes land on whole and edge days.
    #[test]
    fn activity_sums_whole_days_once_and_again_after_a_write_to_them() {
        use mamori_core::history::ip_activity;
        let h = Hot::new(1000, 1);
        let use_ = |day: i64, hour: i64, c: &str, kind: Kind| {
            IpUse::event(day * DAY_US + hour * 3_600_000_000, c.to_owned(), kind)
        };
        let mut uses = Vec::new();
        for day in 0..6 {
            uses.push((7, use_(day, 3, "a", Kind::Login)));
            uses.push((
                7,
                use_(day, 20, ["b", "c"][day as usize % 2], Kind::LoginFailed),
            ));
        }
        h.fill_ip(false, 7, 0, (h.applied(), Seen::Seq(1)), uses.clone());
        let (from, to) = (DAY_US + 12 * 3_600_000_000, 5 * DAY_US + 12 * 3_600_000_000);
        for day in [1, 5] {
            let of_day = uses.iter().filter(|(_, u)| utc_day(u.at) == day);
            h.fill_ip_day(
                false,
                7,
                day,
                (h.applied(), Seen::Seq(1)),
                of_day.cloned().collect(),
            );
        }
        let check = |what: &str| {
            let held = h.ip_uses(false, 7, from, to).expect("held");
            for c in ["a", "b", "c", "d", "e"] {
                let want = ip_activity(
                    &c.to_owned(),
                    held.iter()
                        .map(|(_, u)| u)
                        .filter(|u| from <= u.at && u.at < to),
                );
                assert_eq!(h.activity(false, 7, c, from, to), Ok(want), "{what}, {c}");
            }
        };
        check("as filled");
        check("summed up");
        let ev = |day: i64, c: &str, kind: Kind| {
            let mut p = past(day * DAY_US + 15 * 3_600_000_000);
            p.access.ip = Some(7);
            p.access.kind = kind;
            (c.to_owned(), p)
        };
        // A new customer on a whole day, then an old one's first failed login there.
        h.stored(Write::Seq(2), vec![ev(3, "d", Kind::Login)]);
        check("after d on day 3");
        h.stored(Write::Seq(3), vec![ev(2, "a", Kind::LoginFailed)]);
        check("after a failed on day 2");
        // On the edges: a customer only there (inside the window), and one already on whole
        // days (after the window's end).
        h.stored(
            Write::Seq(4),
            vec![ev(1, "e", Kind::LoginFailed), ev(5, "b", Kind::Login)],
        );
        check("after the edges' writes");
        let a = h.activity(false, 7, "e", from, to).expect("held");
        assert_eq!((a.other_customers, a.failed_login_accounts), (4, 4));
    }
}
