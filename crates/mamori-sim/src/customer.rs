//! Customers: a cheap profile (who they are, where they connect from, which hard cases happen to
//! them) and the honest timeline generated from it, one customer at a time.

use std::net::Ipv4Addr;

use mamori_core::time::{DAY_US, HOUR_US, MINUTE_US, SECOND_US};
use mamori_core::{Channel, Kind, Side};
use rand::Rng;

use crate::SimConfig;
use crate::campaign::{self, Plan, Role, Skeleton};
use crate::rng::{
    self, SimRng, between, chance, exp, lognormal, poisson, span, stream, unit, weighted,
};
use crate::ua::{MODELS, UaKind, ua_string};
use crate::world::{
    Account, BANKS_HONEST, HOURS_WEEKDAY, RAKUTEN, REGIONS, World, day_of, draw_account, hour_of,
    is_weekend, jst, rakuten_launch, time_on_day,
};

pub(crate) const NONE16: u16 = u16::MAX;
pub(crate) const NO_LABEL: u32 = u32::MAX;
pub(crate) const YEAR_US: f64 = 365.25 * DAY_US as f64;

/// One event before it becomes a [`mamori_core::Event`]: compact, `Copy`, with indices into the
/// customer's device, user-agent and account tables.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ev {
    pub t: i64,
    pub kind: Kind,
    pub channel: Channel,
    /// IPv4 address as an integer; 0 for offline channels.
    pub ip: u32,
    pub dev: u16,
    pub ua: u16,
    /// JPY; negative when absent.
    pub amount: i64,
    pub side: Option<Side>,
    pub dest: u16,
    /// Campaign index for attacker events, [`NO_LABEL`] for honest ones.
    pub label: u32,
}

/// Activity classes: a heavy-tailed mix from day traders to nearly dormant accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Trader,
    Weekly,
    Monthly,
    Rare,
}

/// Share of customers per class (traders, weekly, monthly, rare).
pub(crate) const CLASS_SHARE: [f64; 4] = [0.04, 0.18, 0.38, 0.40];
/// Mean sessions per year per class, before the calendar and the personal factor.
const CLASS_SESSIONS: [f64; 4] = [150.0, 36.0, 9.0, 2.4];
/// Probability that a session places orders, per class.
const CLASS_TRADE: [f64; 4] = [0.85, 0.45, 0.35, 0.3];
/// Extra orders (Poisson mean) in a trading session, per class.
const CLASS_TRADES: [f64; 4] = [1.8, 0.5, 0.2, 0.1];
/// Web/app withdrawals per year, per class.
const CLASS_WITHDRAWALS: [f64; 4] = [5.0, 2.5, 1.0, 0.4];
/// Holdings multiplier per class.
const CLASS_WEALTH: [f64; 4] = [3.0, 1.5, 1.0, 0.6];

/// A home line: an ISP and the /20-sized block of its address space the customer's area is
/// served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Home {
    pub isp: usize,
    pub first24: u32,
    pub n24: u32,
}

impl Home {
    fn draw(rng: &mut SimRng, w: &World, isp: usize) -> Home {
        let space = &w.isps[isp].space;
        let a = space.sample(rng);
        let (lo, hi) = space.range_of(a).unwrap_or((a, a));
        let first24 = (lo >> 8).max((a >> 8) & !0xf);
        let last24 = (hi >> 8).min(first24 + 15);
        Home {
            isp,
            first24,
            n24: last24 - first24 + 1,
        }
    }

    /// Whether the /24 `net24` lies in this home's block.
    pub(crate) fn covers(&self, net24: u32) -> bool {
        net24 >= self.first24 && net24 < self.first24 + self.n24
    }
}

/// A trip: some days away from home.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Trip {
    pub start: i64,
    pub end: i64,
    pub abroad: bool,
    /// The hotel's (or foreign network's) address.
    pub hotel: u32,
}

/// The cheap facts about one customer, a pure function of (seed, customer index).
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    pub idx: u32,
    pub family: u8,
    pub given: u8,
    pub region: usize,
    pub class: Class,
    pub sessions_per_day: f64,
    pub habit: f64,
    pub habit_share: f64,
    pub open_at: i64,
    pub new_account: bool,
    pub active_until: i64,
    pub wealth: f64,
    pub pc: Option<UaKind>,
    pub laptop: bool,
    pub app: Option<UaKind>,
    pub phone_web: Option<UaKind>,
    pub pc_share: f64,
    pub home_wifi: f64,
    pub carrier: usize,
    pub carrier_switch: Option<(i64, usize)>,
    pub office: Option<u32>,
    pub vpn_user: bool,
    pub vps: Option<u32>,
    pub home: Home,
    pub moved: Option<(i64, Home)>,
    pub lease_days: f64,
    pub new_phone_at: Option<i64>,
    pub new_pc_at: Option<i64>,
    pub trips: Vec<Trip>,
    pub account: Account,
}

