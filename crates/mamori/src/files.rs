//! The day-of-incident mode: investigate straight from log files, with no store.
//!
//! Files are cut into large chunks of whole lines that are parsed on every core (regular files
//! are read in parts by the workers themselves; stdin and `.gz` are read by one thread and CSV is
//! parsed by it). Each event is reduced to a 32-byte record; customers are numbered per chunk and
//! the numbers merged in file order; event ids are kept only as 128-bit fingerprints
//! ([`dedup_key`]), partitioned by their top bits, so that after reading, duplicates are found
//! partition by partition on every core, the first in file order winning. Only then is it known
//! which customers and IPs the procedures involve, and only their events are indexed.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, BufRead, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mamori_core::event::{Channel, Kind};
use mamori_core::history::{Access, IpUse, device_hash};
use mamori_core::investigate::{Investigation, Procedure, Query};
use mamori_core::memory::{dedup_key, investigate_indexed};
use mamori_core::net::ip_key;
use mamori_core::parse::{EventView, ParseError, parse_json_line, quick_json_line};
use mamori_core::verdict::IpIntel;
use rayon::prelude::*;

use crate::source::{InputFormat, Item, SourceError, jsonl_text, line_text, open_input};

/// Counts of the records read.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileStats {
    pub events: u64,
    pub duplicates: u64,
    pub rejected: u64,
}

/// How files are read.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Input format when the extension does not tell.
    pub format: Option<InputFormat>,
    /// Bad records reported (the rest are only counted).
    pub max_reported: usize,
    /// Bytes of JSON Lines per chunk parsed at once.
    pub chunk_bytes: u64,
    /// Records of CSV per chunk.
    pub csv_batch: usize,
    /// Parsing threads (0: one per core).
    pub threads: usize,
    /// A progress bar on stderr.
    pub progress: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            format: None,
            max_reported: 20,
            chunk_bytes: 32 << 20,
            csv_batch: 50_000,
            threads: 0,
            progress: false,
        }
    }
}

/// Fingerprint partitions (by the top bits) for finding duplicates.
const PARTITION_BITS: u32 = 8;
const PARTITIONS: usize = 1 << PARTITION_BITS;

const HAS_IP: u8 = 1;
const HAS_DEVICE: u8 = 2;
/// The IP is an index into the chunk's [`Chunk::wide_ips`].
const WIDE_IP: u8 = 4;

/// One event, reduced to what an investigation needs (32 bytes).
#[derive(Debug, Clone, Copy)]
struct Rec {
    at: i64,
    /// [`ip_key`] when it fits (IPv4), else its index in [`Chunk::wide_ips`].
    ip: u64,
    /// [`device_hash`].
    device: u64,
    /// The customer's number in the chunk.
    customer: u32,
    kind: Kind,
    channel: Channel,
    flags: u8,
}

const _: () = assert!(std::mem::size_of::<Rec>() == 32);

impl Rec {
    fn ip(&self, wide: &[u128]) -> Option<u128> {
        if self.flags & HAS_IP == 0 {
            None
        } else if self.flags & WIDE_IP != 0 {
            wide.get(self.ip as usize).copied()
        } else {
            Some(u128::from(self.ip))
        }
    }

    fn access(&self, wide: &[u128]) -> Access {
        Access {
            at: self.at,
            kind: self.kind,
            channel: self.channel,
            ip: self.ip(wide),
            device: (self.flags & HAS_DEVICE != 0).then_some(self.device),
        }
    }
}

/// An event id's fingerprint and the index of its record in the chunk.
#[derive(Debug, Clone, Copy)]
struct Key {
    hi: u64,
    lo: u64,
    rec: u32,
}

impl Key {
    fn partition(&self) -> usize {
        (self.hi >> (64 - PARTITION_BITS)) as usize
    }

    fn key(&self) -> u128 {
        (u128::from(self.hi) << 64) | u128::from(self.lo)
    }
}

/// Fingerprints are hashes already: their low half is the hash.
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

type FingerprintSet = HashSet<u128, BuildHasherDefault<FingerprintHasher>>;

/// Where a rejected record was: a line of the chunk (numbered once the lines before are counted)
/// or a place already known.
#[derive(Debug)]
enum Place {
    Line(u64),
    Known(String),
}

/// What one chunk gave.
#[derive(Debug, Default)]
struct Chunk {
    file: usize,
    /// Lines in the chunk (JSON Lines).
    lines: u64,
    /// Progress to show once the chunk is merged.
    progress: u64,
    recs: Vec<Rec>,
    /// IP keys too wide for a record (IPv6).
    wide_ips: Vec<u128>,
    /// Fingerprints grouped by partition, in file order within each; `bounds[p]..bounds[p + 1]`.
    keys: Vec<Key>,
    bounds: Vec<u32>,
    /// Procedures: the index of their record and the procedure.
    procs: Vec<(u32, Procedure)>,
    /// The chunk's customers in the order of their numbers, one after the other.
    names: String,
    name_ends: Vec<u32>,
    /// Chunk customer numbers to global ones (after merging).
    customers: Vec<u32>,
    rejected: u64,
    rejects: Vec<(Place, ParseError)>,
}

