use super::*;
use crate::time::{DAY_US, MINUTE_US};
use crate::verdict::{IpFacts, NoIntel};

const T: i64 = 1_600_262_700_000_000;
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/85.0.4183.121 Safari/537.36";
const FIREFOX_MAC: &str =
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:80.0) Gecko/20100101 Firefox/80.0";

fn past(at: i64, kind: Kind, ip: &str, dev: &str, ua: &str) -> Past {
    Past {
        access: Access {
            at,
            kind,
            channel: Channel::Web,
            ip: Some(ip_key(ip.parse().unwrap())),
            device: Some(device_hash(dev)),
        },
        ua: Some(ua_family_hash(ua)),
        amount: None,
        side: None,
    }
}

/// A year of logins (every 5 days) at home, with a trade after each.
fn honest_year() -> Vec<Past> {
    let mut v = Vec::new();
    for i in 0..70 {
        let at = T - 350 * DAY_US + i * 5 * DAY_US;
        v.push(past(at, Kind::Login, "198.51.100.10", "pc", CHROME));
        v.push(past(
            at + MINUTE_US,
            Kind::Trade,
            "198.51.100.10",
            "pc",
            CHROME,
        ));
    }
    v
}

fn attempt(kind: Kind, at: i64, ip: &str, dev: &str, ua: &str) -> Attempt {
    Attempt {
        at,
        kind,
        channel: Channel::Web,
        ip: Some(ip.parse().unwrap()),
        device: Some(device_hash(dev)),
        ua: Some(ua_family_hash(ua)),
        amount: None,
        side: None,
    }
}

fn population() -> Population {
    let mut p = Population::default();
    for i in 0..1000u32 {
        let ip: IpAddr = format!("10.{}.{}.1", i % 200, i / 200).parse().unwrap();
        let ua = if i % 3 == 0 { FIREFOX_MAC } else { CHROME };
        p.add(&features(Some(ip), Some(ua_family_hash(ua)), &NoIntel));
    }
    p
}

fn run(a: &Attempt, past: &[Past], act: IpActivity, marks: &Marks) -> Assessment {
    run_with(a, past, act, marks, &NoIntel, &Policy::default())
}

fn run_with(
    a: &Attempt,
    past: &[Past],
    act: IpActivity,
    marks: &Marks,
    intel: &dyn IpIntel,
    policy: &Policy,
) -> Assessment {
    let pop = population();
    let inp = Inputs {
        past,
        activity: act,
        net_activity: IpActivity::default(),
        population: &pop,
        marks,
        intel,
    };
    assess(a, &inp, policy)
}

fn codes(a: &Assessment) -> Vec<&'static str> {
    a.reasons.iter().map(|r| r.code).collect()
}

#[test]
fn the_customer_at_home_is_allowed_without_reasons() {
    let h = honest_year();
    let a = run(
        &attempt(Kind::Login, T, "198.51.100.10", "pc", CHROME),
        &h,
        IpActivity::default(),
        &Marks::default(),
    );
    assert_eq!((a.decision, a.score), (Decision::Allow, 0), "{a:?}");
    assert!(a.reasons.is_empty());
}

#[test]
fn a_stranger_logging_in_is_challenged_and_a_new_ip_on_the_known_device_is_not() {
    let h = honest_year();
    let a = run(
        &attempt(Kind::Login, T, "203.0.113.66", "evil", FIREFOX_MAC),
        &h,
        IpActivity::default(),
        &Marks::default(),
    );
    assert_eq!(a.decision, Decision::Challenge, "{a:?}");
    assert_eq!(codes(&a), ["unusual_login"]);
    let r = &a.reasons[0];
    assert!(r.message_ja.contains("ログイン") && r.message_en.contains("login"));
    assert!(r.evidence["score"].as_f64().unwrap() >= Policy::default().login_score_threshold);
    // The same IP from the customer's own long-used PC (a move, a new router): allowed.
    let a = run(
        &attempt(Kind::Login, T, "203.0.113.66", "pc", CHROME),
        &h,
        IpActivity::default(),
        &Marks::default(),
    );
    assert_eq!(a.decision, Decision::Allow, "{a:?}");
    // A new customer has no habits yet: an unseen value weighs little.
    let young: Vec<Past> = h[h.len() - 2..].to_vec();
    let a = run(
        &attempt(Kind::Login, T, "203.0.113.66", "evil", FIREFOX_MAC),
        &young,
        IpActivity::default(),
        &Marks::default(),
    );
    assert_eq!(a.decision, Decision::Allow, "{a:?}");
}

