//! The daily withdrawal report: the seed's standing cross-check of each withdrawal's IP, its
//! destination change's IP and the customer's past IPs, as literal columns an auditor recomputes
//! with SQL, beside the decision the engine gives at the withdrawal's moment.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::json;

use crate::assess::{Assessment, Decision};
use crate::event::{Event, Kind};
use crate::report::{Format, csv_text, esc, html_foot, html_head, text_table};
use crate::time::{DAY_US, format_tokyo};

/// The literal columns of a withdrawal.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Columns {
    /// The linked destination change: the customer's latest `destination_change` with
    /// `t − link_days ≤ occurred_at < t` (ties: the greatest `event_id`).
    pub destination_change_event_id: Option<String>,
    /// The withdrawal's IP occurs in the customer's history before the baseline b (the linked
    /// change's time, or t). Empty when the withdrawal has no IP.
    pub withdrawal_ip_seen_before: Option<bool>,
    /// The change's IP occurs in the customer's history before the change. Empty when there is
    /// no linked change or it has no IP.
    pub destination_change_ip_seen_before: Option<bool>,
    /// The two IPs are equal. Empty when there is no linked change or either has no IP.
    pub same_ip_as_destination_change: Option<bool>,
    /// Distinct other customers with any event from the withdrawal's IP in `[t − 30 d, t)`.
    pub other_customers_30d: u32,
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub event_id: String,
    pub customer_id: String,
    pub occurred_at: i64,
    pub ip: Option<std::net::IpAddr>,
    pub amount: Option<i64>,
    pub columns: Columns,
    pub assessment: Assessment,
}

/// Whether the IP occurs in the history before `b`: the customer's events but `login_failed` in
/// `[b − history, b)`.
fn seen_before(events: &[Event], ip: std::net::IpAddr, b: i64, history: i64) -> bool {
    events.iter().any(|e| {
        e.kind.counts_in_history()
            && e.occurred_at < b
            && e.occurred_at >= b - history
            && e.ip == Some(ip)
    })
}

/// Computes the literal columns of withdrawal `w` from the customer's events (any order; those of
/// other customers must not be included) and the count of other customers on its IP.
pub fn columns(
    w: &Event,
    events: &[Event],
    other_customers_30d: u32,
    link_days: u32,
    history: i64,
) -> Columns {
    let t = w.occurred_at;
    let from = t - i64::from(link_days) * DAY_US;
    let change = events
        .iter()
        .filter(|e| e.kind == Kind::DestinationChange && e.occurred_at >= from && e.occurred_at < t)
        .max_by(|a, b| {
            a.occurred_at
                .cmp(&b.occurred_at)
                .then_with(|| a.event_id.cmp(&b.event_id))
        });
    let b = change.map_or(t, |c| c.occurred_at);
    Columns {
        destination_change_event_id: change.map(|c| c.event_id.clone()),
        withdrawal_ip_seen_before: w.ip.map(|ip| seen_before(events, ip, b, history)),
        destination_change_ip_seen_before: change.and_then(|c| {
            c.ip.map(|ip| seen_before(events, ip, c.occurred_at, history))
        }),
        same_ip_as_destination_change: change.and_then(|c| Some(c.ip? == w.ip?)),
        other_customers_30d,
    }
}

/// The report's columns, in order.
pub const COLUMNS: [&str; 13] = [
    "event_id",
    "customer_id",
    "occurred_at",
    "ip",
    "amount",
    "destination_change_event_id",
    "withdrawal_ip_seen_before",
    "destination_change_ip_seen_before",
    "same_ip_as_destination_change",
    "other_customers_30d",
    "decision",
    "score",
    "reasons",
];

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(T::to_string).unwrap_or_default()
}

/// A row's fields in [`COLUMNS`] order (empty text for an empty value).
pub fn row_fields(r: &Row) -> Vec<String> {
    let c = &r.columns;
    vec![
        r.event_id.clone(),
        r.customer_id.clone(),
        format_tokyo(r.occurred_at),
        opt(&r.ip),
        opt(&r.amount),
        opt(&c.destination_change_event_id),
        opt(&c.withdrawal_ip_seen_before),
        opt(&c.destination_change_ip_seen_before),
        opt(&c.same_ip_as_destination_change),
        c.other_customers_30d.to_string(),
        r.assessment.decision.to_string(),
        r.assessment.score.to_string(),
        r.assessment
            .reasons
            .iter()
            .map(|r| r.code)
            .collect::<Vec<_>>()
            .join(";"),
    ]
}

