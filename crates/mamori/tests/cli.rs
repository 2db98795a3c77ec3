//! The command line, end to end (one test binary): the real `mamori` binary on real files and a
//! real SQLite store.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn mamori(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mamori"))
        .current_dir(dir)
        .env_remove("MAMORI_DB")
        .env_remove("MAMORI_IPDATA")
        .env_remove("MAMORI_CONFIG")
        .args(args)
        .output()
        .expect("run mamori")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = mamori(dir, args);
    assert!(
        o.status.success(),
        "mamori {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn simulate(dir: &Path, customers: &str) -> PathBuf {
    ok(
        dir,
        &[
            "simulate",
            "--customers",
            customers,
            "--seed",
            "7",
            "--out",
            "events.jsonl",
            "--labels",
            "labels.csv",
        ],
    );
    dir.join("events.jsonl")
}

fn count_lines(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .expect("read")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// Data rows of a CSV report, sorted (the report order is by time; ties may differ in neither).
fn csv_rows(report: &str) -> Vec<String> {
    report.lines().map(str::to_owned).collect()
}

#[test]
fn import_is_idempotent_and_store_equals_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let events = simulate(d, "400");
    let n = count_lines(&events);
    let o = mamori(d, &["import", "--quiet", "events.jsonl"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stderr(&o);
    assert!(
        s.contains(&format!("{n} accepted, 0 duplicates, 0 rejected")),
        "{s}"
    );
    let o = mamori(d, &["import", "--quiet", "events.jsonl"]);
    let s = stderr(&o);
    assert!(
        s.contains(&format!("0 accepted, {n} duplicates, 0 rejected")),
        "{s}"
    );

    let args = [
        "investigate",
        "--from",
        "2020-06-01",
        "--to",
        "2020-10-01",
        "--format",
        "csv",
    ];
    let from_store = ok(d, &args);
    let mut with_events = args.to_vec();
    with_events.extend(["--events", "events.jsonl", "--quiet"]);
    let from_files = ok(d, &with_events);
    assert!(
        csv_rows(&from_store).len() > 5,
        "too few procedures:\n{from_store}"
    );
    assert_eq!(csv_rows(&from_store), csv_rows(&from_files));
    assert!(from_store.starts_with("event_id,customer_id,occurred_at,channel,ip,ip_seen_before,prefix_seen_before,ip_first_seen_at,ip_days_seen,history_events,other_customers_30d,verdict,reasons"));

    // The other formats render the same investigation.
    let json = ok(
        d,
        &[
            "investigate",
            "--from",
            "2020-06-01",
            "--to",
            "2020-10-01",
            "--format",
            "json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(
        v["rows"].as_array().map(Vec::len),
        Some(csv_rows(&from_store).len() - 1)
    );
    assert_eq!(
        v["summary"]["procedures"].as_u64(),
        Some(csv_rows(&from_store).len() as u64 - 1)
    );
    ok(
        d,
        &[
            "investigate",
            "--from",
            "2020-06-01",
            "--to",
            "2020-10-01",
            "--format",
            "html",
            "--out",
            "r.html",
        ],
    );
    let html = std::fs::read_to_string(d.join("r.html")).expect("html");
    assert!(html.starts_with("<!doctype html>") && html.contains("</html>"));
    assert!(
        !html.contains("<script src") && !html.contains("<link "),
        "self-contained"
    );
    let table = ok(
        d,
        &["investigate", "--from", "2020-06-01", "--to", "2020-10-01"],
    );
    assert!(
        table.contains("procedures:") && table.contains("verdicts:"),
        "{table}"
    );
}

#[test]
fn bad_lines_are_rejected_with_their_place_and_the_rest_imported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let good = r#"{"event_id":"a1","occurred_at":"2020-09-16T22:25:00+09:00","customer_id":"c1","kind":"login","ip":"203.0.113.7"}"#;
    let bad_ip = r#"{"event_id":"a2","occurred_at":"2020-09-16T22:26:00+09:00","customer_id":"c1","kind":"login","ip":"999.1.1.1"}"#;
    let good2 = r#"{"event_id":"a3","occurred_at":"2020-09-16T22:27:00+09:00","customer_id":"c1","kind":"logout","ip":"203.0.113.7"}"#;
    std::fs::write(
        d.join("in.jsonl"),
        format!("{good}\n{bad_ip}\n\n{{oops\n{good2}\n"),
    )
    .expect("write");
    let o = mamori(
        d,
        &["import", "--quiet", "in.jsonl", "--rejects", "bad.jsonl"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stderr(&o);
    assert!(s.contains("in.jsonl:2: field `ip`"), "{s}");
    assert!(s.contains("in.jsonl:4: "), "{s}");
    assert!(s.contains("2 accepted, 0 duplicates, 2 rejected"), "{s}");
    let rejects = std::fs::read_to_string(d.join("bad.jsonl")).expect("rejects");
    assert_eq!(rejects.lines().count(), 2);
    let first: serde_json::Value =
        serde_json::from_str(rejects.lines().next().unwrap_or("")).expect("json");
    assert_eq!(first["place"], "in.jsonl:2");
    assert_eq!(first["record"], bad_ip);

    // --strict stops at the first bad line with an error naming it.
    let o = mamori(
        d,
        &[
            "--db",
            "strict.db",
            "import",
            "--quiet",
            "--strict",
            "in.jsonl",
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("in.jsonl:2: field `ip`"),
        "{}",
        stderr(&o)
    );

    // CSV, gzip and stdin.
    std::fs::write(
        d.join("in.csv"),
        "event_id,occurred_at,customer_id,kind,channel,ip,amount\n\
         b1,2020-09-16T10:00:00Z,c2,withdrawal,web,198.51.100.1,50000\n\
         b2,2020-09-16T10:00:00Z,c2,withdrawal,web,198.51.100.1,lots\n\
         b3,2020-09-16T11:00:00Z,c2,address_change,paper,,\n",
    )
    .expect("write");
    let o = mamori(
        d,
        &["import", "--quiet", "in.csv", "--rejects", "bad2.jsonl"],
    );
    let s = stderr(&o);
    assert!(s.contains("in.csv:3: field `amount`"), "{s}");
    assert!(s.contains("2 accepted, 0 duplicates, 1 rejected"), "{s}");
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(format!("{good}\n{good2}\n").as_bytes())
            .expect("gz");
        e.finish().expect("gz")
    };
    std::fs::write(d.join("again.jsonl.gz"), gz).expect("write");
    let s = stderr(&mamori(d, &["import", "--quiet", "again.jsonl.gz"]));
    assert!(s.contains("0 accepted, 2 duplicates"), "{s}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mamori"))
        .current_dir(d)
        .args(["import", "--quiet", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{}", good.replace("a1", "s1")).expect("stdin");
    }
    let o = child.wait_with_output().expect("wait");
    assert!(stderr(&o).contains("1 accepted"), "{}", stderr(&o));

    let o = mamori(d, &["import", "nope.jsonl"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nope.jsonl"), "{}", stderr(&o));
    let o = mamori(d, &["import", "in.txt"]);
    assert!(
        stderr(&o).contains("cannot tell the format"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_killed_import_leaves_whole_batches_and_a_rerun_completes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let events = simulate(d, "3000");
    let n = count_lines(&events) as u64;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mamori"))
        .current_dir(d)
        .args(["import", "--quiet", "--batch", "1000", "events.jsonl"])
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(700));
    let _ = child.kill();
    let _ = child.wait();
    let count = || -> u64 {
        let out = ok(d, &["stats"]);
        out.lines()
            .find_map(|l| l.strip_prefix("events: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no event count in {out}"))
    };
    let partial = count();
    assert_eq!(
        partial % 1000,
        0,
        "a killed import left a partial batch: {partial}"
    );
    assert!(
        partial < n,
        "the import finished before the kill; nothing was tested"
    );
    let o = mamori(d, &["import", "--quiet", "--batch", "1000", "events.jsonl"]);
    let s = stderr(&o);
    assert!(
        s.contains(&format!("{} accepted, {partial} duplicates", n - partial)),
        "{s}"
    );
    assert_eq!(count(), n);
}

#[test]
fn pivot_history_purge_and_evaluate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(
        d.join("e.jsonl"),
        [
            r#"{"event_id":"1","occurred_at":"2020-08-01T10:00:00+09:00","customer_id":"alice","kind":"login","ip":"203.0.113.7","device_id":"pa"}"#,
            r#"{"event_id":"2","occurred_at":"2020-09-10T10:00:00+09:00","customer_id":"bob","kind":"login_failed","ip":"203.0.113.9"}"#,
            r#"{"event_id":"3","occurred_at":"2020-09-10T10:01:00+09:00","customer_id":"bob","kind":"login","ip":"203.0.113.9"}"#,
            r#"{"event_id":"4","occurred_at":"2020-09-10T10:05:00+09:00","customer_id":"bob","kind":"destination_change","ip":"198.51.100.4"}"#,
            r#"{"event_id":"5","occurred_at":"2020-09-11T10:00:00+09:00","customer_id":"carol","kind":"login","ip":"192.0.2.1"}"#,
            r#"{"event_id":"6","occurred_at":"2020-09-12T10:00:00+09:00","customer_id":"alice","kind":"login","ip":"203.0.113.7","device_id":"pa"}"#,
        ]
        .join("\n"),
    )
    .expect("write");
    ok(d, &["import", "--quiet", "e.jsonl"]);
    let p = ok(
        d,
        &[
            "pivot",
            "--ip",
            "203.0.113.0/24",
            "--from",
            "2020-01-01",
            "--to",
            "2021-01-01",
        ],
    );
    assert!(p.contains("2 customers"), "{p}");
    assert!(
        p.contains("alice") && p.contains("bob") && !p.contains("carol"),
        "{p}"
    );
    assert!(p.contains("destination_change"), "{p}");
    let j = ok(
        d,
        &[
            "pivot",
            "--ip",
            "203.0.113.9",
            "--from",
            "2020-01-01",
            "--to",
            "2021-01-01",
            "--format",
            "json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&j).expect("json");
    assert_eq!(v["customers"][0]["customer_id"], "bob");
    assert_eq!(v["customers"][0]["failed_logins_from_ip"], 1);
    assert_eq!(v["customers"][0]["procedures"][0]["from_pivot"], false);

    let h = ok(
        d,
        &[
            "history",
            "--customer",
            "alice",
            "--at",
            "2020-09-12T10:00:00+09:00",
            "--ip",
            "203.0.113.7",
            "--device",
            "pa",
        ],
    );
    assert!(h.contains("1 events"), "{h}");
    assert!(h.contains("IP 203.0.113.7: seen on 1 days"), "{h}");
    assert!(h.contains("device pa: seen on 1 days"), "{h}");
    let h = ok(
        d,
        &[
            "history",
            "--customer",
            "carol",
            "--at",
            "2020-09-12T00:00:00+09:00",
            "--ip",
            "203.0.113.9",
        ],
    );
    assert!(h.contains("IP 203.0.113.9: not seen"), "{h}");
    assert!(
        h.contains("other customers on 203.0.113.9 in the 30 days before: 1 (bob)"),
        "{h}"
    );

    let o = mamori(
        d,
        &[
            "purge",
            "--older-than",
            "30d",
            "--now",
            "2020-09-11T00:00:00+09:00",
        ],
    );
    assert!(stderr(&o).contains("purged 1 events"), "{}", stderr(&o));
    let o = mamori(d, &["purge", "--older-than", "thirty days"]);
    assert!(
        !o.status.success() && stderr(&o).contains("--older-than"),
        "{}",
        stderr(&o)
    );

    // Evaluation on a small simulation runs and reports every campaign style it finds.
    simulate(d, "600");
    let e = ok(
        d,
        &[
            "evaluate",
            "--labels",
            "labels.csv",
            "--events",
            "events.jsonl",
        ],
    );
    assert!(e.contains("honest web/app destination changes:"), "{e}");
    assert!(e.contains("targets"), "{e}");
}

#[test]
fn bad_arguments_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let o = mamori(
        d,
        &["investigate", "--from", "2020-07-01", "--to", "2020-09-17"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no store at"), "{}", stderr(&o));
    let o = mamori(
        d,
        &[
            "investigate",
            "--from",
            "2020-02-30",
            "--to",
            "2020-09-17",
            "--events",
            "x.jsonl",
        ],
    );
    assert!(stderr(&o).contains("--from"), "{}", stderr(&o));
    let o = mamori(
        d,
        &[
            "investigate",
            "--from",
            "2020-07-01",
            "--to",
            "2020-09-17",
            "--channel",
            "web,fax",
        ],
    );
    assert!(stderr(&o).contains("fax"), "{}", stderr(&o));
    let o = mamori(
        d,
        &[
            "investigate",
            "--from",
            "2020-07-01",
            "--to",
            "2020-09-17",
            "--events",
            "x.jsonl",
            "--asn-csv",
            "missing.csv",
        ],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("missing.csv"),
        "{}",
        stderr(&o)
    );
}

/// Whether python3 with the duckdb package is here; under CI=true its absence fails the test.
fn duckdb_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import duckdb"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but python3 with duckdb is missing (.ci/run installs it)"
        );
        eprintln!("SKIPPED: python3 with the duckdb package is not installed (pip install duckdb)");
    }
    ok
}

/// Runs bench/duckdb/run.py in `dir`; returns its CSV.
fn duckdb(dir: &Path, args: &[&str]) -> String {
    let runner = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/duckdb/run.py");
    let o = Command::new("python3")
        .current_dir(dir)
        .arg(&runner)
        .args(args)
        .output()
        .expect("run duckdb");
    assert!(o.status.success(), "duckdb runner failed: {}", stderr(&o));
    String::from_utf8(o.stdout).expect("utf-8")
}

#[test]
fn literal_columns_equal_the_duckdb_sql() {
    if !duckdb_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    simulate(d, "1500");
    for (from, to, channel) in [
        ("2020-07-01", "2020-09-17", "web,app"),
        ("2019-06-01", "2020-10-01", "web"),
    ] {
        let ours = ok(
            d,
            &[
                "investigate",
                "--events",
                "events.jsonl",
                "--quiet",
                "--from",
                from,
                "--to",
                to,
                "--channel",
                channel,
                "--format",
                "csv",
            ],
        );
        let theirs = duckdb(
            d,
            &[
                "--events",
                "events.jsonl",
                "--from",
                from,
                "--to",
                to,
                "--channel",
                channel,
            ],
        );
        let literal = |s: &str| -> Vec<String> {
            let mut rows: Vec<String> = s
                .lines()
                .skip(1)
                .map(|l| l.split(',').take(11).collect::<Vec<_>>().join(","))
                .collect();
            rows.sort();
            rows
        };
        let (a, b) = (literal(&ours), literal(&theirs));
        assert!(a.len() > 10, "too few procedures to compare: {}", a.len());
        assert_eq!(
            a, b,
            "literal columns differ between mamori and DuckDB for {from}..{to} {channel}"
        );
    }
}

/// The reference data folder, or None (skip) when absent outside CI.
fn shared_data() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if p.join("ipintel").is_dir() {
        return Some(p);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but {} is missing",
        p.display()
    );
    eprintln!("SKIPPED: no reference data at {}", p.display());
    None
}

#[test]
fn evaluate_meets_the_targets_on_the_simulated_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    ok(
        d,
        &[
            "simulate",
            "--customers",
            "20000",
            "--seed",
            "1",
            "--out",
            "events.jsonl",
            "--labels",
            "labels.csv",
        ],
    );
    let e = ok(
        d,
        &[
            "evaluate",
            "--labels",
            "labels.csv",
            "--events",
            "events.jsonl",
        ],
    );
    for style in [
        "credential_stuffing_hosting",
        "vpn_hopping",
        "residential_proxy",
        "patient_attacker",
        "same_isp",
    ] {
        assert!(
            e.contains(&format!("  {style} ")),
            "style {style} missing:\n{e}"
        );
    }
    assert!(
        e.contains("): met"),
        "targets not met without IP data:\n{e}"
    );
    if let Some(data) = shared_data() {
        let data = data.display().to_string();
        let e = ok(
            d,
            &[
                "evaluate",
                "--labels",
                "labels.csv",
                "--events",
                "events.jsonl",
                "--ipdata",
                &data,
            ],
        );
        assert!(e.contains("): met"), "targets not met with IP data:\n{e}");
    }
}

#[test]
fn files_equal_the_store_on_unsorted_input_with_duplicates_and_bad_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let events = simulate(d, "300");
    let text = std::fs::read_to_string(&events).expect("read");
    let mut lines: Vec<Vec<u8>> = text.lines().map(|l| l.as_bytes().to_vec()).collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    for i in (1..lines.len()).rev() {
        lines.swap(i, rand(i + 1));
    }
    // Duplicates, before or after the first copy: the same event, or another one under its id
    // (a procedure, even), which wins when it comes first; and the same id for another customer,
    // which is another event.
    for i in 0..300 {
        let l = String::from_utf8(lines[rand(lines.len())].clone()).expect("utf-8");
        let dup = match i % 3 {
            0 => l,
            1 => l.replace("\"kind\":\"", "\"kind\":\"destination_change\",\"was\":\""),
            _ => l.replace("\"customer_id\":\"", "\"customer_id\":\"other-"),
        };
        let at = rand(lines.len());
        lines.insert(at, dup.into_bytes());
    }
    let bad: [&[u8]; 6] = [
        b"{oops",
        b"{\"event_id\":\"b1\",\"occurred_at\":\"2020-09-16T22:26:00+09:00\",\"customer_id\":\"c1\",\"kind\":\"login\",\"ip\":\"999.1.1.1\"}",
        b"{\"event_id\":\"b2\"}",
        b"\xff\xfe",
        b"",
        b"  \r",
    ];
    for i in 0..36 {
        let at = rand(lines.len());
        lines.insert(at, bad[i % bad.len()].to_vec());
    }
    let mut mixed = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        mixed.extend_from_slice(l);
        mixed.extend_from_slice(if i % 5 == 0 { b"\r\n" } else { b"\n" });
    }
    std::fs::write(d.join("mixed.jsonl"), &mixed).expect("write");

    let o = mamori(d, &["import", "--quiet", "mixed.jsonl"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let imported = stderr(&o);
    let rejected = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with("rejected "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(rejected(&imported).len(), 20, "{imported}");
    let counts = imported
        .lines()
        .find_map(|l| {
            l.split_once(": ")
                .map(|x| x.1)
                .filter(|_| l.starts_with("imported "))
        })
        .expect("summary")
        .to_owned();
    // "A accepted, D duplicates, R rejected"
    let n: Vec<u64> = counts
        .split(", ")
        .map(|p| {
            p.split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("count")
        })
        .collect();

    for format in ["csv", "json"] {
        let args = [
            "investigate",
            "--from",
            "2020-06-01",
            "--to",
            "2020-10-01",
            "--format",
            format,
        ];
        let from_store = ok(d, &args);
        let mut with_events = args.to_vec();
        with_events.extend(["--events", "mixed.jsonl", "--quiet"]);
        let o = mamori(d, &with_events);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(from_store, String::from_utf8_lossy(&o.stdout), "{format}");
        let s = stderr(&o);
        assert_eq!(rejected(&s), rejected(&imported), "{format}");
        assert!(
            s.contains(&format!(
                "read {} events ({} duplicates skipped, {} rejected)",
                n[0], n[1], n[2]
            )),
            "{s}\nimport: {counts}"
        );
        assert!(
            s.contains(&format!("… {} rejected records in all", n[2])),
            "{s}"
        );
    }
    // 200 true duplicates (the other 100 are the same ids for other customers).
    assert!(n[1] >= 190 && n[2] == 24, "{counts}");
}

#[test]
fn a_regrouped_import_of_a_time_ordered_log_equals_a_direct_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let events = simulate(d, "400");
    let text = std::fs::read_to_string(&events).expect("read");
    let time_of = |l: &str| {
        l.split("\"occurred_at\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("")
            .to_owned()
    };
    let mut lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines.sort_by_key(|l| time_of(l));
    // A later copy of a destination change in the investigated period, made a trade: the first
    // copy must win either way.
    let change = lines
        .iter()
        .rev()
        .find(|l| {
            l.contains("\"kind\":\"destination_change\"")
                && l.contains("\"channel\":\"web\"")
                && time_of(l).as_str() < "2020-10"
        })
        .expect("a destination change")
        .replace("\"kind\":\"destination_change\"", "\"kind\":\"trade\"");
    let mut log = lines.join("\n");
    log.push('\n');
    log.push_str(&change);
    log.push_str("\n{\"event_id\":\"broken\"\n");
    std::fs::write(d.join("log.jsonl"), &log).expect("write");

    // `mamori --db DB import --quiet --regroup MODE [EXTRA…] FILE`.
    let import = |db: &str, mode: &str, extra: &[&str], file: &str| {
        let mut args = vec!["--db", db, "import", "--quiet", "--regroup", mode];
        args.extend_from_slice(extra);
        args.push(file);
        mamori(d, &args)
    };
    let direct = import("direct.db", "never", &[], "log.jsonl");
    // Several transactions per regrouping bucket.
    let regrouped = import("regrouped.db", "always", &["--batch", "100"], "log.jsonl");
    let n = lines.len();
    for o in [&direct, &regrouped] {
        assert!(o.status.success(), "{}", stderr(o));
        let s = stderr(o);
        assert!(
            s.contains(&format!("{n} accepted, 1 duplicates, 1 rejected")),
            "{s}"
        );
        assert!(
            s.contains("log.jsonl:"),
            "the bad line is reported by place: {s}"
        );
    }
    let report = |db: &str| {
        ok(
            d,
            &[
                "--db",
                db,
                "investigate",
                "--from",
                "2020-06-01",
                "--to",
                "2020-10-01",
                "--format",
                "csv",
            ],
        )
    };
    let want = report("direct.db");
    assert!(
        want.lines().count() > 10,
        "too few procedures to compare: {want}"
    );
    assert_eq!(report("regrouped.db"), want);
    // The temporary files are gone.
    let left: Vec<String> = std::fs::read_dir(d)
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("regrouped.db."))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // Customer-grouped input regrouped anyway, with tiny buckets: the first records sample only
    // the first customers, so the last range takes the rest and is split again by hash.
    let o = import(
        "skewed.db",
        "always",
        &["--regroup-bucket-bytes", "20000"],
        "events.jsonl",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let direct_sorted = import("sorted.db", "never", &[], "events.jsonl");
    assert!(direct_sorted.status.success());
    assert_eq!(report("skewed.db"), report("sorted.db"));
    // Importing again adds nothing.
    let again = import("regrouped.db", "always", &[], "log.jsonl");
    assert!(
        stderr(&again).contains(&format!("0 accepted, {} duplicates", n + 1)),
        "{}",
        stderr(&again)
    );
}

#[test]
fn monitor_columns_equal_the_duckdb_sql() {
    if !duckdb_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    simulate(d, "3000");
    ok(d, &["import", "--quiet", "events.jsonl"]);
    for (from, to, link) in [
        ("2020-06-01", "2020-10-01", "90"),
        ("2020-09-16", "2020-09-17", "7"),
    ] {
        let config = d.join(format!("link{link}.toml"));
        std::fs::write(
            &config,
            format!("[policy]\ndestination_link_days = {link}\n"),
        )
        .expect("config");
        let ours = ok(
            d,
            &[
                "--config",
                config.to_str().expect("path"),
                "monitor",
                "--from",
                from,
                "--to",
                to,
                "--format",
                "csv",
            ],
        );
        let theirs = duckdb(
            d,
            &[
                "--report",
                "monitor",
                "--events",
                "events.jsonl",
                "--from",
                from,
                "--to",
                to,
                "--link-days",
                link,
            ],
        );
        let ours: Vec<Vec<String>> = ours
            .lines()
            .map(|l| l.split(',').take(10).map(str::to_owned).collect())
            .collect();
        let theirs: Vec<Vec<String>> = theirs
            .lines()
            .map(|l| l.split(',').map(str::to_owned).collect())
            .collect();
        assert_eq!(ours[0], theirs[0], "headers");
        assert_eq!(
            ours, theirs,
            "monitor columns differ from DuckDB for {from}..{to}"
        );
        if link == "90" {
            // The comparison covers every kind of value.
            let col = |i: usize, v: &str| ours.iter().skip(1).filter(|r| r[i] == v).count();
            assert!(ours.len() > 500, "{} withdrawals", ours.len());
            assert!(
                col(5, "") > 0 && ours.len() - 1 - col(5, "") > 10,
                "linked changes"
            );
            for i in [6, 7, 8] {
                assert!(col(i, "true") > 0 && col(i, "false") > 0, "column {i}");
            }
            assert!(ours.iter().skip(1).any(|r| r[9] != "0"), "other customers");
        }
    }
}

#[test]
fn monitor_evaluate_and_config_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    simulate(d, "1500");
    ok(d, &["import", "--quiet", "events.jsonl"]);
    // The day's report in every format.
    let table = ok(d, &["monitor", "--date", "2020-09-16"]);
    assert!(
        table
            .starts_with("Withdrawals from 2020-09-16T00:00:00+09:00 to 2020-09-17T00:00:00+09:00"),
        "{table}"
    );
    assert!(table.contains("withdrawal_ip_seen_before") && table.contains("allow"));
    let json: serde_json::Value = serde_json::from_str(&ok(
        d,
        &["monitor", "--date", "2020-09-16", "--format", "json"],
    ))
    .expect("json");
    let rows = json["rows"].as_array().expect("rows");
    assert_eq!(
        json["summary"]["withdrawals"].as_u64(),
        Some(rows.len() as u64)
    );
    assert!(!rows.is_empty());
    ok(
        d,
        &[
            "monitor",
            "--from",
            "2020-09-01",
            "--to",
            "2020-09-17",
            "--format",
            "html",
            "--out",
            "m.html",
        ],
    );
    let html = std::fs::read_to_string(d.join("m.html")).expect("html");
    assert!(
        html.starts_with("<!doctype html>")
            && html.contains("出金モニタリング")
            && html.ends_with("</html>\n")
    );
    let e = mamori(d, &["monitor", "--date", "2020-13-01"]);
    assert!(
        !e.status.success() && stderr(&e).contains("--date"),
        "{}",
        stderr(&e)
    );

    // The decisions against the simulator's labels.
    let ev = ok(d, &["evaluate", "--monitor", "--labels", "labels.csv"]);
    assert!(
        ev.contains("fraudulent withdrawals:") && ev.contains("honest logins:"),
        "{ev}"
    );
    let fraud_line = ev
        .lines()
        .find(|l| l.starts_with("fraudulent withdrawals:"))
        .expect("line");
    assert!(!fraud_line.contains(": 0,"), "{ev}");

    // config check / show.
    let out = ok(d, &["config", "check"]);
    assert!(out.contains("defaults apply"), "{out}");
    std::fs::write(d.join("mamori.toml"), "[policy]\nchain_hours = 48\n").expect("write");
    assert!(ok(d, &["config", "check"]).contains("mamori.toml: valid"));
    assert!(ok(d, &["config", "show"]).contains("chain_hours = 48"));
    std::fs::write(
        d.join("mamori.toml"),
        "[policy]\nchain_hours = 48\nchian = 1\n",
    )
    .expect("write");
    let e = mamori(d, &["config", "check"]);
    assert!(!e.status.success());
    assert!(
        stderr(&e).contains("mamori.toml: line 3, policy.chian: unknown field"),
        "{}",
        stderr(&e)
    );
    // A broken configuration stops every command, not only `config check`.
    let e = mamori(d, &["monitor", "--date", "2020-09-16"]);
    assert!(
        !e.status.success() && stderr(&e).contains("policy.chian"),
        "{}",
        stderr(&e)
    );
    std::fs::write(
        d.join("mamori.toml"),
        "[intel]\nasn_mmdb = \"missing.mmdb\"\n",
    )
    .expect("write");
    let e = mamori(d, &["config", "check"]);
    assert!(
        !e.status.success() && stderr(&e).contains("missing.mmdb"),
        "{}",
        stderr(&e)
    );
}

/// A `mamori serve` process on a free port of loopback.
struct ServeProcess {
    child: std::process::Child,
    base: String,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        // SIGKILL: the test's kill -9, or cleanup after a failure.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServeProcess {
    fn start(dir: &Path) -> ServeProcess {
        Self::start_logging(dir, "warn", None)
    }

    /// On the store `db` names (a PostgreSQL URL, say) instead of the directory's file.
    fn start_on(dir: &Path, db: &str) -> ServeProcess {
        Self::start_with(dir, "warn", None, &["--db", db])
    }

    /// With `RUST_LOG=level`, its standard error (the JSON logs) into `log` if given.
    fn start_logging(dir: &Path, level: &str, log: Option<&Path>) -> ServeProcess {
        Self::start_with(dir, level, log, &[])
    }

    fn start_with(dir: &Path, level: &str, log: Option<&Path>, global: &[&str]) -> ServeProcess {
        let stderr = match log {
            Some(p) => Stdio::from(std::fs::File::create(p).expect("log file")),
            None => Stdio::null(),
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_mamori"))
            .current_dir(dir)
            .env_remove("MAMORI_DB")
            .env_remove("MAMORI_CONFIG")
            .env("RUST_LOG", level)
            .args(global)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start mamori serve");
        let base = format!("http://127.0.0.1:{port}");
        let client = blocking_http::client();
        for _ in 0..400 {
            if client
                .get(format!("{base}/readyz"))
                .send()
                .is_ok_and(|r| r.status() == 200)
            {
                return ServeProcess { child, base };
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("mamori serve did not get ready");
    }
}

/// Blocking HTTP for tests, on reqwest's async client and a small runtime.
mod blocking_http {
    use reqwest::{Client, RequestBuilder, Result};
    pub struct Blocking {
        rt: tokio::runtime::Runtime,
        c: Client,
    }
    pub struct Req<'a> {
        b: &'a Blocking,
        r: RequestBuilder,
    }
    pub struct Resp {
        status: u16,
        pub body: String,
    }
    impl Resp {
        pub fn status(&self) -> u16 {
            self.status
        }
    }
    pub fn client() -> Blocking {
        Blocking {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt"),
            c: Client::new(),
        }
    }
    impl Blocking {
        pub fn get(&self, url: String) -> Req<'_> {
            Req {
                b: self,
                r: self.c.get(url),
            }
        }
        pub fn post(&self, url: String) -> Req<'_> {
            Req {
                b: self,
                r: self.c.post(url),
            }
        }
    }
    impl Req<'_> {
        pub fn bearer(self, k: &str) -> Self {
            Req {
                b: self.b,
                r: self.r.bearer_auth(k),
            }
        }
        pub fn json(self, v: &serde_json::Value) -> Self {
            Req {
                b: self.b,
                r: self.r.json(v),
            }
        }
        pub fn send(self) -> Result<Resp> {
            self.b.rt.block_on(async {
                let r = self.r.send().await?;
                let status = r.status().as_u16();
                Ok(Resp {
                    status,
                    body: r.text().await?,
                })
            })
        }
    }
}

#[test]
fn acknowledged_events_survive_kill_9() {
    use mamori_store::HistoryReader;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let key = ok(
        d,
        &["apikey", "create", "--name", "loader", "--scopes", "ingest"],
    );
    let key = key.trim().to_owned();
    assert!(key.starts_with("mmr_"), "{key}");
    let server = ServeProcess::start(d);
    // Four clients send batches until the server dies; what was acknowledged is kept.
    let acked = load_then_kill(server, &key, 20_000, |client, base, key, t, i| {
        let ids: Vec<String> = (0..200).map(|j| format!("k{t}-{i}-{j}")).collect();
        let events: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| {
                serde_json::json!({"event_id": id, "customer_id": format!("K{t}"),
                "kind": "login", "channel": "web", "occurred_at": "2020-10-01T10:00:00+09:00",
                "ip": "192.0.2.1"})
            })
            .collect();
        match client
            .post(format!("{base}/v1/events"))
            .bearer(key)
            .json(&serde_json::json!({"events": events}))
            .send()
        {
            Ok(r) if r.status() == 200 => {
                assert!(r.body.contains("\"accepted\":200"), "{}", r.body);
                Some(ids)
            }
            Ok(r) => panic!("unexpected answer {}: {}", r.status(), r.body),
            Err(_) => None, // the server died mid-request: not acknowledged
        }
    });
    assert!(acked.len() >= 20_000);
    // The server starts again on the same store, and every acknowledged event is there.
    drop(ServeProcess::start(d));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let store = mamori_store::SqliteStore::open(&d.join("mamori.db"))
            .await
            .expect("open");
        let mut stored = std::collections::HashSet::new();
        for t in 0..4 {
            for e in store
                .customer_events(&format!("K{t}"), 0, i64::MAX)
                .await
                .expect("events")
            {
                stored.insert(e.event_id);
            }
        }
        let missing: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
        assert!(
            missing.is_empty(),
            "{} acknowledged events lost, e.g. {:?}",
            missing.len(),
            missing.first()
        );
        eprintln!(
            "{} acknowledged, {} stored after kill -9",
            acked.len(),
            stored.len()
        );
        store.close().await;
    });
}