/// Calibration so that the default mix averages about 80 events per customer-year.
const CALIBRATION: f64 = 0.94;

impl Profile {
    pub(crate) fn new(w: &World, cfg: &SimConfig, idx: u32) -> Profile {
        let mut rng = stream(cfg.seed, rng::PROFILE, u64::from(idx));
        let rng = &mut rng;
        let years = (w.end - w.start) as f64 / YEAR_US;
        let family = between(rng, 0, crate::world::FAMILY.len() as u32 - 1) as u8;
        let given = between(rng, 0, crate::world::GIVEN.len() as u32 - 1) as u8;
        let region = weighted(rng, &REGIONS);
        let ci = weighted(rng, &CLASS_SHARE);
        let class = [Class::Trader, Class::Weekly, Class::Monthly, Class::Rare][ci];
        let sigma: f64 = 0.6;
        let personal = lognormal(rng, (-sigma * sigma / 2.0).exp(), sigma);
        let sessions_per_day = CLASS_SESSIONS[ci] * personal * cfg.activity * CALIBRATION / 365.25;
        let habit = weighted(rng, &HOURS_WEEKDAY) as f64 + unit(rng);
        let habit_share = 0.2 + 0.5 * unit(rng);

        let new_account = chance(rng, cfg.new_account_share);
        let open_at = if new_account {
            let mut t = span(rng, w.start, w.end);
            for _ in 0..20 {
                if unit(rng) * World::SEASON_MAX < w.season(t) {
                    break;
                }
                t = span(rng, w.start, w.end);
            }
            t
        } else {
            w.start - (DAY_US as f64 * (30.0 + unit(rng) * 3600.0)) as i64
        };
        let active_from = open_at.max(w.start);
        let active_until = if chance(rng, cfg.dormant_share) {
            span(rng, active_from, w.end)
        } else {
            i64::MAX
        };
        let wealth = lognormal(rng, 2_500_000.0, 1.1) * CLASS_WEALTH[ci];

        // Devices: web only (PC), phone only, or both.
        let mix = unit(rng);
        let has_pc = !(0.45..0.70).contains(&mix);
        let has_phone = mix >= 0.45;
        let pc = has_pc.then(|| {
            let kinds = [
                UaKind::WinChrome,
                UaKind::WinEdge,
                UaKind::WinIe11,
                UaKind::WinFirefox,
                UaKind::MacSafari,
                UaKind::MacChrome,
            ];
            kinds[weighted(rng, &[45.0, 15.0, 8.0, 7.0, 15.0, 10.0])]
        });
        let ios = chance(rng, 0.55);
        let (mut app, mut phone_web) = (None, None);
        if has_phone {
            if chance(rng, 0.8) {
                app = Some(if ios {
                    UaKind::IosApp
                } else {
                    UaKind::AndroidApp
                });
            }
            if app.is_none() || chance(rng, 0.15) {
                phone_web = Some(if ios {
                    UaKind::IosSafari
                } else {
                    UaKind::AndroidChrome
                });
            }
        }
        let laptop = chance(rng, 0.4);
        let pc_share = 0.3 + 0.5 * unit(rng);
        let home_wifi = 0.2 + 0.4 * unit(rng);

        let mut carrier = w.pick_carrier(rng, None);
        let mut carrier_switch = None;
        if w.carriers[carrier].asn == RAKUTEN {
            // Rakuten Mobile's own network opened in April 2020: its customers came from another
            // carrier (number portability) and switched after the launch.
            let to = carrier;
            carrier = w.pick_carrier(rng, Some(to));
            let from = rakuten_launch().max(active_from);
            if from < w.end {
                carrier_switch = Some((span(rng, from, w.end), to));
            }
        } else if chance(rng, cfg.carrier_switch_per_year * years) {
            let to = w.pick_carrier(rng, Some(carrier));
            if w.carriers[to].asn != RAKUTEN || rakuten_launch() < w.end {
                let from = if w.carriers[to].asn == RAKUTEN {
                    rakuten_launch().max(active_from)
                } else {
                    active_from
                };
                carrier_switch = Some((span(rng, from, w.end), to));
            }
        }
        let office = chance(rng, cfg.office_share)
            .then(|| w.offices[between(rng, 0, w.offices.len() as u32 - 1) as usize]);
        let vpn_user = has_pc && chance(rng, cfg.vpn_user_share);
        let vps = chance(rng, cfg.vps_user_share).then(|| w.hosting.sample(rng));

        let isp = w.pick_isp(rng, region);
        let home = Home::draw(rng, w, isp);
        let moved = if chance(rng, cfg.move_per_year * years) {
            let at = span(rng, active_from + 30 * DAY_US, w.end);
            let new_isp = if chance(rng, 0.5) {
                isp
            } else {
                let region = if chance(rng, 0.3) {
                    weighted(rng, &REGIONS)
                } else {
                    region
                };
                w.pick_isp(rng, region)
            };
            Some((at, Home::draw(rng, w, new_isp)))
        } else {
            None
        };
        let lease_days = if chance(rng, 0.7) {
            (3f64.ln() + unit(rng) * (40f64 / 3.0).ln()).exp()
        } else {
            120.0 + 280.0 * unit(rng)
        };
        let new_phone_at = (has_phone && chance(rng, cfg.new_phone_per_year * years))
            .then(|| span(rng, active_from, w.end));
        let new_pc_at =
            (has_pc && chance(rng, 0.06 * years)).then(|| span(rng, active_from, w.end));
        let n_trips = poisson(rng, cfg.travel_per_year * years);
        let mut trips = Vec::new();
        for _ in 0..n_trips {
            let abroad = chance(rng, 0.35);
            let days = if abroad {
                between(rng, 3, 10)
            } else {
                between(rng, 1, 4)
            };
            let start = span(rng, active_from, w.end);
            let hotel = if abroad {
                w.foreign.sample(rng)
            } else {
                w.hotels[between(rng, 0, w.hotels.len() as u32 - 1) as usize]
            };
            trips.push(Trip {
                start,
                end: start + i64::from(days) * DAY_US,
                abroad,
                hotel,
            });
        }
        let account = draw_account(rng, BANKS_HONEST);
        Profile {
            idx,
            family,
            given,
            region,
            class,
            sessions_per_day,
            habit,
            habit_share,
            open_at,
            new_account,
            active_until,
            wealth,
            pc,
            laptop,
            app,
            phone_web,
            pc_share,
            home_wifi,
            carrier,
            carrier_switch,
            office,
            vpn_user,
            vps,
            home,
            moved,
            lease_days,
            new_phone_at,
            new_pc_at,
            trips,
            account,
        }
    }

