//! Investigations and IP pivots over any [`HistoryReader`].

use std::collections::{BTreeMap, HashMap};

use futures_util::{StreamExt, TryStreamExt, stream};
use ipnet::IpNet;
use mamori_core::event::{Event, Kind};
use mamori_core::history::{Access, IpUse};
use mamori_core::investigate::{Investigation, Procedure, Query};
use mamori_core::memory::investigate_indexed;
use mamori_core::net::{ip_key, net_range};
use mamori_core::verdict::IpIntel;
use serde::Serialize;

use crate::{HistoryReader, Result};

/// Customers (or IPs) fetched per query.
const CHUNK: usize = 500;

/// Runs an investigation against a store: the same rows, in the same order, as the in-memory
/// index gives for the same events.
pub async fn investigate<S: HistoryReader>(
    store: &S,
    q: &Query,
    intel: &dyn IpIntel,
) -> Result<Investigation> {
    let mut procs = store.procedures(q.kind, q.from, q.to).await?;
    procs.retain(|p| q.selects(q.kind, p.channel, p.occurred_at));

    // Each customer's events up to the latest procedure: the history window, and what lies before
    // it (a dormant account is told from a new one by its older events).
    let mut customers: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    let mut ips: BTreeMap<u128, Vec<i64>> = BTreeMap::new();
    for p in &procs {
        let t = p.occurred_at;
        let w = customers.entry(&p.customer_id).or_insert((t, t));
        *w = (w.0.min(t), w.1.max(t));
        if let Some(ip) = p.ip {
            ips.entry(ip_key(ip)).or_default().push(t);
        }
    }
    let customer_list: Vec<(&str, (i64, i64))> = customers.into_iter().collect();
    let accesses = stream::iter(customer_list.chunks(CHUNK))
        .map(|chunk| {
            let from = i64::MIN;
            let to = chunk.iter().map(|c| c.1.1).max().unwrap_or(0);
            let ids: Vec<&str> = chunk.iter().map(|c| c.0).collect();
            async move { store.customer_accesses(&ids, from, to).await }
        })
        .buffer_unordered(store.parallel_reads())
        .try_collect::<Vec<Vec<(String, Access)>>>();
    let ip_list: Vec<(u128, Vec<i64>)> = ips.into_iter().collect();
    // The window before each procedure on its IP.
    let ip_uses = stream::iter(ip_list.chunks(CHUNK))
        .map(|chunk| {
            let windows: Vec<(u128, i64, i64)> = chunk
                .iter()
                .flat_map(|(ip, times)| times.iter().map(|t| (*ip, t - q.windows.others, *t)))
                .collect();
            async move { store.ip_uses(&windows).await }
        })
        .buffer_unordered(store.parallel_reads())
        .try_collect::<Vec<Vec<(u128, IpUse<String>)>>>();
    // Both at once: they read different parts of the store.
    let (accesses, ip_uses) = futures_util::future::try_join(accesses, ip_uses).await?;
    // Number the customers, then answer through the same function as the in-memory index.
    let mut numbers: HashMap<String, u32> = HashMap::new();
    let mut by_customer: Vec<Vec<Access>> = Vec::new();
    let mut number = |c: String, by_customer: &mut Vec<Vec<Access>>| -> u32 {
        *numbers.entry(c).or_insert_with(|| {
            by_customer.push(Vec::new());
            by_customer.len() as u32 - 1
        })
    };
    for (c, a) in accesses.into_iter().flatten() {
        let n = number(c, &mut by_customer) as usize;
        by_customer[n].push(a);
    }
    let mut by_ip: HashMap<u128, Vec<IpUse<u32>>> = HashMap::new();
    for (ip, u) in ip_uses.into_iter().flatten() {
        let customer = number(u.customer, &mut by_customer);
        by_ip.entry(ip).or_default().push(IpUse {
            at: u.at,
            customer,
            logins: u.logins,
            failed_logins: u.failed_logins,
        });
    }
    let procedures: Vec<(u32, Procedure)> = procs
        .into_iter()
        .map(|p| (number(p.customer_id.clone(), &mut by_customer), p))
        .collect();
    Ok(investigate_indexed(
        procedures,
        |c| by_customer[c as usize].as_slice(),
        by_ip,
        q,
        intel,
    ))
}

/// One customer who used the pivoted IP or network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PivotCustomer {
    pub customer_id: String,
    /// Events of the customer from the IP/network in the window (failed logins included).
    pub events_from_ip: u32,
    pub failed_logins_from_ip: u32,
    pub first_seen: i64,
    pub last_seen: i64,
    /// The customer's addresses inside the pivoted network.
    pub ips: Vec<String>,
    /// The customer's sensitive procedures in the window, from any IP.
    pub procedures: Vec<PivotProcedure>,
}

/// A sensitive procedure in a pivot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PivotProcedure {
    pub event_id: String,
    pub occurred_at: i64,
    pub kind: Kind,
    pub channel: mamori_core::event::Channel,
    pub ip: Option<String>,
    /// Whether it was made from the pivoted IP/network.
    pub from_pivot: bool,
    pub amount: Option<i64>,
}

/// Who used an IP or network in `[from, to)`, with their sensitive procedures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pivot {
    pub network: String,
    pub from: i64,
    pub to: i64,
    pub customers: Vec<PivotCustomer>,
}

/// Pivots on an IP or CIDR block.
pub async fn pivot<S: HistoryReader>(store: &S, net: IpNet, from: i64, to: i64) -> Result<Pivot> {
    let (lo, hi) = net_range(net);
    let events = store.ip_range_events(lo, hi, from, to).await?;
    let mut by: BTreeMap<String, PivotCustomer> = BTreeMap::new();
    for e in events {
        let c = by
            .entry(e.customer_id.clone())
            .or_insert_with(|| PivotCustomer {
                customer_id: e.customer_id.clone(),
                events_from_ip: 0,
                failed_logins_from_ip: 0,
                first_seen: e.at,
                last_seen: e.at,
                ips: Vec::new(),
                procedures: Vec::new(),
            });
        c.events_from_ip += 1;
        c.failed_logins_from_ip += u32::from(e.kind == Kind::LoginFailed);
        c.first_seen = c.first_seen.min(e.at);
        c.last_seen = c.last_seen.max(e.at);
        let ip = mamori_core::net::key_ip(e.ip).to_string();
        if !c.ips.contains(&ip) {
            c.ips.push(ip);
        }
    }
    for c in by.values_mut() {
        c.ips.sort();
        let events: Vec<Event> = store.customer_events(&c.customer_id, from, to).await?;
        c.procedures = events
            .into_iter()
            .filter(|e| e.kind.is_sensitive())
            .map(|e| PivotProcedure {
                from_pivot: e.ip.is_some_and(|ip| {
                    let k = ip_key(ip);
                    lo <= k && k <= hi
                }),
                event_id: e.event_id,
                occurred_at: e.occurred_at,
                kind: e.kind,
                channel: e.channel,
                ip: e.ip.map(|i| i.to_string()),
                amount: e.amount,
            })
            .collect();
    }
    let mut customers: Vec<PivotCustomer> = by.into_values().collect();
    customers.sort_by(|a, b| {
        (
            b.procedures.iter().filter(|p| p.from_pivot).count(),
            b.events_from_ip,
            &a.customer_id,
        )
            .cmp(&(
                a.procedures.iter().filter(|p| p.from_pivot).count(),
                a.events_from_ip,
                &b.customer_id,
            ))
    });
    Ok(Pivot {
        network: net.to_string(),
        from,
        to,
        customers,
    })
}
