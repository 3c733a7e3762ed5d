//! The local UTC offset, for showing times of day ("last contact 14:02"). Asked each time (a
//! tray runs for months, across daylight-saving changes); UTC if the zone cannot be read.

use time::UtcOffset;

/// The local offset now.
pub fn offset_now() -> UtcOffset {
    let secs = chrono::Local::now().offset().local_minus_utc();
    UtcOffset::from_whole_seconds(secs).unwrap_or(UtcOffset::UTC)
}
