//! The PostgreSQL store: several processes (nodes) share one database.
//!
//! Every capability runs in transactions of the database; checks that must not race (the audit
//! chain's head, compare-and-set of TOTP steps, recovery codes, passkey counters, ceremonies,
//! step-up tokens and report links) are single conditional statements or lock the row they
//! depend on, so they hold across processes, not only within one. Events are partitioned by month
//! ([`events`]); their idempotency key lives in an unpartitioned table.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use mamori_core::time::{DAY_US, civil_from_days, days_from_civil};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection, Postgres, Transaction};

use crate::{Result, StoreError};

mod decisions;
pub mod events;
pub mod feed;
mod notices;
mod passkeys;
mod people;
mod preload;

/// Connections per process.
const POOL_SIZE: u32 = 8;

/// The advisory lock (transaction-scoped) that serialises creating and dropping partitions of
/// `events` across processes: "mamori-events-partitions".
const PARTITION_LOCK: i64 = 0x6d61_6d6f_7269_7001;

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Months (`year * 12 + month - 1`) whose partition this process knows exists.
    months: Arc<Mutex<BTreeSet<i64>>>,
    /// Months this process loads beside `events` ([`PgStore::begin_loading`]).
    loading: Arc<Mutex<BTreeSet<i64>>>,
    /// Whether new months are loaded beside `events` rather than created in it.
    bulk: Arc<AtomicBool>,
    /// Committed keys of the side tables (they never change once committed).
    keys: Arc<Mutex<events::KeyCache>>,
    /// User-agent families by `ua_key`.
    ua_families: Arc<Mutex<HashMap<i64, u64>>>,
    /// This process in the change feed ([`feed`]): its own rows are skipped there.
    node: i64,
    /// The server's cache of customers' and IPs' events ([`PgStore::with_hot`]).
    hot: Option<Arc<crate::hot::Hot>>,
    /// When this process prunes the change feed.
    pruner: Arc<Mutex<feed::Pruner>>,
    /// Connections the recorder's groups keep between their statements ([`Keep`]).
    keep: Keep,
    /// Whether the common case of recorded assessments commits asynchronously
    /// ([`PgStore::async_records`]).
    async_records: bool,
}

/// Batches written at once ([`crate::EventWriter::parallel_batches`]: an import's lanes, the
/// server recorder's groups), and so the connections [`Keep`] holds at most.
const LANES: usize = 2;

/// Pool connections kept out of the pool between the statements of a path that runs one
/// statement at a time, over and over (the server's recorder): sqlx tests every connection given
/// back to the pool with a round trip (a `Sync` and its answer), which doubled the round trips
/// of those paths. A connection is kept only after its statement succeeded ([`Kept::done`]);
/// one whose statement failed, or whose future was dropped mid-statement, goes back to the pool
/// as usual (tested there, closed if broken).
#[derive(Debug, Clone, Default)]
pub(crate) struct Keep(Arc<Mutex<Vec<sqlx::pool::PoolConnection<Postgres>>>>);

/// A connection taken from [`Keep`] (or from the pool when it holds none).
pub(crate) struct Kept {
    pub(crate) conn: sqlx::pool::PoolConnection<Postgres>,
    keep: Keep,
    pool: PgPool,
}

impl Keep {
    pub(crate) async fn take(&self, pool: &PgPool) -> Result<Kept> {
        let kept = lock(&self.0).pop();
        let conn = match kept {
            Some(c) => c,
            None => pool.acquire().await?,
        };
        Ok(Kept {
            conn,
            keep: self.clone(),
            pool: pool.clone(),
        })
    }
}

impl Kept {
    /// Its statement succeeded: kept for the next (or given back to the pool when enough are).
    /// Not once the pool is closing: its `close` waits for every connection.
    pub(crate) fn done(self) {
        let mut kept = lock(&self.keep.0);
        if kept.len() < LANES && !self.pool.is_closed() {
            kept.push(self.conn);
        }
    }
}

/// A URL with its password (if any) left out, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

fn open_error(url: &str, source: sqlx::Error) -> StoreError {
    StoreError::Open {
        path: redacted(url),
        source,
    }
}

