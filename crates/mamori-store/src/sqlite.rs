//! The embedded store: one SQLite file (`mamori.db` by default), WAL journal.
//!
//! Durability: `journal_mode=WAL` with `synchronous=NORMAL`. A committed batch survives a crash of
//! the process; a power loss may lose the last transactions but never corrupts the file.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use mamori_core::assess::{Past, Policy, ua_family_hash};
use mamori_core::event::{Channel, Destination, Event, Kind, Side};
use mamori_core::history::{Access, IpActivity, IpUse, device_hash, ip_activity};
use mamori_core::investigate::Procedure;
use mamori_core::net::{bytes_key, ip_key, key_bytes, key_ip};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::hot::{Hot, IpNeed, Seen, Write};
use crate::raw;
use crate::{
    EventWriter, HistoryReader, Inserted, IpEvent, LoginFeatures, Result, Retention, StoreError,
};
use sqlx::AssertSqlSafe;

/// Kinds kept in the partial index `events_sensitive` (migration 0002), and its condition.
const SENSITIVE_KINDS: [u8; 8] = [4, 5, 7, 8, 9, 10, 11, 12];
const SENSITIVE_SQL: &str = "(4, 5, 7, 8, 9, 10, 11, 12)";

/// A UTC day far in the future: the end of "every day from … on".
const FAR_DAY: i64 = 100_000_000;

/// Keys per `IN (…)` list.
const KEYS_PER_QUERY: usize = 500;

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One connection with a small page cache for checkpoints, so that they neither take a
    /// reader's or writer's connection (whose page cache another connection's use would
    /// invalidate) nor hold a second large cache.
    checkpointer: SqlitePool,
    keys: Arc<Mutex<KeyCache>>,
    checkpoints: Arc<Mutex<Checkpoints>>,
    delta: Arc<Mutex<Delta>>,
    /// The store file, for connections of our own.
    path: std::path::PathBuf,
    /// Idle connections of our own for short reads on the calling thread ([`raw::OwnedConn`]).
    readers: Arc<Mutex<Vec<raw::OwnedConn>>>,
    /// One writer at a time (SQLite has one; waiting here is fairer than its busy loop), on a
    /// connection of our own (opened at the first write): statements stay prepared, and the
    /// work runs on the calling thread.
    writer: Arc<tokio::sync::Mutex<Option<raw::OwnedConn>>>,
    /// Frames in the WAL after this process's last commit (SQLite's WAL hook on the writer).
    wal_now: Arc<std::sync::atomic::AtomicI64>,
    /// `synchronous = FULL` for the writer.
    synchronous_full: bool,
    /// User-agent families by `ua_key` (few distinct values, read on every assessment).
    ua_families: Arc<Mutex<HashMap<i64, u64>>>,
    /// The server's cache of customers' events and resolutions ([`SqliteStore::with_hot`]).
    hot: Option<Arc<Hot>>,
}

/// WAL frames (pages) after which a writer waits for the WAL to be checkpointed completely, so
/// that it starts again from its beginning: 1 GiB of 4 KiB pages.
const WAL_FRAMES_LIMIT: i64 = 262_144;

/// Checkpoints run beside the writers rather than inside their commits (SQLite's automatic
/// checkpoint is off): after a commit, a checkpoint starts on another connection unless one is
/// running, and copies the WAL into the database while the writer goes on with its next batch.
/// A checkpoint cannot complete while frames keep arriving, so once the WAL holds more than
/// [`WAL_FRAMES_LIMIT`] frames, the next writer first waits for one that does.
#[derive(Debug)]
struct Checkpoints {
    running: Option<tokio::task::JoinHandle<Result<i64>>>,
    /// Frames in the WAL at the end of the last checkpoint.
    wal_frames: i64,
    /// [`WAL_FRAMES_LIMIT`] (smaller in tests).
    limit: i64,
    /// When the last checkpoint started.
    last_started: Option<std::time::Instant>,
}

/// While the WAL stays small, checkpoints start at most this often: many small commits (the
/// server's) would otherwise keep one running all the time, each with its fsyncs.
const CHECKPOINT_GAP: Duration = Duration::from_millis(200);

impl Default for Checkpoints {
    fn default() -> Self {
        Checkpoints {
            running: None,
            wal_frames: 0,
            limit: WAL_FRAMES_LIMIT,
            last_started: None,
        }
    }
}

/// A passive checkpoint; returns the number of frames in the WAL.
async fn checkpoint(pool: &SqlitePool) -> Result<i64> {
    let (_busy, log, _done): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(pool)
        .await?;
    Ok(log)
}

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

pub(crate) fn kind_of(code: i64) -> Result<Kind> {
    Kind::from_code(code).ok_or_else(|| corrupt("unknown kind code"))
}

pub(crate) fn channel_of(code: i64) -> Result<Channel> {
    Channel::from_code(code).ok_or_else(|| corrupt("unknown channel code"))
}

pub(crate) fn ip_of(b: Option<&[u8]>) -> Result<Option<u128>> {
    b.map(|b| bytes_key(b).ok_or_else(|| corrupt("IP key is not 16 bytes")))
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
        Self::open_with(path, false).await
    }

    /// Opens the store; with `synchronous_full`, every commit is fsynced (`synchronous = FULL`),
    /// so committed transactions survive a power failure too. Otherwise (`NORMAL`, in WAL mode)
    /// they survive a crash or `kill -9` of the process, and the WAL is fsynced at checkpoints.
    pub async fn open_with(path: &Path, synchronous_full: bool) -> Result<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if synchronous_full {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(Duration::from_secs(30))
            .pragma("cache_size", "-262144")
            .pragma("temp_store", "memory")
            .pragma("mmap_size", "68719476736")
            // Checkpoints run beside the writers (`Checkpoints`).
            .pragma("wal_autocheckpoint", "0");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(opts.clone())
            .await
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let checkpointer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .connect_lazy_with(opts.pragma("cache_size", "-2048"));
        Ok(SqliteStore {
            pool,
            checkpointer,
            keys: Arc::default(),
            checkpoints: Arc::default(),
            delta: Arc::default(),
            ua_families: Arc::default(),
            writer: Arc::default(),
            wal_now: Arc::default(),
            synchronous_full,
            path: path.to_owned(),
            readers: Arc::default(),
            hot: None,
        })
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
        self.writer.lock().await.take();
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.checkpointer.close().await;
        self.pool.close().await;
    }

    /// The pool, for tests and maintenance.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Microseconds per day.
const DAY_US: i64 = 86_400_000_000;

/// The UTC day number of a time: the `day` of `ip_seen` (migration 0003).
pub fn utc_day(at: i64) -> i64 {
    at.div_euclid(DAY_US)
}

/// Committed keys of the side tables, so that a batch looks each text up once per process.
/// Keys never change once committed (nothing deletes from the side tables), so the cache is never
/// stale; keys of a transaction that fails are never added.
#[derive(Debug, Default)]
struct KeyCache {
    customers: HashMap<Box<str>, i64>,
    devices: HashMap<Box<str>, i64>,
    agents: HashMap<Box<str>, i64>,
}

/// Keys of one side table looked up or created in the current transaction.
struct Interner<'c, 'h> {
    select: raw::Stmt<'c, 'h>,
    insert: raw::Stmt<'c, 'h>,
    fresh: HashMap<Box<str>, i64>,
    /// Keys created by this transaction (a subset of `fresh`).
    created: HashSet<i64>,
}

impl<'c, 'h> Interner<'c, 'h> {
    fn new(conn: &'c raw::Conn<'h>, table: &str, key: &str, text: &str) -> Result<Self> {
        Ok(Interner {
            select: conn.prepare(&format!("SELECT {key} FROM {table} WHERE {text} = ?"))?,
            insert: conn.prepare(&format!(
                "INSERT INTO {table} ({text}) VALUES (?) ON CONFLICT ({text}) DO NOTHING"
            ))?,
            fresh: HashMap::new(),
            created: HashSet::new(),
        })
    }

