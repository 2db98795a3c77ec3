//! User-agent strings that age with the calendar: browsers and the broker's app update themselves,
//! so one device's user agent changes over the months while its `device_id` stays.

use mamori_core::time::DAY_US;

use crate::world::jst;

/// What software a device runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UaKind {
    WinChrome,
    WinEdge,
    WinFirefox,
    WinIe11,
    MacSafari,
    MacChrome,
    IosApp,
    AndroidApp,
    IosSafari,
    AndroidChrome,
    /// Chrome on a Linux server (honest VPS traders).
    LinuxChrome,
}

// (release date JST y, m, d, major, build, patch)
const CHROME: &[(i64, u32, u32, u32, u32, u32)] = &[
    (2019, 4, 23, 74, 3729, 169),
    (2019, 6, 4, 75, 3770, 100),
    (2019, 7, 30, 76, 3809, 132),
    (2019, 9, 10, 77, 3865, 90),
    (2019, 10, 22, 78, 3904, 108),
    (2019, 12, 10, 79, 3945, 130),
    (2020, 2, 4, 80, 3987, 149),
    (2020, 4, 7, 81, 4044, 138),
    (2020, 5, 19, 83, 4103, 116),
    (2020, 7, 14, 84, 4147, 125),
    (2020, 8, 25, 85, 4183, 121),
    (2020, 10, 6, 86, 4240, 75),
    (2020, 11, 17, 87, 4280, 88),
];

const FIREFOX: &[(i64, u32, u32, u32)] = &[
    (2019, 5, 21, 67),
    (2019, 7, 9, 68),
    (2019, 9, 3, 69),
    (2019, 10, 22, 70),
    (2019, 12, 3, 71),
    (2020, 1, 7, 72),
    (2020, 2, 11, 73),
    (2020, 3, 10, 74),
    (2020, 4, 7, 75),
    (2020, 5, 5, 76),
    (2020, 6, 2, 77),
    (2020, 6, 30, 78),
    (2020, 7, 28, 79),
    (2020, 8, 25, 80),
    (2020, 9, 22, 81),
];

// (date, iOS text with underscores, Safari version)
const IOS: &[(i64, u32, u32, &str, &str)] = &[
    (2019, 5, 13, "12_3", "12.1.1"),
    (2019, 7, 22, "12_4", "12.1.2"),
    (2019, 9, 24, "13_1", "13.0.1"),
    (2019, 10, 28, "13_2", "13.0.3"),
    (2019, 12, 10, "13_3", "13.0.4"),
    (2020, 3, 24, "13_4", "13.1"),
    (2020, 5, 20, "13_5", "13.1.1"),
    (2020, 7, 15, "13_6", "13.1.2"),
    (2020, 9, 16, "14_0", "14.0"),
];

const IPHONES: &[&str] = &[
    "iPhone9,1",
    "iPhone9,2",
    "iPhone10,1",
    "iPhone10,4",
    "iPhone10,3",
    "iPhone11,8",
    "iPhone11,2",
    "iPhone12,1",
    "iPhone12,3",
    "iPhone12,8",
];

const ANDROIDS: &[&str] = &[
    "SO-01L", "SO-02L", "SH-01L", "SC-02L", "SOV40", "SHV43", "901SH", "SO-41A", "SH-41A",
    "Pixel 3a", "SC-51A", "SH-M12", "KYV44", "F-01L", "SO-03L", "802SH",
];

/// Number of distinct phone models a device byte selects from.
pub(crate) const MODELS: u8 = 16;

fn idx_by_date<T>(table: &[T], date: impl Fn(&T) -> i64, t: i64) -> usize {
    table.partition_point(|e| date(e) <= t).saturating_sub(1)
}

fn chrome(t: i64) -> (u32, u32, u32) {
    let i = idx_by_date(CHROME, |e| jst(e.0, e.1, e.2), t);
    let e = CHROME[i];
    if i == CHROME.len() - 1 {
        // Past the table: one major every six weeks.
        let extra = ((t - jst(e.0, e.1, e.2)) / (42 * DAY_US)).max(0) as u32;
        (e.3 + extra, e.4 + extra * 40, 70)
    } else {
        (e.3, e.4, e.5)
    }
}

fn firefox(t: i64) -> u32 {
    let i = idx_by_date(FIREFOX, |e| jst(e.0, e.1, e.2), t);
    let e = FIREFOX[i];
    if i == FIREFOX.len() - 1 {
        e.3 + ((t - jst(e.0, e.1, e.2)) / (28 * DAY_US)).max(0) as u32
    } else {
        e.3
    }
}

fn ios(t: i64) -> (&'static str, &'static str) {
    let e = IOS[idx_by_date(IOS, |e| jst(e.0, e.1, e.2), t)];
    (e.3, e.4)
}

/// The broker's app version: a minor release about every seven weeks since 2019-06.
fn app_version(t: i64) -> (u32, u32) {
    let weeks = ((t - jst(2019, 6, 1)) / (7 * DAY_US)).max(0) as u32;
    (12 + weeks / 7, weeks % 7 % 3)
}

