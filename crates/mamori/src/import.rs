//! `mamori import`: streams event files into a store in atomic batches.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mamori_core::event::Event;
use mamori_store::{EventWriter, Inserted};

use crate::source::{InputFormat, Item, Rejected, open_input};

/// Whether to regroup the input by customer before storing it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Regroup {
    /// When the input is large (≥ 256 MiB of known size) and its first records are not grouped
    /// by customer (as in a time-ordered log export).
    #[default]
    Auto,
    Always,
    Never,
}

/// Inputs smaller than this are never regrouped by `auto`.
const REGROUP_MIN_BYTES: u64 = 256 << 20;
/// Input bytes per regrouping bucket (about 400,000 events of ~300 bytes).
const REGROUP_BUCKET_BYTES: u64 = 64 << 20;
/// At most this many buckets (open files) at once.
const REGROUP_MAX_BUCKETS: u64 = 512;

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Events per transaction.
    pub batch: usize,
    /// Stop at the first bad record with an error.
    pub strict: bool,
    /// Where bad records go (JSON Lines: place, error, raw record).
    pub rejects: PathBuf,
    /// Force an input format (otherwise by extension).
    pub format: Option<InputFormat>,
    /// Show a progress bar when stderr is a terminal.
    pub progress: bool,
    /// Bad records printed to stderr before the rest are only counted.
    pub max_reported: usize,
    /// Regroup the input by customer through temporary files (see [`Regroup`]).
    pub regroup: Regroup,
    /// Where regrouping keeps its temporary files (a folder, created and removed).
    pub regroup_dir: PathBuf,
    /// Input bytes per regrouping bucket.
    pub regroup_bucket_bytes: u64,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            batch: 400_000,
            strict: false,
            rejects: PathBuf::from("mamori-rejects.jsonl"),
            format: None,
            progress: true,
            max_reported: 20,
            regroup: Regroup::Auto,
            regroup_dir: PathBuf::from("mamori-import.tmp"),
            regroup_bucket_bytes: REGROUP_BUCKET_BYTES,
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    pub records: u64,
    pub inserted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub elapsed: Duration,
    /// Months the store wrote aside and indexed at the end, and how long that took.
    pub indexed: Option<(usize, Duration)>,
    /// Set when some records were rejected.
    pub rejects_file: Option<PathBuf>,
}

impl ImportReport {
    pub fn events_per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "imported {} records in {:.1} s ({:.0} events/s): {} accepted, {} duplicates, {} rejected",
            self.records,
            self.elapsed.as_secs_f64(),
            self.events_per_second(),
            self.inserted,
            self.duplicates,
            self.rejected
        )?;
        if let Some(p) = &self.rejects_file {
            write!(f, " (see {})", p.display())?;
        }
        if let Some((months, took)) = self.indexed {
            write!(
                f,
                "; {months} new months indexed in {:.1} s",
                took.as_secs_f64()
            )?;
        }
        Ok(())
    }
}

struct Rejects {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    count: u64,
    max_reported: usize,
}

impl Rejects {
    fn add(&mut self, r: &Rejected) -> anyhow::Result<()> {
        self.count += 1;
        if self.count <= self.max_reported as u64 {
            eprintln!("rejected {r}");
        } else if self.count == self.max_reported as u64 + 1 {
            eprintln!(
                "(further rejected records are only written to {})",
                self.path.display()
            );
        }
        if self.out.is_none() {
            let f = File::create(&self.path).with_context(|| {
                format!("cannot create the rejects file {}", self.path.display())
            })?;
            self.out = Some(BufWriter::new(f));
        }
        if let Some(out) = self.out.as_mut() {
            let line = serde_json::json!({"place": r.place, "error": r.error.to_string(), "record": r.raw});
            writeln!(out, "{line}")?;
        }
        Ok(())
    }
}

/// Events per message from the reader to the writer. The writer gathers messages into
/// transactions of `batch` events, so a large transaction does not mean several large batches in
/// memory at once.
const CHUNK: usize = 20_000;

