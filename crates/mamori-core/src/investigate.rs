//! Retrospective investigations: which procedures of a period were made by someone else?

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use serde::Serialize;

use crate::event::{Channel, Event, Kind};
use crate::history::{Access, IpActivity, Literal, Windows, device_hash, literal};
use crate::net::ip_key;
use crate::parse::EventView;
use crate::verdict::{IpIntel, Judgement, Policy, Subject, Verdict, judge};

/// What to investigate.
#[derive(Debug, Clone)]
pub struct Query {
    pub kind: Kind,
    /// Inclusive start, UTC µs.
    pub from: i64,
    /// Exclusive end, UTC µs.
    pub to: i64,
    pub channels: Vec<Channel>,
    pub windows: Windows,
    pub policy: Policy,
}

impl Query {
    /// A query with the default channels (web, app), windows and policy.
    pub fn new(kind: Kind, from: i64, to: i64) -> Self {
        Query {
            kind,
            from,
            to,
            channels: vec![Channel::Web, Channel::App],
            windows: Windows::default(),
            policy: Policy::default(),
        }
    }

    /// Whether an event is one of the procedures under investigation.
    pub fn selects(&self, kind: Kind, channel: Channel, at: i64) -> bool {
        kind == self.kind && self.channels.contains(&channel) && self.from <= at && at < self.to
    }
}

/// A procedure under investigation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Procedure {
    pub event_id: String,
    pub customer_id: String,
    pub occurred_at: i64,
    pub channel: Channel,
    pub ip: Option<IpAddr>,
    /// [`device_hash`] of the device id, when there is one.
    pub device: Option<u64>,
}

impl From<&Event> for Procedure {
    fn from(e: &Event) -> Self {
        Procedure::from(&EventView::of(e))
    }
}

impl From<&EventView<'_>> for Procedure {
    fn from(e: &EventView<'_>) -> Self {
        Procedure {
            event_id: e.event_id.to_owned(),
            customer_id: e.customer_id.to_owned(),
            occurred_at: e.occurred_at,
            channel: e.channel,
            ip: e.ip,
            device: e.device_id.map(device_hash),
        }
    }
}

/// One row of the investigation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub procedure: Procedure,
    pub literal: Literal,
    pub judgement: Judgement,
}

/// Judges one procedure from the customer's accesses and the activity on its IP.
pub fn build_row(
    procedure: Procedure,
    accesses: &[Access],
    activity: &IpActivity,
    intel: &dyn IpIntel,
    q: &Query,
) -> Row {
    let t = procedure.occurred_at;
    let key = procedure.ip.map(ip_key);
    let lit = literal(t, key, accesses, activity.other_customers, &q.windows);
    let subject = Subject {
        at: t,
        ip: procedure.ip,
        device: procedure.device,
    };
    let judgement = judge(&subject, accesses, activity, intel, &q.windows, &q.policy);
    Row {
        procedure,
        literal: lit,
        judgement,
    }
}

/// Sorts rows into the report order: time, then event id, then customer.
pub fn sort_rows(rows: &mut [Row]) {
    fn key(r: &Row) -> (i64, &str, &str) {
        let p = &r.procedure;
        (p.occurred_at, &p.event_id, &p.customer_id)
    }
    rows.sort_by(|a, b| key(a).cmp(&key(b)));
}

/// One IP in the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpSummary {
    pub ip: String,
    pub procedures: u32,
    pub customers: u32,
    pub suspicious: u32,
    pub review: u32,
    /// Most other customers seen on the IP in the 30 days before one of its procedures.
    pub max_other_customers_30d: u32,
    pub asn: Option<u32>,
    pub org: Option<String>,
    pub country: Option<String>,
}

/// The summary printed before the rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub kind: Kind,
    pub from: String,
    pub to: String,
    pub channels: Vec<Channel>,
    pub procedures: u32,
    pub unique_ips: u32,
    pub unique_customers: u32,
    pub verdicts: BTreeMap<&'static str, u32>,
    /// Procedure IPs on which two or more customers made procedures in the period.
    pub ips_used_by_several_customers: Vec<IpSummary>,
    /// IPs with suspicious or review procedures, worst first (at most 20).
    pub top_suspicious_ips: Vec<IpSummary>,
    /// Reason codes and how many rows carry each.
    pub reasons: BTreeMap<&'static str, u32>,
}

/// Summarises rows (in any order).
pub fn summarize(q: &Query, rows: &[Row]) -> Summary {
    let mut verdicts: BTreeMap<&'static str, u32> =
        Verdict::ALL.iter().map(|v| (v.as_str(), 0)).collect();
    let mut reasons = BTreeMap::new();
    let mut customers = HashSet::new();
    struct Acc<'a> {
        s: IpSummary,
        customers: HashSet<&'a str>,
    }
    let mut ips: HashMap<IpAddr, Acc<'_>> = HashMap::new();
    for r in rows {
        *verdicts.entry(r.judgement.verdict.as_str()).or_default() += 1;
        for code in &r.judgement.reasons {
            *reasons.entry(*code).or_default() += 1;
        }
        customers.insert(r.procedure.customer_id.as_str());
        let Some(ip) = r.procedure.ip else { continue };
        let acc = ips.entry(ip).or_insert_with(|| Acc {
            s: IpSummary {
                ip: ip.to_string(),
                procedures: 0,
                customers: 0,
                suspicious: 0,
                review: 0,
                max_other_customers_30d: 0,
                asn: r.judgement.facts.asn,
                org: r.judgement.facts.org.clone(),
                country: r.judgement.facts.country.clone(),
            },
            customers: HashSet::new(),
        });
        acc.s.procedures += 1;
        acc.customers.insert(r.procedure.customer_id.as_str());
        match r.judgement.verdict {
            Verdict::Suspicious => acc.s.suspicious += 1,
            Verdict::Review => acc.s.review += 1,
            Verdict::Ok => {}
        }
        acc.s.max_other_customers_30d = acc
            .s
            .max_other_customers_30d
            .max(r.literal.other_customers_30d);
    }
    let mut all: Vec<IpSummary> = ips
        .into_values()
        .map(|mut a| {
            a.s.customers = a.customers.len() as u32;
            a.s
        })
        .collect();
    all.sort_by(|a, b| {
        (b.suspicious, b.review, b.customers, b.procedures, &a.ip).cmp(&(
            a.suspicious,
            a.review,
            a.customers,
            a.procedures,
            &b.ip,
        ))
    });
    let mut several: Vec<IpSummary> = all.iter().filter(|s| s.customers >= 2).cloned().collect();
    several.sort_by(|a, b| (b.customers, &a.ip).cmp(&(a.customers, &b.ip)));
    let top = all
        .iter()
        .filter(|s| s.suspicious + s.review > 0)
        .take(20)
        .cloned()
        .collect();
    Summary {
        kind: q.kind,
        from: crate::time::format_tokyo(q.from),
        to: crate::time::format_tokyo(q.to),
        channels: q.channels.clone(),
        procedures: rows.len() as u32,
        unique_ips: all.len() as u32,
        unique_customers: customers.len() as u32,
        verdicts,
        ips_used_by_several_customers: several,
        top_suspicious_ips: top,
        reasons,
    }
}

/// A finished investigation: summary and rows in report order.
#[derive(Debug, Clone)]
pub struct Investigation {
    pub summary: Summary,
    pub rows: Vec<Row>,
}

impl Investigation {
    /// Sorts the rows and summarises them.
    pub fn new(q: &Query, mut rows: Vec<Row>) -> Self {
        sort_rows(&mut rows);
        Investigation {
            summary: summarize(q, &rows),
            rows,
        }
    }
}
