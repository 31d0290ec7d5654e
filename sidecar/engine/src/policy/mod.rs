//! Retention policy: which snapshots `forget` keeps, with restic's meaning and restic's
//! reasons (`internal/data/snapshot_policy.go`: same buckets, same order, same strings, so a
//! restic user reads the same output).
//!
//! Snapshots are [`select`]ed by host/tag/path filters, split into groups by [`group`]
//! (`--group-by host,paths,tags`, default host,paths) and each group goes through
//! [`apply`] on its own: newest first, a snapshot is kept if it has one of the `keep_tags`
//! lists, is within `within` of the group's newest snapshot, or opens a new bucket of a
//! `--keep-*` counter that still has count left (the last, the hourly, daily, ISO-weekly,
//! monthly, yearly ones, each `-1` = unlimited), or opens a new bucket of a `within_*` window.
//! The oldest snapshot is also kept by a counter that has count left ("oldest daily
//! snapshot"), so a young repository keeps as much history as the policy allows.
//! Buckets are UTC calendar units (calendar.rs); restic uses each snapshot's own time zone.

pub mod calendar;
pub mod duration;

use serde::Serialize;

use crate::snapshot::SnapshotInfo;
use calendar::{sub_date, Civil};
pub use duration::KeepDuration;

/// Counts and windows of a retention policy (restic's `ExpirePolicy`). Counts: 0 off, -1
/// unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExpirePolicy {
    /// `--keep-last`
    pub last: i64,
    /// `--keep-hourly`
    pub hourly: i64,
    /// `--keep-daily`
    pub daily: i64,
    /// `--keep-weekly`
    pub weekly: i64,
    /// `--keep-monthly`
    pub monthly: i64,
    /// `--keep-yearly`
    pub yearly: i64,
    /// `--keep-within`: every snapshot newer than the group's newest minus this.
    pub within: KeepDuration,
    /// `--keep-within-hourly`
    pub within_hourly: KeepDuration,
    /// `--keep-within-daily`
    pub within_daily: KeepDuration,
    /// `--keep-within-weekly`
    pub within_weekly: KeepDuration,
    /// `--keep-within-monthly`
    pub within_monthly: KeepDuration,
    /// `--keep-within-yearly`
    pub within_yearly: KeepDuration,
    /// `--keep-tag`: snapshots having every tag of any one of these lists.
    pub keep_tags: Vec<Vec<String>>,
}

impl ExpirePolicy {
    /// No rule at all: restic's forget then removes nothing (unless snapshots are named).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The counters after a kept snapshot (restic's `KeepReason.counters`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Left of `--keep-last`.
    pub last: i64,
    /// Left of `--keep-hourly`.
    pub hourly: i64,
    /// Left of `--keep-daily`.
    pub daily: i64,
    /// Left of `--keep-weekly`.
    pub weekly: i64,
    /// Left of `--keep-monthly`.
    pub monthly: i64,
    /// Left of `--keep-yearly`.
    pub yearly: i64,
}

/// One kept snapshot: its position in the input and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    /// Index into the slice given to [`apply`].
    pub index: usize,
    /// restic's reason strings ("daily snapshot", "within 1d", "has tags [a, b]", ...).
    pub matches: Vec<String>,
    /// Counters after this snapshot.
    pub counters: Counters,
}

/// The verdict on one group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Kept, newest first.
    pub keep: Vec<Kept>,
    /// Indices of the removed ones, newest first.
    pub remove: Vec<usize>,
}

type Bucker = fn(&Civil, usize) -> i64;

fn ymdh(c: &Civil, _: usize) -> i64 {
    c.year * 1_000_000 + c.month * 10_000 + c.day * 100 + c.hour
}
fn ymd(c: &Civil, _: usize) -> i64 {
    c.year * 10_000 + c.month * 100 + c.day
}
fn yw(c: &Civil, _: usize) -> i64 {
    let (y, w) = c.iso_week();
    y * 100 + w
}
fn ym(c: &Civil, _: usize) -> i64 {
    c.year * 100 + c.month
}
fn y(c: &Civil, _: usize) -> i64 {
    c.year
}
fn always(_: &Civil, nr: usize) -> i64 {
    nr as i64
}

fn before(t: i64, d: &KeepDuration) -> i64 {
    sub_date(t, d.years, d.months, d.days, d.hours)
}

/// restic's `TagList` printing: `[a, b]`.
fn tag_list(tags: &[String]) -> String {
    format!("[{}]", tags.join(", "))
}

