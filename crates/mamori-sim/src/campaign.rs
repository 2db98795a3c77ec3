//! Account-takeover campaigns: planned up front (victims, times, attacker infrastructure), then
//! played out on each affected customer while that customer is generated.

use std::collections::{HashMap, HashSet};

use mamori_core::time::{DAY_US, HOUR_US, MINUTE_US, SECOND_US};
use mamori_core::{Channel, Kind, Side};
use rand::Rng;

use crate::customer::{Gen, NO_LABEL, NONE16, Net, Profile};
use crate::rng::{self, SimRng, between, chance, span, stream, unit, weighted};
use crate::ua::{MODELS, UaKind, ua_string};
use crate::world::{
    BANKS_ATTACK, HOURS_ATTACK, World, day_of, day_start, draw_account, is_weekend, jst,
};
use crate::{SimConfig, Style};

/// One campaign: a style, a strike time, an attacker infrastructure and its victims.
#[derive(Debug, Clone)]
pub(crate) struct Campaign {
    pub style: Style,
    /// Start of the first takeover.
    pub strike: i64,
    /// Fixed attacker addresses (stuffing bots, the patient attacker's line, the same-ISP line),
    /// in order of preference.
    pub ips: Vec<u32>,
    /// VPN /24s the VPN-hopping attacker's provider exits from.
    pub nets: Vec<u32>,
    /// The ISP of a same-ISP attacker.
    pub isp: usize,
    pub device: u64,
    pub ua: UaKind,
    pub model: u8,
    /// Bots send a hard-coded, ageing user agent: the one of this date.
    pub ua_frozen: Option<i64>,
    pub victims: Vec<u32>,
    /// Customers probed by credential stuffing (victims included).
    pub targets: u32,
}

/// What a campaign does to one customer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Role {
    /// Taken over: login, changes, destination change, sales, withdrawals.
    Victim {
        campaign: u32,
        start: i64,
        /// Credential stuffing: when the stolen password was first confirmed.
        check: Option<i64>,
    },
    /// Probed by credential stuffing: failed logins, or (`checked`) a confirmed login only.
    Target {
        campaign: u32,
        at: i64,
        checked: bool,
    },
}

/// All campaigns and, per customer index, what happens to that customer.
pub(crate) struct Plan {
    pub campaigns: Vec<Campaign>,
    pub roles: HashMap<u32, Vec<Role>>,
}

/// A time on `day` at an attacker's hour.
fn attack_time(rng: &mut SimRng, day: i64) -> i64 {
    let h = weighted(rng, &HOURS_ATTACK) as i64;
    day_start(day) + h * HOUR_US + span(rng, 0, 3600) * SECOND_US
}

const STYLE_WEIGHTS: [f64; 5] = [30.0, 25.0, 20.0, 10.0, 15.0];

/// Whether the customer's own timeline has a login between a year and 45 days before `strike`
/// (before any attacker could have touched the account).
fn active_before(
    w: &World,
    cfg: &SimConfig,
    scratch: &mut crate::customer::Gen,
    p: &Profile,
    strike: i64,
) -> bool {
    let none = Plan {
        campaigns: Vec::new(),
        roles: HashMap::new(),
    };
    scratch.customer(w, cfg, &none, p, &[]);
    scratch.evs.iter().any(|e| {
        e.kind == Kind::Login && e.t >= strike - 365 * DAY_US && e.t < strike - 45 * DAY_US
    })
}

