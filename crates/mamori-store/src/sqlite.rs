//! The embedded store: one SQLite file (`mamori.db` by default), WAL journal.
//!
//! Durability: `journal_mode=WAL` with `synchronous=NORMAL`. A committed batch survives a crash of
//! the process; a power loss may lose the last transactions but never corrupts the file.

use std::path::Path;
use std::time::Duration;

use futures_util::TryStreamExt;
use mamori_core::event::{Channel, Destination, Event, Kind, Side};
use mamori_core::history::{Access, device_hash};
use mamori_core::investigate::Procedure;
use mamori_core::net::{bytes_key, ip_key, key_bytes, key_ip};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row};

use crate::{EventWriter, HistoryReader, Inserted, IpEvent, Result, Retention, StoreError};

/// Rows per INSERT statement (17 parameters each; SQLite allows 32,766 per statement).
const ROWS_PER_INSERT: usize = 500;
/// Kinds kept in the partial index `events_sensitive` (migration 0002), and its condition.
const SENSITIVE_KINDS: [u8; 8] = [4, 5, 7, 8, 9, 10, 11, 12];
const SENSITIVE_SQL: &str = "(4, 5, 7, 8, 9, 10, 11, 12)";

/// Keys per `IN (…)` list.
const KEYS_PER_QUERY: usize = 500;

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn kind_of(code: i64) -> Result<Kind> {
    Kind::from_code(code).ok_or_else(|| corrupt("unknown kind code"))
}

fn channel_of(code: i64) -> Result<Channel> {
    Channel::from_code(code).ok_or_else(|| corrupt("unknown channel code"))
}

fn ip_of(b: Option<Vec<u8>>) -> Result<Option<u128>> {
    b.map(|b| bytes_key(&b).ok_or_else(|| corrupt("IP key is not 16 bytes")))
        .transpose()
}

fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(n * 2);
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push('?');
    }
    s
}

impl SqliteStore {
    /// Opens (creating if needed) the store file and applies migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .pragma("cache_size", "-262144")
            .pragma("temp_store", "memory")
            .pragma("mmap_size", "1073741824")
            // Checkpoint the WAL every ~400 MB rather than every 4 MB: fewer, larger writes.
            .pragma("wal_autocheckpoint", "100000");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    /// Opens a `sqlite://` URL or a plain path.
    pub async fn open_url(url: &str) -> Result<Self> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        Self::open(Path::new(path)).await
    }

    /// Closes the pool, checkpointing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The pool, for tests and maintenance.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

fn access_row(r: &SqliteRow) -> Result<(String, Access)> {
    Ok((
        r.try_get(0)?,
        Access {
            at: r.try_get(1)?,
            kind: kind_of(r.try_get(2)?)?,
            channel: channel_of(r.try_get(3)?)?,
            ip: ip_of(r.try_get(4)?)?,
            device: r.try_get::<Option<i64>, _>(5)?.map(|d| d as u64),
        },
    ))
}

fn ip_event_row(r: &SqliteRow) -> Result<IpEvent> {
    Ok(IpEvent {
        ip: ip_of(r.try_get(0)?)?.ok_or_else(|| corrupt("missing IP"))?,
        at: r.try_get(1)?,
        customer_id: r.try_get(2)?,
        kind: kind_of(r.try_get(3)?)?,
    })
}

