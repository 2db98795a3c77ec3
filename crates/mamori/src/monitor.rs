//! `mamori monitor` (the daily withdrawal batch) and `mamori evaluate --monitor`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;
use mamori_core::assess::{Decision, Policy};
use mamori_core::event::Kind;
use mamori_core::report::Format;
use mamori_core::time::{DAY_US, parse_bound};
use mamori_core::verdict::IpIntel;
use mamori_store::assess::{assess_period, monitor_period};

use crate::cli::{IntelArgs, emit, open_store};
use crate::demo::LabelRow;

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// One day (Asia/Tokyo), e.g. 2020-09-16.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub date: Option<String>,
    /// Start (inclusive): a date in Asia/Tokyo or RFC 3339.
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// End (exclusive).
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// Output format: table, csv, json or html.
    #[arg(long, default_value = "table")]
    pub format: Format,
    /// Write the report here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub intel: IntelArgs,
}

impl MonitorArgs {
    /// The period `[from, to)`.
    pub fn period(&self) -> anyhow::Result<(i64, i64)> {
        let p = |s: &str, flag: &str| parse_bound(s).map_err(|e| anyhow::anyhow!("{flag}: {e}"));
        let (from, to) = match (&self.date, &self.from, &self.to) {
            (Some(d), _, _) => {
                let from = p(d, "--date")?;
                (from, from + DAY_US)
            }
            (None, Some(f), Some(t)) => (p(f, "--from")?, p(t, "--to")?),
            _ => bail!("give --date DAY or --from and --to"),
        };
        if to <= from {
            bail!("--to must be after --from");
        }
        Ok((from, to))
    }
}

/// `mamori monitor`.
pub async fn monitor(
    db: &Path,
    a: &MonitorArgs,
    intel: &dyn IpIntel,
    policy: &Policy,
) -> anyhow::Result<()> {
    let (from, to) = a.period()?;
    if !crate::cli::store_exists(db) {
        bail!(
            "no store at {} (import events first, or pass --db)",
            crate::cli::shown(db)
        );
    }
    let store = open_store(db).await?;
    let rows = monitor_period(&store, from, to, intel, policy).await;
    store.close().await;
    emit(
        &a.out,
        &mamori_core::monitor::render(from, to, &rows?, a.format),
    )
}

/// What `evaluate --monitor` counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitorEvaluation {
    /// Per campaign: (style, fraudulent withdrawals, held or blocked).
    pub campaigns: BTreeMap<String, (String, u32, u32)>,
    pub honest_withdrawals: u32,
    pub honest_withdrawals_stopped: u32,
    pub honest_logins: u32,
    pub honest_logins_challenged: u32,
    /// The attackers' logins (no target: for the record).
    pub fraud_logins: u32,
    pub fraud_logins_challenged: u32,
    /// Destination changes by decision, honest and fraudulent (no target: for the record, as
    /// step-up builds on them).
    pub honest_changes: BTreeMap<Decision, u32>,
    pub fraud_changes: BTreeMap<Decision, u32>,
    /// Honest withdrawals per decision.
    pub honest_decisions: BTreeMap<Decision, u32>,
}

fn pct(a: u32, b: u32) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * f64::from(a) / f64::from(b)
    }
}

impl MonitorEvaluation {
    pub fn fraud(&self) -> (u32, u32) {
        self.campaigns
            .values()
            .fold((0, 0), |a, c| (a.0 + c.1, a.1 + c.2))
    }

    /// The targets: ≥ 99 % of fraudulent withdrawals held or blocked, ≤ 2 % of honest
    /// withdrawals held or blocked, ≤ 5 % of honest logins challenged.
    pub fn meets_targets(&self) -> bool {
        let (n, stopped) = self.fraud();
        f64::from(stopped) >= 0.99 * f64::from(n)
            && f64::from(self.honest_withdrawals_stopped)
                <= 0.02 * f64::from(self.honest_withdrawals)
            && f64::from(self.honest_logins_challenged) <= 0.05 * f64::from(self.honest_logins)
    }
}

