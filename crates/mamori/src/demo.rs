//! `simulate`, `evaluate` and `demo`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use mamori_core::event::Channel;
use mamori_core::investigate::Investigation;
use mamori_core::report::{Format, render};
use mamori_core::time::parse_bound;
use mamori_core::verdict::{IpIntel, Verdict};
use mamori_sim::{IpPools, Label, SimConfig, simulate as sim_run};

use crate::cli::{IntelArgs, InvestigateArgs, emit, run_investigation};

/// The evaluated period: the simulation's last four months, after a year of history.
pub const EVAL_FROM: &str = "2020-06-01";
pub const EVAL_TO: &str = "2020-10-01";

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Number of customers.
    #[arg(long, default_value_t = 10_000)]
    pub customers: u32,
    /// Random seed: the same seed gives the same broker, byte for byte.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Events (JSON Lines).
    #[arg(long, default_value = "events.jsonl")]
    pub out: PathBuf,
    /// Labels of the attackers' events (CSV: event_id,campaign,style).
    #[arg(long, default_value = "labels.csv")]
    pub labels: PathBuf,
    /// Take ISP, carrier, hosting and VPN ranges from this IP data folder (like shared/data).
    #[arg(long, env = "MAMORI_IPDATA")]
    pub ipdata: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Labels written by `mamori simulate`.
    #[arg(long, default_value = "labels.csv")]
    pub labels: PathBuf,
    /// Evaluate from these event files instead of the store.
    #[arg(long, num_args = 1..)]
    pub events: Vec<String>,
    /// Start of the evaluated period (after a year of simulated history).
    #[arg(long, default_value = EVAL_FROM)]
    pub from: String,
    /// End of the evaluated period.
    #[arg(long, default_value = EVAL_TO)]
    pub to: String,
    /// Evaluate the real-time decisions instead: every withdrawal and login of the period
    /// assessed as the API would have (fraudulent withdrawals held or blocked, honest ones held
    /// or blocked, honest logins challenged).
    #[arg(long)]
    pub monitor: bool,
    #[command(flatten)]
    pub intel: IntelArgs,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of simulated customers.
    #[arg(long, default_value_t = 20_000)]
    pub customers: u32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Working folder for events, labels, the store and the report.
    #[arg(long, default_value = "mamori-demo")]
    pub dir: PathBuf,
    /// Then serve the HTTP API on the demo store (with a new API key) until Ctrl-C.
    #[arg(long)]
    pub serve: bool,
    /// Where --serve listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    #[command(flatten)]
    pub intel: IntelArgs,
}

/// IP pools for the simulator from IP data: real Japanese ISP and carrier ranges, hosting and VPN
/// networks, and foreign eyeball ISPs.
pub fn pools_from_ipdata(dir: &Path) -> anyhow::Result<IpPools> {
    let intel = mamori_intel::Intel::load(&mamori_intel::IntelConfig::from_dir(dir))
        .context("loading IP data for the simulator")?;
    let by = |asns: &[u32]| -> Vec<(u32, Vec<(std::net::Ipv4Addr, std::net::Ipv4Addr)>)> {
        asns.iter()
            .map(|&a| (a, intel.ipv4_ranges_of_asn(a)))
            .filter(|(_, r)| !r.is_empty())
            .collect()
    };
    let flatten = |v: Vec<(u32, Vec<(std::net::Ipv4Addr, std::net::Ipv4Addr)>)>| {
        v.into_iter().flat_map(|(_, r)| r).collect::<Vec<_>>()
    };
    let pools = IpPools {
        // NTT OCN, KDDI, SoftBank, So-net, OPTAGE, Chubu Telecom.
        residential: by(&[4713, 2516, 17676, 2527, 17511, 18126]),
        // NTT docomo, Rakuten Mobile (KDDI and SoftBank carry mobile too).
        mobile: by(&[9605, 138384, 2516, 17676]),
        hosting: intel.list_ranges_v4(mamori_intel::ListKind::Hosting),
        vpn: intel.list_ranges_v4(mamori_intel::ListKind::Vpn),
        // Comcast (US), Korea Telecom, Chunghwa HiNet (TW), Chinanet.
        foreign: flatten(by(&[7922, 4766, 3462, 4134])),
    };
    if pools.residential.is_empty() || pools.mobile.is_empty() {
        bail!(
            "{}: the ASN tables hold no Japanese ISP ranges",
            dir.display()
        );
    }
    Ok(pools)
}

