//! `mamori consume`: stream ingestion from a NATS JetStream stream into a store, with
//! exactly-once results across crashes.
//!
//! A durable pull consumer with explicit acknowledgement. Each round fetches a batch, parses it,
//! stores its events in one transaction ([`EventWriter::insert_events`]) and only then
//! acknowledges its messages. A crash between the commit and the acknowledgements only makes the
//! server deliver the batch again, and the store, idempotent by `(customer_id, event_id)`, stores
//! nothing twice. Bad records go to the rejects file with their stream sequence and are
//! terminated (never delivered again); store errors acknowledge nothing and are retried with
//! back-off.
//!
//! Message bodies hold personal data (names, bank accounts): they are written to the rejects file
//! only, never to logs or the terminal.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, consumer::pull};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mamori_core::event::Event;
use mamori_core::parse::{ParseError, ParsedLine, parse_json_line_view};
use mamori_store::{EventWriter, Inserted};
use tokio::sync::watch;

/// How long one pull waits for its batch to fill: the most a message waits when traffic is low.
const FETCH_WAIT: Duration = Duration::from_secs(1);
/// The longest pause between retries of a failing store or a failing fetch.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How messages are acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AckMode {
    /// Wait for the server's confirmation of every acknowledgement (of a batch at once).
    #[default]
    Double,
    /// Send the acknowledgements and flush them to the socket without waiting for the server.
    Plain,
}

/// How to consume.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    /// The NATS server, e.g. `nats://127.0.0.1:4222`.
    pub nats: String,
    /// The JetStream stream.
    pub stream: String,
    /// Only messages with subjects matching this filter (all of the stream when `None`).
    pub subject: Option<String>,
    /// The durable consumer's name: created if missing, resumed if present.
    pub durable: String,
    /// Messages per fetch and per store transaction.
    pub batch: usize,
    /// Stop when nothing arrived for this long and the durable has nothing left to deliver.
    pub idle_exit: Option<Duration>,
    /// How long the server waits for an acknowledgement before delivering a message again.
    pub ack_wait: Duration,
    /// Where bad records go (JSON Lines, appended: place, sequence, error, field, record).
    pub rejects: PathBuf,
    /// A progress line on the terminal (when standard error is one).
    pub progress: bool,
    /// Seconds between progress lines in the log when standard error is not a terminal.
    pub log_every: Duration,
    pub ack: AckMode,
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        ConsumeOptions {
            nats: "nats://127.0.0.1:4222".into(),
            stream: "EVENTS".into(),
            subject: None,
            durable: "mamori".into(),
            batch: 1000,
            idle_exit: None,
            ack_wait: Duration::from_secs(30),
            rejects: PathBuf::from("mamori-rejects.jsonl"),
            progress: true,
            log_every: Duration::from_secs(10),
            ack: AckMode::Double,
        }
    }
}

/// What a run of the consumer did.
#[derive(Debug, Clone, Default)]
pub struct ConsumeReport {
    /// Messages processed (acknowledged or terminated), redeliveries included.
    pub messages: u64,
    /// Events stored for the first time.
    pub stored: u64,
    /// Events already in the store (published twice, or delivered again after a crash).
    pub duplicates: u64,
    /// Bad records (written to the rejects file).
    pub rejected: u64,
    pub elapsed: Duration,
    /// From the first message's arrival to the end of the last batch (the time spent waiting
    /// for messages before and after is left out).
    pub busy: Duration,
    /// Set when some records were rejected.
    pub rejects_file: Option<PathBuf>,
}

impl ConsumeReport {
    /// Events (good records) per second of [`ConsumeReport::busy`] time.
    pub fn events_per_second(&self) -> f64 {
        (self.stored + self.duplicates) as f64 / self.busy.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for ConsumeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "consumed {} messages in {:.1} s ({:.0} events/s): {} stored, {} duplicates, {} rejected",
            self.messages,
            self.elapsed.as_secs_f64(),
            self.events_per_second(),
            self.stored,
            self.duplicates,
            self.rejected
        )?;
        if let Some(p) = &self.rejects_file {
            write!(f, " (see {})", p.display())?;
        }
        Ok(())
    }
}

/// A bad record of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// The line within the message (1-based) when the message held several.
    pub line: Option<usize>,
    pub error: ParseError,
    pub raw: String,
}