#[test]
fn the_seeds_chain_holds_the_withdrawal() {
    let mut h = honest_year();
    let evil = |at, kind| past(at, kind, "203.0.113.66", "evil", FIREFOX_MAC);
    h.push(evil(T - 2 * DAY_US, Kind::Login));
    h.push(evil(T - 2 * DAY_US + MINUTE_US, Kind::DestinationChange));
    h.push(evil(T - 30 * MINUTE_US - 60 * MINUTE_US, Kind::Login));
    let w = attempt(Kind::Withdrawal, T, "203.0.113.66", "evil", FIREFOX_MAC);
    let a = run(&w, &h, IpActivity::default(), &Marks::default());
    assert!(a.decision >= Decision::Hold, "{a:?}");
    assert!(codes(&a).contains(&"same_unfamiliar_ip_for_destination_change_and_withdrawal"));
    let r = a
        .reasons
        .iter()
        .find(|r| r.code == "same_unfamiliar_ip_for_destination_change_and_withdrawal")
        .unwrap();
    assert_eq!(r.evidence["destination_change_ip"], "203.0.113.66");
    // From another unfamiliar IP: both halves of the chain.
    let w2 = attempt(Kind::Withdrawal, T, "192.0.2.7", "evil2", FIREFOX_MAC);
    let a = run(&w2, &h, IpActivity::default(), &Marks::default());
    let c = codes(&a);
    assert!(
        c.contains(&"withdrawal_to_destination_changed_from_unfamiliar_ip"),
        "{a:?}"
    );
    assert!(c.contains(&"withdrawal_from_ip_unfamiliar_before_destination_change"));
    assert!(a.decision >= Decision::Hold, "{a:?}");
    // The customer at home, after changing the destination at home: allowed.
    let mut honest = honest_year();
    honest.push(past(
        T - DAY_US,
        Kind::DestinationChange,
        "198.51.100.10",
        "pc",
        CHROME,
    ));
    let w3 = attempt(Kind::Withdrawal, T, "198.51.100.10", "pc", CHROME);
    let a = run(&w3, &honest, IpActivity::default(), &Marks::default());
    assert_eq!(a.decision, Decision::Allow, "{a:?}");
    // Withdrawing from a café after changing the destination at home: the change was familiar,
    // the withdrawal IP is not, but the device is: allowed.
    let w4 = attempt(Kind::Withdrawal, T, "192.0.2.80", "pc", CHROME);
    let a = run(&w4, &honest, IpActivity::default(), &Marks::default());
    assert_eq!(a.decision, Decision::Allow, "{a:?}");
}

#[test]
fn the_takeover_chain_is_recognised_step_by_step() {
    let mut h = honest_year();
    let s = T - 10 * HOUR_US;
    h.push(past(s, Kind::PasswordChange, "198.51.100.10", "pc", CHROME));
    h.push(past(
        s + HOUR_US,
        Kind::DestinationChange,
        "198.51.100.10",
        "pc",
        CHROME,
    ));
    let mut sell = past(s + 2 * HOUR_US, Kind::Trade, "198.51.100.10", "pc", CHROME);
    sell.side = Some(Side::Sell);
    sell.amount = Some(3_000_000);
    h.push(sell);
    let w = attempt(Kind::Withdrawal, T, "198.51.100.10", "pc", CHROME);
    let a = run(&w, &h, IpActivity::default(), &Marks::default());
    let r = a
        .reasons
        .iter()
        .find(|r| r.code == "takeover_chain")
        .expect("chain");
    assert_eq!(
        r.evidence["steps"],
        json!(["credential_change", "destination_change", "large_sells"])
    );
    // Small sells are not a step, and a chain older than the window is not a chain.
    let mut small = h.clone();
    small.last_mut().unwrap().amount = Some(10_000);
    let a = run(&w, &small, IpActivity::default(), &Marks::default());
    assert_eq!(
        a.reasons
            .iter()
            .find(|r| r.code == "takeover_chain")
            .map(|r| r.evidence["steps"].clone()),
        Some(json!(["credential_change", "destination_change"]))
    );
    let late = Attempt {
        at: T + 80 * HOUR_US,
        ..w
    };
    let a = run(&late, &h, IpActivity::default(), &Marks::default());
    assert!(!codes(&a).contains(&"takeover_chain"), "{a:?}");
}

