//! mamori-auth against independent implementations.

use std::io::Write;
use std::process::{Command, Stdio};

use mamori_auth::totp;

/// Our enrolment URIs, read by pyotp (an independent TOTP implementation, from PyPI), give the
/// codes we compute, at many times. Skipped with a message where Python or pyotp is missing,
/// except under `CI=true`, where that is a failure (`.ci/run` installs pyotp).
#[test]
fn codes_agree_with_pyotp_for_our_enrolment_uris() {
    let have = Command::new("python3")
        .args(["-c", "import pyotp"])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3 with pyotp is required under CI=true (pip install pyotp==2.9.0)"
        );
        eprintln!("SKIPPED: python3 with pyotp not found (pip install pyotp==2.9.0)");
        return;
    }
    let times: Vec<u64> = (0..50u64)
        .map(|i| 1_600_000_000 + i * 7_919 + i * i * 31)
        .chain([59, 1_111_111_109, 2_000_000_000, 20_000_000_000])
        .collect();
    let mut cases = Vec::new();
    for account in ["C00123456", "customer 42", "山田太郎"] {
        let secret = totp::new_secret();
        let e = totp::enrolment(&secret, "Example Securities", account).unwrap();
        let ours: Vec<String> = times
            .iter()
            .map(|&t| totp::code_at(&secret, t).unwrap())
            .collect();
        cases.push((e.uri, ours));
    }
    let input = serde_json::json!({
        "times": times,
        "uris": cases.iter().map(|(u, _)| u).collect::<Vec<_>>(),
    });
    let script = r#"
import json, sys, pyotp
d = json.load(sys.stdin)
out = [[pyotp.parse_uri(u).at(t) for t in d["times"]] for u in d["uris"]]
json.dump(out, sys.stdout)
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "pyotp failed");
    let theirs: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(theirs.len(), cases.len());
    for ((uri, ours), theirs) in cases.iter().zip(&theirs) {
        assert_eq!(ours, theirs, "{uri}");
    }
}