/// The PostgreSQL the tests use (`MAMORI_TEST_PG`, else the machine's own), with a fresh schema
/// of its own: `(url of the schema, admin url, schema)`. `None` (the test skips) when there is
/// no PostgreSQL, except under `CI=true`, where that is a failure.
fn fresh_pg_schema(what: &str) -> Option<(String, String, String)> {
    use sqlx::Connection;
    let admin = std::env::var("MAMORI_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!(
        "mamori_{what}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let made = rt.block_on(async {
        let mut c = sqlx::PgConnection::connect(&admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut c)
            .await?;
        c.close().await
    });
    if let Err(e) = made {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no PostgreSQL at {admin} under CI=true: {e}"
        );
        eprintln!("skipped: no PostgreSQL at {admin} ({e})");
        return None;
    }
    let sep = if admin.contains('?') { '&' } else { '?' };
    Some((
        format!("{admin}{sep}options[search_path]={schema}"),
        admin,
        schema,
    ))
}

/// An import into PostgreSQL loads the months new to the store beside it and indexes them when
/// it ends: the report says so, a second import finds every event a duplicate, and the seed's
/// investigation over the store says what it says over the embedded store.
#[test]
fn import_into_postgres_answers_as_the_embedded_store() {
    let Some((db, admin, schema)) = fresh_pg_schema("import") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let events = simulate(d, "300");
    let n = count_lines(&events);
    let s = stderr(&mamori(
        d,
        &["--db", &db, "import", "--quiet", "events.jsonl"],
    ));
    assert!(
        s.contains(&format!("{n} accepted, 0 duplicates, 0 rejected;"))
            && s.contains("new months indexed in"),
        "{s}"
    );
    let s = stderr(&mamori(
        d,
        &["--db", &db, "import", "--quiet", "events.jsonl"],
    ));
    assert!(
        s.contains(&format!("0 accepted, {n} duplicates, 0 rejected")),
        "{s}"
    );
    assert!(!s.contains("indexed"), "no month was new: {s}");
    ok(d, &["import", "--quiet", "events.jsonl"]);
    let args = [
        "investigate",
        "--from",
        "2020-06-01",
        "--to",
        "2020-10-01",
        "--format",
        "csv",
    ];
    let lite = ok(d, &args);
    let mut on_pg = vec!["--db", db.as_str()];
    on_pg.extend(args);
    let pg = ok(d, &on_pg);
    assert!(csv_rows(&lite).len() > 5, "too few procedures:\n{lite}");
    assert_eq!(csv_rows(&pg), csv_rows(&lite));
    drop_pg_schema(&admin, &schema);
}

