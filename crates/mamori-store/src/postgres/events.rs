//! Events in the PostgreSQL store: the insert path ([`insert_in`], the one place batches are
//! written), history questions and retention.
//!
//! `events` is partitioned by month of `occurred_at`; partitions are created on demand
//! ([`PgStore::ensure_months`]). Idempotency by `(customer, event_id)` is kept by the
//! unpartitioned `event_keys`: a batch inserts its keys with `ON CONFLICT DO NOTHING RETURNING`
//! and, in the same statement, the events of the keys that were new. Of two processes inserting
//! the same key at once, the second waits for the first's transaction and then skips it.
//!
//! IP questions read the events themselves (index `events_ip`): each event is one use, which
//! [`HistoryReader::ip_uses`] allows; the SQLite store's per-day aggregate (`ip_seen`) is not
//! kept here.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use mamori_core::assess::{Past, ua_family_hash};
use mamori_core::event::{Destination, Event, Kind};
use mamori_core::history::{Access, IpActivity, IpUse, device_hash};
use mamori_core::investigate::Procedure;
use mamori_core::net::{ip_key, key_bytes, key_ip};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::{PgStore, is_missing_partition, month_end, month_of, partition_month};
use crate::hot::{Hot, IpNeed, Seen, Snapshot};
use crate::sqlite::{channel_of, corrupt, ip_of, kind_of, side_of, utc_day};
use crate::{
    EventWriter, HistoryReader, Inserted, IpEvent, LoginFeatures, Result, Retention, StoreError,
};
use mamori_core::time::DAY_US;
use std::sync::Arc;

/// Kinds kept in the partial index `events_sensitive` (as in the SQLite store).
pub(crate) const SENSITIVE_SQL: &str = "(4, 5, 7, 8, 9, 10, 11, 12)";

/// Committed keys of the side tables, so that a batch looks each text up once per process. Keys
/// of a transaction are added only after it commits ([`Fresh`]).
#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    customers: HashMap<Box<str>, i64>,
    devices: HashMap<Box<str>, i64>,
    agents: HashMap<Box<str>, i64>,
}

/// Keys a transaction looked up or created, for the cache once it commits, and the events it
/// stored, for the change feed and this node's hot cache ([`PgStore::commit`]).
#[derive(Debug, Default)]
pub(crate) struct Fresh {
    customers: Vec<(Box<str>, i64)>,
    devices: Vec<(Box<str>, i64)>,
    agents: Vec<(Box<str>, i64)>,
    pub(crate) news: super::feed::News,
}

impl PgStore {
    /// The keys of an event's customer, device and user agent, if this process holds them all.
    pub(crate) fn cached_keys(&self, e: &Event) -> Option<(i64, Option<i64>, Option<i64>)> {
        let c = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let customer = *c.customers.get(e.customer_id.as_str())?;
        let device = match e.device_id.as_deref() {
            Some(d) => Some(*c.devices.get(d)?),
            None => None,
        };
        let agent = match e.user_agent.as_deref() {
            Some(u) => Some(*c.agents.get(u)?),
            None => None,
        };
        Some((customer, device, agent))
    }

    /// Adds committed keys of customers, devices and user agents to the cache.
    pub(crate) fn learn_keys(
        &self,
        customers: impl Iterator<Item = (Box<str>, i64)>,
        devices: impl Iterator<Item = (Box<str>, i64)>,
        agents: impl Iterator<Item = (Box<str>, i64)>,
    ) {
        let mut c = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        c.customers.extend(customers);
        c.devices.extend(devices);
        c.agents.extend(agents);
    }

    /// Adds the keys of a committed transaction to the cache, and its events (transaction `tx`)
    /// to the hot cache.
    pub(crate) fn committed(&self, fresh: Fresh, tx: Option<u64>) {
        self.learn_keys(
            fresh.customers.into_iter(),
            fresh.devices.into_iter(),
            fresh.agents.into_iter(),
        );
        if let (Some(h), Some(tx)) = (&self.hot, tx) {
            super::feed::apply(h, tx, fresh.news);
        }
    }
}

/// The side tables, by what they intern.
#[derive(Clone, Copy)]
pub(super) enum SideTable {
    Customers,
    Devices,
    Agents,
}

impl SideTable {
    /// (table, key column, text column)
    pub(super) fn sql(self) -> (&'static str, &'static str, &'static str) {
        match self {
            SideTable::Customers => ("customers", "customer_key", "customer_id"),
            SideTable::Devices => ("devices", "device_key", "device_id"),
            SideTable::Agents => ("user_agents", "ua_key", "user_agent"),
        }
    }
}

/// The keys of `texts` in a side table, creating those missing, inside the caller's transaction.
async fn intern(
    conn: &mut PgConnection,
    store: &PgStore,
    side: SideTable,
    texts: HashSet<&str>,
    fresh: &mut Fresh,
) -> Result<(HashMap<Box<str>, i64>, Vec<i64>)> {
    let mut out: HashMap<Box<str>, i64> = HashMap::with_capacity(texts.len());
    let mut missing: Vec<&str> = Vec::new();
    {
        let cache = store.keys.lock().unwrap_or_else(|p| p.into_inner());
        let cache = match side {
            SideTable::Customers => &cache.customers,
            SideTable::Devices => &cache.devices,
            SideTable::Agents => &cache.agents,
        };
        for t in texts {
            match cache.get(t) {
                Some(k) => {
                    out.insert(t.into(), *k);
                }
                None => missing.push(t),
            }
        }
    }
    if missing.is_empty() {
        return Ok((out, Vec::new()));
    }
    // In text order, so that two transactions creating the same keys lock them in one order.
    missing.sort_unstable();
    let (table, key, text) = side.sql();
    let created: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "INSERT INTO {table} ({text}) SELECT t FROM unnest($1::text[]) AS t ORDER BY t \
         ON CONFLICT ({text}) DO NOTHING RETURNING {key}"
    )))
    .bind(&missing)
    .fetch_all(&mut *conn)
    .await?;
    let found: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {text}, {key} FROM {table} WHERE {text} = ANY($1::text[])"
    )))
    .bind(&missing)
    .fetch_all(&mut *conn)
    .await?;
    if found.len() != missing.len() {
        return Err(corrupt("a side-table key vanished"));
    }
    let list = match side {
        SideTable::Customers => &mut fresh.customers,
        SideTable::Devices => &mut fresh.devices,
        SideTable::Agents => &mut fresh.agents,
    };
    for (t, k) in found {
        let t: Box<str> = t.into();
        list.push((t.clone(), k));
        out.insert(t, k);
    }
    Ok((out, created))
}