    /// The fixed-line ISP at `t`.
    pub(crate) fn isp_at(&self, t: i64) -> usize {
        match self.moved {
            Some((at, h)) if t >= at => h.isp,
            _ => self.home.isp,
        }
    }

    /// Whether the /24 `net24` lies in one of the customer's home blocks.
    pub(crate) fn home_covers(&self, net24: u32) -> bool {
        self.home.covers(net24) || self.moved.is_some_and(|(_, h)| h.covers(net24))
    }

    pub(crate) fn trip_at(&self, t: i64) -> Option<&Trip> {
        self.trips.iter().find(|tr| t >= tr.start && t < tr.end)
    }

    fn carrier_at(&self, t: i64) -> usize {
        match self.carrier_switch {
            Some((at, c)) if t >= at => c,
            _ => self.carrier,
        }
    }

    /// The holder name of the customer's bank accounts, in katakana.
    pub(crate) fn holder_kana(&self) -> String {
        format!(
            "{} {}",
            crate::world::FAMILY[usize::from(self.family)],
            crate::world::GIVEN[usize::from(self.given)]
        )
    }

    fn class_index(&self) -> usize {
        match self.class {
            Class::Trader => 0,
            Class::Weekly => 1,
            Class::Monthly => 2,
            Class::Rare => 3,
        }
    }
}

/// Why a session happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Regular,
    Withdraw,
    /// An online credential or contact change.
    Change(Kind),
    /// An online change of the withdrawal destination to a new own account.
    Dest,
    /// Forgotten password: failures, then a reset.
    Forgot,
    /// A procedure at the support centre or on paper (no IP, no device).
    Offline(Kind),
    /// The support centre restores the destination after a takeover.
    Restore,
}

#[derive(Debug, Clone, Copy)]
struct DevGen {
    from: i64,
    dev: u16,
    kind: UaKind,
    model: u8,
    lag: u8,
    last_ua: u16,
}

const PC: usize = 0;
const APP: usize = 1;
const PWEB: usize = 2;
const OFFICE: usize = 3;
const VPS: usize = 4;

#[derive(Debug, Clone, Copy, Default)]
struct Lease {
    ver: u8,
    set: [u32; 4],
    n: usize,
    ip: u32,
    cur: u32,
    until: i64,
}

/// Where a session connects from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Net {
    pub ip: u32,
    pub dev: u16,
    pub ua: u16,
    pub channel: Channel,
}

/// The per-customer generator. Its buffers are reused from customer to customer: memory is
/// bounded by the busiest customer, never by the number of customers.
pub(crate) struct Gen {
    pub evs: Vec<Ev>,
    pub devices: Vec<u64>,
    pub uas: Vec<String>,
    pub dests: Vec<Account>,
    purposes: Vec<(i64, Purpose)>,
    slots: [[Option<DevGen>; 2]; 5],
    lease: Lease,
    pub rng: SimRng,
    own: Account,
    locked_after: Option<i64>,
    skeletons: Vec<Skeleton>,
}

