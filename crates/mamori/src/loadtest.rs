//! `mamori loadtest`: drives `POST /v1/assess` of a running server with attempts taken from an
//! event file, at a constant rate (open loop: each request has a scheduled time, and its latency
//! counts from that time, so a stalled server is not hidden by a waiting client) or as fast as
//! it answers (closed loop), and prints the latency distribution.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use hdrhistogram::Histogram;
use mamori_core::event::Kind;
use mamori_core::time::parse_bound;

#[derive(Debug, Args)]
pub struct LoadtestArgs {
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An API key with the assess scope.
    #[arg(long, env = "MAMORI_API_KEY")]
    pub key: String,
    /// Event file (JSON Lines) whose logins, destination changes and withdrawals become attempts.
    #[arg(long)]
    pub events: PathBuf,
    /// Only events from this time on (a Tokyo date or RFC 3339).
    #[arg(long)]
    pub from: Option<String>,
    /// Only events before this time. A window within one Tokyo day keeps the server on one
    /// day's population, as live traffic does.
    #[arg(long)]
    pub to: Option<String>,
    /// Requests per second (open loop); 0 sends as fast as the server answers (closed loop).
    #[arg(long, default_value_t = 2000)]
    pub rate: u32,
    /// How long to run.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Requests in flight at most (connections).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Attempts read from the file at most.
    #[arg(long, default_value_t = 200_000)]
    pub max_attempts: usize,
}

/// Attempt bodies from an event file: sensitive procedures and logins, each with a fresh id.
fn attempts(a: &LoadtestArgs) -> anyhow::Result<Vec<String>> {
    use std::io::BufRead;
    let from = match &a.from {
        Some(f) => parse_bound(f).map_err(|e| anyhow::anyhow!("--from: {e}"))?,
        None => i64::MIN,
    };
    let to = match &a.to {
        Some(t) => parse_bound(t).map_err(|e| anyhow::anyhow!("--to: {e}"))?,
        None => i64::MAX,
    };
    let f = std::fs::File::open(&a.events)
        .with_context(|| format!("opening {}", a.events.display()))?;
    let run = std::process::id();
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::with_capacity(1 << 20, f)
        .lines()
        .enumerate()
    {
        let line = line.with_context(|| format!("{}:{}", a.events.display(), n + 1))?;
        let Some(e) = mamori_core::parse::quick_json_line(&line) else {
            continue;
        };
        if e.occurred_at < from
            || e.occurred_at >= to
            || !matches!(
                e.kind,
                Kind::Login | Kind::DestinationChange | Kind::Withdrawal
            )
        {
            continue;
        }
        let mut ev = e.to_event();
        ev.event_id = format!("lt{run}-{}-{}", out.len(), ev.event_id);
        out.push(ev.to_json());
        if out.len() >= a.max_attempts {
            break;
        }
    }
    if out.is_empty() {
        bail!(
            "{}: no login, destination change or withdrawal to send",
            a.events.display()
        );
    }
    Ok(out)
}

/// `mamori loadtest`.
pub async fn run(a: &LoadtestArgs) -> anyhow::Result<()> {
    let bodies = Arc::new(attempts(a)?);
    eprintln!("{} attempts read from {}", bodies.len(), a.events.display());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(a.concurrency)
        .build()?;
    let url = Arc::new(format!("{}/v1/assess", a.url.trim_end_matches('/')));
    let key = Arc::new(format!("Bearer {}", a.key));
    let duration = Duration::from_secs(a.seconds);
    let total = if a.rate > 0 {
        (u64::from(a.rate) * a.seconds) as usize
    } else {
        usize::MAX
    };
    let next = Arc::new(AtomicUsize::new(0));
    // Open loop: a thread of its own releases each request at its time (a thread sleeps to tens
    // of microseconds; tokio's timer has a granularity of a millisecond, which the latencies
    // would include).
    let (release, released) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let released = Arc::new(tokio::sync::Mutex::new(released));
    let errors = Arc::new(AtomicU64::new(0));
    let decisions: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let start = Instant::now() + Duration::from_millis(100);
    let rate = a.rate;
    let scheduled_at = move |i: usize| start + Duration::from_secs_f64(i as f64 / f64::from(rate));
    let pacer = (a.rate > 0).then(|| {
        std::thread::spawn(move || {
            for i in 0..total {
                let at = scheduled_at(i);
                if at.saturating_duration_since(start) > duration {
                    break;
                }
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                if release.send(i).is_err() {
                    break;
                }
            }
        })
    });
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let (client, url, key, bodies, next, errors, decisions) = (
            client.clone(),
            url.clone(),
            key.clone(),
            bodies.clone(),
            next.clone(),
            errors.clone(),
            decisions.clone(),
        );
        let rate = a.rate;
        let released = released.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            loop {
                let (i, scheduled) = if rate > 0 {
                    let Some(i) = released.lock().await.recv().await else {
                        break;
                    };
                    (i, scheduled_at(i))
                } else {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let now = Instant::now();
                    if now.saturating_duration_since(start) > duration {
                        break;
                    }
                    (i, now)
                };
                let body = bodies[i % bodies.len()].clone();
                let r = client
                    .post(url.as_str())
                    .header("authorization", key.as_str())
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let ok = match r {
                    Ok(r) if r.status().is_success() => {
                        let text = r.text().await.unwrap_or_default();
                        for (k, d) in ["\"allow\"", "\"challenge\"", "\"hold\"", "\"block\""]
                            .iter()
                            .enumerate()
                        {
                            if text.contains(d) {
                                decisions[k].fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                        true
                    }
                    _ => false,
                };
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                let us = scheduled.elapsed().as_micros() as u64;
                let _ = h.record(us.max(1));
            }
            h
        }));
    }
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        h.add(t.await?)?;
    }
    // It has ended: the tasks end when it stops releasing.
    if let Some(p) = pacer {
        p.join()
            .map_err(|_| anyhow::anyhow!("the pacing thread panicked"))?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = h.len();
    let d: Vec<u64> = decisions
        .iter()
        .map(|d| d.load(Ordering::Relaxed))
        .collect();
    println!(
        "requests {n} in {elapsed:.1} s: {:.0}/s ({}), errors {}",
        n as f64 / elapsed,
        if a.rate > 0 {
            format!("open loop at {}/s", a.rate)
        } else {
            format!("closed loop, {} in flight", a.concurrency)
        },
        errors.load(Ordering::Relaxed)
    );
    println!(
        "decisions: allow {}, challenge {}, hold {}, block {}",
        d[0], d[1], d[2], d[3]
    );
    let ms = |us: u64| us as f64 / 1000.0;
    println!("latency (ms, from the scheduled send time):");
    for q in [0.5, 0.75, 0.9, 0.95, 0.99, 0.999] {
        println!("  p{:<5} {:>9.3}", q * 100.0, ms(h.value_at_quantile(q)));
    }
    println!("  max    {:>9.3}", ms(h.max()));
    println!("cumulative:");
    for bound in [250u64, 500, 1000, 2000, 5000, 10_000, 50_000] {
        let count = h.count_between(0, bound);
        println!(
            "  ≤ {:>6} ms {:>9}  {:>7.3}%",
            ms(bound),
            count,
            100.0 * count as f64 / n.max(1) as f64
        );
    }
    Ok(())
}