impl PgStore {
    /// Creates the side-table keys of a batch's customers, devices and user agents in a short
    /// transaction of their own, before the batch's. Otherwise two batches being stored at once
    /// that share a device or a user agent would wait for each other's whole transaction (the
    /// second's insert of the key waits for the first to commit). A batch that then fails leaves
    /// its keys behind, which is harmless: nothing reads a key without an event.
    ///
    /// Returns the keys of the customers it created: no event of theirs was stored before.
    async fn intern_committed(&self, events: &[Event]) -> Result<HashSet<i64>> {
        let customer_ids: HashSet<&str> = events.iter().map(|e| e.customer_id.as_str()).collect();
        let device_ids: HashSet<&str> = events
            .iter()
            .filter_map(|e| e.device_id.as_deref())
            .collect();
        let agent_texts: HashSet<&str> = events
            .iter()
            .filter_map(|e| e.user_agent.as_deref())
            .collect();
        let mut tx = self.begin().await?;
        let mut fresh = Fresh::default();
        let (_, created) = intern(
            &mut tx,
            self,
            SideTable::Customers,
            customer_ids,
            &mut fresh,
        )
        .await?;
        intern(&mut tx, self, SideTable::Devices, device_ids, &mut fresh).await?;
        intern(&mut tx, self, SideTable::Agents, agent_texts, &mut fresh).await?;
        tx.commit().await?;
        self.committed(fresh, None);
        Ok(created.into_iter().collect())
    }
}

/// Stores events idempotently inside the caller's transaction: the first copy of a
/// `(customer_id, event_id)` wins, in the batch and against what is stored. Returns how many
/// were new. The months' partitions must exist ([`PgStore::ensure_months`]).
///
/// Set-based: the side-table keys in two statements per table, then one statement that inserts
/// the keys into `event_keys` and the events of the new ones (arrays bound once, `unnest`).
/// Events of `new_customers` (created for this batch, so with nothing stored) skip the check
/// when there are many ([`copy_fresh`]).
pub(crate) async fn insert_in(
    conn: &mut PgConnection,
    store: &PgStore,
    events: &[Event],
    fresh: &mut Fresh,
    new_customers: &HashSet<i64>,
) -> Result<u64> {
    let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(events.len());
    let rows: Vec<&Event> = events
        .iter()
        .filter(|e| seen.insert((e.customer_id.as_str(), e.event_id.as_str())))
        .collect();
    drop(seen);
    if rows.is_empty() {
        return Ok(0);
    }
    let customer_ids: HashSet<&str> = rows.iter().map(|e| e.customer_id.as_str()).collect();
    let device_ids: HashSet<&str> = rows.iter().filter_map(|e| e.device_id.as_deref()).collect();
    let agent_texts: HashSet<&str> = rows
        .iter()
        .filter_map(|e| e.user_agent.as_deref())
        .collect();
    let (customers, _) = intern(conn, store, SideTable::Customers, customer_ids, fresh).await?;
    let (devices, _) = intern(conn, store, SideTable::Devices, device_ids, fresh).await?;
    let (agents, _) = intern(conn, store, SideTable::Agents, agent_texts, fresh).await?;
    let keys = (&customers, &devices, &agents);
    // A bulk load tells the feed only that much changed; otherwise the new events go to it.
    let exact = !store.bulk.load(std::sync::atomic::Ordering::Relaxed);
    let mut news = exact.then(Vec::new);
    // Events of months being loaded beside `events` go there.
    let (loading, attached): (Vec<&Event>, Vec<&Event>) = rows
        .into_iter()
        .partition(|e| store.is_loading(month_of(e.occurred_at)));
    let mut n = 0;
    for (rows, target) in [(attached, "events"), (loading, "events_load")] {
        let (new, mut rows): (Vec<&Event>, Vec<&Event>) = rows.into_iter().partition(|e| {
            customers
                .get(e.customer_id.as_str())
                .is_some_and(|k| new_customers.contains(k))
        });
        if new.len() >= COPY_FROM {
            n += copy_fresh(conn, &new, keys, target).await?;
            if let Some(news) = &mut news {
                news.extend(new.iter().map(|e| (e.customer_id.clone(), Past::of(e))));
            }
        } else {
            rows.extend(new);
        }
        if rows.is_empty() {
        } else if rows.len() >= COPY_FROM {
            n += copy_in(conn, &rows, keys, target, news.as_mut()).await?;
        } else {
            n += bind_in(conn, &rows, keys, target, news.as_mut()).await?;
        }
    }
    match news {
        Some(news) => fresh.news.events.extend(news),
        None => fresh.news.clear |= n > 0,
    }
    Ok(n)
}

/// Runs a statement made by [`store_new`]: returns how many events were stored and, with
/// `news`, adds them there.
async fn run_store_new(
    conn: &mut PgConnection,
    q: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    rows: &[&Event],
    customers: &HashMap<Box<str>, i64>,
    news: Option<&mut Vec<(String, Past)>>,
) -> Result<u64> {
    let Some(news) = news else {
        return Ok(q.execute(&mut *conn).await?.rows_affected());
    };
    let stored: Vec<(i64, String)> = q
        .try_map(|r: PgRow| Ok((r.try_get(0)?, r.try_get(1)?)))
        .fetch_all(&mut *conn)
        .await?;
    let stored: HashSet<(i64, &str)> = stored.iter().map(|(k, id)| (*k, id.as_str())).collect();
    for e in rows {
        let k = customers.get(e.customer_id.as_str()).copied();
        if k.is_some_and(|k| stored.contains(&(k, e.event_id.as_str()))) {
            news.push((e.customer_id.clone(), Past::of(e)));
        }
    }
    Ok(stored.len() as u64)
}

/// The side-table keys of a batch: customers, devices, user agents.
type BatchKeys<'a> = (
    &'a HashMap<Box<str>, i64>,
    &'a HashMap<Box<str>, i64>,
    &'a HashMap<Box<str>, i64>,
);

