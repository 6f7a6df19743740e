//! `[[preload]]`: load a class's models before the lesson starts.
//!
//! ```toml
//! [[preload]]
//! at = "Mon-Fri 08:50"        # or "Tue,Thu 13:55", or "08:50" (every day); the machine's local time
//! models = ["llama-3.1-8b"]
//! ```

use chrono::{Datelike, NaiveTime, Timelike, Weekday};

#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub days: Vec<Weekday>,
    pub time: NaiveTime,
    pub models: Vec<String>,
}

fn weekday(s: &str) -> Option<Weekday> {
    match s.to_ascii_lowercase().get(..3)? {
        "mon" => Some(Weekday::Mon),
        "tue" => Some(Weekday::Tue),
        "wed" => Some(Weekday::Wed),
        "thu" => Some(Weekday::Thu),
        "fri" => Some(Weekday::Fri),
        "sat" => Some(Weekday::Sat),
        "sun" => Some(Weekday::Sun),
        _ => None,
    }
}

/// `Mon-Fri 08:50`, `Tue,Thu 13:55`, `08:50`.
pub fn parse_at(at: &str) -> Result<(Vec<Weekday>, NaiveTime), String> {
    let bad =
        || format!("`{at}` is not a time like \"Mon-Fri 08:50\", \"Tue,Thu 13:55\" or \"08:50\"");
    let parts: Vec<&str> = at.split_whitespace().collect();
    let (days_part, time_part) = match parts.as_slice() {
        [t] => (None, *t),
        [d, t] => (Some(*d), *t),
        _ => return Err(bad()),
    };
    let time = NaiveTime::parse_from_str(time_part, "%H:%M").map_err(|_| bad())?;
    let all = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];
    let days = match days_part {
        None => all.to_vec(),
        Some(d) => {
            let mut out = Vec::new();
            for piece in d.split(',') {
                if let Some((a, b)) = piece.split_once('-') {
                    let (a, b) = (weekday(a).ok_or_else(bad)?, weekday(b).ok_or_else(bad)?);
                    let (i, j) = (a.num_days_from_monday(), b.num_days_from_monday());
                    if i > j {
                        return Err(bad());
                    }
                    out.extend(all[i as usize..=j as usize].iter().copied());
                } else {
                    out.push(weekday(piece).ok_or_else(bad)?);
                }
            }
            out
        }
    };
    Ok((days, time))
}

impl Slot {
    /// Is `now` (local) the minute this slot fires?
    pub fn due(&self, weekday: Weekday, hour: u32, minute: u32) -> bool {
        self.days.contains(&weekday) && self.time.hour() == hour && self.time.minute() == minute
    }
}

/// Check the timetable twice a minute; load what is due (once per minute),
/// each load a task of `tasks`.
pub async fn run(
    slots: Vec<Slot>,
    fleet: std::sync::Arc<crate::Fleet>,
    tasks: crate::tasks::Tasks,
) {
    let mut fired: Option<(u32, u32, u32)> = None;
    loop {
        let now = chrono::Local::now();
        let key = (now.ordinal(), now.hour(), now.minute());
        if fired != Some(key) {
            for s in slots
                .iter()
                .filter(|s| s.due(now.weekday(), now.hour(), now.minute()))
            {
                fired = Some(key);
                for m in &s.models {
                    let fleet = fleet.clone();
                    let m = m.clone();
                    tasks.spawn("timetable preload", async move {
                        tracing::info!(model = %m, "preloading (timetable)");
                        if let Err(e) = fleet.load(&m).await {
                            tracing::warn!(model = %m, "timetable preload failed: {e}");
                        }
                    });
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_fires() {
        let (d, t) = parse_at("Mon-Fri 08:50").unwrap();
        assert_eq!(d.len(), 5);
        assert_eq!((t.hour(), t.minute()), (8, 50));
        let s = Slot {
            days: d,
            time: t,
            models: vec!["m".into()],
        };
        assert!(s.due(Weekday::Wed, 8, 50));
        assert!(!s.due(Weekday::Sat, 8, 50));
        assert!(!s.due(Weekday::Wed, 8, 51));
        assert_eq!(
            parse_at("Tue,Thu 13:55").unwrap().0,
            vec![Weekday::Tue, Weekday::Thu]
        );
        assert_eq!(parse_at("07:00").unwrap().0.len(), 7);
        for bad in [
            "Fri-Mon 08:00",
            "Mon 25:00",
            "someday 08:00",
            "",
            "Mon Tue 08:00",
        ] {
            assert!(parse_at(bad).is_err(), "{bad}");
        }
    }
}