impl Gen {
    pub(crate) fn new() -> Gen {
        Gen {
            evs: Vec::new(),
            devices: Vec::new(),
            uas: Vec::new(),
            dests: Vec::new(),
            purposes: Vec::new(),
            slots: [[None; 2]; 5],
            lease: Lease::default(),
            rng: stream(0, 0, 0),
            own: Account {
                bank: "0000",
                branch: 0,
                number: 0,
            },
            locked_after: None,
            skeletons: Vec::new(),
        }
    }

    /// Generates every event of customer `p` (honest and attacker), sorted by time, into
    /// `self.evs`.
    pub(crate) fn customer(
        &mut self,
        w: &World,
        cfg: &SimConfig,
        plan: &Plan,
        p: &Profile,
        roles: &[Role],
    ) {
        self.evs.clear();
        self.devices.clear();
        self.uas.clear();
        self.dests.clear();
        self.purposes.clear();
        self.skeletons.clear();
        self.lease = Lease::default();
        self.locked_after = None;
        self.rng = stream(cfg.seed, rng::TIMELINE, u64::from(p.idx));
        self.own = p.account;
        self.setup_devices(p);

        // The attacker's plan for this account comes first: the victim's reactions depend on it.
        for role in roles {
            let sk = campaign::skeleton(cfg, plan, p, role);
            if let Some(at) = sk.pw_changed_at {
                self.locked_after = Some(self.locked_after.map_or(at, |l| l.min(at)));
            }
            self.skeletons.push(sk);
        }

        self.plan_purposes(w, cfg, p);
        let purposes = std::mem::take(&mut self.purposes);
        for &(t, purpose) in &purposes {
            self.session(w, p, t, purpose);
        }
        self.purposes = purposes;

        let skeletons = std::mem::take(&mut self.skeletons);
        for sk in &skeletons {
            campaign::realize(self, w, plan, p, sk);
        }
        self.skeletons = skeletons;
        self.evs.sort_by_key(|e| e.t);
    }

    fn new_device(&mut self, kind: UaKind, from: i64) -> DevGen {
        let id: u64 = self.rng.random();
        self.devices.push(id);
        DevGen {
            from,
            dev: (self.devices.len() - 1) as u16,
            kind,
            model: between(&mut self.rng, 0, u32::from(MODELS) - 1) as u8,
            lag: between(&mut self.rng, 0, 40) as u8,
            last_ua: NONE16,
        }
    }

    /// Registers an attacker's device (never one of the customer's).
    pub(crate) fn foreign_device(&mut self, id: u64) -> u16 {
        self.devices.push(id);
        (self.devices.len() - 1) as u16
    }

    fn setup_devices(&mut self, p: &Profile) {
        self.slots = [[None; 2]; 5];
        if let Some(k) = p.pc {
            self.slots[PC][0] = Some(self.new_device(k, i64::MIN));
            if let Some(at) = p.new_pc_at {
                let k2 = if chance(&mut self.rng, 0.7) {
                    k
                } else {
                    UaKind::WinChrome
                };
                self.slots[PC][1] = Some(self.new_device(k2, at));
            }
        }
        for (slot, kind) in [(APP, p.app), (PWEB, p.phone_web)] {
            if let Some(k) = kind {
                self.slots[slot][0] = Some(self.new_device(k, i64::MIN));
                if let Some(at) = p.new_phone_at {
                    self.slots[slot][1] = Some(self.new_device(k, at));
                }
            }
        }
        if p.office.is_some() {
            let k = [UaKind::WinChrome, UaKind::WinEdge, UaKind::WinIe11]
                [weighted(&mut self.rng, &[5.0, 3.0, 2.0])];
            self.slots[OFFICE][0] = Some(self.new_device(k, i64::MIN));
        }
        if p.vps.is_some() {
            let k = if chance(&mut self.rng, 0.5) {
                UaKind::LinuxChrome
            } else {
                UaKind::WinChrome
            };
            self.slots[VPS][0] = Some(self.new_device(k, i64::MIN));
        }
    }

    /// Interns a user-agent string, reusing the previous index when unchanged.
    pub(crate) fn intern_ua(&mut self, last: u16, s: String) -> u16 {
        if last != NONE16 && self.uas[usize::from(last)] == s {
            return last;
        }
        self.uas.push(s);
        (self.uas.len() - 1) as u16
    }

