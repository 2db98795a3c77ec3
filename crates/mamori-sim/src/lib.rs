//! mamori-sim: a deterministic synthetic online securities broker.
//!
//! It writes the access events of honest retail customers over more than a year and, mixed in,
//! the events of labelled account-takeover campaigns like the one of September 2020 (stolen
//! credentials, a withdrawal destination registered in the victim's name, holdings sold, cash
//! withdrawn). The simulator knows nothing about any detector: it models customers, networks and
//! attackers, so that evaluating a detector against it is honest. This page documents the model
//! so a reader can judge its realism.
//!
//! # Determinism and streaming
//!
//! Everything is drawn from ChaCha8 streams keyed by [`SimConfig::seed`]: one stream per customer
//! for its profile, one for its timeline, one per (campaign, customer) for the attacker's actions,
//! one for the shared world and one for the campaign plan. The same configuration gives
//! byte-identical output. Customers are generated one after the other (`C0000001`, `C0000002`, …):
//! each customer's events are built in a reusable buffer, sorted by time, numbered and handed to
//! the sink, then dropped, so memory does not grow with customers × events. Only the world (NAT
//! pools, offices, hotels: O(customers / 25) addresses) and the campaign plan (victims and
//! probed accounts) are held for the whole run. Output is sorted by time within a customer, not
//! globally. [`simulate_range`] generates a slice of the customers with exactly the events of a
//! full run, so ranges can run on several threads and be concatenated.
//!
//! Speed (release build, one core): about 5.6 million events/s generated, 2 million events/s
//! written as JSON Lines with [`write_event_json`] (byte-identical to
//! [`mamori_core::Event::to_json`], which alone manages about 0.55 million/s). One million
//! customers: 106 million events, 32 GB of JSON Lines, 7 MB of memory.
//!
//! Event ids are `<customer>-<n>` with `n` the 6-digit rank of the event in the customer's
//! timeline (`C0000001-000042`), the same scheme for honest and attacker events. Attacker events
//! are reported separately as [`Label`] rows; honest events have none.
//!
//! # Customers
//!
//! * **Activity** (heavy-tailed): 4 % day traders (≈150 sessions a year, most with orders), 18 %
//!   weekly (≈36), 38 % monthly (≈9), 40 % rare (≈2.4), each times a personal log-normal factor
//!   (σ = 0.6, mean 1) and [`SimConfig::activity`]. Sessions follow a Poisson process modulated by
//!   the calendar: weekdays ×1.1, weekends ×0.75, and the 2020 retail boom (×1.7 from
//!   2020-02-24 during the COVID-19 crash, ×1.3 from 2020-05-01). Start hours follow a JST
//!   profile with peaks before the open, at lunch and in the evening; each customer also has a
//!   habitual hour used for 20–70 % of sessions. Overall about 80 events per customer-year
//!   (≈105 over the default 16-month period).
//! * **Sessions**: a `login` (3 % preceded by one or two `login_failed` typos seconds before, from
//!   the same IP and device), 1 + Poisson(1) `access` page views, `trade`s (class-dependent:
//!   85 % of traders' sessions, 30–45 % of others; fewer on weekends; amount log-normal around 5 %
//!   of holdings, side 55 % buy), 35 % end with an explicit `logout`. Clicks are 5 s +
//!   Exp(45 s) apart. All events of a session share IP, device, user agent and channel.
//! * **Procedures** (per customer-year, each in its own session): withdrawals 5 / 2.5 / 1 / 0.4 by
//!   class (amounts mostly round); destination change [`SimConfig::destination_change_per_year`]
//!   (0.012; 15 % at the support centre or on paper; 30 % followed by a withdrawal within a week);
//!   password change 0.08; forgotten password 0.03 (2–4 failures, a reset, a login); e-mail
//!   0.03; phone 0.015; address 0.005; withdrawal password 0.02; MFA 0.02. Part of them are done
//!   offline (`support_center` / `paper`, no IP, no device): address 50 %, phone 20 %,
//!   withdrawal password 15 %, e-mail 5 %. A new bank account always has the customer's own name
//!   as `holder_kana` (katakana), a 4-digit bank code drawn from megabanks, Japan Post Bank,
//!   internet banks and regional banks, a 3-digit branch and a 7-digit number.
//! * **Accounts**: [`SimConfig::new_account_share`] (12 %) are opened during the period (more during
//!   the 2020 boom; 15 % change the destination given at opening within a week); [`SimConfig::dormant_share`]
//!   (10 %) stop logging in at some point.
//! * After 2020-09-16 (the industry incident) 6 % of active customers change their password and
//!   3 % their withdrawal password within two weeks.
//!
//! # Networks and devices
//!
//! * **Home line**: a fixed-line ISP by region (OCN, KDDI, SoftBank, So-net, BIGLOBE nationwide;
//!   OPTAGE only in Kansai, Chubu Telecom only in Chubu) and a /20-sized block of that ISP serving
//!   the customer's area. The dynamic address is re-leased after Exp(mean) days with a mean of
//!   3–40 days (70 % of lines) or 120–400 days (30 %, practically static); on renewal it stays in
//!   the /24 (55 %), moves to another of the line's 1–4 /24s (38 %) or jumps to a random prefix of
//!   the ISP (7 %), which then joins the line's set.
//! * **Phones**: 55 % of customers use a smartphone (iOS 55 %): the broker's app (80 %, channel
//!   `app`) and/or the phone browser (channel `web`). Phone sessions are on home Wi-Fi (the home
//!   address) 20–60 % of the time, else behind the carrier's **carrier-grade NAT**: a per-region
//!   pool of egress addresses (about one per [`SimConfig::cgnat_customers_per_ip`] = 25 expected
//!   users, at least 4, contiguous runs in a few /24s), a random one per session, so every NAT
//!   address is shared by many honest customers. Carriers: docomo 44 %, au 28 %, SoftBank 21 %,
//!   Rakuten Mobile 4 % (only after its April 2020 launch, switching from another carrier);
//!   [`SimConfig::carrier_switch_per_year`] (3 %) switch carriers (number portability) keeping
//!   their phone.
//! * **PCs**: 75 % have one (Windows Chrome/Edge/IE11/Firefox, Mac Safari/Chrome), at home.
//!   [`SimConfig::office_share`] (6 %) also use an office PC on weekdays 9–18 h behind the office
//!   NAT, a static business-line address shared by about three colleagues who are customers too.
//! * **Devices**: one `device_id` (16 hex digits) per device; the user agent follows the calendar
//!   (browser and app updates with a personal lag of 0–40 days) while the id stays.
//!
//! # Honest hard cases
//!
//! * **Moving house** ([`SimConfig::move_per_year`], 4 %): from a date on, a new block of the same
//!   ISP (50 %) or a new ISP, same devices; 60 % change their address within 30 days, 12 % change
//!   the withdrawal destination within 60 days (a new local bank), 10 % their phone number.
//! * **New phone** ([`SimConfig::new_phone_per_year`], 5 %): new device ids from a date on; 30 %
//!   re-register MFA within a week, 3 % change the destination within a month. PCs are replaced
//!   at 6 % a year.
//! * **Travel** ([`SimConfig::travel_per_year`], 0.08 trips per customer-year): 35 % abroad for
//!   3–10 days (PC and hotel Wi-Fi from a foreign address, or the phone roaming through its home
//!   carrier), else 1–4 days in a domestic hotel whose Wi-Fi address (a business line, or a
//!   hosting network for 25 % of hotels) is shared by all its guests. Activity drops by 40 %; a
//!   trip brings a destination change with 2 %.
//! * **Honest VPN users** ([`SimConfig::vpn_user_share`], 1 %): half of their PC sessions from a
//!   random commercial VPN exit. **VPS traders** ([`SimConfig::vps_user_share`], 0.2 %): most
//!   regular sessions from a fixed cloud server address.
//!
//! # Takeover campaigns
//!
//! [`SimConfig::campaigns`] campaigns (default max(5, customers / 4000)); the first five cover the
//! five [`Style`]s and are placed inside 2020-07-01..2020-09-17 (the seed's investigation period),
//! the others take a weighted style (30/25/20/10/15 %) and fall inside that window half of the
//! time, else anywhere from 60 days after the start to 5 days before the end. A campaign takes
//! [`SimConfig::victims_per_campaign`] victims (2–8; the 2020 incident had six): distinct random
//! customers whose account is at least 45 days old and who logged in themselves between a year
//! and 45 days before the strike (credentials are stolen from people who use them). Victims are struck within 6–72 h of each
//! other at attacker hours (around the clock, more in market hours and at night).
//!
//! On each victim: (25 % for non-stuffing styles: one or two failed logins) a `login`, 1–3
//! `access`, a credential change in 60 % (password 35 %, e-mail 15 %, both 10 %; phone 8 %), a
//! `destination_change` to a new account whose holder is the victim's own name (accounts opened
//! with forged identity documents; mostly internet banks and Japan Post Bank, but all of those
//! codes are common among honest customers too), 1–4 `trade` sells of 50–95 % of the holdings,
//! then the cash: at once (40 %) or after settlement, 1–3 business days later in a new session
//! (1–2 `withdrawal`s). Attacker devices are never the victim's; attacker addresses are never
//! ones the victim used before the campaign. Styles:
//!
//! 1. `credential_stuffing_hosting`: bots on 2–8 hosting addresses in one or two /24s with a
//!    hard-coded, ageing Chrome user agent and a fresh device id per attempt probe
//!    8–30 accounts per victim plus 10–50 (mostly honest customers, 1–3 `login_failed` each;
//!    3 % of them log in successfully and only look) during 12–72 h before the strike; each
//!    victim's password is confirmed by a login during that wave; the takeover comes from the
//!    same servers.
//! 2. `vpn_hopping`: one attacker device, a new VPN exit address for every step.
//! 3. `residential_proxy`: a different Japanese residential address (largest ISPs) per victim,
//!    rotating within the session 30 % of the time; a fresh browser profile per victim.
//! 4. `patient_attacker`: one address (a residential line, or a server 30 % of the time) and one
//!    device that log into the victim on 2–5 days during the 1–3 weeks before the strike.
//! 5. `same_isp`: the attacker's line is in the victims' own ISP (victims are chosen among its
//!    customers) but outside the victims' prefixes.
//!
//! Victims react: if the password was changed, their next login fails and they reset it; they
//! notice the theft (withdrawal notice mail, after Exp(1.5 days), or Exp(10 days) if the e-mail
//! was changed) and the support centre restores their own destination (an honest, unlabelled
//! `support_center` destination change); half then change the withdrawal password offline, and
//! 60 % of those whose password the attacker left alone change it online.
//!
//! # Networks used
//!
//! [`IpPools::builtin`] holds real prefixes (checked against RouteViews/DB-IP ASN data, NRO
//! country data and the X4BNet VPN/datacenter lists): a detector that looks up ASNs, countries
//! or hosting/VPN lists sees what it would see in production. Other pools can be supplied in
//! [`SimConfig::ip_pools`].
//!
//! # Not modelled
//!
//! Japanese public holidays, IPv6, cookie clearing (device ids are stable app/browser ids),
//! sessions switching address mid-way (except attackers), attacks over the app or over mobile
//! carriers, and the suspension of web destination changes that some brokers decided in
//! September 2020.

