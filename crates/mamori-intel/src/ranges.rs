//! Sorted, non-overlapping key ranges with binary-search lookup.
//!
//! Keys are [`mamori_core::net::ip_key`] keys: IPv4 mapped into IPv6 space, so one table holds both
//! families. Sources may overlap (a more specific range nested in a wider one, or, rarely, two
//! ranges that partly overlap); [`RangeMap::build`] flattens them so that every key maps to the
//! most specific range holding it: the one that starts last, and of ranges starting at the same
//! key the shortest; of identical ranges the one given last.

use std::cmp::Reverse;

/// Inclusive `[lo, hi]` key ranges, each with a value; disjoint and sorted.
#[derive(Debug, Clone)]
pub(crate) struct RangeMap<V> {
    lo: Vec<u128>,
    hi: Vec<u128>,
    val: Vec<V>,
}

impl<V> Default for RangeMap<V> {
    fn default() -> Self {
        RangeMap {
            lo: Vec::new(),
            hi: Vec::new(),
            val: Vec::new(),
        }
    }
}

/// A set of key ranges (a CIDR list): a map to `()`, in which overlapping and adjacent ranges merge.
pub(crate) type RangeSet = RangeMap<()>;

impl<V: Copy + Eq> RangeMap<V> {
    /// Builds the map from ranges with `lo <= hi` (ranges with `lo > hi` are ignored; parsers reject
    /// them before). Adjacent ranges with equal values merge.
    pub(crate) fn build(mut items: Vec<(u128, u128, V)>) -> Self {
        items.retain(|&(lo, hi, _)| lo <= hi);
        // Stable: identical ranges keep their input order, so the one given last ends up on top.
        items.sort_by_key(|&(lo, hi, _)| (lo, Reverse(hi)));
        let mut out = RangeMap {
            lo: Vec::with_capacity(items.len()),
            hi: Vec::with_capacity(items.len()),
            val: Vec::with_capacity(items.len()),
        };
        // Ranges that hold the current position, innermost on top.
        let mut stack: Vec<(u128, V)> = Vec::new();
        // The first key not yet emitted; `None` once `u128::MAX` has been emitted.
        let mut pos: Option<u128> = Some(0);
        for (lo, hi, v) in items {
            while let Some(&(top_hi, top_v)) = stack.last() {
                if top_hi >= lo {
                    break;
                }
                if let Some(p) = pos
                    && p <= top_hi
                {
                    out.push(p, top_hi, top_v);
                    pos = top_hi.checked_add(1);
                }
                stack.pop();
            }
            if let Some(&(_, top_v)) = stack.last()
                && let Some(p) = pos
                && p < lo
            {
                out.push(p, lo - 1, top_v);
            }
            if pos.is_none() {
                // Everything up to u128::MAX was emitted; nothing further can be.
                break;
            }
            pos = Some(lo);
            stack.push((hi, v));
        }
        while let Some((top_hi, top_v)) = stack.pop() {
            if let Some(p) = pos
                && p <= top_hi
            {
                out.push(p, top_hi, top_v);
                pos = top_hi.checked_add(1);
            }
        }
        out.lo.shrink_to_fit();
        out.hi.shrink_to_fit();
        out.val.shrink_to_fit();
        out
    }

    fn push(&mut self, lo: u128, hi: u128, v: V) {
        if let (Some(last_hi), Some(last_v)) = (self.hi.last_mut(), self.val.last())
            && *last_v == v
            && last_hi.checked_add(1) == Some(lo)
        {
            *last_hi = hi;
            return;
        }
        self.lo.push(lo);
        self.hi.push(hi);
        self.val.push(v);
    }

    /// The value of the range holding `key`.
    pub(crate) fn get(&self, key: u128) -> Option<V> {
        let i = self.lo.partition_point(|&lo| lo <= key);
        let i = i.checked_sub(1)?;
        if *self.hi.get(i)? >= key {
            self.val.get(i).copied()
        } else {
            None
        }
    }

    pub(crate) fn contains(&self, key: u128) -> bool {
        self.get(key).is_some()
    }

    /// Number of (flattened, merged) ranges.
    pub(crate) fn len(&self) -> usize {
        self.lo.len()
    }