/// Stores `rows` (no two with one key) into `target` by binding arrays: one round trip.
async fn bind_in(
    conn: &mut PgConnection,
    rows: &[&Event],
    (customers, devices, agents): BatchKeys<'_>,
    target: &str,
    news: Option<&mut Vec<(String, Past)>>,
) -> Result<u64> {
    let n = rows.len();
    let mut customer_key = Vec::with_capacity(n);
    let mut occurred_at = Vec::with_capacity(n);
    let mut event_id = Vec::with_capacity(n);
    let mut kind = Vec::with_capacity(n);
    let mut channel = Vec::with_capacity(n);
    let mut ip = Vec::with_capacity(n);
    let mut dev_hash = Vec::with_capacity(n);
    let mut device_key = Vec::with_capacity(n);
    let mut ua_key = Vec::with_capacity(n);
    let mut amount = Vec::with_capacity(n);
    let mut side = Vec::with_capacity(n);
    let mut bank = Vec::with_capacity(n);
    let mut branch = Vec::with_capacity(n);
    let mut account_type = Vec::with_capacity(n);
    let mut account_number = Vec::with_capacity(n);
    let mut holder = Vec::with_capacity(n);
    for e in rows {
        let k = Keys::of(e, customers, devices, agents)?;
        customer_key.push(k.customer);
        occurred_at.push(e.occurred_at);
        event_id.push(e.event_id.as_str());
        kind.push(i16::from(e.kind.code()));
        channel.push(i16::from(e.channel.code()));
        ip.push(e.ip.map(|ip| key_bytes(ip_key(ip)).to_vec()));
        dev_hash.push(e.device_id.as_deref().map(|d| device_hash(d) as i64));
        device_key.push(k.device);
        ua_key.push(k.agent);
        amount.push(e.amount);
        side.push(e.side.map(|s| i16::from(s.code())));
        let d = e.destination.as_ref();
        bank.push(d.map(|d| d.bank_code.as_str()));
        branch.push(d.map(|d| d.branch_code.as_str()));
        account_type.push(d.map(|d| d.account_type.as_str()));
        account_number.push(d.map(|d| d.account_number.as_str()));
        holder.push(d.map(|d| d.holder_kana.as_str()));
    }
    let q = sqlx::query(AssertSqlSafe(format!(
        "WITH input AS ( \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::smallint[], \
                 $5::smallint[], $6::bytea[], $7::bigint[], $8::bigint[], $9::bigint[], \
                 $10::bigint[], $11::smallint[], $12::text[], $13::text[], $14::text[], \
                 $15::text[], $16::text[]) \
             AS t ({EVENT_COLUMNS}) \
         ), {}",
        store_new(target, news.is_some())
    )))
    .bind(customer_key)
    .bind(occurred_at)
    .bind(event_id)
    .bind(kind)
    .bind(channel)
    .bind(ip)
    .bind(dev_hash)
    .bind(device_key)
    .bind(ua_key)
    .bind(amount)
    .bind(side)
    .bind(bank)
    .bind(branch)
    .bind(account_type)
    .bind(account_number)
    .bind(holder);
    run_store_new(conn, q, rows, customers, news).await
}

/// Batches with at least this many new rows are sent with COPY into a temporary table; smaller
/// ones bind arrays (one round trip, no temporary table).
const COPY_FROM: usize = 2_000;

/// The columns of `events`, in the order both insert paths send them.
pub(crate) const EVENT_COLUMNS: &str = "customer_key, occurred_at, event_id, kind, channel, ip, device_hash, \
    device_key, ua_key, amount, side, dest_bank_code, dest_branch_code, dest_account_type, \
    dest_account_number, dest_holder_kana";

/// The statement's tail that stores the rows of `input` (no two with one key) into `target`
/// (`events` or `events_load`): their keys into `event_keys`, and the events of the keys that
/// were new. With `returning`, it returns the keys stored.
fn store_new(target: &str, returning: bool) -> String {
    let (head, tail) = if returning {
        (
            ", ins AS (",
            " RETURNING customer_key, event_id) SELECT * FROM ins",
        )
    } else {
        ("", "")
    };
    format!(
        "fresh AS ( \
             INSERT INTO event_keys (customer_key, event_id, occurred_at) \
             SELECT customer_key, event_id, occurred_at FROM input \
             ORDER BY customer_key, event_id COLLATE \"C\" \
             ON CONFLICT DO NOTHING \
             RETURNING customer_key, event_id \
         ){head} \
         INSERT INTO {target} ({EVENT_COLUMNS}) \
         SELECT i.customer_key, i.occurred_at, i.event_id, i.kind, i.channel, i.ip, \
             i.device_hash, i.device_key, i.ua_key, i.amount, i.side, i.dest_bank_code, \
             i.dest_branch_code, i.dest_account_type, i.dest_account_number, i.dest_holder_kana \
         FROM input i JOIN fresh f \
             ON f.customer_key = i.customer_key AND f.event_id = i.event_id{tail}"
    )
}

/// An event's side-table keys.
struct Keys {
    customer: i64,
    device: Option<i64>,
    agent: Option<i64>,
}

impl Keys {
    fn of(
        e: &Event,
        customers: &HashMap<Box<str>, i64>,
        devices: &HashMap<Box<str>, i64>,
        agents: &HashMap<Box<str>, i64>,
    ) -> Result<Keys> {
        let key = |m: &HashMap<Box<str>, i64>, t: &str| {
            m.get(t)
                .copied()
                .ok_or_else(|| corrupt("a side-table key is missing"))
        };
        Ok(Keys {
            customer: key(customers, &e.customer_id)?,
            device: e
                .device_id
                .as_deref()
                .map(|d| key(devices, d))
                .transpose()?,
            agent: e
                .user_agent
                .as_deref()
                .map(|u| key(agents, u))
                .transpose()?,
        })
    }
}

/// Sends `rows` (no two with one key) with COPY (binary format) into a temporary table dropped at
/// commit, then stores the new ones from there in one statement. COPY is parsed by the server
/// far faster than arrays of bound parameters, and the client's encoding overlaps it.
async fn copy_in(
    conn: &mut PgConnection,
    rows: &[&Event],
    (customers, devices, agents): BatchKeys<'_>,
    target: &str,
    news: Option<&mut Vec<(String, Past)>>,
) -> Result<u64> {
    // Sorting and joining 100,000s of keys: in memory, not in temporary files.
    sqlx::query("SET LOCAL work_mem = '256MB'")
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "CREATE TEMPORARY TABLE IF NOT EXISTS load_events ( \
             customer_key bigint NOT NULL, occurred_at bigint NOT NULL, \
             event_id text COLLATE \"C\" NOT NULL, kind smallint NOT NULL, \
             channel smallint NOT NULL, ip bytea, device_hash bigint, device_key bigint, \
             ua_key bigint, amount bigint, side smallint, dest_bank_code text, \
             dest_branch_code text, dest_account_type text, dest_account_number text, \
             dest_holder_kana text \
         ) ON COMMIT DROP",
    )
    .execute(&mut *conn)
    .await?;
    // A batch with rows for both `events` and `events_load` fills it twice.
    sqlx::query("TRUNCATE load_events")
        .execute(&mut *conn)
        .await?;
    copy_events(conn, "load_events", rows, (customers, devices, agents)).await?;
    let q = sqlx::query(AssertSqlSafe(format!(
        "WITH input AS (SELECT * FROM load_events), {}",
        store_new(target, news.is_some())
    )));
    run_store_new(conn, q, rows, customers, news).await
}