mod campaign;
mod customer;
mod json;
mod pools;
mod rng;
mod ua;
mod world;

use std::fmt;
use std::io;
use std::net::IpAddr;

use mamori_core::time::{DAY_US, TOKYO_OFFSET_US, days_from_civil};
use mamori_core::{Destination, Event, Kind};

pub use json::write_event_json;
pub use pools::{IpPools, Range4};

/// What to simulate. Build with [`SimConfig::new`] and adjust fields.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Number of customers (`C0000001` …).
    pub customers: u32,
    /// Seed of every random stream.
    pub seed: u64,
    /// Start of the period, UTC microseconds (inclusive).
    pub start: i64,
    /// End of the period, UTC microseconds (exclusive).
    pub end: i64,
    /// Address pools; `None` uses [`IpPools::builtin`].
    pub ip_pools: Option<IpPools>,
    /// Number of takeover campaigns. Default max(5, customers / 4000): every style at least once.
    pub campaigns: u32,
    /// Victims per campaign, inclusive bounds. Default (2, 8).
    pub victims_per_campaign: (u32, u32),
    /// Multiplier of every customer's session and withdrawal rate. Default 1.0.
    pub activity: f64,
    /// Share of customers whose account is opened during the period. Default 0.12.
    pub new_account_share: f64,
    /// Share of customers who stop using their account during the period. Default 0.10.
    pub dormant_share: f64,
    /// Share of customers who also use an office PC behind a shared office NAT. Default 0.06.
    pub office_share: f64,
    /// Share of PC customers who often use a commercial VPN. Default 0.01.
    pub vpn_user_share: f64,
    /// Share of customers trading from a cloud server. Default 0.002.
    pub vps_user_share: f64,
    /// Probability per customer-year of moving house. Default 0.04.
    pub move_per_year: f64,
    /// Probability per customer-year of a new phone (new device ids). Default 0.05.
    pub new_phone_per_year: f64,
    /// Probability per customer-year of switching mobile carrier. Default 0.03.
    pub carrier_switch_per_year: f64,
    /// Trips per customer-year. Default 0.08.
    pub travel_per_year: f64,
    /// Online or offline destination changes per customer-year outside life events. Default 0.012.
    pub destination_change_per_year: f64,
    /// Expected app users per carrier NAT address in a region. Default 25.
    pub cgnat_customers_per_ip: f64,
}