    fn slot_device(&mut self, slot: usize, t: i64) -> Option<(u16, u16)> {
        let g = if self.slots[slot][1].is_some_and(|g| t >= g.from) {
            1
        } else {
            0
        };
        let d = self.slots[slot][g]?;
        let s = ua_string(d.kind, d.model, t, d.lag);
        let ua = self.intern_ua(d.last_ua, s);
        if let Some(x) = self.slots[slot][g].as_mut() {
            x.last_ua = ua;
        }
        Some((d.dev, ua))
    }

    fn home_ip(&mut self, w: &World, p: &Profile, t: i64) -> u32 {
        let (ver, home) = match p.moved {
            Some((at, h)) if t >= at => (2, h),
            _ => (1, p.home),
        };
        let space = &w.isps[home.isp].space;
        let rng = &mut self.rng;
        let l = &mut self.lease;
        if l.ver != ver {
            l.ver = ver;
            l.n = between(rng, 1, 3) as usize;
            for i in 0..l.n {
                l.set[i] = home.first24 + between(rng, 0, home.n24 - 1);
            }
            l.cur = l.set[0];
            l.ip = space.host_in(rng, l.cur);
            l.until = t + (exp(rng, p.lease_days) * DAY_US as f64) as i64;
        } else if t >= l.until {
            let r = unit(rng);
            if r < 0.55 || (r < 0.93 && l.n == 1) {
                // Same /24, another host.
            } else if r < 0.93 {
                l.cur = l.set[between(rng, 0, l.n as u32 - 1) as usize];
            } else {
                // The ISP moved the line to another of its prefixes.
                let net = space.sample(rng) >> 8;
                if l.n < 4 {
                    l.set[l.n] = net;
                    l.n += 1;
                } else {
                    l.set[between(rng, 0, 3) as usize] = net;
                }
                l.cur = net;
            }
            let mut ip = space.host_in(rng, l.cur);
            if ip == l.ip {
                ip = space.host_in(rng, l.cur);
            }
            l.ip = ip;
            l.until = t + (exp(rng, p.lease_days) * DAY_US as f64) as i64;
        }
        l.ip
    }

    fn carrier_ip(&mut self, w: &World, p: &Profile, t: i64) -> u32 {
        let pool = &w.carriers[p.carrier_at(t)].nat[p.region];
        pool[between(&mut self.rng, 0, pool.len() as u32 - 1) as usize]
    }

    fn pick_net(&mut self, w: &World, p: &Profile, t: i64, regular: bool) -> Net {
        let day = day_of(t);
        let h = hour_of(t);
        let has_pc = self.slots[PC][0].is_some();
        let has_app = self.slots[APP][0].is_some();
        let has_pweb = self.slots[PWEB][0].is_some();
        let trip = p.trip_at(t).copied();
        let mut slot = if p.office.is_some()
            && regular
            && !is_weekend(day)
            && (9..18).contains(&h)
            && trip.is_none()
            && chance(&mut self.rng, 0.6)
        {
            OFFICE
        } else if p.vps.is_some() && regular && chance(&mut self.rng, 0.6) {
            VPS
        } else {
            let pc_w = if !has_pc {
                0.0
            } else if has_app || has_pweb {
                p.pc_share
            } else {
                1.0
            };
            let phone_w = 1.0 - pc_w;
            let app_w = if has_app && has_pweb {
                phone_w * 0.85
            } else if has_app {
                phone_w
            } else {
                0.0
            };
            let web_w = phone_w - app_w;
            [PC, APP, PWEB][weighted(&mut self.rng, &[pc_w, app_w, web_w])]
        };
        if trip.is_some() && slot == PC && !p.laptop {
            if has_app {
                slot = APP;
            } else if has_pweb {
                slot = PWEB;
            }
        }
        let ip = match slot {
            PC => match trip {
                Some(tr) => tr.hotel,
                None if p.vpn_user && chance(&mut self.rng, 0.5) => w.vpn.sample(&mut self.rng),
                None => self.home_ip(w, p, t),
            },
            APP | PWEB => match trip {
                // Abroad, roaming data is routed home: the carrier's address, or the hotel Wi-Fi.
                Some(tr) if chance(&mut self.rng, if tr.abroad { 0.5 } else { 0.4 }) => tr.hotel,
                Some(_) => self.carrier_ip(w, p, t),
                None if chance(&mut self.rng, p.home_wifi) => self.home_ip(w, p, t),
                None => self.carrier_ip(w, p, t),
            },
            OFFICE => p.office.unwrap_or(0),
            _ => p.vps.unwrap_or(0),
        };
        let (dev, ua) = self.slot_device(slot, t).unwrap_or((NONE16, NONE16));
        Net {
            ip,
            dev,
            ua,
            channel: if slot == APP {
                Channel::App
            } else {
                Channel::Web
            },
        }
    }