/// What one message holds: its events and its bad records.
#[derive(Debug, Default)]
pub struct ParsedMessage {
    pub events: Vec<Event>,
    pub bad: Vec<BadRecord>,
}

/// Parses one message: one event in the JSON form of the event contract, or several as JSON
/// Lines (blank lines ignored). A message that is not UTF-8 or holds nothing is one bad record.
pub fn parse_message(payload: &[u8]) -> ParsedMessage {
    let mut out = ParsedMessage::default();
    let text = match std::str::from_utf8(payload) {
        Ok(t) => t,
        Err(e) => {
            out.bad.push(BadRecord {
                line: None,
                error: ParseError {
                    field: None,
                    message: format!("the message is not UTF-8 ({e})"),
                },
                raw: String::from_utf8_lossy(payload).into_owned(),
            });
            return out;
        }
    };
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.trim().is_empty())
        .collect();
    if lines.is_empty() {
        out.bad.push(BadRecord {
            line: None,
            error: ParseError {
                field: None,
                message: "the message is empty; expected an event as a JSON object".into(),
            },
            raw: text.to_owned(),
        });
        return out;
    }
    let several = lines.len() > 1;
    for (i, line) in lines.iter().enumerate() {
        match parse_json_line_view(line) {
            Ok(ParsedLine::Borrowed(v)) => out.events.push(v.to_event()),
            Ok(ParsedLine::Owned(e)) => out.events.push(*e),
            Err(error) => out.bad.push(BadRecord {
                line: several.then_some(i + 1),
                error,
                raw: (*line).to_owned(),
            }),
        }
    }
    out
}

/// The rejects file of a stream: appended to, and written once per bad record even when a crash
/// makes the server deliver its message again.
struct Rejects {
    path: PathBuf,
    out: Option<File>,
    /// `(place, record)` of the records already in the file.
    seen: HashSet<(String, String)>,
    /// Written since the last sync.
    dirty: bool,
    count: u64,
}

impl Rejects {
    fn open(path: PathBuf) -> anyhow::Result<Self> {
        let mut seen = HashSet::new();
        match File::open(&path) {
            Ok(f) => {
                for line in BufReader::new(f).lines() {
                    let line = line
                        .with_context(|| format!("reading the rejects file {}", path.display()))?;
                    // Lines of other writers (or cut short by a crash) are kept as they are.
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                        && let (Some(p), Some(r)) = (v["place"].as_str(), v["record"].as_str())
                    {
                        seen.insert((p.to_owned(), r.to_owned()));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("reading the rejects file {}", path.display()));
            }
        }
        Ok(Rejects {
            path,
            out: None,
            seen,
            dirty: false,
            count: 0,
        })
    }

    fn add(
        &mut self,
        stream: &str,
        seq: Option<u64>,
        subject: &str,
        bad: &BadRecord,
    ) -> anyhow::Result<()> {
        self.count += 1;
        let seq_text = seq.map_or_else(|| "?".to_owned(), |s| s.to_string());
        let place = match bad.line {
            Some(l) => format!("{stream}:{seq_text}:{l}"),
            None => format!("{stream}:{seq_text}"),
        };
        // Only the place and the field: the error's text may quote the record.
        tracing::warn!(
            place = %place,
            field = bad.error.field.unwrap_or("(the record)"),
            "rejected a record (see the rejects file)"
        );
        if !self.seen.insert((place.clone(), bad.raw.clone())) {
            return Ok(());
        }
        if self.out.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .with_context(|| format!("cannot open the rejects file {}", self.path.display()))?;
            self.out = Some(f);
        }
        let line = serde_json::json!({
            "place": place,
            "stream": stream,
            "seq": seq,
            "line": bad.line,
            "subject": subject,
            "error": bad.error.to_string(),
            "field": bad.error.field,
            "record": bad.raw,
        });
        if let Some(out) = self.out.as_mut() {
            // One write per line: a crash leaves whole lines (or one cut short at the end).
            out.write_all(format!("{line}\n").as_bytes())
                .with_context(|| format!("writing the rejects file {}", self.path.display()))?;
            self.dirty = true;
        }
        Ok(())
    }

