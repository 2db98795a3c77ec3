//! The audit log's hash chain: each entry carries the SHA-256 of its content and of the entry
//! before it, so that changing, inserting or deleting an entry breaks every later link. A chain
//! alone cannot show that its last entries were cut off; the store therefore keeps the head
//! (last sequence number and hash) apart, and `mamori audit verify --head` checks against a
//! head recorded elsewhere (a log line, a ticket).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// 1, 2, 3, … without gaps.
    pub seq: i64,
    /// Microseconds since the epoch, UTC.
    pub at: i64,
    /// Who: `staff:<name>`, `customer:<id>`, `apikey:<name>`, `cli`, `system`.
    pub actor: String,
    /// What: `switch.set`, `personal.reveal`, `credential.change`, `lockout`, …
    pub action: String,
    /// On what or whom.
    pub target: String,
    /// Details as JSON (never unmasked personal data).
    pub detail: String,
    /// The previous entry's hash ([`GENESIS`] for the first).
    pub prev: String,
    /// [`entry_hash`] of this entry.
    pub hash: String,
}

/// The hash of an entry's content and its predecessor's hash (each field length-prefixed, so that
/// moving text between fields changes it).
pub fn entry_hash(
    seq: i64,
    at: i64,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
    prev: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(b"mamori-audit-v1");
    h.update(seq.to_be_bytes());
    h.update(at.to_be_bytes());
    for f in [actor, action, target, detail, prev] {
        h.update((f.len() as u64).to_be_bytes());
        h.update(f.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl AuditEntry {
    /// The entry after `prev` (`None`: the first).
    pub fn next(
        prev: Option<(i64, &str)>,
        at: i64,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Self {
        let (seq, prev) = match prev {
            Some((s, h)) => (s + 1, h.to_owned()),
            None => (1, GENESIS.to_owned()),
        };
        let hash = entry_hash(seq, at, actor, action, target, detail, &prev);
        AuditEntry {
            seq,
            at,
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail: detail.to_owned(),
            prev,
            hash,
        }
    }

    fn computed(&self) -> String {
        entry_hash(
            self.seq,
            self.at,
            &self.actor,
            &self.action,
            &self.target,
            &self.detail,
            &self.prev,
        )
    }
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("entry {seq}: its content does not match its hash (modified)")]
    Modified { seq: i64 },
    #[error(
        "entry {seq}: expected sequence number {expected} (an entry was deleted or inserted before it)"
    )]
    Sequence { seq: i64, expected: i64 },
    #[error(
        "entry {seq}: it does not follow the entry before it (an entry before it was deleted, inserted or replaced)"
    )]
    Link { seq: i64 },
    #[error(
        "the log ends at entry {last} but its head says {head} (entries at the end were deleted, or the head was changed)"
    )]
    Head { last: i64, head: i64 },
    #[error("entry {seq}: its hash differs from the head's (the last entry was replaced)")]
    HeadHash { seq: i64 },
}

/// Checks entries in sequence order against each other and against the head (last sequence
/// number and hash; `None` when none is known); returns how many were checked.
pub fn verify<'a>(
    entries: impl IntoIterator<Item = &'a AuditEntry>,
    head: Option<(i64, &str)>,
) -> Result<i64, ChainError> {
    let mut v = Verifier::default();
    for e in entries {
        v.push(e)?;
    }
    v.finish(head)
}

/// [`verify`] an entry at a time, for logs read in pages.
#[derive(Debug, Default)]
pub struct Verifier {
    last: Option<(i64, String)>,
    checked: i64,
}

impl Verifier {
    /// Checks the next entry.
    pub fn push(&mut self, e: &AuditEntry) -> Result<(), ChainError> {
        let expected = self.last.as_ref().map_or(1, |(s, _)| s + 1);
        if e.seq != expected {
            return Err(ChainError::Sequence {
                seq: e.seq,
                expected,
            });
        }
        if e.computed() != e.hash {
            return Err(ChainError::Modified { seq: e.seq });
        }
        let want_prev = self.last.as_ref().map_or(GENESIS, |(_, h)| h.as_str());
        if e.prev != want_prev {
            return Err(ChainError::Link { seq: e.seq });
        }
        self.last = Some((e.seq, e.hash.clone()));
        self.checked += 1;
        Ok(())
    }