fn drop_pg_schema(admin: &str, schema: &str) {
    use sqlx::Connection;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let _ = rt.block_on(async {
        let mut c = sqlx::PgConnection::connect(admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&mut c)
            .await?;
        c.close().await
    });
}

#[test]
fn two_nodes_on_one_postgres_give_the_same_answers() {
    let Some((db, admin, schema)) = fresh_pg_schema("nodes") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let key = ok(
        d,
        &[
            "--db",
            &db,
            "apikey",
            "create",
            "--name",
            "nodes",
            "--scopes",
            "ingest,assess,read",
        ],
    );
    let key = key.trim().to_owned();
    let a = ServeProcess::start_on(d, &db);
    let b = ServeProcess::start_on(d, &db);
    let client = blocking_http::client();
    // The same 300 events sent to both nodes at once: each is stored once.
    let events: Vec<serde_json::Value> = (0..300)
        .map(|i| {
            serde_json::json!({"event_id": format!("n{i}"), "customer_id": format!("N{}", i % 3),
                "kind": if i % 10 == 0 { "login_failed" } else { "login" }, "channel": "web",
                "occurred_at": format!("2020-10-{:02}T10:{:02}:00+09:00", 1 + i / 60, i % 60),
                "ip": format!("192.0.2.{}", i % 7), "device_id": format!("dev-{}", i % 3)})
        })
        .collect();
    let accepted: Vec<u64> = std::thread::scope(|sc| {
        let hs: Vec<_> = [&a.base, &b.base]
            .into_iter()
            .map(|base| {
                let (key, events) = (&key, &events);
                sc.spawn(move || {
                    let c = blocking_http::client();
                    let mut n = 0;
                    for chunk in events.chunks(50) {
                        let r = c
                            .post(format!("{base}/v1/events"))
                            .bearer(key)
                            .json(&serde_json::json!({"events": chunk}))
                            .send()
                            .expect("post events");
                        assert_eq!(r.status(), 200, "{}", r.body);
                        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
                        n += v["accepted"].as_u64().expect("accepted");
                    }
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("sender")).collect()
    });
    assert_eq!(
        accepted.iter().sum::<u64>(),
        300,
        "each event stored by exactly one node: {accepted:?}"
    );
    // Both nodes answer the same about a customer and an IP.
    for path in [
        "/v1/customers/N1/history?at=2020-10-10",
        "/v1/customers/N2/history?at=2020-10-03T12:00:00%2B09:00",
        "/v1/ips/192.0.2.3?from=2020-10-01&to=2020-10-10",
    ] {
        let get = |base: &str| {
            let r = client
                .get(format!("{base}{path}"))
                .bearer(&key)
                .send()
                .expect("get");
            assert_eq!(r.status(), 200, "{path}: {}", r.body);
            r.body
        };
        let (x, y) = (get(&a.base), get(&b.base));
        assert_eq!(x, y, "{path}: the nodes differ");
        assert!(x.contains("192.0.2."), "{path}: {x}");
    }
    // The same attempt assessed on both nodes gets the same decision.
    let attempt = |base: &str, id: &str, ip: &str| {
        let r = client
            .post(format!("{base}/v1/assess"))
            .bearer(&key)
            .json(
                &serde_json::json!({"event_id": id, "customer_id": "N1", "kind": "login",
                "channel": "web", "occurred_at": "2020-10-06T09:00:00+09:00", "ip": ip,
                "device_id": "dev-1"}),
            )
            .send()
            .expect("assess");
        assert_eq!(r.status(), 200, "{}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        (v["decision"].clone(), v["score"].clone())
    };
    assert_eq!(
        attempt(&a.base, "q1", "198.51.100.9"),
        attempt(&b.base, "q2", "198.51.100.9")
    );
    assert_eq!(
        attempt(&a.base, "q3", "192.0.2.1"),
        attempt(&b.base, "q4", "192.0.2.1")
    );
    // A switch set elsewhere (the CLI, on the same database) reaches both nodes within a second.
    let withdrawal = |base: &str, id: &str| {
        let r = client
            .post(format!("{base}/v1/assess"))
            .bearer(&key)
            .json(
                &serde_json::json!({"event_id": id, "customer_id": "N1", "kind": "withdrawal",
                "channel": "web", "ip": "192.0.2.1", "device_id": "dev-1", "amount": 1000}),
            )
            .send()
            .expect("assess");
        assert_eq!(r.status(), 200, "{}", r.body);
        r.body.contains("procedure_switched_off")
    };
    assert!(!withdrawal(&a.base, "w0") && !withdrawal(&b.base, "w1"));
    ok(
        d,
        &[
            "--db",
            &db,
            "switch",
            "set",
            "withdrawal",
            "web",
            "off",
            "--reason",
            "wave",
            "--actor",
            "staff:sato",
        ],
    );
    let mut i = 0;
    reaches_both("the switch", [&a.base, &b.base], |base| {
        i += 1;
        withdrawal(base, &format!("w-{i}"))
    });
    // So does a policy set by the CLI: here a history of one day, so that the history the nodes
    // answer by default (the policy's `history_days`) no longer reaches back to the logins.
    let policy = |base: &str| {
        let r = client
            .get(format!("{base}/v1/policy"))
            .bearer(&key)
            .send()
            .expect("policy");
        assert_eq!(r.status(), 200, "{}", r.body);
        serde_json::from_str::<serde_json::Value>(&r.body).expect("json")
    };
    let history = |base: &str| {
        let r = client
            .get(format!("{base}/v1/customers/N1/history?at=2020-10-10"))
            .bearer(&key)
            .send()
            .expect("history");
        assert_eq!(r.status(), 200, "{}", r.body);
        r.body
    };
    for base in [&a.base, &b.base] {
        let p = policy(base);
        assert_eq!(p["source"], "configuration", "{p}");
        assert!(p["revision"].is_null(), "{p}");
        assert!(history(base).contains("192.0.2."));
    }
    let shown = ok(d, &["--db", &db, "config", "show"]);
    let one_day = shown.replace("history_days = 365\n", "history_days = 1\n");
    assert_ne!(one_day, shown, "{shown}");
    std::fs::write(d.join("one-day.toml"), &one_day).expect("write");
    let out = ok(
        d,
        &[
            "--db",
            &db,
            "policy",
            "set",
            "one-day.toml",
            "--reason",
            "drill",
            "--actor",
            "staff:sato",
        ],
    );
    assert!(out.contains("revision 1"), "{out}");
    reaches_both("the policy", [&a.base, &b.base], |base| {
        !history(base).contains("192.0.2.")
    });
    for base in [&a.base, &b.base] {
        let p = policy(base);
        assert_eq!(
            (p["source"].as_str(), p["revision"].as_i64()),
            (Some("store"), Some(1)),
            "{p}"
        );
        assert_eq!(p["set_by"], "staff:sato", "{p}");
        assert_eq!(p["policy"]["history_days"], 1, "{p}");
    }
    let shown = ok(d, &["--db", &db, "policy", "show"]);
    assert!(
        shown.starts_with("# revision 1 set ") && shown.contains("staff:sato: drill"),
        "{shown}"
    );
    drop((a, b));
    drop_pg_schema(&admin, &schema);
}

/// Polls both nodes every 20 ms (for 3 s at most) until `changed` holds on each, and asserts that
/// it did within 1.2 s of the call on both: a change made elsewhere reaching every node.
fn reaches_both(what: &str, nodes: [&str; 2], mut changed: impl FnMut(&str) -> bool) {
    let set = std::time::Instant::now();
    let mut seen = [None, None];
    while seen.iter().any(Option::is_none) && set.elapsed() < std::time::Duration::from_secs(3) {
        for (n, base) in nodes.into_iter().enumerate() {
            if seen[n].is_none() && changed(base) {
                seen[n] = Some(set.elapsed());
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    eprintln!("{what} reached the nodes after {seen:?}");
    for s in seen {
        let s = s.unwrap_or_else(|| panic!("{what} never reached a node"));
        assert!(s <= std::time::Duration::from_millis(1200), "{what}: {s:?}");
    }
}

/// Runs SQL on the store as someone with a SQLite shell would (what `audit verify` must catch).
fn tamper(db: &Path, sql: &[&str]) {
    use sqlx::Connection;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        for s in sql {
            // The test's own literal statements.
            sqlx::query(sqlx::AssertSqlSafe(*s))
                .execute(&mut c)
                .await
                .unwrap();
        }
        c.close().await.unwrap();
    });
}

#[test]
fn customers_switches_and_a_tampered_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("customers.csv"),
        "customer_id,name,name_kana,birth_date,postal_code,address,phone,email,bank_code,branch_code,account_number,holder_kana\n\
         C1,山田　太郎,ヤマダ　タロウ,1985/3/15,100-0005,東京都千代田区丸の内1-1-1,０９０-１２３４-５６７８,taro.yamada@example.co.jp,0001,123,7654321,ﾔﾏﾀﾞ ﾀﾛｳ\n\
         C2,佐藤　花子,サトウ　ハナコ,1990-02-30,,,,,,,,\n\
         C3,鈴木　一郎,スズキ　イチロウ,,,,,,,,,\n",
    )
    .unwrap();
    let o = mamori(
        d,
        &[
            "customers",
            "import",
            "customers.csv",
            "--actor",
            "staff:sato",
        ],
    );
    assert!(
        !o.status.success(),
        "a refused row makes the exit status fail"
    );
    let err = stderr(&o);
    assert!(
        err.contains("customers.csv:3, field birth_date: not a date"),
        "{err}"
    );
    assert!(
        !err.contains("1990-02-30") && !err.contains("佐藤"),
        "no personal data: {err}"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("2 added, 0 updated, 1 rows refused"));

    // Masked by default.
    let shown = ok(d, &["customers", "show", "C1"]);
    for secret in ["1985", "7654321", "丸の内", "1234-5678", "taro.yamada"] {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
    }
    assert!(
        shown.contains("****321") && shown.contains("東京都千代田区***"),
        "{shown}"
    );
    // Revealed only with a reason, and audited.
    let o = mamori(d, &["customers", "show", "C1", "--reveal"]);
    assert!(!o.status.success());
    let shown = ok(
        d,
        &[
            "customers",
            "show",
            "C1",
            "--reveal",
            "--reason",
            "ticket 4711",
            "--actor",
            "staff:ito",
        ],
    );
    assert!(shown.contains("7654321") && shown.contains("1985-03-15"));
    let o = mamori(d, &["customers", "show", "C9"]);
    assert!(stderr(&o).contains("no customer \"C9\""));

    // The switch.
    ok(
        d,
        &[
            "switch",
            "set",
            "destination_change",
            "web",
            "off",
            "--reason",
            "takeover wave",
            "--actor",
            "staff:sato",
        ],
    );
    let list = ok(d, &["switch", "list"]);
    assert!(
        list.contains("destination_change")
            && list.contains("OFF")
            && list.contains("takeover wave"),
        "{list}"
    );
    let o = mamori(
        d,
        &[
            "switch",
            "set",
            "login_failed",
            "web",
            "off",
            "--reason",
            "nope",
        ],
    );
    assert!(stderr(&o).contains("cannot be switched"), "{}", stderr(&o));

    // The audit log: import, reveal, switch; intact.
    let listed = ok(d, &["audit", "list"]);
    let actions: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert_eq!(
        actions,
        ["customers.import", "personal.reveal", "switch.set"],
        "{listed}"
    );
    assert!(listed.contains("ticket 4711"));
    let v = ok(d, &["audit", "verify"]);
    assert!(v.starts_with("audit log intact: 3 entries; head 3:"), "{v}");
    let head = v.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(ok(d, &["audit", "verify", "--head", &head]).contains("intact"));

    // Tampering, each on a copy: modified, deleted in the middle, cut at the end.
    let db = d.join("mamori.db");
    let cases: [(&str, &[&str], &str); 4] = [
        (
            "modified",
            &[
                "DROP TRIGGER audit_log_no_update",
                "UPDATE audit_log SET detail = '{\"reason\":\"routine\"}' WHERE seq = 2",
            ],
            "entry 2: its content does not match its hash",
        ),
        (
            "deleted",
            &[
                "DROP TRIGGER audit_log_no_delete",
                "DELETE FROM audit_log WHERE seq = 2",
            ],
            "entry 3: expected sequence number 2",
        ),
        (
            "cut",
            &[
                "DROP TRIGGER audit_log_no_delete",
                "DELETE FROM audit_log WHERE seq = 3",
            ],
            "the log ends at entry 2 but its head says 3",
        ),
        (
            "cut with the head moved",
            &[
                "DROP TRIGGER audit_log_no_delete",
                "DELETE FROM audit_log WHERE seq = 3",
                "UPDATE audit_head SET seq = 2, hash = (SELECT hash FROM audit_log WHERE seq = 2)",
            ],
            "missing or differs from the head recorded earlier",
        ),
    ];
    for (what, sql, want) in cases {
        let copy = d.join(format!("{}.db", what.replace(' ', "_")));
        std::fs::copy(&db, &copy).unwrap();
        tamper(&copy, sql);
        let o = mamori(
            d,
            &[
                "--db",
                copy.to_str().unwrap(),
                "audit",
                "verify",
                "--head",
                &head,
            ],
        );
        assert!(!o.status.success(), "{what}: verify passed");
        assert!(stderr(&o).contains(want), "{what}: {}", stderr(&o));
    }
    // The append-only triggers refuse plain updates.
    let copy = d.join("plain.db");
    std::fs::copy(&db, &copy).unwrap();
    let r = std::panic::catch_unwind(|| tamper(&copy, &["DELETE FROM audit_log WHERE seq = 1"]));
    assert!(r.is_err(), "the trigger let a delete through");

    // Staff actions from the command line, each audited: freeze, unfreeze, API keys.
    let freeze = |cmd: &str, reason: &str| {
        mamori(
            d,
            &[
                "customers",
                cmd,
                "C1",
                "--reason",
                reason,
                "--actor",
                "staff:ito",
            ],
        )
    };
    assert!(freeze("freeze", "call from the police").status.success());
    let again = freeze("freeze", "call from the police");
    assert!(String::from_utf8_lossy(&again.stdout).contains("already frozen"));
    let shown = ok(d, &["customers", "show", "C1"]);
    assert!(
        shown.contains("withdrawals frozen") && shown.contains("staff:ito"),
        "{shown}"
    );
    assert!(
        !freeze("freeze", "no").status.success(),
        "a reason of 2 chars"
    );
    assert!(freeze("unfreeze", "customer called back").status.success());
    let o = freeze("unfreeze", "customer called back");
    assert!(stderr(&o).contains("not frozen"), "{}", stderr(&o));
    let o = mamori(
        d,
        &[
            "customers",
            "unlock",
            "C1",
            "--kind",
            "login",
            "--reason",
            "ID checked",
        ],
    );
    assert!(
        stderr(&o).contains("no wrong login passwords"),
        "{}",
        stderr(&o)
    );
    // The freeze's notice waits in the outbox (no [mail] here).
    let listed = ok(d, &["notices", "--customer", "C1"]);
    assert!(
        listed.contains("withdrawals_frozen") && listed.contains("waiting"),
        "{listed}"
    );
    let key = ok(
        d,
        &[
            "apikey",
            "create",
            "--name",
            "ops",
            "--scopes",
            "read",
            "--actor",
            "staff:sato",
        ],
    );
    let key_id = key
        .trim()
        .trim_start_matches("mmr_")
        .split('_')
        .next()
        .unwrap()
        .to_owned();
    ok(d, &["apikey", "revoke", &key_id, "--actor", "staff:sato"]);
    let listed = ok(d, &["audit", "list"]);
    let actions: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert_eq!(
        actions[3..],
        [
            "withdrawals.freeze",
            "withdrawals.unfreeze",
            "apikey.create",
            "apikey.revoke"
        ],
        "{listed}"
    );
    assert!(ok(d, &["audit", "verify"]).starts_with("audit log intact: 7 entries"));

    // A lost phone: staff remove the authenticator, audited, and the customer is told.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        use mamori_store::SecondFactors;
        let store = mamori_store::SqliteStore::open(&db).await.expect("open");
        assert!(
            store
                .begin_totp("C1", b"0123456789abcdefghij", 1)
                .await
                .unwrap()
        );
        let note = mamori_store::AuditNote {
            actor: "customer:C1".into(),
            action: "credential.change".into(),
            target: "customer:C1".into(),
            detail: serde_json::json!({"credential": "totp", "change": "added"}),
        };
        assert!(store.confirm_totp("C1", 5, &[], 2, &note).await.unwrap());
        store.close().await;
    });
    let shown = ok(d, &["customers", "show", "C1"]);
    assert!(shown.contains("authenticator app (TOTP): since"), "{shown}");
    let remove = || {
        mamori(
            d,
            &[
                "customers",
                "remove-factor",
                "C1",
                "--factor",
                "totp",
                "--reason",
                "lost phone; ID checked at the counter",
                "--actor",
                "staff:ito",
            ],
        )
    };
    assert!(remove().status.success());
    let o = remove();
    assert!(stderr(&o).contains("no second factor"), "{}", stderr(&o));
    assert!(!ok(d, &["customers", "show", "C1"]).contains("TOTP"));
    let listed = ok(d, &["audit", "list"]);
    let last = listed.lines().last().unwrap_or_default();
    assert!(
        last.contains("credential.change")
            && last.contains("staff:ito")
            && last.contains("lost phone"),
        "{listed}"
    );
    let told = ok(d, &["notices", "--customer", "C1"]);
    assert_eq!(told.matches("mfa_change").count(), 2, "{told}");
}

/// Destinations registered while the server is killed with `kill -9`: every acknowledged one is
/// there afterwards, and each stored one is whole (its assessment, its notice to the customer,
/// its audit entry), with the audit log intact.
#[test]
fn a_killed_server_leaves_no_half_registered_destination() {
    use mamori_store::{AuditLog, DecisionLog, Destinations, Outbox};
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut csv = String::from("customer_id,name,name_kana\n");
    for t in 0..4 {
        csv.push_str(&format!("K{t},山田 太郎,ヤマダ タロウ\n"));
    }
    std::fs::write(d.join("customers.csv"), csv).expect("write");
    ok(d, &["customers", "import", "customers.csv"]);
    let key = ok(
        d,
        &["apikey", "create", "--name", "desk", "--scopes", "auth"],
    );
    let key = key.trim().to_owned();
    let server = ServeProcess::start(d);
    let acked = load_then_kill(server, &key, 200, |client, base, key, t, i| {
        let number = format!("{:07}", t * 100_000 + i);
        let body = serde_json::json!({
            "destination": {"bank_code": "0001", "branch_code": "001", "account_number": number},
            "channel": "support_center", "staff": "ito",
            "identity_checks": ["callback to the registered phone"]});
        match client
            .post(format!("{base}/v1/customers/K{t}/destinations"))
            .bearer(key)
            .json(&body)
            .send()
        {
            Ok(r) if r.status() == 201 => Some(vec![(format!("K{t}"), number)]),
            Ok(r) if r.status() == 403 => Some(vec![]), // blocked: nothing registered
            Ok(r) => panic!("unexpected answer {}: {}", r.status(), r.body),
            Err(_) => None,
        }
    });
    assert!(
        acked.len() >= 50,
        "only {} registrations acknowledged",
        acked.len()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let store = mamori_store::SqliteStore::open(&d.join("mamori.db"))
            .await
            .expect("open");
        let mut stored = Vec::new();
        for t in 0..4 {
            let c = format!("K{t}");
            for x in store.destinations(&c).await.expect("destinations") {
                // Each with the assessment that decided it.
                let id = x.assessment_id.clone().expect("assessment id");
                let a = store
                    .assessment(&id)
                    .await
                    .expect("read")
                    .expect("its assessment");
                assert_eq!(a.event.customer_id, c);
                stored.push((c.clone(), x.destination.account_number));
            }
        }
        for a in &acked {
            assert!(stored.contains(a), "acknowledged {a:?} lost");
        }
        let notices = store
            .notices(&mamori_store::NoticeFilter {
                customer_id: None,
                given_up: false,
                limit: 100_000,
            })
            .await
            .expect("notices");
        let registered = store
            .audit_entries(1, 100_000)
            .await
            .expect("audit")
            .into_iter()
            .filter(|e| e.action == "destination.register")
            .count();
        assert_eq!(
            notices
                .iter()
                .filter(|n| n.kind == "destination_change")
                .count(),
            stored.len()
        );
        assert_eq!(registered, stored.len());
        let verified = mamori_store::verify_audit(&store, None)
            .await
            .expect("read");
        assert!(verified.is_ok(), "{verified:?}");
        eprintln!(
            "{} acknowledged, {} stored after kill -9",
            acked.len(),
            stored.len()
        );
        store.close().await;
    });
}

