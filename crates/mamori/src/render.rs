//! Rendering pivots.

use std::fmt::Write as _;

use mamori_core::report::Format;
use mamori_core::time::format_tokyo;
use mamori_store::investigate::Pivot;

/// Renders a pivot as a table (default), JSON or CSV (one row per procedure; customers without
/// procedures get one row with empty procedure columns).
pub fn pivot(p: &Pivot, format: Format) -> String {
    match format {
        Format::Json => {
            let v = serde_json::json!({
                "network": p.network,
                "from": format_tokyo(p.from),
                "to": format_tokyo(p.to),
                "customers": p.customers.iter().map(|c| serde_json::json!({
                    "customer_id": c.customer_id,
                    "events_from_ip": c.events_from_ip,
                    "failed_logins_from_ip": c.failed_logins_from_ip,
                    "first_seen": format_tokyo(c.first_seen),
                    "last_seen": format_tokyo(c.last_seen),
                    "ips": c.ips,
                    "procedures": c.procedures.iter().map(|x| serde_json::json!({
                        "event_id": x.event_id,
                        "occurred_at": format_tokyo(x.occurred_at),
                        "kind": x.kind,
                        "channel": x.channel,
                        "ip": x.ip,
                        "from_pivot": x.from_pivot,
                        "amount": x.amount,
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            });
            serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let _ = w.write_record([
                "customer_id",
                "events_from_ip",
                "failed_logins_from_ip",
                "first_seen",
                "last_seen",
                "event_id",
                "occurred_at",
                "kind",
                "channel",
                "ip",
                "from_pivot",
                "amount",
            ]);
            for c in &p.customers {
                let head = [
                    c.customer_id.clone(),
                    c.events_from_ip.to_string(),
                    c.failed_logins_from_ip.to_string(),
                    format_tokyo(c.first_seen),
                    format_tokyo(c.last_seen),
                ];
                if c.procedures.is_empty() {
                    let mut r = head.to_vec();
                    r.extend(std::iter::repeat_n(String::new(), 7));
                    let _ = w.write_record(r);
                }
                for x in &c.procedures {
                    let mut r = head.to_vec();
                    r.extend([
                        x.event_id.clone(),
                        format_tokyo(x.occurred_at),
                        x.kind.to_string(),
                        x.channel.to_string(),
                        x.ip.clone().unwrap_or_default(),
                        x.from_pivot.to_string(),
                        x.amount.map(|a| a.to_string()).unwrap_or_default(),
                    ]);
                    let _ = w.write_record(r);
                }
            }
            String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
        }
        Format::Table | Format::Html => {
            let mut o = String::new();
            let _ = writeln!(
                o,
                "{}: {} customers from {} to {}",
                p.network,
                p.customers.len(),
                format_tokyo(p.from),
                format_tokyo(p.to)
            );
            for c in &p.customers {
                let _ = writeln!(
                    o,
                    "\n{}  events from it {}  failed logins {}  first {}  last {}  ({})",
                    c.customer_id,
                    c.events_from_ip,
                    c.failed_logins_from_ip,
                    format_tokyo(c.first_seen),
                    format_tokyo(c.last_seen),
                    c.ips.join(", ")
                );
                for x in &c.procedures {
                    let _ = writeln!(
                        o,
                        "  {} {:<26} {:<8} {:<39} {}{}",
                        format_tokyo(x.occurred_at),
                        x.kind.as_str(),
                        x.channel.as_str(),
                        x.ip.as_deref().unwrap_or("-"),
                        if x.from_pivot { "FROM THIS IP" } else { "" },
                        x.amount.map(|a| format!("  ¥{a}")).unwrap_or_default()
                    );
                }
            }
            o
        }
    }
}
