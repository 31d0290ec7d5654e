//! `check --read-data-subset`: which packs a partial data check reads, with restic's meanings.
//! - `n/t`: the packs are split into `t` groups by their id and group `n` (1-based) is read;
//!   running `1/t` … `t/t` (e.g. one a day) reads every pack exactly once.
//! - `P%`: a random `P` percent of the packs (at least one when there are any).
//! - `SIZE`: random packs until at least `SIZE` bytes are selected (at least one).

use std::collections::HashSet;

use crate::error::{EngineError, Result};
use crate::id::PackId;

/// A selection of packs for a partial data check.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PackSubset {
    /// Group `n` of `t` (1 ≤ n ≤ t), by pack id.
    Group { n: u32, t: u32 },
    /// This many parts per million of the packs, at random.
    PartsPerMillion(u32),
    /// Random packs adding up to at least this many bytes.
    Bytes(u64),
}

impl PackSubset {
    /// Checks the parameters (a `Group` with n outside 1..=t, a share outside (0, 100 %], zero bytes).
    pub fn validate(&self) -> Result<()> {
        let ok = match *self {
            Self::Group { n, t } => t >= 1 && (1..=t).contains(&n),
            Self::PartsPerMillion(p) => (1..=1_000_000).contains(&p),
            Self::Bytes(b) => b > 0,
        };
        if ok {
            Ok(())
        } else {
            Err(EngineError::InvalidArgument { message: format!("bad read-data subset {self:?}") })
        }
    }

    /// The group of a pack id among `t`: its first four bytes (random ids: even groups) mod t.
    pub fn group_of(id: &PackId, t: u32) -> u32 {
        u32::from_be_bytes([id.0[0], id.0[1], id.0[2], id.0[3]]) % t + 1
    }

    /// The packs to read, of `packs` (id, size).
    pub fn select(&self, packs: &[(PackId, u64)]) -> HashSet<PackId> {
        match *self {
            Self::Group { n, t } => packs.iter().filter(|(id, _)| Self::group_of(id, t) == n).map(|(id, _)| *id).collect(),
            Self::PartsPerMillion(ppm) => {
                let want = ((packs.len() as u128 * u128::from(ppm) + 500_000) / 1_000_000) as usize;
                shuffled(packs).into_iter().take(want.max(usize::from(!packs.is_empty()))).map(|(id, _)| id).collect()
            }
            Self::Bytes(limit) => {
                let mut total = 0u64;
                let mut out = HashSet::new();
                for (id, size) in shuffled(packs) {
                    if total >= limit {
                        break;
                    }
                    total += size;
                    out.insert(id);
                }
                out
            }
        }
    }
}

/// `packs` in a random order (Fisher–Yates with the system RNG).
fn shuffled(packs: &[(PackId, u64)]) -> Vec<(PackId, u64)> {
    let mut v = packs.to_vec();
    for i in (1..v.len()).rev() {
        let mut b = [0u8; 8];
        crate::crypto::fill_random(&mut b);
        let j = (u64::from_le_bytes(b) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;

    fn packs(n: usize) -> Vec<(PackId, u64)> {
        (0..n).map(|_| (Id::random(), 1000)).collect()
    }

    #[test]
    fn groups_cover_every_pack_exactly_once() {
        let p = packs(500);
        for t in [1, 2, 3, 7, 256, 1000] {
            let mut seen = HashSet::new();
            for n in 1..=t {
                for id in (PackSubset::Group { n, t }).select(&p) {
                    assert!(seen.insert(id), "t={t}: a pack in two groups");
                }
            }
            assert_eq!(seen.len(), p.len(), "t={t}: every pack in some group");
        }
    }

    #[test]
    fn percentages_and_sizes_pick_that_much_at_random() {
        let p = packs(200);
        assert_eq!(PackSubset::PartsPerMillion(100_000).select(&p).len(), 20);
        assert_eq!(PackSubset::PartsPerMillion(1).select(&p).len(), 1, "at least one");
        assert_eq!(PackSubset::PartsPerMillion(1_000_000).select(&p).len(), 200);
        assert_eq!(PackSubset::Bytes(10_500).select(&p).len(), 11, "until the size is reached");
        assert_eq!(PackSubset::Bytes(1).select(&p).len(), 1);
        assert!(PackSubset::Bytes(1).select(&[]).is_empty());
        // Random: two 10 % picks of 200 packs are (almost surely) not the same.
        assert_ne!(PackSubset::PartsPerMillion(100_000).select(&p), PackSubset::PartsPerMillion(100_000).select(&p));
    }

    #[test]
    fn bad_parameters_are_refused() {
        for s in [PackSubset::Group { n: 0, t: 3 }, PackSubset::Group { n: 4, t: 3 }, PackSubset::Group { n: 1, t: 0 }, PackSubset::PartsPerMillion(0), PackSubset::PartsPerMillion(1_000_001), PackSubset::Bytes(0)] {
            assert!(s.validate().is_err(), "{s:?}");
        }
    }
}