/// A schema name the store accepts: lower-case ASCII letters, digits and `_`, not starting with a
/// digit, at most 63 bytes (so it needs no quoting anywhere).
fn valid_schema(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and applies migrations in the
    /// connection's default schema.
    pub async fn open(url: &str) -> Result<Self> {
        let opts: PgConnectOptions = url.parse().map_err(|e| open_error(url, e))?;
        Self::connect(url, opts).await
    }

    /// Connects to `url` with every pooled connection's `search_path` pinned to `schema` (created
    /// if missing), and applies migrations inside it: one database can hold several stores.
    pub async fn open_in_schema(url: &str, schema: &str) -> Result<Self> {
        if !valid_schema(schema) {
            return Err(open_error(
                url,
                sqlx::Error::Configuration(
                    format!("schema name {schema:?}: use a-z, 0-9 and _").into(),
                ),
            ));
        }
        let opts: PgConnectOptions = url.parse().map_err(|e| open_error(url, e))?;
        let mut conn = PgConnection::connect_with(&opts)
            .await
            .map_err(|e| open_error(url, e))?;
        let created = sqlx::query(AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}"
        )))
        .execute(&mut conn)
        .await;
        match created {
            Ok(_) => {}
            // Another process created it at the same moment.
            Err(e) if is_code(&e, "23505") || is_code(&e, "42P06") => {}
            Err(e) => return Err(e.into()),
        }
        conn.close().await?;
        Self::connect(url, opts.options([("search_path", schema)])).await
    }

    async fn connect(url: &str, opts: PgConnectOptions) -> Result<Self> {
        // No JIT: the store's statements are short, and the planner's estimates for range joins
        // (an IP window against `events`) are large enough to trigger compilation that costs
        // more than the query (measured: an investigation at 100,000 customers 2.3-3.0 s with
        // JIT, 1.7-1.8 s without).
        let opts = opts.options([("jit", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .min_connections(1)
            // A round trip per statement otherwise (measured: 14 % of a serving node's CPU). A
            // connection found broken by its statement is closed, and that statement fails; idle
            // ones are closed after a minute anyway.
            .test_before_acquire(false)
            .idle_timeout(std::time::Duration::from_secs(60))
            .connect_with(opts)
            .await
            .map_err(|e| open_error(url, e))?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PgStore {
            pool,
            months: Arc::default(),
            loading: Arc::default(),
            bulk: Arc::default(),
            keys: Arc::default(),
            ua_families: Arc::default(),
            node: node_id(),
            hot: None,
            pruner: Arc::default(),
            keep: Keep::default(),
            async_records: false,
        })
    }

    /// With `yes`, the common case of recorded assessments (allowed or challenged attempts that
    /// open no alert and send no notice, so not withdrawals: the server's recorder's groups)
    /// commits asynchronously, `synchronous_commit = off` for those transactions alone: the
    /// answer does not wait for the WAL to reach the disk. A crash of mamori loses nothing; a
    /// crash of PostgreSQL or its host can lose the last such commits (up to three times the
    /// server's `wal_writer_delay`, 600 ms by default), never part of one, and never alerts,
    /// withdrawals (a group holding one commits as the server is configured), credentials,
    /// switches, the audit log, imports or consumed streams, which stay as the server is
    /// configured. The PostgreSQL counterpart of SQLite's `synchronous = NORMAL`
    /// ([`crate::Store::open_with`]). Off unless asked for.
    pub fn async_records(mut self, yes: bool) -> Self {
        self.async_records = yes;
        self
    }

    /// The server's hot cache of customers' events and IPs' uses (see [`crate::hot`]), holding
    /// at most `max_rows` events, kept current with other processes' writes by the change feed
    /// ([`feed`]). For a process that serves; a batch reads the database.
    pub async fn with_hot(mut self, max_rows: usize) -> Result<Self> {
        // A number of its own: a copy of the store made before has no cache, and the feed must
        // bring its writes here like another process's.
        self.node = node_id();
        // Told once, where an operator reads a serving node's log: mamori vacuums its change
        // feed itself, but no other table.
        let autovacuum: String = sqlx::query_scalar("SELECT current_setting('autovacuum')")
            .fetch_one(&self.pool)
            .await?;
        if autovacuum != "on" {
            tracing::warn!(
                "PostgreSQL's autovacuum is off: run VACUUM ANALYZE regularly (after imports \
                 and purges at least), or statistics go stale and plans with them"
            );
        }
        let from = feed::now(&self.pool).await?;
        let hot = Arc::new(crate::hot::Hot::new(max_rows, 0));
        feed::spawn(
            self.pool.clone(),
            Arc::downgrade(&hot),
            self.node,
            from,
            self.pruner.clone(),
        );
        self.hot = Some(hot);
        Ok(self)
    }

    /// The hot cache's counters, when there is one.
    pub fn hot_stats(&self) -> Option<crate::hot::HotStats> {
        self.hot.as_ref().map(|h| h.stats())
    }

    /// Commits a transaction that may have stored events: writes its row of the change feed
    /// first, and after the commit adds its events to this node's cache and its keys to the
    /// key cache. A failed commit empties the cache (whether it took effect is unknown).
    pub(crate) async fn commit(
        &self,
        mut tx: Transaction<'static, Postgres>,
        fresh: events::Fresh,
    ) -> Result<()> {
        let written = feed::write(&mut tx, self.node, &fresh.news).await?;
        if let Err(e) = tx.commit().await {
            if let Some(h) = &self.hot {
                h.clear();
            }
            return Err(e.into());
        }
        self.committed(fresh, written.map(|w| w.0));
        if let Some((_, xmin)) = written
            && let Some(floor) = lock(&self.pruner).note(xmin)
        {
            feed::prune_later(&self.pool, floor);
        }
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        // Marked closed at once, so that no connection is kept after the kept ones are let go.
        let closing = self.pool.close();
        lock(&self.keep.0).clear();
        closing.await;
    }

    /// The pool, for tests and maintenance.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// Makes sure the partitions of the months of `times` exist, each created (if missing) in a
    /// transaction of its own, serialised across processes by an advisory lock. Called before the
    /// transaction that inserts, never inside one (a month is attached with a lock that lets
    /// `events` be read and written, but a loading month's `CREATE TABLE … PARTITION OF` waits
    /// for the transactions that use `events_load`). While loading ([`PgStore::begin_loading`]), a month
    /// `events` lacks is created beside it, in `events_load`.
    pub(crate) async fn ensure_months(&self, times: impl IntoIterator<Item = i64>) -> Result<()> {
        let bulk = self.bulk.load(Ordering::Relaxed);
        let missing: Vec<i64> = {
            let known = lock(&self.months);
            let loading = lock(&self.loading);
            let wanted: BTreeSet<i64> = times.into_iter().map(month_of).collect();
            wanted
                .into_iter()
                .filter(|m| !known.contains(m) && !loading.contains(m))
                .collect()
        };
        for m in missing {
            let (lo, hi) = month_bounds(m);
            let mut tx = self.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PARTITION_LOCK)
                .execute(&mut *tx)
                .await?;
            let exists = has_partition(&mut tx, m).await?;
            let attached = !bulk || exists;
            let sql = if exists {
                vec![]
            } else if attached {
                // Created, then attached: `CREATE TABLE … PARTITION OF` would take an exclusive
                // lock on `events`, waiting for every query reading it (a long investigation)
                // and stopping every node's reads and writes behind it; attaching takes a lock
                // that lets them run. Attaching builds the (empty) month's indexes.
                let part = partition_name(m);
                vec![
                    format!(
                        "CREATE TABLE {part} (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                    ),
                    format!(
                        "ALTER TABLE events ATTACH PARTITION {part} FOR VALUES FROM ({lo}) TO ({hi})"
                    ),
                ]
            } else {
                vec![format!(
                    "CREATE TABLE IF NOT EXISTS {} PARTITION OF events_load \
                     FOR VALUES FROM ({lo}) TO ({hi})",
                    loading_name(m)
                )]
            };
            for sql in sql {
                sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            lock(if attached {
                &self.months
            } else {
                &self.loading
            })
            .insert(m);
        }
        Ok(())
    }

    /// Whether this process loads the month `m` beside `events`.
    pub(crate) fn is_loading(&self, m: i64) -> bool {
        lock(&self.loading).contains(&m)
    }

    /// Forgets which partitions exist (another process may have dropped some).
    pub(crate) fn forget_months(&self) {
        lock(&self.months).clear();
        lock(&self.loading).clear();
    }
}

/// A number for this process in the change feed: random, so that processes on several machines
/// do not collide.
fn node_id() -> i64 {
    use std::hash::BuildHasher;
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::collections::hash_map::RandomState::new().hash_one((t, std::process::id())) as i64
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `events` has the partition of month `m`.
async fn has_partition(conn: &mut PgConnection, m: i64) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'events'::regclass AND c.relname = $1)",
    )
    .bind(partition_name(m))
    .fetch_one(&mut *conn)
    .await?)
}