/// Writes a simulated broker to files.
pub fn simulate(a: &SimulateArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut cfg = SimConfig::new(a.customers, a.seed);
    if let Some(dir) = &a.ipdata {
        cfg.ip_pools = Some(pools_from_ipdata(dir)?);
    }
    let stats = write_simulation(&cfg, &a.out, &a.labels)?;
    eprintln!(
        "simulated {} customers: {} events ({} by attackers in {} campaigns) in {:.1} s → {}, {}",
        stats.customers,
        stats.events,
        stats.fraud_events,
        stats.campaigns,
        started.elapsed().as_secs_f64(),
        a.out.display(),
        a.labels.display()
    );
    Ok(())
}

fn write_simulation(
    cfg: &SimConfig,
    out: &Path,
    labels: &Path,
) -> anyhow::Result<mamori_sim::SimStats> {
    let mut ev = BufWriter::with_capacity(
        1 << 20,
        File::create(out).with_context(|| format!("creating {}", out.display()))?,
    );
    let mut lab = csv::Writer::from_writer(BufWriter::new(
        File::create(labels).with_context(|| format!("creating {}", labels.display()))?,
    ));
    lab.write_record(["event_id", "campaign", "style"])?;
    let mut line = Vec::with_capacity(1024);
    let stats = sim_run(
        cfg,
        &mut |e| {
            line.clear();
            mamori_sim::write_event_json(e, &mut line);
            line.push(b'\n');
            ev.write_all(&line)
        },
        &mut |l: &Label| {
            lab.write_record([l.event_id.as_str(), l.campaign.as_str(), l.style.as_str()])
                .map_err(std::io::Error::other)
        },
    )
    .context("writing the simulation")?;
    ev.flush()?;
    lab.flush()?;
    Ok(stats)
}

/// A label row.
#[derive(Debug, Clone)]
pub struct LabelRow {
    pub campaign: String,
    pub style: String,
}

/// Reads labels written by `mamori simulate`.
pub fn read_labels(path: &Path) -> anyhow::Result<HashMap<String, LabelRow>> {
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = HashMap::new();
    for (i, rec) in r.records().enumerate() {
        let rec = rec.with_context(|| format!("{}:{}", path.display(), i + 2))?;
        let (Some(id), Some(c), Some(s)) = (rec.get(0), rec.get(1), rec.get(2)) else {
            bail!(
                "{}:{}: expected event_id,campaign,style",
                path.display(),
                i + 2
            );
        };
        out.insert(
            id.to_owned(),
            LabelRow {
                campaign: c.to_owned(),
                style: s.to_owned(),
            },
        );
    }
    Ok(out)
}

/// The evaluation's figures.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    /// Per campaign: (style, fraudulent procedures, not ok, suspicious).
    pub campaigns: BTreeMap<String, (String, u32, u32, u32)>,
    pub honest: u32,
    pub honest_not_ok: u32,
    pub honest_suspicious: u32,
}

impl Evaluation {
    pub fn fraud(&self) -> (u32, u32, u32) {
        self.campaigns
            .values()
            .fold((0, 0, 0), |a, c| (a.0 + c.1, a.1 + c.2, a.2 + c.3))
    }

    /// Per style: (fraudulent, not ok, suspicious).
    pub fn styles(&self) -> BTreeMap<&str, (u32, u32, u32)> {
        let mut m: BTreeMap<&str, (u32, u32, u32)> = BTreeMap::new();
        for (style, n, f, s) in self.campaigns.values() {
            let e = m.entry(style.as_str()).or_default();
            *e = (e.0 + n, e.1 + f, e.2 + s);
        }
        m
    }