/// Midnight of a date in Asia/Tokyo as UTC microseconds.
fn jst_midnight(y: i64, m: u32, d: u32) -> i64 {
    days_from_civil(y, m, d) * DAY_US - TOKYO_OFFSET_US
}

impl SimConfig {
    /// Defaults for `customers` customers: 2019-06-01T00:00+09:00 .. 2020-10-01T00:00+09:00 (a
    /// year and more of history before the seed's period 2020-07-01..2020-09-17) and the rates
    /// documented on each field.
    pub fn new(customers: u32, seed: u64) -> Self {
        SimConfig {
            customers,
            seed,
            start: jst_midnight(2019, 6, 1),
            end: jst_midnight(2020, 10, 1),
            ip_pools: None,
            campaigns: Self::default_campaigns(customers),
            victims_per_campaign: (2, 8),
            activity: 1.0,
            new_account_share: 0.12,
            dormant_share: 0.10,
            office_share: 0.06,
            vpn_user_share: 0.01,
            vps_user_share: 0.002,
            move_per_year: 0.04,
            new_phone_per_year: 0.05,
            carrier_switch_per_year: 0.03,
            travel_per_year: 0.08,
            destination_change_per_year: 0.012,
            cgnat_customers_per_ip: 25.0,
        }
    }

    /// The default number of campaigns for `customers` customers: max(5, customers / 4000).
    pub fn default_campaigns(customers: u32) -> u32 {
        (customers / 4000).max(5)
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), String> {
        if self.end <= self.start {
            return Err("the period is empty: end must be after start".into());
        }
        if self.customers > 99_999_999 {
            return Err("at most 99,999,999 customers".into());
        }
        let (lo, hi) = self.victims_per_campaign;
        if lo == 0 || hi < lo {
            return Err(format!(
                "victims per campaign {lo}..={hi}: need 1 <= min <= max"
            ));
        }
        for (name, v) in [
            ("activity", self.activity),
            ("new_account_share", self.new_account_share),
            ("dormant_share", self.dormant_share),
            ("office_share", self.office_share),
            ("vpn_user_share", self.vpn_user_share),
            ("vps_user_share", self.vps_user_share),
            ("move_per_year", self.move_per_year),
            ("new_phone_per_year", self.new_phone_per_year),
            ("carrier_switch_per_year", self.carrier_switch_per_year),
            ("travel_per_year", self.travel_per_year),
            (
                "destination_change_per_year",
                self.destination_change_per_year,
            ),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{name} must be a non-negative number, got {v}"));
            }
        }
        if !(self.cgnat_customers_per_ip.is_finite() && self.cgnat_customers_per_ip >= 1.0) {
            return Err("cgnat_customers_per_ip must be at least 1".into());
        }
        if let Some(p) = &self.ip_pools {
            p.validate()?;
        }
        Ok(())
    }
}