    /// Makes what was written durable (before the messages are terminated).
    fn sync(&mut self) -> anyhow::Result<()> {
        if self.dirty
            && let Some(out) = self.out.as_mut()
        {
            out.sync_data()
                .with_context(|| format!("writing the rejects file {}", self.path.display()))?;
            self.dirty = false;
        }
        Ok(())
    }
}

/// The NATS address without a user or password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
        (None, Some(at)) => url[at + 1..].to_owned(),
        _ => url.to_owned(),
    }
}

/// The durable pull consumer: bound to if it exists (its acknowledgement wait and pending limit
/// brought up to date), created if not.
async fn bind(js: &jetstream::Context, o: &ConsumeOptions) -> anyhow::Result<PullConsumer> {
    let stream = js.get_stream(&o.stream).await.with_context(|| {
        format!(
            "no stream {} at {} (create it first, e.g. `nats stream add`)",
            o.stream,
            redacted(&o.nats)
        )
    })?;
    let want = pull::Config {
        durable_name: Some(o.durable.clone()),
        description: Some("mamori consume".into()),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: o.ack_wait,
        // The batch in hand and the next one; two consumers on the durable each get a batch.
        max_ack_pending: (2 * o.batch).try_into().unwrap_or(i64::MAX),
        filter_subject: o.subject.clone().unwrap_or_default(),
        ..Default::default()
    };
    let consumer: PullConsumer = stream
        .get_or_create_consumer(&o.durable, want.clone())
        .await
        .with_context(|| format!("binding to the durable consumer {}", o.durable))?;
    let have = &consumer.cached_info().config;
    if have.ack_policy != jetstream::consumer::AckPolicy::Explicit {
        bail!(
            "the consumer {} of stream {} exists with another acknowledgement policy ({:?}); \
             use another --durable",
            o.durable,
            o.stream,
            have.ack_policy
        );
    }
    if have.filter_subject != want.filter_subject {
        bail!(
            "the consumer {} of stream {} exists with the subject filter {:?}, not {:?}; use \
             another --durable (or delete it to start over)",
            o.durable,
            o.stream,
            have.filter_subject,
            want.filter_subject
        );
    }
    if have.ack_wait != want.ack_wait || have.max_ack_pending != want.max_ack_pending {
        // Creating a durable that exists with another configuration updates it (where the server
        // allows the change).
        match stream.create_consumer(want).await {
            Ok(c) => return Ok(c),
            Err(e) => tracing::warn!(
                durable = %o.durable,
                error = %e,
                "could not update the consumer's ack wait and pending limit; going on with its own"
            ),
        }
    }
    Ok(consumer)
}

/// Counts shown on the terminal and in the log.
struct Progress {
    bar: ProgressBar,
    terminal: bool,
    last_log: Instant,
    every: Duration,
    started: Instant,
}

impl Progress {
    fn new(o: &ConsumeOptions) -> Self {
        use std::io::IsTerminal;
        let terminal = o.progress && std::io::stderr().is_terminal();
        let bar = if terminal {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        } else {
            ProgressBar::hidden()
        };
        Progress {
            bar,
            terminal,
            last_log: Instant::now(),
            every: o.log_every,
            started: Instant::now(),
        }
    }

    fn update(&mut self, r: &ConsumeReport) {
        let rate = (r.stored + r.duplicates) as f64 / self.started.elapsed().as_secs_f64();
        if self.terminal {
            self.bar.set_message(format!(
                "{} messages: {} stored, {} duplicates, {} rejected ({rate:.0} events/s)",
                r.messages, r.stored, r.duplicates, r.rejected
            ));
        } else if self.last_log.elapsed() >= self.every {
            self.last_log = Instant::now();
            tracing::info!(
                messages = r.messages,
                stored = r.stored,
                duplicates = r.duplicates,
                rejected = r.rejected,
                events_per_second = rate.round() as u64,
                "consuming"
            );
        }
    }
}

