//! The decision engine over any [`HistoryReader`]: one attempt (the API) or every withdrawal of a
//! period (the daily batch), assessed point-in-time with the same inputs.

use std::collections::{BTreeMap, HashMap};

use futures_util::{StreamExt, TryStreamExt, stream};
use mamori_core::assess::{self, Attempt, Inputs, Marks, Past, Policy, Population, features};
use mamori_core::event::{Event, Kind};
use mamori_core::history::{IpActivity, IpUse, ip_activity};
use mamori_core::monitor::{self, Row};
use mamori_core::net::{ip_key, key_ip, prefix_range};
use mamori_core::time::{DAY_US, TOKYO_OFFSET_US, tokyo_day};
use mamori_core::verdict::IpIntel;

use crate::{DecisionLog, HistoryReader, LoginFeatures, Result};

/// Start (UTC µs) of the Asia/Tokyo day that contains `t`.
pub fn tokyo_day_start(t: i64) -> i64 {
    tokyo_day(t) * DAY_US - TOKYO_OFFSET_US
}

/// How far back the engine reads a customer's events before an attempt: the history window
/// before the linked destination change.
pub fn past_span(policy: &Policy) -> i64 {
    i64::from(policy.history_days + policy.destination_link_days) * DAY_US
}

/// How far back the engine reads an IP's uses before an attempt: the window for others.
pub fn ip_span(policy: &Policy) -> i64 {
    i64::from(policy.others_days) * DAY_US
}

fn login_vec(l: &LoginFeatures, intel: &dyn IpIntel) -> Vec<(assess::Feature, u128)> {
    features(l.ip.map(key_ip), l.ua, intel)
}

/// The population's login habits for attempts on the Tokyo day starting at `day_start`: the
/// logins of the `population_days` days before it.
pub async fn population<S: HistoryReader>(
    store: &S,
    day_start: i64,
    policy: &Policy,
    intel: &dyn IpIntel,
) -> Result<Population> {
    let mut p = Population::default();
    add_logins(
        store,
        &mut p,
        population_from(day_start, policy),
        day_start,
        intel,
    )
    .await?;
    Ok(p)
}

/// Where the logins of the population of the Tokyo day starting at `day_start` begin.
pub fn population_from(day_start: i64, policy: &Policy) -> i64 {
    day_start - i64::from(policy.population_days) * DAY_US
}

/// Adds the logins with `from ≤ at < to` to a population: a day's population can be computed
/// in parts, the older logins ahead of the day and the last ones as it starts.
pub async fn add_logins<S: HistoryReader>(
    store: &S,
    p: &mut Population,
    from: i64,
    to: i64,
    intel: &dyn IpIntel,
) -> Result<()> {
    if from < to {
        for l in store.login_features(from, to).await? {
            p.add(&login_vec(&l, intel));
        }
    }
    Ok(())
}

/// What happened on an IP in `[t − others_days, t)`, seen from `customer`.
pub async fn activity<S: HistoryReader>(
    store: &S,
    customer: &str,
    ip: Option<std::net::IpAddr>,
    t: i64,
    policy: &Policy,
) -> Result<IpActivity> {
    window_activity(
        store,
        customer,
        ip.map(|ip| (ip_key(ip), ip_key(ip))),
        t,
        policy,
    )
    .await
}

/// What happened on the IP's familiarity network (/24, /48) in `[t − others_days, t)`, seen
/// from `customer`.
pub async fn net_activity<S: HistoryReader>(
    store: &S,
    customer: &str,
    ip: Option<std::net::IpAddr>,
    t: i64,
    policy: &Policy,
) -> Result<IpActivity> {
    window_activity(
        store,
        customer,
        ip.map(|ip| prefix_range(ip_key(ip))),
        t,
        policy,
    )
    .await
}

async fn window_activity<S: HistoryReader>(
    store: &S,
    customer: &str,
    range: Option<(u128, u128)>,
    t: i64,
    policy: &Policy,
) -> Result<IpActivity> {
    let Some(range) = range else {
        return Ok(IpActivity::default());
    };
    let from = t - ip_span(policy);
    store.range_activity(customer, range, from, t).await
}

/// What resolutions before `t` say about an attempt of `customer` from `ip`, given the customer's
/// events before it (their IPs within `fraud_ip_days` count for "touched by a fraud IP").
pub async fn marks_for<S: DecisionLog>(
    store: &S,
    customer: &str,
    ip: Option<std::net::IpAddr>,
    t: i64,
    past: &[Past],
    policy: &Policy,
) -> Result<Marks> {
    let from = t - i64::from(policy.fraud_ip_days) * DAY_US;
    let mut ips: Vec<u128> = past
        .iter()
        .filter(|p| p.access.at >= from && p.access.at < t)
        .filter_map(|p| p.access.ip)
        .collect();
    ips.sort_unstable();
    ips.dedup();
    store.marks(customer, ip.map(ip_key), t, &ips).await
}