    /// Whether the issue's targets hold: ≥ 95 % of each style's fraud not ok, ≤ 10 % of honest
    /// procedures not ok and ≤ 1 % suspicious.
    pub fn meets_targets(&self) -> bool {
        let styles_ok = self
            .styles()
            .values()
            .all(|(n, f, _)| *n == 0 || *f as f64 >= 0.95 * *n as f64);
        styles_ok
            && self.honest_not_ok as f64 <= 0.10 * self.honest as f64
            && self.honest_suspicious as f64 <= 0.01 * self.honest as f64
    }
}

fn pct(a: u32, b: u32) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * a as f64 / b as f64)
    }
}

impl std::fmt::Display for Evaluation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "campaign  style                         fraudulent  flagged  suspicious"
        )?;
        for (c, (style, n, fl, s)) in &self.campaigns {
            writeln!(
                f,
                "{c:<9} {style:<29} {n:>10} {fl:>8} {s:>11}   {}",
                pct(*fl, *n)
            )?;
        }
        writeln!(f, "\nper style:")?;
        for (style, (n, fl, s)) in self.styles() {
            writeln!(
                f,
                "  {style:<29} {n:>6} fraudulent, flagged {fl} ({}), suspicious {s}",
                pct(fl, n)
            )?;
        }
        let (n, fl, s) = self.fraud();
        writeln!(
            f,
            "fraudulent destination changes: {n}, flagged (not ok) {fl} ({}), suspicious {s} ({})",
            pct(fl, n),
            pct(s, n)
        )?;
        writeln!(
            f,
            "honest web/app destination changes: {}, not ok {} ({}), suspicious {} ({})",
            self.honest,
            self.honest_not_ok,
            pct(self.honest_not_ok, self.honest),
            self.honest_suspicious,
            pct(self.honest_suspicious, self.honest)
        )?;
        write!(
            f,
            "targets (each style ≥ 95% flagged; honest ≤ 10% not ok, ≤ 1% suspicious): {}",
            if self.meets_targets() {
                "met"
            } else {
                "NOT met"
            }
        )
    }
}

/// Scores an investigation against labels.
fn score(inv: &Investigation, labels: &HashMap<String, LabelRow>) -> Evaluation {
    let mut ev = Evaluation::default();
    for l in labels.values() {
        ev.campaigns
            .entry(l.campaign.clone())
            .or_insert_with(|| (l.style.clone(), 0, 0, 0));
    }
    for r in &inv.rows {
        let v = r.judgement.verdict;
        match labels.get(&r.procedure.event_id) {
            Some(l) => {
                let e = ev
                    .campaigns
                    .entry(l.campaign.clone())
                    .or_insert_with(|| (l.style.clone(), 0, 0, 0));
                e.1 += 1;
                e.2 += u32::from(v != Verdict::Ok);
                e.3 += u32::from(v == Verdict::Suspicious);
            }
            None => {
                ev.honest += 1;
                ev.honest_not_ok += u32::from(v != Verdict::Ok);
                ev.honest_suspicious += u32::from(v == Verdict::Suspicious);
            }
        }
    }
    // Campaigns with no destination change in the period are not part of the score.
    ev.campaigns.retain(|_, c| c.1 > 0);
    ev
}

fn investigate_args(from: &str, to: &str, events: Vec<String>) -> InvestigateArgs {
    InvestigateArgs {
        kind: mamori_core::event::Kind::DestinationChange,
        from: from.into(),
        to: to.into(),
        channel: vec![Channel::Web, Channel::App],
        format: Format::Table,
        out: None,
        events,
        input_format: None,
        history_days: 365,
        others_days: 30,
        intel: IntelArgs::default(),
        quiet: true,
    }
}

