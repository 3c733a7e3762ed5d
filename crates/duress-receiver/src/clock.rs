//! The receiver's clock, in a leaf module so the store, the API and the console read the same
//! time without depending on each other.

use time::OffsetDateTime;

/// The receiver clock as it is stored and answered: UTC, millisecond precision.
pub fn receiver_now() -> OffsetDateTime {
    duress_core::clock::truncate_to_millis(OffsetDateTime::now_utc())
}