impl Chunk {
    fn partition(&self, p: usize) -> &[Key] {
        &self.keys[self.bounds[p] as usize..self.bounds[p + 1] as usize]
    }
}

/// Builds a chunk from its records.
struct ChunkBuilder<'a, 'q> {
    q: &'q Query,
    max_reported: usize,
    chunk: Chunk,
    keys: Vec<Key>,
    customers: HashMap<Cow<'a, str>, u32, foldhash::fast::RandomState>,
    /// The last customer and device seen (consecutive events often share them).
    last: Option<(&'a str, u32)>,
    last_device: Option<(&'a str, u64)>,
}

impl<'a, 'q> ChunkBuilder<'a, 'q> {
    fn new(q: &'q Query, max_reported: usize, file: usize, progress: u64, keys: Vec<Key>) -> Self {
        ChunkBuilder {
            q,
            max_reported,
            chunk: Chunk {
                file,
                progress,
                ..Chunk::default()
            },
            keys,
            customers: HashMap::default(),
            last: None,
            last_device: None,
        }
    }

    fn customer(&mut self, id: &str, borrowed: Option<&'a str>) -> u32 {
        if let Some((last, c)) = self.last
            && last == id
        {
            return c;
        }
        let c = match self.customers.get(id) {
            Some(&c) => c,
            None => {
                let c = self.customers.len() as u32;
                let key = borrowed.map_or_else(|| Cow::Owned(id.to_owned()), Cow::Borrowed);
                self.customers.insert(key, c);
                c
            }
        };
        if let Some(b) = borrowed {
            self.last = Some((b, c));
        }
        c
    }

    fn device(&mut self, id: &str, borrowed: Option<&'a str>) -> u64 {
        if let Some((last, h)) = self.last_device
            && last == id
        {
            return h;
        }
        let h = device_hash(id);
        if let Some(b) = borrowed {
            self.last_device = Some((b, h));
        }
        h
    }

    /// Adds a valid event, with its text when it lives as long as the chunk's data.
    fn event(&mut self, e: &EventView<'_>, borrowed: Option<&EventView<'a>>) {
        let customer = self.customer(e.customer_id, borrowed.map(|b| b.customer_id));
        let rec = self.chunk.recs.len() as u32;
        let key = dedup_key(e.customer_id, e.event_id);
        self.keys.push(Key {
            hi: (key >> 64) as u64,
            lo: key as u64,
            rec,
        });
        let (ip, ip_flags) = match e.ip.map(ip_key) {
            None => (0, 0),
            Some(k) => match u64::try_from(k) {
                Ok(k) => (k, HAS_IP),
                Err(_) => {
                    self.chunk.wide_ips.push(k);
                    ((self.chunk.wide_ips.len() - 1) as u64, HAS_IP | WIDE_IP)
                }
            },
        };
        let device = e
            .device_id
            .map(|d| self.device(d, borrowed.and_then(|b| b.device_id)));
        self.chunk.recs.push(Rec {
            at: e.occurred_at,
            ip,
            device: device.unwrap_or(0),
            customer,
            kind: e.kind,
            channel: e.channel,
            flags: ip_flags | if device.is_some() { HAS_DEVICE } else { 0 },
        });
        if self.q.selects(e.kind, e.channel, e.occurred_at) {
            self.chunk.procs.push((rec, Procedure::from(e)));
        }
    }

    fn reject(&mut self, place: Place, error: ParseError) {
        self.chunk.rejected += 1;
        if self.chunk.rejects.len() < self.max_reported {
            self.chunk.rejects.push((place, error));
        }
    }

    /// Whole JSON Lines lines.
    fn lines(&mut self, data: &'a [u8]) {
        // Valid UTF-8 as a whole means valid line by line (lines end at an ASCII byte).
        let text = std::str::from_utf8(data).ok();
        let mut pos = 0;
        let mut line = 0u64;
        while pos < data.len() {
            let end = memchr::memchr(b'\n', &data[pos..]).map_or(data.len(), |i| pos + i + 1);
            let parsed = match text.and_then(|t| t.get(pos..end)) {
                Some(l) => line_text(l).map(Ok),
                None => jsonl_text(&data[pos..end]),
            };
            match parsed {
                None => {}
                Some(Ok(text)) => match &quick_json_line(text) {
                    Some(v) => self.event(v, Some(v)),
                    None => match parse_json_line(text) {
                        Ok(e) => self.event(&EventView::of(&e), None),
                        Err(err) => self.reject(Place::Line(line), err),
                    },
                },
                Some(Err(err)) => self.reject(Place::Line(line), err),
            }
            line += 1;
            pos = end;
        }
        self.chunk.lines = line;
    }

    /// Records already parsed.
    fn items(&mut self, items: &'a [Item]) {
        for item in items {
            match item {
                Item::Event(e) => {
                    let v = EventView::of(e);
                    self.event(&v, Some(&v));
                }
                Item::Rejected(r) => self.reject(Place::Known(r.place.clone()), r.error.clone()),
            }
        }
    }

    /// The chunk, and the (emptied) buffer of fingerprints for the next.
    fn finish(mut self) -> (Chunk, Vec<Key>) {
        let mut c = self.chunk;
        // Customers in number order.
        let mut names: Vec<(u32, Cow<'a, str>)> =
            self.customers.drain().map(|(n, c)| (c, n)).collect();
        names.sort_unstable_by_key(|x| x.0);
        c.names = String::with_capacity(names.iter().map(|n| n.1.len()).sum());
        for (_, n) in &names {
            c.names.push_str(n);
            c.name_ends.push(c.names.len() as u32);
        }
        // Fingerprints grouped by partition, keeping file order (a counting sort).
        let mut bounds = vec![0u32; PARTITIONS + 1];
        for k in &self.keys {
            bounds[k.partition() + 1] += 1;
        }
        for p in 0..PARTITIONS {
            bounds[p + 1] += bounds[p];
        }
        let mut next = bounds.clone();
        let mut keys = vec![
            Key {
                hi: 0,
                lo: 0,
                rec: 0
            };
            self.keys.len()
        ];
        for k in &self.keys {
            let p = k.partition();
            keys[next[p] as usize] = *k;
            next[p] += 1;
        }
        c.keys = keys;
        c.bounds = bounds;
        c.recs.shrink_to_fit();
        self.keys.clear();
        (c, self.keys)
    }
}

/// Work for the parsing threads.
enum Job {
    /// The lines of a regular file that start in `[start, end)`.
    Range {
        path: Arc<str>,
        start: u64,
        end: u64,
        len: u64,
    },
    /// Whole lines.
    Bytes(Vec<u8>),
    /// Records already parsed.
    Items(Vec<Item>),
}

struct Numbered {
    seq: usize,
    file: usize,
    progress: u64,
    job: Job,
}

/// A chunk, or why it could not be read (`Read` errors name the line once it is known).
enum Outcome {
    Chunk(Box<Chunk>),
    ReadFailed(usize, io::Error),
    Failed(SourceError),
}

/// Reads the lines of `path` that start in `[start, end)` into `buf`: from the byte before `start`
/// to the end of the last such line. Gives where the first such line starts in `buf`.
fn read_range(path: &str, start: u64, end: u64, len: u64, buf: &mut Vec<u8>) -> io::Result<usize> {
    let from = start.saturating_sub(1);
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    buf.clear();
    buf.reserve((end - from) as usize + (1 << 16));
    (&mut f).take(end - from).read_to_end(buf)?;
    if (buf.len() as u64) < end - from {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the file shrank while being read",
        ));
    }
    // The first line starting at or after `start` (the byte before `start` ends a line).
    let first = if start == 0 {
        0
    } else {
        match memchr::memchr(b'\n', buf) {
            Some(i) if (i as u64) + 1 < end - from => i + 1,
            _ => return Ok(buf.len()),
        }
    };
    // The last line runs on to the next line end.
    if end < len && buf.last() != Some(&b'\n') {
        let mut more = [0u8; 1 << 16];
        loop {
            let n = f.read(&mut more)?;
            if n == 0 {
                break;
            }
            if let Some(i) = memchr::memchr(b'\n', &more[..n]) {
                buf.extend_from_slice(&more[..=i]);
                break;
            }
            buf.extend_from_slice(&more[..n]);
        }
    }
    Ok(first)
}

/// Buffers a parsing thread keeps from chunk to chunk (fresh memory costs a page fault a page).
#[derive(Default)]
struct Scratch {
    buf: Vec<u8>,
    keys: Vec<Key>,
}

fn parse_job(q: &Query, opts: &ReadOptions, job: Numbered, scratch: &mut Scratch) -> Outcome {
    let max_reported = opts.max_reported;
    let keys = std::mem::take(&mut scratch.keys);
    let mut b = ChunkBuilder::new(q, max_reported, job.file, job.progress, keys);
    match &job.job {
        Job::Range {
            path,
            start,
            end,
            len,
        } => match read_range(path, *start, *end, *len, &mut scratch.buf) {
            Ok(first) => b.lines(&scratch.buf[first..]),
            Err(e) => return Outcome::ReadFailed(job.file, e),
        },
        Job::Bytes(d) => b.lines(d),
        Job::Items(i) => b.items(i),
    }
    let (chunk, keys) = b.finish();
    scratch.keys = keys;
    Outcome::Chunk(Box::new(chunk))
}

/// Cuts the inputs into jobs, in file order.
fn produce(
    paths: &[String],
    opts: &ReadOptions,
    jobs: SyncSender<Numbered>,
    outcomes: std::sync::mpsc::Sender<(usize, Outcome)>,
    stop: &AtomicBool,
) {
    let mut seq = 0usize;
    let mut before = 0u64;
    let mut send = |file: usize, progress: u64, job: Job| -> bool {
        let ok = !stop.load(Ordering::Relaxed)
            && jobs
                .send(Numbered {
                    seq,
                    file,
                    progress,
                    job,
                })
                .is_ok();
        seq += 1;
        ok
    };
    for (file, path) in paths.iter().enumerate() {
        let input = match open_input(path, opts.format) {
            Ok(i) => i,
            Err(e) => {
                let _ = outcomes.send((seq, Outcome::Failed(e)));
                return;
            }
        };
        let size = input.size.unwrap_or(0);
        if input.format == InputFormat::Jsonl
            && let Some(p) = input.plain_file.clone()
        {
            let path: Arc<str> = p.into();
            let mut start = 0;
            while start < size {
                let end = (start + opts.chunk_bytes.max(1)).min(size);
                let job = Job::Range {
                    path: path.clone(),
                    start,
                    end,
                    len: size,
                };
                if !send(file, before + end, job) {
                    return;
                }
                start = end;
            }
        } else if input.format == InputFormat::Jsonl {
            let name = input.name.clone();
            let read = input.read.clone();
            let mut r = input.into_reader();
            let mut carry = Vec::new();
            let mut line = 1u64;
            loop {
                let mut buf = std::mem::take(&mut carry);
                let want = opts.chunk_bytes.max(1) as usize;
                buf.reserve(want);
                let eof = match fill(&mut r, &mut buf, want) {
                    Ok(eof) => eof,
                    Err(source) => {
                        let e = SourceError::Read { name, line, source };
                        let _ = outcomes.send((seq, Outcome::Failed(e)));
                        return;
                    }
                };
                if !eof {
                    match memchr::memrchr(b'\n', &buf) {
                        Some(i) => carry = buf.split_off(i + 1),
                        None => {
                            // One line longer than a chunk: read on.
                            carry = buf;
                            continue;
                        }
                    }
                }
                line += memchr::memchr_iter(b'\n', &buf).count() as u64;
                if !buf.is_empty()
                    && !send(file, before + read.load(Ordering::Relaxed), Job::Bytes(buf))
                {
                    return;
                }
                if eof {
                    break;
                }
            }
        } else {
            let read = input.read.clone();
            let mut stopped = false;
            let result = input.for_each_batch(opts.csv_batch.max(1), |items| {
                stopped = !send(
                    file,
                    before + read.load(Ordering::Relaxed),
                    Job::Items(items),
                );
                !stopped
            });
            if let Err(e) = result {
                let _ = outcomes.send((seq, Outcome::Failed(e)));
                return;
            }
            if stopped {
                return;
            }
        }
        before += size;
    }
}

/// Reads until `buf` holds `want` more bytes or the source ends; whether it ended.
fn fill(r: &mut dyn BufRead, buf: &mut Vec<u8>, want: usize) -> io::Result<bool> {
    let target = buf.len() + want;
    while buf.len() < target {
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(true);
        }
        let n = avail.len().min(target - buf.len());
        buf.extend_from_slice(&avail[..n]);
        r.consume(n);
    }
    Ok(false)
}