    fn key(&mut self, cache: &HashMap<Box<str>, i64>, text: &str) -> Result<i64> {
        if let Some(k) = cache.get(text).or_else(|| self.fresh.get(text)) {
            return Ok(*k);
        }
        let p = [raw::Value::Text(text)];
        let k = match self.select.query_i64(&p)? {
            Some(k) => k,
            None => match self.insert.insert(&p)? {
                Some(k) => {
                    self.created.insert(k);
                    k
                }
                None => self
                    .select
                    .query_i64(&p)?
                    .ok_or_else(|| corrupt("a side-table key vanished"))?,
            },
        };
        self.fresh.insert(text.into(), k);
        Ok(k)
    }
}

/// Columns of an events row, as [`insert_sql`] lists them.
const COLUMNS: usize = 16;
/// Rows per INSERT statement of a batch write.
const ROWS_PER_INSERT: usize = 32;

/// An INSERT of `rows` events rows; `returning` the rows actually stored (not the duplicates).
fn insert_sql(rows: usize, returning: bool) -> String {
    let mut sql = String::from(
        "INSERT INTO events (customer_key, occurred_at, event_id, kind, channel, ip, device_hash, \
         device_key, ua_key, amount, side, dest_bank_code, dest_branch_code, dest_account_type, \
         dest_account_number, dest_holder_kana) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
    }
    sql.push_str(" ON CONFLICT DO NOTHING");
    if returning {
        sql.push_str(" RETURNING customer_key, occurred_at, kind, ip, event_id");
    }
    sql
}

/// Adds a row's counts to `table` (`ip_seen` or `ip_seen_delta`), creating it if new.
fn upsert_seen_sql(table: &str) -> String {
    format!(
        "INSERT INTO {table} (ip, day, customer_key, logins, failed_logins) \
         VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT DO UPDATE SET logins = logins + excluded.logins, \
         failed_logins = failed_logins + excluded.failed_logins"
    )
}

/// Moves the rows of `ip_seen_delta` into `ip_seen` in key order, adding up the counts of twins
/// (migration 0005). Row by row: one `INSERT … SELECT` would keep a statement journal of every
/// page it changes (~700 MB at a million customers) in case it had to be undone.
fn merge_delta(conn: &raw::Conn<'_>) -> Result<()> {
    let mut upsert = conn.prepare(&upsert_seen_sql("ip_seen"))?;
    conn.prepare(
        "SELECT ip, day, customer_key, logins, failed_logins FROM ip_seen_delta \
         ORDER BY ip, day, customer_key",
    )?
    .for_each(&[], |r| {
        let ip = r
            .blob(0)
            .ok_or_else(|| corrupt("ip_seen_delta without IP"))?;
        upsert.exec(&[
            raw::Value::Blob(ip),
            raw::Value::Int(r.i64(1)),
            raw::Value::Int(r.i64(2)),
            raw::Value::Int(r.i64(3)),
            raw::Value::Int(r.i64(4)),
        ])?;
        Ok(())
    })?;
    conn.prepare("DELETE FROM ip_seen_delta")?.exec(&[])?;
    Ok(())
}

/// Rows `ip_seen_delta` may hold before a write merges it into `ip_seen`: ~60 MB, which the
/// page cache holds, so that a transaction's new rows dirty few pages.
const IP_SEEN_DELTA_ROWS: i64 = 2_000_000;

/// What the writers know of `ip_seen_delta`.
#[derive(Debug)]
struct Delta {
    /// Rows it holds at most; `None` until counted.
    rows: Option<i64>,
    /// [`IP_SEEN_DELTA_ROWS`] (smaller in tests).
    limit: i64,
}

impl Default for Delta {
    fn default() -> Self {
        Delta {
            rows: None,
            limit: IP_SEEN_DELTA_ROWS,
        }
    }
}

/// Counts of one `ip_seen` row of a batch: (IP key bytes, UTC day, customer key) → (logins,
/// failed logins).
type SeenCounts = HashMap<([u8; 16], i64, i64), (i64, i64)>;

/// Adds a stored event to the counts.
fn count_seen(seen: &mut SeenCounts, ip: [u8; 16], at: i64, customer: i64, kind: i64) {
    let c = seen.entry((ip, utc_day(at), customer)).or_default();
    c.0 += i64::from(kind == i64::from(Kind::Login.code()));
    c.1 += i64::from(kind == i64::from(Kind::LoginFailed.code()));
}

/// Adds a stored row returned by [`insert_sql`] to the counts.
fn count_returned(seen: &mut SeenCounts, r: &raw::Row<'_>) -> Result<()> {
    if let Some(ip) = r.blob(3) {
        let ip = ip
            .try_into()
            .map_err(|_| corrupt("IP key is not 16 bytes"))?;
        count_seen(seen, ip, r.i64(1), r.i64(0), r.i64(2));
    }
    Ok(())
}

/// New keys of a batch, added to the cache after its commit.
struct FreshKeys([HashMap<Box<str>, i64>; 3]);

