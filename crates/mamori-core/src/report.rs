//! Rendering investigations: a terminal table, CSV, JSON and one self-contained HTML page.

use std::fmt::Write as _;

use serde_json::json;

use crate::investigate::{Investigation, IpSummary, Row, Summary};
use crate::time::format_tokyo;
use crate::verdict::{Familiarity, reason};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
    Html,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            "html" => Ok(Format::Html),
            _ => Err(format!(
                "unknown format {s:?}; expected table, csv, json or html"
            )),
        }
    }
}

/// The contract's columns, then extras.
pub const COLUMNS: [&str; 19] = [
    "event_id",
    "customer_id",
    "occurred_at",
    "channel",
    "ip",
    "ip_seen_before",
    "prefix_seen_before",
    "ip_first_seen_at",
    "ip_days_seen",
    "history_events",
    "other_customers_30d",
    "verdict",
    "reasons",
    "session_start",
    "ip_familiarity",
    "network_familiarity",
    "device_familiarity",
    "asn",
    "country",
];

fn fam(f: Option<Familiarity>) -> &'static str {
    match f {
        None => "",
        Some(Familiarity::New) => "new",
        Some(Familiarity::Recent) => "recent",
        Some(Familiarity::Established) => "established",
    }
}

/// A row's fields in [`COLUMNS`] order, as text.
pub fn row_fields(r: &Row) -> [String; 19] {
    let p = &r.procedure;
    let l = &r.literal;
    let j = &r.judgement;
    [
        p.event_id.clone(),
        p.customer_id.clone(),
        format_tokyo(p.occurred_at),
        p.channel.to_string(),
        p.ip.map(|i| i.to_string()).unwrap_or_default(),
        l.ip_seen_before.to_string(),
        l.prefix_seen_before.to_string(),
        l.ip_first_seen_at.map(format_tokyo).unwrap_or_default(),
        l.ip_days_seen.to_string(),
        l.history_events.to_string(),
        l.other_customers_30d.to_string(),
        j.verdict.to_string(),
        j.reasons.join(";"),
        format_tokyo(j.session_start),
        fam(j.ip).into(),
        fam(j.network).into(),
        fam(j.device).into(),
        j.facts.asn.map(|a| a.to_string()).unwrap_or_default(),
        j.facts.country.clone().unwrap_or_default(),
    ]
}

/// Renders in the given format.
pub fn render(inv: &Investigation, format: Format) -> String {
    match format {
        Format::Table => table(inv),
        Format::Csv => csv(inv),
        Format::Json => json(inv),
        Format::Html => html(inv),
    }
}

fn summary_lines(s: &Summary) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "Investigation of {} procedures ({}) from {} to {}",
        s.kind,
        s.channels
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(","),
        s.from,
        s.to
    );
    let _ = writeln!(
        o,
        "  procedures: {}   unique IPs: {}   unique customers: {}",
        s.procedures, s.unique_ips, s.unique_customers
    );
    let _ = writeln!(o, "  verdicts: {}", counts(&s.verdicts));
    let _ = writeln!(
        o,
        "  IPs used by several customers: {}",
        s.ips_used_by_several_customers.len()
    );
    for ip in s.ips_used_by_several_customers.iter().take(10) {
        let _ = writeln!(o, "    {}", ip_line(ip));
    }
    let _ = writeln!(o, "  top suspicious IPs: {}", s.top_suspicious_ips.len());
    for ip in s.top_suspicious_ips.iter().take(10) {
        let _ = writeln!(o, "    {}", ip_line(ip));
    }
    if !s.reasons.is_empty() {
        let _ = writeln!(o, "  reasons: {}", counts(&s.reasons));
    }
    o
}

