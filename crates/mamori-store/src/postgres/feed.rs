//! The change feed between nodes (migration 0005): how a serving node's cache ([`crate::hot`])
//! learns of the events other processes store.
//!
//! Every transaction that stores events writes one row to `feed` before it commits: the new
//! events (what the cache keeps of them), or, for a bulk load or a purge, word to empty the
//! cache. The row's `tx` is the transaction's id. A node reads the feed every [`TAIL_EVERY`]:
//! the rows of the transactions its new snapshot sees committed and its previous snapshot did
//! not (`pg_visible_in_snapshot`), so each committed transaction is read exactly once, in the
//! order the snapshots saw them commit, whatever the order of the ids. Its own transactions are
//! applied as they commit and skipped here.
//!
//! A node that could not read the feed (the database unreachable, the server restarted, which
//! empties the unlogged table, or a pause longer than [`STALE`]) empties its cache and starts
//! again from a new snapshot. Rows are pruned once every node's snapshot is past them
//! ([`KEEP`]).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use mamori_core::assess::Past;
use mamori_core::event::{Channel, Kind, Side};
use mamori_core::history::Access;
use sqlx::{PgConnection, PgPool, Row};

use crate::hot::{Hot, Snapshot, Write};
use crate::sqlite::corrupt;
use crate::{Result, StoreError};

/// A feed row's `what` (bits): the body is the transaction's new events.
pub(crate) const EVENTS: i16 = 1;
/// Too many events to send; every node empties its cache.
const CLEAR: i16 = 2;
/// The resolutions changed (familiar IPs and devices, fraud IPs): nodes read them again.
const MARKS: i16 = 4;

/// How often a serving node reads the feed: another node's events reach its decisions within
/// about this.
pub const TAIL_EVERY: Duration = Duration::from_millis(10);
/// A node that has not read the feed for this long empties its cache: the rows it missed may
/// have been pruned.
const STALE: Duration = Duration::from_secs(20);
/// Rows are pruned when older than the snapshot a node took this long ago.
const KEEP: Duration = Duration::from_secs(60);
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// What a transaction leaves for the feed.
#[derive(Debug, Default)]
pub(crate) struct News {
    /// Its new events, with their customers.
    pub(crate) events: Vec<(String, Past)>,
    /// Too many to send (a bulk load, a purge): every node empties its cache.
    pub(crate) clear: bool,
    /// It changed the resolutions.
    pub(crate) marks: bool,
}

impl News {
    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty() && !self.clear && !self.marks
    }

    fn what(&self) -> i16 {
        let events = !self.clear && !self.events.is_empty();
        (if events { EVENTS } else { 0 })
            | (if self.clear { CLEAR } else { 0 })
            | (if self.marks { MARKS } else { 0 })
    }
}

/// Writes the transaction's feed row, if it has news; returns the transaction's id and its
/// snapshot's `xmin` (for [`Pruner`]).
pub(crate) async fn write(
    conn: &mut PgConnection,
    node: i64,
    news: &News,
) -> Result<Option<(u64, u64)>> {
    if news.is_empty() {
        return Ok(None);
    }
    let what = news.what();
    let body = if what & EVENTS != 0 {
        encode(&news.events)
    } else {
        Vec::new()
    };
    let (tx, xmin): (String, String) = sqlx::query_as(
        "INSERT INTO feed (node, what, body) VALUES ($1, $2, $3) \
         RETURNING tx::text, pg_snapshot_xmin(pg_current_snapshot())::text",
    )
    .bind(node)
    .bind(what)
    .bind(body)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Some((xid(&tx)?, xid(&xmin)?)))
}

/// When the feed's old rows go: every process that reads or writes the feed notes the `xmin` of
/// its snapshots (at most one a second); every [`PRUNE_EVERY`] it deletes the rows below the
/// `xmin` of a snapshot it saw [`KEEP`] ago. Those transactions had ended a minute before, so
/// every node that is not [`STALE`] has read them. A store with writers and no serving node (only
/// `mamori consume`) is pruned too.
#[derive(Debug)]
pub(crate) struct Pruner {
    floors: std::collections::VecDeque<(Instant, u64)>,
    pruned_at: Instant,
}