/// Merges chunks in file order: numbers their lines and customers, reports the first rejects.
struct Merger<'p> {
    names: &'p [String],
    max_reported: usize,
    report: &'p mut dyn FnMut(String),
    /// The file being merged and the lines of it merged so far.
    file: usize,
    lines_before: u64,
    customers: HashMap<Box<str>, u32, foldhash::fast::RandomState>,
    chunks: Vec<Chunk>,
    rejected: u64,
    reported: usize,
}

impl Merger<'_> {
    fn enter(&mut self, file: usize) {
        if file != self.file {
            self.file = file;
            self.lines_before = 0;
        }
    }

    fn merge(&mut self, mut c: Chunk) {
        self.enter(c.file);
        // Each chunk keeps its first `max_reported` rejects, so these hold the first overall.
        for (place, error) in std::mem::take(&mut c.rejects) {
            if self.reported < self.max_reported {
                self.reported += 1;
                let place = match place {
                    Place::Line(l) => {
                        format!("{}:{}", self.names[c.file], self.lines_before + l + 1)
                    }
                    Place::Known(p) => p,
                };
                (self.report)(format!("{place}: {error}"));
            }
        }
        self.rejected += c.rejected;
        self.lines_before += c.lines;
        let mut start = 0usize;
        c.customers = c
            .name_ends
            .iter()
            .map(|&end| {
                let name = &c.names[start..end as usize];
                start = end as usize;
                match self.customers.get(name) {
                    Some(&g) => g,
                    None => {
                        let g = self.customers.len() as u32;
                        self.customers.insert(name.into(), g);
                        g
                    }
                }
            })
            .collect();
        c.names = String::new();
        c.name_ends = Vec::new();
        self.chunks.push(c);
    }
}