#[test]
fn stuffing_is_challenged_and_carrier_nat_is_not() {
    let h = honest_year();
    let stuffing = IpActivity {
        other_customers: 40,
        failed_login_accounts: 38,
        failed_logins: 120,
        logins: 3,
    };
    let a = run(
        &attempt(Kind::Login, T, "198.51.100.10", "pc", CHROME),
        &h,
        stuffing,
        &Marks::default(),
    );
    assert_eq!(codes(&a), ["failed_logins_many_accounts"]);
    assert_eq!(a.decision, Decision::Challenge, "{a:?}");
    let nat = IpActivity {
        other_customers: 300,
        failed_login_accounts: 6,
        failed_logins: 7,
        logins: 2000,
    };
    let a = run(
        &attempt(Kind::Login, T, "198.51.100.10", "pc", CHROME),
        &h,
        nat,
        &Marks::default(),
    );
    assert!(a.reasons.is_empty(), "{a:?}");
}

#[test]
fn resolutions_feed_back() {
    let h = honest_year();
    let w = attempt(
        Kind::DestinationChange,
        T,
        "203.0.113.66",
        "tablet",
        FIREFOX_MAC,
    );
    let a = run(&w, &h, IpActivity::default(), &Marks::default());
    assert!(codes(&a).contains(&"unfamiliar_access"), "{a:?}");
    // Staff resolved an alert from this IP and device as legitimate: familiar now.
    let marks = Marks {
        familiar_ips: [ip_key("203.0.113.66".parse().unwrap())].into(),
        familiar_devices: [device_hash("tablet")].into(),
        ..Marks::default()
    };
    let a = run(&w, &h, IpActivity::default(), &marks);
    assert_eq!(a.decision, Decision::Allow, "{a:?}");
    // A confirmed-fraud IP is blocked wherever it appears.
    let fraud = Marks {
        fraud_ip: true,
        ..Marks::default()
    };
    let a = run(
        &attempt(Kind::Login, T, "198.51.100.10", "pc", CHROME),
        &h,
        IpActivity::default(),
        &fraud,
    );
    assert_eq!(a.decision, Decision::Block, "{a:?}");
}

#[test]
fn hosting_vpn_and_foreign_weigh_less_on_an_established_device() {
    struct Vpn;
    impl IpIntel for Vpn {
        fn facts(&self, ip: IpAddr) -> IpFacts {
            if ip.to_string().starts_with("203.") {
                IpFacts {
                    asn: Some(9009),
                    country: Some("NL".into()),
                    vpn: true,
                    ..IpFacts::default()
                }
            } else {
                IpFacts {
                    asn: Some(2516),
                    country: Some("JP".into()),
                    ..IpFacts::default()
                }
            }
        }
    }
    let h = honest_year();
    let p = Policy::default();
    let run_vpn = |a: &Attempt| run_with(a, &h, IpActivity::default(), &Marks::default(), &Vpn, &p);
    let stranger = run_vpn(&attempt(
        Kind::DestinationChange,
        T,
        "203.0.113.5",
        "x",
        CHROME,
    ));
    let c = codes(&stranger);
    assert!(
        c.contains(&"vpn_ip") && c.contains(&"foreign_country"),
        "{stranger:?}"
    );
    assert!(stranger.decision >= Decision::Hold, "{stranger:?}");
    let customer = run_vpn(&attempt(Kind::Login, T, "203.0.113.5", "pc", CHROME));
    assert_eq!(customer.decision, Decision::Allow, "{customer:?}");
}