/// Sends `rows` of customers created for this batch (nothing of theirs is stored, and no two
/// rows have one key) with COPY straight into `event_keys` and `target`: no temporary table, no
/// conflict check, no join. If another process stored one of the same events since the
/// customer was created, the key's unique index fails the transaction, and
/// [`EventWriter::insert_events`] stores the batch again the usual way.
async fn copy_fresh(
    conn: &mut PgConnection,
    rows: &[&Event],
    (customers, devices, agents): BatchKeys<'_>,
    target: &str,
) -> Result<u64> {
    send_copy(
        conn,
        "COPY event_keys (customer_key, event_id, occurred_at) FROM STDIN (FORMAT binary)",
        rows,
        |buf, e| {
            copy_key(buf, e, &Keys::of(e, customers, devices, agents)?);
            Ok(())
        },
    )
    .await?;
    copy_events(conn, target, rows, (customers, devices, agents)).await?;
    Ok(rows.len() as u64)
}

/// Sends `rows` with COPY into `table` (`load_events`, `events` or `events_load`).
async fn copy_events(
    conn: &mut PgConnection,
    table: &str,
    rows: &[&Event],
    (customers, devices, agents): BatchKeys<'_>,
) -> Result<()> {
    send_copy(
        conn,
        &format!("COPY {table} ({EVENT_COLUMNS}) FROM STDIN (FORMAT binary)"),
        rows,
        |buf, e| {
            copy_row(buf, e, &Keys::of(e, customers, devices, agents)?);
            Ok(())
        },
    )
    .await
}

/// Runs a `COPY … FROM STDIN (FORMAT binary)` statement with `row` writing each of `rows` as a
/// tuple of COPY's binary format.
async fn send_copy(
    conn: &mut PgConnection,
    sql: &str,
    rows: &[&Event],
    mut row: impl FnMut(&mut Vec<u8>, &Event) -> Result<()>,
) -> Result<()> {
    let mut copy = conn.copy_in_raw(sql).await?;
    let mut buf: Vec<u8> = Vec::with_capacity(COPY_CHUNK + 4096);
    buf.extend_from_slice(COPY_BINARY_HEADER);
    for e in rows {
        row(&mut buf, e)?;
        if buf.len() >= COPY_CHUNK {
            copy.send(std::mem::take(&mut buf)).await?;
            buf.reserve(COPY_CHUNK + 4096);
        }
    }
    buf.extend_from_slice(COPY_BINARY_TRAILER);
    copy.send(buf).await?;
    copy.finish().await?;
    Ok(())
}

/// Bytes of COPY data per message.
const COPY_CHUNK: usize = 1 << 20;

/// One event as a tuple of COPY's binary format, in [`EVENT_COLUMNS`] order (the server reads
/// binary fields with less work than text: no parsing of numbers, no hex decoding).
fn copy_row(buf: &mut Vec<u8>, e: &Event, k: &Keys) {
    buf.extend_from_slice(&16i16.to_be_bytes());
    bin_i64(buf, Some(k.customer));
    bin_i64(buf, Some(e.occurred_at));
    bin_bytes(buf, Some(e.event_id.as_bytes()));
    bin_i16(buf, Some(i16::from(e.kind.code())));
    bin_i16(buf, Some(i16::from(e.channel.code())));
    bin_bytes(
        buf,
        e.ip.map(|ip| key_bytes(ip_key(ip)))
            .as_ref()
            .map(|b| &b[..]),
    );
    bin_i64(buf, e.device_id.as_deref().map(|d| device_hash(d) as i64));
    bin_i64(buf, k.device);
    bin_i64(buf, k.agent);
    bin_i64(buf, e.amount);
    bin_i16(buf, e.side.map(|s| i16::from(s.code())));
    let d = e.destination.as_ref();
    for f in [
        d.map(|d| d.bank_code.as_str()),
        d.map(|d| d.branch_code.as_str()),
        d.map(|d| d.account_type.as_str()),
        d.map(|d| d.account_number.as_str()),
        d.map(|d| d.holder_kana.as_str()),
    ] {
        bin_bytes(buf, f.map(str::as_bytes));
    }
}

/// An event's idempotency key as a tuple of COPY's binary format: `customer_key, event_id,
/// occurred_at`.
fn copy_key(buf: &mut Vec<u8>, e: &Event, k: &Keys) {
    buf.extend_from_slice(&3i16.to_be_bytes());
    bin_i64(buf, Some(k.customer));
    bin_bytes(buf, Some(e.event_id.as_bytes()));
    bin_i64(buf, Some(e.occurred_at));
}

/// The header of COPY's binary format: signature, flags, no extension.
const COPY_BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The trailer of COPY's binary format.
const COPY_BINARY_TRAILER: &[u8] = &(-1i16).to_be_bytes();