/// Personal data and secrets never reach the logs: a server logging at debug level goes through
/// the customer-side procedures, and its log holds none of the values sent.
#[test]
fn personal_data_and_secrets_never_reach_the_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(
        d.join("customers.csv"),
        "customer_id,name,name_kana,birth_date,address,phone,email,bank_code,branch_code,account_number\n\
         C1,山田 太郎,ヤマダ タロウ,1985-03-15,東京都千代田区丸の内1-1-1,090-1234-5678,taro.yamada@example.co.jp,0001,123,7654321\n",
    )
    .expect("write");
    ok(d, &["customers", "import", "customers.csv"]);
    let key = ok(
        d,
        &[
            "apikey",
            "create",
            "--name",
            "all",
            "--scopes",
            "auth,read,admin,assess",
        ],
    );
    let key = key.trim().to_owned();
    // The outbox tries an SMTP server that is not there: the failure is logged and kept.
    std::fs::write(
        d.join("mamori.toml"),
        "[mail]\nsmtp_url = \"smtp://127.0.0.1:9\"\npoll_ms = 50\nretry_seconds = 1\ntimeout_ms = 2000\n",
    )
    .expect("config");
    let log = d.join("serve.log");
    let server = ServeProcess::start_logging(d, "debug", Some(&log));
    let c = blocking_http::client();
    let call = |method: &str, path: &str, body: serde_json::Value| {
        let url = format!("{}{path}", server.base);
        let r = match method {
            "GET" => c.get(url),
            _ => c.post(url),
        };
        r.bearer(&key).json(&body).send().expect("request")
    };
    let password = "Orbit%Mango42x";
    for (m, path, body) in [
        ("GET", "/v1/customers/C1", serde_json::json!({})),
        (
            "POST",
            "/v1/customers/C1/reveal",
            serde_json::json!({"staff": "ito", "reason": "ticket 4711"}),
        ),
        (
            "POST",
            "/v1/passwords/check",
            serde_json::json!({"kind": "login", "password": password, "customer_id": "C1"}),
        ),
        (
            "POST",
            "/v1/passwords/check",
            serde_json::json!({"kind": "login", "password": "Yamada1985!!", "customer_id": "C1"}),
        ),
        (
            "POST",
            "/v1/customers/C1/passwords/login/verify",
            serde_json::json!({"password": "Secret#Guess77", "ip": "198.51.100.9"}),
        ),
        (
            "POST",
            "/v1/customers/C1/destinations",
            serde_json::json!({"destination": {"bank_code": "0009", "branch_code": "010", "account_number": "3333333"},
            "channel": "support_center", "staff": "ito", "identity_checks": ["date of birth 1985-03-15"]}),
        ),
        (
            "POST",
            "/v1/assess",
            serde_json::json!({"event_id": "x", "customer_id": "C1", "kind": "destination_change", "channel": "web",
            "ip": "198.51.100.9", "destination": {"bank_code": "0009", "branch_code": "010", "account_number": "4444444", "holder_kana": "ﾔﾏﾀﾞ ﾀﾛｳ"}}),
        ),
    ] {
        let r = call(m, path, body);
        assert!(r.status() < 500, "{path}: {} {}", r.status(), r.body);
    }
    // The destination's notice fails and waits for its retry; `mamori notices` says why.
    let mut listed = String::new();
    for _ in 0..200 {
        listed = ok(d, &["notices", "--customer", "C1"]);
        if listed.contains("failing") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        listed.contains("destination_change") && listed.contains("failing"),
        "{listed}"
    );
    assert!(!listed.contains("taro.yamada"), "{listed}");
    let json = ok(d, &["notices", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("notices json");
    assert!(v[0]["last_error"].is_string(), "{v}");
    assert!(v[0]["attempts"].as_u64() >= Some(1), "{v}");
    drop(server);
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.lines().count() > 5, "the server logged: {text}");
    assert!(text.contains("notice not sent"), "{text}");
    eprintln!(
        "{} log lines, e.g. {}",
        text.lines().count(),
        text.lines().last().unwrap_or("")
    );
    // Not bare digit runs such as "1985": the logs' timings and timestamps are digits too.
    for secret in [
        "山田",
        "ヤマダ",
        "ﾔﾏﾀﾞ",
        "1985-03-15",
        "丸の内",
        "090-1234-5678",
        "taro.yamada",
        "7654321",
        "3333333",
        "4444444",
        password,
        "Secret#Guess77",
        "Yamada1985",
    ] {
        assert!(!text.contains(secret), "{secret:?} in the server's log");
    }
}