enum Msg {
    Batch(Vec<Event>),
    Failed(anyhow::Error),
}

/// Imports files (`-` for stdin) into the store, as a bulk load ([`EventWriter::begin_bulk`]):
/// what it stored is readable when it returns, also after a failure.
pub async fn import<S: EventWriter>(
    store: &S,
    paths: &[String],
    opts: &ImportOptions,
) -> anyhow::Result<ImportReport> {
    let started = Instant::now();
    store
        .begin_bulk()
        .await
        .context("finishing an earlier import's months")?;
    let report = import_batches(store, paths, opts).await;
    let bar = if opts.progress {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_message("indexing the months loaded");
    bar.enable_steady_tick(Duration::from_millis(200));
    let indexing = Instant::now();
    let finished = store.finish_bulk().await;
    bar.finish_and_clear();
    match (report, finished) {
        (Ok(mut r), Ok(months)) => {
            r.elapsed = started.elapsed();
            r.indexed = (months > 0).then(|| (months, indexing.elapsed()));
            Ok(r)
        }
        (Ok(_), Err(e)) => {
            Err(anyhow::Error::new(e).context("making the months loaded readable (run the import again to finish them)"))
        }
        (Err(e), Ok(_)) => Err(e),
        (Err(e), Err(f)) => Err(e.context(format!(
            "and the months loaded could not be made readable: {f} (run an import again to finish them)"
        ))),
    }
}

async fn import_batches<S: EventWriter>(
    store: &S,
    paths: &[String],
    opts: &ImportOptions,
) -> anyhow::Result<ImportReport> {
    let started = Instant::now();
    let inputs = paths
        .iter()
        .map(|p| open_input(p, opts.format))
        .collect::<Result<Vec<_>, _>>()?;
    let total: u64 = inputs.iter().filter_map(|i| i.size).sum();
    let total_known = inputs.iter().all(|i| i.size.is_some()).then_some(total);
    let bar = if opts.progress {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let records = Arc::new(AtomicU64::new(0));
    // The reader parses the next transaction's events while this one is stored: room for a whole
    // batch of messages (with two, parsing and storing took turns and half the cores idled).
    let ahead = opts.batch.div_ceil(CHUNK).clamp(2, 64);
    let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(ahead);
    let reader_opts = opts.clone();
    let reader_records = records.clone();
    let reader_bar = bar.clone();
    // Reading and parsing run on their own threads; this task only writes.
    let reader = std::thread::spawn(move || -> anyhow::Result<Rejects> {
        let mut rejects = Rejects {
            path: reader_opts.rejects.clone(),
            out: None,
            count: 0,
            max_reported: reader_opts.max_reported,
        };
        let mut done_before = 0u64;
        for input in inputs {
            let read = input.read.clone();
            let mut failed: Option<anyhow::Error> = None;
            input.for_each_batch(reader_opts.batch.min(CHUNK), |items| {
                let mut events = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Item::Event(e) => events.push(e),
                        Item::Rejected(r) => {
                            if reader_opts.strict {
                                failed = Some(anyhow::anyhow!("{r} (--strict: stopped here)"));
                                return false;
                            }
                            if let Err(e) = rejects.add(&r) {
                                failed = Some(e);
                                return false;
                            }
                        }
                    }
                }
                reader_records.fetch_add(events.len() as u64, Ordering::Relaxed);
                reader_bar.set_position(done_before + read.load(Ordering::Relaxed));
                tx.blocking_send(Msg::Batch(events)).is_ok()
            })?;
            done_before += read.load(Ordering::Relaxed);
            if let Some(e) = failed {
                let _ = tx.blocking_send(Msg::Failed(e));
                break;
            }
        }
        if let Some(out) = rejects.out.as_mut() {
            out.flush()?;
        }
        Ok(rejects)
    });
    // One task per lane stores the batches it is sent, each lane at its own pace: with one
    // barrier per batch, the lane done first waited for the other.
    let n_lanes = store.parallel_batches().max(1);
    let (lane_txs, lane_rxs): (Vec<_>, Vec<_>) = (0..n_lanes)
        .map(|_| tokio::sync::mpsc::channel::<Vec<Event>>(1))
        .unzip();
    let stored = AtomicU64::new(0);
    let lanes = futures_util::future::join_all(lane_rxs.into_iter().map(|rx| {
        store_lane(store, rx, |n| {
            let done = stored.fetch_add(n, Ordering::Relaxed) + n;
            bar.set_message(format!("{done} events"));
        })
    }));
    let writer = write_lanes(rx, lane_txs, opts, total, total_known, &bar);
    let (written, lanes) = futures_util::join!(writer, lanes);
    let mut total_ins = Inserted::default();
    let mut stopped = None;
    for (ins, err) in lanes {
        total_ins += ins;
        if stopped.is_none() {
            stopped = err;
        }
    }
    if let Some(e) = stopped {
        return Err(e.context(format!(
            "import stopped; {} events committed before",
            total_ins.inserted
        )));
    }
    let (failure, dropped) = written?;
    total_ins.duplicates += dropped;
    let rejects = match reader.join() {
        Ok(r) => r?,
        Err(_) => bail!("the reader thread panicked"),
    };
    bar.finish_and_clear();
    if let Some(e) = failure {
        return Err(e.context(format!(
            "import stopped; {} events committed before the bad record",
            total_ins.inserted
        )));
    }
    let rejected = rejects.count;
    Ok(ImportReport {
        records: records.load(Ordering::Relaxed) + rejected,
        inserted: total_ins.inserted,
        duplicates: total_ins.duplicates,
        rejected,
        elapsed: started.elapsed(),
        indexed: None,
        rejects_file: (rejected > 0).then_some(rejects.path),
    })
}