impl std::fmt::Display for MonitorEvaluation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "campaign  style                         withdrawals  held/blocked"
        )?;
        for (c, (style, n, s)) in &self.campaigns {
            writeln!(
                f,
                "{c:<9} {style:<29} {n:>11} {s:>13}   {:.1}%",
                pct(*s, *n)
            )?;
        }
        let (n, s) = self.fraud();
        writeln!(
            f,
            "fraudulent withdrawals: {n}, held or blocked {s} ({:.1}%)",
            pct(s, n)
        )?;
        writeln!(
            f,
            "honest withdrawals: {}, held or blocked {} ({:.2}%); by decision: {}",
            self.honest_withdrawals,
            self.honest_withdrawals_stopped,
            pct(self.honest_withdrawals_stopped, self.honest_withdrawals),
            mamori_core::report::counts(&self.honest_decisions)
        )?;
        writeln!(
            f,
            "honest logins: {}, challenged or blocked {} ({:.2}%)",
            self.honest_logins,
            self.honest_logins_challenged,
            pct(self.honest_logins_challenged, self.honest_logins)
        )?;
        writeln!(
            f,
            "destination changes by decision: honest {}; fraudulent {}",
            mamori_core::report::counts(&self.honest_changes),
            mamori_core::report::counts(&self.fraud_changes)
        )?;
        writeln!(
            f,
            "attackers' logins: {}, challenged or blocked {} ({:.1}%)",
            self.fraud_logins,
            self.fraud_logins_challenged,
            pct(self.fraud_logins_challenged, self.fraud_logins)
        )?;
        write!(
            f,
            "targets (fraudulent withdrawals ≥ 99% held/blocked; honest withdrawals ≤ 2% held/blocked; honest logins ≤ 5% challenged): {}",
            if self.meets_targets() {
                "met"
            } else {
                "NOT met"
            }
        )
    }
}

/// Assesses every withdrawal and login of the period and scores the decisions against labels.
pub async fn evaluate_monitor(
    db: &Path,
    (from, to): (i64, i64),
    labels: &HashMap<String, LabelRow>,
    intel: &dyn IpIntel,
    policy: &Policy,
) -> anyhow::Result<MonitorEvaluation> {
    let store = open_store(db).await?;
    let mut ev = MonitorEvaluation::default();
    let r = async {
        assess_period(
            &store,
            Kind::Withdrawal,
            (from, to),
            intel,
            policy,
            |e, _, _| labels.get(&e.event_id).cloned(),
            |label, a| {
                let stopped = a.decision >= Decision::Hold;
                match label {
                    Some(l) => {
                        let c = ev.campaigns.entry(l.campaign).or_insert((l.style, 0, 0));
                        c.1 += 1;
                        c.2 += u32::from(stopped);
                    }
                    None => {
                        ev.honest_withdrawals += 1;
                        ev.honest_withdrawals_stopped += u32::from(stopped);
                        *ev.honest_decisions.entry(a.decision).or_default() += 1;
                    }
                }
            },
        )
        .await?;
        assess_period(
            &store,
            Kind::DestinationChange,
            (from, to),
            intel,
            policy,
            |e, _, _| labels.contains_key(&e.event_id),
            |fraud, a| {
                let m = if fraud {
                    &mut ev.fraud_changes
                } else {
                    &mut ev.honest_changes
                };
                *m.entry(a.decision).or_default() += 1;
            },
        )
        .await?;
        assess_period(
            &store,
            Kind::Login,
            (from, to),
            intel,
            policy,
            |e, _, _| labels.contains_key(&e.event_id),
            |fraud, a| {
                let challenged = u32::from(a.decision >= Decision::Challenge);
                if fraud {
                    ev.fraud_logins += 1;
                    ev.fraud_logins_challenged += challenged;
                } else {
                    ev.honest_logins += 1;
                    ev.honest_logins_challenged += challenged;
                }
            },
        )
        .await
    }
    .await;
    store.close().await;
    r?;
    Ok(ev)
}