/// Four clients call `send(client, base, key, client number, call number)` until `enough`
/// items are acknowledged (or 20 s pass), then the server is killed with `kill -9` while calls
/// are in flight; returns the acknowledged items. `send` gives the items a call acknowledged, or
/// `None` when the server is gone.
fn load_then_kill<T: Send + Clone + 'static>(
    server: ServeProcess,
    key: &str,
    enough: usize,
    send: impl Fn(&blocking_http::Blocking, &str, &str, usize, usize) -> Option<Vec<T>>
    + Send
    + Sync
    + 'static,
) -> Vec<T> {
    let send = std::sync::Arc::new(send);
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<T>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (acked, stop, send) = (acked.clone(), stop.clone(), send.clone());
            let (base, key) = (server.base.clone(), key.to_owned());
            std::thread::spawn(move || {
                let client = blocking_http::client();
                for i in 0.. {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    match send(&client, &base, &key, t, i) {
                        Some(items) => acked.lock().expect("lock").extend(items),
                        None => break,
                    }
                }
            })
        })
        .collect();
    let started = std::time::Instant::now();
    while acked.lock().expect("lock").len() < enough && started.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    drop(server); // kill -9
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in threads {
        t.join().expect("client thread");
    }
    acked.lock().expect("lock").clone()
}