impl Default for Pruner {
    fn default() -> Self {
        Pruner {
            floors: Default::default(),
            pruned_at: Instant::now(),
        }
    }
}

impl Pruner {
    /// Notes a snapshot's `xmin`; returns the bound to prune below, when a prune is due.
    pub(crate) fn note(&mut self, xmin: u64) -> Option<u64> {
        self.note_at(Instant::now(), xmin)
    }

    fn note_at(&mut self, now: Instant, xmin: u64) -> Option<u64> {
        if self
            .floors
            .back()
            .is_none_or(|(at, _)| now.duration_since(*at) >= Duration::from_secs(1))
        {
            self.floors.push_back((now, xmin));
        }
        if now.duration_since(self.pruned_at) < PRUNE_EVERY {
            return None;
        }
        self.pruned_at = now;
        let mut floor = None;
        while let Some(&(at, x)) = self.floors.front() {
            if now.duration_since(at) < KEEP {
                break;
            }
            floor = Some(x);
            self.floors.pop_front();
        }
        floor
    }
}

/// Deletes the feed's rows of transactions below `floor`, then vacuums the feed. Every process
/// prunes, and two deletes of the same rows in different orders (one plan scans the table,
/// another its index) deadlocked (seen: a second's wait, then one failed): rows another prune
/// has locked are skipped (it is deleting them), so a prune never waits. The feed is rewritten
/// every minute: its dead rows slow every read of it (its index keeps them) until a vacuum; the
/// prune does not leave that to autovacuum, which may be off (it was on a machine here: after
/// ten minutes at 2,000 assessments/s the feed held 210,000 dead rows and every decision had
/// slowed down), or slow to come to a small table. A vacuum already running is not waited for.
pub async fn prune(pool: &PgPool, floor: u64) -> Result<()> {
    let deleted = sqlx::query(
        "DELETE FROM feed WHERE ctid = ANY(ARRAY( \
             SELECT ctid FROM feed WHERE tx < $1::text::xid8 FOR UPDATE SKIP LOCKED))",
    )
    .bind(floor.to_string())
    .execute(pool)
    .await?
    .rows_affected();
    if deleted > 0 {
        sqlx::query("VACUUM (SKIP_LOCKED) feed")
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// [`prune`] off the caller's path; a failure is told and retried at the next prune.
pub(crate) fn prune_later(pool: &PgPool, floor: u64) {
    let pool = pool.clone();
    tokio::spawn(async move {
        if let Err(e) = prune(&pool, floor).await {
            tracing::warn!(error = %e, "pruning the change feed failed");
        }
    });
}

pub(crate) fn xid(s: &str) -> Result<u64> {
    s.parse()
        .map_err(|_| corrupt("a transaction id is not a number"))
}

/// Applies a committed transaction's news to this node's cache.
pub(crate) fn apply(hot: &Hot, tx: u64, news: News) {
    if news.clear {
        hot.clear();
        return;
    }
    if news.marks {
        hot.marks_changed();
    }
    if !news.events.is_empty() {
        hot.stored(Write::Xid(tx), news.events);
    }
}

/// The body of an events row: per event the customer (length, UTF-8), the time, kind, channel,
/// which optional fields follow (bits: IP, device, user-agent family, amount, side), and those.
fn encode(events: &[(String, Past)]) -> Vec<u8> {
    let mut b = Vec::with_capacity(events.len() * 48);
    for (c, p) in events {
        encode_one(c, p, &mut b);
    }
    b
}

/// One event of [`encode`]'s body: bodies joined are the body of their events.
pub(crate) fn encode_one(c: &str, p: &Past, b: &mut Vec<u8>) {
    let len = u16::try_from(c.len()).unwrap_or(u16::MAX);
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&c.as_bytes()[..usize::from(len)]);
    let a = &p.access;
    b.extend_from_slice(&a.at.to_le_bytes());
    b.push(a.kind.code());
    b.push(a.channel.code());
    let flags = u8::from(a.ip.is_some())
        | u8::from(a.device.is_some()) << 1
        | u8::from(p.ua.is_some()) << 2
        | u8::from(p.amount.is_some()) << 3
        | u8::from(p.side.is_some()) << 4;
    b.push(flags);
    if let Some(ip) = a.ip {
        b.extend_from_slice(&ip.to_le_bytes());
    }
    if let Some(d) = a.device {
        b.extend_from_slice(&d.to_le_bytes());
    }
    if let Some(u) = p.ua {
        b.extend_from_slice(&u.to_le_bytes());
    }
    if let Some(m) = p.amount {
        b.extend_from_slice(&m.to_le_bytes());
    }
    if let Some(s) = p.side {
        b.push(s.code());
    }
}

/// Reads [`encode`]'s body.
fn decode(mut b: &[u8]) -> Result<Vec<(String, Past)>> {
    fn take<const N: usize>(b: &mut &[u8]) -> Result<[u8; N]> {
        let (head, rest) = b
            .split_first_chunk::<N>()
            .ok_or_else(|| corrupt("a feed row is cut short"))?;
        *b = rest;
        Ok(*head)
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let len = usize::from(u16::from_le_bytes(take(&mut b)?));
        if b.len() < len {
            return Err(corrupt("a feed row is cut short"));
        }
        let (c, rest) = b.split_at(len);
        let customer = std::str::from_utf8(c)
            .map_err(|_| corrupt("a feed row's customer is not UTF-8"))?
            .to_owned();
        b = rest;
        let at = i64::from_le_bytes(take(&mut b)?);
        let [kind, channel, flags] = take::<3>(&mut b)?;
        let kind = Kind::from_code(kind.into()).ok_or_else(|| corrupt("unknown kind code"))?;
        let channel =
            Channel::from_code(channel.into()).ok_or_else(|| corrupt("unknown channel code"))?;
        let ip = (flags & 1 != 0)
            .then(|| take(&mut b).map(u128::from_le_bytes))
            .transpose()?;
        let device = (flags & 2 != 0)
            .then(|| take(&mut b).map(u64::from_le_bytes))
            .transpose()?;
        let ua = (flags & 4 != 0)
            .then(|| take(&mut b).map(u64::from_le_bytes))
            .transpose()?;
        let amount = (flags & 8 != 0)
            .then(|| take(&mut b).map(i64::from_le_bytes))
            .transpose()?;
        let side = match flags & 16 != 0 {
            true => {
                let [s] = take::<1>(&mut b)?;
                Some(Side::from_code(s.into()).ok_or_else(|| corrupt("unknown side code"))?)
            }
            false => None,
        };
        out.push((
            customer,
            Past {
                access: Access {
                    at,
                    kind,
                    channel,
                    ip,
                    device,
                },
                ua,
                amount,
                side,
            },
        ));
    }
    Ok(out)
}

/// A node's place in the feed.
struct Tail {
    /// The snapshot of its last read, in text form (sent back as the next read's `$1`).
    last: String,
    /// When the server it reads started (a restart empties the feed).
    started: String,
    read_at: Instant,
    pruner: Arc<std::sync::Mutex<Pruner>>,
}

/// The current snapshot and the server's start, to begin tailing from.
pub(crate) async fn now(pool: &PgPool) -> Result<(String, String)> {
    Ok(
        sqlx::query_as("SELECT pg_current_snapshot()::text, pg_postmaster_start_time()::text")
            .fetch_one(pool)
            .await?,
    )
}

/// Reads the feed into `hot` every [`TAIL_EVERY`] until the cache is dropped.
pub(crate) fn spawn(
    pool: PgPool,
    hot: Weak<Hot>,
    node: i64,
    (last, started): (String, String),
    pruner: Arc<std::sync::Mutex<Pruner>>,
) {
    let mut t = Tail {
        last,
        started,
        read_at: Instant::now(),
        pruner,
    };
    tokio::spawn(async move {
        let mut failed = false;
        // A connection of its own, kept between reads: given back to the pool after each, it
        // would be tested with a round trip each time (see `super::Keep`). Given back after a
        // failure, and another taken.
        let mut conn = None;
        loop {
            tokio::time::sleep(TAIL_EVERY).await;
            let Some(hot) = hot.upgrade() else { return };
            if pool.is_closed() {
                // Its `close` waits for this task's connection.
                return;
            }
            let read = async {
                let c = match &mut conn {
                    Some(c) => c,
                    None => conn.insert(pool.acquire().await?),
                };
                read(&pool, c, &hot, node, &mut t, failed).await
            };
            match read.await {
                Ok(()) => failed = false,
                Err(e) => {
                    conn = None;
                    if !failed {
                        tracing::warn!(error = %e, "reading the change feed failed; the cache will be emptied");
                    }
                    failed = true;
                }
            }
        }
    });
}

/// One read of the feed: applies the transactions committed since the last.
async fn read(
    pool: &PgPool,
    conn: &mut PgConnection,
    hot: &Arc<Hot>,
    node: i64,
    t: &mut Tail,
    failed: bool,
) -> Result<()> {
    // The rows committed between the last snapshot and this one (migration 0006: planned so that
    // it reads only them, whatever the feed's statistics say).
    let rows = sqlx::query("SELECT * FROM feed_since($1::pg_snapshot)")
        .bind(&t.last)
        .fetch_all(&mut *conn)
        .await?;
    let first = rows
        .first()
        .ok_or_else(|| StoreError::Task("the feed's query returned no row".into()))?;
    let (now, started): (String, String) = (first.try_get(0)?, first.try_get(1)?);
    let snap = Snapshot::parse(&now).ok_or_else(|| corrupt("a snapshot did not parse"))?;
    if failed || started != t.started || t.read_at.elapsed() > STALE {
        // What was missed cannot be told: start again from this snapshot.
        hot.clear();
    } else {
        for r in &rows {
            let Some(tx) = r.try_get::<Option<String>, _>(2)? else {
                continue;
            };
            if r.try_get::<i64, _>(3)? == node {
                continue;
            }
            let what = r.try_get::<i16, _>(4)?;
            let news = News {
                events: match what & EVENTS {
                    0 => Vec::new(),
                    _ => decode(r.try_get(5)?)?,
                },
                clear: what & CLEAR != 0,
                marks: what & MARKS != 0,
            };
            apply(hot, xid(&tx)?, news);
        }
    }
    t.last = now;
    t.started = started;
    t.read_at = Instant::now();
    let floor = t
        .pruner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .note(snap.xmin);
    if let Some(floor) = floor {
        // Not part of the read: a prune that failed or waited must not cost the cache.
        prune_later(pool, floor);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feed_is_pruned_below_a_snapshot_seen_a_minute_before() {
        let mut p = Pruner::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(p.note_at(at(0), 10), None);
        assert_eq!(p.note_at(at(5), 20), None, "not due");
        // Noted at most once a second.
        assert_eq!(p.note_at(at(5), 25), None);
        // Due: the xmin seen at 0 is a minute old, the one seen at 5 is not yet.
        assert_eq!(p.note_at(at(61), 30), Some(10));
        assert_eq!(p.note_at(at(66), 40), None, "pruned 5 s ago");
        assert_eq!(p.note_at(at(72), 50), Some(20));
        // Nothing a minute old: nothing to prune.
        assert_eq!(p.note_at(at(82), 60), None);
    }

    #[test]
    fn bodies_round_trip_every_field_and_reject_cut_ones() {
        let full = Past {
            access: Access {
                at: 1_600_000_000_000_000,
                kind: Kind::Withdrawal,
                channel: Channel::App,
                ip: Some(u128::MAX - 7),
                device: Some(u64::MAX - 1),
            },
            ua: Some(42),
            amount: Some(-5),
            side: Some(Side::Sell),
        };
        let bare = Past {
            access: Access {
                at: -3,
                kind: Kind::Login,
                channel: Channel::Web,
                ip: None,
                device: None,
            },
            ua: None,
            amount: None,
            side: None,
        };
        let events = vec![("顧客-1".to_owned(), full), (String::new(), bare)];
        let body = encode(&events);
        assert_eq!(decode(&body).expect("decodes"), events);
        // Cut anywhere but between two events, the body is refused.
        let first = encode(&events[..1]).len();
        assert_eq!(decode(&body[..first]).expect("decodes"), events[..1]);
        for cut in (1..body.len()).filter(|c| *c != first) {
            assert!(decode(&body[..cut]).is_err(), "cut at {cut}");
        }
    }
}