    /// Checks the last entry against the head; returns how many entries were checked.
    pub fn finish(self, head: Option<(i64, &str)>) -> Result<i64, ChainError> {
        if let Some((head_seq, head_hash)) = head {
            let last = self.last.as_ref().map_or(0, |(s, _)| *s);
            if last != head_seq {
                return Err(ChainError::Head {
                    last,
                    head: head_seq,
                });
            }
            if let Some((seq, hash)) = &self.last
                && hash != head_hash
            {
                return Err(ChainError::HeadHash { seq: *seq });
            }
        }
        Ok(self.checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut v: Vec<AuditEntry> = Vec::new();
        for i in 0..n {
            let prev = v.last().map(|e| (e.seq, e.hash.as_str()));
            let e = AuditEntry::next(
                prev,
                1_700_000_000_000_000 + i,
                "staff:sato",
                "switch.set",
                "destination_change/web",
                r#"{"on":false}"#,
            );
            v.push(e);
        }
        v
    }

    fn head(v: &[AuditEntry]) -> Option<(i64, &str)> {
        v.last().map(|e| (e.seq, e.hash.as_str()))
    }

    #[test]
    fn an_intact_chain_verifies() {
        let v = chain(5);
        assert_eq!(verify(&v, head(&v)), Ok(5));
        assert_eq!(verify(&[], None), Ok(0));
        assert_eq!(verify(&[], Some((0, GENESIS))), Ok(0));
    }

    #[test]
    fn every_kind_of_tampering_is_found() {
        let v = chain(5);
        let h = head(&v).map(|(s, h)| (s, h.to_owned())).unwrap();
        let h = Some((h.0, h.1.as_str()));

        let mut m = v.clone();
        m[2].detail = r#"{"on":true}"#.into();
        assert_eq!(verify(&m, h), Err(ChainError::Modified { seq: 3 }));

        // Modified and re-hashed: the next entry no longer links.
        let mut r = v.clone();
        r[2].actor = "staff:evil".into();
        r[2].hash = r[2].computed();
        assert_eq!(verify(&r, h), Err(ChainError::Link { seq: 4 }));

        let mut d = v.clone();
        d.remove(1);
        assert_eq!(
            verify(&d, h),
            Err(ChainError::Sequence {
                seq: 3,
                expected: 2
            })
        );

        // Deleted and the rest renumbered and re-hashed: caught by the head.
        let mut rebuilt: Vec<AuditEntry> = Vec::new();
        for e in v.iter().filter(|e| e.seq != 2) {
            let prev = rebuilt.last().map(|p| (p.seq, p.hash.as_str()));
            let n = AuditEntry::next(prev, e.at, &e.actor, &e.action, &e.target, &e.detail);
            rebuilt.push(n);
        }
        assert_eq!(verify(&rebuilt, None), Ok(4));
        assert_eq!(
            verify(&rebuilt, h),
            Err(ChainError::Head { last: 4, head: 5 })
        );

        let mut i = v.clone();
        let extra = AuditEntry::next(Some((2, &v[1].hash)), v[1].at, "cli", "x", "y", "{}");
        i.insert(2, extra);
        assert_eq!(
            verify(&i, h),
            Err(ChainError::Sequence {
                seq: 3,
                expected: 4
            })
        );

        let cut = &v[..4];
        assert_eq!(verify(cut, h), Err(ChainError::Head { last: 4, head: 5 }));

        let mut last = v.clone();
        last[4] = AuditEntry::next(Some((4, &v[3].hash)), 0, "cli", "x", "y", "{}");
        assert_eq!(verify(&last, h), Err(ChainError::HeadHash { seq: 5 }));
    }
}