impl EventWriter for SqliteStore {
    async fn insert_events(&self, events: &[Event]) -> Result<Inserted> {
        let mut tx = self.pool.begin().await?;
        let mut inserted = 0u64;
        for chunk in events.chunks(ROWS_PER_INSERT) {
            let mut sql = String::from(
                "INSERT INTO events (event_id, occurred_at, customer_id, kind, channel, ip, device_hash, \
                 device_id, user_agent, amount, side, dest_bank_code, dest_branch_code, \
                 dest_account_type, dest_account_number, dest_holder_kana) VALUES ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str("(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
            }
            sql.push_str(" ON CONFLICT (event_id) DO NOTHING");
            let keys: Vec<Option<[u8; 16]>> = chunk
                .iter()
                .map(|e| e.ip.map(|ip| key_bytes(ip_key(ip))))
                .collect();
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (e, key) in chunk.iter().zip(&keys) {
                let d = e.destination.as_ref();
                q = q
                    .bind(e.event_id.as_str())
                    .bind(e.occurred_at)
                    .bind(e.customer_id.as_str())
                    .bind(e.kind.code() as i64)
                    .bind(e.channel.code() as i64)
                    .bind(key.as_ref().map(|k| &k[..]))
                    .bind(e.device_id.as_deref().map(|d| device_hash(d) as i64))
                    .bind(e.device_id.as_deref())
                    .bind(e.user_agent.as_deref())
                    .bind(e.amount)
                    .bind(e.side.map(|s| s.code() as i64))
                    .bind(d.map(|d| d.bank_code.as_str()))
                    .bind(d.map(|d| d.branch_code.as_str()))
                    .bind(d.map(|d| d.account_type.as_str()))
                    .bind(d.map(|d| d.account_number.as_str()))
                    .bind(d.map(|d| d.holder_kana.as_str()));
            }
            inserted += q.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(Inserted {
            inserted,
            duplicates: events.len() as u64 - inserted,
        })
    }
}

impl HistoryReader for SqliteStore {
    async fn customer_accesses(
        &self,
        customers: &[&str],
        from: i64,
        to: i64,
    ) -> Result<Vec<(String, Access)>> {
        let mut out = Vec::new();
        for chunk in customers.chunks(KEYS_PER_QUERY) {
            let sql = format!(
                "SELECT customer_id, occurred_at, kind, channel, ip, device_hash FROM events \
                 WHERE customer_id IN ({}) AND occurred_at >= ? AND occurred_at < ?",
                placeholders(chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for c in chunk {
                q = q.bind(*c);
            }
            let mut rows = q.bind(from).bind(to).fetch(&self.pool);
            while let Some(r) = rows.try_next().await? {
                out.push(access_row(&r)?);
            }
        }
        Ok(out)
    }

    async fn ip_range_events(
        &self,
        lo: u128,
        hi: u128,
        from: i64,
        to: i64,
    ) -> Result<Vec<IpEvent>> {
        let (lo, hi) = (key_bytes(lo), key_bytes(hi));
        let mut rows = sqlx::query(
            "SELECT ip, occurred_at, customer_id, kind FROM events \
             WHERE ip >= ? AND ip <= ? AND occurred_at >= ? AND occurred_at < ?",
        )
        .bind(&lo[..])
        .bind(&hi[..])
        .bind(from)
        .bind(to)
        .fetch(&self.pool);
        let mut out = Vec::new();
        while let Some(r) = rows.try_next().await? {
            out.push(ip_event_row(&r)?);
        }
        Ok(out)
    }

    async fn ip_events(&self, ips: &[u128], from: i64, to: i64) -> Result<Vec<IpEvent>> {
        let mut out = Vec::new();
        for chunk in ips.chunks(KEYS_PER_QUERY) {
            let sql = format!(
                "SELECT ip, occurred_at, customer_id, kind FROM events \
                 WHERE ip IN ({}) AND occurred_at >= ? AND occurred_at < ?",
                placeholders(chunk.len())
            );
            let keys: Vec<[u8; 16]> = chunk.iter().map(|k| key_bytes(*k)).collect();
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for k in &keys {
                q = q.bind(&k[..]);
            }
            let mut rows = q.bind(from).bind(to).fetch(&self.pool);
            while let Some(r) = rows.try_next().await? {
                out.push(ip_event_row(&r)?);
            }
        }
        Ok(out)
    }

    async fn procedures(&self, kind: Kind, from: i64, to: i64) -> Result<Vec<Procedure>> {
        // The kind is written into the statement (a small integer from an enum, never input
        // text), with the index's own condition repeated, so that SQLite can prove the partial
        // index `events_sensitive` applies. Other kinds are found by a scan.
        let partial = if SENSITIVE_KINDS.contains(&kind.code()) {
            format!(" AND kind IN {SENSITIVE_SQL}")
        } else {
            String::new()
        };
        let sql = format!(
            "SELECT event_id, customer_id, occurred_at, channel, ip, device_id FROM events \
             WHERE kind = {}{partial} AND occurred_at >= ? AND occurred_at < ?",
            kind.code()
        );
        let mut rows = sqlx::query(AssertSqlSafe(sql))
            .bind(from)
            .bind(to)
            .fetch(&self.pool);
        let mut out = Vec::new();
        while let Some(r) = rows.try_next().await? {
            out.push(Procedure {
                event_id: r.try_get(0)?,
                customer_id: r.try_get(1)?,
                occurred_at: r.try_get(2)?,
                channel: channel_of(r.try_get(3)?)?,
                ip: ip_of(r.try_get(4)?)?.map(key_ip),
                device_id: r.try_get(5)?,
            });
        }
        Ok(out)
    }

    async fn customer_events(&self, customer: &str, from: i64, to: i64) -> Result<Vec<Event>> {
        let mut rows = sqlx::query(
            "SELECT event_id, occurred_at, customer_id, kind, channel, ip, device_id, user_agent, \
             amount, side, dest_bank_code, dest_branch_code, dest_account_type, \
             dest_account_number, dest_holder_kana FROM events \
             WHERE customer_id = ? AND occurred_at >= ? AND occurred_at < ? \
             ORDER BY occurred_at, event_id",
        )
        .bind(customer)
        .bind(from)
        .bind(to)
        .fetch(&self.pool);
        let mut out = Vec::new();
        while let Some(r) = rows.try_next().await? {
            let bank: Option<String> = r.try_get(10)?;
            out.push(Event {
                event_id: r.try_get(0)?,
                occurred_at: r.try_get(1)?,
                customer_id: r.try_get(2)?,
                kind: kind_of(r.try_get(3)?)?,
                channel: channel_of(r.try_get(4)?)?,
                ip: ip_of(r.try_get(5)?)?.map(key_ip),
                device_id: r.try_get(6)?,
                user_agent: r.try_get(7)?,
                amount: r.try_get(8)?,
                side: r
                    .try_get::<Option<i64>, _>(9)?
                    .map(|c| Side::from_code(c).ok_or_else(|| corrupt("unknown side code")))
                    .transpose()?,
                destination: match bank {
                    None => None,
                    Some(bank_code) => Some(Destination {
                        bank_code,
                        branch_code: r.try_get::<Option<String>, _>(11)?.unwrap_or_default(),
                        account_type: r.try_get::<Option<String>, _>(12)?.unwrap_or_default(),
                        account_number: r.try_get::<Option<String>, _>(13)?.unwrap_or_default(),
                        holder_kana: r.try_get::<Option<String>, _>(14)?.unwrap_or_default(),
                    }),
                },
            });
        }
        Ok(out)
    }

    async fn count_events(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }
}

impl Retention for SqliteStore {
    async fn purge_before(&self, t: i64) -> Result<u64> {
        let mut total = 0;
        // In chunks, so a large purge does not hold the write lock for long. Old events sit at
        // the start of the table (rowids grow with arrival), so each chunk's scan is short.
        loop {
            let n = sqlx::query(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events \
                 WHERE occurred_at < ? LIMIT 50000)",
            )
            .bind(t)
            .execute(&self.pool)
            .await?
            .rows_affected();
            total += n;
            if n == 0 {
                break;
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_kinds_match_the_partial_index_and_the_domain() {
        let listed: Vec<u8> = SENSITIVE_SQL
            .trim_matches(|c| c == '(' || c == ')')
            .split(", ")
            .map(|n| n.parse().unwrap_or(0))
            .collect();
        assert_eq!(listed, SENSITIVE_KINDS);
        let migration = include_str!("../migrations/sqlite/0002_sensitive_kind_index.sql");
        assert!(migration.contains(&format!("WHERE kind IN {SENSITIVE_SQL}")));
        for k in Kind::ALL {
            let sensitive = crate::investigate::is_sensitive(*k);
            assert_eq!(SENSITIVE_KINDS.contains(&k.code()), sensitive, "{k}");
        }
    }

    #[tokio::test]
    async fn procedures_of_a_sensitive_kind_use_the_partial_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SqliteStore::open(&dir.path().join("plan.db"))
            .await
            .expect("open");
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN SELECT event_id FROM events WHERE kind = 4 AND kind IN {SENSITIVE_SQL} \
             AND occurred_at >= 0 AND occurred_at < 1"
        )))
        .fetch_all(s.pool())
        .await
        .expect("plan");
        assert!(
            plan.iter().any(|r| r.3.contains("events_sensitive")),
            "{plan:?}"
        );
    }
}
