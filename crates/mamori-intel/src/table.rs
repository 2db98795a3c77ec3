//! Range CSVs (`start_ip,end_ip,asn,org` and `start_ip,end_ip,country`) and CIDR lists.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::Path;

use mamori_core::net::{ip_key, net_range, parse_ip_or_net};

use crate::error::IntelError;

/// Value of an ASN range: the AS number and the index of its organisation name, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AsnVal {
    pub asn: u32,
    pub org: Option<u32>,
}

/// A country code, two upper-case ASCII letters.
pub(crate) type CountryCode = [u8; 2];

/// Organisation names, each stored once.
#[derive(Debug, Default)]
pub(crate) struct Orgs {
    names: Vec<Box<str>>,
    index: HashMap<Box<[u8]>, u32>,
    /// The last name interned, to skip hashing for runs of one organisation.
    last: Option<(Vec<u8>, u32)>,
}

impl Orgs {
    pub(crate) fn intern(&mut self, name: &[u8]) -> u32 {
        if let Some((bytes, id)) = &self.last
            && bytes.as_slice() == name
        {
            return *id;
        }
        let id = match self.index.get(name) {
            Some(&id) => id,
            None => {
                let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
                self.names
                    .push(String::from_utf8_lossy(name).into_owned().into_boxed_str());
                self.index.insert(name.into(), id);
                id
            }
        };
        match &mut self.last {
            Some((bytes, last_id)) => {
                bytes.clear();
                bytes.extend_from_slice(name);
                *last_id = id;
            }
            None => self.last = Some((name.to_vec(), id)),
        }
        id
    }

    pub(crate) fn get(&self, id: u32) -> Option<&str> {
        self.names.get(id as usize).map(|s| &**s)
    }

    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    /// Drops the look-up index once loading is done.
    pub(crate) fn finish(&mut self) {
        self.index = HashMap::new();
        self.last = None;
        self.names.shrink_to_fit();
    }
}

/// A problem with one line, before the file and line are known.
struct LineError(String);

fn field_err(field: &str, msg: impl std::fmt::Display) -> LineError {
    LineError(format!("field `{field}`: {msg}"))
}