/// Writes one batch on the raw handle, inside the caller's transaction. Returns the number of new
/// events, the new keys, the `ip_seen` rows written and, with `keep_new`, the new events.
fn write_batch<'e>(
    conn: &raw::Conn<'_>,
    cache: &KeyCache,
    events: &'e [Event],
    keep_new: bool,
) -> Result<(u64, FreshKeys, i64, Vec<&'e Event>)> {
    let mut customers = Interner::new(conn, "customers", "customer_key", "customer_id")?;
    let mut devices = Interner::new(conn, "devices", "device_key", "device_id")?;
    let mut agents = Interner::new(conn, "user_agents", "ua_key", "user_agent")?;
    // First copy of a (customer, event_id) in the batch wins; then the rows go in key order, which keeps the
    // table's B-tree writes local whatever the order of the input.
    let mut ids: HashSet<(&str, &str)> = HashSet::with_capacity(events.len());
    let mut rows: Vec<(i64, &Event)> = Vec::with_capacity(events.len());
    for e in events {
        if ids.insert((e.customer_id.as_str(), e.event_id.as_str())) {
            rows.push((customers.key(&cache.customers, &e.customer_id)?, e));
        }
    }
    drop(ids);
    // Customers created by this transaction have no stored events, so none of their rows is a
    // duplicate: they go first, and are counted for ip_seen as they are. The others' rows are
    // counted from what their INSERTs return, which leaves out duplicates (RETURNING costs).
    let created = |ck: &i64| customers.created.contains(ck);
    rows.sort_by_key(|r| (!created(&r.0), r.0, r.1.occurred_at));
    let known_from = rows.partition_point(|r| created(&r.0));
    let mut seen = conn.prepare(&upsert_seen_sql("ip_seen_delta"))?;
    let mut counts = SeenCounts::new();
    let mut inserted = 0u64;
    let mut new_events: Vec<&Event> = Vec::new();
    let mut returned: HashSet<(i64, String)> = HashSet::new();
    let mut params: Vec<raw::Value<'_>> = Vec::with_capacity(ROWS_PER_INSERT * COLUMNS);
    let ips: Vec<Option<[u8; 16]>> = rows
        .iter()
        .map(|(_, e)| e.ip.map(|ip| key_bytes(ip_key(ip))))
        .collect();
    for (part, returning) in [(0..known_from, false), (known_from..rows.len(), true)] {
        let mut insert_full = conn.prepare(&insert_sql(ROWS_PER_INSERT, returning))?;
        let mut insert_one = conn.prepare(&insert_sql(1, returning))?;
        for (chunk, ips) in rows[part.clone()]
            .chunks(ROWS_PER_INSERT)
            .zip(ips[part].chunks(ROWS_PER_INSERT))
        {
            params.clear();
            for ((ck, e), ip) in chunk.iter().zip(ips) {
                let device = e
                    .device_id
                    .as_deref()
                    .map(|d| devices.key(&cache.devices, d))
                    .transpose()?;
                let agent = e
                    .user_agent
                    .as_deref()
                    .map(|u| agents.key(&cache.agents, u))
                    .transpose()?;
                let d = e.destination.as_ref();
                params.extend_from_slice(&[
                    raw::Value::Int(*ck),
                    raw::Value::Int(e.occurred_at),
                    raw::Value::Text(&e.event_id),
                    raw::Value::Int(e.kind.code() as i64),
                    raw::Value::Int(e.channel.code() as i64),
                    ip.as_ref()
                        .map_or(raw::Value::Null, |b| raw::Value::Blob(b)),
                    e.device_id.as_deref().map(|d| device_hash(d) as i64).into(),
                    device.into(),
                    agent.into(),
                    e.amount.into(),
                    e.side.map(|s| s.code() as i64).into(),
                    d.map(|d| d.bank_code.as_str()).into(),
                    d.map(|d| d.branch_code.as_str()).into(),
                    d.map(|d| d.account_type.as_str()).into(),
                    d.map(|d| d.account_number.as_str()).into(),
                    d.map(|d| d.holder_kana.as_str()).into(),
                ]);
            }
            // A full chunk in one statement, a short one row by row.
            let mut run =
                |exec: &mut dyn FnMut(&mut raw::Stmt<'_, '_>, &[raw::Value<'_>]) -> Result<u64>| {
                    if chunk.len() == ROWS_PER_INSERT {
                        exec(&mut insert_full, &params)
                    } else {
                        params
                            .chunks(COLUMNS)
                            .map(|row| exec(&mut insert_one, row))
                            .sum::<Result<u64>>()
                    }
                };
            if returning {
                returned.clear();
                inserted += run(&mut |stmt, p| {
                    let mut n = 0;
                    stmt.for_each(p, |r| {
                        n += 1;
                        if keep_new {
                            returned.insert((r.i64(0), r.string(4)?));
                        }
                        count_returned(&mut counts, r)
                    })?;
                    Ok(n)
                })?;
                if keep_new {
                    new_events.extend(
                        chunk
                            .iter()
                            .filter(|(ck, e)| returned.contains(&(*ck, e.event_id.clone())))
                            .map(|(_, e)| *e),
                    );
                }
            } else {
                let n = run(&mut |stmt, p| stmt.exec(p))?;
                if n != chunk.len() as u64 {
                    return Err(corrupt("a new customer's event was already stored"));
                }
                inserted += n;
                if keep_new {
                    new_events.extend(chunk.iter().map(|(_, e)| *e));
                }
                for ((ck, e), ip) in chunk.iter().zip(ips) {
                    if let Some(ip) = ip {
                        count_seen(&mut counts, *ip, e.occurred_at, *ck, e.kind.code().into());
                    }
                }
            }
        }
    }
    // ip_seen rows of the stored events, in key order (big-endian bytes sort as the keys do).
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort_unstable();
    let seen_rows = counts.len() as i64;
    for ((key, day, ck), (logins, failed)) in counts {
        seen.exec(&[
            raw::Value::Blob(&key),
            raw::Value::Int(day),
            raw::Value::Int(ck),
            raw::Value::Int(logins),
            raw::Value::Int(failed),
        ])?;
    }
    Ok((
        inserted,
        FreshKeys([customers.fresh, devices.fresh, agents.fresh]),
        seen_rows,
        new_events,
    ))
}

impl SqliteStore {
    fn checkpoints(&self) -> std::sync::MutexGuard<'_, Checkpoints> {
        self.checkpoints.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Before a write: when the WAL has grown past its limit, waits for the running checkpoint
    /// and runs one more, which completes (no commit comes in between unless another writer's),
    /// so the write starts the WAL again from its beginning.
    async fn make_wal_room(&self) -> Result<()> {
        let running = {
            let mut c = self.checkpoints();
            // What the last checkpoint saw (another process's writes included) and what this
            // process's last commit left (a checkpoint may not have reported since).
            let now = self.wal_now.load(std::sync::atomic::Ordering::Relaxed);
            if c.wal_frames <= c.limit && now <= c.limit {
                return Ok(());
            }
            c.running.take()
        };
        if let Some(r) = running {
            r.await.map_err(|e| StoreError::Task(e.to_string()))??;
        }
        let frames = checkpoint(&self.checkpointer).await?;
        self.checkpoints().wal_frames = frames;
        Ok(())
    }

    /// After a commit: starts a checkpoint unless one is running.
    fn checkpoint_soon(&self) {
        let mut c = self.checkpoints();
        if c.running.as_ref().is_some_and(|r| !r.is_finished()) {
            return;
        }
        let (pool, state) = (self.checkpointer.clone(), self.checkpoints.clone());
        // Only a WAL that stays small (many small commits) waits for the gap; one that grows
        // large is checkpointed right away, as before.
        let wait = match c.last_started {
            Some(l) if c.wal_frames < c.limit / 8 => CHECKPOINT_GAP.saturating_sub(l.elapsed()),
            _ => Duration::ZERO,
        };
        c.running = Some(tokio::spawn(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            state.lock().unwrap_or_else(|p| p.into_inner()).last_started =
                Some(std::time::Instant::now());
            let frames = checkpoint(&pool).await?;
            state.lock().unwrap_or_else(|p| p.into_inner()).wal_frames = frames;
            Ok(frames)
        }));
    }

    /// Inside a write transaction that added up to `added` rows to `ip_seen_delta`: merges the
    /// delta into `ip_seen` once it holds more than its limit. The row figure is an upper bound
    /// (an upsert may add nothing; a rolled-back merge leaves rows behind); it only decides when.
    fn merge_delta_if_full(&self, conn: &raw::Conn<'_>, added: i64) -> Result<()> {
        let mut d = self.delta.lock().unwrap_or_else(|p| p.into_inner());
        let rows = match d.rows {
            Some(r) => r + added,
            None => conn
                .prepare("SELECT count(*) FROM ip_seen_delta")?
                .query_i64(&[])?
                .unwrap_or(0),
        };
        d.rows = Some(rows);
        if rows > d.limit {
            merge_delta(conn)?;
            d.rows = Some(0);
        }
        Ok(())
    }

    /// Sets the number of rows after which `ip_seen_delta` is merged (for tests: the default is
    /// two million).
    #[doc(hidden)]
    pub fn set_ip_seen_delta_limit(&self, rows: i64) {
        self.delta.lock().unwrap_or_else(|p| p.into_inner()).limit = rows;
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        // A panic while the lock was held cannot leave uncommitted keys behind (they are added
        // after commit), so a poisoned cache is still right.
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl EventWriter for SqliteStore {
    async fn insert_events(&self, events: &[Event]) -> Result<Inserted> {
        if events.is_empty() {
            return Ok(Inserted::default());
        }
        let inserted = self.write(|conn, w| w.events(conn, events)).await?;
        Ok(Inserted {
            inserted,
            duplicates: events.len() as u64 - inserted,
        })
    }
}

/// Runs blocking work from async code: off the async workers' queue on a multi-thread runtime
/// (the runtime moves its other tasks elsewhere meanwhile), inline on a current-thread one.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// What a write transaction may do besides raw SQL: store events, change resolutions.
pub(crate) struct Writes<'s> {
    store: &'s SqliteStore,
    fresh: Vec<FreshKeys>,
    /// New events of customers the hot cache holds, added to it after the commit.
    hot: Vec<(String, Past)>,
    marks_changed: bool,
}

impl Writes<'_> {
    /// Stores events (idempotently), as [`EventWriter::insert_events`]; returns how many were new.
    pub(crate) fn events(&mut self, conn: &raw::Conn<'_>, events: &[Event]) -> Result<u64> {
        // With the hot cache, every new event (a customer being read may be held next).
        let keep_new = self.store.hot.is_some();
        let (inserted, fresh, seen_rows, new) =
            write_batch(conn, &self.store.cache(), events, keep_new)?;
        self.store.merge_delta_if_full(conn, seen_rows)?;
        self.fresh.push(fresh);
        self.hot.extend(
            new.into_iter()
                .map(|e| (e.customer_id.clone(), Past::of(e))),
        );
        Ok(inserted)
    }

    /// The transaction changes what resolutions mark (familiar IPs and devices, fraud IPs).
    pub(crate) fn marks_changed(&mut self) {
        self.marks_changed = true;
    }
}