pub(crate) fn plan(cfg: &SimConfig, w: &World) -> Plan {
    let mut rng = stream(cfg.seed, rng::PLAN, 0);
    let rng = &mut rng;
    let mut campaigns = Vec::new();
    let mut roles: HashMap<u32, Vec<Role>> = HashMap::new();
    if cfg.customers == 0 {
        return Plan { campaigns, roles };
    }
    let period = w.end - w.start;
    let earliest = w.start + (60 * DAY_US).min(period / 2);
    let latest = (w.end - (5 * DAY_US).min(period / 4)).max(earliest + 1);
    let ws = jst(2020, 7, 1).max(earliest);
    let we = jst(2020, 9, 17).min(latest);
    let mut taken: HashSet<u32> = HashSet::new();
    let mut scratch = crate::customer::Gen::new();
    let (vmin, vmax) = cfg.victims_per_campaign;
    for i in 0..cfg.campaigns {
        let style = if (i as usize) < Style::ALL.len() {
            Style::ALL[i as usize]
        } else {
            Style::ALL[weighted(rng, &STYLE_WEIGHTS)]
        };
        let in_window = we > ws && (i < 5 || chance(rng, 0.5));
        let day = day_of(if in_window {
            span(rng, ws, we)
        } else {
            span(rng, earliest, latest)
        });
        let strike = attack_time(rng, day);
        let ua = [
            UaKind::WinChrome,
            UaKind::WinEdge,
            UaKind::WinFirefox,
            UaKind::MacSafari,
        ][weighted(rng, &[70.0, 15.0, 10.0, 5.0])];
        let mut c = Campaign {
            style,
            strike,
            ips: Vec::new(),
            nets: Vec::new(),
            isp: 0,
            device: rng.random(),
            ua,
            model: between(rng, 1, u32::from(MODELS) - 1) as u8,
            ua_frozen: None,
            victims: Vec::new(),
            targets: 0,
        };
        match style {
            Style::CredentialStuffingHosting => {
                // A few rented servers, often neighbours in one or two /24s.
                c.ua = UaKind::WinChrome;
                c.ua_frozen = Some(strike - span(rng, 0, 300) * DAY_US);
                for _ in 0..between(rng, 1, 2) {
                    let net = w.hosting.sample(rng) >> 8;
                    for _ in 0..between(rng, 2, 4) {
                        c.ips.push(w.hosting.host_in(rng, net));
                    }
                }
                c.ips.dedup();
            }
            Style::VpnHopping => {
                for _ in 0..between(rng, 3, 8) {
                    c.nets.push(w.vpn.sample(rng) >> 8);
                }
            }
            Style::ResidentialProxy => {}
            Style::PatientAttacker => {
                let hosting = chance(rng, 0.3);
                for _ in 0..4 {
                    c.ips.push(if hosting {
                        w.hosting.sample(rng)
                    } else {
                        let isp = w.big_isps[between(rng, 0, w.big_isps.len() as u32 - 1) as usize];
                        w.isps[isp].space.sample(rng)
                    });
                }
            }
            Style::SameIsp => {
                let region = weighted(rng, &crate::world::REGIONS);
                c.isp = w.pick_isp(rng, region);
            }
        }

        // Victims: random customers whose account has some history before the strike.
        let mut n = between(rng, vmin, vmax.max(vmin));
        // Small populations: leave victims for the campaigns still to come.
        let free = cfg.customers.saturating_sub(taken.len() as u32);
        let left = cfg.campaigns - i;
        n = n.min((free / left / 2).max(1));
        let mut victims: Vec<Profile> = Vec::new();
        for k in 0..n {
            let tries = if k == 0 { 2000 } else { 300 };
            for attempt in 0..tries {
                let idx = between(rng, 0, cfg.customers - 1);
                if taken.contains(&idx) {
                    continue;
                }
                let p = Profile::new(w, cfg, idx);
                if p.open_at > strike - 45 * DAY_US {
                    continue;
                }
                // Credentials are stolen from customers who use them: a victim logged in
                // during the year before the attack (the period an investigation looks at).
                // (A simulated period too short for that takes the others, late.)
                if attempt < tries * 3 / 4 && !active_before(w, cfg, &mut scratch, &p, strike) {
                    continue;
                }
                if style == Style::SameIsp && p.isp_at(strike) != c.isp {
                    continue;
                }
                taken.insert(idx);
                victims.push(p);
                break;
            }
        }
        if style == Style::SameIsp {
            let space = &w.isps[c.isp].space;
            while c.ips.len() < 4 {
                let mut ip = space.sample(rng);
                for _ in 0..50 {
                    if !victims.iter().any(|v| v.home_covers(ip >> 8)) {
                        break;
                    }
                    ip = space.sample(rng);
                }
                c.ips.push(ip);
            }
        }
        let spread = span(rng, 6 * HOUR_US, 72 * HOUR_US);
        let wave = if style == Style::CredentialStuffingHosting {
            let from = strike - span(rng, 12 * HOUR_US, 72 * HOUR_US);
            let to = strike - span(rng, 10 * MINUTE_US, 2 * HOUR_US);
            Some((from, to.max(from + MINUTE_US)))
        } else {
            None
        };
        let id = campaigns.len() as u32;
        for (k, v) in victims.iter().enumerate() {
            let start = if k == 0 {
                strike
            } else {
                let off = span(rng, 0, spread);
                attack_time(rng, day_of(strike + off))
            };
            let check = wave.map(|(a, b)| span(rng, a, b));
            roles.entry(v.idx).or_default().push(Role::Victim {
                campaign: id,
                start,
                check,
            });
            c.victims.push(v.idx);
        }
        if let Some((a, b)) = wave {
            // The bots try a list of leaked credentials: most fail, a few work.
            let want = (c.victims.len() as u32 * between(rng, 8, 30) + between(rng, 10, 50))
                .min(cfg.customers);
            let mut probed: HashSet<u32> = c.victims.iter().copied().collect();
            let mut tries = 0;
            while (probed.len() as u32) < want + c.victims.len() as u32 && tries < want * 4 {
                tries += 1;
                let idx = between(rng, 0, cfg.customers - 1);
                if probed.contains(&idx) {
                    continue;
                }
                let at = span(rng, a, b);
                let p = Profile::new(w, cfg, idx);
                if p.open_at > at - DAY_US {
                    continue;
                }
                probed.insert(idx);
                let checked = chance(rng, 0.03);
                roles.entry(idx).or_default().push(Role::Target {
                    campaign: id,
                    at,
                    checked,
                });
            }
            c.targets = probed.len() as u32;
        }
        campaigns.push(c);
    }
    Plan { campaigns, roles }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    pub t: i64,
    pub kind: Kind,
    pub session: u16,
    pub amount: i64,
    pub side: Option<Side>,
    pub dest: bool,
}