#[test]
fn score_combination_and_thresholds() {
    assert_eq!(combine([]), 0);
    assert_eq!(combine([50]), 50);
    assert_eq!(combine([50, 50]), 75);
    assert_eq!(combine([100, 10]), 100);
    let t = Thresholds::default();
    assert_eq!(t.decide(39), Decision::Allow);
    assert_eq!(t.decide(40), Decision::Challenge);
    assert_eq!(t.decide(60), Decision::Hold);
    assert_eq!(t.decide(100), Decision::Block);
    let p = Policy::default();
    assert_eq!(p.thresholds(Kind::Login).decide(89), Decision::Challenge);
}

#[test]
fn policy_validation_names_the_field() {
    assert_eq!(Policy::default().validate(), Ok(()));
    let mut p = Policy::default();
    p.points.insert("no_such_rule".into(), 10);
    assert!(
        p.validate()
            .unwrap_err()
            .contains("policy.points.no_such_rule")
    );
    let mut p = Policy::default();
    p.decisions.hold = 0;
    assert!(p.validate().unwrap_err().contains("policy.decisions.hold"));
    let p = Policy {
        home_country: "jp".into(),
        ..Policy::default()
    };
    assert!(p.validate().unwrap_err().contains("home_country"));
    // Points of 0 switch a rule off.
    let mut p = Policy::default();
    p.points.insert("unusual_login".into(), 0);
    let a = run_with(
        &attempt(Kind::Login, T, "203.0.113.66", "evil", FIREFOX_MAC),
        &honest_year(),
        IpActivity::default(),
        &Marks::default(),
        &NoIntel,
        &p,
    );
    assert_eq!(a.decision, Decision::Allow, "{a:?}");
}

#[test]
fn every_rule_has_both_messages_and_a_unique_code() {
    let mut seen = HashSet::new();
    for r in RULES {
        assert!(seen.insert(r.code), "{}", r.code);
        assert!(!r.ja.is_empty() && !r.en.is_empty() && r.points <= 100);
        assert!(!r.ja.is_ascii(), "{}: Japanese message", r.code);
    }
}

#[test]
fn user_agent_families() {
    assert_eq!(ua_family(CHROME), "windows/chrome");
    assert_eq!(ua_family(FIREFOX_MAC), "mac/firefox");
    assert_eq!(
        ua_family("BrokerApp/5.2.1 (Linux; Android 10; SH-01M; ja-JP)"),
        "android/BrokerApp"
    );
    assert_eq!(
        ua_family("Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko"),
        "windows/ie"
    );
    assert_eq!(
        ua_family(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 13_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.1.2 Mobile/15E148 Safari/604.1"
        ),
        "ios/safari"
    );
}

#[test]
fn the_login_score_grows_with_the_customers_habits() {
    let pop = population();
    let f = features(Some("203.0.113.66".parse().unwrap()), None, &NoIntel);
    let own = |n: u32| {
        vec![(
            features(Some("198.51.100.10".parse().unwrap()), None, &NoIntel),
            n,
        )]
    };
    let (s1, _) = login_score(&f, &own(1), &pop, 1.0);
    let (s50, parts) = login_score(&f, &own(50), &pop, 1.0);
    assert!(s50 > s1 && s1 > 0.0, "{s1} {s50}");
    assert_eq!(parts.len(), 2);
    // A value the customer uses all the time scores below zero.
    let home = features(Some("198.51.100.10".parse().unwrap()), None, &NoIntel);
    assert!(login_score(&home, &own(50), &pop, 1.0).0 < 0.0);
}