/// Consumes until `stop` turns true (the batch in hand is finished and acknowledged first) or,
/// with [`ConsumeOptions::idle_exit`], until the durable has nothing more.
pub async fn consume<S: EventWriter>(
    store: &S,
    o: &ConsumeOptions,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<ConsumeReport> {
    let started = Instant::now();
    let batch = o.batch.max(1);
    let client = async_nats::ConnectOptions::new()
        .name("mamori consume")
        .connect(o.nats.as_str())
        .await
        .with_context(|| format!("cannot connect to NATS at {}", redacted(&o.nats)))?;
    let js = jetstream::new(client.clone());
    let mut consumer = bind(&js, o).await?;
    let mut rejects = Rejects::open(o.rejects.clone())?;
    let mut report = ConsumeReport::default();
    let mut progress = Progress::new(o);
    tracing::info!(
        stream = %o.stream,
        durable = %o.durable,
        batch,
        "started"
    );
    let mut last_arrival = Instant::now();
    let mut first_arrival = None;
    let mut last_done = None;
    let mut store_backoff = Duration::from_secs(1);
    let mut fetch_backoff = Duration::from_millis(200);
    let mut stopping = *stop.borrow();
    while !stopping {
        // Fetch a batch, or what arrives within FETCH_WAIT.
        let mut msgs: Vec<jetstream::Message> = Vec::with_capacity(batch);
        let mut failed = None;
        match consumer
            .batch()
            .max_messages(batch)
            .expires(FETCH_WAIT)
            .messages()
            .await
        {
            Ok(mut fetch) => loop {
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => {
                        // Finish what is in hand; what the server still sends for this pull is
                        // delivered again after the acknowledgement wait.
                        stopping = true;
                        break;
                    }
                    m = fetch.next() => match m {
                        Some(Ok(m)) => msgs.push(m),
                        Some(Err(e)) => {
                            failed = Some(e.to_string());
                            break;
                        }
                        None => break,
                    }
                }
            },
            Err(e) => failed = Some(e.to_string()),
        }
        if let Some(e) = failed
            && msgs.is_empty()
        {
            tracing::warn!(error = %e, "fetching from the stream failed; retrying");
            tokio::select! {
                _ = stop.wait_for(|s| *s) => stopping = true,
                _ = tokio::time::sleep(fetch_backoff) => {}
            }
            fetch_backoff = (fetch_backoff * 2).min(MAX_BACKOFF);
            // The consumer may have been deleted: bind again (created afresh if so).
            if let Ok(c) = bind(&js, o).await {
                consumer = c;
            }
            continue;
        }
        fetch_backoff = Duration::from_millis(200);
        if msgs.is_empty() {
            if let Some(idle) = o.idle_exit
                && last_arrival.elapsed() >= idle
            {
                // Messages a killed consumer held come back after the acknowledgement wait.
                match consumer.info().await {
                    Ok(info) if info.num_pending == 0 && info.num_ack_pending == 0 => break,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "asking the server about the consumer failed")
                    }
                }
            }
            progress.update(&report);
            continue;
        }
        last_arrival = Instant::now();
        first_arrival.get_or_insert(last_arrival);

        // Parse; bad records to the rejects file (durably) before their messages are terminated.
        let mut events = Vec::with_capacity(msgs.len());
        let mut good = Vec::with_capacity(msgs.len());
        let mut bad = Vec::new();
        let mut rejected = 0u64;
        for m in msgs {
            let parsed = parse_message(&m.payload);
            if !parsed.bad.is_empty() {
                let seq = m.info().ok().map(|i| i.stream_sequence);
                for b in &parsed.bad {
                    rejects.add(&o.stream, seq, m.subject.as_str(), b)?;
                    rejected += 1;
                }
            }
            if parsed.events.is_empty() {
                bad.push(m);
            } else {
                events.extend(parsed.events);
                good.push(m);
            }
        }
        rejects.sync()?;
        report.rejected += rejected;
        let terminated = acknowledge(&client, &bad, AckKind::Term, o.ack).await;
        report.messages += terminated;

        // Store, then acknowledge.
        match store.insert_events(&events).await {
            Ok(Inserted {
                inserted,
                duplicates,
            }) => {
                store_backoff = Duration::from_secs(1);
                report.stored += inserted;
                report.duplicates += duplicates;
                report.messages += acknowledge(&client, &good, AckKind::Ack, o.ack).await;
            }
            Err(e) => {
                // Not acknowledged: the server delivers them again after the pause.
                tracing::warn!(
                    error = %e,
                    retry_in_s = store_backoff.as_secs(),
                    "the store failed; the batch is not acknowledged and will be retried"
                );
                acknowledge(&client, &good, AckKind::Nak(Some(store_backoff)), o.ack).await;
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => stopping = true,
                    _ = tokio::time::sleep(store_backoff) => {}
                }
                store_backoff = (store_backoff * 2).min(MAX_BACKOFF);
            }
        }
        last_done = Some(Instant::now());
        progress.update(&report);
        stopping |= *stop.borrow();
    }
    progress.bar.finish_and_clear();
    if let Err(e) = client.flush().await {
        tracing::warn!(error = %e, "flushing the last acknowledgements failed");
    }
    report.elapsed = started.elapsed();
    report.busy = match (first_arrival, last_done) {
        (Some(a), Some(b)) => b.duration_since(a),
        _ => Duration::ZERO,
    };
    report.rejects_file = (rejects.count > 0).then_some(rejects.path);
    Ok(report)
}

