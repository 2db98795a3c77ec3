//! The store's integration tests (one test binary): the shared suite on a real SQLite file, and
//! the store-backed and in-memory investigations against a reference implementation written as
//! plain loops over all events, on randomized data.

use std::collections::HashSet;
use std::net::IpAddr;

use mamori_core::event::{Channel, Event, Kind};
use mamori_core::investigate::Query;
use mamori_core::memory::MemoryIndex;
use mamori_core::verdict::NoIntel;
use mamori_store::{EventWriter, SqliteStore, investigate::investigate, testsuite};
use proptest::prelude::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn sqlite_passes_the_storage_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let s = SqliteStore::open(&dir.path().join("suite.db"))
            .await
            .expect("open");
        testsuite::run_all(&s).await;
        s.close().await;
        // Reopening runs migrations again without harm and keeps the data.
        let s = SqliteStore::open(&dir.path().join("suite.db"))
            .await
            .expect("reopen");
        use mamori_store::HistoryReader;
        assert!(s.count_events().await.expect("count") > 0);
    });
}

const DAY: i64 = 86_400_000_000;
const HOUR: i64 = 3_600_000_000;
const BASE: i64 = 1_577_804_400_000_000; // 2020-01-01T00:00:00+09:00

/// The literal columns, computed the slowest obvious way from the contract's definitions.
#[derive(Debug, PartialEq, Eq)]
struct RefRow {
    event_id: String,
    ip_seen_before: bool,
    prefix_seen_before: bool,
    ip_first_seen_at: Option<i64>,
    ip_days_seen: usize,
    history_events: usize,
    other_customers_30d: usize,
}

fn same_prefix(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets()[..3] == b.octets()[..3],
        (IpAddr::V6(a), IpAddr::V6(b)) => a.segments()[..3] == b.segments()[..3],
        _ => false,
    }
}

fn reference(events: &[Event], q: &Query) -> Vec<RefRow> {
    let mut rows = Vec::new();
    for p in events {
        if p.kind != q.kind
            || !q.channels.contains(&p.channel)
            || p.occurred_at < q.from
            || p.occurred_at >= q.to
        {
            continue;
        }
        let t = p.occurred_at;
        let mut row = RefRow {
            event_id: p.event_id.clone(),
            ip_seen_before: false,
            prefix_seen_before: false,
            ip_first_seen_at: None,
            ip_days_seen: 0,
            history_events: 0,
            other_customers_30d: 0,
        };
        let mut days = HashSet::new();
        for e in events {
            if e.customer_id != p.customer_id
                || e.kind == Kind::LoginFailed
                || e.occurred_at >= t
                || e.occurred_at < t - 365 * DAY
            {
                continue;
            }
            row.history_events += 1;
            if let (Some(a), Some(b)) = (e.ip, p.ip) {
                if a == b {
                    row.ip_seen_before = true;
                    if row.ip_first_seen_at.is_none_or(|f| e.occurred_at < f) {
                        row.ip_first_seen_at = Some(e.occurred_at);
                    }
                    days.insert((e.occurred_at + 9 * HOUR).div_euclid(DAY));
                }
                if same_prefix(a, b) {
                    row.prefix_seen_before = true;
                }
            }
        }
        row.ip_days_seen = days.len();
        let mut others = HashSet::new();
        for e in events {
            if e.customer_id != p.customer_id
                && e.ip.is_some()
                && e.ip == p.ip
                && e.occurred_at < t
                && e.occurred_at >= t - 30 * DAY
            {
                others.insert(e.customer_id.clone());
            }
        }
        row.other_customers_30d = others.len();
        rows.push(row);
    }
    rows.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    rows
}

const IPS: [&str; 7] = [
    "203.0.113.5",
    "203.0.113.77",
    "198.51.100.1",
    "2001:db8:1:1::1",
    "2001:db8:1:ff::2",
    "2001:db8:2::1",
    "192.0.2.200",
];
const KINDS: [Kind; 5] = [
    Kind::Login,
    Kind::LoginFailed,
    Kind::DestinationChange,
    Kind::Trade,
    Kind::Withdrawal,
];

fn events_strategy() -> impl Strategy<Value = Vec<Event>> {
    // Times on a grid of days and half days, some a year apart, so that the edges of the 30-day
    // and 365-day windows are hit exactly.
    let one = (
        0usize..5,
        (0i64..40, 0i64..2).prop_map(|(d, y)| d + 365 * y),
        0i64..3,
        0usize..KINDS.len(),
        0usize..IPS.len(),
        0usize..10,
        0usize..3,
    );
    proptest::collection::vec(one, 1..120).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (c, day, half, k, ip, ch, dev))| {
                let channel = match ch {
                    0 => Channel::Paper,
                    1..=3 => Channel::App,
                    _ => Channel::Web,
                };
                Event {
                    event_id: format!("e{i:04}"),
                    occurred_at: BASE + day * DAY + half * 12 * HOUR,
                    customer_id: format!("c{c}"),
                    kind: KINDS[k],
                    channel,
                    ip: channel.is_online().then(|| IPS[ip].parse().expect("ip")),
                    user_agent: None,
                    device_id: (dev > 0).then(|| format!("d{c}-{dev}")),
                    amount: None,
                    side: None,
                    destination: None,
                }
            })
            .collect()
    })
}

fn literal_of(inv: &mamori_core::investigate::Investigation) -> Vec<RefRow> {
    let mut rows: Vec<RefRow> = inv
        .rows
        .iter()
        .map(|r| RefRow {
            event_id: r.procedure.event_id.clone(),
            ip_seen_before: r.literal.ip_seen_before,
            prefix_seen_before: r.literal.prefix_seen_before,
            ip_first_seen_at: r.literal.ip_first_seen_at,
            ip_days_seen: r.literal.ip_days_seen as usize,
            history_events: r.literal.history_events as usize,
            other_customers_30d: r.literal.other_customers_30d as usize,
        })
        .collect();
    rows.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    rows
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn store_and_memory_equal_the_reference(events in events_strategy(), from_day in 0i64..400, len in 1i64..200) {
        let q = Query::new(Kind::DestinationChange, BASE + from_day * DAY, BASE + (from_day + len) * DAY);
        let want = reference(&events, &q);

        let mut mem = MemoryIndex::new();
        // Unsorted input: feed in reverse.
        for e in events.iter().rev() {
            mem.push(e, &q);
        }
        let from_memory = mem.investigate(&q, &NoIntel);
        prop_assert_eq!(&literal_of(&from_memory), &want);

        let dir = tempfile::tempdir().expect("tempdir");
        let from_store = runtime().block_on(async {
            let s = SqliteStore::open(&dir.path().join("p.db")).await.expect("open");
            for chunk in events.chunks(17) {
                s.insert_events(chunk).await.expect("insert");
            }
            let inv = investigate(&s, &q, &NoIntel).await.expect("investigate");
            s.close().await;
            inv
        });
        prop_assert_eq!(&literal_of(&from_store), &want);
        // The judgement too is the same from both sources, row by row and in the same order.
        prop_assert_eq!(&from_store.rows, &from_memory.rows);
        prop_assert_eq!(&from_store.summary, &from_memory.summary);
    }
}