/// How a campaign took accounts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Style {
    /// Bots on hosting/datacenter addresses trying leaked credentials on many accounts.
    CredentialStuffingHosting,
    /// A new commercial VPN exit for every step.
    VpnHopping,
    /// Japanese residential addresses (residential proxies), one per victim.
    ResidentialProxy,
    /// One address and device that log in on several days before striking.
    PatientAttacker,
    /// An address in the victim's own ISP, outside the victim's prefixes.
    SameIsp,
}

impl Style {
    /// Every style.
    pub const ALL: [Style; 5] = [
        Style::CredentialStuffingHosting,
        Style::VpnHopping,
        Style::ResidentialProxy,
        Style::PatientAttacker,
        Style::SameIsp,
    ];

    /// The label text.
    pub fn as_str(self) -> &'static str {
        match self {
            Style::CredentialStuffingHosting => "credential_stuffing_hosting",
            Style::VpnHopping => "vpn_hopping",
            Style::ResidentialProxy => "residential_proxy",
            Style::PatientAttacker => "patient_attacker",
            Style::SameIsp => "same_isp",
        }
    }

    /// Parses the label text.
    pub fn parse(s: &str) -> Option<Style> {
        Style::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl fmt::Display for Style {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Style {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Style::parse(s).ok_or_else(|| {
            let all: Vec<&str> = Style::ALL.iter().map(|x| x.as_str()).collect();
            format!("unknown style {s:?}; expected one of {}", all.join(", "))
        })
    }
}

/// Ground truth for one attacker event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub event_id: String,
    /// Campaign name, `c001` …
    pub campaign: String,
    pub style: Style,
}