/// Assesses one attempt of `customer` against the store as it is, point-in-time at its `at`:
/// the API's path (the population comes from the caller, who keeps it per day).
pub async fn assess_attempt<S: HistoryReader + DecisionLog>(
    store: &S,
    customer: &str,
    attempt: &Attempt,
    population: &Population,
    intel: &dyn IpIntel,
    policy: &Policy,
) -> Result<assess::Assessment> {
    let t = attempt.at;
    let (past, act, net) = futures_util::future::try_join3(
        store.customer_past(customer, t - past_span(policy), t),
        activity(store, customer, attempt.ip, t, policy),
        net_activity(store, customer, attempt.ip, t, policy),
    )
    .await?;
    let marks = marks_for(store, customer, attempt.ip, t, &past, policy).await?;
    let inputs = Inputs {
        past: &past,
        activity: act,
        net_activity: net,
        population,
        marks: &marks,
        intel,
    };
    Ok(assess::assess(attempt, &inputs, policy))
}

/// Populations for consecutive Tokyo days, from one read of the logins: a window slides over
/// them, so each equals [`population`] for its day.
pub struct Populations {
    logins: Vec<(i64, Vec<(assess::Feature, u128)>)>,
    current: Population,
    day_start: i64,
    added: usize,
    removed: usize,
    span: i64,
}

impl Populations {
    /// Reads the logins needed for days starting from `first_day_start` up to `to`.
    pub async fn new<S: HistoryReader>(
        store: &S,
        first_day_start: i64,
        to: i64,
        policy: &Policy,
        intel: &dyn IpIntel,
    ) -> Result<Self> {
        let span = i64::from(policy.population_days) * DAY_US;
        let mut logins: Vec<(i64, Vec<(assess::Feature, u128)>)> = store
            .login_features(first_day_start - span, to)
            .await?
            .iter()
            .map(|l| (l.at, login_vec(l, intel)))
            .collect();
        logins.sort_by_key(|l| l.0);
        Ok(Populations {
            logins,
            current: Population::default(),
            day_start: i64::MIN,
            added: 0,
            removed: 0,
            span,
        })
    }

    /// The population for the day starting at `day_start` (days must come in increasing order).
    pub fn at(&mut self, day_start: i64) -> &Population {
        if day_start != self.day_start {
            self.day_start = day_start;
            while self.added < self.logins.len() && self.logins[self.added].0 < day_start {
                self.current.add(&self.logins[self.added].1);
                self.added += 1;
            }
            while self.removed < self.added && self.logins[self.removed].0 < day_start - self.span {
                self.current.remove(&self.logins[self.removed].1);
                self.removed += 1;
            }
        }
        &self.current
    }
}

/// Customers whose events are held at once by the batch.
const CHUNK: usize = 500;
/// Queries in flight in the batch.
const PARALLEL: usize = 2;

