//! Job schedules: cron expressions from the configuration file.
//!
//! Two forms are accepted:
//! - the 5-field crontab line people paste from their crontab
//!   (`minute hour day-of-month month day-of-week`), run at second 0;
//! - 6 fields with seconds first (`second minute hour ...`), or 7 with a year.
//!
//! In both, days of the week count as in crontab: 0 or 7 is Sunday, 1 is
//! Monday, so `1-5` is Monday to Friday; names (`MON-FRI`) work too. (The
//! `cron` crate underneath counts 1 as Sunday; numbers are translated.)

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::{DateTime, Utc};

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    source: String,
    inner: cron::Schedule,
}

/// Why an expression is refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "{expression:?} is not a valid schedule ({reason}); write a crontab line like \"*/5 * * * *\" (every 5 minutes) or six fields with seconds first like \"0 30 2 * * 1-5\" (02:30 Monday to Friday)"
)]
pub struct ScheduleError {
    expression: String,
    reason: String,
}

impl Schedule {
    /// Parses a 5-, 6- or 7-field expression.
    pub fn parse(expression: &str) -> Result<Schedule, ScheduleError> {
        let error = |reason: String| ScheduleError {
            expression: expression.to_string(),
            reason,
        };
        let mut fields: Vec<String> = expression.split_whitespace().map(str::to_string).collect();
        match fields.len() {
            5 => fields.insert(0, "0".into()),
            6 | 7 => {}
            n => return Err(error(format!("it has {n} fields, not 5, 6 or 7"))),
        }
        fields[5] = translate_weekdays(&fields[5]).map_err(error)?;
        let inner =
            cron::Schedule::from_str(&fields.join(" ")).map_err(|e| error(e.to_string()))?;
        if inner.upcoming(Utc).next().is_none() {
            return Err(error("it never fires".into()));
        }
        Ok(Schedule {
            source: expression.to_string(),
            inner,
        })
    }

    /// The next time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.inner.after(&after).next()
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Rewrites numeric crontab days of week (0/7 = Sunday) as the `cron`
/// crate's (1 = Sunday). Items with names or `*`/`?` pass through.
fn translate_weekdays(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_string());
    }
    let mut out: Vec<String> = Vec::new();
    for item in field.split(',') {
        if item.chars().any(|c| c.is_ascii_alphabetic()) {
            out.push(item.to_string());
            continue;
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .map_err(|_| format!("bad step in {item:?}"))?,
            ),
            None => (item, 1),
        };
        if step == 0 {
            return Err(format!("step 0 in {item:?}"));
        }
        let (lo, hi) = match range {
            "*" => (0, 6),
            r => match r.split_once('-') {
                Some((a, b)) => (day(a)?, day(b)?),
                None if item.contains('/') => (day(r)?, 6),
                None => (day(r)?, day(r)?),
            },
        };
        if lo > hi {
            return Err(format!("day range {item:?} runs backwards"));
        }
        let days: BTreeSet<u32> = (lo..=hi).step_by(step as usize).map(|d| d % 7).collect();
        out.extend(days.into_iter().map(|d| (d + 1).to_string()));
    }
    Ok(out.join(","))
}

fn day(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(d) if d <= 7 => Ok(d),
        _ => Err(format!("day of week {s:?} is not 0-7 (0 and 7 are Sunday)")),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Datelike, TimeZone, Timelike};

    use super::*;

    /// Days of the week a schedule fires on (0 = Monday .. 6 = Sunday).
    fn weekdays(expr: &str) -> BTreeSet<u32> {
        let s = Schedule::parse(expr).expect("valid");
        let mut t = Utc
            .with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
            .single()
            .expect("date");
        let mut out = BTreeSet::new();
        for _ in 0..40 {
            t = s.next_after(t).expect("fires");
            out.insert(t.weekday().num_days_from_monday());
        }
        out
    }

    #[test]
    fn crontab_weekdays_mean_what_crontab_means() {
        let set = |days: &[u32]| days.iter().copied().collect::<BTreeSet<u32>>();
        let workweek = set(&[0, 1, 2, 3, 4]);
        assert_eq!(weekdays("0 2 * * 1-5"), workweek);
        assert_eq!(weekdays("0 0 2 * * 1-5"), workweek);
        assert_eq!(weekdays("0 0 2 * * MON-FRI"), workweek);
        assert_eq!(weekdays("0 2 * * 0"), set(&[6]));
        assert_eq!(weekdays("0 2 * * 7"), set(&[6]));
        assert_eq!(weekdays("0 2 * * 5-7"), set(&[4, 5, 6]));
    }

    #[test]
    fn five_fields_fire_at_second_zero() {
        let s = Schedule::parse("*/5 * * * *").expect("valid");
        let t = Utc
            .with_ymd_and_hms(2026, 11, 1, 10, 2, 7)
            .single()
            .expect("date");
        let next = s.next_after(t).expect("fires");
        assert_eq!((next.minute(), next.second()), (5, 0));
    }

    #[test]
    fn refuses_nonsense_with_an_example() {
        for bad in [
            "",
            "every minute",
            "* * *",
            "0 2 * * 8",
            "0 2 * * 5-1",
            "61 * * * *",
        ] {
            let e = Schedule::parse(bad).expect_err(bad).to_string();
            assert!(e.contains("*/5 * * * *"), "{e}");
        }
    }
}
