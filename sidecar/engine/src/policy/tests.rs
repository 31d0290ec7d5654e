//! restic's policy table (`TestApplyPolicy`): its 103 input snapshots and, for each of its 40
//! policies, the kept snapshots with their reasons and counters, transcribed as data from
//! restic's golden files (tests/data/restic_policy_cases.txt). Plus grouping and filters.

use super::*;
use crate::id::Id;
use crate::snapshot::{SnapshotCounts, SnapshotFile};
use super::calendar::days_from_civil;

const CASES: &str = include_str!("../../tests/data/restic_policy_cases.txt");

/// `2014-08-13T10:20:30.1Z` → ns.
fn parse_time(t: &str) -> i64 {
    let t = t.trim_end_matches('Z');
    let (date, time) = t.split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let h: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    let frac_ns = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse::<i64>().unwrap() };
    ((days_from_civil(d[0], d[1], d[2]) * 86_400 + h[0] * 3600 + h[1] * 60 + h[2]) * 1_000_000_000) + frac_ns
}

fn snap(time_ns: i64, host: &str, tags: Vec<String>, paths: Vec<String>) -> SnapshotInfo {
    SnapshotInfo {
        id: Id::random(),
        file: SnapshotFile {
            v: 1,
            time_ns,
            host: host.into(),
            tags,
            paths,
            parent: None,
            tree: Vec::new(),
            entries: 0,
            counts: SnapshotCounts::default(),
            duration_ms: 0,
        },
    }
}

fn list(field: &str) -> Vec<String> {
    if field == "-" {
        Vec::new()
    } else {
        field.split(',').map(String::from).collect()
    }
}

fn d(text: &str) -> KeepDuration {
    KeepDuration::parse(text).unwrap()
}

/// restic's `tests` list, in order.
fn policies() -> Vec<ExpirePolicy> {
    let p = ExpirePolicy::default;
    let tags = |l: &[&[&str]]| -> Vec<Vec<String>> { l.iter().map(|t| t.iter().map(|s| s.to_string()).collect()).collect() };
    let yd = "1y2m3d3h";
    vec![
        p(),
        ExpirePolicy { last: 10, ..p() },
        ExpirePolicy { last: 15, ..p() },
        ExpirePolicy { last: 99, ..p() },
        ExpirePolicy { last: 200, ..p() },
        ExpirePolicy { hourly: 20, ..p() },
        ExpirePolicy { daily: 3, ..p() },
        ExpirePolicy { daily: 10, ..p() },
        ExpirePolicy { daily: 30, ..p() },
        ExpirePolicy { last: 5, daily: 5, ..p() },
        ExpirePolicy { last: 2, daily: 10, ..p() },
        ExpirePolicy { weekly: 2, ..p() },
        ExpirePolicy { weekly: 4, ..p() },
        ExpirePolicy { daily: 3, weekly: 4, ..p() },
        ExpirePolicy { monthly: 6, ..p() },
        ExpirePolicy { daily: 2, weekly: 2, monthly: 6, ..p() },
        ExpirePolicy { yearly: 10, ..p() },
        ExpirePolicy { daily: 7, weekly: 2, monthly: 3, yearly: 10, ..p() },
        ExpirePolicy { keep_tags: tags(&[&["foo"]]), ..p() },
        ExpirePolicy { keep_tags: tags(&[&["foo", "bar"]]), ..p() },
        ExpirePolicy { keep_tags: tags(&[&["foo"], &["bar"]]), ..p() },
        ExpirePolicy { within: d("1d"), ..p() },
        ExpirePolicy { within: d("2d"), ..p() },
        ExpirePolicy { within: d("7d"), ..p() },
        ExpirePolicy { within: d("1m"), ..p() },
        ExpirePolicy { within: d("1m14d"), ..p() },
        ExpirePolicy { within: d("1y1d1m"), ..p() },
        ExpirePolicy { within: d("13d23h"), ..p() },
        ExpirePolicy { within: d("2m2h"), ..p() },
        ExpirePolicy { within: d("1y2m3d3h"), ..p() },
        ExpirePolicy { within_hourly: d(yd), ..p() },
        ExpirePolicy { within_daily: d(yd), ..p() },
        ExpirePolicy { within_weekly: d(yd), ..p() },
        ExpirePolicy { within_monthly: d(yd), ..p() },
        ExpirePolicy { within_yearly: d(yd), ..p() },
        ExpirePolicy {
            within: d("1h"),
            within_hourly: d("1d"),
            within_daily: d("7d"),
            within_weekly: d("1m"),
            within_monthly: d("1y"),
            within_yearly: d("9999y"),
            ..p()
        },
        ExpirePolicy { last: -1, ..p() },
        ExpirePolicy { last: -1, hourly: -1, ..p() },
        ExpirePolicy { hourly: -1, ..p() },
        ExpirePolicy { daily: 3, weekly: 2, monthly: -1, yearly: -1, ..p() },
    ]
}