#[test]
fn impossible_travel_needs_distance_speed_and_a_city_database() {
    use crate::verdict::Location;
    struct Geo;
    impl IpIntel for Geo {
        fn facts(&self, ip: IpAddr) -> IpFacts {
            let s = ip.to_string();
            let location = if s.starts_with("198.51.100.") {
                Some(Location::new(35.6895, 139.6917, 20)) // Tokyo
            } else if s.starts_with("203.0.113.") {
                Some(Location::new(51.5142, -0.0931, 50)) // London
            } else if s.starts_with("192.0.2.") {
                Some(Location::new(34.6937, 135.5023, 20)) // Osaka
            } else {
                None
            };
            IpFacts {
                location,
                ..IpFacts::default()
            }
        }
    }
    let london = Location::new(51.5142, -0.0931, 50);
    let tokyo = Location::new(35.6895, 139.6917, 20);
    let km = london.km_to(&tokyo);
    assert!((9_500.0..9_650.0).contains(&km), "{km}");
    assert_eq!(london.km_to(&london), 0.0);

    let mut h = honest_year();
    h.push(past(
        T - 60 * MINUTE_US,
        Kind::Login,
        "198.51.100.10",
        "pc",
        CHROME,
    ));
    let p = Policy::default();
    let geo = |a: &Attempt, h: &[Past]| {
        let r = run_with(a, h, IpActivity::default(), &Marks::default(), &Geo, &p);
        codes(&r).contains(&"impossible_travel")
    };
    // Tokyo an hour ago, London now, on a new device.
    assert!(geo(
        &attempt(Kind::Login, T, "203.0.113.5", "x", CHROME),
        &h
    ));
    // Without a City database nothing is known.
    let none = run_with(
        &attempt(Kind::Login, T, "203.0.113.5", "x", CHROME),
        &h,
        IpActivity::default(),
        &Marks::default(),
        &NoIntel,
        &p,
    );
    assert!(!codes(&none).contains(&"impossible_travel"));
    // 21 hours later a flight could have done it.
    assert!(!geo(
        &attempt(
            Kind::Login,
            T + 20 * 60 * MINUTE_US,
            "203.0.113.5",
            "x",
            CHROME
        ),
        &h
    ));
    // Osaka is near: under the minimum distance once the accuracy radii are taken off.
    assert!(!geo(&attempt(Kind::Login, T, "192.0.2.7", "x", CHROME), &h));
    // The customer's own device logging in (a VPN, most likely) is not challenged for it; a
    // sensitive procedure still is.
    assert!(!geo(
        &attempt(Kind::Login, T, "203.0.113.5", "pc", CHROME),
        &h
    ));
    assert!(geo(
        &attempt(Kind::DestinationChange, T, "203.0.113.5", "pc", CHROME),
        &h
    ));
    // Someone else's failed logins from London are not where the customer was.
    let mut failed = honest_year();
    failed.push(past(
        T - 60 * MINUTE_US,
        Kind::Login,
        "198.51.100.10",
        "pc",
        CHROME,
    ));
    failed.push(past(
        T - 10 * MINUTE_US,
        Kind::LoginFailed,
        "203.0.113.5",
        "x",
        CHROME,
    ));
    assert!(!geo(
        &attempt(Kind::Login, T, "198.51.100.10", "x", CHROME),
        &failed
    ));
}

#[test]
fn stuffing_spread_over_a_network_counts_but_carrier_nat_does_not() {
    let h = honest_year();
    let pop = population();
    let policy = Policy::default();
    let run_net = |ip_act: IpActivity, net: IpActivity| {
        let inp = Inputs {
            past: &h,
            activity: ip_act,
            net_activity: net,
            population: &pop,
            marks: &Marks::default(),
            intel: &NoIntel,
        };
        codes(&assess(
            &attempt(Kind::Login, T, "203.0.113.9", "x", CHROME),
            &inp,
            &policy,
        ))
    };
    let spread = IpActivity {
        other_customers: 14,
        failed_login_accounts: 12,
        failed_logins: 40,
        logins: 3,
    };
    let c = run_net(IpActivity::default(), spread);
    assert!(c.contains(&"failed_logins_many_accounts_network"), "{c:?}");
    // A carrier's block: many honest customers, a few typos.
    let nat = IpActivity {
        other_customers: 400,
        failed_login_accounts: 12,
        ..spread
    };
    assert!(!run_net(IpActivity::default(), nat).contains(&"failed_logins_many_accounts_network"));
    // Below the threshold.
    let few = IpActivity {
        other_customers: 9,
        failed_login_accounts: 9,
        ..spread
    };
    assert!(!run_net(IpActivity::default(), few).contains(&"failed_logins_many_accounts_network"));
    // The address itself stuffing: one reason, the address's.
    let ip = IpActivity {
        other_customers: 5,
        failed_login_accounts: 5,
        failed_logins: 20,
        logins: 0,
    };
    let c = run_net(ip, spread);
    assert!(
        c.contains(&"failed_logins_many_accounts")
            && !c.contains(&"failed_logins_many_accounts_network"),
        "{c:?}"
    );
}