    /// Adds an event (times are kept to the second, like most access logs).
    pub(crate) fn push(&mut self, t: i64, kind: Kind, net: &Net, label: u32) -> &mut Ev {
        self.evs.push(Ev {
            t: t - t.rem_euclid(SECOND_US),
            kind,
            channel: net.channel,
            ip: net.ip,
            dev: net.dev,
            ua: net.ua,
            amount: -1,
            side: None,
            dest: NONE16,
            label,
        });
        self.evs.last_mut().expect("just pushed")
    }

    /// The pause between two clicks of a session.
    fn gap(&mut self) -> i64 {
        (5.0 + exp(&mut self.rng, 45.0)) as i64 * SECOND_US
    }

    fn trade_amount(&mut self, p: &Profile) -> i64 {
        let median = (p.wealth * 0.05).clamp(30_000.0, 30_000_000.0);
        let a = lognormal(&mut self.rng, median, 0.9).clamp(1_000.0, 500_000_000.0);
        (a / 100.0).round() as i64 * 100
    }

    fn withdrawal_amount(&mut self, p: &Profile) -> i64 {
        let median = (p.wealth * 0.06).clamp(10_000.0, 20_000_000.0);
        let a = lognormal(&mut self.rng, median, 1.0).clamp(1_000.0, 300_000_000.0) as i64;
        let r = unit(&mut self.rng);
        if r < 0.6 {
            (a / 10_000).max(1) * 10_000
        } else if r < 0.9 {
            (a / 1_000).max(1) * 1_000
        } else {
            a
        }
    }

    fn plan_purposes(&mut self, w: &World, cfg: &SimConfig, p: &Profile) {
        let from = p.open_at.max(w.start);
        let to = p.active_until.min(w.end);
        let ci = p.class_index();
        if to > from {
            self.regular_times(w, p, from, to);
            let wd = CLASS_WITHDRAWALS[ci] * cfg.activity;
            self.procedures(from, to, wd, Purpose::Withdraw, 0.0);
            self.procedures(
                from,
                to,
                cfg.destination_change_per_year,
                Purpose::Dest,
                0.15,
            );
            for (kind, rate, offline) in [
                (Kind::PasswordChange, 0.08, 0.0),
                (Kind::EmailChange, 0.03, 0.05),
                (Kind::PhoneChange, 0.015, 0.2),
                (Kind::AddressChange, 0.005, 0.5),
                (Kind::WithdrawalPasswordChange, 0.02, 0.15),
                (Kind::MfaChange, 0.02, 0.0),
            ] {
                self.procedures(from, to, rate, Purpose::Change(kind), offline);
            }
            self.procedures(from, to, 0.03, Purpose::Forgot, 0.0);
            // Hard cases: life events bring sensitive procedures from unfamiliar places.
            if p.new_account && p.open_at >= w.start {
                self.maybe(from, to, p.open_at, 7 * DAY_US, 0.15, Purpose::Dest, 0.1);
            }
            if let Some((at, _)) = p.moved {
                self.maybe(
                    from,
                    to,
                    at,
                    30 * DAY_US,
                    0.6,
                    Purpose::Change(Kind::AddressChange),
                    0.5,
                );
                self.maybe(from, to, at, 60 * DAY_US, 0.12, Purpose::Dest, 0.15);
                self.maybe(
                    from,
                    to,
                    at,
                    30 * DAY_US,
                    0.1,
                    Purpose::Change(Kind::PhoneChange),
                    0.2,
                );
            }
            if let Some(at) = p.new_phone_at {
                self.maybe(
                    from,
                    to,
                    at,
                    7 * DAY_US,
                    0.3,
                    Purpose::Change(Kind::MfaChange),
                    0.0,
                );
                self.maybe(from, to, at, 30 * DAY_US, 0.03, Purpose::Dest, 0.0);
            }
            if let Some((at, _)) = p.carrier_switch {
                self.maybe(
                    from,
                    to,
                    at,
                    14 * DAY_US,
                    0.15,
                    Purpose::Change(Kind::EmailChange),
                    0.0,
                );
            }
            for i in 0..p.trips.len() {
                let tr = p.trips[i];
                self.maybe(
                    from,
                    to,
                    tr.start,
                    tr.end - tr.start,
                    0.02,
                    Purpose::Dest,
                    0.0,
                );
            }
            // After the industry incident of mid-September 2020 brokers urged customers to change
            // their passwords.
            let incident = jst(2020, 9, 16);
            if from <= incident && to > incident {
                self.maybe(
                    from,
                    to,
                    incident,
                    14 * DAY_US,
                    0.06,
                    Purpose::Change(Kind::PasswordChange),
                    0.0,
                );
                self.maybe(
                    from,
                    to,
                    incident,
                    14 * DAY_US,
                    0.03,
                    Purpose::Change(Kind::WithdrawalPasswordChange),
                    0.1,
                );
            }
        }
        // Reactions of a victim: the next login fails if the attacker changed the password; the
        // theft is noticed (withdrawal notice by e-mail, unless the attacker changed the e-mail)
        // and the support centre restores the destination.
        for i in 0..self.skeletons.len() {
            if !self.skeletons[i].victim {
                continue;
            }
            let last = self.skeletons[i].last;
            let mean = if self.skeletons[i].email_changed {
                10.0
            } else {
                1.5
            };
            let notice = last + (exp(&mut self.rng, mean) * DAY_US as f64) as i64;
            let restore = notice + span(&mut self.rng, HOUR_US, 2 * DAY_US);
            if restore < w.end {
                self.purposes.push((restore, Purpose::Restore));
            }
            if chance(&mut self.rng, 0.5) {
                self.purposes.push((
                    restore + span(&mut self.rng, 0, DAY_US),
                    Purpose::Offline(Kind::WithdrawalPasswordChange),
                ));
            }
            if self.skeletons[i].pw_changed_at.is_none() && chance(&mut self.rng, 0.6) {
                self.purposes.push((
                    restore + span(&mut self.rng, 10 * MINUTE_US, DAY_US),
                    Purpose::Change(Kind::PasswordChange),
                ));
            }
        }
        self.purposes.retain(|(t, _)| *t < w.end);
        self.purposes.sort_by_key(|(t, _)| *t);
    }