/// What a report sums up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub from: String,
    pub to: String,
    pub withdrawals: usize,
    pub amount: i64,
    /// Count and amount per decision.
    pub decisions: BTreeMap<String, (usize, i64)>,
    pub with_linked_destination_change: usize,
    pub reasons: BTreeMap<String, usize>,
}

/// Sums up rows of the period `[from, to)`.
pub fn summarize(from: i64, to: i64, rows: &[Row]) -> Summary {
    let mut decisions: BTreeMap<String, (usize, i64)> = Decision::ALL
        .iter()
        .map(|d| (d.as_str().to_owned(), (0, 0)))
        .collect();
    let mut reasons = BTreeMap::new();
    for r in rows {
        let d = decisions
            .entry(r.assessment.decision.as_str().to_owned())
            .or_default();
        d.0 += 1;
        d.1 += r.amount.unwrap_or(0);
        for x in &r.assessment.reasons {
            *reasons.entry(x.code.to_owned()).or_default() += 1;
        }
    }
    Summary {
        from: format_tokyo(from),
        to: format_tokyo(to),
        withdrawals: rows.len(),
        amount: rows.iter().map(|r| r.amount.unwrap_or(0)).sum(),
        decisions,
        with_linked_destination_change: rows
            .iter()
            .filter(|r| r.columns.destination_change_event_id.is_some())
            .count(),
        reasons,
    }
}

fn summary_text(s: &Summary) -> String {
    let mut o = format!(
        "Withdrawals from {} to {}: {} (¥{})\n  linked to a destination change within the link window: {}\n",
        s.from, s.to, s.withdrawals, s.amount, s.with_linked_destination_change
    );
    for (d, (n, amount)) in &s.decisions {
        let _ = writeln!(o, "  {d:<9} {n:>7}  ¥{amount}");
    }
    if !s.reasons.is_empty() {
        let _ = writeln!(o, "  reasons: {}", crate::report::counts(&s.reasons));
    }
    o
}

/// Renders a report of the period `[from, to)`.
pub fn render(from: i64, to: i64, rows: &[Row], format: Format) -> String {
    let s = summarize(from, to, rows);
    match format {
        Format::Table => {
            let fields: Vec<Vec<String>> = rows.iter().map(row_fields).collect();
            summary_text(&s) + "\n" + &text_table(&COLUMNS, &fields)
        }
        Format::Csv => csv_text(&COLUMNS, rows.iter().map(row_fields)),
        Format::Json => {
            let rows: Vec<_> = rows
                .iter()
                .map(|r| {
                    let c = &r.columns;
                    json!({
                        "event_id": r.event_id,
                        "customer_id": r.customer_id,
                        "occurred_at": format_tokyo(r.occurred_at),
                        "ip": r.ip,
                        "amount": r.amount,
                        "destination_change_event_id": c.destination_change_event_id,
                        "withdrawal_ip_seen_before": c.withdrawal_ip_seen_before,
                        "destination_change_ip_seen_before": c.destination_change_ip_seen_before,
                        "same_ip_as_destination_change": c.same_ip_as_destination_change,
                        "other_customers_30d": c.other_customers_30d,
                        "decision": r.assessment.decision,
                        "score": r.assessment.score,
                        "reasons": r.assessment.reasons,
                    })
                })
                .collect();
            serde_json::to_string_pretty(&json!({"summary": s, "rows": rows})).unwrap_or_default()
                + "\n"
        }
        Format::Html => html(&s, rows),
    }
}