/// A field of COPY's binary format: its length (−1 for NULL) and its bytes (text and bytea are
/// sent as they are).
fn bin_bytes(buf: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(b) => {
            // Fields are far below 2 GiB: texts of the event contract and 16-byte keys.
            buf.extend_from_slice(&(b.len() as i32).to_be_bytes());
            buf.extend_from_slice(b);
        }
        None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

fn bin_i64(buf: &mut Vec<u8>, v: Option<i64>) {
    bin_bytes(buf, v.map(i64::to_be_bytes).as_ref().map(|b| &b[..]));
}

fn bin_i16(buf: &mut Vec<u8>, v: Option<i16>) {
    bin_bytes(buf, v.map(i16::to_be_bytes).as_ref().map(|b| &b[..]));
}

impl EventWriter for PgStore {
    /// Two: the server does the work of a batch (keys, index entries) on one core per
    /// connection.
    fn parallel_batches(&self) -> usize {
        super::LANES
    }

    /// New months are loaded beside `events` ([`PgStore::begin_loading`]).
    async fn begin_bulk(&self) -> Result<()> {
        self.begin_loading().await
    }

    async fn finish_bulk(&self) -> Result<usize> {
        Ok(self.finish_loading().await?.len())
    }

    async fn insert_events(&self, events: &[Event]) -> Result<Inserted> {
        if events.is_empty() {
            return Ok(Inserted::default());
        }
        // A partition this process created may since have been dropped by another's purge:
        // then the insert fails, and runs once more after looking again.
        let mut tries = 0;
        let mut new_customers = self.intern_committed(events).await?;
        let inserted = loop {
            tries += 1;
            self.ensure_months(events.iter().map(|e| e.occurred_at))
                .await?;
            let mut tx = self.begin().await?;
            let mut fresh = Fresh::default();
            let done = match insert_in(&mut tx, self, events, &mut fresh, &new_customers).await {
                Ok(n) => self.commit(tx, fresh).await.map(|_| n),
                Err(e) => Err(e),
            };
            match done {
                Ok(n) => break n,
                Err(e) if tries < 3 && is_missing_partition(&e) => self.forget_months(),
                // Another process stored an event of a customer created for this batch, or
                // the two waited on each other's keys (one sending them unordered, by COPY, the
                // deadlock may come again on the retry): again, with every key checked in order.
                Err(StoreError::Db(e))
                    if tries < 5
                        && (super::is_code(&e, "40P01")
                            || (!new_customers.is_empty() && super::is_code(&e, "23505"))) =>
                {
                    new_customers.clear()
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Inserted {
            inserted,
            duplicates: events.len() as u64 - inserted,
        })
    }
}

fn access_at(r: &PgRow, i: usize) -> Result<Access> {
    Ok(Access {
        at: r.try_get(i)?,
        kind: kind_of(r.try_get::<i16, _>(i + 1)?.into())?,
        channel: channel_of(r.try_get::<i16, _>(i + 2)?.into())?,
        ip: ip_of(r.try_get::<Option<&[u8]>, _>(i + 3)?)?,
        device: r.try_get::<Option<i64>, _>(i + 4)?.map(|d| d as u64),
    })
}

/// A past event from column `i` on (occurred_at, kind, channel, ip, device_hash, ua_key, amount,
/// side), with its `ua_key` for [`PgStore::with_families`].
pub(super) fn past_at(r: &PgRow, i: usize) -> Result<(Past, Option<i64>)> {
    Ok((
        Past {
            access: access_at(r, i)?,
            ua: None,
            amount: r.try_get(i + 6)?,
            side: side_of(r.try_get::<Option<i16>, _>(i + 7)?.map(i64::from))?,
        },
        r.try_get(i + 5)?,
    ))
}

fn ip_event(r: &PgRow) -> Result<IpEvent> {
    Ok(IpEvent {
        ip: ip_of(r.try_get::<Option<&[u8]>, _>(0)?)?.ok_or_else(|| corrupt("missing IP"))?,
        at: r.try_get(1)?,
        customer_id: r.try_get(2)?,
        kind: kind_of(r.try_get::<i16, _>(3)?.into())?,
    })
}

impl PgStore {
    /// User-agent families of the given keys (cached: few distinct values).
    async fn families(&self, keys: impl Iterator<Item = i64>) -> Result<HashMap<i64, u64>> {
        let mut keys: Vec<i64> = keys.collect();
        keys.sort_unstable();
        keys.dedup();
        let missing: Vec<i64> = {
            let c = self.ua_families.lock().unwrap_or_else(|p| p.into_inner());
            keys.iter()
                .copied()
                .filter(|k| !c.contains_key(k))
                .collect()
        };
        if !missing.is_empty() {
            let found: Vec<(i64, String)> =
                sqlx::query_as("SELECT ua_key, user_agent FROM user_agents WHERE ua_key = ANY($1)")
                    .bind(&missing)
                    .fetch_all(&self.pool)
                    .await?;
            let mut c = self.ua_families.lock().unwrap_or_else(|p| p.into_inner());
            c.extend(found.iter().map(|(k, ua)| (*k, ua_family_hash(ua))));
        }
        let c = self.ua_families.lock().unwrap_or_else(|p| p.into_inner());
        Ok(keys
            .into_iter()
            .filter_map(|k| c.get(&k).map(|f| (k, *f)))
            .collect())
    }

    /// Uses of the IPs of key ranges for windows `(lo, hi, from, to)`, each labelled with its
    /// range's `lo`: every event of a range over the span of its windows, once, as one use. The
    /// server's single question comes from the hot cache when there is one.
    async fn range_uses(
        &self,
        windows: &[(u128, u128, i64, i64)],
    ) -> Result<Vec<(u128, IpUse<String>)>> {
        if let [(lo, hi, from, to)] = *windows
            && let Some((h, net)) = self.hot_range(lo, hi)
            && let Some(uses) = self
                .ask_hot(h, net, lo, hi, from, |h| h.ip_uses(net, lo, from, to))
                .await?
        {
            return Ok(uses);
        }
        // One span per range: an event in two windows of a range is still one use of it.
        let mut spans: BTreeMap<(u128, u128), (i64, i64)> = BTreeMap::new();
        for &(lo, hi, from, to) in windows {
            if from >= to || lo > hi {
                continue;
            }
            let s = spans.entry((lo, hi)).or_insert((from, to));
            *s = (s.0.min(from), s.1.max(to));
        }
        if spans.is_empty() {
            return Ok(Vec::new());
        }
        let mut los = Vec::with_capacity(spans.len());
        let mut his = Vec::with_capacity(spans.len());
        let mut froms = Vec::with_capacity(spans.len());
        let mut tos = Vec::with_capacity(spans.len());
        for (&(lo, hi), &(from, to)) in &spans {
            los.push(key_bytes(lo).to_vec());
            his.push(key_bytes(hi).to_vec());
            froms.push(from);
            tos.push(to);
        }
        // Each range in turn (OFFSET 0 keeps the subquery apart), so that its bounds prune the
        // months each range reads: joined flat, every month was read for every range. Then the
        // ids of the distinct customers, each by its key (a subquery per key): joined to the
        // events, `customers` was read once per event, or, with other statistics, scanned
        // whole once per range (1,000,000 customers, 220 s for an investigation of 1.6 s).
        let rows = sqlx::query(
            "WITH u AS MATERIALIZED (SELECT r.lo, e.occurred_at, e.kind, e.customer_key \
                 FROM unnest($1::bytea[], $2::bytea[], $3::bigint[], $4::bigint[]) \
                     AS r (lo, hi, from_at, to_at) \
                 CROSS JOIN LATERAL (SELECT e.occurred_at, e.kind, e.customer_key FROM events e \
                     WHERE e.ip >= r.lo AND e.ip <= r.hi \
                       AND e.occurred_at >= r.from_at AND e.occurred_at < r.to_at OFFSET 0) e), \
             k AS MATERIALIZED (SELECT d.customer_key, (SELECT c.customer_id FROM customers c \
                     WHERE c.customer_key = d.customer_key) AS customer_id \
                 FROM (SELECT DISTINCT customer_key FROM u) d) \
             SELECT u.lo, u.occurred_at, k.customer_id, u.kind FROM u JOIN k USING (customer_key)",
        )
        .bind(los)
        .bind(his)
        .bind(froms)
        .bind(tos)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let lo = ip_of(r.try_get::<Option<&[u8]>, _>(0)?)?
                    .ok_or_else(|| corrupt("missing range"))?;
                let kind = kind_of(r.try_get::<i16, _>(3)?.into())?;
                Ok((lo, IpUse::event(r.try_get(1)?, r.try_get(2)?, kind)))
            })
            .collect()
    }
}

/// What a fill read saw and its rows: a fill's query returns the snapshot in column 0 of every
/// row (always at least one) and, in the rows that hold data, a non-NULL column 1.
pub(super) fn fill_rows(rows: &[PgRow]) -> Result<(Seen, impl Iterator<Item = &PgRow>)> {
    let first = rows
        .first()
        .ok_or_else(|| corrupt("a snapshot query returned no row"))?;
    let snap = Snapshot::parse(first.try_get(0)?)
        .map(|s| Seen::Snap(Arc::new(s)))
        .ok_or_else(|| corrupt("a snapshot did not parse"))?;
    // A row whose column 1 does not decode is kept: reading it then reports the error.
    let data = rows
        .iter()
        .filter(|r| !matches!(r.try_get::<Option<i64>, _>(1), Ok(None)));
    Ok((snap, data))
}

/// The UTC day of `occurred_at` in SQL (floor division, as [`crate::sqlite::utc_day`]).
pub(super) const SQL_DAY: &str = "((e.occurred_at - ((e.occurred_at % 86400000000) + 86400000000) \
    % 86400000000) / 86400000000)";

impl PgStore {
    /// A customer's events with `from ≤ at < to`, in order, and what the read saw.
    async fn read_past(&self, customer: &str, from: i64, to: i64) -> Result<(Seen, Vec<Past>)> {
        let rows = sqlx::query(
            "SELECT s.snap, x.occurred_at, x.kind, x.channel, x.ip, x.device_hash, x.ua_key, \
                    x.amount, x.side \
             FROM (SELECT pg_current_snapshot()::text AS snap) s \
             LEFT JOIN LATERAL ( \
                 SELECT e.occurred_at, e.kind, e.channel, e.ip, e.device_hash, e.ua_key, \
                        e.amount, e.side, e.event_id \
                 FROM customers c JOIN events e ON e.customer_key = c.customer_key \
                 WHERE c.customer_id = $1 AND e.occurred_at >= $2 AND e.occurred_at < $3 \
             ) x ON true \
             ORDER BY x.occurred_at, x.event_id",
        )
        .bind(customer)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        let (seen, data) = fill_rows(&rows)?;
        let out = data.map(|r| past_at(r, 1)).collect::<Result<Vec<_>>>()?;
        Ok((seen, self.with_families(out).await?))
    }

    /// The pasts with their user agents' families, from their `ua_key`s.
    pub(super) async fn with_families(&self, out: Vec<(Past, Option<i64>)>) -> Result<Vec<Past>> {
        let families = self.families(out.iter().filter_map(|p| p.1)).await?;
        Ok(out
            .into_iter()
            .map(|(mut p, k)| {
                p.ua = k.and_then(|k| families.get(&k).copied());
                p
            })
            .collect())
    }

    /// See [`crate::hot::range`].
    fn hot_range(&self, lo: u128, hi: u128) -> Option<(&Hot, bool)> {
        crate::hot::range(self.hot.as_deref(), lo, hi)
    }

    /// `ask`s the hot cache about the range `[lo, hi]` (an address, or a familiarity network
    /// with `net`), reading what it lacks: the days from before `from` (per customer and day),
    /// then the events of up to two edge days. `None` when it still lacks them (a range too
    /// large to hold, or fills overtaken by writes): the caller reads the database.
    async fn ask_hot<R>(
        &self,
        h: &Hot,
        net: bool,
        lo: u128,
        hi: u128,
        from: i64,
        ask: impl Fn(&Hot) -> std::result::Result<R, IpNeed>,
    ) -> Result<Option<R>> {
        for _ in 0..4 {
            match ask(h) {
                Ok(r) => return Ok(Some(r)),
                Err(IpNeed::Days) => {
                    let day = utc_day(from) - crate::hot::FILL_SLACK_US / DAY_US;
                    self.fill_ranges(h, &[(net, lo, hi)], day).await?;
                }
                Err(IpNeed::Events(day)) => {
                    // An edge inside the day: its events one by one.
                    self.fill_range_days(h, &[(net, lo, hi)], day, day + 1)
                        .await?;
                }
            }
        }
        Ok(None)
    }
}

/// The procedures query for a kind. The kind is written into the statement (a small integer from
/// an enum, never input text), with the partial index's own condition for sensitive kinds, so
/// that the planner can prove `events_sensitive` applies.
fn procedures_sql(kind: Kind) -> String {
    let partial = if kind.is_sensitive() {
        format!(" AND e.kind IN {SENSITIVE_SQL}")
    } else {
        String::new()
    };
    format!(
        "SELECT e.event_id, c.customer_id, e.occurred_at, e.channel, e.ip, e.device_hash \
         FROM events e JOIN customers c ON c.customer_key = e.customer_key \
         WHERE e.kind = {}{partial} AND e.occurred_at >= $1 AND e.occurred_at < $2",
        kind.code()
    )
}

impl HistoryReader for PgStore {
    /// Six: a read that waits on the disk holds a connection, not a core (the seed's
    /// investigation on 1,000,000 customers with a cold cache: 6.6 s with two, 5.0 s with six).
    fn parallel_reads(&self) -> usize {
        6
    }

    async fn customer_accesses(
        &self,
        customers: &[&str],
        from: i64,
        to: i64,
    ) -> Result<Vec<(String, Access)>> {
        // Each customer by its id's index, then its events by theirs (OFFSET 0 keeps the
        // subquery apart: with the ids as `= ANY(…)` on the customers, the planner chose to
        // filter every customer against the whole list, 1.6 s per 500 of 1,000,000).
        let rows = sqlx::query(
            "SELECT c.customer_id, e.occurred_at, e.kind, e.channel, e.ip, e.device_hash \
             FROM unnest($1::text[]) AS u (id) \
             JOIN customers c ON c.customer_id = u.id \
             CROSS JOIN LATERAL (SELECT e.occurred_at, e.kind, e.channel, e.ip, e.device_hash \
                 FROM events e WHERE e.customer_key = c.customer_key \
                   AND e.occurred_at >= $2 AND e.occurred_at < $3 OFFSET 0) e",
        )
        .bind(customers)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, access_at(r, 1)?)))
            .collect()
    }

    async fn ip_range_events(
        &self,
        lo: u128,
        hi: u128,
        from: i64,
        to: i64,
    ) -> Result<Vec<IpEvent>> {
        let rows = sqlx::query(
            "SELECT e.ip, e.occurred_at, c.customer_id, e.kind \
             FROM events e JOIN customers c ON c.customer_key = e.customer_key \
             WHERE e.ip >= $1 AND e.ip <= $2 AND e.occurred_at >= $3 AND e.occurred_at < $4",
        )
        .bind(key_bytes(lo).to_vec())
        .bind(key_bytes(hi).to_vec())
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(ip_event).collect()
    }

    async fn ip_uses(&self, windows: &[(u128, i64, i64)]) -> Result<Vec<(u128, IpUse<String>)>> {
        let ranges: Vec<(u128, u128, i64, i64)> =
            windows.iter().map(|&(ip, f, t)| (ip, ip, f, t)).collect();
        self.range_uses(&ranges).await
    }

    async fn net_uses(
        &self,
        windows: &[(u128, u128, i64, i64)],
    ) -> Result<Vec<(u128, IpUse<String>)>> {
        self.range_uses(windows).await
    }

    async fn range_activity(
        &self,
        customer: &str,
        (lo, hi): (u128, u128),
        from: i64,
        to: i64,
    ) -> Result<IpActivity> {
        if let Some((h, net)) = self.hot_range(lo, hi)
            && let Some(act) = self
                .ask_hot(h, net, lo, hi, from, |h| {
                    h.activity(net, lo, customer, from, to)
                })
                .await?
        {
            return Ok(act);
        }
        // Counted where the events are: a busy address (a carrier's NAT) sends no rows.
        let (others, failed_accounts, failed, logins): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT count(DISTINCT e.customer_key) FILTER (WHERE e.customer_key IS DISTINCT FROM \
                        (SELECT customer_key FROM customers WHERE customer_id = $5)), \
                    count(DISTINCT e.customer_key) FILTER (WHERE e.kind = $6), \
                    count(*) FILTER (WHERE e.kind = $6), \
                    count(*) FILTER (WHERE e.kind = $7) \
             FROM events e \
             WHERE e.ip >= $1 AND e.ip <= $2 AND e.occurred_at >= $3 AND e.occurred_at < $4",
        )
        .bind(key_bytes(lo).to_vec())
        .bind(key_bytes(hi).to_vec())
        .bind(from)
        .bind(to)
        .bind(customer)
        .bind(i16::from(Kind::LoginFailed.code()))
        .bind(i16::from(Kind::Login.code()))
        .fetch_one(&self.pool)
        .await?;
        let n = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
        Ok(IpActivity {
            other_customers: n(others),
            failed_login_accounts: n(failed_accounts),
            failed_logins: n(failed),
            logins: n(logins),
        })
    }

    async fn procedures(&self, kind: Kind, from: i64, to: i64) -> Result<Vec<Procedure>> {
        let rows = sqlx::query(AssertSqlSafe(procedures_sql(kind)))
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Procedure {
                    event_id: r.try_get(0)?,
                    customer_id: r.try_get(1)?,
                    occurred_at: r.try_get(2)?,
                    channel: channel_of(r.try_get::<i16, _>(3)?.into())?,
                    ip: ip_of(r.try_get::<Option<&[u8]>, _>(4)?)?.map(key_ip),
                    device: r.try_get::<Option<i64>, _>(5)?.map(|d| d as u64),
                })
            })
            .collect()
    }

    async fn customer_past(&self, customer: &str, from: i64, to: i64) -> Result<Vec<Past>> {
        let Some(h) = &self.hot else {
            return Ok(self.read_past(customer, from, to).await?.1);
        };
        if let Some(p) = h.past(customer, from, to) {
            return Ok(p);
        }
        // A miss: every event from a little before the window on, with what the read saw.
        let held_from = from.saturating_sub(crate::hot::FILL_SLACK_US);
        let noted = h.applied();
        let (seen, rows) = self.read_past(customer, held_from, i64::MAX).await?;
        let lo = rows.partition_point(|p| p.access.at < from);
        let hi = rows.partition_point(|p| p.access.at < to);
        let out = rows[lo..hi].to_vec();
        h.fill(customer, held_from, noted, seen, rows);
        Ok(out)
    }

    async fn login_features(&self, from: i64, to: i64) -> Result<Vec<LoginFeatures>> {
        let rows: Vec<(i64, Option<Vec<u8>>, Option<i64>)> = sqlx::query_as(
            "SELECT occurred_at, ip, ua_key FROM events \
             WHERE kind = $1 AND occurred_at >= $2 AND occurred_at < $3",
        )
        .bind(i16::from(Kind::Login.code()))
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        let families = self.families(rows.iter().filter_map(|r| r.2)).await?;
        rows.into_iter()
            .map(|(at, ip, k)| {
                Ok(LoginFeatures {
                    at,
                    ip: ip_of(ip.as_deref())?,
                    ua: k.and_then(|k| families.get(&k).copied()),
                })
            })
            .collect()
    }

    async fn customer_events(&self, customer: &str, from: i64, to: i64) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT e.event_id, e.occurred_at, c.customer_id, e.kind, e.channel, e.ip, \
                    d.device_id, u.user_agent, e.amount, e.side, e.dest_bank_code, \
                    e.dest_branch_code, e.dest_account_type, e.dest_account_number, \
                    e.dest_holder_kana \
             FROM customers c JOIN events e ON e.customer_key = c.customer_key \
             LEFT JOIN devices d ON d.device_key = e.device_key \
             LEFT JOIN user_agents u ON u.ua_key = e.ua_key \
             WHERE c.customer_id = $1 AND e.occurred_at >= $2 AND e.occurred_at < $3 \
             ORDER BY e.occurred_at, e.event_id",
        )
        .bind(customer)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let text = |i: usize| r.try_get::<Option<String>, _>(i);
                Ok(Event {
                    event_id: r.try_get(0)?,
                    occurred_at: r.try_get(1)?,
                    customer_id: r.try_get(2)?,
                    kind: kind_of(r.try_get::<i16, _>(3)?.into())?,
                    channel: channel_of(r.try_get::<i16, _>(4)?.into())?,
                    ip: ip_of(r.try_get::<Option<&[u8]>, _>(5)?)?.map(key_ip),
                    device_id: text(6)?,
                    user_agent: text(7)?,
                    amount: r.try_get(8)?,
                    side: side_of(r.try_get::<Option<i16>, _>(9)?.map(i64::from))?,
                    destination: match text(10)? {
                        None => None,
                        Some(bank_code) => Some(Destination {
                            bank_code,
                            branch_code: text(11)?.unwrap_or_default(),
                            account_type: text(12)?.unwrap_or_default(),
                            account_number: text(13)?.unwrap_or_default(),
                            holder_kana: text(14)?.unwrap_or_default(),
                        }),
                    },
                })
            })
            .collect()
    }

    async fn count_events(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }
}