fn io_err(path: &Path, source: std::io::Error) -> IntelError {
    IntelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn line_err(path: &Path, line: u64, e: LineError) -> IntelError {
    IntelError::Line {
        path: path.to_path_buf(),
        line,
        message: e.0,
    }
}

fn parse_ip(field: &'static str, b: &[u8]) -> Result<IpAddr, LineError> {
    let b = b.trim_ascii();
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .ok_or_else(|| field_err(field, format_args!("{:?} is not an IP address", lossy(b))))
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// Whether a first line is a header: its first field is a name, not an address.
fn is_header(first_field: &[u8]) -> bool {
    let f = first_field.trim_ascii();
    !f.is_empty()
        && f.iter()
            .all(|&c| c.is_ascii_alphabetic() || c == b'_' || c == b' ' || c == b'-')
}

/// Reads a range CSV whose first two fields are `start_ip,end_ip`, calling `value` with the other
/// fields of every data line. `columns` names all fields, for messages.
fn read_range_csv<V>(
    path: &Path,
    columns: &[&str],
    out: &mut Vec<(u128, u128, V)>,
    mut value: impl FnMut(&csv::ByteRecord) -> Result<Option<V>, LineError>,
) -> Result<usize, IntelError> {
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(1 << 16)
        .from_reader(file);
    let mut rec = csv::ByteRecord::new();
    let mut first = true;
    let mut count = 0usize;
    loop {
        let more = rdr.read_byte_record(&mut rec).map_err(|e| {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            let message = e.to_string();
            match e.into_kind() {
                csv::ErrorKind::Io(source) => io_err(path, source),
                _ => IntelError::Line {
                    path: path.to_path_buf(),
                    line,
                    message,
                },
            }
        })?;
        if !more {
            break;
        }
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let was_first = std::mem::replace(&mut first, false);
        // A blank line reads as one empty field.
        if rec.len() == 1 && rec.get(0).is_some_and(|f| f.trim_ascii().is_empty()) {
            continue;
        }
        if was_first && rec.get(0).is_some_and(is_header) {
            continue;
        }
        let parsed =
            parse_range_line(&rec, columns, &mut value).map_err(|e| line_err(path, line, e))?;
        if let Some(item) = parsed {
            out.push(item);
            count += 1;
        }
    }
    Ok(count)
}

fn parse_range_line<V>(
    rec: &csv::ByteRecord,
    columns: &[&str],
    value: &mut impl FnMut(&csv::ByteRecord) -> Result<Option<V>, LineError>,
) -> Result<Option<(u128, u128, V)>, LineError> {
    if rec.len() != columns.len() {
        return Err(LineError(format!(
            "expected {} fields ({}), found {}",
            columns.len(),
            columns.join(","),
            rec.len()
        )));
    }
    let start = parse_ip("start_ip", rec.get(0).unwrap_or_default())?;
    let end = parse_ip("end_ip", rec.get(1).unwrap_or_default())?;
    if start.is_ipv4() != end.is_ipv4() {
        return Err(field_err(
            "end_ip",
            format_args!("{end} is not of the same IP version as start_ip {start}"),
        ));
    }
    let (lo, hi) = (ip_key(start), ip_key(end));
    if lo > hi {
        return Err(field_err(
            "end_ip",
            format_args!("{end} is before start_ip {start}"),
        ));
    }
    Ok(value(rec)?.map(|v| (lo, hi, v)))
}

fn parse_asn(b: &[u8]) -> Option<u32> {
    let b = b.trim_ascii();
    let digits = match b {
        [b'A' | b'a', b'S' | b's', rest @ ..] => rest,
        _ => b,
    };
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    u32::try_from(n).ok()
}

/// Reads an ASN CSV (`start_ip,end_ip,asn,org`; the AS number may carry an `AS` prefix; AS 0,
/// "not announced", is skipped). Returns the number of ranges read.
pub(crate) fn read_asn_csv(
    path: &Path,
    orgs: &mut Orgs,
    out: &mut Vec<(u128, u128, AsnVal)>,
) -> Result<usize, IntelError> {
    read_range_csv(path, &["start_ip", "end_ip", "asn", "org"], out, |rec| {
        let raw = rec.get(2).unwrap_or_default();
        let asn = parse_asn(raw).ok_or_else(|| {
            field_err(
                "asn",
                format_args!("{:?} is not an AS number", lossy(raw.trim_ascii())),
            )
        })?;
        if asn == 0 {
            return Ok(None);
        }
        let org = rec.get(3).unwrap_or_default().trim_ascii();
        let org = (!org.is_empty()).then(|| orgs.intern(org));
        Ok(Some(AsnVal { asn, org }))
    })
}

/// Reads a country CSV (`start_ip,end_ip,country`, ISO 3166-1 alpha-2). Returns the number of
/// ranges read.
pub(crate) fn read_country_csv(
    path: &Path,
    out: &mut Vec<(u128, u128, CountryCode)>,
) -> Result<usize, IntelError> {
    read_range_csv(path, &["start_ip", "end_ip", "country"], out, |rec| {
        let raw = rec.get(2).unwrap_or_default().trim_ascii();
        match raw {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Ok(Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => Err(field_err(
                "country",
                format_args!("{:?} is not a two-letter country code", lossy(raw)),
            )),
        }
    })
}

/// Reads a list of CIDR blocks (or single addresses), one per line; `#` starts a comment.
/// Returns the number of entries read.
pub(crate) fn read_cidr_list(
    path: &Path,
    out: &mut Vec<(u128, u128, ())>,
) -> Result<usize, IntelError> {
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let mut rdr = BufReader::with_capacity(1 << 16, file);
    let mut buf = Vec::new();
    let mut line = 0u64;
    let mut count = 0usize;
    loop {
        buf.clear();
        let n = rdr
            .read_until(b'\n', &mut buf)
            .map_err(|e| io_err(path, e))?;
        if n == 0 {
            break;
        }
        line += 1;
        let text = match line {
            1 => buf.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&buf),
            _ => &buf,
        };
        let text = match text.iter().position(|&c| c == b'#') {
            Some(i) => &text[..i],
            None => text,
        };
        let text = text.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let net = std::str::from_utf8(text)
            .map_err(|_| format!("{:?} is not valid UTF-8 text", lossy(text)))
            .and_then(parse_ip_or_net)
            .map_err(|m| line_err(path, line, LineError(m)))?;
        let (lo, hi) = net_range(net);
        out.push((lo, hi, ()));
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(content: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content.as_bytes()).unwrap();
        f
    }

    fn key(s: &str) -> u128 {
        ip_key(s.parse().unwrap())
    }

    fn asn_err(content: &str) -> String {
        let f = file(content);
        let mut orgs = Orgs::default();
        let mut out = Vec::new();
        let e = read_asn_csv(f.path(), &mut orgs, &mut out).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(&f.path().display().to_string()),
            "{msg} should name the file"
        );
        msg[f.path().display().to_string().len()..].to_string()
    }

    #[test]
    fn asn_csv_with_header_quotes_ipv6_and_prefix() {
        let f = file(concat!(
            "start_ip,end_ip,asn,org\n",
            "1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\"\n",
            "\n",
            "2.26.200.0,2.26.215.255,AS201907,\"LLC \"\"SPUTNIK\"\"\"\n",
            "3.0.0.0,3.0.0.255,0,Unannounced\n",
            "4.0.0.0,4.0.0.255,13335,\"Cloudflare, Inc.\"\n",
            "2001:200::,2001:200:1b9:ffff:ffff:ffff:ffff:ffff,2500,\n",
            "2c0f:e9a0:2:0:0:0:2a::,2c0f:e9a0:2::2a:ffff,37125,Layer3\n",
        ));
        let mut orgs = Orgs::default();
        let mut out = Vec::new();
        assert_eq!(read_asn_csv(f.path(), &mut orgs, &mut out).unwrap(), 5);
        assert_eq!(orgs.len(), 3);
        assert_eq!(out[0].0, key("1.0.0.0"));
        assert_eq!(out[0].1, key("1.0.0.255"));
        assert_eq!(out[0].2.asn, 13335);
        assert_eq!(orgs.get(out[0].2.org.unwrap()), Some("Cloudflare, Inc."));
        assert_eq!(out[2].2, out[0].2, "same org interned once");
        assert_eq!(out[1].2.asn, 201907);
        assert_eq!(orgs.get(out[1].2.org.unwrap()), Some("LLC \"SPUTNIK\""));
        assert_eq!(out[3].0, key("2001:200::"));
        assert_eq!(
            out[3].2,
            AsnVal {
                asn: 2500,
                org: None
            }
        );
        assert_eq!(out[4].0, key("2c0f:e9a0:2::2a:0"));
    }

    #[test]
    fn asn_csv_errors_name_line_and_field() {
        assert_eq!(
            asn_err("1.0.0.0,1.0.0.255,13335,A\n1.0.1.0,1.0.1.255,x,B\n"),
            ":2: field `asn`: \"x\" is not an AS number"
        );
        assert_eq!(
            asn_err("1.0.0.0,1.0.0.255,99999999999,A\n"),
            ":1: field `asn`: \"99999999999\" is not an AS number"
        );
        assert_eq!(
            asn_err("start_ip,end_ip,asn,org\n1.0.0.0,1.0.0.256,1,A\n"),
            ":2: field `end_ip`: \"1.0.0.256\" is not an IP address"
        );
        assert_eq!(
            asn_err("1.0.0.0,1.0.0.255,1,A\n1.0.0.0,1.0.0.255\n"),
            ":2: expected 4 fields (start_ip,end_ip,asn,org), found 2"
        );
        assert_eq!(
            asn_err("1.0.0.9,1.0.0.1,1,A\n"),
            ":1: field `end_ip`: 1.0.0.1 is before start_ip 1.0.0.9"
        );
        assert_eq!(
            asn_err("1.0.0.0,2001::,1,A\n"),
            ":1: field `end_ip`: 2001:: is not of the same IP version as start_ip 1.0.0.0"
        );
        // A header only counts on the first line.
        assert_eq!(
            asn_err("1.0.0.0,1.0.0.255,1,A\nstart_ip,end_ip,asn,org\n"),
            ":2: field `start_ip`: \"start_ip\" is not an IP address"
        );
        // Line numbers count physical lines, also after a quoted field spanning lines.
        assert_eq!(
            asn_err("1.0.0.0,1.0.0.255,1,\"A\nB\"\n1.0.1.0,1.0.1.255,-1,C\n"),
            ":3: field `asn`: \"-1\" is not an AS number"
        );
    }

    #[test]
    fn bom_crlf_and_blank_lines() {
        let f = file(
            "\u{feff}start_ip,end_ip,country\r\n1.0.0.0,1.0.0.255,AU\r\n\r\n1.0.1.0,1.0.1.255,CN\r\n",
        );
        let mut out = Vec::new();
        assert_eq!(read_country_csv(f.path(), &mut out).unwrap(), 2);
        assert_eq!(out[1], (key("1.0.1.0"), key("1.0.1.255"), *b"CN"));
        // Without a header, a BOM does not hide the first address.
        let f = file("\u{feff}1.0.0.0,1.0.0.255,AU\n");
        let mut out = Vec::new();
        assert_eq!(read_country_csv(f.path(), &mut out).unwrap(), 1);
        let f = file("\u{feff}10.0.0.0/8\r\n");
        let mut out = Vec::new();
        assert_eq!(read_cidr_list(f.path(), &mut out).unwrap(), 1);
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.csv");
        let e = read_country_csv(&path, &mut Vec::new()).unwrap_err();
        assert!(matches!(e, IntelError::Io { .. }));
        assert!(e.to_string().starts_with(&path.display().to_string()));
    }

    #[test]
    fn country_csv() {
        let f = file("1.0.0.0,1.0.0.255,au\n2001:2::,2001:2::ffff:ffff:ffff:ffff:ffff,JP\n");
        let mut out = Vec::new();
        assert_eq!(read_country_csv(f.path(), &mut out).unwrap(), 2);
        assert_eq!(out[0].2, *b"AU");
        assert_eq!(out[1].2, *b"JP");
        assert_eq!(out[1].1, key("2001:2::ffff:ffff:ffff:ffff:ffff"));

        let f = file("1.0.0.0,1.0.0.255,AU\n1.0.1.0,1.0.1.255,JPN\n");
        let e = read_country_csv(f.path(), &mut Vec::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}:2: field `country`: \"JPN\" is not a two-letter country code",
                f.path().display()
            )
        );
    }

    #[test]
    fn cidr_list_comments_blank_lines_and_errors() {
        let f = file(
            "# VPN ranges\n\n1.2.3.0/24\n  10.0.0.1  # a host\n2001:db8::/32\n::ffff:5.6.7.0/120\n",
        );
        let mut out = Vec::new();
        assert_eq!(read_cidr_list(f.path(), &mut out).unwrap(), 4);
        assert_eq!(out[0], (key("1.2.3.0"), key("1.2.3.255"), ()));
        assert_eq!(out[1], (key("10.0.0.1"), key("10.0.0.1"), ()));
        assert_eq!(
            out[2],
            (
                key("2001:db8::"),
                key("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"),
                ()
            )
        );
        assert_eq!(out[3], (key("5.6.7.0"), key("5.6.7.255"), ()));

        let f = file("1.2.3.0/24\n\n1.2.3.0/33\n");
        let e = read_cidr_list(f.path(), &mut Vec::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}:3: \"1.2.3.0/33\" is neither an IP address nor a CIDR block",
                f.path().display()
            )
        );
    }
}