/// The attacker's actions on one account, with their times; addresses and devices come later
/// (they must avoid what the customer used before).
pub(crate) struct Skeleton {
    pub campaign: u32,
    pub victim: bool,
    pub steps: Vec<Step>,
    pub first: i64,
    pub last: i64,
    pub pw_changed_at: Option<i64>,
    pub email_changed: bool,
    rng: SimRng,
}

struct Steps {
    steps: Vec<Step>,
    session: u16,
}

impl Steps {
    fn push(&mut self, t: i64, kind: Kind) -> &mut Step {
        self.steps.push(Step {
            t,
            kind,
            session: self.session,
            amount: -1,
            side: None,
            dest: false,
        });
        self.steps.last_mut().expect("just pushed")
    }
    fn next_session(&mut self) {
        self.session += 1;
    }
}

fn click(rng: &mut SimRng, lo_s: i64, hi_s: i64) -> i64 {
    span(rng, lo_s, hi_s) * SECOND_US
}

pub(crate) fn skeleton(cfg: &SimConfig, plan: &Plan, p: &Profile, role: &Role) -> Skeleton {
    let campaign = match *role {
        Role::Victim { campaign, .. } | Role::Target { campaign, .. } => campaign,
    };
    let c = &plan.campaigns[campaign as usize];
    let mut rng = stream(
        cfg.seed,
        rng::ATTACK,
        (u64::from(campaign) << 32) | u64::from(p.idx),
    );
    let r = &mut rng;
    let mut s = Steps {
        steps: Vec::new(),
        session: 0,
    };
    let mut pw_changed_at = None;
    let mut email_changed = false;
    let victim = matches!(role, Role::Victim { .. });
    match *role {
        Role::Target { at, checked, .. } => {
            let mut t = at;
            if checked {
                s.push(t, Kind::Login);
                t += click(r, 3, 40);
                s.push(t, Kind::Access);
                t += click(r, 3, 40);
                s.push(t, Kind::Logout);
            } else {
                for _ in 0..between(r, 1, 3) {
                    s.push(t, Kind::LoginFailed);
                    s.next_session();
                    t += click(r, 2, 20);
                }
            }
        }
        Role::Victim { start, check, .. } => {
            if let Some(ct) = check {
                let mut t = ct;
                if chance(r, 0.3) {
                    s.push(t, Kind::LoginFailed);
                    s.next_session();
                    t += click(r, 2, 20);
                }
                s.push(t, Kind::Login);
                t += click(r, 3, 30);
                s.push(t, Kind::Logout);
                s.next_session();
            }
            if c.style == Style::PatientAttacker {
                // Reconnaissance on several days over one to three weeks: the attacker's address
                // becomes part of the account's recent history.
                let first_day = day_of(start - span(r, 7 * DAY_US, 21 * DAY_US));
                let last_day = day_of(start) - 1;
                let n = between(r, 2, 5) as usize;
                let width = (last_day - first_day + 1).max(1);
                let mut days: Vec<i64> = Vec::new();
                for _ in 0..100 {
                    if days.len() >= n.min(width as usize) {
                        break;
                    }
                    let d = first_day + span(r, 0, width);
                    if !days.contains(&d) {
                        days.push(d);
                    }
                }
                days.sort_unstable();
                for d in days {
                    let mut t = attack_time(r, d);
                    s.push(t, Kind::Login);
                    for _ in 0..between(r, 1, 3) {
                        t += click(r, 10, 120);
                        s.push(t, Kind::Access);
                    }
                    if chance(r, 0.5) {
                        t += click(r, 10, 60);
                        s.push(t, Kind::Logout);
                    }
                    s.next_session();
                }
            }
            // The takeover.
            let mut t = start;
            if c.style != Style::CredentialStuffingHosting && chance(r, 0.25) {
                for _ in 0..between(r, 1, 2) {
                    s.push(t, Kind::LoginFailed);
                    t += click(r, 5, 40);
                }
            }
            s.push(t, Kind::Login);
            for _ in 0..between(r, 1, 3) {
                t += click(r, 10, 120);
                s.push(t, Kind::Access);
            }
            let x = unit(r);
            let mut changes: Vec<Kind> = Vec::new();
            if x < 0.35 {
                changes.push(Kind::PasswordChange);
            } else if x < 0.50 {
                changes.push(Kind::EmailChange);
            } else if x < 0.60 {
                changes.push(Kind::EmailChange);
                changes.push(Kind::PasswordChange);
            }
            if chance(r, 0.08) {
                changes.push(Kind::PhoneChange);
            }
            for k in changes {
                t += click(r, 20, 180);
                s.push(t, k);
                if k == Kind::PasswordChange {
                    pw_changed_at = Some(t);
                }
                if k == Kind::EmailChange {
                    email_changed = true;
                }
            }
            t += click(r, 60, 300);
            s.push(t, Kind::DestinationChange).dest = true;
            // Sell the holdings.
            let n_sells = between(r, 1, 4);
            let total = p.wealth * (0.5 + 0.45 * unit(r));
            let mut proceeds = 0i64;
            for _ in 0..n_sells {
                t += click(r, 60, 600);
                let a = (total / f64::from(n_sells) * (0.7 + 0.6 * unit(r)) / 100.0).round() as i64
                    * 100;
                let a = a.max(10_000);
                proceeds += a;
                let st = s.push(t, Kind::Trade);
                st.amount = a;
                st.side = Some(Side::Sell);
            }
            let cash = (proceeds as f64 * (0.85 + 0.15 * unit(r))) as i64 / 1000 * 1000;
            if chance(r, 0.4) {
                // Cash already on the account: withdraw at once.
                t += click(r, 300, 1800);
                s.push(t, Kind::Withdrawal).amount = cash.max(1000);
                if chance(r, 0.3) {
                    t += click(r, 10, 60);
                    s.push(t, Kind::Logout);
                }
            } else {
                if chance(r, 0.3) {
                    t += click(r, 10, 60);
                    s.push(t, Kind::Logout);
                }
                // Wait for settlement (T+2 business days), then come back for the cash.
                let mut day = day_of(t) + i64::from(between(r, 1, 3));
                while is_weekend(day) {
                    day += 1;
                }
                s.next_session();
                let mut t2 = attack_time(r, day).max(t + HOUR_US);
                s.push(t2, Kind::Login);
                t2 += click(r, 10, 120);
                s.push(t2, Kind::Access);
                let parts = between(r, 1, 2);
                for _ in 0..parts {
                    t2 += click(r, 30, 300);
                    let a = (cash / i64::from(parts)) / 1000 * 1000;
                    s.push(t2, Kind::Withdrawal).amount = a.max(1000);
                }
            }
        }
    }
    let first = s.steps.iter().map(|x| x.t).min().unwrap_or(0);
    let last = s.steps.iter().map(|x| x.t).max().unwrap_or(0);
    Skeleton {
        campaign,
        victim,
        steps: s.steps,
        first,
        last,
        pw_changed_at,
        email_changed,
        rng,
    }
}