/// The indexes of a month of `events`, as the partitioned indexes of migrations 0001 and 0007
/// define them: (name suffix, columns and predicate). A loaded month gets them before it is
/// attached, and attaching adopts them.
const MONTH_INDEXES: [(&str, &str); 3] = [
    (
        "customer",
        "(customer_key, occurred_at) INCLUDE (kind, channel, ip, device_hash)",
    ),
    (
        "ip",
        "(ip, occurred_at) INCLUDE (kind, customer_key) WHERE ip IS NOT NULL",
    ),
    (
        "sensitive",
        "(kind, occurred_at) WHERE kind IN (4, 5, 7, 8, 9, 10, 11, 12)",
    ),
];

impl PgStore {
    /// From now on, this process writes the events of months `events` lacks into tables beside
    /// it (partitions of `events_load`, no indexes), which [`PgStore::finish_loading`] indexes
    /// in bulk and attaches. Months loads left unfinished (a process killed) are finished first.
    pub async fn begin_loading(&self) -> Result<()> {
        self.finish_loading().await?;
        self.bulk.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Makes every month loaded beside `events` (by this process or another that did not finish)
    /// part of it: indexed, then, under the partition lock, attached as the month's partition,
    /// or, if `events` has that month meanwhile (another process created it), its rows moved
    /// there. Two months at a time, each building its indexes one after another (so that two
    /// builds always run, where pairs of builds per month left a core idle for the third and for
    /// `ANALYZE`); then `events` is vacuumed and analysed with its months. Returns the months, in
    /// order. Ends this process's loading.
    pub async fn finish_loading(&self) -> Result<Vec<i64>> {
        use futures_util::stream::{StreamExt, TryStreamExt};
        self.bulk.store(false, std::sync::atomic::Ordering::Relaxed);
        let names = children(&mut *self.pool.acquire().await?, "events_load").await?;
        let mut done: Vec<i64> = futures_util::stream::iter(names)
            .map(|name| self.finish_month(name))
            .buffer_unordered(2)
            .try_collect()
            .await?;
        // Statistics of `events` itself (autovacuum never analyses a partitioned table), and of
        // each month with them: without the parent's, the investigation at 1 M customers took
        // 3.2-3.4 s instead of 1.6-1.7 s. The vacuum marks what the load wrote into months
        // `events` had all-visible too (the loaded months are already).
        if !done.is_empty() {
            sqlx::query("VACUUM (ANALYZE) events")
                .execute(&self.pool)
                .await?;
        }
        done.sort_unstable();
        Ok(done)
    }

    /// [`PgStore::finish_loading`] for one month's table (`loading_YYYY_MM`).
    async fn finish_month(&self, name: String) -> Result<i64> {
        let m = super::loading_month(&name)
            .ok_or_else(|| corrupt(&format!("unexpected partition of events_load: {name}")))?;
        // Every page marked all-visible (before the indexes: a pass over the table alone), so
        // that customers' histories and IPs' windows are read from the covering indexes without
        // visiting the table from the start (autovacuum, where it is on, would do it later).
        sqlx::query(AssertSqlSafe(format!("VACUUM {name}")))
            .execute(&self.pool)
            .await?;
        for (suffix, def) in MONTH_INDEXES {
            let mut tx = self.begin().await?;
            // A month's sort in memory, not in temporary files.
            sqlx::query("SET LOCAL maintenance_work_mem = '256MB'")
                .execute(&mut *tx)
                .await?;
            sqlx::query(AssertSqlSafe(format!(
                "CREATE INDEX IF NOT EXISTS {name}_{suffix} ON {name} {def}"
            )))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        let mut tx = self.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(super::PARTITION_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query(AssertSqlSafe(format!(
            "ALTER TABLE events_load DETACH PARTITION {name}"
        )))
        .execute(&mut *tx)
        .await?;
        let part = super::partition_name(m);
        if super::has_partition(&mut tx, m).await? {
            for sql in [
                format!("INSERT INTO events SELECT * FROM {name}"),
                format!("DROP TABLE {name}"),
            ] {
                sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await?;
            }
        } else {
            let (lo, hi) = super::month_bounds(m);
            for sql in [
                format!("ALTER TABLE {name} RENAME TO {part}"),
                format!(
                    "ALTER TABLE events ATTACH PARTITION {part} FOR VALUES FROM ({lo}) TO ({hi})"
                ),
            ] {
                sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await?;
            }
        }
        // The month's events appear at once: every node's cache reads again.
        let mut fresh = Fresh::default();
        fresh.news.clear = true;
        self.commit(tx, fresh).await?;
        super::lock(&self.loading).remove(&m);
        super::lock(&self.months).insert(m);
        Ok(m)
    }
}

/// The names of a partitioned table's partitions (`events`, `events_load`), in name order.
async fn children(conn: &mut PgConnection, parent: &'static str) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = $1::regclass ORDER BY 1",
    )
    .bind(parent)
    .fetch_all(&mut *conn)
    .await?)
}

/// The partitions of `events` and their months.
pub(crate) async fn partitions(conn: &mut PgConnection) -> Result<Vec<(String, i64)>> {
    children(conn, "events")
        .await?
        .into_iter()
        .map(|n| {
            let m = partition_month(&n)
                .ok_or_else(|| corrupt(&format!("unexpected partition of events: {n}")))?;
            Ok((n, m))
        })
        .collect()
}

impl Retention for PgStore {
    /// Drops the partitions of months wholly before `t`, deletes the events of `t`'s own month
    /// before it, and the keys of every event gone (their number is the number of events: each
    /// stored event has exactly one key, written in its transaction). One transaction. The keys
    /// are found by a scan of `event_keys` (migration 0002 dropped its time index, which cost
    /// every insert more than it saves a daily purge).
    async fn purge_before(&self, t: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(super::PARTITION_LOCK)
            .execute(&mut *tx)
            .await?;
        for (name, month) in partitions(&mut tx).await? {
            if month_end(month) <= t {
                // Names come from the catalogue and match `partition_name`'s pattern.
                sqlx::query(AssertSqlSafe(format!("DROP TABLE {name}")))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        // Months being loaded beside `events` are purged alike.
        for name in children(&mut tx, "events_load").await? {
            if super::loading_month(&name).is_some_and(|m| month_end(m) <= t) {
                sqlx::query(AssertSqlSafe(format!("DROP TABLE {name}")))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for table in ["events", "events_load"] {
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE occurred_at < $1"
            )))
            .bind(t)
            .execute(&mut *tx)
            .await?;
        }
        let gone = sqlx::query("DELETE FROM event_keys WHERE occurred_at < $1")
            .bind(t)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // Events went: every node's cache reads again.
        let mut fresh = Fresh::default();
        fresh.news.clear = gone > 0;
        self.commit(tx, fresh).await?;
        // This process's dropped months are created again if older events come.
        self.forget_months();
        Ok(gone)
    }
}