/// Counts a write transaction in `store_meta.seq` (every process does, so each can tell whether
/// another wrote since it last looked); returns the new value.
fn bump_seq(conn: &raw::Conn<'_>) -> Result<i64> {
    conn.prepare("UPDATE store_meta SET seq = seq + 1 RETURNING seq")?
        .query_i64(&[])?
        .ok_or_else(|| corrupt("store_meta has no row"))
}

impl SqliteStore {
    /// Runs `f` in a write transaction on the raw handle: one writer at a time in this process,
    /// `BEGIN IMMEDIATE` against other processes (so a transaction never fails half-way on a
    /// snapshot another writer moved), the work itself off the async workers. Commits if `f`
    /// returns `Ok`, rolls back otherwise.
    pub(crate) async fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&raw::Conn<'_>, &mut Writes<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut writer = self.writer.lock().await;
        self.make_wal_room().await?;
        let conn = match writer.take() {
            Some(c) => c,
            None => raw::OwnedConn::open_writer(
                &self.path,
                self.synchronous_full,
                self.wal_now.clone(),
            )?,
        };
        let mut w = Writes {
            store: self,
            fresh: Vec::new(),
            hot: Vec::new(),
            marks_changed: false,
        };
        let done = blocking(|| -> Result<(T, i64), E> {
            let c = conn.conn();
            c.prepare("BEGIN IMMEDIATE")?.exec(&[])?;
            let out = bump_seq(&c)
                .map_err(E::from)
                .and_then(|seq| Ok((f(&c, &mut w)?, seq)))
                .and_then(|out| {
                    c.prepare("COMMIT")?.exec(&[])?;
                    Ok(out)
                });
            if out.is_err() && !c.autocommit() {
                // Whatever failed, no transaction stays open on the writer.
                let _ = c.prepare("ROLLBACK").and_then(|mut r| r.exec(&[]));
            }
            out
        });
        *writer = Some(conn);
        let (out, seq) = done?;
        let Writes {
            fresh,
            hot,
            marks_changed,
            ..
        } = w;
        self.checkpoint_soon();
        if let Some(h) = &self.hot {
            if seq != h.seq() + 1 {
                // Another process wrote since this one last looked.
                h.clear();
                h.set_seq(seq);
            } else {
                h.stored(Write::Seq(seq), hot);
                if marks_changed {
                    h.marks_changed();
                }
            }
        }
        let mut cache = self.cache();
        for FreshKeys([c, d, a]) in fresh {
            cache.customers.extend(c);
            cache.devices.extend(d);
            cache.agents.extend(a);
        }
        Ok(out)
    }
}

/// The procedures query for a kind. The kind is written into the statement (a small integer from an
/// enum, never input text), with the index's own condition repeated, so that SQLite can prove the
/// partial index `events_sensitive` applies. Other kinds are found by a scan.
fn procedures_sql(kind: Kind) -> String {
    let partial = if SENSITIVE_KINDS.contains(&kind.code()) {
        format!(" AND e.kind IN {SENSITIVE_SQL}")
    } else {
        String::new()
    };
    format!(
        "SELECT e.event_id, c.customer_id, e.occurred_at, e.channel, e.ip, e.device_hash \
         FROM events e JOIN customers c ON c.customer_key = e.customer_key \
         WHERE e.kind = {}{partial} AND e.occurred_at >= ? AND e.occurred_at < ?",
        kind.code()
    )
}

pub(crate) fn side_of(code: Option<i64>) -> Result<Option<Side>> {
    code.map(|c| Side::from_code(c).ok_or_else(|| corrupt("unknown side code")))
        .transpose()
}

fn poisoned() -> StoreError {
    StoreError::Task("a lock was poisoned by a panic".into())
}

/// Fills the cache of user-agent families for the given keys.
fn ua_families(
    conn: &raw::Conn<'_>,
    cache: &Mutex<HashMap<i64, u64>>,
    keys: impl Iterator<Item = i64>,
) -> Result<()> {
    let missing: Vec<i64> = {
        let c = cache.lock().map_err(|_| poisoned())?;
        let mut m: Vec<i64> = keys.filter(|k| !c.contains_key(k)).collect();
        m.sort_unstable();
        m.dedup();
        m
    };
    if missing.is_empty() {
        return Ok(());
    }
    let mut stmt = conn.prepare("SELECT user_agent FROM user_agents WHERE ua_key = ?")?;
    let mut found = Vec::with_capacity(missing.len());
    for k in missing {
        stmt.for_each(&[raw::Value::Int(k)], |r| {
            found.push((k, ua_family_hash(&r.string(0)?)));
            Ok(())
        })?;
    }
    cache.lock().map_err(|_| poisoned())?.extend(found);
    Ok(())
}

fn ip_event(r: &raw::Row<'_>) -> Result<IpEvent> {
    Ok(IpEvent {
        ip: ip_of(r.blob(0))?.ok_or_else(|| corrupt("missing IP"))?,
        at: r.i64(1),
        customer_id: r.string(2)?,
        kind: kind_of(r.i64(3))?,
    })
}

/// The IP question for a range of keys (`ip >= ? AND ip <= ?`): candidates from
/// `ip_seen`, then the candidates' exact events. CROSS JOIN keeps SQLite's join order: candidates
/// first, then each candidate's id (once per candidate, not per event), then its events by the
/// table's key (customer, time).
fn ip_range_sql() -> String {
    let cond = "ip >= ?1 AND ip <= ?2 AND day >= ?3 AND day <= ?4";
    format!(
        "SELECT s.ip, e.occurred_at, c.customer_id, e.kind \
         FROM (SELECT ip, customer_key FROM ip_seen WHERE {cond} \
               UNION SELECT ip, customer_key FROM ip_seen_delta WHERE {cond}) s \
         CROSS JOIN customers c CROSS JOIN events e \
         WHERE c.customer_key = s.customer_key AND e.customer_key = s.customer_key \
           AND e.occurred_at >= ?5 AND e.occurred_at < ?6 AND e.ip = s.ip"
    )
}

/// Runs [`ip_range_sql`] for events with keys in `[lo, hi]` and `from ≤ at < to`.
fn ip_range(
    conn: &raw::Conn<'_>,
    lo: &[u8; 16],
    hi: &[u8; 16],
    from: i64,
    to: i64,
) -> Result<Vec<IpEvent>> {
    let mut out = Vec::new();
    if from >= to {
        return Ok(out);
    }
    let params = [
        raw::Value::Blob(lo),
        raw::Value::Blob(hi),
        raw::Value::Int(utc_day(from)),
        raw::Value::Int(utc_day(to - 1)),
        raw::Value::Int(from),
        raw::Value::Int(to),
    ];
    conn.prepare(&ip_range_sql())?.for_each(&params, |r| {
        out.push(ip_event(r)?);
        Ok(())
    })?;
    Ok(out)
}

