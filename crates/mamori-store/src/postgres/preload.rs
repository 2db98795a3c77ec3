//! Filling a serving node's hot cache before it says it is ready, so that its first requests
//! find their customers and IPs in memory (the PostgreSQL side of
//! [`crate::SqliteStore::preload_hot`]).
//!
//! Reads go in batches of [`BATCH`] customers or IP ranges, each one statement with its own
//! snapshot, filled like a miss's read (the writes applied meanwhile that the snapshot did not
//! see are added; the change feed keeps running).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use foldhash::{HashMap, HashMapExt};
use mamori_core::assess::Policy;
use mamori_core::event::Kind;
use mamori_core::history::IpUse;
use mamori_core::net::{key_bytes, prefix_range};
use mamori_core::time::DAY_US;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Postgres, Row};

use super::PgStore;
use super::events::{SQL_DAY, SideTable, fill_rows, past_at};
use crate::Result;
use crate::hot::{FILL_SLACK_US, Hot};
use crate::sqlite::{corrupt, ip_of, kind_of, utc_day};

/// Customers, or IP ranges, read per statement.
const BATCH: usize = 500;

impl PgStore {
    /// Fills the hot cache with the customers and IPs active in the `days` days up to the
    /// newest event stored, most recent first, while there is room: each customer's events from
    /// [`crate::assess::past_span`] before that period, each address's and familiarity
    /// network's days from [`crate::assess::ip_span`] before it. The key cache gets those
    /// customers and the devices and user agents of those days, so that their first assessments
    /// can be stored in one statement.
    pub async fn preload_hot(&self, days: i64, policy: &Policy) -> Result<()> {
        let (past_span, ip_span) = (
            crate::assess::past_span(policy),
            crate::assess::ip_span(policy),
        );
        let Some(h) = self.hot.clone() else {
            return Ok(());
        };
        let Some(newest) = self.newest_event().await? else {
            return Ok(());
        };
        let since = (utc_day(newest) + 1 - days) * DAY_US;
        let customers: Vec<(i64, String)> = sqlx::query_as(
            "SELECT c.customer_key, c.customer_id \
             FROM (SELECT customer_key, max(occurred_at) AS m FROM events \
                   WHERE occurred_at >= $1 GROUP BY customer_key) r \
             JOIN customers c ON c.customer_key = r.customer_key \
             ORDER BY r.m DESC, c.customer_key",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let devices = self.recent_keys(SideTable::Devices, since).await?;
        let agents = self.recent_keys(SideTable::Agents, since).await?;
        self.learn_keys(
            customers.iter().map(|(k, c)| (c.as_str().into(), *k)),
            devices.into_iter().map(|(d, k)| (d.into(), k)),
            agents.into_iter().map(|(u, k)| (u.into(), k)),
        );
        let held_from = since - past_span - FILL_SLACK_US;
        for batch in customers.chunks(BATCH) {
            if !h.preload_room().0 {
                break;
            }
            self.fill_customers(&h, batch, held_from).await?;
        }
        // Addresses by their last use, then their networks in the same order.
        let ips: Vec<Option<Vec<u8>>> = sqlx::query_scalar(
            "SELECT ip FROM events WHERE occurred_at >= $1 AND ip IS NOT NULL \
             GROUP BY ip ORDER BY max(occurred_at) DESC, ip",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let mut ranges = Vec::with_capacity(ips.len() * 2);
        for ip in &ips {
            let key = ip_of(ip.as_deref())?.ok_or_else(|| corrupt("missing IP"))?;
            ranges.push((false, key, key));
        }
        let mut nets = foldhash::HashSet::default();
        for i in 0..ranges.len() {
            let (lo, hi) = prefix_range(ranges[i].1);
            if nets.insert(lo) {
                ranges.push((true, lo, hi));
            }
        }
        let ip_day = utc_day(since - ip_span - FILL_SLACK_US);
        // The days a question's window starts or ends inside, for questions from the newest
        // day on: their events one by one.
        let today = utc_day(newest);
        let edges = [
            (today - 1 - ip_span / DAY_US, today + 2 - ip_span / DAY_US),
            (today - 1, today + 1),
        ];
        for batch in ranges.chunks(BATCH) {
            if !h.preload_room().1 {
                break;
            }
            self.fill_ranges(&h, batch, ip_day).await?;
            for (first, end) in edges {
                self.fill_range_days(&h, batch, first, end).await?;
            }
        }
        Ok(())
    }

    /// Reads the events of the days `first..end` of a batch of IP ranges (held by the cache),
    /// in one statement, and fills the cache with those of each day. The days without a use are
    /// not held (no question needs their events), except for a single range (a miss: its
    /// question asked for them).
    pub(super) async fn fill_range_days(
        &self,
        h: &Hot,
        batch: &[(bool, u128, u128)],
        first: i64,
        end: i64,
    ) -> Result<()> {
        let noted = h.applied();
        let rows = bind_ranges(sqlx::query(RANGE_DAYS_SQL.pick(batch)), batch)
            .bind(first * DAY_US)
            .bind(end * DAY_US)
            .fetch_all(&self.pool)
            .await?;
        let (seen, data) = fill_rows(&rows)?;
        let mut by: BTreeMap<(usize, i64), Vec<_>> = BTreeMap::new();
        if let [_] = batch {
            by.extend((first..end).map(|d| ((0, d), Vec::new())));
        }
        for r in data {
            let i = place(r.try_get(1)?, batch.len())?;
            let at: i64 = r.try_get(2)?;
            let kind = kind_of(r.try_get::<i16, _>(4)?.into())?;
            by.entry((i, utc_day(at)))
                .or_default()
                .push((batch[i].1, IpUse::event(at, r.try_get(3)?, kind)));
        }
        for ((i, day), uses) in by {
            let (net, lo, _) = batch[i];
            h.fill_ip_day(net, lo, day, (noted, seen.clone()), uses);
        }
        Ok(())
    }

    /// Devices or user agents `(text, key)` used since `since`.
    async fn recent_keys(&self, side: SideTable, since: i64) -> Result<Vec<(String, i64)>> {
        let (table, key, text) = side.sql();
        Ok(sqlx::query_as(AssertSqlSafe(format!(
            "SELECT t.{text}, t.{key} FROM {table} t WHERE t.{key} IN \
             (SELECT DISTINCT {key} FROM events WHERE occurred_at >= $1)"
        )))
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The time of the newest event stored: the newest month's partition that holds one.
    async fn newest_event(&self) -> Result<Option<i64>> {
        let mut conn = self.pool.acquire().await?;
        let mut months = super::events::partitions(&mut conn).await?;
        months.sort_by_key(|m| m.1);
        for (name, _) in months.iter().rev() {
            let newest: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT max(occurred_at) FROM \"{name}\""
            )))
            .fetch_one(&mut *conn)
            .await?;
            if newest.is_some() {
                return Ok(newest);
            }
        }
        Ok(None)
    }

    /// Reads the events from `held_from` on of a batch of customers `(key, id)`, in one
    /// statement, and fills the cache with them.
    async fn fill_customers(&self, h: &Hot, batch: &[(i64, String)], held_from: i64) -> Result<()> {
        let keys: Vec<i64> = batch.iter().map(|c| c.0).collect();
        let noted = h.applied();
        let rows = sqlx::query(
            "SELECT s.snap, x.customer_key, x.occurred_at, x.kind, x.channel, x.ip, \
                    x.device_hash, x.ua_key, x.amount, x.side \
             FROM (SELECT pg_current_snapshot()::text AS snap) s \
             LEFT JOIN LATERAL ( \
                 SELECT e.customer_key, e.occurred_at, e.kind, e.channel, e.ip, e.device_hash, \
                        e.ua_key, e.amount, e.side, e.event_id \
                 FROM events e WHERE e.customer_key = ANY($1) AND e.occurred_at >= $2 \
             ) x ON true \
             ORDER BY x.customer_key, x.occurred_at, x.event_id",
        )
        .bind(&keys)
        .bind(held_from)
        .fetch_all(&self.pool)
        .await?;
        let (seen, data) = fill_rows(&rows)?;
        let mut by: HashMap<i64, Vec<_>> = HashMap::with_capacity(batch.len());
        for r in data {
            by.entry(r.try_get(1)?).or_default().push(past_at(r, 2)?);
        }
        for (key, id) in batch {
            let rows = self
                .with_families(by.remove(key).unwrap_or_default())
                .await?;
            h.fill(id, held_from, noted, seen.clone(), rows);
        }
        Ok(())
    }

    /// Reads the uses by day and customer from `from_day` on of a batch of IP ranges
    /// `(network?, lo, hi)`, in one statement, and fills the cache with them.
    pub(super) async fn fill_ranges(
        &self,
        h: &Hot,
        batch: &[(bool, u128, u128)],
        from_day: i64,
    ) -> Result<()> {
        let noted = h.applied();
        let rows = bind_ranges(sqlx::query(RANGES_SQL.pick(batch)), batch)
            .bind(from_day * DAY_US)
            .bind(i16::from(Kind::Login.code()))
            .bind(i16::from(Kind::LoginFailed.code()))
            .fetch_all(&self.pool)
            .await?;
        let (seen, data) = fill_rows(&rows)?;
        // By the range's place in the batch (an address and its network can share a `lo`).
        let mut by: Vec<Vec<_>> = (0..batch.len()).map(|_| Vec::new()).collect();
        for r in data {
            let i = place(r.try_get(2)?, batch.len())?;
            let n = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
            by[i].push((
                batch[i].1,
                IpUse {
                    at: r.try_get::<i64, _>(1)? * DAY_US,
                    customer: r.try_get(3)?,
                    logins: n(r.try_get(4)?),
                    failed_logins: n(r.try_get(5)?),
                },
            ));
        }
        for (&(net, lo, _), uses) in batch.iter().zip(by) {
            h.fill_ip(net, lo, from_day, (noted, seen.clone()), uses);
        }
        Ok(())
    }
}

/// A statement over IP ranges, `$1` and `$2` their bounds: one form for a single range (a miss
/// reads it directly), one for a batch, which reads each range in turn (the subquery is kept
/// apart by OFFSET 0: flattened, a generic plan joins every event of the period to every range).
/// Both give each range's ordinality from 1 as `r.i`, and the range's events as `e`, with the
/// rest of the conditions on `e` in `{cond}`.
struct RangeSql {
    single: String,
    batch: String,
}

impl RangeSql {
    fn new(shape: impl Fn(&str) -> String, cond: &str) -> Self {
        RangeSql {
            single: shape(&format!(
                "(SELECT $1::bytea AS lo, $2::bytea AS hi, 1::bigint AS i) r \
                 JOIN events e ON e.ip >= r.lo AND e.ip <= r.hi AND {cond}"
            )),
            batch: shape(&format!(
                "unnest($1::bytea[], $2::bytea[]) WITH ORDINALITY AS r (lo, hi, i) \
                 CROSS JOIN LATERAL (SELECT e.occurred_at, e.kind, e.customer_key FROM events e \
                     WHERE e.ip >= r.lo AND e.ip <= r.hi AND {cond} OFFSET 0) e"
            )),
        }
    }