/// The NATS server (with JetStream) of `mamori consume`'s test: `MAMORI_TEST_NATS` or
/// nats://127.0.0.1:4222. None (with a message) when nothing answers there; under CI=true that is
/// a failure.
fn nats_or_skip() -> Option<String> {
    use std::net::ToSocketAddrs;
    let url =
        std::env::var("MAMORI_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let host = url.trim_start_matches("nats://");
    let up = host
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| {
            std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(2)).is_ok()
        });
    if !up {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but no NATS at {url}"
        );
        eprintln!("skipped: no NATS at {url}");
        return None;
    }
    Some(url)
}

/// A child process killed (SIGKILL) and reaped when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A JetStream stream deleted when dropped.
struct TestStream {
    js: async_nats::jetstream::Context,
    name: String,
    rt: tokio::runtime::Handle,
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let _ = self.rt.block_on(self.js.delete_stream(&self.name));
    }
}

/// The store `mamori consume` writes in its test: a SQLite file or a PostgreSQL schema.
enum Target {
    File(PathBuf),
    Pg(String),
}

/// A connection that reads the store under test.
enum TargetConn {
    Lite(sqlx::SqliteConnection),
    Pg(sqlx::PgConnection),
}

impl Target {
    fn db_arg(&self) -> String {
        match self {
            Target::File(p) => p.display().to_string(),
            Target::Pg(url) => url.clone(),
        }
    }