    fn regular_times(&mut self, w: &World, p: &Profile, from: i64, to: i64) {
        let rate = p.sessions_per_day;
        if rate <= 0.0 {
            return;
        }
        let fmax = World::SEASON_MAX * 1.1;
        let mean_gap = DAY_US as f64 / (rate * fmax);
        let mut t = from as f64;
        loop {
            t += exp(&mut self.rng, mean_gap);
            if t >= to as f64 {
                break;
            }
            let ti = t as i64;
            let day = day_of(ti);
            let mut f = w.season(ti) * if is_weekend(day) { 0.75 } else { 1.1 };
            if p.trip_at(ti).is_some() {
                f *= 0.6;
            }
            if unit(&mut self.rng) * fmax >= f {
                continue;
            }
            let habit = chance(&mut self.rng, p.habit_share).then_some(p.habit);
            let ts = time_on_day(&mut self.rng, day, habit);
            if ts >= from && ts < to {
                self.purposes.push((ts, Purpose::Regular));
            }
        }
    }

    fn offline_or(&mut self, purpose: Purpose, offline: f64) -> Purpose {
        if offline > 0.0 && chance(&mut self.rng, offline) {
            match purpose {
                Purpose::Dest => Purpose::Offline(Kind::DestinationChange),
                Purpose::Change(k) => Purpose::Offline(k),
                other => other,
            }
        } else {
            purpose
        }
    }

    fn add(&mut self, t: i64, purpose: Purpose, offline: f64) {
        let purpose = self.offline_or(purpose, offline);
        self.purposes.push((t, purpose));
        if matches!(
            purpose,
            Purpose::Dest | Purpose::Offline(Kind::DestinationChange)
        ) && chance(&mut self.rng, 0.3)
        {
            let later = t + span(&mut self.rng, 10 * MINUTE_US, 7 * DAY_US);
            self.purposes.push((later, Purpose::Withdraw));
        }
    }

    /// A Poisson number of `purpose` sessions at `per_year` over `[from, to)`.
    fn procedures(&mut self, from: i64, to: i64, per_year: f64, purpose: Purpose, offline: f64) {
        let n = poisson(&mut self.rng, per_year * (to - from) as f64 / YEAR_US);
        for _ in 0..n {
            let day = day_of(span(&mut self.rng, from, to));
            let t = time_on_day(&mut self.rng, day, None);
            if t >= from && t < to {
                self.add(t, purpose, offline);
            }
        }
    }

    /// With probability `p`, one `purpose` session within `window` after `at`.
    #[allow(clippy::too_many_arguments)]
    fn maybe(
        &mut self,
        from: i64,
        to: i64,
        at: i64,
        window: i64,
        p: f64,
        purpose: Purpose,
        offline: f64,
    ) {
        if !chance(&mut self.rng, p) {
            return;
        }
        let day = day_of(at + span(&mut self.rng, 0, window.max(1)));
        let mut t = time_on_day(&mut self.rng, day, None);
        if t < at {
            t = at + span(&mut self.rng, 10 * MINUTE_US, 3 * HOUR_US);
        }
        if t >= from && t < to {
            self.add(t, purpose, offline);
        }
    }