/// `mamori evaluate`.
pub async fn evaluate(
    db: &Path,
    a: &EvaluateArgs,
    config: &mamori_server::config::Config,
) -> anyhow::Result<()> {
    let from = parse_bound(&a.from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let to = parse_bound(&a.to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let labels = read_labels(&a.labels)?;
    let intel = a.intel.load_over(config.intel_config())?;
    if a.monitor {
        if !a.events.is_empty() {
            bail!("--monitor reads the store; import the events first");
        }
        let ev = crate::monitor::evaluate_monitor(
            db,
            (from, to),
            &labels,
            intel.as_ref(),
            &config.policy,
        )
        .await?;
        println!("{ev}");
        return Ok(());
    }
    let inv = run_investigation(
        db,
        &investigate_args(&a.from, &a.to, a.events.clone()),
        intel.as_ref(),
    )
    .await?;
    println!("{}", score(&inv, &labels));
    Ok(())
}

/// `mamori demo`.
pub async fn demo(a: &DemoArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let events = a.dir.join("events.jsonl");
    let labels = a.dir.join("labels.csv");
    let db = a.dir.join("mamori.db");
    for f in [
        &db,
        &a.dir.join("mamori.db-wal"),
        &a.dir.join("mamori.db-shm"),
    ] {
        if f.exists() {
            std::fs::remove_file(f).with_context(|| format!("removing {}", f.display()))?;
        }
    }
    println!(
        "mamori demo: a simulated broker with {} customers (seed {})",
        a.customers, a.seed
    );
    let t = Instant::now();
    let mut cfg = SimConfig::new(a.customers, a.seed);
    if let Some(dir) = &a.intel.ipdata {
        cfg.ip_pools = Some(pools_from_ipdata(dir)?);
    }
    let stats = write_simulation(&cfg, &events, &labels)?;
    println!(
        "1. simulated {} events ({} by attackers in {} campaigns) in {:.1} s → {}",
        stats.events,
        stats.fraud_events,
        stats.campaigns,
        t.elapsed().as_secs_f64(),
        events.display()
    );
    let store = crate::cli::open_store(&db).await?;
    let opts = crate::import::ImportOptions {
        rejects: a.dir.join("rejects.jsonl"),
        ..Default::default()
    };
    let report = crate::import::import(&store, &[events.display().to_string()], &opts).await?;
    store.close().await;
    println!("2. {report} → {}", crate::cli::shown(&db));
    let intel: Box<dyn IpIntel> = a.intel.load()?;
    let t = Instant::now();
    let args = investigate_args("2020-07-01", "2020-09-17", Vec::new());
    let inv = run_investigation(&db, &args, intel.as_ref()).await?;
    let html = a.dir.join("report.html");
    emit(&Some(html.clone()), &render(&inv, Format::Html))?;
    println!(
        "3. investigated the seed's period in {:.2} s (HTML report: {})\n",
        t.elapsed().as_secs_f64(),
        html.display()
    );
    let table = render(&inv, Format::Table);
    let summary = table.split("\n\n").next().unwrap_or("");
    println!("{summary}\n");
    let labels_map = read_labels(&labels)?;
    let eval_args = investigate_args(EVAL_FROM, EVAL_TO, Vec::new());
    let eval = run_investigation(&db, &eval_args, intel.as_ref()).await?;
    println!(
        "4. evaluation against the simulator's labels ({EVAL_FROM} to {EVAL_TO}, after a year of history):"
    );
    println!("{}", score(&eval, &labels_map));

    // The real-time engine: the daily batch of the seed's day, and the decisions on every
    // withdrawal and login of the evaluated period.
    let policy = mamori_core::assess::Policy::default();
    let t = Instant::now();
    let (day, next) = (
        parse_bound("2020-09-16").map_err(anyhow::Error::msg)?,
        parse_bound("2020-09-17").map_err(anyhow::Error::msg)?,
    );
    let store = crate::cli::open_store(&db).await?;
    let rows =
        mamori_store::assess::monitor_period(&store, day, next, intel.as_ref(), &policy).await;
    store.close().await;
    let rows = rows?;
    let monitor_html = a.dir.join("monitor-2020-09-16.html");
    emit(
        &Some(monitor_html.clone()),
        &mamori_core::monitor::render(day, next, &rows, Format::Html),
    )?;
    let text = mamori_core::monitor::render(day, next, &rows, Format::Table);
    println!(
        "\n5. the daily withdrawal batch of 2020-09-16 in {:.2} s (HTML: {}):\n{}",
        t.elapsed().as_secs_f64(),
        monitor_html.display(),
        text.split("\n\n").next().unwrap_or("")
    );
    let t = Instant::now();
    let ev = crate::monitor::evaluate_monitor(
        &db,
        (
            parse_bound(EVAL_FROM).map_err(anyhow::Error::msg)?,
            parse_bound(EVAL_TO).map_err(anyhow::Error::msg)?,
        ),
        &labels_map,
        intel.as_ref(),
        &policy,
    )
    .await?;
    println!(
        "6. real-time decisions on every withdrawal and login ({EVAL_FROM} to {EVAL_TO}), in {:.1} s:\n{ev}",
        t.elapsed().as_secs_f64()
    );
    if a.serve {
        return serve_demo(&db, a).await;
    }
    println!(
        "\nNext: mamori --db {} pivot --ip <IP from the summary> --from 2020-06-01 --to 2020-10-01",
        crate::cli::shown(&db)
    );
    println!(
        "      mamori demo --serve   (the same, then the HTTP API on {})",
        a.listen
    );
    Ok(())
}

/// Creates an API key on the demo store, prints how to call the API and serves until Ctrl-C.
async fn serve_demo(db: &Path, a: &DemoArgs) -> anyhow::Result<()> {
    use mamori_core::case::Scope;
    use mamori_store::ApiKeys;
    let store = crate::cli::open_store(db).await?;
    let (key, token, hash) = mamori_server::auth::generate(
        "demo",
        vec![Scope::Ingest, Scope::Assess, Scope::Read, Scope::Admin],
        mamori_server::app::now_us(),
    );
    let r = store.create_key(&key, &hash).await;
    store.close().await;
    r?;
    let base = format!("http://{}", a.listen);
    let h = format!("-H 'authorization: Bearer {token}' -H 'content-type: application/json'");
    let change = r#"{"event_id":"try-1","customer_id":"C0000002","kind":"destination_change","channel":"web","occurred_at":"2020-09-16T22:05:00+09:00","ip":"203.0.113.66","device_id":"evil-pc"}"#;
    let withdrawal = r#"{"event_id":"try-2","customer_id":"C0000002","kind":"withdrawal","channel":"web","occurred_at":"2020-09-16T22:10:00+09:00","ip":"203.0.113.66","device_id":"evil-pc","amount":3000000}"#;
    println!(
        "\n7. serving the HTTP API on {base} (Ctrl-C stops it). API key (all scopes): {token}\n\
         A stranger changes C0000002's withdrawal destination (challenged), passes the challenge,\n\
         then withdraws from the same address (held, with an alert):\n\
         \x20 ID=$(curl -s {base}/v1/assess {h} -d '{change}' | sed 's/.*\"assessment_id\":\"\\([^\"]*\\)\".*/\\1/')\n\
         \x20 curl -s {base}/v1/assessments/$ID/outcome {h} -d '{{\"outcome\":\"challenge_passed\"}}'\n\
         \x20 curl -s {base}/v1/assess {h} -d '{withdrawal}'\n\
         \x20 curl -s '{base}/v1/alerts?status=open' {h}\n\
         \x20 curl -s {base}/openapi.json"
    );
    let config = mamori_server::config::Config::default();
    let server = mamori_server::config::Server {
        listen: a.listen.clone(),
        log_format: "text".into(),
        ..config.server.clone()
    };
    crate::serve::run(db, server, &config, &a.intel).await
}
