//! An in-memory index of events: the day-of-incident mode, investigating straight from log files
//! with no store. Fed events in any order; answers the same questions as the store.

use std::collections::HashMap;

use crate::event::{Event, Kind};
use crate::history::{Access, device_hash, ip_activity};
use crate::investigate::{Investigation, Procedure, Query, Row, build_row};
use crate::net::ip_key;
use crate::verdict::IpIntel;

/// Events indexed by customer and by IP.
#[derive(Debug, Default)]
pub struct MemoryIndex {
    customer_ids: HashMap<String, u32>,
    /// Every event of each customer (failed logins included).
    by_customer: Vec<Vec<Access>>,
    /// `(at, customer, kind)` of every event on each IP.
    by_ip: HashMap<u128, Vec<(i64, u32, Kind)>>,
    /// Candidate procedures (filtered by the query when one is given).
    procedures: Vec<(u32, Procedure)>,
    events: u64,
}

impl MemoryIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of events added.
    pub fn len(&self) -> u64 {
        self.events
    }

    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    fn customer(&mut self, id: &str) -> u32 {
        if let Some(&c) = self.customer_ids.get(id) {
            return c;
        }
        let c = self.by_customer.len() as u32;
        self.customer_ids.insert(id.to_owned(), c);
        self.by_customer.push(Vec::new());
        c
    }

    /// Adds an event; procedures matching `q` are remembered for [`MemoryIndex::investigate`].
    /// The caller guarantees event ids are unique (see [`dedup_key`]).
    pub fn push(&mut self, e: &Event, q: &Query) {
        self.events += 1;
        let c = self.customer(&e.customer_id);
        let ip = e.ip.map(ip_key);
        self.by_customer[c as usize].push(Access {
            at: e.occurred_at,
            kind: e.kind,
            channel: e.channel,
            ip,
            device: e.device_id.as_deref().map(device_hash),
        });
        if let Some(k) = ip {
            self.by_ip
                .entry(k)
                .or_default()
                .push((e.occurred_at, c, e.kind));
        }
        if q.selects(e.kind, e.channel, e.occurred_at) {
            self.procedures.push((c, Procedure::from(e)));
        }
    }

    /// Runs the investigation over everything added.
    pub fn investigate(mut self, q: &Query, intel: &dyn IpIntel) -> Investigation {
        for v in self.by_ip.values_mut() {
            v.sort_unstable_by_key(|x| x.0);
        }
        let procedures = std::mem::take(&mut self.procedures);
        let rows: Vec<Row> = procedures
            .into_iter()
            .map(|(c, p)| {
                let t = p.occurred_at;
                let activity =
                    p.ip.and_then(|ip| self.by_ip.get(&ip_key(ip)))
                        .map(|v| {
                            let lo = v.partition_point(|x| x.0 < t - q.windows.others);
                            let hi = v.partition_point(|x| x.0 < t);
                            ip_activity(&c, v[lo..hi].iter().map(|(_, cc, k)| (cc, *k)))
                        })
                        .unwrap_or_default();
                build_row(p, &self.by_customer[c as usize], &activity, intel, q)
            })
            .collect();
        Investigation::new(q, rows)
    }
}

/// A 128-bit fingerprint of an event id for duplicate detection without keeping the ids.
pub fn dedup_key(event_id: &str) -> u128 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut a = DefaultHasher::new();
    event_id.hash(&mut a);
    let mut b = DefaultHasher::new();
    (event_id, 0x6d616d6f7269u64).hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}
