//! The day-of-incident mode: investigate straight from log files, with no store.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mamori_core::investigate::{Investigation, Query};
use mamori_core::memory::{MemoryIndex, dedup_key};
use mamori_core::verdict::IpIntel;

use crate::source::{InputFormat, Item, open_input};

/// Counts of the records read.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileStats {
    pub events: u64,
    pub duplicates: u64,
    pub rejected: u64,
}

/// Reads every file into memory and investigates. Duplicate event ids count once (the first);
/// bad records are reported on stderr (the first `max_reported`) and skipped.
pub fn investigate_files(
    paths: &[String],
    format: Option<InputFormat>,
    q: &Query,
    intel: &dyn IpIntel,
    progress: bool,
    max_reported: usize,
) -> anyhow::Result<(Investigation, FileStats)> {
    let inputs = paths
        .iter()
        .map(|p| open_input(p, format))
        .collect::<Result<Vec<_>, _>>()?;
    let total: u64 = inputs.iter().filter_map(|i| i.size).sum();
    let bar = if progress {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} reading ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut index = MemoryIndex::new();
    let mut seen: HashSet<u128> = HashSet::new();
    let mut stats = FileStats::default();
    let mut done_before = 0;
    for input in inputs {
        let read = input.read.clone();
        input.for_each_batch(50_000, |items| {
            for item in items {
                match item {
                    Item::Event(e) => {
                        if seen.insert(dedup_key(&e.event_id)) {
                            stats.events += 1;
                            index.push(&e, q);
                        } else {
                            stats.duplicates += 1;
                        }
                    }
                    Item::Rejected(r) => {
                        stats.rejected += 1;
                        if stats.rejected <= max_reported as u64 {
                            eprintln!("rejected {r}");
                        }
                    }
                }
            }
            bar.set_position(done_before + read.load(Ordering::Relaxed));
            true
        })?;
        done_before += read.load(Ordering::Relaxed);
    }
    bar.finish_and_clear();
    if stats.rejected > max_reported as u64 {
        eprintln!("… {} rejected records in all", stats.rejected);
    }
    Ok((index.investigate(q, intel), stats))
}