/// A campaign as planned (for reports and evaluation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignSummary {
    /// `c001` …
    pub name: String,
    pub style: Style,
    /// Start of the first takeover, UTC microseconds.
    pub strike: i64,
    /// Customer ids of the victims.
    pub victims: Vec<String>,
    /// Accounts probed by credential stuffing (victims included; 0 for other styles).
    pub probed: u32,
}

const KINDS: usize = Kind::ALL.len();

/// Counts of one run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SimStats {
    pub events: u64,
    pub customers: u32,
    pub campaigns: u32,
    /// Events produced by attackers (= label rows).
    pub fraud_events: u64,
    /// Events per kind, indexed by `Kind::code() - 1`; see [`SimStats::kind`].
    pub by_kind: [u64; KINDS],
    /// Attacker events per kind, indexed like `by_kind`.
    pub fraud_by_kind: [u64; KINDS],
    /// Customers taken over.
    pub victims: u32,
    /// Customers with at least one attacker event.
    pub attacked_customers: u32,
    /// The largest number of events of one customer (the size of the only per-customer buffer).
    pub max_customer_events: u64,
}

impl SimStats {
    /// Events of kind `k`.
    pub fn kind(&self, k: Kind) -> u64 {
        self.by_kind[usize::from(k.code()) - 1]
    }
    /// Attacker events of kind `k`.
    pub fn fraud_kind(&self, k: Kind) -> u64 {
        self.fraud_by_kind[usize::from(k.code()) - 1]
    }
}

fn campaign_name(i: usize) -> String {
    format!("c{:03}", i + 1)
}

/// The customer id of customer index `idx` (0-based): `C0000001` for 0.
pub fn customer_id(idx: u32) -> String {
    format!("C{:07}", u64::from(idx) + 1)
}

/// The campaigns `simulate` would play for `cfg`, without generating any event.
pub fn campaign_plan(cfg: &SimConfig) -> Result<Vec<CampaignSummary>, String> {
    cfg.validate()?;
    let world = world::World::new(cfg);
    let plan = campaign::plan(cfg, &world);
    Ok(plan
        .campaigns
        .iter()
        .enumerate()
        .map(|(i, c)| CampaignSummary {
            name: campaign_name(i),
            style: c.style,
            strike: c.strike,
            victims: c.victims.iter().map(|v| customer_id(*v)).collect(),
            probed: c.targets,
        })
        .collect())
}

fn push_hex(s: &mut String, v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..16).rev() {
        s.push(HEX[((v >> (i * 4)) & 0xf) as usize] as char);
    }
}

fn set_opt(slot: &mut Option<String>, value: Option<&str>) {
    match (slot.as_mut(), value) {
        (Some(s), Some(v)) => {
            s.clear();
            s.push_str(v);
        }
        (None, Some(v)) => *slot = Some(v.to_owned()),
        (_, None) => *slot = None,
    }
}

/// Runs the simulation: every event goes to `sink` (customer after customer, each customer's
/// events in time order), and for every attacker event a [`Label`] goes to `labels` right after
/// the event. Errors of either callback stop the run and are returned.
pub fn simulate(
    cfg: &SimConfig,
    sink: &mut dyn FnMut(&Event) -> io::Result<()>,
    labels: &mut dyn FnMut(&Label) -> io::Result<()>,
) -> io::Result<SimStats> {
    simulate_range(cfg, 0..cfg.customers, sink, labels)
}