/// Uses of IPs for windows `(ip, from, to)` (see [`HistoryReader::ip_uses`]).
fn ip_windows(
    conn: &raw::Conn<'_>,
    windows: &[(u128, i64, i64)],
) -> Result<Vec<(u128, IpUse<String>)>> {
    let ranges: Vec<(u128, u128, i64, i64)> =
        windows.iter().map(|&(ip, f, t)| (ip, ip, f, t)).collect();
    range_windows(conn, &ranges)
}

/// Uses of the IPs of key ranges for windows `(lo, hi, from, to)`, each labelled with its range's
/// `lo` (see [`HistoryReader::ip_uses`] and [`HistoryReader::net_uses`]). Per range, the
/// `ip_seen` rows of the days its windows span are read in one range; a row whose day no window
/// edge falls inside is a use as it stands; for the others, the customer's events of that day are
/// read (by the table's key, customers in key order) and those on the range are single uses.
fn range_windows(
    conn: &raw::Conn<'_>,
    windows: &[(u128, u128, i64, i64)],
) -> Result<Vec<(u128, IpUse<String>)>> {
    // Per range: the span of its windows and the days an edge falls inside.
    let mut per_range: BTreeMap<(u128, u128), (i64, i64, Vec<i64>)> = BTreeMap::new();
    for &(lo, hi, from, to) in windows {
        if from >= to || lo > hi {
            continue;
        }
        let w = per_range.entry((lo, hi)).or_insert((from, to, Vec::new()));
        (w.0, w.1) = (w.0.min(from), w.1.max(to));
        for edge in [from, to] {
            if edge.rem_euclid(DAY_US) != 0 {
                w.2.push(utc_day(edge));
            }
        }
    }
    // One address by equality (its days by the key's second column); a block as a key range.
    let rows_sql = |ip: &str| {
        format!(
            "SELECT day, customer_key, logins, failed_logins FROM ip_seen \
             WHERE {ip} AND day >= ?2 AND day <= ?3 \
             UNION ALL SELECT day, customer_key, logins, failed_logins FROM ip_seen_delta \
             WHERE {ip} AND day >= ?2 AND day <= ?3"
        )
    };
    let mut rows_of_ip = conn.prepare(&rows_sql("ip = ?1"))?;
    let mut rows_of_range = conn.prepare(&rows_sql("ip >= ?1 AND ip <= ?4"))?;
    // (customer key, label, day, logins, failed logins) of whole days; (customer key, day, lo,
    // hi) of days to read.
    let mut whole: Vec<(i64, u128, i64, u32, u32)> = Vec::new();
    let mut split: Vec<(i64, i64, u128, u128)> = Vec::new();
    for ((lo, hi), (from, to, mut edges)) in per_range {
        edges.sort_unstable();
        edges.dedup();
        let (lo_key, hi_key) = (key_bytes(lo), key_bytes(hi));
        let mut params = vec![
            raw::Value::Blob(&lo_key),
            raw::Value::Int(utc_day(from)),
            raw::Value::Int(utc_day(to - 1)),
        ];
        let rows_of = if lo == hi {
            &mut rows_of_ip
        } else {
            params.push(raw::Value::Blob(&hi_key));
            &mut rows_of_range
        };
        rows_of.for_each(&params, |r| {
            let (day, customer) = (r.i64(0), r.i64(1));
            if edges.binary_search(&day).is_ok() {
                split.push((customer, day, lo, hi));
            } else {
                let count = |i| u32::try_from(r.i64(i)).map_err(|_| corrupt("ip_seen count"));
                whole.push((customer, lo, day, count(2)?, count(3)?));
            }
            Ok(())
        })?;
    }
    // A day with a row in both tables is here twice; the events of a customer's day are read
    // once below whatever the number of its entries.
    split.sort_unstable();
    split.dedup();
    // Customer ids, each looked up once, in key order.
    let mut keys: Vec<i64> = whole
        .iter()
        .map(|w| w.0)
        .chain(split.iter().map(|s| s.0))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut id_of = conn.prepare("SELECT customer_id FROM customers WHERE customer_key = ?")?;
    let mut ids: HashMap<i64, String> = HashMap::with_capacity(keys.len());
    for k in keys {
        id_of.for_each(&[raw::Value::Int(k)], |r| {
            ids.insert(k, r.string(0)?);
            Ok(())
        })?;
    }
    let id = |k: i64| {
        ids.get(&k)
            .cloned()
            .ok_or_else(|| corrupt("ip_seen names an unknown customer"))
    };
    let mut out = Vec::with_capacity(whole.len() + split.len());
    for (customer, ip, day, logins, failed_logins) in whole {
        let usage = IpUse {
            at: day * DAY_US,
            customer: id(customer)?,
            logins,
            failed_logins,
        };
        out.push((ip, usage));
    }
    let mut events_of = conn.prepare(
        "SELECT occurred_at, kind, ip FROM events \
         WHERE customer_key = ? AND occurred_at >= ? AND occurred_at < ? AND ip IS NOT NULL",
    )?;
    for same_day in split.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        let (customer, day) = (same_day[0].0, same_day[0].1);
        let params = [
            raw::Value::Int(customer),
            raw::Value::Int(day * DAY_US),
            raw::Value::Int((day + 1) * DAY_US),
        ];
        events_of.for_each(&params, |r| {
            if let Some(ip) = ip_of(r.blob(2))? {
                // Once per range the event is in (an address and its block may both be asked).
                for s in same_day.iter().filter(|s| s.2 <= ip && ip <= s.3) {
                    out.push((
                        s.2,
                        IpUse::event(r.i64(0), id(customer)?, kind_of(r.i64(1))?),
                    ));
                }
            }
            Ok(())
        })?;
    }
    Ok(out)
}

/// A customer's events with `from ≤ at < to`.
fn past_rows(
    conn: &raw::Conn<'_>,
    families: &Mutex<HashMap<i64, u64>>,
    customer: &str,
    from: i64,
    to: i64,
) -> Result<Vec<Past>> {
    let mut rows: Vec<(Past, Option<i64>)> = Vec::new();
    conn.prepare(
        "SELECT e.occurred_at, e.kind, e.channel, e.ip, e.device_hash, e.ua_key, e.amount, \
                 e.side FROM customers c CROSS JOIN events e \
                 WHERE c.customer_id = ? AND e.customer_key = c.customer_key \
                   AND e.occurred_at >= ? AND e.occurred_at < ? \
                 ORDER BY e.occurred_at, e.event_id",
    )?
    .for_each(
        &[
            raw::Value::Text(customer),
            raw::Value::Int(from),
            raw::Value::Int(to),
        ],
        |r| {
            rows.push((
                Past {
                    access: Access {
                        at: r.i64(0),
                        kind: kind_of(r.i64(1))?,
                        channel: channel_of(r.i64(2))?,
                        ip: ip_of(r.blob(3))?,
                        device: r.opt_i64(4).map(|d| d as u64),
                    },
                    ua: None,
                    amount: r.opt_i64(6),
                    side: side_of(r.opt_i64(7))?,
                },
                r.opt_i64(5),
            ));
            Ok(())
        },
    )?;
    ua_families(conn, families, rows.iter().filter_map(|r| r.1))?;
    let families = families.lock().map_err(|_| poisoned())?;
    Ok(rows
        .into_iter()
        .map(|(mut p, k)| {
            p.ua = k.and_then(|k| families.get(&k).copied());
            p
        })
        .collect())
}