/// Plays the skeleton out with the campaign's infrastructure. Attacker addresses and devices are
/// never ones the customer used before the campaign's first action on the account.
pub(crate) fn realize(g: &mut Gen, w: &World, plan: &Plan, p: &Profile, sk: &Skeleton) {
    let c = &plan.campaigns[sk.campaign as usize];
    let mut rng = sk.rng.clone();
    let r = &mut rng;
    let mut used_ips: HashSet<u32> = HashSet::new();
    let mut used24: HashSet<u32> = HashSet::new();
    let mut used_devs: HashSet<u64> = HashSet::new();
    for e in &g.evs {
        if e.label == NO_LABEL && e.t < sk.first {
            if e.ip != 0 {
                used_ips.insert(e.ip);
                used24.insert(e.ip >> 8);
            }
            if e.dev != NONE16 {
                used_devs.insert(g.devices[usize::from(e.dev)]);
            }
        }
    }
    let fresh = |r: &mut SimRng| loop {
        let id: u64 = r.random();
        if !used_devs.contains(&id) {
            return id;
        }
    };
    let camp_dev = if used_devs.contains(&c.device) {
        fresh(r)
    } else {
        c.device
    };
    let camp_dev = g.foreign_device(camp_dev);
    let acc = draw_account(r, BANKS_ATTACK);
    g.dests.push(acc);
    let dest = (g.dests.len() - 1) as u16;

    // The first fixed address acceptable for this account.
    let fixed = |ips: &[u32], same_isp: bool| -> Option<u32> {
        ips.iter().copied().find(|ip| {
            !used_ips.contains(ip)
                && !(same_isp && (used24.contains(&(ip >> 8)) || p.home_covers(ip >> 8)))
        })
    };
    let mut session = u16::MAX;
    let mut session_ip = 0u32;
    let mut session_dev = NONE16;
    let mut proxy_dev = NONE16;
    let mut prev_ip = 0u32;
    let mut ua_last = NONE16;
    for st in &sk.steps {
        let new_session = st.session != session;
        session = st.session;
        let (ip, dev) = match c.style {
            Style::CredentialStuffingHosting => {
                if new_session {
                    let k = between(r, 0, c.ips.len() as u32 - 1) as usize;
                    let mut rotated: Vec<u32> = c.ips[k..].to_vec();
                    rotated.extend_from_slice(&c.ips[..k]);
                    session_ip = fixed(&rotated, false)
                        .unwrap_or_else(|| any_new(r, &used_ips, |r| w.hosting.sample(r)));
                    let id = fresh(r);
                    session_dev = g.foreign_device(id);
                }
                (session_ip, session_dev)
            }
            Style::VpnHopping => {
                let ip = any_new(r, &used_ips, |r| {
                    let net = c.nets[between(r, 0, c.nets.len() as u32 - 1) as usize];
                    let ip = w.vpn.host_in(r, net);
                    if ip == prev_ip { w.vpn.sample(r) } else { ip }
                });
                (ip, camp_dev)
            }
            Style::ResidentialProxy => {
                if proxy_dev == NONE16 {
                    let id = fresh(r);
                    proxy_dev = g.foreign_device(id);
                }
                if new_session || session_ip == 0 || chance(r, 0.3) {
                    session_ip = any_new(r, &used_ips, |r| {
                        let isp = w.big_isps[between(r, 0, w.big_isps.len() as u32 - 1) as usize];
                        let mut ip = w.isps[isp].space.sample(r);
                        if p.home_covers(ip >> 8) {
                            ip = w.isps[isp].space.sample(r);
                        }
                        ip
                    });
                }
                (session_ip, proxy_dev)
            }
            Style::PatientAttacker => {
                let ip = fixed(&c.ips, false)
                    .unwrap_or_else(|| any_new(r, &used_ips, |r| w.hosting.sample(r)));
                (ip, camp_dev)
            }
            Style::SameIsp => {
                let ip = fixed(&c.ips, true).unwrap_or_else(|| {
                    any_new(r, &used_ips, |r| {
                        let space = &w.isps[c.isp].space;
                        let mut ip = space.sample(r);
                        for _ in 0..20 {
                            if !used24.contains(&(ip >> 8)) && !p.home_covers(ip >> 8) {
                                break;
                            }
                            ip = space.sample(r);
                        }
                        ip
                    })
                });
                (ip, camp_dev)
            }
        };
        prev_ip = ip;
        let ua_t = c.ua_frozen.unwrap_or(st.t);
        ua_last = g.intern_ua(ua_last, ua_string(c.ua, c.model, ua_t, 0));
        let net = Net {
            ip,
            dev,
            ua: ua_last,
            channel: Channel::Web,
        };
        let e = g.push(st.t, st.kind, &net, sk.campaign);
        e.amount = st.amount;
        e.side = st.side;
        if st.dest {
            e.dest = dest;
        }
    }
}

/// An address from `draw` that the customer never used (a few tries; addresses are plentiful).
fn any_new(r: &mut SimRng, used: &HashSet<u32>, mut draw: impl FnMut(&mut SimRng) -> u32) -> u32 {
    let mut ip = draw(r);
    for _ in 0..64 {
        if !used.contains(&ip) {
            break;
        }
        ip = draw(r);
    }
    ip
}