fn ip_line(s: &IpSummary) -> String {
    let mut l = format!(
        "{:<39} procedures {:>4}  customers {:>4}  suspicious {:>4}  review {:>4}  others_30d {:>4}",
        s.ip, s.procedures, s.customers, s.suspicious, s.review, s.max_other_customers_30d
    );
    if let Some(asn) = s.asn {
        let _ = write!(l, "  AS{asn}");
    }
    if let Some(org) = &s.org {
        let _ = write!(l, " {org}");
    }
    if let Some(c) = &s.country {
        let _ = write!(l, " [{c}]");
    }
    l
}

fn table(inv: &Investigation) -> String {
    let shown = [0usize, 1, 2, 4, 5, 6, 8, 9, 10, 11, 12];
    let rows: Vec<Vec<String>> = inv
        .rows
        .iter()
        .map(|r| {
            let f = row_fields(r);
            shown.iter().map(|&i| f[i].clone()).collect()
        })
        .collect();
    let header: Vec<&str> = shown.iter().map(|&i| COLUMNS[i]).collect();
    summary_lines(&inv.summary) + "\n" + &text_table(&header, &rows)
}

/// `key count, key count, …` for summaries.
pub fn counts<K: std::fmt::Display, V: std::fmt::Display>(
    items: impl IntoIterator<Item = (K, V)>,
) -> String {
    items
        .into_iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Columns padded to their widest cell, one line per row after the header.
pub fn text_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let mut s = String::new();
        for (c, w) in cells.zip(&width) {
            let _ = write!(s, "{c:<w$}  ");
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut o = line(&mut header.iter().copied());
    for r in rows {
        o += &line(&mut r.iter().map(String::as_str));
    }
    o
}

/// CSV with a header line.
pub fn csv_text<R: AsRef<[String]>>(header: &[&str], rows: impl IntoIterator<Item = R>) -> String {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(header);
    for r in rows {
        let _ = w.write_record(r.as_ref());
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

fn csv(inv: &Investigation) -> String {
    csv_text(&COLUMNS, inv.rows.iter().map(|r| row_fields(r).to_vec()))
}

/// The start of a self-contained HTML page (style included) up to its first heading.
pub fn html_head(title: &str, heading: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="ja"><head><meta charset="utf-8">
<title>{title}</title>
<style>
body{{font:14px/1.45 system-ui,"Hiragino Sans","Noto Sans JP",sans-serif;margin:2em;color:#111}}
h1{{font-size:1.4em}} h2{{font-size:1.1em;margin-top:2em}}
table{{border-collapse:collapse;font-size:12px}} td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left;white-space:nowrap}}
th{{background:#f3f3f3;position:sticky;top:0}} .n{{text-align:right}}
.suspicious,.block,.hold{{background:#fde2e2}} .review,.challenge{{background:#fff6d6}}
.k{{display:inline-block;min-width:14em;color:#555}}
@media print{{th{{position:static}}}}
</style></head><body>
<h1>{heading}</h1>
"#,
        title = esc(title),
        heading = esc(heading)
    )
}

/// The end of a page begun with [`html_head`].
pub fn html_foot() -> String {
    format!(
        "<p><small>mamori {} — times in Asia/Tokyo.</small></p>\n</body></html>\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// A row as a JSON object (contract columns with native types, then extras).
pub fn row_json(r: &Row) -> serde_json::Value {
    let p = &r.procedure;
    let l = &r.literal;
    let j = &r.judgement;
    json!({
        "event_id": p.event_id,
        "customer_id": p.customer_id,
        "occurred_at": format_tokyo(p.occurred_at),
        "channel": p.channel,
        "ip": p.ip.map(|i| i.to_string()),
        "ip_seen_before": l.ip_seen_before,
        "prefix_seen_before": l.prefix_seen_before,
        "ip_first_seen_at": l.ip_first_seen_at.map(format_tokyo),
        "ip_days_seen": l.ip_days_seen,
        "history_events": l.history_events,
        "other_customers_30d": l.other_customers_30d,
        "verdict": j.verdict,
        "reasons": j.reasons,
        "session_start": format_tokyo(j.session_start),
        "ip_familiarity": j.ip,
        "network_familiarity": j.network,
        "device_familiarity": j.device,
        "asn": j.facts.asn,
        "org": j.facts.org,
        "country": j.facts.country,
    })
}

fn json(inv: &Investigation) -> String {
    let v = json!({
        "summary": inv.summary,
        "rows": inv.rows.iter().map(row_json).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn html(inv: &Investigation) -> String {
    let s = &inv.summary;
    let mut o = String::new();
    o += &html_head(
        &format!("mamori investigation: {} {} – {}", s.kind, s.from, s.to),
        "mamori — 調査報告 / Investigation report",
    );
    let _ = write!(
        o,
        r#"<p><span class="k">対象 / Procedures</span>{kind} ({channels})<br>
<span class="k">期間 / Period</span>{from} ≤ t &lt; {to}<br>
<span class="k">件数 / Procedures</span>{n}<br>
<span class="k">ユニークIP / Unique IPs</span>{ips}<br>
<span class="k">顧客数 / Unique customers</span>{customers}<br>
"#,
        kind = esc(s.kind.as_str()),
        channels = esc(&s
            .channels
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ")),
        from = esc(&s.from),
        to = esc(&s.to),
        n = s.procedures,
        ips = s.unique_ips,
        customers = s.unique_customers,
    );
    for (k, v) in &s.verdicts {
        let _ = writeln!(
            o,
            r#"<span class="k">判定 / verdict {}</span>{v}<br>"#,
            esc(k)
        );
    }
    o.push_str("</p>\n");
    let ip_table = |o: &mut String, title: &str, list: &[IpSummary]| {
        let _ = writeln!(o, "<h2>{}</h2>", esc(title));
        if list.is_empty() {
            o.push_str("<p>なし / none</p>\n");
            return;
        }
        o.push_str("<table><tr><th>IP</th><th>procedures</th><th>customers</th><th>suspicious</th><th>review</th><th>other customers 30d</th><th>AS</th><th>country</th></tr>\n");
        for ip in list {
            let _ = writeln!(
                o,
                r#"<tr><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td>{}</td><td>{}</td></tr>"#,
                esc(&ip.ip),
                ip.procedures,
                ip.customers,
                ip.suspicious,
                ip.review,
                ip.max_other_customers_30d,
                esc(&match (ip.asn, &ip.org) {
                    (Some(a), Some(org)) => format!("AS{a} {org}"),
                    (Some(a), None) => format!("AS{a}"),
                    _ => String::new(),
                }),
                esc(ip.country.as_deref().unwrap_or("")),
            );
        }
        o.push_str("</table>\n");
    };
    ip_table(
        &mut o,
        "不審なIP / Top suspicious IPs",
        &s.top_suspicious_ips,
    );
    ip_table(
        &mut o,
        "複数顧客が利用したIP / IPs used by several customers",
        &s.ips_used_by_several_customers,
    );
    o.push_str("<h2>理由コード / Reason codes</h2>\n<table><tr><th>code</th><th>rows</th><th>meaning</th></tr>\n");
    for (code, meaning) in reason::ALL {
        if let Some(n) = s.reasons.get(code) {
            let _ = writeln!(
                o,
                r#"<tr><td>{}</td><td class="n">{n}</td><td>{}</td></tr>"#,
                esc(code),
                esc(meaning)
            );
        }
    }
    o.push_str("</table>\n<h2>手続一覧 / Procedures</h2>\n<table><tr>");
    for c in &COLUMNS[..13] {
        let _ = write!(o, "<th>{}</th>", esc(c));
    }
    o.push_str("</tr>\n");
    for r in &inv.rows {
        let f = row_fields(r);
        let _ = write!(o, r#"<tr class="{}">"#, r.judgement.verdict);
        for cell in &f[..13] {
            let _ = write!(o, "<td>{}</td>", esc(cell));
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</table>\n");
    o + &html_foot()
}