fn html(s: &Summary, rows: &[Row]) -> String {
    let mut o = html_head(
        &format!("mamori withdrawal report {} – {}", s.from, s.to),
        "mamori — 出金モニタリング / Withdrawal monitoring report",
    );
    let _ = writeln!(
        o,
        r#"<p><span class="k">期間 / Period</span>{} ≤ t &lt; {}<br>
<span class="k">出金件数 / Withdrawals</span>{} (¥{})<br>
<span class="k">出金先変更あり / With a recent destination change</span>{}<br>"#,
        esc(&s.from),
        esc(&s.to),
        s.withdrawals,
        s.amount,
        s.with_linked_destination_change
    );
    for (d, (n, amount)) in &s.decisions {
        let _ = writeln!(
            o,
            r#"<span class="k">判定 / decision {}</span>{n} (¥{amount})<br>"#,
            esc(d)
        );
    }
    o.push_str("</p>\n<h2>理由コード / Reason codes</h2>\n<table><tr><th>code</th><th>rows</th><th>意味</th><th>meaning</th></tr>\n");
    for r in crate::assess::RULES {
        if let Some(n) = s.reasons.get(r.code) {
            let _ = writeln!(
                o,
                r#"<tr><td>{}</td><td class="n">{n}</td><td>{}</td><td>{}</td></tr>"#,
                esc(r.code),
                esc(r.ja),
                esc(r.en)
            );
        }
    }
    o.push_str("</table>\n<h2>出金一覧 / Withdrawals</h2>\n<table><tr>");
    for c in COLUMNS {
        let _ = write!(o, "<th>{}</th>", esc(c));
    }
    o.push_str("</tr>\n");
    for r in rows {
        let _ = write!(o, r#"<tr class="{}">"#, r.assessment.decision);
        for cell in row_fields(r) {
            let _ = write!(o, "<td>{}</td>", esc(&cell));
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</table>\n");
    o + &html_foot()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Channel;
    use crate::time::parse_rfc3339;

    fn ev(id: &str, at: &str, kind: Kind, ip: Option<&str>) -> Event {
        Event {
            event_id: id.into(),
            occurred_at: parse_rfc3339(at).unwrap(),
            customer_id: "c1".into(),
            kind,
            channel: Channel::Web,
            ip: ip.map(|i| i.parse().unwrap()),
            user_agent: None,
            device_id: None,
            amount: None,
            side: None,
            destination: None,
        }
    }

    #[test]
    fn columns_follow_the_definitions() {
        let h = 365 * DAY_US;
        let w = ev(
            "w",
            "2020-09-16T12:00:00+09:00",
            Kind::Withdrawal,
            Some("198.51.100.1"),
        );
        let home = ev(
            "l0",
            "2020-03-01T10:00:00+09:00",
            Kind::Login,
            Some("198.51.100.1"),
        );
        let evil = ev(
            "l1",
            "2020-09-15T10:00:00+09:00",
            Kind::Login,
            Some("203.0.113.9"),
        );
        let failed = ev(
            "f",
            "2020-02-01T10:00:00+09:00",
            Kind::LoginFailed,
            Some("203.0.113.9"),
        );
        let old_change = ev(
            "d0",
            "2020-05-01T10:00:00+09:00",
            Kind::DestinationChange,
            Some("198.51.100.1"),
        );
        let change = ev(
            "d1",
            "2020-09-15T10:05:00+09:00",
            Kind::DestinationChange,
            Some("203.0.113.9"),
        );
        // No linked change: baseline is t.
        let c = columns(&w, &[home.clone(), w.clone()], 0, 90, h);
        assert_eq!(c.destination_change_event_id, None);
        assert_eq!(c.withdrawal_ip_seen_before, Some(true));
        assert_eq!(
            (
                c.destination_change_ip_seen_before,
                c.same_ip_as_destination_change
            ),
            (None, None)
        );
        // A change 140 days before is outside 90 days.
        let c = columns(&w, &[home.clone(), old_change.clone()], 0, 90, h);
        assert_eq!(c.destination_change_event_id, None);
        let c = columns(&w, &[home.clone(), old_change.clone()], 0, 200, h);
        assert_eq!(c.destination_change_event_id.as_deref(), Some("d0"));
        // The latest change wins; the attacker's login before it makes its IP "seen" (literal),
        // a failed login does not.
        let all = [
            home.clone(),
            evil.clone(),
            failed.clone(),
            old_change.clone(),
            change.clone(),
        ];
        let c = columns(&w, &all, 3, 90, h);
        assert_eq!(c.destination_change_event_id.as_deref(), Some("d1"));
        assert_eq!(c.destination_change_ip_seen_before, Some(true));
        assert_eq!(c.withdrawal_ip_seen_before, Some(true));
        assert_eq!(c.same_ip_as_destination_change, Some(false));
        assert_eq!(c.other_customers_30d, 3);
        let c = columns(&w, &[home.clone(), failed, change.clone()], 0, 90, h);
        assert_eq!(c.destination_change_ip_seen_before, Some(false));
        // The withdrawal from the change's IP, seen only after the change: not before b.
        let w2 = ev(
            "w2",
            "2020-09-16T12:00:00+09:00",
            Kind::Withdrawal,
            Some("203.0.113.9"),
        );
        let late = ev(
            "l2",
            "2020-09-15T11:00:00+09:00",
            Kind::Login,
            Some("203.0.113.9"),
        );
        let c = columns(&w2, &[home, change.clone(), late], 0, 90, h);
        assert_eq!(c.withdrawal_ip_seen_before, Some(false));
        assert_eq!(c.same_ip_as_destination_change, Some(true));
        // No IP on the withdrawal: empty.
        let w3 = ev("w3", "2020-09-16T12:00:00+09:00", Kind::Withdrawal, None);
        let c = columns(&w3, &[change], 0, 90, h);
        assert_eq!(
            (c.withdrawal_ip_seen_before, c.same_ip_as_destination_change),
            (None, None)
        );
    }
}
