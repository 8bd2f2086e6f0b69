//! Session time: milliseconds of continuous trading since 09:30 HKT, lunch break left out.
//!
//! The generator schedules everything in session time, so any instant below [`SESSION_MS`] maps to
//! 09:30–12:00 or 13:00–16:00 HKT on the trade date (../shared/HKEX.md §2), never into the lunch break.

use chrono::{NaiveDate, NaiveTime};
use harbour_dataflows::model::Ts;
use harbour_dataflows::validate::hkt;

/// Length of the morning session, 09:30–12:00.
pub(crate) const MORNING_MS: u64 = 150 * 60_000;
/// The lunch break, 12:00–13:00.
pub(crate) const LUNCH_MS: u64 = 60 * 60_000;
/// Continuous trading in the day: 09:30–12:00 and 13:00–16:00.
pub(crate) const SESSION_MS: u64 = MORNING_MS + 180 * 60_000;
/// Session time of 16:08, where the random close window opens (16:08–16:10).
pub(crate) const CLOSE_FROM_MS: u64 = SESSION_MS + 8 * 60_000;
/// Length of the random close window.
pub(crate) const CLOSE_WINDOW_MS: u64 = 2 * 60_000;

/// Maps session time to event time for one trade date.
pub(crate) struct Clock {
    open: Ts,
}

impl Clock {
    /// The clock of `date`, whose session opens at 09:30 HKT.
    pub fn new(date: NaiveDate) -> Clock {
        let open = date
            .and_time(NaiveTime::from_hms_opt(9, 30, 0).expect("valid time"))
            .and_local_timezone(hkt())
            .single()
            .expect("a fixed offset is never ambiguous");
        Clock { open: open.timestamp_nanos_opt().expect("validated dates fit in nanoseconds") }
    }

    /// Event time of session time `ms`; from 12:00 on, an hour later for the lunch break.
    pub fn at(&self, ms: u64) -> Ts {
        let wall = if ms < MORNING_MS { ms } else { ms + LUNCH_MS };
        self.open + i64::try_from(wall).expect("within a day") * 1_000_000
    }
}
