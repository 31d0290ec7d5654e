//! Civil-calendar arithmetic on snapshot times (ns since the Unix epoch, UTC) for the retention
//! policy: the hour/day/ISO-week/month/year a snapshot falls in, and Go's `AddDate` (restic's
//! `--keep-within` subtracts years, months and days as calendar units, normalising overflow the
//! way Go does: 31 March minus one month is 3 March). Howard Hinnant's `days_from_civil`
//! algorithms; no time-zone database (buckets are UTC: see README, forget).

const NS_PER_SEC: i64 = 1_000_000_000;
const NS_PER_DAY: i64 = 86_400 * NS_PER_SEC;
const NS_PER_HOUR: i64 = 3_600 * NS_PER_SEC;

/// A UTC civil date and hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    /// Proleptic Gregorian year.
    pub year: i64,
    /// 1..=12.
    pub month: i64,
    /// 1..=31.
    pub day: i64,
    /// 0..=23.
    pub hour: i64,
    /// Days since 1970-01-01.
    pub days: i64,
}

/// Days since the epoch of a (possibly denormalised: month 0 or 13, day 0 or 40) date.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let (year, month) = (year + (month - 1).div_euclid(12), (month - 1).rem_euclid(12) + 1);
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468 + (day - 1)
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl Civil {
    /// The civil time of `time_ns`.
    pub fn of(time_ns: i64) -> Self {
        let days = time_ns.div_euclid(NS_PER_DAY);
        let hour = time_ns.rem_euclid(NS_PER_DAY) / NS_PER_HOUR;
        let (year, month, day) = civil_from_days(days);
        Self { year, month, day, hour, days }
    }

    /// ISO 8601 (year, week): weeks start on Monday and belong to the year of their Thursday.
    pub fn iso_week(&self) -> (i64, i64) {
        let weekday = (self.days + 3).rem_euclid(7); // 0 = Monday (1970-01-01 was a Thursday)
        let thursday = self.days - weekday + 3;
        let (year, _, _) = civil_from_days(thursday);
        (year, (thursday - days_from_civil(year, 1, 1)) / 7 + 1)
    }
}

/// `time_ns` minus `years`, `months`, `days` (calendar units, normalised like Go's `AddDate`)
/// and then `hours`.
pub fn sub_date(time_ns: i64, years: i64, months: i64, days: i64, hours: i64) -> i64 {
    let c = Civil::of(time_ns);
    let tod = time_ns.rem_euclid(NS_PER_DAY);
    let d = days_from_civil(c.year - years, c.month - months, c.day - days);
    d.saturating_mul(NS_PER_DAY).saturating_add(tod).saturating_sub(hours.saturating_mul(NS_PER_HOUR))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i64, m: i64, d: i64, h: i64) -> i64 {
        days_from_civil(y, m, d) * NS_PER_DAY + h * NS_PER_HOUR
    }

    #[test]
    fn civil_round_trips_and_iso_weeks() {
        for z in [-800_000, -1, 0, 1, 11_016, 16_436, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        let c = Civil::of(at(2016, 1, 3, 7));
        assert_eq!((c.year, c.month, c.day, c.hour), (2016, 1, 3, 7));
        // 2016-01-03 is a Sunday in ISO week 53 of 2015; 2016-01-04 starts week 1.
        assert_eq!(c.iso_week(), (2015, 53));
        assert_eq!(Civil::of(at(2016, 1, 4, 0)).iso_week(), (2016, 1));
        assert_eq!(Civil::of(at(2014, 12, 29, 0)).iso_week(), (2015, 1));
        assert_eq!(Civil::of(at(1969, 12, 31, 23)).day, 31);
    }

    #[test]
    fn sub_date_normalises_like_go() {
        // 31 March − 1 month = "31 February" = 2 March (leap year 2016).
        assert_eq!(sub_date(at(2016, 3, 31, 5), 0, 1, 0, 0), at(2016, 3, 2, 5));
        assert_eq!(sub_date(at(2016, 1, 18, 12), 1, 2, 3, 3), at(2014, 11, 15, 9));
        assert_eq!(sub_date(at(2016, 1, 1, 1), 0, 0, 1, 2), at(2015, 12, 30, 23));
    }
}