#[test]
fn restics_policy_table() {
    let mut snaps = Vec::new();
    let mut expected: Vec<Vec<(usize, String, String)>> = Vec::new();
    for line in CASES.lines().filter(|l| !l.starts_with('#')) {
        let mut w = line.splitn(2, ' ');
        match (w.next().unwrap(), w.next().unwrap_or("")) {
            ("snap", rest) => {
                let f: Vec<&str> = rest.split(' ').collect();
                snaps.push(snap(parse_time(f[0]), "h", list(f[1]), list(f[2])));
            }
            ("case", n) => {
                assert_eq!(n.parse::<usize>().unwrap(), expected.len());
                expected.push(Vec::new());
            }
            ("keep", rest) => {
                let (head, matches) = rest.split_once(" | ").unwrap();
                let (idx, counters) = head.split_once(' ').unwrap();
                expected.last_mut().unwrap().push((idx.parse().unwrap(), counters.to_string(), matches.to_string()));
            }
            other => panic!("bad line {other:?}"),
        }
    }
    assert_eq!(snaps.len(), 103);
    let policies = policies();
    assert_eq!(policies.len(), expected.len());
    let now = parse_time("2026-01-01T00:00:00Z");
    for (case, (p, want)) in policies.iter().zip(&expected).enumerate() {
        let v = apply(&snaps, p, now);
        assert_eq!(v.keep.len() + v.remove.len(), snaps.len(), "case {case}");
        let got: Vec<(usize, String, String)> = v
            .keep
            .iter()
            .map(|k| {
                let c = k.counters;
                let counters = format!("{},{},{},{},{},{}", c.last, c.hourly, c.daily, c.weekly, c.monthly, c.yearly);
                (k.index, counters, k.matches.join("; "))
            })
            .collect();
        assert_eq!(&got, want, "case {case}: {p:?}");
    }
}

#[test]
fn groups_filters_and_parsing() {
    let t = parse_time("2020-01-01T00:00:00Z");
    let s = |h: &str, tags: &[&str], paths: &[&str]| {
        snap(t, h, tags.iter().map(|x| x.to_string()).collect(), paths.iter().map(|x| x.to_string()).collect())
    };
    let snaps = vec![s("a", &["x"], &["/p", "/q"]), s("a", &[], &["/q", "/p"]), s("b", &["x", "y"], &["/p"]), s("a", &["y"], &["/r"])];
    let g = group(&snaps, GroupBy::default());
    let members: Vec<Vec<usize>> = g.iter().map(|(_, m)| m.clone()).collect();
    assert_eq!(members, vec![vec![0, 1], vec![3], vec![2]]);
    assert_eq!(g[0].0, GroupKey { hostname: Some("a".into()), paths: Some(vec!["/p".into(), "/q".into()]), tags: None });
    let by_tags = group(&snaps, GroupBy::parse("tags").unwrap());
    assert_eq!(by_tags.len(), 4);
    assert_eq!(group(&snaps, GroupBy::parse("").unwrap()).len(), 1);
    assert_eq!(GroupBy::parse("host,color").unwrap_err().code(), "SHMPIPE_E_MALFORMED");

    let f = SnapshotFilter { hosts: vec!["a".into()], tags: vec![vec!["x".into()], vec!["y".into()]], paths: vec![] };
    let passing: Vec<usize> = (0..4).filter(|&i| f.matches(&snaps[i])).collect();
    assert_eq!(passing, vec![0, 3]);
    let f = SnapshotFilter { paths: vec!["/p".into(), "/q".into()], ..Default::default() };
    assert_eq!((0..4).filter(|&i| f.matches(&snaps[i])).collect::<Vec<_>>(), vec![0, 1]);
    assert!(ExpirePolicy::default().is_empty());
    assert!(!ExpirePolicy { keep_tags: vec![vec![]], ..Default::default() }.is_empty());
}
