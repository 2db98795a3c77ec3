//! A fast writer for the event contract's JSON line, byte-identical to
//! [`mamori_core::Event::to_json`] (keys in the same sorted order, the same escaping and time
//! format) but without building a `serde_json::Value` per event.

use std::io::Write;
use std::net::IpAddr;

use mamori_core::Event;
use mamori_core::time::{DAY_US, HOUR_US, MINUTE_US, SECOND_US, TOKYO_OFFSET_US, civil_from_days};

fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{:04x}", c);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

fn key(out: &mut Vec<u8>, first: &mut bool, k: &str) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.push(b'"');
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
}

fn digits(out: &mut Vec<u8>, v: i64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    let mut x = v.unsigned_abs();
    while x > 0 || buf.len() - i < width {
        i -= 1;
        buf[i] = b'0' + (x % 10) as u8;
        x /= 10;
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

/// `mamori_core::time::format_tokyo`, quoted, without allocating.
fn time(out: &mut Vec<u8>, t: i64) {
    let local = t + TOKYO_OFFSET_US;
    let (y, m, d) = civil_from_days(local.div_euclid(DAY_US));
    let rem = local.rem_euclid(DAY_US);
    out.push(b'"');
    if (0..=9999).contains(&y) {
        digits(out, y, 4);
    } else {
        let _ = write!(out, "{y:04}");
    }
    out.push(b'-');
    digits(out, i64::from(m), 2);
    out.push(b'-');
    digits(out, i64::from(d), 2);
    out.push(b'T');
    digits(out, rem / HOUR_US, 2);
    out.push(b':');
    digits(out, rem % HOUR_US / MINUTE_US, 2);
    out.push(b':');
    digits(out, rem % MINUTE_US / SECOND_US, 2);
    let us = rem % SECOND_US;
    if us != 0 {
        out.push(b'.');
        digits(out, us, 6);
    }
    out.extend_from_slice(b"+09:00\"");
}

/// Appends the JSON line of `e` (without newline) to `out`: the same bytes as
/// [`Event::to_json`], several times faster.
pub fn write_event_json(e: &Event, out: &mut Vec<u8>) {
    let mut first = true;
    let f = &mut first;
    out.push(b'{');
    if let Some(a) = e.amount {
        key(out, f, "amount");
        digits(out, a, 1);
    }
    key(out, f, "channel");
    string(out, e.channel.as_str());
    key(out, f, "customer_id");
    string(out, &e.customer_id);
    if let Some(d) = &e.destination {
        key(out, f, "destination");
        let mut g = true;
        let g = &mut g;
        out.push(b'{');
        key(out, g, "account_number");
        string(out, &d.account_number);
        key(out, g, "account_type");
        string(out, &d.account_type);
        key(out, g, "bank_code");
        string(out, &d.bank_code);
        key(out, g, "branch_code");
        string(out, &d.branch_code);
        key(out, g, "holder_kana");
        string(out, &d.holder_kana);
        out.push(b'}');
    }
    if let Some(d) = &e.device_id {
        key(out, f, "device_id");
        string(out, d);
    }
    key(out, f, "event_id");
    string(out, &e.event_id);
    if let Some(ip) = e.ip {
        key(out, f, "ip");
        out.push(b'"');
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                for (i, x) in o.iter().enumerate() {
                    if i > 0 {
                        out.push(b'.');
                    }
                    digits(out, i64::from(*x), 1);
                }
            }
            IpAddr::V6(v6) => {
                let _ = write!(out, "{v6}");
            }
        }
        out.push(b'"');
    }
    key(out, f, "kind");
    string(out, e.kind.as_str());
    key(out, f, "occurred_at");
    time(out, e.occurred_at);
    if let Some(s) = e.side {
        key(out, f, "side");
        string(out, s.as_str());
    }
    if let Some(ua) = &e.user_agent {
        key(out, f, "user_agent");
        string(out, ua);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use mamori_core::{Channel, Destination, Kind, Side};

    #[test]
    fn matches_to_json_on_odd_values() {
        let mut e = Event {
            event_id: "x\"\\\n\u{1}\u{7f}é".into(),
            occurred_at: -1_234_567,
            customer_id: "C\t1".into(),
            kind: Kind::DestinationChange,
            channel: Channel::App,
            ip: Some("2001:db8::1".parse().unwrap()),
            user_agent: Some("ua/1.0 \u{8}\u{c}\r".into()),
            device_id: Some("d".into()),
            amount: Some(-5),
            side: Some(Side::Sell),
            destination: Some(Destination {
                bank_code: "0001".into(),
                branch_code: "001".into(),
                account_type: "ordinary".into(),
                account_number: "1234567".into(),
                holder_kana: "ヤマダ タロウ".into(),
            }),
        };
        for t in [0, 1, 999_999, 1_600_262_700_000_000, -86_400_000_001] {
            e.occurred_at = t;
            let mut out = Vec::new();
            write_event_json(&e, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), e.to_json());
        }
        e.ip = Some("203.0.113.7".parse().unwrap());
        e.amount = Some(0);
        e.destination = None;
        e.side = None;
        e.user_agent = None;
        let mut out = Vec::new();
        write_event_json(&e, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), e.to_json());
    }
}