/// Reads every file and investigates. Duplicate event ids count once (the first in file order);
/// bad records are reported on stderr (the first `max_reported`) and skipped.
pub fn investigate_files(
    paths: &[String],
    format: Option<InputFormat>,
    q: &Query,
    intel: &dyn IpIntel,
    progress: bool,
    max_reported: usize,
) -> anyhow::Result<(Investigation, FileStats)> {
    let opts = ReadOptions {
        format,
        max_reported,
        progress,
        ..ReadOptions::default()
    };
    let (inv, stats) =
        investigate_files_with(paths, &opts, q, intel, &mut |r| eprintln!("rejected {r}"))?;
    if stats.rejected > max_reported as u64 {
        eprintln!("… {} rejected records in all", stats.rejected);
    }
    Ok((inv, stats))
}

/// [`investigate_files`] with every option; `report` gets the first `max_reported` bad records
/// (`file:line: error`) in file order, as they are met.
pub fn investigate_files_with(
    paths: &[String],
    opts: &ReadOptions,
    q: &Query,
    intel: &dyn IpIntel,
    report: &mut dyn FnMut(String),
) -> anyhow::Result<(Investigation, FileStats)> {
    // Open everything first so that a missing file fails before any work.
    let mut names = Vec::new();
    let mut total = 0;
    for p in paths {
        let input = open_input(p, opts.format)?;
        total += input.size.unwrap_or(0);
        names.push(input.name);
    }
    let bar = if opts.progress {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} reading ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut merger = Merger {
        names: &names,
        max_reported: opts.max_reported,
        report,
        file: 0,
        lines_before: 0,
        customers: HashMap::default(),
        chunks: Vec::new(),
        rejected: 0,
        reported: 0,
    };
    let read = read_chunks(paths, opts, q, &mut merger, &bar);
    bar.finish_and_clear();
    read?;
    let customers = merger.customers.len();
    let rejected = merger.rejected;
    let mut chunks = merger.chunks;
    let dups = duplicates(&chunks);
    let valid: u64 = chunks.iter().map(|c| c.recs.len() as u64).sum();
    let duplicates: u64 = dups.iter().map(|d| d.len() as u64).sum();
    let stats = FileStats {
        events: valid - duplicates,
        duplicates,
        rejected,
    };
    for c in &mut chunks {
        c.keys = Vec::new();
    }
    Ok((investigate_chunks(chunks, customers, dups, q, intel), stats))
}