/// Like [`simulate`] but only for the customers with an index in `customers` (0-based, clipped
/// to `0..cfg.customers`). Every customer's events are exactly those of a full run: running
/// consecutive ranges (for example on several threads) and concatenating their outputs in order
/// gives the bytes of [`simulate`]. The returned counts cover the range (`campaigns` is the
/// total).
pub fn simulate_range(
    cfg: &SimConfig,
    customers: std::ops::Range<u32>,
    sink: &mut dyn FnMut(&Event) -> io::Result<()>,
    labels: &mut dyn FnMut(&Label) -> io::Result<()>,
) -> io::Result<SimStats> {
    cfg.validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let range = customers.start.min(cfg.customers)..customers.end.min(cfg.customers);
    let world = world::World::new(cfg);
    let plan = campaign::plan(cfg, &world);
    let names: Vec<String> = (0..plan.campaigns.len()).map(campaign_name).collect();
    let mut stats = SimStats {
        customers: range.len() as u32,
        campaigns: plan.campaigns.len() as u32,
        victims: plan
            .campaigns
            .iter()
            .flat_map(|c| c.victims.iter())
            .filter(|v| range.contains(v))
            .count() as u32,
        ..SimStats::default()
    };
    let mut g = customer::Gen::new();
    let mut ev = Event {
        event_id: String::new(),
        occurred_at: 0,
        customer_id: String::new(),
        kind: Kind::Login,
        channel: mamori_core::Channel::Web,
        ip: None,
        user_agent: None,
        device_id: None,
        amount: None,
        side: None,
        destination: None,
    };
    let mut dev_buf = String::with_capacity(16);
    for idx in range {
        let p = customer::Profile::new(&world, cfg, idx);
        let roles = plan.roles.get(&idx).map(Vec::as_slice).unwrap_or(&[]);
        g.customer(&world, cfg, &plan, &p, roles);
        ev.customer_id.clear();
        ev.customer_id.push_str(&customer_id(idx));
        let holder = p.holder_kana();
        let mut seq = 0u32;
        let mut attacked = false;
        for e in &g.evs {
            if e.t < cfg.start || e.t >= cfg.end {
                continue;
            }
            seq += 1;
            ev.event_id.clear();
            ev.event_id.push_str(&ev.customer_id);
            ev.event_id.push('-');
            push_padded(&mut ev.event_id, seq);
            ev.occurred_at = e.t;
            ev.kind = e.kind;
            ev.channel = e.channel;
            ev.ip = (e.ip != 0).then(|| IpAddr::V4(customer::ipv4(e.ip)));
            set_opt(
                &mut ev.user_agent,
                (e.ua != customer::NONE16).then(|| g.uas[usize::from(e.ua)].as_str()),
            );
            if e.dev != customer::NONE16 {
                dev_buf.clear();
                push_hex(&mut dev_buf, g.devices[usize::from(e.dev)]);
                set_opt(&mut ev.device_id, Some(&dev_buf));
            } else {
                ev.device_id = None;
            }
            ev.amount = (e.amount >= 0).then_some(e.amount);
            ev.side = e.side;
            ev.destination = (e.dest != customer::NONE16).then(|| {
                let a = g.dests[usize::from(e.dest)];
                Destination {
                    bank_code: a.bank.to_owned(),
                    branch_code: format!("{:03}", a.branch),
                    account_type: "ordinary".to_owned(),
                    account_number: format!("{:07}", a.number),
                    holder_kana: holder.clone(),
                }
            });
            sink(&ev)?;
            stats.events += 1;
            let k = usize::from(e.kind.code()) - 1;
            stats.by_kind[k] += 1;
            if e.label != customer::NO_LABEL {
                let c = e.label as usize;
                labels(&Label {
                    event_id: ev.event_id.clone(),
                    campaign: names[c].clone(),
                    style: plan.campaigns[c].style,
                })?;
                stats.fraud_events += 1;
                stats.fraud_by_kind[k] += 1;
                attacked = true;
            }
        }
        stats.attacked_customers += u32::from(attacked);
        stats.max_customer_events = stats.max_customer_events.max(u64::from(seq));
    }
    Ok(stats)
}

/// Appends `n` with at least six digits.
fn push_padded(s: &mut String, n: u32) {
    let mut buf = [b'0'; 10];
    let mut i = buf.len();
    let mut v = n;
    while v > 0 || i > buf.len() - 6 {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    s.push_str(std::str::from_utf8(&buf[i..]).unwrap_or("000000"));
}

#[cfg(test)]
mod tests;