/// Assesses every event of `kind` with `from ≤ at < to`, on every channel, point-in-time: each
/// sees the store as it was just before it (its customer's earlier events, the IP's activity, the
/// population of its day): the decision the API would have given at that moment.
///
/// Customers are read in chunks. For each procedure, `prepare` gets the stored event, its
/// customer's events (those before it matter; later ones up to the customer's last procedure of
/// the period may follow) and the IP's activity, and returns what the caller keeps of it; once
/// every chunk is read, the procedures are assessed day by day and `finish` gets each kept value
/// with its assessment, in time order.
pub async fn assess_period<S: HistoryReader + DecisionLog, T>(
    store: &S,
    kind: Kind,
    (from, to): (i64, i64),
    intel: &dyn IpIntel,
    policy: &Policy,
    mut prepare: impl FnMut(&Event, &[Event], &IpActivity) -> T,
    mut finish: impl FnMut(T, assess::Assessment),
) -> Result<()> {
    let procs = store.procedures(kind, from, to).await?;
    let first_day = procs
        .iter()
        .map(|p| p.occurred_at)
        .min()
        .map_or(from, tokyo_day_start);
    let mut by_customer: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for p in procs {
        let w = by_customer
            .entry(p.customer_id)
            .or_insert((p.occurred_at, p.occurred_at));
        *w = (w.0.min(p.occurred_at), w.1.max(p.occurred_at));
    }
    let span = past_span(policy);
    let others = ip_span(policy);
    let customers: Vec<(String, (i64, i64))> = by_customer.into_iter().collect();
    // Each customer's events as the engine reads them, and the procedures waiting for their day.
    let mut pasts: Vec<Vec<Past>> = Vec::new();
    let mut customers_of: Vec<String> = Vec::new();
    let mut pending: Vec<(Attempt, usize, [IpActivity; 2], T)> = Vec::new();
    for chunk in customers.chunks(CHUNK) {
        let events: Vec<Vec<Event>> = stream::iter(chunk)
            .map(|(c, (first, last))| async move {
                store
                    .customer_events(c, first - span, last.saturating_add(1))
                    .await
            })
            .buffered(PARALLEL)
            .try_collect()
            .await?;
        let base = pasts.len();
        let chosen: Vec<(usize, &Event)> = events
            .iter()
            .enumerate()
            .flat_map(|(i, evs)| evs.iter().map(move |e| (i, e)))
            .filter(|(_, e)| e.kind == kind && from <= e.occurred_at && e.occurred_at < to)
            .collect();
        let mut acts = vec![IpActivity::default(); chosen.len()];
        let mut net_acts = vec![IpActivity::default(); chosen.len()];
        // IP windows a part at a time: the uses a read returns answer that read's windows.
        let with_ip: Vec<usize> = (0..chosen.len())
            .filter(|&i| chosen[i].1.ip.is_some())
            .collect();
        for part in with_ip.chunks(CHUNK) {
            let windows: Vec<(u128, i64, i64)> = part
                .iter()
                .map(|&i| {
                    let e = chosen[i].1;
                    let t = e.occurred_at;
                    (e.ip.map(ip_key).unwrap_or_default(), t - others, t)
                })
                .collect();
            let mut uses: HashMap<u128, Vec<IpUse<String>>> = HashMap::new();
            for (ip, u) in store.ip_uses(&windows).await? {
                uses.entry(ip).or_default().push(u);
            }
            for (&i, (k, lo, hi)) in part.iter().zip(&windows) {
                acts[i] = ip_activity(
                    &chosen[i].1.customer_id,
                    uses.get(k)
                        .into_iter()
                        .flatten()
                        .filter(|u| *lo <= u.at && u.at < *hi),
                );
            }
            // And over each IP's network.
            let nets: Vec<(u128, u128, i64, i64)> = windows
                .iter()
                .map(|&(k, from, t)| {
                    let (lo, hi) = prefix_range(k);
                    (lo, hi, from, t)
                })
                .collect();
            let mut uses: HashMap<u128, Vec<IpUse<String>>> = HashMap::new();
            for (net, u) in store.net_uses(&nets).await? {
                uses.entry(net).or_default().push(u);
            }
            for (&i, (net, _, lo, hi)) in part.iter().zip(nets) {
                net_acts[i] = ip_activity(
                    &chosen[i].1.customer_id,
                    uses.get(&net)
                        .into_iter()
                        .flatten()
                        .filter(|u| lo <= u.at && u.at < hi),
                );
            }
        }
        for ((i, e), act) in chosen.into_iter().zip(acts.into_iter().zip(net_acts)) {
            let kept = prepare(e, &events[i], &act.0);
            pending.push((Attempt::of(e), base + i, [act.0, act.1], kept));
        }
        pasts.extend(
            events
                .iter()
                .map(|evs| evs.iter().map(Past::of).collect::<Vec<_>>()),
        );
        customers_of.extend(chunk.iter().map(|(c, _)| c.clone()));
    }
    // Day by day, for the sliding population.
    pending.sort_by_key(|p| p.0.at);
    let mut pops = Populations::new(store, first_day, to, policy, intel).await?;
    for (attempt, i, [act, net], kept) in pending {
        let past = &pasts[i];
        // Exactly what the API reads: [t − span, t).
        let start = past.partition_point(|p| p.access.at < attempt.at - span);
        let before = past.partition_point(|p| p.access.at < attempt.at);
        let past = &past[start..before];
        let customer = &customers_of[i];
        let marks = marks_for(store, customer, attempt.ip, attempt.at, past, policy).await?;
        let inputs = Inputs {
            past,
            activity: act,
            net_activity: net,
            population: pops.at(tokyo_day_start(attempt.at)),
            marks: &marks,
            intel,
        };
        finish(kept, assess::assess(&attempt, &inputs, policy));
    }
    Ok(())
}

/// The daily batch: every withdrawal with `from ≤ at < to`, on every channel, assessed
/// point-in-time, in time order (then event id, then customer).
pub async fn monitor_period<S: HistoryReader + DecisionLog>(
    store: &S,
    from: i64,
    to: i64,
    intel: &dyn IpIntel,
    policy: &Policy,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let history = i64::from(policy.history_days) * DAY_US;
    assess_period(
        store,
        Kind::Withdrawal,
        (from, to),
        intel,
        policy,
        |w, events, act| Row {
            event_id: w.event_id.clone(),
            customer_id: w.customer_id.clone(),
            occurred_at: w.occurred_at,
            ip: w.ip,
            amount: w.amount,
            // The columns look only at what came before the withdrawal.
            columns: monitor::columns(
                w,
                events,
                act.other_customers,
                policy.destination_link_days,
                history,
            ),
            assessment: assess::Assessment {
                decision: assess::Decision::Allow,
                score: 0,
                reasons: Vec::new(),
            },
        },
        |mut row, a| {
            row.assessment = a;
            rows.push(row);
        },
    )
    .await?;
    rows.sort_by(|a, b| {
        (a.occurred_at, &a.event_id, &a.customer_id).cmp(&(
            b.occurred_at,
            &b.event_id,
            &b.customer_id,
        ))
    });
    Ok(rows)
}
