//! API keys for client systems: `mmr_<id>_<secret>`, stored as the SHA-256 of the whole key,
//! with scopes. Verified keys are cached for a few seconds, so a revocation takes effect on every
//! node within [`CACHE_TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use mamori_core::case::Scope;
use mamori_store::{ApiKey, ApiKeys};
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::problem::Problem;

/// How long a verified key is trusted without asking the store again.
pub const CACHE_TTL: Duration = Duration::from_secs(5);
/// Uses of a key are written to the store at most this often.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// A new key: its record and the key text (shown once).
pub fn generate(name: &str, scopes: Vec<Scope>, now: i64) -> (ApiKey, String, [u8; 32]) {
    let mut rng = rand::rng();
    let id: [u8; 6] = rng.random();
    let secret: [u8; 24] = rng.random();
    let key_id = hex(&id);
    let token = format!("mmr_{key_id}_{}", hex(&secret));
    let hash = digest(&token);
    (
        ApiKey {
            key_id,
            name: name.to_owned(),
            scopes,
            created_at: now,
            revoked_at: None,
            last_used_at: None,
        },
        token,
        hash,
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Equal in time independent of where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

struct Cached {
    key: ApiKey,
    hash: [u8; 32],
    fetched: Instant,
    touched: Option<Instant>,
}

/// Verifies keys against the store, with a short cache.
#[derive(Default)]
pub struct Keys {
    cache: Mutex<HashMap<String, Cached>>,
}

impl Keys {
    /// The key of a request (`Authorization: Bearer mmr_…`), if it is valid, not revoked and
    /// has `scope` (or `admin`).
    pub async fn authorize<S: ApiKeys>(
        &self,
        store: &S,
        headers: &HeaderMap,
        scope: Scope,
        now: i64,
    ) -> Result<ApiKey, Problem> {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Problem::unauthorized("send an API key: Authorization: Bearer mmr_…"))?
            .trim();
        let key_id = token
            .strip_prefix("mmr_")
            .and_then(|r| r.split_once('_'))
            .map(|(id, _)| id)
            .ok_or_else(|| Problem::unauthorized("the API key is malformed"))?;
        let hash = digest(token);
        let cached = {
            let c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            c.get(key_id)
                .filter(|c| c.fetched.elapsed() < CACHE_TTL)
                .map(|c| (c.key.clone(), c.hash, c.touched))
        };
        let (key, stored, touched) = match cached {
            Some(c) => c,
            None => {
                let found = store.find_key(key_id).await?;
                let Some((key, stored)) = found else {
                    return Err(Problem::unauthorized("unknown API key"));
                };
                let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                let touched = c.get(key_id).and_then(|c| c.touched);
                c.insert(
                    key_id.to_owned(),
                    Cached {
                        key: key.clone(),
                        hash: stored,
                        fetched: Instant::now(),
                        touched,
                    },
                );
                (key, stored, touched)
            }
        };
        if !same(&hash, &stored) {
            return Err(Problem::unauthorized("unknown API key"));
        }
        if key.revoked_at.is_some() {
            return Err(Problem::unauthorized("the API key was revoked"));
        }
        if !key.scopes.contains(&scope) && !key.scopes.contains(&Scope::Admin) {
            return Err(Problem::forbidden(format!(
                "the API key {:?} lacks the scope {scope}",
                key.name
            )));
        }
        if touched.is_none_or(|t| t.elapsed() >= TOUCH_EVERY) {
            if let Some(c) = self
                .cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(key_id)
            {
                c.touched = Some(Instant::now());
            }
            store.touch_key(key_id, now).await?;
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hashed() {
        let (a, ta, ha) = generate("a", vec![Scope::Read], 1);
        let (b, tb, hb) = generate("b", vec![Scope::Read], 1);
        assert_ne!(ta, tb);
        assert_ne!(a.key_id, b.key_id);
        assert!(ta.starts_with(&format!("mmr_{}_", a.key_id)) && ta.len() == 4 + 12 + 1 + 48);
        assert_eq!(ha, digest(&ta));
        assert!(same(&ha, &ha) && !same(&ha, &hb));
    }
}