    fn session(&mut self, w: &World, p: &Profile, t0: i64, purpose: Purpose) {
        match purpose {
            Purpose::Offline(kind) => {
                let paper = if kind == Kind::AddressChange {
                    0.7
                } else {
                    0.4
                };
                let channel = if chance(&mut self.rng, paper) {
                    Channel::Paper
                } else {
                    Channel::SupportCenter
                };
                self.offline(t0, kind, channel);
                return;
            }
            Purpose::Restore => {
                let acc = self.own;
                self.dests.push(acc);
                let net = Net {
                    ip: 0,
                    dev: NONE16,
                    ua: NONE16,
                    channel: Channel::SupportCenter,
                };
                let d = (self.dests.len() - 1) as u16;
                self.push(t0, Kind::DestinationChange, &net, NO_LABEL).dest = d;
                return;
            }
            _ => {}
        }
        let net = self.pick_net(w, p, t0, purpose == Purpose::Regular);
        let mut t = t0;
        let locked = self.locked_after.is_some_and(|l| t0 > l);
        if locked || purpose == Purpose::Forgot {
            // The password no longer works (changed by an attacker, or forgotten): a few failures,
            // then a reset by e-mail.
            self.locked_after = None;
            let n = between(&mut self.rng, 2, 4);
            for i in 0..n {
                let back = i64::from(n - i) * span(&mut self.rng, 20, 90) * SECOND_US;
                self.push(t - 6 * MINUTE_US - back, Kind::LoginFailed, &net, NO_LABEL);
            }
            self.push(t - 2 * MINUTE_US, Kind::PasswordChange, &net, NO_LABEL);
        } else if chance(&mut self.rng, 0.03) {
            let n = between(&mut self.rng, 1, 2);
            for i in 0..n {
                let back = i64::from(n - i) * span(&mut self.rng, 5, 30) * SECOND_US;
                self.push(t - back, Kind::LoginFailed, &net, NO_LABEL);
            }
        }
        self.push(t, Kind::Login, &net, NO_LABEL);
        match purpose {
            Purpose::Regular | Purpose::Forgot => {
                let ci = p.class_index();
                let n_access = 1 + poisson(&mut self.rng, 1.0);
                let p_trade = CLASS_TRADE[ci] * if is_weekend(day_of(t0)) { 0.4 } else { 1.0 };
                let n_trades = if chance(&mut self.rng, p_trade) {
                    1 + poisson(&mut self.rng, CLASS_TRADES[ci])
                } else {
                    0
                };
                for _ in 0..n_access {
                    t += self.gap();
                    self.push(t, Kind::Access, &net, NO_LABEL);
                }
                for _ in 0..n_trades {
                    t += self.gap();
                    let amount = self.trade_amount(p);
                    let side = if chance(&mut self.rng, 0.55) {
                        Side::Buy
                    } else {
                        Side::Sell
                    };
                    let e = self.push(t, Kind::Trade, &net, NO_LABEL);
                    e.amount = amount;
                    e.side = Some(side);
                }
            }
            Purpose::Withdraw => {
                if chance(&mut self.rng, 0.7) {
                    t += self.gap();
                    self.push(t, Kind::Access, &net, NO_LABEL);
                }
                t += self.gap();
                let amount = self.withdrawal_amount(p);
                self.push(t, Kind::Withdrawal, &net, NO_LABEL).amount = amount;
            }
            Purpose::Change(kind) => {
                t += self.gap();
                self.push(t, Kind::Access, &net, NO_LABEL);
                t += self.gap();
                self.push(t, kind, &net, NO_LABEL);
            }
            Purpose::Dest => {
                t += self.gap();
                self.push(t, Kind::Access, &net, NO_LABEL);
                t += self.gap() + 60 * SECOND_US;
                let acc = draw_account(&mut self.rng, BANKS_HONEST);
                self.own = acc;
                self.dests.push(acc);
                let d = (self.dests.len() - 1) as u16;
                self.push(t, Kind::DestinationChange, &net, NO_LABEL).dest = d;
            }
            Purpose::Offline(_) | Purpose::Restore => {}
        }
        if chance(&mut self.rng, 0.35) {
            t += self.gap();
            self.push(t, Kind::Logout, &net, NO_LABEL);
        }
    }

    fn offline(&mut self, t: i64, kind: Kind, channel: Channel) {
        let net = Net {
            ip: 0,
            dev: NONE16,
            ua: NONE16,
            channel,
        };
        if kind == Kind::DestinationChange {
            let acc = draw_account(&mut self.rng, BANKS_HONEST);
            self.own = acc;
            self.dests.push(acc);
            let d = (self.dests.len() - 1) as u16;
            self.push(t, kind, &net, NO_LABEL).dest = d;
        } else {
            self.push(t, kind, &net, NO_LABEL);
        }
    }
}

/// The address of an IP integer.
pub(crate) fn ipv4(ip: u32) -> Ipv4Addr {
    Ipv4Addr::from(ip)
}