/// Whether a database error has this SQLSTATE.
pub(crate) fn is_code(e: &sqlx::Error, code: &str) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == code)
}

/// Whether an insert failed for want of a partition for a row ("no partition of relation …
/// found for row", SQLSTATE 23514).
pub(crate) fn is_missing_partition(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(e) if is_code(e, "23514")
        && e.as_database_error().is_some_and(|d| d.message().contains("no partition")))
}

/// The month of a time: `year * 12 + month - 1` (UTC).
pub fn month_of(at: i64) -> i64 {
    let (y, m, _) = civil_from_days(at.div_euclid(DAY_US));
    y * 12 + i64::from(m) - 1
}

/// The first microsecond of a month, `None` past the range of i64.
fn month_start(month: i64) -> Option<i64> {
    let (y, m) = (month.div_euclid(12), month.rem_euclid(12) as u32 + 1);
    days_from_civil(y, m, 1).checked_mul(DAY_US)
}

/// A month's partition bounds as SQL (`MINVALUE`/`MAXVALUE` at the ends of i64).
fn month_bounds(month: i64) -> (String, String) {
    let bound =
        |m: i64, outside: &str| month_start(m).map_or(outside.to_owned(), |t| t.to_string());
    (bound(month, "MINVALUE"), bound(month + 1, "MAXVALUE"))
}

