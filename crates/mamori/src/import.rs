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

/// Imports files (`-` for stdin) into the store.
pub async fn import<S: EventWriter>(
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
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(2);
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
    let mut total_ins = Inserted::default();
    let mut failure = None;
    let mut pending: Vec<Event> = Vec::new();
    let mut flush = async |pending: &mut Vec<Event>| -> anyhow::Result<()> {
        if !pending.is_empty() {
            total_ins += store.insert_events(pending).await?;
            pending.clear();
            bar.set_message(format!(
                "{} events",
                total_ins.inserted + total_ins.duplicates
            ));
        }
        Ok(())
    };
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Batch(mut events) => {
                if pending.is_empty() {
                    pending = events;
                } else {
                    pending.append(&mut events);
                }
                if pending.len() >= opts.batch {
                    flush(&mut pending).await?;
                }
            }
            Msg::Failed(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    // What came before a bad record (under --strict) is committed too.
    flush(&mut pending).await?;
    drop(rx);
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
        rejects_file: (rejected > 0).then_some(rejects.path),
    })
}
