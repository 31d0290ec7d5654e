//! restic's retention durations: `1y2m3d4h` — years, months, days and hours, each at most
//! once, in any order (restic's `ParseDuration`). Months and years are calendar units
//! (calendar.rs), not fixed lengths.

use std::fmt;

use crate::error::{EngineError, Result};

/// A duration of `--keep-within` and friends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeepDuration {
    /// Years.
    pub years: i64,
    /// Months.
    pub months: i64,
    /// Days.
    pub days: i64,
    /// Hours.
    pub hours: i64,
}

impl KeepDuration {
    /// No duration (the option is off).
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// Parses `6y5m234d37h` (any subset, any order; whitespace around is ignored).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: String| EngineError::InvalidArgument { message: format!("duration {text:?}: {why} (expected e.g. 1y2m3d4h)") };
        let mut d = Self::default();
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(bad("empty".into()));
        }
        while !rest.is_empty() {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits == 0 {
                return Err(bad(format!("no number before {:?}", &rest[..1])));
            }
            let n: i64 = rest[..digits].parse().map_err(|_| bad("number too large".into()))?;
            if n > 1_000_000 {
                return Err(bad("number too large".into()));
            }
            let field = match rest[digits..].chars().next() {
                Some('y') => &mut d.years,
                Some('m') => &mut d.months,
                Some('d') => &mut d.days,
                Some('h') => &mut d.hours,
                Some(c) => return Err(bad(format!("unknown unit {c:?}"))),
                None => return Err(bad(format!("no unit after {n}"))),
            };
            *field = n;
            rest = &rest[digits + 1..];
        }
        Ok(d)
    }
}

impl fmt::Display for KeepDuration {
    /// restic's spelling (zero parts left out), used in keep reasons: `within 1y2m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, unit) in [(self.years, 'y'), (self.months, 'm'), (self.days, 'd'), (self.hours, 'h')] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_restic_durations_and_refuses_the_rest() {
        let d = KeepDuration::parse("1y2m3d4h").unwrap();
        assert_eq!(d, KeepDuration { years: 1, months: 2, days: 3, hours: 4 });
        assert_eq!(d.to_string(), "1y2m3d4h");
        assert_eq!(KeepDuration::parse(" 13d23h ").unwrap().to_string(), "13d23h");
        assert_eq!(KeepDuration::parse("2h1y").unwrap(), KeepDuration { years: 1, hours: 2, ..Default::default() });
        for bad in ["", "1", "d", "1w", "-1d", "1d2", "99999999999999999999d"] {
            let e = KeepDuration::parse(bad).unwrap_err();
            assert_eq!(e.code(), "SHMPIPE_E_MALFORMED", "{bad}: {e}");
        }
    }
}