/// The user agent of a device of kind `kind` and model byte `model` at `t`, updating `lag_days`
/// after each release.
pub(crate) fn ua_string(kind: UaKind, model: u8, t: i64, lag_days: u8) -> String {
    let t = t - i64::from(lag_days) * DAY_US;
    let win = if model.is_multiple_of(8) {
        "Windows NT 6.1; Win64; x64"
    } else {
        "Windows NT 10.0; Win64; x64"
    };
    let mac = if model.is_multiple_of(2) {
        "10_15_6"
    } else {
        "10_14_6"
    };
    let android_ver = if t >= jst(2020, 3, 1) || model.is_multiple_of(3) {
        "10"
    } else {
        "9"
    };
    let android = ANDROIDS[usize::from(model) % ANDROIDS.len()];
    let iphone = IPHONES[usize::from(model) % IPHONES.len()];
    match kind {
        UaKind::WinChrome => {
            let (m, b, p) = chrome(t);
            format!(
                "Mozilla/5.0 ({win}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{m}.0.{b}.{p} Safari/537.36"
            )
        }
        UaKind::WinEdge if t >= jst(2020, 1, 15) => {
            let (m, b, p) = chrome(t);
            format!(
                "Mozilla/5.0 ({win}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{m}.0.{b}.{p} Safari/537.36 Edg/{m}.0.{b}.{}",
                p / 2
            )
        }
        UaKind::WinEdge => format!(
            "Mozilla/5.0 ({win}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.102 Safari/537.36 Edge/18.18362"
        ),
        UaKind::WinFirefox => {
            let v = firefox(t);
            format!("Mozilla/5.0 ({win}; rv:{v}.0) Gecko/20100101 Firefox/{v}.0")
        }
        UaKind::WinIe11 => {
            let w = if model.is_multiple_of(2) {
                "Windows NT 6.1"
            } else {
                "Windows NT 10.0"
            };
            format!("Mozilla/5.0 ({w}; WOW64; Trident/7.0; rv:11.0) like Gecko")
        }
        UaKind::MacSafari => {
            let (_, s) = ios(t);
            format!(
                "Mozilla/5.0 (Macintosh; Intel Mac OS X {mac}) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{s} Safari/605.1.15"
            )
        }
        UaKind::MacChrome => {
            let (m, b, p) = chrome(t);
            format!(
                "Mozilla/5.0 (Macintosh; Intel Mac OS X {mac}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{m}.0.{b}.{p} Safari/537.36"
            )
        }
        UaKind::LinuxChrome => {
            let (m, b, p) = chrome(t);
            format!(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{m}.0.{b}.{p} Safari/537.36"
            )
        }
        UaKind::IosSafari => {
            let (i, s) = ios(t);
            format!(
                "Mozilla/5.0 (iPhone; CPU iPhone OS {i} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{s} Mobile/15E148 Safari/604.1"
            )
        }
        UaKind::AndroidChrome => {
            let (m, b, p) = chrome(t);
            format!(
                "Mozilla/5.0 (Linux; Android {android_ver}; {android}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{m}.0.{b}.{p} Mobile Safari/537.36"
            )
        }
        UaKind::IosApp => {
            let (i, _) = ios(t);
            let (mi, pa) = app_version(t);
            format!(
                "BrokerApp/5.{mi}.{pa} ({iphone}; iOS {}; ja-JP)",
                i.replace('_', ".")
            )
        }
        UaKind::AndroidApp => {
            let (mi, pa) = app_version(t);
            format!("BrokerApp/5.{mi}.{pa} (Linux; Android {android_ver}; {android}; ja-JP)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_follow_the_calendar() {
        assert!(ua_string(UaKind::WinChrome, 1, jst(2019, 6, 10), 0).contains("Chrome/75.0.3770"));
        assert!(ua_string(UaKind::WinChrome, 1, jst(2020, 9, 1), 0).contains("Chrome/85.0"));
        assert!(ua_string(UaKind::WinChrome, 1, jst(2020, 9, 1), 30).contains("Chrome/84.0"));
        assert!(ua_string(UaKind::WinEdge, 1, jst(2019, 8, 1), 0).contains("Edge/18"));
        assert!(ua_string(UaKind::WinEdge, 1, jst(2020, 8, 1), 0).contains("Edg/84"));
        assert!(ua_string(UaKind::IosSafari, 1, jst(2020, 8, 1), 0).contains("iPhone OS 13_6"));
        assert!(ua_string(UaKind::IosApp, 7, jst(2020, 8, 1), 0).contains("iOS 13.6"));
        assert!(ua_string(UaKind::WinChrome, 1, jst(2021, 6, 1), 0).contains("Chrome/9"));
        for k in [
            UaKind::AndroidApp,
            UaKind::WinFirefox,
            UaKind::WinIe11,
            UaKind::MacSafari,
        ] {
            for m in 0..MODELS {
                let s = ua_string(k, m, jst(2020, 1, 1), 3);
                assert!(!s.is_empty() && s.len() < 300 && !s.chars().any(char::is_control));
            }
        }
    }
}