/// Acknowledges messages with `kind`; returns how many the server confirmed (or, with
/// [`AckMode::Plain`], how many were sent). A lost acknowledgement only means the message is
/// delivered again, which the idempotent store absorbs.
async fn acknowledge(
    client: &async_nats::Client,
    msgs: &[jetstream::Message],
    kind: AckKind,
    mode: AckMode,
) -> u64 {
    if msgs.is_empty() {
        return 0;
    }
    let results: Vec<Result<(), String>> =
        match (mode, kind) {
            (AckMode::Double, AckKind::Ack | AckKind::Term) => {
                futures_util::future::join_all(msgs.iter().map(|m| async move {
                    m.double_ack_with(kind).await.map_err(|e| e.to_string())
                }))
                .await
            }
            _ => {
                let mut r = Vec::with_capacity(msgs.len());
                for m in msgs {
                    r.push(m.ack_with(kind).await.map_err(|e| e.to_string()));
                }
                if let Err(e) = client.flush().await {
                    tracing::warn!(error = %e, "flushing acknowledgements failed");
                }
                r
            }
        };
    let mut ok = 0;
    let mut first_error = None;
    for r in results {
        match r {
            Ok(()) => ok += 1,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        tracing::warn!(
            failed = msgs.len() as u64 - ok,
            error = %e,
            "acknowledgements failed; those messages will be delivered again (and found stored)"
        );
    }
    ok
}

/// Logs to standard error: JSON lines or text, `RUST_LOG` filtering (default info).
pub fn init_logs(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"event_id":"a1","occurred_at":"2020-09-16T22:25:00+09:00","customer_id":"c1","kind":"login","ip":"203.0.113.7"}"#;

    #[test]
    fn one_event_per_message_or_several_lines() {
        let p = parse_message(GOOD.as_bytes());
        assert_eq!((p.events.len(), p.bad.len()), (1, 0));
        let two = format!("{GOOD}\r\n\n{}\n", GOOD.replace("a1", "a2"));
        let p = parse_message(two.as_bytes());
        assert_eq!(p.events.len(), 2);
        assert_eq!(p.events[1].event_id, "a2");
    }

    #[test]
    fn bad_records_name_the_field_and_their_line() {
        let bad = GOOD.replace("203.0.113.7", "999.1.1.1");
        let p = parse_message(bad.as_bytes());
        assert_eq!(p.events.len(), 0);
        assert_eq!(p.bad[0].error.field, Some("ip"));
        assert_eq!(p.bad[0].line, None);
        assert_eq!(p.bad[0].raw, bad);
        let mixed = format!("{GOOD}\n{bad}");
        let p = parse_message(mixed.as_bytes());
        assert_eq!((p.events.len(), p.bad.len()), (1, 1));
        assert_eq!(p.bad[0].line, Some(2));
        for junk in [&b""[..], b" \n", b"\xff\xfe", b"{oops"] {
            let p = parse_message(junk);
            assert_eq!((p.events.len(), p.bad.len()), (0, 1), "{junk:?}");
        }
    }

    #[test]
    fn addresses_lose_their_password() {
        assert_eq!(
            redacted("nats://u:secret@10.0.0.1:4222"),
            "nats://10.0.0.1:4222"
        );
        assert_eq!(redacted("u:secret@host"), "host");
        assert_eq!(redacted("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }
}