    /// All ranges in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u128, u128, V)> + '_ {
        self.lo
            .iter()
            .zip(&self.hi)
            .zip(&self.val)
            .map(|((&lo, &hi), &v)| (lo, hi, v))
    }

    /// The ranges in IPv4-mapped key space (`::ffff:0.0.0.0/96`), clipped to it.
    pub(crate) fn iter_v4(&self) -> impl Iterator<Item = (u128, u128, V)> + '_ {
        const V4_LO: u128 = 0xffff_0000_0000;
        const V4_HI: u128 = 0xffff_ffff_ffff;
        let start = self.hi.partition_point(|&hi| hi < V4_LO);
        self.iter()
            .skip(start)
            .take_while(|&(lo, _, _)| lo <= V4_HI)
            .map(|(lo, hi, v)| (lo.max(V4_LO), hi.min(V4_HI), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges<V: Copy + Eq>(m: &RangeMap<V>) -> Vec<(u128, u128, V)> {
        m.iter().collect()
    }

    #[test]
    fn disjoint_ranges_and_boundaries() {
        let m = RangeMap::build(vec![(10, 19, 'a'), (30, 39, 'b'), (20, 20, 'c')]);
        assert_eq!(
            ranges(&m),
            vec![(10, 19, 'a'), (20, 20, 'c'), (30, 39, 'b')]
        );
        assert_eq!(m.get(9), None);
        assert_eq!(m.get(10), Some('a'));
        assert_eq!(m.get(19), Some('a'));
        assert_eq!(m.get(20), Some('c'));
        assert_eq!(m.get(21), None);
        assert_eq!(m.get(29), None);
        assert_eq!(m.get(30), Some('b'));
        assert_eq!(m.get(39), Some('b'));
        assert_eq!(m.get(40), None);
        assert_eq!(m.get(0), None);
        assert_eq!(m.get(u128::MAX), None);
    }

    #[test]
    fn nested_ranges_most_specific_wins() {
        // 2.58.196.0-2.58.197.255 DE with 2.58.197.15 BE inside, as in the real country CSV.
        let m = RangeMap::build(vec![(0, 99, 'D'), (15, 15, 'B'), (0, 9, 'S')]);
        assert_eq!(
            ranges(&m),
            vec![(0, 9, 'S'), (10, 14, 'D'), (15, 15, 'B'), (16, 99, 'D')]
        );
        // Deeper nesting with the same start.
        let m = RangeMap::build(vec![(0, 100, 1), (0, 50, 2), (0, 10, 3), (60, 70, 4)]);
        assert_eq!(
            ranges(&m),
            vec![
                (0, 10, 3),
                (11, 50, 2),
                (51, 59, 1),
                (60, 70, 4),
                (71, 100, 1)
            ]
        );
    }

    #[test]
    fn partial_overlap_later_start_wins() {
        let m = RangeMap::build(vec![(0, 20, 'a'), (10, 30, 'b'), (40, 50, 'c')]);
        assert_eq!(ranges(&m), vec![(0, 9, 'a'), (10, 30, 'b'), (40, 50, 'c')]);
    }

    #[test]
    fn identical_ranges_last_wins() {
        let m = RangeMap::build(vec![(5, 6, 'a'), (5, 6, 'b')]);
        assert_eq!(ranges(&m), vec![(5, 6, 'b')]);
    }

    #[test]
    fn sets_merge_overlapping_and_adjacent() {
        let s: RangeSet = RangeMap::build(vec![
            (10, 20, ()),
            (15, 25, ()),
            (26, 30, ()),
            (40, 45, ()),
            (41, 42, ()),
        ]);
        assert_eq!(ranges(&s), vec![(10, 30, ()), (40, 45, ())]);
        assert!(s.contains(30));
        assert!(!s.contains(31));
    }

    #[test]
    fn full_key_space_edges() {
        let m = RangeMap::build(vec![
            (0, u128::MAX, 1),
            (u128::MAX, u128::MAX, 2),
            (7, 7, 3),
        ]);
        assert_eq!(
            ranges(&m),
            vec![
                (0, 6, 1),
                (7, 7, 3),
                (8, u128::MAX - 1, 1),
                (u128::MAX, u128::MAX, 2)
            ]
        );
        assert_eq!(m.get(u128::MAX), Some(2));
        let m = RangeMap::build(vec![
            (u128::MAX - 1, u128::MAX, 1),
            (u128::MAX, u128::MAX, 1),
        ]);
        assert_eq!(ranges(&m), vec![(u128::MAX - 1, u128::MAX, 1)]);
    }

    #[test]
    fn v4_view_is_clipped() {
        let v4 = 0xffff_0000_0000u128;
        let m = RangeMap::build(vec![
            (0, v4 + 5, 'x'),
            (v4 + 10, v4 + 20, 'y'),
            (0x2001 << 112, (0x2001 << 112) + 9, 'z'),
        ]);
        let got: Vec<_> = m.iter_v4().collect();
        assert_eq!(got, vec![(v4, v4 + 5, 'x'), (v4 + 10, v4 + 20, 'y')]);
    }
}
