//! The command line.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use mamori_core::event::{Channel, Kind};
use mamori_core::history::{IpUse, Windows, device_hash, ip_activity, profile};
use mamori_core::investigate::{Investigation, Query};
use mamori_core::net::{ip_key, key_ip, parse_ip_or_net, prefix_key, prefix_net};
use mamori_core::report::{Format, render};
use mamori_core::time::{DAY_US, format_tokyo, parse_bound, parse_duration};
use mamori_core::verdict::{IpIntel, NoIntel};
use mamori_store::investigate::{investigate, pivot};
use mamori_store::{HistoryReader, Retention, Store};

use crate::import::{ImportOptions, Regroup, import};
use mamori_server::config::Config;

#[derive(serde::Serialize)]
struct ShowPolicy<'a> {
    policy: &'a mamori_core::assess::Policy,
}
use crate::source::InputFormat;

/// mamori (守り): account-takeover defence for online securities brokers.
#[derive(Debug, Parser)]
#[command(name = "mamori", version, about, long_about = None)]
pub struct Cli {
    /// The embedded store (SQLite file) [default: the configuration's `db`, else mamori.db].
    #[arg(long, global = true, env = "MAMORI_DB")]
    pub db: Option<PathBuf>,
    /// The configuration file [default: mamori.toml in the working folder, if there is one].
    #[arg(long, global = true, env = "MAMORI_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Import event files (JSON Lines or CSV by extension, .gz accepted, - for stdin).
    Import(ImportArgs),
    /// Consume events from a NATS JetStream stream into the store, exactly once across restarts.
    Consume(ConsumeArgs),
    /// Were the procedures of a period made by someone other than the customer?
    Investigate(InvestigateArgs),
    /// Every customer who used an IP or network, with their sensitive procedures.
    Pivot(PivotArgs),
    /// Point-in-time history of a customer: past IPs, networks, devices; who else used an IP.
    History(HistoryArgs),
    /// What the store holds.
    Stats,
    /// Delete events older than a retention period.
    Purge(PurgeArgs),
    /// Generate a synthetic broker's events with labelled takeover campaigns.
    Simulate(crate::demo::SimulateArgs),
    /// How many fraudulent and honest procedures the investigation flags, per campaign.
    Evaluate(crate::demo::EvaluateArgs),
    /// Simulate a broker, import it, investigate the seed's period and print the summary.
    Demo(crate::demo::DemoArgs),
    /// The daily batch: every withdrawal of a day or period, assessed as the API would have at
    /// its moment, with the seed's IP cross-check columns.
    Monitor(crate::monitor::MonitorArgs),
    /// The configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The HTTP API: real-time decisions, ingest, alerts, history, pivots (see /openapi.json).
    Serve(ServeArgs),
    /// API keys of the broker's systems.
    #[command(subcommand)]
    Apikey(ApikeyCommand),
    /// Load on a running server's POST /v1/assess, with its latency distribution.
    Loadtest(crate::loadtest::LoadtestArgs),
    /// Customers' records: import from CSV, show masked (or revealed with a reason, audited).
    #[command(subcommand)]
    Customers(crate::people::CustomersCommand),
    /// The tamper-evident audit log: verify, list.
    #[command(subcommand)]
    Audit(crate::people::AuditCommand),
    /// The emergency switch: move a procedure off the web or app to the support center.
    #[command(subcommand)]
    Switch(crate::people::SwitchCommand),
    /// The engine's policy shared by every node on the store: set a new revision, show it.
    #[command(subcommand)]
    Policy(crate::people::PolicyCommand),
    /// Notices to customers: sent, waiting, failing (with the last error) or given up.
    Notices(crate::people::NoticesArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port [default: the configuration's server.listen, 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<String>,
    #[command(flatten)]
    pub intel: IntelArgs,
}

#[derive(Debug, Subcommand)]
pub enum ApikeyCommand {
    /// Creates a key and prints it (once: only its hash is kept).
    Create {
        /// Who uses it, e.g. "web-frontend".
        #[arg(long)]
        name: String,
        /// Comma-separated: ingest, assess, read, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<mamori_core::case::Scope>,
        #[command(flatten)]
        who: crate::people::Who,
    },
    /// Lists keys (never the keys themselves).
    List,
    /// Revokes a key by its id (the part after mmr_).
    Revoke {
        key_id: String,
        #[command(flatten)]
        who: crate::people::Who,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validates the configuration (--config, or mamori.toml) and explains what is wrong.
    Check,
    /// Prints the policy in effect (defaults and the file's overrides) as TOML.
    Show,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Files to import; - reads standard input.
    #[arg(required = true)]
    pub files: Vec<String>,
    /// Stop with an error at the first bad record.
    #[arg(long)]
    pub strict: bool,
    /// Where bad records are written (JSON Lines with place, error and the record).
    #[arg(long, default_value = "mamori-rejects.jsonl")]
    pub rejects: PathBuf,
    /// Input format when the extension does not tell (jsonl or csv).
    #[arg(long)]
    pub format: Option<InputFormat>,
    /// Events per transaction: a killed import leaves whole transactions only.
    #[arg(long, default_value_t = 400_000)]
    pub batch: usize,
    /// Regroup the input by customer through temporary files beside the store before storing it:
    /// several times faster for large time-ordered logs. `auto` does it for inputs of 256 MiB or
    /// more whose first records are not grouped by customer.
    #[arg(long, value_enum, default_value_t = Regroup::Auto)]
    pub regroup: Regroup,
    /// Input bytes per regrouping bucket (for tests).
    #[arg(long, hide = true, default_value_t = 64 << 20)]
    pub regroup_bucket_bytes: u64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// The NATS server (user and password may be in the URL; they are never printed).
    #[arg(long, env = "MAMORI_NATS", default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// The JetStream stream holding the events (one event per message, JSON).
    #[arg(long)]
    pub stream: String,
    /// Only messages whose subject matches (NATS wildcards `*`, `>`) [default: all of the stream].
    #[arg(long)]
    pub subject: Option<String>,
    /// The durable consumer: created if missing, resumed where it stopped if it exists.
    /// Processes with the same durable share the stream's messages.
    #[arg(long, default_value = "mamori")]
    pub durable: String,
    /// Messages per fetch and per store transaction (the consumer's ack pending limit is twice
    /// this).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Stop when nothing arrived for this many seconds and the durable has nothing left
    /// (nothing undelivered, nothing unacknowledged), for batch use.
    #[arg(long, value_name = "SECONDS")]
    pub idle_exit: Option<u64>,
    /// Seconds the server waits for an acknowledgement before delivering a message again (after
    /// a crash, the messages in hand come back after this).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub ack_wait: u64,
    /// Where bad records are written (JSON Lines with the stream sequence, error and record;
    /// appended to).
    #[arg(long, default_value = "mamori-rejects.jsonl")]
    pub rejects: PathBuf,
    /// Seconds between progress lines in the log when standard error is not a terminal.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub log_every: u64,
    /// How to acknowledge: double (the server confirms) or plain (for measurements).
    #[arg(long, hide = true, value_enum, default_value_t = crate::consume::AckMode::Double)]
    pub ack: crate::consume::AckMode,
    /// No progress line on the terminal.
    #[arg(long)]
    pub quiet: bool,
}

/// IP data: ASN, country, VPN and hosting networks.
#[derive(Debug, Args, Clone, Default)]
pub struct IntelArgs {
    /// A folder laid out like shared/data (ipintel/*.csv, iplists/*.txt, mmdb/*.mmdb).
    #[arg(long, env = "MAMORI_IPDATA")]
    pub ipdata: Option<PathBuf>,
    /// MaxMind ASN database (GeoLite2-ASN / GeoIP2-ISP).
    #[arg(long)]
    pub asn_mmdb: Option<PathBuf>,
    /// MaxMind City database.
    #[arg(long)]
    pub city_mmdb: Option<PathBuf>,
    /// MaxMind Country database.
    #[arg(long)]
    pub country_mmdb: Option<PathBuf>,
    /// MaxMind Anonymous IP database.
    #[arg(long)]
    pub anonymous_mmdb: Option<PathBuf>,
    /// Range CSV start_ip,end_ip,asn,org (repeatable).
    #[arg(long)]
    pub asn_csv: Vec<PathBuf>,
    /// Range CSV start_ip,end_ip,country (repeatable).
    #[arg(long)]
    pub country_csv: Vec<PathBuf>,
    /// CIDR list of VPN networks (repeatable).
    #[arg(long)]
    pub vpn_list: Vec<PathBuf>,
    /// CIDR list of hosting/datacenter networks (repeatable).
    #[arg(long)]
    pub hosting_list: Vec<PathBuf>,
}

impl IntelArgs {
    /// Loads the IP data of the flags alone; none configured gives [`NoIntel`].
    pub fn load(&self) -> anyhow::Result<Box<dyn IpIntel>> {
        self.load_over(mamori_intel::IntelConfig::default())
    }

    /// Loads the IP data of the configuration file with the flags on top.
    pub fn load_over(&self, base: mamori_intel::IntelConfig) -> anyhow::Result<Box<dyn IpIntel>> {
        let mut cfg = base;
        if let Some(dir) = &self.ipdata {
            // A folder brings lists and CSVs only (from_dir picks up no MaxMind file).
            cfg.merge(mamori_intel::IntelConfig::from_dir(dir));
        }
        cfg.merge(mamori_intel::IntelConfig {
            asn_mmdb: self.asn_mmdb.clone(),
            city_mmdb: self.city_mmdb.clone(),
            country_mmdb: self.country_mmdb.clone(),
            anonymous_mmdb: self.anonymous_mmdb.clone(),
            asn_csv: self.asn_csv.clone(),
            country_csv: self.country_csv.clone(),
            vpn_lists: self.vpn_list.clone(),
            hosting_lists: self.hosting_list.clone(),
            verify_mmdb: false,
        });
        let intel = mamori_intel::Intel::load(&cfg).context("loading IP data")?;
        if intel.is_configured() {
            Ok(Box::new(intel))
        } else {
            Ok(Box::new(NoIntel))
        }
    }
}

fn parse_channels(s: &str) -> Result<Vec<Channel>, String> {
    s.split(',').map(|c| c.trim().parse::<Channel>()).collect()
}

#[derive(Debug, Args)]
pub struct InvestigateArgs {
    /// Kind of procedure.
    #[arg(long, default_value = "destination_change")]
    pub kind: Kind,
    /// Start (inclusive): a date in Asia/Tokyo or RFC 3339.
    #[arg(long)]
    pub from: String,
    /// End (exclusive): a date in Asia/Tokyo or RFC 3339.
    #[arg(long)]
    pub to: String,
    /// Channels, comma-separated.
    #[arg(long, default_value = "web,app", value_parser = parse_channels)]
    pub channel: std::vec::Vec<Channel>,
    /// Output format: table, csv, json or html.
    #[arg(long, default_value = "table")]
    pub format: Format,
    /// Write the report here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Investigate these log files directly, with no store.
    #[arg(long, num_args = 1..)]
    pub events: Vec<String>,
    /// Input format of --events files when the extension does not tell.
    #[arg(long)]
    pub input_format: Option<InputFormat>,
    /// How far back a customer's history reaches, in days.
    #[arg(long, default_value_t = 365)]
    pub history_days: i64,
    /// How far back "other customers on the IP" reaches, in days.
    #[arg(long, default_value_t = 30)]
    pub others_days: i64,
    #[command(flatten)]
    pub intel: IntelArgs,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl InvestigateArgs {
    pub fn query(&self) -> anyhow::Result<Query> {
        let from = parse_bound(&self.from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
        let to = parse_bound(&self.to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
        if to <= from {
            bail!("--to must be after --from");
        }
        if !(1..=3650).contains(&self.history_days) || !(1..=3650).contains(&self.others_days) {
            bail!("--history-days and --others-days must be between 1 and 3650");
        }
        let mut q = Query::new(self.kind, from, to);
        q.channels = self.channel.clone();
        q.windows.history = self.history_days * DAY_US;
        q.windows.others = self.others_days * DAY_US;
        Ok(q)
    }
}

#[derive(Debug, Args)]
pub struct PivotArgs {
    /// An IP address or a CIDR block.
    #[arg(long)]
    pub ip: String,
    /// Start (inclusive); default: 365 days before --to.
    #[arg(long)]
    pub from: Option<String>,
    /// End (exclusive); default: now.
    #[arg(long)]
    pub to: Option<String>,
    /// table or json.
    #[arg(long, default_value = "table")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[arg(long)]
    pub customer: String,
    /// The point in time (history strictly before it); default: now.
    #[arg(long)]
    pub at: Option<String>,
    /// An IP to ask about.
    #[arg(long)]
    pub ip: Option<std::net::IpAddr>,
    /// A device id to ask about.
    #[arg(long)]
    pub device: Option<String>,
    /// History window in days.
    #[arg(long, default_value_t = 365)]
    pub days: i64,
    /// Window for other customers on the IP, in days.
    #[arg(long, default_value_t = 30)]
    pub others_days: i64,
    #[command(flatten)]
    pub intel: IntelArgs,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Retention: events older than this are deleted (e.g. 400d).
    #[arg(long)]
    pub older_than: String,
    /// Reference time instead of now (RFC 3339 or date).
    #[arg(long)]
    pub now: Option<String>,
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn bound(s: &Option<String>, flag: &str, default: i64) -> anyhow::Result<i64> {
    match s {
        Some(s) => parse_bound(s).map_err(|e| anyhow::anyhow!("{flag}: {e}")),
        None => Ok(default),
    }
}

/// Writes to `--out` or standard output.
pub fn emit(out: &Option<PathBuf>, text: &str) -> anyhow::Result<()> {
    match out {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display())),
        None => {
            let mut o = std::io::stdout().lock();
            o.write_all(text.as_bytes())?;
            Ok(())
        }
    }
}

/// `--db` as messages show it (a PostgreSQL URL without its password).
pub fn shown(db: impl AsRef<Path>) -> String {
    Store::redacted(&db.as_ref().to_string_lossy())
}

/// Whether the store `--db` names is there: a SQLite file that exists, or any PostgreSQL URL
/// (opening it says whether it answers).
pub fn store_exists(db: impl AsRef<Path>) -> bool {
    let db = db.as_ref();
    Store::is_postgres(&db.to_string_lossy()) || db.exists()
}

/// Opens the store `--db` names: a SQLite file (the embedded default) or a PostgreSQL URL.
pub async fn open_store(db: &Path) -> anyhow::Result<Store> {
    Store::open(db)
        .await
        .with_context(|| format!("opening the store {}", shown(db)))
}

/// Runs an investigation from the store or, with `--events`, from files.
pub async fn run_investigation(
    db: &Path,
    a: &InvestigateArgs,
    intel: &dyn IpIntel,
) -> anyhow::Result<Investigation> {
    let q = a.query()?;
    if a.events.is_empty() {
        if !store_exists(db) {
            bail!(
                "no store at {} (import events first, pass --db, or use --events FILE…)",
                shown(db)
            );
        }
        let store = open_store(db).await?;
        let inv = investigate(&store, &q, intel).await?;
        store.close().await;
        Ok(inv)
    } else {
        let (inv, stats) =
            crate::files::investigate_files(&a.events, a.input_format, &q, intel, !a.quiet, 20)?;
        if stats.duplicates > 0 || stats.rejected > 0 {
            eprintln!(
                "read {} events ({} duplicates skipped, {} rejected)",
                stats.events, stats.duplicates, stats.rejected
            );
        }
        Ok(inv)
    }
}

/// Entry point of the binary.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let (config, config_path) = Config::discover(cli.config.as_deref())?;
    let db = cli
        .db
        .or_else(|| config.db.clone())
        .unwrap_or_else(|| PathBuf::from("mamori.db"));
    match cli.command {
        Command::Config(ConfigCommand::Check) => {
            // Loading the IP data finds missing and corrupt files.
            mamori_intel::Intel::load(&config.intel_config()).context("loading IP data")?;
            match &config_path {
                Some(p) => println!("{}: valid", p.display()),
                None => println!("no configuration file (mamori.toml): the defaults apply"),
            }
        }
        Command::Config(ConfigCommand::Show) => {
            print!(
                "{}",
                toml::to_string(&ShowPolicy {
                    policy: &config.policy
                })
                .context("printing the policy")?
            );
        }
        Command::Serve(a) => {
            let mut server = config.server.clone();
            if let Some(l) = a.listen {
                server.listen = l;
            }
            crate::serve::run(&db, server, &config, &a.intel).await?;
        }
        Command::Apikey(c) => crate::serve::apikey(&db, c).await?,
        Command::Customers(c) => crate::people::customers(&db, c).await?,
        Command::Audit(c) => crate::people::audit(&db, c).await?,
        Command::Switch(c) => crate::people::switch(&db, c).await?,
        Command::Policy(c) => crate::people::policy(&db, c, &config.policy).await?,
        Command::Notices(a) => crate::people::notices(&db, a).await?,
        Command::Loadtest(a) => crate::loadtest::run(&a).await?,
        Command::Monitor(a) => {
            let intel = a.intel.load_over(config.intel_config())?;
            crate::monitor::monitor(&db, &a, intel.as_ref(), &config.policy).await?;
        }
        Command::Import(a) => {
            let store = open_store(&db).await?;
            let opts = ImportOptions {
                batch: a.batch.max(1),
                strict: a.strict,
                rejects: a.rejects,
                format: a.format,
                progress: !a.quiet,
                regroup: a.regroup,
                regroup_dir: db.clone(),
                regroup_bucket_bytes: a.regroup_bucket_bytes,
                ..ImportOptions::default()
            };
            let report = import(&store, &a.files, &opts).await;
            store.close().await;
            let report = report?;
            eprintln!("{report}");
        }
        Command::Consume(a) => {
            crate::consume::init_logs(&config.server.log_format);
            if a.batch == 0 || a.ack_wait == 0 {
                bail!("--batch and --ack-wait must be at least 1");
            }
            let opts = crate::consume::ConsumeOptions {
                nats: a.nats,
                stream: a.stream,
                subject: a.subject,
                durable: a.durable,
                batch: a.batch,
                idle_exit: a.idle_exit.map(std::time::Duration::from_secs),
                ack_wait: std::time::Duration::from_secs(a.ack_wait),
                rejects: a.rejects,
                progress: !a.quiet,
                log_every: std::time::Duration::from_secs(a.log_every.max(1)),
                ack: a.ack,
            };
            let store = open_store(&db).await?;
            // Ctrl-C or SIGTERM: the batch in hand is stored and acknowledged, then the summary.
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let signals = tokio::spawn(async move {
                mamori_server::serve::signal().await;
                let _ = stop_tx.send(true);
                std::future::pending::<()>().await
            });
            let report = crate::consume::consume(&store, &opts, stop_rx).await;
            signals.abort();
            store.close().await;
            eprintln!("{}", report?);
        }
        Command::Investigate(a) => {
            let intel = a.intel.load()?;
            let inv = run_investigation(&db, &a, intel.as_ref()).await?;
            emit(&a.out, &render(&inv, a.format))?;
        }
        Command::Pivot(a) => {
            let net = parse_ip_or_net(&a.ip).map_err(|e| anyhow::anyhow!("--ip: {e}"))?;
            let to = bound(&a.to, "--to", now_us())?;
            let from = bound(&a.from, "--from", to - 365 * DAY_US)?;
            let store = open_store(&db).await?;
            let p = pivot(&store, net, from, to).await?;
            store.close().await;
            emit(&None, &crate::render::pivot(&p, a.format))?;
        }
        Command::History(a) => {
            let intel = a.intel.load()?;
            let at = bound(&a.at, "--at", now_us())?;
            let store = open_store(&db).await?;
            let text = history(&store, &a, at, intel.as_ref()).await;
            store.close().await;
            emit(&None, &text?)?;
        }
        Command::Purge(a) => {
            let age =
                parse_duration(&a.older_than).map_err(|e| anyhow::anyhow!("--older-than: {e}"))?;
            let now = bound(&a.now, "--now", now_us())?;
            let store = open_store(&db).await?;
            let n = store.purge_before(now - age).await;
            store.close().await;
            eprintln!(
                "purged {} events older than {}",
                n?,
                format_tokyo(now - age)
            );
        }
        Command::Stats => {
            if !store_exists(&db) {
                bail!("no store at {}", shown(&db));
            }
            let store = open_store(&db).await?;
            let n = store.count_events().await;
            store.close().await;
            println!("store: {}\nevents: {}", shown(&db), n?);
        }
        Command::Simulate(a) => crate::demo::simulate(&a)?,
        Command::Evaluate(a) => crate::demo::evaluate(&db, &a, &config).await?,
        Command::Demo(a) => crate::demo::demo(&a).await?,
    }
    Ok(())
}

async fn history(
    store: &Store,
    a: &HistoryArgs,
    at: i64,
    intel: &dyn IpIntel,
) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let w = Windows {
        history: a.days * DAY_US,
        others: a.others_days * DAY_US,
        ..Windows::default()
    };
    let acc: Vec<_> = store
        .customer_accesses(&[a.customer.as_str()], at - w.history, at)
        .await?
        .into_iter()
        .map(|(_, x)| x)
        .collect();
    let p = profile(at, &acc, &w);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "customer {} before {} ({} days): {} events",
        a.customer,
        format_tokyo(at),
        a.days,
        p.events
    );
    let seen_line = |label: &str, s: Option<&mamori_core::history::Seen>| -> String {
        match s {
            None => format!("  {label}: not seen\n"),
            Some(s) => format!(
                "  {label}: seen on {} days ({} events), first {}, last {}\n",
                s.days,
                s.events,
                format_tokyo(s.first),
                format_tokyo(s.last)
            ),
        }
    };
    if let Some(ip) = a.ip {
        let k = ip_key(ip);
        o += &seen_line(&format!("IP {ip}"), p.ips.get(&k));
        o += &seen_line(
            &format!("network {}", prefix_net(ip)),
            p.networks.get(&prefix_key(k)),
        );
        if let Some(asn) = intel.asn(ip) {
            let days: u32 = p
                .ips
                .iter()
                .filter(|(k, _)| intel.asn(key_ip(**k)) == Some(asn))
                .map(|(_, s)| s.days)
                .sum();
            let _ = writeln!(
                o,
                "  AS{asn}: {}",
                if days > 0 {
                    format!("seen (IP-days {days})")
                } else {
                    "not seen".into()
                }
            );
        }
        let (from, to) = (at - w.others, at);
        let uses = store.ip_uses(&[(k, from, to)]).await?;
        let inside: Vec<&IpUse<String>> = uses
            .iter()
            .filter(|(ip, u)| *ip == k && from <= u.at && u.at < to)
            .map(|(_, u)| u)
            .collect();
        let act = ip_activity(&a.customer, inside.iter().copied());
        let mut others: Vec<&str> = inside
            .iter()
            .map(|u| u.customer.as_str())
            .filter(|c| *c != a.customer)
            .collect();
        others.sort_unstable();
        others.dedup();
        let _ = writeln!(
            o,
            "  other customers on {ip} in the {} days before: {} {}",
            a.others_days,
            act.other_customers,
            if others.is_empty() {
                String::new()
            } else {
                format!(
                    "({}{})",
                    others
                        .iter()
                        .take(20)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", "),
                    if others.len() > 20 { ", …" } else { "" }
                )
            }
        );
        let _ = writeln!(
            o,
            "  failed logins from {ip}: {} on {} accounts",
            act.failed_logins, act.failed_login_accounts
        );
    }
    if let Some(d) = &a.device {
        o += &seen_line(&format!("device {d}"), p.devices.get(&device_hash(d)));
    }
    let mut ips: Vec<_> = p.ips.iter().collect();
    ips.sort_by(|x, y| y.1.days.cmp(&x.1.days).then(x.0.cmp(y.0)));
    let _ = writeln!(o, "  IPs ({}):", ips.len());
    for (k, s) in ips.iter().take(20) {
        let ip = key_ip(**k);
        let facts = intel.facts(ip);
        let _ = writeln!(
            o,
            "    {:<39} days {:>3}  events {:>4}  first {}  last {}{}",
            ip.to_string(),
            s.days,
            s.events,
            format_tokyo(s.first),
            format_tokyo(s.last),
            facts.asn.map(|a| format!("  AS{a}")).unwrap_or_default()
        );
    }
    let _ = writeln!(
        o,
        "  networks: {}   devices: {}",
        p.networks.len(),
        p.devices.len()
    );
    Ok(o)
}
