//! An in-memory index of events: the day-of-incident mode, investigating straight from log files
//! with no store. Fed events in any order; answers the same questions as the store.

use std::collections::HashMap;

use crate::event::Event;
use crate::history::{Access, IpUse, device_hash, ip_activity};
use crate::investigate::{Investigation, Procedure, Query, Row, build_row};
use crate::net::ip_key;
use crate::verdict::IpIntel;

/// Events indexed by customer and by IP.
#[derive(Debug, Default)]
pub struct MemoryIndex {
    customer_ids: HashMap<String, u32>,
    /// Every event of each customer (failed logins included).
    by_customer: Vec<Vec<Access>>,
    /// Every event on each IP.
    by_ip: HashMap<u128, Vec<IpUse<u32>>>,
    /// Candidate procedures (filtered by the query when one is given).
    procedures: Vec<(u32, Procedure)>,
    events: u64,
}

impl MemoryIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of events added.
    pub fn len(&self) -> u64 {
        self.events
    }

    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    fn customer(&mut self, id: &str) -> u32 {
        if let Some(&c) = self.customer_ids.get(id) {
            return c;
        }
        let c = self.by_customer.len() as u32;
        self.customer_ids.insert(id.to_owned(), c);
        self.by_customer.push(Vec::new());
        c
    }

    /// Adds an event; procedures matching `q` are remembered for [`MemoryIndex::investigate`].
    /// The caller guarantees event ids are unique (see [`dedup_key`]).
    pub fn push(&mut self, e: &Event, q: &Query) {
        self.events += 1;
        let c = self.customer(&e.customer_id);
        let ip = e.ip.map(ip_key);
        self.by_customer[c as usize].push(Access {
            at: e.occurred_at,
            kind: e.kind,
            channel: e.channel,
            ip,
            device: e.device_id.as_deref().map(device_hash),
        });
        if let Some(k) = ip {
            self.by_ip
                .entry(k)
                .or_default()
                .push(IpUse::event(e.occurred_at, c, e.kind));
        }
        if q.selects(e.kind, e.channel, e.occurred_at) {
            self.procedures.push((c, Procedure::from(e)));
        }
    }

    /// Runs the investigation over everything added.
    pub fn investigate(mut self, q: &Query, intel: &dyn IpIntel) -> Investigation {
        let procedures = std::mem::take(&mut self.procedures);
        let by_customer = self.by_customer;
        investigate_indexed(
            procedures,
            |c| &by_customer[c as usize],
            self.by_ip,
            q,
            intel,
        )
    }
}

/// Answers an investigation from events indexed by customer and by IP, whoever indexed them:
/// `procedures` with their customer's number, `accesses(c)` every event of customer `c` (failed
/// logins included, any order; at least those before the customer's last procedure), and `by_ip`
/// the uses of each procedure's IP (any order; those dated in the window before each procedure
/// add up to exactly the IP's events in that window).
pub fn investigate_indexed<'a>(
    procedures: Vec<(u32, Procedure)>,
    accesses: impl Fn(u32) -> &'a [Access],
    mut by_ip: HashMap<u128, Vec<IpUse<u32>>>,
    q: &Query,
    intel: &dyn IpIntel,
) -> Investigation {
    for v in by_ip.values_mut() {
        v.sort_unstable_by_key(|u| u.at);
    }
    let rows: Vec<Row> = procedures
        .into_iter()
        .map(|(c, p)| {
            let t = p.occurred_at;
            let activity =
                p.ip.and_then(|ip| by_ip.get(&ip_key(ip)))
                    .map(|v| {
                        let lo = v.partition_point(|u| u.at < t - q.windows.others);
                        let hi = v.partition_point(|u| u.at < t);
                        ip_activity(&c, &v[lo..hi])
                    })
                    .unwrap_or_default();
            build_row(p, accesses(c), &activity, intel, q)
        })
        .collect();
    Investigation::new(q, rows)
}

/// A 128-bit fingerprint of an event's identity, `(customer_id, event_id)`, for duplicate
/// detection without keeping the ids: SipHash-1-3 with 128-bit output (the hash behind the
/// standard library's `DefaultHasher`, in its 128-bit form) over both, each terminated and with
/// its length, in one pass.
///
/// An event is a duplicate of a stored one when both its customer and its id are the same: the
/// same id sent for two customers is two events (a producer's mistake that must not lose either).
#[inline]
pub fn dedup_key(customer_id: &str, event_id: &str) -> u128 {
    sip13::hash128(&[customer_id.as_bytes(), event_id.as_bytes()])
}