/// Parses every file in chunks on the worker threads and merges the chunks in file order.
fn read_chunks(
    paths: &[String],
    opts: &ReadOptions,
    q: &Query,
    merger: &mut Merger<'_>,
    bar: &ProgressBar,
) -> Result<(), SourceError> {
    let workers = match opts.threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (job_tx, job_rx) = sync_channel::<Numbered>(workers * 2);
        // Shared by the workers; dropped when the last one ends, which stops the producer.
        let job_rx: Arc<Mutex<Receiver<Numbered>>> = Arc::new(Mutex::new(job_rx));
        let (out_tx, out_rx) = channel::<(usize, Outcome)>();
        {
            let out_tx = out_tx.clone();
            let stop = &stop;
            s.spawn(move || produce(paths, opts, job_tx, out_tx, stop));
        }
        for _ in 0..workers {
            let job_rx = job_rx.clone();
            let out_tx = out_tx.clone();
            s.spawn(move || {
                let mut scratch = Scratch::default();
                loop {
                    let job = match job_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let seq = job.seq;
                    if out_tx
                        .send((seq, parse_job(q, opts, job, &mut scratch)))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
        drop(job_rx);
        drop(out_tx);
        let mut pending: BTreeMap<usize, Outcome> = BTreeMap::new();
        let mut next = 0usize;
        for (seq, outcome) in out_rx.iter() {
            pending.insert(seq, outcome);
            while let Some(o) = pending.remove(&next) {
                next += 1;
                match o {
                    Outcome::Chunk(c) => {
                        bar.set_position(c.progress);
                        merger.merge(*c);
                    }
                    Outcome::ReadFailed(file, source) => {
                        merger.enter(file);
                        stop.store(true, Ordering::Relaxed);
                        return Err(SourceError::Read {
                            name: merger.names[file].clone(),
                            line: merger.lines_before + 1,
                            source,
                        });
                    }
                    Outcome::Failed(e) => {
                        stop.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    })
}

/// The records of each chunk whose event id came earlier (sorted), partition by partition on
/// every core.
fn duplicates(chunks: &[Chunk]) -> Vec<Vec<u32>> {
    let found: Vec<(u32, u32)> = (0..PARTITIONS)
        .into_par_iter()
        .map(|p| {
            let n: usize = chunks.iter().map(|c| c.partition(p).len()).sum();
            let mut seen = FingerprintSet::with_capacity_and_hasher(n, Default::default());
            let mut dups = Vec::new();
            for (ci, c) in chunks.iter().enumerate() {
                for k in c.partition(p) {
                    if !seen.insert(k.key()) {
                        dups.push((ci as u32, k.rec));
                    }
                }
            }
            dups
        })
        .flatten()
        .collect();
    let mut dups = vec![Vec::new(); chunks.len()];
    for (c, r) in found {
        dups[c as usize].push(r);
    }
    for d in &mut dups {
        d.sort_unstable();
    }
    dups
}

/// Investigates the procedures of the chunks (but the duplicates `dups`) with the events of
/// their customers and on their IPs.
fn investigate_chunks(
    mut chunks: Vec<Chunk>,
    customers: usize,
    dups: Vec<Vec<u32>>,
    q: &Query,
    intel: &dyn IpIntel,
) -> Investigation {
    let mut procedures = Vec::new();
    let mut wanted_customers = vec![0u64; customers.div_ceil(64)];
    let mut wanted_ips: HashSet<u128, foldhash::fast::RandomState> = HashSet::default();
    for (c, dups) in chunks.iter_mut().zip(&dups) {
        for (rec, p) in std::mem::take(&mut c.procs) {
            if dups.binary_search(&rec).is_ok() {
                continue;
            }
            let g = c.customers[c.recs[rec as usize].customer as usize];
            wanted_customers[g as usize / 64] |= 1u64 << (g % 64);
            if let Some(ip) = p.ip {
                wanted_ips.insert(ip_key(ip));
            }
            procedures.push((g, p));
        }
    }

    // Nothing at or after the end of the period matters, nor anything on an IP more than the
    // others' window before its start.
    let ip_from = q.from.saturating_sub(q.windows.others);
    type Found = (Vec<(u32, Access)>, Vec<(u128, i64, u32, Kind)>);
    let found: Vec<Found> = chunks
        .into_par_iter()
        .zip(dups.into_par_iter())
        .map(|(c, dups)| {
            let mut acc = Vec::new();
            let mut on_ip = Vec::new();
            let mut d = dups.iter().peekable();
            for (i, r) in c.recs.iter().enumerate() {
                if d.peek().is_some_and(|&&x| x as usize == i) {
                    d.next();
                    continue;
                }
                if r.at >= q.to {
                    continue;
                }
                let g = c.customers[r.customer as usize];
                if wanted_customers[g as usize / 64] & (1u64 << (g % 64)) != 0 {
                    acc.push((g, r.access(&c.wide_ips)));
                }
                if r.at >= ip_from
                    && let Some(ip) = r.ip(&c.wide_ips)
                    && wanted_ips.contains(&ip)
                {
                    on_ip.push((ip, r.at, g, r.kind));
                }
            }
            (acc, on_ip)
        })
        .collect();
    let mut by_customer: HashMap<u32, Vec<Access>> = HashMap::new();
    let mut by_ip: HashMap<u128, Vec<IpUse<u32>>> = HashMap::new();
    for (acc, on_ip) in found {
        for (c, a) in acc {
            by_customer.entry(c).or_default().push(a);
        }
        for (ip, at, c, k) in on_ip {
            by_ip.entry(ip).or_default().push(IpUse::event(at, c, k));
        }
    }
    investigate_indexed(
        procedures,
        |c| by_customer.get(&c).map_or(&[], Vec::as_slice),
        by_ip,
        q,
        intel,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::io::Write;

    use mamori_core::memory::MemoryIndex;
    use mamori_core::parse::parse_json_line;
    use mamori_core::time::parse_bound;
    use mamori_core::verdict::NoIntel;

    use super::*;

    /// The reading this replaced, kept as the oracle: every line through the `serde_json` parser,
    /// one event at a time into a [`MemoryIndex`], duplicates by the customer and id themselves.
    fn oracle(paths: &[String], q: &Query, max: usize) -> (Investigation, [u64; 3], Vec<String>) {
        let mut index = MemoryIndex::new();
        let mut seen = HashSet::new();
        let (mut events, mut dups, mut rejected) = (0, 0, 0);
        let mut reported = Vec::new();
        let mut add = |r: Result<mamori_core::Event, String>| match r {
            Ok(e) => {
                if seen.insert((e.customer_id.clone(), e.event_id.clone())) {
                    events += 1;
                    index.push(&e, q);
                } else {
                    dups += 1;
                }
            }
            Err(msg) => {
                rejected += 1;
                if reported.len() < max {
                    reported.push(msg);
                }
            }
        };
        for p in paths {
            if p.ends_with(".csv") {
                open_input(p, None)
                    .and_then(|i| {
                        i.for_each_batch(3, |items| {
                            for item in items {
                                add(match item {
                                    Item::Event(e) => Ok(e),
                                    Item::Rejected(r) => Err(r.to_string()),
                                });
                            }
                            true
                        })
                    })
                    .expect("csv");
                continue;
            }
            let raw = std::fs::read(p).expect("read");
            let bytes = if p.ends_with(".gz") {
                let mut out = Vec::new();
                flate2::read::MultiGzDecoder::new(&raw[..])
                    .read_to_end(&mut out)
                    .expect("gunzip");
                out
            } else {
                raw
            };
            for (i, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
                let line = line.strip_suffix(b"\n").unwrap_or(line);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let place = format!("{p}:{}", i + 1);
                add(match std::str::from_utf8(line) {
                    Err(e) => Err(format!(
                        "{place}: not valid UTF-8 (byte {})",
                        e.valid_up_to()
                    )),
                    Ok(s) => parse_json_line(s).map_err(|e| format!("{place}: {e}")),
                });
            }
        }
        (
            index.investigate(q, &NoIntel),
            [events, dups, rejected],
            reported,
        )
    }

    /// A small deterministic generator.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    /// Unsorted events of a few customers sharing a few IPs, with odd but valid shapes.
    fn lines(rng: &mut Lcg, n: usize, prefix: &str) -> Vec<String> {
        let kinds = [
            "login",
            "login",
            "access",
            "login_failed",
            "destination_change",
            "trade",
            "password_change",
            "logout",
        ];
        let base = parse_bound("2019-10-01").expect("date") / 1_000_000;
        (0..n)
            .map(|i| {
                let c = rng.next(12);
                let kind = kinds[rng.next(kinds.len() as u64) as usize];
                let t = base + rng.next(365 * 86_400) as i64;
                let at = mamori_core::time::format_tokyo(t * 1_000_000);
                let (channel, ip) = match rng.next(20) {
                    0 => ("\"paper\"", None),
                    1 => ("\"support_center\"", None),
                    2 => ("\"app\"", Some(format!("2001:db8:{}::{}", rng.next(3), rng.next(4)))),
                    3 => ("null", Some(format!("::ffff:198.51.100.{}", rng.next(4)))),
                    _ => ("\"web\"", Some(format!("198.51.100.{}", rng.next(6)))),
                };
                let ip = ip.map_or(String::new(), |ip| format!(",\"ip\":\"{ip}\""));
                let device = match rng.next(4) {
                    0 => String::new(),
                    1 => ",\"device_id\":null".to_owned(),
                    d => format!(",\"device_id\":\"d{c}-{d}\""),
                };
                let extra = match rng.next(12) {
                    0 => ",\"user_agent\":\"Mo\\\"zilla \\u00e9\"".to_owned(),
                    1 => ",\"amount\":120000,\"side\":\"sell\"".to_owned(),
                    2 => ",\"destination\":{\"bank_code\":\"0001\",\"branch_code\":\"001\",\"account_number\":\"1234567\",\"holder_kana\":\"ヤマダ\"}".to_owned(),
                    3 => " , \"amount\" : null ".to_owned(),
                    _ => ",\"user_agent\":\"Mozilla/5.0 (X11)\"".to_owned(),
                };
                let id = format!("{prefix}{i}");
                if rng.next(5) == 0 {
                    format!(
                        "{{\"occurred_at\":\"{at}\",\"kind\":\"{kind}\",\"customer_id\":\"c{c}\",\"event_id\":\"{id}\",\"channel\":{channel}{ip}{device}{extra}}}"
                    )
                } else {
                    format!(
                        "{{\"event_id\":\"{id}\",\"occurred_at\":\"{at}\",\"customer_id\":\"c{c}\",\"kind\":\"{kind}\",\"channel\":{channel}{ip}{device}{extra}}}"
                    )
                }
            })
            .collect()
    }

    #[test]
    fn chunked_reading_equals_the_one_event_at_a_time_oracle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let mut rng = Lcg(7);
        let mut a = lines(&mut rng, 1500, "e");
        // Duplicates: copies, and other events under an id already used (first one wins).
        for i in 0..60 {
            let j = rng.next(a.len() as u64) as usize;
            let copy = if i % 2 == 0 {
                a[j].clone()
            } else {
                a[j].replace("\"customer_id\":\"c", "\"customer_id\":\"x")
            };
            let at = rng.next(a.len() as u64) as usize;
            a.insert(at, copy);
        }
        let bad = [
            "{oops",
            "[1,2]",
            "{\"event_id\":\"b1\"}",
            "{\"event_id\":5}",
            "{\"event_id\":\"b2\",\"occurred_at\":\"2020-08-01T10:00:00+09:00\",\"customer_id\":\"c1\",\"kind\":\"login\",\"ip\":\"999.1.1.1\"}",
            "{\"event_id\":\"b3\",\"occurred_at\":\"2020-08-01T10:00:00+09:00\",\"customer_id\":\"c1\",\"kind\":\"login\",\"ip\":\"1.2.3.4\",\"amount\":1.5}",
            "{\"event_id\":\"b4\",\"occurred_at\":\"2020-08-01T10:00:00+09:00\",\"customer_id\":\"c1\",\"kind\":\"login\",\"ip\":\"1.2.3.4\",\"event_id\":\"b4\"}",
            "{\"event_id\":\"b5\",\"occurred_at\":\"2020-08-01T10:00:00+09:00\",\"customer_id\":\"c1\",\"kind\":\"login\",\"ip\":\"1.2.3.4\"} x",
            "",
            "   ",
        ];
        for (i, b) in bad.iter().cycle().take(40).enumerate() {
            let at = (i * 37) % a.len();
            a.insert(at, (*b).to_owned());
        }
        let mut text = Vec::new();
        for (i, l) in a.iter().enumerate() {
            text.extend_from_slice(l.as_bytes());
            text.extend_from_slice(if i % 9 == 0 { b"\r\n" } else { b"\n" });
        }
        text.extend_from_slice(&[b'{', 0xff, b'}', b'\n']);
        text.extend_from_slice(a[3].as_bytes()); // no final line end
        std::fs::write(d.join("a.jsonl"), &text).expect("write");

        let mut b = lines(&mut rng, 300, "g");
        b.push(a[10].clone());
        b.push(a[11].replace("\"kind\":\"", "\"kind\":\"destination_change\",\"x\":\""));
        b.insert(100, "{\"event_id\":\"late\"}".to_owned());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b.join("\n").as_bytes()).expect("gz");
        std::fs::write(d.join("b.jsonl.gz"), gz.finish().expect("gz")).expect("write");

        std::fs::write(
            d.join("c.csv"),
            "event_id,occurred_at,customer_id,kind,channel,ip,amount\n\
             e5,2020-09-16T10:00:00Z,c2,withdrawal,web,198.51.100.1,50000\n\
             k1,2020-08-16T10:00:00Z,c2,destination_change,web,198.51.100.1,\n\
             k2,2020-09-16T10:00:00Z,c2,withdrawal,web,198.51.100.1,lots\n\
             k3,2020-09-16T11:00:00Z,c2,address_change,paper,,\n",
        )
        .expect("write");

        let paths: Vec<String> = ["a.jsonl", "b.jsonl.gz", "c.csv"]
            .iter()
            .map(|f| d.join(f).to_string_lossy().into_owned())
            .collect();
        let from = parse_bound("2020-03-01").expect("date");
        let to = parse_bound("2020-09-20").expect("date");
        let q = Query::new(Kind::DestinationChange, from, to);
        let (want, want_stats, all_reported) = oracle(&paths, &q, usize::MAX);
        assert!(want.rows.len() > 30, "{} rows", want.rows.len());
        assert!(want_stats[1] > 30 && want_stats[2] > 30, "{want_stats:?}");
        assert!(all_reported.iter().any(|r| r.contains("b.jsonl.gz:101: ")));
        assert!(
            all_reported
                .iter()
                .any(|r| r.contains("c.csv:4: field `amount`"))
        );

        for (chunk, threads, batch, max) in [
            (1 << 20, 0, 50_000, 12),
            (5, 2, 1, 1000),
            (97, 3, 2, 12),
            (1000, 1, 7, 1000),
            (4096, 2, 1000, 0),
        ] {
            let opts = ReadOptions {
                max_reported: max,
                chunk_bytes: chunk,
                csv_batch: batch,
                threads,
                ..ReadOptions::default()
            };
            let mut reported = Vec::new();
            let (got, stats) =
                investigate_files_with(&paths, &opts, &q, &NoIntel, &mut |r| reported.push(r))
                    .expect("investigate");
            let what = format!("chunk {chunk}, threads {threads}, batch {batch}, max {max}");
            assert_eq!(got.rows, want.rows, "{what}");
            assert_eq!(got.summary, want.summary, "{what}");
            assert_eq!(
                [stats.events, stats.duplicates, stats.rejected],
                want_stats,
                "{what}"
            );
            let want_reported: Vec<String> = all_reported.iter().take(max).cloned().collect();
            assert_eq!(reported, want_reported, "{what}");
        }
    }

    #[test]
    fn a_missing_file_fails_before_reading() {
        let q = Query::new(Kind::DestinationChange, 0, 1);
        let err = investigate_files_with(
            &["/nonexistent/x.jsonl".to_owned()],
            &ReadOptions::default(),
            &q,
            &NoIntel,
            &mut |_| {},
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("/nonexistent/x.jsonl"), "{err}");
    }
}