/// Gathers the reader's messages into batches (or regroups them by customer first) and sends
/// them to the lanes. Returns the reader's failure (a bad record under `--strict`, or the
/// rejects file), if any, and how many copies regrouping dropped. Stops early when a lane
/// stopped (its error is the import's). Dropping `lanes` on return lets them finish.
async fn write_lanes(
    mut rx: tokio::sync::mpsc::Receiver<Msg>,
    lanes: Vec<tokio::sync::mpsc::Sender<Vec<Event>>>,
    opts: &ImportOptions,
    total: u64,
    total_known: Option<u64>,
    bar: &ProgressBar,
) -> anyhow::Result<(Option<anyhow::Error>, u64)> {
    let mut failure = None;
    let mut dropped = 0;
    let mut pending: Vec<Event> = Vec::new();
    let mut buckets: Option<Buckets> = None;
    let mut decided = false;
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Batch(mut events) => {
                if !decided && !events.is_empty() {
                    decided = true;
                    if should_regroup(opts.regroup, total_known, &events) {
                        let n = (total / opts.regroup_bucket_bytes.max(1))
                            .clamp(1, REGROUP_MAX_BUCKETS);
                        buckets = Some(Buckets::create(&opts.regroup_dir, n as usize, &events)?);
                        bar.set_message("regrouping by customer");
                    }
                }
                if let Some(b) = buckets.as_mut() {
                    b.write(&events)?;
                    continue;
                }
                if pending.is_empty() {
                    pending = events;
                } else {
                    pending.append(&mut events);
                }
                if pending.len() >= opts.batch
                    && !send_lanes(&lanes, std::mem::take(&mut pending)).await
                {
                    return Ok((failure, dropped));
                }
            }
            Msg::Failed(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    // What came before a bad record (under --strict) is stored too.
    if !send_lanes(&lanes, pending).await {
        return Ok((failure, dropped));
    }
    if let Some(b) = buckets.take() {
        let (dir, paths) = b.finish()?;
        let n = paths.len();
        // A thread reads, deduplicates and sorts the next bucket while this one is stored.
        let (btx, mut brx) = tokio::sync::mpsc::channel::<anyhow::Result<(Vec<Event>, u64)>>(1);
        let batch = opts.batch;
        let bucket_bytes = opts.regroup_bucket_bytes.max(1);
        let loader = std::thread::spawn(move || {
            let _dir = dir;
            for path in &paths {
                let parts = match split_bucket(path, bucket_bytes) {
                    Ok(parts) => parts,
                    Err(e) => {
                        let _ = btx.blocking_send(Err(e));
                        return;
                    }
                };
                for part in parts {
                    let r = load_bucket(&part, batch);
                    let _ = std::fs::remove_file(&part);
                    if btx.blocking_send(r).is_err() {
                        return;
                    }
                }
            }
        });
        let mut i = 0;
        while let Some(r) = brx.recv().await {
            i += 1;
            let (events, d) = r?;
            dropped += d;
            bar.set_message(format!("storing group {i}/{n}"));
            for chunk in into_chunks(events, opts.batch) {
                if !send_lanes(&lanes, chunk).await {
                    return Ok((failure, dropped));
                }
            }
        }
        drop(brx);
        if loader.join().is_err() {
            bail!("the regrouping reader panicked");
        }
    }
    Ok((failure, dropped))
}

/// Sends a batch to the lanes: whole to one, or where the store gains from several at once
/// ([`EventWriter::parallel_batches`]), one part per lane by customer (a hash of the id), so
/// that a customer's events keep their order and the first copy of an event still wins. False
/// when a lane has stopped.
async fn send_lanes(lanes: &[tokio::sync::mpsc::Sender<Vec<Event>>], events: Vec<Event>) -> bool {
    if events.is_empty() {
        return true;
    }
    if let [lane] = lanes {
        return lane.send(events).await.is_ok();
    }
    let mut split: Vec<Vec<Event>> = (0..lanes.len()).map(|_| Vec::new()).collect();
    for e in events {
        split[lane_of(&e.customer_id, lanes.len())].push(e);
    }
    for (lane, part) in lanes.iter().zip(split) {
        if !part.is_empty() && lane.send(part).await.is_err() {
            return false;
        }
    }
    true
}

/// One lane: stores each batch it is sent, in order, until the sender is dropped or a batch
/// fails. Returns what it stored and the failure, if any (the receiver is dropped with it, so
/// the sender stops).
async fn store_lane<S: EventWriter>(
    store: &S,
    mut rx: tokio::sync::mpsc::Receiver<Vec<Event>>,
    progress: impl Fn(u64),
) -> (Inserted, Option<anyhow::Error>) {
    let mut total = Inserted::default();
    while let Some(batch) = rx.recv().await {
        match store.insert_events(&batch).await {
            Ok(n) => {
                progress(n.inserted + n.duplicates);
                total += n;
            }
            Err(e) => return (total, Some(e.into())),
        }
    }
    (total, None)
}

/// The lane (of `lanes`) of a customer's events: FNV-1a of the id.
fn lane_of(customer_id: &str, lanes: usize) -> usize {
    let h = customer_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (h % lanes as u64) as usize
}

/// `events` cut into owned batches of at most `n`, in order (each event moved once: the batches
/// are split off from the end).
fn into_chunks<T>(mut events: Vec<T>, n: usize) -> Vec<Vec<T>> {
    let n = n.max(1);
    let mut out = Vec::with_capacity(events.len().div_ceil(n));
    while events.len() > n {
        let last = (events.len() - 1) / n * n;
        out.push(events.split_off(last));
    }
    out.push(events);
    out.reverse();
    out
}

/// Whether to regroup, from the options, the input's size and its first records: `auto` regroups
/// a large input whose first records come fewer than 8 in a row per customer.
fn should_regroup(mode: Regroup, total: Option<u64>, first: &[Event]) -> bool {
    match mode {
        Regroup::Always => true,
        Regroup::Never => false,
        Regroup::Auto => {
            let runs = 1 + first
                .windows(2)
                .filter(|w| w[0].customer_id != w[1].customer_id)
                .count();
            total.is_some_and(|t| t >= REGROUP_MIN_BYTES) && runs * 8 > first.len()
        }
    }
}

/// JSON Lines files written in parallel, one event per line.
struct JsonlFiles {
    files: Vec<BufWriter<File>>,
    line: Vec<u8>,
}

impl JsonlFiles {
    fn create(paths: &[PathBuf]) -> anyhow::Result<Self> {
        let files = paths
            .iter()
            .map(|p| {
                File::create(p)
                    .map(|f| BufWriter::with_capacity(64 << 10, f))
                    .with_context(|| format!("cannot create {}", p.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(JsonlFiles {
            files,
            line: Vec::with_capacity(1024),
        })
    }

    fn write(&mut self, file: usize, e: &Event) -> anyhow::Result<()> {
        self.line.clear();
        mamori_sim::write_event_json(e, &mut self.line);
        self.line.push(b'\n');
        self.files[file]
            .write_all(&self.line)
            .context("writing a temporary regrouping file")
    }

    fn close(self) -> anyhow::Result<()> {
        for f in self.files {
            f.into_inner()
                .map_err(|e| e.into_error())
                .context("writing a temporary regrouping file")?;
        }
        Ok(())
    }
}

/// Reads a temporary regrouping file, calling `f` with each event in file order.
fn read_events(
    path: &std::path::Path,
    mut f: impl FnMut(Event) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let input = open_input(&path.display().to_string(), Some(InputFormat::Jsonl))?;
    let mut failed = None;
    input.for_each_batch(CHUNK, |items| {
        for item in items {
            let r = match item {
                Item::Event(e) => f(e),
                Item::Rejected(r) => Err(anyhow::anyhow!(
                    "a temporary regrouping file is unreadable ({r})"
                )),
            };
            if let Err(e) = r {
                failed = Some(e);
                return false;
            }
        }
        true
    })?;
    failed.map_or(Ok(()), Err)
}

/// Temporary JSON Lines files, one per range of customer ids.
struct Buckets {
    dir: tempfile::TempDir,
    paths: Vec<PathBuf>,
    files: JsonlFiles,
    /// Customer ids where the next range starts: quantiles of the first records' customers.
    starts: Vec<String>,
}

impl Buckets {
    fn create(near: &std::path::Path, n: usize, sample: &[Event]) -> anyhow::Result<Self> {
        let mut ids: Vec<&str> = sample.iter().map(|e| e.customer_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut starts: Vec<String> = (1..n).map(|i| ids[i * ids.len() / n].to_owned()).collect();
        starts.dedup();
        let parent = near
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let prefix = near.file_name().map_or_else(
            || "mamori-import".into(),
            |f| f.to_string_lossy().into_owned(),
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}."))
            .tempdir_in(parent)
            .with_context(|| format!("cannot create a temporary folder in {}", parent.display()))?;
        let paths: Vec<PathBuf> = (0..=starts.len())
            .map(|i| dir.path().join(format!("{i:04}.jsonl")))
            .collect();
        let files = JsonlFiles::create(&paths)?;
        Ok(Buckets {
            dir,
            paths,
            files,
            starts,
        })
    }

    fn write(&mut self, events: &[Event]) -> anyhow::Result<()> {
        for e in events {
            let b = self
                .starts
                .partition_point(|s| s.as_str() <= e.customer_id.as_str());
            self.files.write(b, e)?;
        }
        Ok(())
    }

    /// Closes the files; returns the folder (removed on drop) and their paths.
    fn finish(self) -> anyhow::Result<(tempfile::TempDir, Vec<PathBuf>)> {
        self.files.close()?;
        Ok((self.dir, self.paths))
    }
}

/// The files to load for one bucket: itself, or, when it is over 4 × `bucket_bytes` (the first
/// records were not a fair sample of the customers), parts of about `bucket_bytes` split from it
/// by a hash of the customer id. Each customer stays in one part; each part keeps the input
/// order.
fn split_bucket(path: &std::path::Path, bucket_bytes: u64) -> anyhow::Result<Vec<PathBuf>> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if size <= 4 * bucket_bytes {
        return Ok(vec![path.to_owned()]);
    }
    let n = size.div_ceil(bucket_bytes).min(REGROUP_MAX_BUCKETS);
    let parts: Vec<PathBuf> = (0..n)
        .map(|i| path.with_extension(format!("{i}.jsonl")))
        .collect();
    let mut files = JsonlFiles::create(&parts)?;
    read_events(path, |e| {
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(e.customer_id.as_str(), &mut h);
        files.write((std::hash::Hasher::finish(&h) % n) as usize, &e)
    })?;
    files.close()?;
    let _ = std::fs::remove_file(path);
    Ok(parts)
}

/// Reads one bucket: its events with the first copy of each `event_id` kept (in customer and
/// time order when they take more than one transaction of `batch`), and how many copies were
/// dropped.
fn load_bucket(path: &std::path::Path, batch: usize) -> anyhow::Result<(Vec<Event>, u64)> {
    let mut events = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut dropped = 0u64;
    read_events(path, |e| {
        if seen.insert(mamori_core::memory::dedup_key(&e.customer_id, &e.event_id)) {
            events.push(e);
        } else {
            dropped += 1;
        }
        Ok(())
    })?;
    // The store orders each transaction itself; only a bucket that takes several transactions
    // needs each customer's events kept together.
    if events.len() > batch {
        events.sort_unstable_by(|a, b| {
            (a.customer_id.as_str(), a.occurred_at).cmp(&(b.customer_id.as_str(), b.occurred_at))
        });
    }
    Ok((events, dropped))
}

#[cfg(test)]
mod tests {
    use super::{ImportOptions, Regroup, import, into_chunks, lane_of};
    use mamori_core::event::Event;
    use mamori_store::{EventWriter, Inserted, StoreError};
    use std::sync::Mutex;
    use std::time::Duration;

    /// A writer with two lanes that keeps each batch it is given. `hold`: the first batch of
    /// lane 1 waits (up to 10 s) until lane 0 has stored two batches. `fail_at`: the batch with
    /// that number (counted from 0) fails.
    struct Recorder {
        batches: Mutex<Vec<Vec<Event>>>,
        lane0_done: tokio::sync::watch::Sender<usize>,
        hold: bool,
        fail_at: Option<usize>,
        calls: Mutex<usize>,
    }

    impl Recorder {
        fn new(hold: bool, fail_at: Option<usize>) -> Self {
            Recorder {
                batches: Mutex::default(),
                lane0_done: tokio::sync::watch::channel(0).0,
                hold,
                fail_at,
                calls: Mutex::default(),
            }
        }
    }

    impl EventWriter for Recorder {
        fn parallel_batches(&self) -> usize {
            2
        }

        async fn insert_events(&self, events: &[Event]) -> mamori_store::Result<Inserted> {
            let call = {
                let mut c = self.calls.lock().unwrap();
                *c += 1;
                *c - 1
            };
            let lane = lane_of(&events[0].customer_id, 2);
            assert!(events.iter().all(|e| lane_of(&e.customer_id, 2) == lane));
            if self.hold
                && lane == 1
                && self
                    .batches
                    .lock()
                    .unwrap()
                    .iter()
                    .all(|b| lane_of(&b[0].customer_id, 2) == 0)
            {
                let mut rx = self.lane0_done.subscribe();
                let waited =
                    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|&n| n >= 2)).await;
                assert!(
                    waited.is_ok(),
                    "lane 0 did not go on while lane 1 stored its first batch"
                );
            }
            if self.fail_at == Some(call) {
                return Err(StoreError::Corrupt("this batch fails".into()));
            }
            self.batches.lock().unwrap().push(events.to_vec());
            if lane == 0 {
                self.lane0_done.send_modify(|n| *n += 1);
            }
            Ok(Inserted {
                inserted: events.len() as u64,
                duplicates: 0,
            })
        }
    }

    /// `n` events of a customer of each lane, taking turns, as JSON Lines.
    fn input(dir: &std::path::Path, n: usize) -> (String, [String; 2]) {
        let mut ids = (0..).map(|i| format!("C{i:07}"));
        let a = ids.find(|c| lane_of(c, 2) == 0).unwrap();
        let b = ids.find(|c| lane_of(c, 2) == 1).unwrap();
        let mut text = String::new();
        for i in 0..n {
            for c in [&a, &b] {
                text.push_str(&format!(
                    "{{\"channel\":\"web\",\"customer_id\":\"{c}\",\"event_id\":\"{c}-{i:04}\",\"ip\":\"192.0.2.1\",\"kind\":\"login\",\"occurred_at\":\"2020-09-30T10:00:{:02}+09:00\"}}\n",
                    i % 60
                ));
            }
        }
        let path = dir.join("in.jsonl");
        std::fs::write(&path, text).unwrap();
        (path.to_string_lossy().into_owned(), [a, b])
    }

    fn options(dir: &std::path::Path) -> ImportOptions {
        ImportOptions {
            batch: 10,
            progress: false,
            regroup: Regroup::Never,
            rejects: dir.join("rejects.jsonl"),
            ..ImportOptions::default()
        }
    }

    #[tokio::test]
    async fn lanes_store_at_their_own_pace_and_keep_each_customers_order() {
        let dir = tempfile::tempdir().unwrap();
        let (path, customers) = input(dir.path(), 40);
        let store = Recorder::new(true, None);
        let r = import(&store, &[path], &options(dir.path())).await.unwrap();
        assert_eq!(r.inserted, 80);
        let batches = store.batches.into_inner().unwrap();
        for c in customers {
            let ids: Vec<String> = batches
                .iter()
                .flatten()
                .filter(|e| e.customer_id == c)
                .map(|e| e.event_id.clone())
                .collect();
            let want: Vec<String> = (0..40).map(|i| format!("{c}-{i:04}")).collect();
            assert_eq!(ids, want);
        }
    }

    #[tokio::test]
    async fn a_failed_lane_stops_the_import_and_counts_what_was_committed() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = input(dir.path(), 40);
        let store = Recorder::new(false, Some(3));
        let e = import(&store, &[path], &options(dir.path()))
            .await
            .unwrap_err();
        let stored: usize = store.batches.lock().unwrap().iter().map(Vec::len).sum();
        assert!(stored < 80);
        let text = format!("{e:#}");
        assert!(
            text.contains(&format!("import stopped; {stored} events committed before")),
            "{text}"
        );
        assert!(text.contains("this batch fails"), "{text}");
    }

    #[test]
    fn batches_keep_order_and_size() {
        for (len, n) in [(0, 3), (1, 3), (3, 3), (4, 3), (10, 3), (9, 1), (5, 0)] {
            let chunks = into_chunks((0..len).collect::<Vec<u32>>(), n);
            assert!(chunks.iter().all(|c| c.len() <= n.max(1)), "{len} {n}");
            assert!(chunks.iter().rev().skip(1).all(|c| c.len() == n.max(1)));
            let flat: Vec<u32> = chunks.into_iter().flatten().collect();
            assert_eq!(flat, (0..len).collect::<Vec<u32>>(), "{len} {n}");
        }
    }

    #[test]
    fn a_customer_has_one_lane() {
        let lanes: Vec<usize> = (0..1000).map(|i| lane_of(&format!("C{i:07}"), 2)).collect();
        assert!(lanes.iter().all(|&l| l < 2));
        let ones = lanes.iter().filter(|&&l| l == 1).count();
        assert!((400..=600).contains(&ones), "{ones}");
        assert_eq!(lane_of("C0000042", 2), lane_of("C0000042", 2));
    }
}