/// SipHash-1-3 with the keys (0, 0), over the bytes followed by 0xFF (as `str` hashes itself).
mod sip13 {
    #[derive(Clone, Copy)]
    struct State([u64; 4]);

    impl State {
        fn new(wide: bool) -> Self {
            let mut v = [
                0x736f_6d65_7073_6575u64,
                0x646f_7261_6e64_6f6d,
                0x6c79_6765_6e65_7261,
                0x7465_6462_7974_6573,
            ];
            if wide {
                v[1] ^= 0xee;
            }
            State(v)
        }

        #[inline(always)]
        fn round(&mut self) {
            let v = &mut self.0;
            v[0] = v[0].wrapping_add(v[1]);
            v[1] = v[1].rotate_left(13);
            v[1] ^= v[0];
            v[0] = v[0].rotate_left(32);
            v[2] = v[2].wrapping_add(v[3]);
            v[3] = v[3].rotate_left(16);
            v[3] ^= v[2];
            v[0] = v[0].wrapping_add(v[3]);
            v[3] = v[3].rotate_left(21);
            v[3] ^= v[0];
            v[2] = v[2].wrapping_add(v[1]);
            v[1] = v[1].rotate_left(17);
            v[1] ^= v[2];
            v[2] = v[2].rotate_left(32);
        }

        #[inline(always)]
        fn block(&mut self, m: u64) {
            self.0[3] ^= m;
            self.round();
            self.0[0] ^= m;
        }

        /// Compresses `bytes` and the 0xFF terminator; the last block (with the length).
        #[inline(always)]
        fn absorb(&mut self, bytes: &[u8]) {
            let mut chunks = bytes.chunks_exact(8);
            for c in &mut chunks {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                self.block(u64::from_le_bytes(w));
            }
            let rest = chunks.remainder();
            let len = bytes.len() + 1;
            // The remaining bytes and the terminator, little-endian.
            let tail = rest
                .iter()
                .enumerate()
                .fold(0xff << (8 * rest.len()), |w, (k, &c)| {
                    w | (u64::from(c) << (8 * k))
                });
            if rest.len() == 7 {
                self.block(tail);
                self.block((len as u64) << 56);
            } else {
                self.block(tail | ((len as u64) << 56));
            }
        }

        fn finish(&mut self, marker: u64) -> u64 {
            self.0[2] ^= marker;
            self.round();
            self.round();
            self.round();
            self.0[0] ^ self.0[1] ^ self.0[2] ^ self.0[3]
        }
    }

    /// The 64-bit hash (what `DefaultHasher` gives for the `str`); for tests.
    #[cfg(test)]
    pub fn hash64(bytes: &[u8]) -> u64 {
        let mut s = State::new(false);
        s.absorb(bytes);
        s.finish(0xff)
    }

    /// The 128-bit hash of a sequence of byte strings.
    #[inline]
    pub fn hash128(parts: &[&[u8]]) -> u128 {
        let mut s = State::new(true);
        for p in parts {
            s.absorb(p);
        }
        let a = s.finish(0xee);
        s.0[1] ^= 0xdd;
        s.round();
        s.round();
        s.round();
        let b = s.0[0] ^ s.0[1] ^ s.0[2] ^ s.0[3];
        (u128::from(b) << 64) | u128::from(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip13_is_the_standard_librarys() {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let long = "x".repeat(300);
        for s in [
            "",
            "a",
            "abcdefg",
            "abcdefgh",
            "abcdefghi",
            "C0000001-000001",
            "é",
            &long,
        ] {
            for n in 0..s.len().min(40) {
                let Some(t) = s.get(..n) else { continue };
                let mut h = DefaultHasher::new();
                t.hash(&mut h);
                assert_eq!(sip13::hash64(t.as_bytes()), h.finish(), "{t:?}");
            }
        }
    }

    #[test]
    fn dedup_keys_differ() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..100_000 {
            assert!(seen.insert(dedup_key("C1", &format!("C{:07}-{:06}", i % 977, i))));
        }
        assert_eq!(dedup_key("c", "e1"), dedup_key("c", "e1"));
        assert_ne!(dedup_key("c", "e1"), dedup_key("c", "e1 "));
        assert_ne!(dedup_key("c", "e1"), dedup_key("d", "e1"));
        // The parts are delimited: moving a byte from one to the other changes the key.
        assert_ne!(dedup_key("ab", "c"), dedup_key("a", "bc"));
        assert_ne!(dedup_key("a", "b"), dedup_key("b", "a"));
    }
}