    /// A connection, when the store can be opened (not before the consumer creates it).
    async fn connect(&self) -> Option<TargetConn> {
        use sqlx::Connection;
        match self {
            Target::File(p) => {
                let opts = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(p)
                    .read_only(true);
                sqlx::SqliteConnection::connect_with(&opts)
                    .await
                    .ok()
                    .map(TargetConn::Lite)
            }
            Target::Pg(url) => sqlx::PgConnection::connect(url)
                .await
                .ok()
                .map(TargetConn::Pg),
        }
    }
}

impl TargetConn {
    async fn count(&mut self) -> Result<i64, sqlx::Error> {
        const SQL: &str = "SELECT count(*) FROM events";
        match self {
            TargetConn::Lite(c) => sqlx::query_scalar(SQL).fetch_one(c).await,
            TargetConn::Pg(c) => sqlx::query_scalar(SQL).fetch_one(c).await,
        }
    }

    async fn keys(&mut self) -> Result<Vec<(String, String)>, sqlx::Error> {
        const SQL: &str =
            "SELECT c.customer_id, e.event_id FROM events e JOIN customers c USING (customer_key)";
        match self {
            TargetConn::Lite(c) => sqlx::query_as(SQL).fetch_all(c).await,
            TargetConn::Pg(c) => sqlx::query_as(SQL).fetch_all(c).await,
        }
    }
}