/// The partition of a month: `events_2020_01` (years before 1 or after 9999 as they are, with
/// `m` for a minus sign).
pub fn partition_name(month: i64) -> String {
    let (y, m) = (month.div_euclid(12), month.rem_euclid(12) + 1);
    if y < 0 {
        format!("events_m{:04}_{m:02}", -y)
    } else {
        format!("events_{y:04}_{m:02}")
    }
}

/// The table a month is loaded into beside `events`: `loading_2020_01`.
pub fn loading_name(month: i64) -> String {
    format!("loading_{}", &partition_name(month)["events_".len()..])
}

/// The month of a table made by [`loading_name`].
pub fn loading_month(name: &str) -> Option<i64> {
    partition_month(&format!("events_{}", name.strip_prefix("loading_")?))
}

/// The month of a partition name made by [`partition_name`].
pub fn partition_month(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("events_")?;
    let (y, m) = rest.rsplit_once('_')?;
    let y: i64 = match y.strip_prefix('m') {
        Some(neg) => -neg.parse::<i64>().ok()?,
        None => y.parse().ok()?,
    };
    let m: i64 = m.parse().ok()?;
    if !(1..=12).contains(&m) {
        return None;
    }
    Some(y * 12 + m - 1)
}

/// The first microsecond after a month (`i64::MAX` past the range).
fn month_end(month: i64) -> i64 {
    month_start(month + 1).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mamori_core::time::parse_rfc3339;

    #[test]
    fn months_names_and_bounds_agree() {
        let t = |s: &str| parse_rfc3339(s).expect("time");
        let jan = month_of(t("2020-01-31T23:59:59.999999Z"));
        assert_eq!(jan, 2020 * 12);
        assert_eq!(month_of(t("2020-02-01T00:00:00Z")), jan + 1);
        // Tokyo's 1 February 08:00 is still January in UTC.
        assert_eq!(month_of(t("2020-02-01T08:00:00+09:00")), jan);
        assert_eq!(partition_name(jan), "events_2020_01");
        assert_eq!(partition_month("events_2020_01"), Some(jan));
        assert_eq!(
            month_bounds(jan),
            (
                t("2020-01-01T00:00:00Z").to_string(),
                t("2020-02-01T00:00:00Z").to_string()
            )
        );
        assert_eq!(month_end(jan), t("2020-02-01T00:00:00Z"));
        for at in [i64::MIN, -1, 0, 1, i64::MAX] {
            let m = month_of(at);
            assert_eq!(partition_month(&partition_name(m)), Some(m), "{at}");
            assert_eq!(loading_month(&loading_name(m)), Some(m), "{at}");
            let (lo, hi) = month_bounds(m);
            let inside = |b: &str, f: fn(i64, i64) -> bool| b.parse().map_or(true, |b| f(b, at));
            assert!(inside(&lo, |b, at| b <= at), "{at} {lo}");
            assert!(inside(&hi, |b, at| at < b), "{at} {hi}");
        }
        assert_eq!(partition_month("events_2020_13"), None);
        assert_eq!(partition_month("event_keys"), None);
        assert_eq!(loading_name(jan), "loading_2020_01");
        assert_eq!(loading_month("events_2020_01"), None);
        assert!(valid_schema("mamori_test_1") && !valid_schema("x; drop") && !valid_schema(""));
        assert_eq!(
            redacted("postgres://u:secret@host/db"),
            "postgres://…@host/db"
        );
    }

    #[test]
    fn sensitive_kinds_match_the_partial_index() {
        let migration = include_str!("../../migrations/postgres/0001_schema.sql");
        for k in mamori_core::event::Kind::ALL {
            let code = format!("{}", k.code());
            let listed = migration
                .split("WHERE kind IN (")
                .nth(1)
                .and_then(|r| r.split(')').next())
                .is_some_and(|l| l.split(", ").any(|c| c == code));
            assert_eq!(listed, k.is_sensitive(), "{k}");
        }
        assert!(migration.contains(&format!("WHERE kind IN {}", events::SENSITIVE_SQL)));
    }
}