/// Runs `f` in one read transaction, with `store_meta.seq` as of its snapshot.
fn snapshot<T>(
    conn: &raw::Conn<'_>,
    f: impl FnOnce(&raw::Conn<'_>) -> Result<T>,
) -> Result<(i64, T)> {
    conn.prepare("BEGIN")?.exec(&[])?;
    let out = seq_on(conn).and_then(|seq| Ok((seq, f(conn)?)));
    let end = conn
        .prepare(if out.is_ok() { "COMMIT" } else { "ROLLBACK" })
        .and_then(|mut s| s.exec(&[]));
    let out = out?;
    end?;
    Ok(out)
}

fn seq_on(conn: &raw::Conn<'_>) -> Result<i64> {
    conn.prepare("SELECT seq FROM store_meta")?
        .query_i64(&[])?
        .ok_or_else(|| corrupt("store_meta has no row"))
}

impl SqliteStore {
    /// Runs `f` on the raw handle of a pooled connection, on a blocking thread: reads go row by
    /// row through SQLite's own API instead of one channel message per row (sqlx's cost, 4× the
    /// whole query at a million customers; docs/benchmarks.md).
    /// Runs a short read (a customer, an IP) on a connection of our own, on the calling thread:
    /// for the server's hot path, where handing the work to another thread costs more than the
    /// read itself. Statements stay prepared on the connection.
    pub(crate) fn read_now<T>(&self, f: impl FnOnce(&raw::Conn<'_>) -> Result<T>) -> Result<T> {
        let idle = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(c) => c,
            None => raw::OwnedConn::open(&self.path)?,
        };
        let out = f(&conn.conn());
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if readers.len() < IDLE_READERS {
            readers.push(conn);
        }
        out
    }

    /// A customer's events with `from ≤ at < to`, read from the file.
    fn read_past(&self, customer: &str, from: i64, to: i64) -> Result<Vec<Past>> {
        self.read_now(|conn| past_rows(conn, &self.ua_families, customer, from, to))
    }

    /// Uses for windows over key ranges (an address is a range of one): the server's single
    /// question from the hot cache when there is one, else from the file.
    async fn range_uses(
        &self,
        windows: &[(u128, u128, i64, i64)],
    ) -> Result<Vec<(u128, IpUse<String>)>> {
        if let [(lo, hi, from, to)] = *windows
            && let Some((h, net)) = self.hot_range(lo, hi)
            && let Some(uses) =
                self.ask_hot(h, net, lo, hi, from, |h| h.ip_uses(net, lo, from, to))?
        {
            return Ok(uses);
        }
        if windows.len() <= 8 {
            // The server's question: a few windows, answered on this thread.
            return self.read_now(|conn| range_windows(conn, windows));
        }
        let windows = windows.to_vec();
        self.with_raw(move |conn| range_windows(conn, &windows))
            .await
    }

    /// See [`crate::hot::range`].
    fn hot_range(&self, lo: u128, hi: u128) -> Option<(&Hot, bool)> {
        crate::hot::range(self.hot.as_deref(), lo, hi)
    }

    /// `ask`s the hot cache about the range `[lo, hi]` (an address, or a familiarity network
    /// with `net`), reading what it lacks: the days from before `from`, then the events of up to
    /// two edge days. `None` when it still lacks them (a range too large to hold, or fills
    /// overtaken by writes): the caller reads the file.
    fn ask_hot<R>(
        &self,
        h: &Hot,
        net: bool,
        lo: u128,
        hi: u128,
        from: i64,
        ask: impl Fn(&Hot) -> std::result::Result<R, IpNeed>,
    ) -> Result<Option<R>> {
        self.look_for_other_writers(h)?;
        for _ in 0..4 {
            match ask(h) {
                Ok(r) => return Ok(Some(r)),
                Err(IpNeed::Days) => {
                    let day = utc_day(from) - crate::hot::FILL_SLACK_US / DAY_US;
                    // Whole days only: both edges on midnight.
                    let w = [(lo, hi, day * DAY_US, FAR_DAY * DAY_US)];
                    let noted = h.applied();
                    let (seq, uses) = self.read_now(|c| snapshot(c, |c| range_windows(c, &w)))?;
                    h.fill_ip(net, lo, day, (noted, Seen::Seq(seq)), uses);
                }
                Err(IpNeed::Events(day)) => {
                    // An edge inside the day: its events one by one.
                    let w = [(lo, hi, day * DAY_US + 1, day * DAY_US + 2)];
                    let noted = h.applied();
                    let (seq, uses) = self.read_now(|c| snapshot(c, |c| range_windows(c, &w)))?;
                    h.fill_ip_day(net, lo, day, (noted, Seen::Seq(seq)), uses);
                }
            }
        }
        Ok(None)
    }

    /// The server's hot cache of customers' events and resolutions (see [`crate::hot`]), holding
    /// at most `max_rows` events. For a store that serves; a batch reads the file.
    pub async fn with_hot(mut self, max_rows: usize) -> Result<Self> {
        let seq = {
            let _writer = self.writer.lock().await;
            self.read_seq()?
        };
        self.hot = Some(Arc::new(Hot::new(max_rows, seq)));
        Ok(self)
    }

    pub(crate) fn hot(&self) -> Option<&Hot> {
        self.hot.as_deref()
    }

    pub(crate) fn writer(&self) -> &tokio::sync::Mutex<Option<raw::OwnedConn>> {
        &self.writer
    }

    /// Fills the hot cache with the customers and IPs active in the `days` days up to the
    /// newest stored, most recent first, while there is room: each customer's events from
    /// [`crate::assess::past_span`] before that period, each IP's days from
    /// [`crate::assess::ip_span`] before it. A server does this before it says it is ready, so
    /// that its first requests find what they need.
    pub async fn preload_hot(&self, days: i64, policy: &Policy) -> Result<()> {
        let (past_span, ip_span) = (
            crate::assess::past_span(policy),
            crate::assess::ip_span(policy),
        );
        let Some(h) = &self.hot else { return Ok(()) };
        let _writer = self.writer.lock().await;
        let recent = |what: &str| {
            format!(
                "SELECT {what}, max(day) AS d FROM \
                 (SELECT {what}, day FROM ip_seen WHERE day >= ?1 \
                  UNION ALL SELECT {what}, day FROM ip_seen_delta WHERE day >= ?1) \
                 GROUP BY {what} ORDER BY d DESC"
            )
        };
        let (first_day, customers, ips) = self.read_now(|conn| {
            let newest = conn
                .prepare(
                    "SELECT max(d) FROM (SELECT max(day) AS d FROM ip_seen \
                     UNION ALL SELECT max(day) FROM ip_seen_delta)",
                )?
                .query_i64(&[])?;
            let Some(newest) = newest else {
                return Ok((0, Vec::new(), Vec::new()));
            };
            let first_day = newest + 1 - days;
            let mut customers = Vec::new();
            conn.prepare(&format!(
                "SELECT c.customer_id FROM ({}) r JOIN customers c \
                 ON c.customer_key = r.customer_key ORDER BY r.d DESC",
                recent("customer_key")
            ))?
            .for_each(&[raw::Value::Int(first_day)], |r| {
                customers.push(r.string(0)?);
                Ok(())
            })?;
            let mut ips = Vec::new();
            conn.prepare(&recent("ip"))?
                .for_each(&[raw::Value::Int(first_day)], |r| {
                    ips.extend(ip_of(r.blob(0))?);
                    Ok(())
                })?;
            Ok((first_day, customers, ips))
        })?;
        let held_from = first_day * DAY_US - past_span - crate::hot::FILL_SLACK_US;
        for c in &customers {
            if !h.preload_room().0 {
                break;
            }
            let noted = h.applied();
            let (seq, rows) = self.read_now(|conn| {
                snapshot(conn, |conn| {
                    past_rows(conn, &self.ua_families, c, held_from, i64::MAX)
                })
            })?;
            h.fill(c, held_from, noted, Seen::Seq(seq), rows);
        }
        let ip_day = utc_day(first_day * DAY_US - ip_span - crate::hot::FILL_SLACK_US);
        for ip in ips {
            if !h.preload_room().1 {
                break;
            }
            let w = [(ip, ip_day * DAY_US, FAR_DAY * DAY_US)];
            let noted = h.applied();
            let (seq, uses) = self.read_now(|c| snapshot(c, |c| ip_windows(c, &w)))?;
            h.fill_ip(false, ip, ip_day, (noted, Seen::Seq(seq)), uses);
        }
        Ok(())
    }

    /// The hot cache's counters, when there is one.
    pub fn hot_stats(&self) -> Option<crate::hot::HotStats> {
        self.hot.as_ref().map(|h| h.stats())
    }

    fn read_seq(&self) -> Result<i64> {
        self.read_now(seq_on)
    }

    /// Empties the hot cache if another process wrote since this one last looked: at most every
    /// [`crate::hot::POLL`], and not while this process writes (its commit looks itself).
    pub(crate) fn look_for_other_writers(&self, h: &Hot) -> Result<()> {
        if !h.check_due() {
            return Ok(());
        }
        let Ok(_writer) = self.writer.try_lock() else {
            return Ok(());
        };
        let seq = self.read_seq()?;
        if seq != h.seq() {
            h.clear();
        }
        h.set_seq(seq);
        Ok(())
    }

    pub(crate) async fn with_raw<T: Send + 'static>(
        &self,
        f: impl FnOnce(&raw::Conn<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let mut conn = self.pool.acquire().await?;
        tokio::task::spawn_blocking(move || {
            let mut handle = tokio::runtime::Handle::current().block_on(conn.lock_handle())?;
            // SAFETY: the handle is locked while `handle` lives; `raw` and its statements are
            // dropped inside `f`, before it.
            let raw = unsafe { raw::Conn::new(handle.as_raw_handle()) };
            f(&raw)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

impl HistoryReader for SqliteStore {
    async fn customer_accesses(
        &self,
        customers: &[&str],
        from: i64,
        to: i64,
    ) -> Result<Vec<(String, Access)>> {
        let customers: Vec<String> = customers.iter().map(|c| (*c).to_owned()).collect();
        self.with_raw(move |conn| {
            let mut out = Vec::new();
            for chunk in customers.chunks(KEYS_PER_QUERY) {
                let mut stmt = conn.prepare(&format!(
                    "SELECT c.customer_id, e.occurred_at, e.kind, e.channel, e.ip, e.device_hash \
                     FROM customers c CROSS JOIN events e \
                     WHERE c.customer_id IN ({}) AND e.customer_key = c.customer_key \
                       AND e.occurred_at >= ? AND e.occurred_at < ?",
                    placeholders(chunk.len())
                ))?;
                let mut params: Vec<raw::Value<'_>> =
                    chunk.iter().map(|c| raw::Value::Text(c)).collect();
                params.extend([raw::Value::Int(from), raw::Value::Int(to)]);
                // Rows come customer by customer: the id is copied once per customer.
                let mut last: Option<String> = None;
                stmt.for_each(&params, |r| {
                    let id = r.text(0)?.ok_or_else(|| corrupt("missing customer id"))?;
                    let id = match &last {
                        Some(l) if l == id => l.clone(),
                        _ => {
                            last = Some(id.to_owned());
                            id.to_owned()
                        }
                    };
                    out.push((
                        id,
                        Access {
                            at: r.i64(1),
                            kind: kind_of(r.i64(2))?,
                            channel: channel_of(r.i64(3))?,
                            ip: ip_of(r.blob(4))?,
                            device: r.opt_i64(5).map(|d| d as u64),
                        },
                    ));
                    Ok(())
                })?;
            }
            Ok(out)
        })
        .await
    }

    async fn ip_range_events(
        &self,
        lo: u128,
        hi: u128,
        from: i64,
        to: i64,
    ) -> Result<Vec<IpEvent>> {
        let (lo, hi) = (key_bytes(lo), key_bytes(hi));
        self.with_raw(move |conn| ip_range(conn, &lo, &hi, from, to))
            .await
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
            && let Some(act) = self.ask_hot(h, net, lo, hi, from, |h| {
                h.activity(net, lo, customer, from, to)
            })?
        {
            return Ok(act);
        }
        let w = [(lo, hi, from, to)];
        let uses = self.read_now(|conn| range_windows(conn, &w))?;
        Ok(ip_activity(
            &customer.to_owned(),
            uses.iter()
                .filter(|(k, u)| *k == lo && from <= u.at && u.at < to)
                .map(|(_, u)| u),
        ))
    }

    async fn procedures(&self, kind: Kind, from: i64, to: i64) -> Result<Vec<Procedure>> {
        self.with_raw(move |conn| {
            let mut out = Vec::new();
            conn.prepare(&procedures_sql(kind))?.for_each(
                &[raw::Value::Int(from), raw::Value::Int(to)],
                |r| {
                    out.push(Procedure {
                        event_id: r.string(0)?,
                        customer_id: r.string(1)?,
                        occurred_at: r.i64(2),
                        channel: channel_of(r.i64(3))?,
                        ip: ip_of(r.blob(4))?.map(key_ip),
                        device: r.opt_i64(5).map(|d| d as u64),
                    });
                    Ok(())
                },
            )?;
            Ok(out)
        })
        .await
    }

    async fn customer_past(&self, customer: &str, from: i64, to: i64) -> Result<Vec<Past>> {
        let Some(h) = &self.hot else {
            return self.read_past(customer, from, to);
        };
        self.look_for_other_writers(h)?;
        if let Some(p) = h.past(customer, from, to) {
            return Ok(p);
        }
        // A miss: every event from a little before the window on, with the seq of the snapshot.
        let held_from = from.saturating_sub(crate::hot::FILL_SLACK_US);
        let noted = h.applied();
        let (seq, rows) = self.read_now(|conn| {
            snapshot(conn, |conn| {
                past_rows(conn, &self.ua_families, customer, held_from, i64::MAX)
            })
        })?;
        let lo = rows.partition_point(|p| p.access.at < from);
        let hi = rows.partition_point(|p| p.access.at < to);
        let out = rows[lo..hi].to_vec();
        h.fill(customer, held_from, noted, Seen::Seq(seq), rows);
        Ok(out)
    }

    async fn login_features(&self, from: i64, to: i64) -> Result<Vec<LoginFeatures>> {
        let families = self.ua_families.clone();
        self.with_raw(move |conn| {
            let mut rows: Vec<(i64, Option<u128>, Option<i64>)> = Vec::new();
            conn.prepare(&format!(
                "SELECT occurred_at, ip, ua_key FROM events \
                 WHERE kind = {} AND occurred_at >= ? AND occurred_at < ?",
                Kind::Login.code()
            ))?
            .for_each(&[raw::Value::Int(from), raw::Value::Int(to)], |r| {
                rows.push((r.i64(0), ip_of(r.blob(1))?, r.opt_i64(2)));
                Ok(())
            })?;
            let mut keys: Vec<i64> = rows.iter().filter_map(|r| r.2).collect();
            keys.sort_unstable();
            keys.dedup();
            ua_families(conn, &families, keys.into_iter())?;
            let families = families.lock().map_err(|_| poisoned())?;
            Ok(rows
                .into_iter()
                .map(|(at, ip, k)| LoginFeatures {
                    at,
                    ip,
                    ua: k.and_then(|k| families.get(&k).copied()),
                })
                .collect())
        })
        .await
    }

    async fn customer_events(&self, customer: &str, from: i64, to: i64) -> Result<Vec<Event>> {
        let customer = customer.to_owned();
        self.with_raw(move |conn| {
            let mut out = Vec::new();
            let mut stmt = conn.prepare(
                "SELECT e.event_id, e.occurred_at, c.customer_id, e.kind, e.channel, e.ip, \
                 d.device_id, u.user_agent, e.amount, e.side, e.dest_bank_code, \
                 e.dest_branch_code, e.dest_account_type, e.dest_account_number, \
                 e.dest_holder_kana \
                 FROM customers c CROSS JOIN events e \
                 LEFT JOIN devices d ON d.device_key = e.device_key \
                 LEFT JOIN user_agents u ON u.ua_key = e.ua_key \
                 WHERE c.customer_id = ? AND e.customer_key = c.customer_key \
                   AND e.occurred_at >= ? AND e.occurred_at < ? \
                 ORDER BY e.occurred_at, e.event_id",
            )?;
            let params = [
                raw::Value::Text(&customer),
                raw::Value::Int(from),
                raw::Value::Int(to),
            ];
            stmt.for_each(&params, |r| {
                let text = |i| r.text(i).map(|t| t.map(str::to_owned));
                out.push(Event {
                    event_id: r.string(0)?,
                    occurred_at: r.i64(1),
                    customer_id: r.string(2)?,
                    kind: kind_of(r.i64(3))?,
                    channel: channel_of(r.i64(4))?,
                    ip: ip_of(r.blob(5))?.map(key_ip),
                    device_id: text(6)?,
                    user_agent: text(7)?,
                    amount: r.opt_i64(8),
                    side: side_of(r.opt_i64(9))?,
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
                });
                Ok(())
            })?;
            Ok(out)
        })
        .await
    }

    async fn count_events(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }
}

/// Idle connections of our own kept for short reads.
const IDLE_READERS: usize = 8;

/// Customers per purge transaction.
const PURGE_CUSTOMERS: i64 = 20_000;

impl Retention for SqliteStore {
    async fn purge_before(&self, t: i64) -> Result<u64> {
        // By ranges of customers, so a large purge does not hold the write lock for long; each
        // range is read once along the table's key.
        let max: Option<i64> = sqlx::query_scalar("SELECT max(customer_key) FROM customers")
            .fetch_one(&self.pool)
            .await?;
        let mut total = 0;
        let mut lo = 0i64;
        while lo <= max.unwrap_or(-1) {
            let _writer = self.writer.lock().await;
            self.make_wal_room().await?;
            total += sqlx::query(
                "DELETE FROM events WHERE customer_key >= ? AND customer_key < ? \
                 AND occurred_at < ?",
            )
            .bind(lo)
            .bind(lo.saturating_add(PURGE_CUSTOMERS))
            .bind(t)
            .execute(&self.pool)
            .await?
            .rows_affected();
            self.checkpoint_soon();
            lo = lo.saturating_add(PURGE_CUSTOMERS);
        }
        // ip_seen after the events, in one transaction: the rows of days wholly before t go, and
        // the counts of t's own day are recounted from the events left (rows left with no event
        // go). Interrupted before this, ip_seen counts purged events of days up to t's until a
        // purge runs again (with the same t it deletes no event and completes this).
        let (day, start) = (utc_day(t), utc_day(t) * DAY_US);
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        {
            let mut handle = tx.lock_handle().await?;
            // SAFETY: as in `insert_events`: `conn` is dropped at the end of this block.
            let conn = unsafe { raw::Conn::new(handle.as_raw_handle()) };
            merge_delta(&conn)?;
        }
        sqlx::query("DELETE FROM ip_seen WHERE day < ?")
            .bind(day)
            .execute(&mut *tx)
            .await?;
        if t != start {
            let same = "FROM events e WHERE e.customer_key = ip_seen.customer_key \
                        AND e.occurred_at >= ?1 AND e.occurred_at < ?2 AND e.ip = ip_seen.ip";
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM ip_seen WHERE day = ?3 AND NOT EXISTS (SELECT 1 {same})"
            )))
            .bind(start)
            .bind(start + DAY_US)
            .bind(day)
            .execute(&mut *tx)
            .await?;
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE ip_seen SET (logins, failed_logins) = \
                 (SELECT coalesce(sum(e.kind = {}), 0), coalesce(sum(e.kind = {}), 0) {same}) \
                 WHERE day = ?3",
                Kind::Login.code(),
                Kind::LoginFailed.code()
            )))
            .bind(start)
            .bind(start + DAY_US)
            .bind(day)
            .execute(&mut *tx)
            .await?;
        }
        {
            let seq = {
                let mut handle = tx.lock_handle().await?;
                // SAFETY: as above.
                let conn = unsafe { raw::Conn::new(handle.as_raw_handle()) };
                bump_seq(&conn)?
            };
            tx.commit().await?;
            if let Some(h) = &self.hot {
                // Events went: read customers again.
                h.clear();
                h.set_seq(seq);
            }
        }
        self.delta.lock().unwrap_or_else(|p| p.into_inner()).rows = Some(0);
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::AssertSqlSafe;

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
        let migration = include_str!("../migrations/sqlite/0003_compact_events.sql");
        assert!(migration.contains(&format!("WHERE kind IN {SENSITIVE_SQL}")));
        for k in Kind::ALL {
            let sensitive = k.is_sensitive();
            assert_eq!(SENSITIVE_KINDS.contains(&k.code()), sensitive, "{k}");
        }
    }

    async fn plan(s: &SqliteStore, sql: &str) -> String {
        let rows: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                .fetch_all(s.pool())
                .await
                .expect("plan");
        rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checkpoints_run_beside_the_writer_and_keep_the_wal_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wal.db");
        let s = SqliteStore::open(&path).await.expect("open");
        s.checkpoints().limit = 200;
        let wal = dir.path().join("wal.db-wal");
        let (mut largest, mut written, mut hooked) = (0u64, 0u64, 0i64);
        for b in 0..40 {
            let batch: Vec<Event> = (0..1_000)
                .map(|i| {
                    let at = format!("2020-0{}-01T00:00:00+09:00", 1 + b % 9);
                    let ip = format!("10.{}.{}.1", b, i % 250);
                    crate::testsuite::ev(
                        &format!("e{b}-{i}"),
                        &at,
                        &format!("c{b}-{i}"),
                        Kind::Login,
                        Some(&ip),
                    )
                })
                .collect();
            s.insert_events(&batch).await.expect("insert");
            hooked = hooked.max(s.wal_now.load(std::sync::atomic::Ordering::Relaxed));
            let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
            written += 1;
            largest = largest.max(size);
        }
        let frames = s.checkpoints().wal_frames;
        // The writer waited for complete checkpoints, so the WAL started over: without that it
        // would hold every batch's frames (40 batches of well over 200 frames).
        assert!(
            largest < 3 * 1024 * 1024,
            "WAL grew to {largest} bytes over {written} batches"
        );
        assert!(frames > 0, "a checkpoint reported the WAL");
        // The WAL hook tells the writer the frames after each commit, without waiting for a
        // checkpoint to report them (a slow checkpoint under load let batches slip past).
        assert!(
            hooked > 200,
            "the WAL hook reported {hooked} frames at most"
        );
        assert_eq!(s.count_events().await.expect("count"), 40_000);
        s.close().await;
        // Closed cleanly: everything is in the database file.
        let s = SqliteStore::open(&path).await.expect("reopen");
        assert_eq!(s.count_events().await.expect("count"), 40_000);
        s.close().await;
    }

    #[tokio::test]
    async fn queries_use_the_intended_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SqliteStore::open(&dir.path().join("plan.db"))
            .await
            .expect("open");
        let p = plan(&s, &procedures_sql(Kind::DestinationChange)).await;
        assert!(p.contains("COVERING INDEX events_sensitive"), "{p}");
        // Candidates from ip_seen's key, then each candidate's events by the table's key.
        let p = plan(&s, &ip_range_sql()).await;
        assert!(p.contains("SEARCH ip_seen USING PRIMARY KEY"), "{p}");
        assert!(p.contains("SEARCH ip_seen_delta USING PRIMARY KEY"), "{p}");
        assert!(p.contains("SEARCH e USING PRIMARY KEY"), "{p}");
        assert!(!p.contains("SCAN e"), "{p}");
    }
}