/// `(customer_id, event_id)` of every event in the store, and how many rows it has.
fn stored_keys(
    rt: &tokio::runtime::Runtime,
    target: &Target,
) -> (std::collections::HashSet<(String, String)>, usize) {
    rt.block_on(async {
        let mut conn = target.connect().await.expect("open the store");
        let rows = conn.keys().await.expect("read the store");
        let n = rows.len();
        (rows.into_iter().collect(), n)
    })
}

/// Drops a PostgreSQL test schema when dropped.
struct DropSchema(String, String);

impl Drop for DropSchema {
    fn drop(&mut self) {
        drop_pg_schema(&self.0, &self.1);
    }
}

#[test]
fn consume_from_nats_is_exactly_once_across_kill_9() {
    consume_is_exactly_once_across_kill_9(false);
}

/// The same into PostgreSQL, the store of several nodes.
#[test]
fn consume_from_nats_into_postgres_is_exactly_once_across_kill_9() {
    consume_is_exactly_once_across_kill_9(true);
}

fn consume_is_exactly_once_across_kill_9(on_postgres: bool) {
    use std::collections::HashSet;
    use std::time::{Duration, Instant};
    let Some(url) = nats_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (target, _schema) = if on_postgres {
        let Some((db, admin, schema)) = fresh_pg_schema("consume") else {
            return;
        };
        (Target::Pg(db), Some(DropSchema(admin, schema)))
    } else {
        (Target::File(d.join("store.db")), None)
    };
    let db_arg = target.db_arg();
    let events = simulate(d, "200");
    let lines: Vec<String> = std::fs::read_to_string(&events)
        .expect("events")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(6000)
        .map(str::to_owned)
        .collect();
    assert!(lines.len() >= 3000, "only {} events", lines.len());
    let key = |line: &str| -> (String, String) {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        (
            v["customer_id"].as_str().expect("customer").to_owned(),
            v["event_id"].as_str().expect("event id").to_owned(),
        )
    };
    let mut expected: HashSet<(String, String)> = lines.iter().map(|l| key(l)).collect();
    // One event a message; every 50th event published twice; the last two in one message of two
    // lines; one malformed message (personal data in it) half-way.
    let bad = r#"{"event_id":"bad-1","occurred_at":"2020-09-16T22:25:00+09:00","customer_id":"C-bad","kind":"destination_change","channel":"web","ip":"203.0.113.7","destination":{"bank_code":"12","branch_code":"001","account_type":"ordinary","account_number":"7654321","holder_kana":"ヤマダ タロウ"}}"#;
    let n = lines.len();
    let mut messages: Vec<String> = lines[..n - 2].to_vec();
    messages.extend(lines.iter().step_by(50).cloned());
    messages.push(format!("{}\n{}\n", lines[n - 2], lines[n - 1]));
    let bad_at = messages.len() / 2;
    messages.insert(bad_at, bad.to_owned());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.as_nanos())
        .unwrap_or(0);
    let pid = std::process::id();
    let name = format!("MAMORI_TEST_{pid}_{nanos}");
    let subject = format!("mamori-test.{pid}.{nanos}");
    let js = rt.block_on(async {
        let client = async_nats::connect(url.as_str()).await.expect("connect");
        async_nats::jetstream::new(client)
    });
    rt.block_on(js.create_stream(async_nats::jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("{subject}.>")],
        ..Default::default()
    }))
    .expect("create the stream");
    let stream = TestStream {
        js: js.clone(),
        name: name.clone(),
        rt: rt.handle().clone(),
    };
    let publish = |messages: &[String]| -> Vec<u64> {
        rt.block_on(async {
            let mut seqs = Vec::with_capacity(messages.len());
            let mut acks = Vec::new();
            for m in messages {
                acks.push(
                    js.publish(format!("{subject}.events"), m.clone().into())
                        .await
                        .expect("publish"),
                );
                if acks.len() == 500 {
                    for a in acks.drain(..) {
                        seqs.push(a.await.expect("publish ack").sequence);
                    }
                }
            }
            for a in acks {
                seqs.push(a.await.expect("publish ack").sequence);
            }
            seqs
        })
    };
    let seqs = publish(&messages);
    let bad_seq = seqs[bad_at];

    let consume = |log: &str, extra: &[&str]| -> Killed {
        let log = std::fs::File::create(d.join(log)).expect("log");
        Killed(
            Command::new(env!("CARGO_BIN_EXE_mamori"))
                .current_dir(d)
                .env_remove("MAMORI_DB")
                .env_remove("MAMORI_CONFIG")
                .env_remove("MAMORI_NATS")
                .env("RUST_LOG", "info")
                .args([
                    "--db", &db_arg, "consume", "--nats", &url, "--stream", &name,
                ])
                .args([
                    "--batch",
                    "100",
                    "--ack-wait",
                    "2",
                    "--rejects",
                    "rejects.jsonl",
                ])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn mamori consume"),
        )
    };
    // Counts the stored events every 2 ms until `until` says stop; returns the last count.
    let watch_count = |child: &mut Killed, until: &dyn Fn(i64) -> bool, what: &str| -> i64 {
        let started = Instant::now();
        rt.block_on(async {
            let mut conn = None;
            loop {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "{what}: timed out"
                );
                if let Ok(Some(status)) = child.0.try_wait() {
                    panic!("mamori consume ended ({status}) before {what}");
                }
                if conn.is_none() {
                    conn = target.connect().await;
                }
                if let Some(c) = conn.as_mut() {
                    match c.count().await {
                        Ok(n) if until(n) => return n,
                        Ok(_) => {}
                        Err(_) => conn = None, // not created yet
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let distinct = expected.len() as i64;

    // kill -9 once a quarter of the events are stored.
    let mut first = consume("first.log", &[]);
    let partial = watch_count(&mut first, &|n| n >= distinct / 4, "a quarter was stored");
    drop(first);
    let (_, partial_now) = stored_keys(&rt, &target);
    assert!(
        (partial_now as i64) < distinct,
        "the consumer stored everything ({partial} when seen) before the kill; nothing was tested"
    );

    // Restarted, it resumes and stops when the durable has nothing left.
    let mut second = consume("second.log", &["--idle-exit", "2"]);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = second.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the restarted consumer did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log2 = std::fs::read_to_string(d.join("second.log")).expect("log");
    assert!(status.success(), "{log2}");
    assert!(
        log2.contains("stored") && log2.contains("rejected"),
        "{log2}"
    );

    let (stored, rows) = stored_keys(&rt, &target);
    assert_eq!(rows, expected.len(), "events stored twice or lost");
    let lost: Vec<_> = expected.difference(&stored).take(3).collect();
    let extra: Vec<_> = stored.difference(&expected).take(3).collect();
    assert!(
        lost.is_empty() && extra.is_empty(),
        "after kill -9 at {partial_now} of {distinct}: lost {lost:?}, unexpected {extra:?}"
    );
    // The malformed message is in the rejects file once, with its sequence and field.
    let rejects = std::fs::read_to_string(d.join("rejects.jsonl")).expect("rejects");
    let rejects: Vec<serde_json::Value> = rejects
        .lines()
        .map(|l| serde_json::from_str(l).expect("rejects json"))
        .collect();
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!(rejects[0]["seq"].as_u64(), Some(bad_seq), "{rejects:?}");
    assert_eq!(rejects[0]["place"], format!("{name}:{bad_seq}"));
    assert_eq!(rejects[0]["field"], "destination.bank_code");
    assert_eq!(rejects[0]["record"], bad);
    // Everything is acknowledged on the server.
    rt.block_on(async {
        let s = js.get_stream(&name).await.expect("stream");
        let mut c: async_nats::jetstream::consumer::PullConsumer =
            s.get_consumer("mamori").await.expect("durable");
        let info = c.info().await.expect("consumer info");
        assert_eq!((info.num_pending, info.num_ack_pending), (0, 0), "{info:?}");
    });

    // SIGTERM: the consumer stores what it has, then exits 0 with its summary.
    let mut third = consume("third.log", &[]);
    let late = lines[0].replace("\"event_id\":\"", "\"event_id\":\"late-");
    expected.insert(key(&late));
    publish(&[late]);
    watch_count(
        &mut third,
        &|n| n == distinct + 1,
        "the late event was stored",
    );
    let term = Command::new("kill")
        .args(["-TERM", &third.0.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = third.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "SIGTERM did not stop the consumer"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let log3 = std::fs::read_to_string(d.join("third.log")).expect("log");
    assert!(status.success(), "{log3}");
    assert!(
        log3.contains("1 stored, 0 duplicates, 0 rejected"),
        "{log3}"
    );
    let (stored, rows) = stored_keys(&rt, &target);
    assert_eq!(rows, expected.len());
    assert!(
        stored == expected,
        "the store differs from what was published"
    );

    // No message body reaches the logs.
    for log in ["first.log", "second.log", "third.log"] {
        let text = std::fs::read_to_string(d.join(log)).expect("log");
        for secret in ["ヤマダ", "7654321", "C-bad"] {
            assert!(!text.contains(secret), "{secret:?} in {log}:\n{text}");
        }
    }
    eprintln!(
        "killed at {partial_now} of {distinct} stored; {} messages; then exactly the {distinct} distinct events",
        messages.len()
    );
    drop(stream);
}
