//! Prune's options with restic's spellings: `--max-unused` (`5%` of the repository size,
//! an absolute size such as `200M`, or `unlimited`) and `--max-repack-size` (a size).

use crate::error::{EngineError, Result};

/// How much unused space may remain after prune.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaxUnused {
    /// At most this percentage (0 ≤ p < 100) of the repository size after prune: unused ≤
    /// p/(100−p) × used (restic's meaning).
    Percent(f64),
    /// At most this many bytes.
    Bytes(u64),
    /// Only delete packs nobody uses; never repack.
    Unlimited,
}

impl Default for MaxUnused {
    fn default() -> Self {
        Self::Percent(5.0)
    }
}

impl MaxUnused {
    /// Parses `5%`, `200M`, `unlimited`.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim();
        let bad = |why: &str| EngineError::InvalidArgument { message: format!("--max-unused {text:?}: {why}") };
        if t == "unlimited" {
            return Ok(Self::Unlimited);
        }
        if let Some(p) = t.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad("not a percentage"))?;
            if !(0.0..100.0).contains(&p) {
                return Err(bad("the percentage must be at least 0 and below 100"));
            }
            return Ok(Self::Percent(p));
        }
        parse_size(t).map(Self::Bytes).map_err(|_| bad("expected a percentage (5%), a size (200M) or unlimited"))
    }

    /// The unused bytes tolerated next to `used` bytes of used blobs.
    pub fn allowed(&self, used: u64) -> u64 {
        match *self {
            Self::Percent(p) => (p / (100.0 - p) * used as f64) as u64,
            Self::Bytes(b) => b,
            Self::Unlimited => u64::MAX,
        }
    }
}

/// A size as restic's `ParseBytes` reads it: a number with an optional binary suffix
/// `k`/`K`, `m`/`M`, `g`/`G`, `t`/`T` (1024-based).
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let bad = || EngineError::InvalidArgument { message: format!("{text:?} is not a size (e.g. 500M, 2G, 1048576)") };
    let (num, shift) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 30),
        Some('t' | 'T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = num.trim().parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

/// What prune does.
#[derive(Clone, Debug, Default)]
pub struct PruneOptions {
    /// Plan and report only; change nothing (takes a shared lock, not an exclusive one).
    pub dry_run: bool,
    /// `--max-unused` (default 5 %).
    pub max_unused: MaxUnused,
    /// `--max-repack-size`: repack at most this many bytes of packs (default unlimited).
    pub max_repack_bytes: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_restics_spellings() {
        assert_eq!(MaxUnused::parse("5%").unwrap(), MaxUnused::Percent(5.0));
        assert_eq!(MaxUnused::parse(" 12.5 %").unwrap(), MaxUnused::Percent(12.5));
        assert_eq!(MaxUnused::parse("unlimited").unwrap(), MaxUnused::Unlimited);
        assert_eq!(MaxUnused::parse("2M").unwrap(), MaxUnused::Bytes(2 << 20));
        for bad in ["", "100%", "-1%", "x%", "2Q", "lots"] {
            assert_eq!(MaxUnused::parse(bad).unwrap_err().code(), "SHMPIPE_E_MALFORMED", "{bad}");
        }
        // 5 % of the repository after prune: 5/95 of the used bytes.
        assert_eq!(MaxUnused::Percent(5.0).allowed(950), 50);
        assert_eq!(MaxUnused::Percent(0.0).allowed(950), 0);
        assert_eq!(parse_size("1k").unwrap(), 1024);
        assert_eq!(parse_size("3").unwrap(), 3);
        assert!(parse_size("99999999T").is_err());
    }
}