/// Applies `p` to one group of snapshots (any order; ties in time keep their input order).
/// `now_ns`: snapshots in the future do not count as the newest for `within` rules.
pub fn apply(snaps: &[SnapshotInfo], p: &ExpirePolicy, now_ns: i64) -> Verdict {
    let mut order: Vec<usize> = (0..snaps.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(snaps[i].file.time_ns)); // stable
    let mut out = Verdict::default();
    if order.is_empty() {
        return out;
    }
    // (count left, bucketing, last bucket, reason)
    let mut buckets: [(i64, Bucker, Option<i64>, &str); 6] = [
        (p.last, always, None, "last snapshot"),
        (p.hourly, ymdh, None, "hourly snapshot"),
        (p.daily, ymd, None, "daily snapshot"),
        (p.weekly, yw, None, "weekly snapshot"),
        (p.monthly, ym, None, "monthly snapshot"),
        (p.yearly, y, None, "yearly snapshot"),
    ];
    let mut within: [(KeepDuration, Bucker, Option<i64>, &str); 5] = [
        (p.within_hourly, ymdh, None, "hourly within"),
        (p.within_daily, ymd, None, "daily within"),
        (p.within_weekly, yw, None, "weekly within"),
        (p.within_monthly, ym, None, "monthly within"),
        (p.within_yearly, y, None, "yearly within"),
    ];
    let latest = snaps.iter().map(|s| s.file.time_ns).filter(|&t| t < now_ns).max().unwrap_or(0);
    let oldest = order.len() - 1;
    for (nr, &i) in order.iter().enumerate() {
        let s = &snaps[i].file;
        let civil = Civil::of(s.time_ns);
        let mut matches = Vec::new();
        for l in &p.keep_tags {
            if l.iter().all(|t| s.tags.contains(t)) {
                matches.push(format!("has tags {}", tag_list(l)));
            }
        }
        if !p.within.is_zero() && s.time_ns > before(latest, &p.within) {
            matches.push(format!("within {}", p.within));
        }
        for (count, bucker, last, reason) in buckets.iter_mut() {
            if *count == 0 || *count < -1 {
                continue;
            }
            let val = (*bucker)(&civil, nr);
            if Some(val) != *last || nr == oldest {
                let oldest_only = Some(val) == *last;
                *last = Some(val);
                if *count > 0 {
                    *count -= 1;
                }
                matches.push(if oldest_only { format!("oldest {reason}") } else { (*reason).to_string() });
            }
        }
        for (d, bucker, last, reason) in within.iter_mut() {
            if d.is_zero() || s.time_ns <= before(latest, d) {
                continue;
            }
            let val = (*bucker)(&civil, nr);
            if Some(val) != *last || nr == oldest {
                let oldest_only = Some(val) == *last;
                *last = Some(val);
                matches.push(if oldest_only { format!("oldest {reason} {d}") } else { format!("{reason} {d}") });
            }
        }
        if matches.is_empty() {
            out.remove.push(i);
        } else {
            let c = |k: usize| buckets[k].0;
            let counters = Counters { last: c(0), hourly: c(1), daily: c(2), weekly: c(3), monthly: c(4), yearly: c(5) };
            out.keep.push(Kept { index: i, matches, counters });
        }
    }
    out
}

/// Which snapshots a forget considers (restic's `--host`, `--tag`, `--path` filters).
#[derive(Clone, Debug, Default)]
pub struct SnapshotFilter {
    /// Any of these hosts (empty: any host).
    pub hosts: Vec<String>,
    /// Having every tag of any one of these lists (empty: any tags).
    pub tags: Vec<Vec<String>>,
    /// Having every one of these paths (empty: any paths).
    pub paths: Vec<String>,
}

impl SnapshotFilter {
    /// Whether `s` passes.
    pub fn matches(&self, s: &SnapshotInfo) -> bool {
        let f = &s.file;
        (self.hosts.is_empty() || self.hosts.contains(&f.host))
            && (self.tags.is_empty() || self.tags.iter().any(|l| l.iter().all(|t| f.tags.contains(t))))
            && self.paths.iter().all(|p| f.paths.contains(p))
    }
}

/// What groups are keyed by (`--group-by`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupBy {
    /// By host.
    pub host: bool,
    /// By the set of paths.
    pub paths: bool,
    /// By the set of tags.
    pub tags: bool,
}

impl Default for GroupBy {
    /// restic's default: host and paths.
    fn default() -> Self {
        Self { host: true, paths: true, tags: false }
    }
}

impl GroupBy {
    /// Parses `host,paths,tags` (any subset, comma-separated; `""` = one group).
    pub fn parse(text: &str) -> crate::Result<Self> {
        let mut g = Self { host: false, paths: false, tags: false };
        for f in text.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            match f {
                "host" => g.host = true,
                "paths" => g.paths = true,
                "tags" => g.tags = true,
                other => {
                    return Err(crate::EngineError::InvalidArgument { message: format!("--group-by takes host, paths and tags; got {other:?}") })
                }
            }
        }
        Ok(g)
    }
}

/// A group's key (restic's `group_key`: a field not grouped by is `None`; paths and tags sorted).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct GroupKey {
    /// Host, when grouped by host.
    pub hostname: Option<String>,
    /// Sorted paths, when grouped by paths.
    pub paths: Option<Vec<String>>,
    /// Sorted tags, when grouped by tags.
    pub tags: Option<Vec<String>>,
}

/// Splits `snaps` into groups (indices into `snaps`), ordered by key.
pub fn group(snaps: &[SnapshotInfo], by: GroupBy) -> Vec<(GroupKey, Vec<usize>)> {
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    let mut groups: std::collections::BTreeMap<GroupKey, Vec<usize>> = Default::default();
    for (i, s) in snaps.iter().enumerate() {
        let key = GroupKey {
            hostname: by.host.then(|| s.file.host.clone()),
            paths: by.paths.then(|| sorted(&s.file.paths)),
            tags: by.tags.then(|| sorted(&s.file.tags)),
        };
        groups.entry(key).or_default().push(i);
    }
    groups.into_iter().collect()
}

#[cfg(test)]
mod tests;