    fn pick(&self, batch: &[(bool, u128, u128)]) -> AssertSqlSafe<&str> {
        AssertSqlSafe(if batch.len() == 1 {
            &self.single
        } else {
            &self.batch
        })
    }
}

/// Binds a batch's bounds as [`RangeSql::pick`] expects them.
fn bind_ranges<'q>(
    q: Query<'q, Postgres, PgArguments>,
    batch: &[(bool, u128, u128)],
) -> Query<'q, Postgres, PgArguments> {
    if let [(_, lo, hi)] = batch {
        q.bind(key_bytes(*lo).to_vec())
            .bind(key_bytes(*hi).to_vec())
    } else {
        q.bind(
            batch
                .iter()
                .map(|r| key_bytes(r.1).to_vec())
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|r| key_bytes(r.2).to_vec())
                .collect::<Vec<_>>(),
        )
    }
}

/// Uses by day and customer from `$3` on; `$4` and `$5` the login and failed-login kinds.
static RANGES_SQL: LazyLock<RangeSql> = LazyLock::new(|| {
    RangeSql::new(
        |ranges| {
            format!(
                "SELECT s.snap, x.day, x.i, x.customer_id, x.logins, x.failed \
                 FROM (SELECT pg_current_snapshot()::text AS snap) s \
                 LEFT JOIN LATERAL ( \
                     SELECT {SQL_DAY} AS day, r.i, c.customer_id, \
                         count(*) FILTER (WHERE e.kind = $4) AS logins, \
                         count(*) FILTER (WHERE e.kind = $5) AS failed \
                     FROM {ranges} \
                     JOIN customers c ON c.customer_key = e.customer_key \
                     GROUP BY 1, 2, 3 \
                 ) x ON true"
            )
        },
        "e.occurred_at >= $3",
    )
});

/// Events with `$3 ≤ occurred_at < $4`.
static RANGE_DAYS_SQL: LazyLock<RangeSql> = LazyLock::new(|| {
    RangeSql::new(
        |ranges| {
            format!(
                "SELECT s.snap, x.i, x.occurred_at, x.customer_id, x.kind \
                 FROM (SELECT pg_current_snapshot()::text AS snap) s \
                 LEFT JOIN LATERAL ( \
                     SELECT r.i, e.occurred_at, c.customer_id, e.kind \
                     FROM {ranges} \
                     JOIN customers c ON c.customer_key = e.customer_key \
                 ) x ON true"
            )
        },
        "e.occurred_at >= $3 AND e.occurred_at < $4",
    )
});

/// A range's place in its batch from its ordinality (from 1).
fn place(ordinality: i64, len: usize) -> Result<usize> {
    usize::try_from(ordinality - 1)
        .ok()
        .filter(|&i| i < len)
        .ok_or_else(|| corrupt("a range out of its batch"))
}
