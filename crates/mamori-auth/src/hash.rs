//! Password hashing with Argon2id (RFC 9106), stored as PHC strings
//! (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`), so that each hash carries the parameters it was
//! made with; a successful verification tells whether the hash should be made again with the
//! current parameters.

use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Argon2id's costs (`[password.hashing]`). The defaults are OWASP's first recommended setting:
/// 19 MiB of memory, 2 passes, 1 lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HashParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        HashParams {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("invalid Argon2 parameters: {0}")]
    Params(String),
    #[error("the stored password hash is not a valid PHC string: {0}")]
    Stored(String),
    #[error("hashing failed: {0}")]
    Hash(String),
}

impl HashParams {
    fn argon2(&self) -> Result<Argon2<'static>, HashError> {
        let p = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| HashError::Params(e.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, p))
    }

    /// What is wrong with the parameters (for `mamori config check`).
    pub fn validate(&self) -> Result<(), String> {
        if self.memory_kib < 8 * 1024 {
            return Err(format!(
                "memory_kib = {}: at least 8192 (OWASP's smallest setting is 7 MiB with 5 passes)",
                self.memory_kib
            ));
        }
        if self.iterations == 0 || self.parallelism == 0 {
            return Err("iterations and parallelism must be at least 1".into());
        }
        self.argon2().map(|_| ()).map_err(|e| e.to_string())
    }
}

/// Hashes `password` with a fresh 16-byte salt.
pub fn hash(password: &str, params: &HashParams) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError::Hash(e.to_string()))?;
    params
        .argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Hash(e.to_string()))
}

/// The outcome of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// Wrong password.
    No,
    /// Right password, hash made with the current parameters.
    Yes,
    /// Right password; hash it again with [`hash`] and store that (the parameters changed).
    YesRehash,
}

/// Checks `password` against a stored PHC string, in time independent of where they differ.
pub fn verify(password: &str, stored: &str, params: &HashParams) -> Result<Verified, HashError> {
    let parsed = PasswordHash::new(stored).map_err(|e| HashError::Stored(e.to_string()))?;
    // Verify with the parameters the hash was made with (they are in the string).
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    if !ok {
        return Ok(Verified::No);
    }
    let current = Params::try_from(&parsed).ok();
    let same = parsed.algorithm.as_str() == "argon2id"
        && parsed.version == Some(Version::V0x13.into())
        && current.is_some_and(|p| {
            (p.m_cost(), p.t_cost(), p.p_cost())
                == (params.memory_kib, params.iterations, params.parallelism)
        });
    Ok(if same {
        Verified::Yes
    } else {
        Verified::YesRehash
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small costs: the tests check behaviour, not strength.
    fn small() -> HashParams {
        HashParams {
            memory_kib: 8192,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[test]
    fn hashes_verify_and_carry_their_parameters() {
        let h = hash("Vq7#mRt2Lp9x", &small()).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=8192,t=1,p=1$"), "{h}");
        assert_eq!(verify("Vq7#mRt2Lp9x", &h, &small()).unwrap(), Verified::Yes);
        assert_eq!(verify("Vq7#mRt2Lp9X", &h, &small()).unwrap(), Verified::No);
        // Two hashes of one password differ (salt).
        assert_ne!(h, hash("Vq7#mRt2Lp9x", &small()).unwrap());
    }

    #[test]
    fn changed_parameters_ask_for_a_new_hash() {
        let h = hash("Vq7#mRt2Lp9x", &small()).unwrap();
        let stronger = HashParams {
            iterations: 2,
            ..small()
        };
        assert_eq!(
            verify("Vq7#mRt2Lp9x", &h, &stronger).unwrap(),
            Verified::YesRehash
        );
        assert_eq!(verify("wrong", &h, &stronger).unwrap(), Verified::No);
        // An Argon2i hash (older scheme) verifies and asks for Argon2id.
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let p = Params::new(8192, 1, 1, None).unwrap();
        let old = Argon2::new(Algorithm::Argon2i, Version::V0x13, p)
            .hash_password(b"Vq7#mRt2Lp9x", &salt)
            .unwrap()
            .to_string();
        assert_eq!(
            verify("Vq7#mRt2Lp9x", &old, &small()).unwrap(),
            Verified::YesRehash
        );
    }

    #[test]
    fn defaults_are_owasps_and_bad_input_is_an_error() {
        assert_eq!(
            HashParams::default(),
            HashParams {
                memory_kib: 19_456,
                iterations: 2,
                parallelism: 1
            }
        );
        assert!(HashParams::default().validate().is_ok());
        assert!(
            HashParams {
                memory_kib: 1024,
                ..HashParams::default()
            }
            .validate()
            .is_err()
        );
        assert!(matches!(
            verify("x", "not a hash", &small()),
            Err(HashError::Stored(_))
        ));
    }
}
