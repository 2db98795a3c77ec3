//! Step-up tokens: proof that the customer just passed a second factor for one operation with
//! given parameters. A token is 256 random bits, shown once and stored as its SHA-256; it is
//! bound to the customer, the operation and a digest of the parameters (canonical JSON), lives
//! minutes, and is consumed once.

use rand::Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// How long a token lives by default.
pub const TTL_SECONDS: i64 = 300;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A new token (`stp_` and 64 hex digits) and its digest, to store.
pub fn new_token() -> (String, String) {
    new_token_with("stp")
}

/// A new token of 256 random bits (`{prefix}_` and 64 hex digits) and its digest, to store.
pub fn new_token_with(prefix: &str) -> (String, String) {
    let mut b = [0u8; 32];
    rand::rng().fill(&mut b);
    let token = format!("{prefix}_{}", hex(&b));
    let d = token_digest(&token);
    (token, d)
}

/// The digest a token is stored and looked up as.
pub fn token_digest(token: &str) -> String {
    hex(&Sha256::digest(token.trim().as_bytes()))
}

/// The digest of an operation's parameters: SHA-256 of their canonical JSON (object keys sorted,
/// no spaces), so that the same parameters in any key order bind alike and any other value does
/// not.
pub fn params_digest(params: &serde_json::Value) -> String {
    fn canonical(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let sorted: std::collections::BTreeMap<&String, serde_json::Value> =
                    m.iter().map(|(k, v)| (k, canonical(v))).collect();
                serde_json::to_value(sorted).unwrap_or(serde_json::Value::Null)
            }
            serde_json::Value::Array(a) => a.iter().map(canonical).collect(),
            other => other.clone(),
        }
    }
    hex(&Sha256::digest(canonical(params).to_string().as_bytes()))
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    Unknown,
    Used,
    Expired,
    OtherCustomer,
    OtherOperation,
    OtherParameters,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unknown => "unknown",
            Refusal::Used => "used",
            Refusal::Expired => "expired",
            Refusal::OtherCustomer => "other_customer",
            Refusal::OtherOperation => "other_operation",
            Refusal::OtherParameters => "other_parameters",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fresh_and_parameters_bind_in_any_key_order() {
        let (a, da) = new_token();
        let (b, _) = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with("stp_") && a.len() == 68);
        assert_eq!(token_digest(&a), da);
        let p1 = serde_json::json!({"bank_code": "0001", "account_number": "1234567", "x": [1, {"b": 2, "a": 1}]});
        let p2 = serde_json::json!({"x": [1, {"a": 1, "b": 2}], "account_number": "1234567", "bank_code": "0001"});
        assert_eq!(params_digest(&p1), params_digest(&p2));
        let p3 = serde_json::json!({"bank_code": "0001", "account_number": "1234568", "x": [1, {"b": 2, "a": 1}]});
        assert_ne!(params_digest(&p1), params_digest(&p3));
    }
}
