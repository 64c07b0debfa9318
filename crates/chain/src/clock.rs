//! The clock the block producer stamps blocks with: the wall clock, moved by the dev methods
//! (`evm_increaseTime`, `evm_setNextBlockTimestamp`, `evm_mine` with a timestamp) so that
//! time-locked protocol steps can be tried without waiting.
//!
//! No move takes it past [`MAX_TIMESTAMP`], so that none can overflow and send the next block
//! back to wall-clock time. [`Mining`] says when the producer seals blocks.

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use parking_lot::Mutex;

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The longest block interval: a year. Longer ones mean "never" and are better said with
/// [`Mining::Manual`]; they also could not be added to a clock's instant.
pub const MAX_BLOCK_INTERVAL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// When blocks are sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mining {
    /// A block for every batch of transactions that arrives (anvil's and Hardhat's automine).
    OnArrival,
    /// One block (possibly empty) per interval.
    Every(Duration),
    /// Only when a dev method asks.
    Manual,
}

impl Mining {
    /// The mode a block time selects: zero seals on arrival.
    pub fn from_block_time(block_time: Duration) -> Self {
        if block_time.is_zero() {
            Mining::OnArrival
        } else {
            Mining::Every(block_time)
        }
    }
}

/// The latest time the clock can be moved to: 9999-12-31T23:59:59Z. Later times cannot be
/// written as a date, and keeping far below 2^64 leaves room for every sum the clock makes (blocks
/// sealed after it still go up by a second each).
pub const MAX_TIMESTAMP: u64 = 253_402_300_799;

/// A move of the clock that is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// The clock would pass [`MAX_TIMESTAMP`].
    #[error(
        "timestamp {0} is after 9999-12-31T23:59:59Z ({MAX_TIMESTAMP}), the latest time the chain's clock can be moved to"
    )]
    TooLate(u64),
    /// Block timestamps only increase.
    #[error("timestamp {timestamp} is not after the head block's timestamp {head}")]
    NotAfterHead {
        /// The timestamp asked for.
        timestamp: u64,
        /// The head block's timestamp.
        head: u64,
    },
}

/// The wall clock plus an offset, and optionally the exact timestamp of the next block.
#[derive(Debug, Default)]
pub struct Clock {
    /// Seconds added to the wall clock (negative after a pinned time earlier than the clock).
    offset: AtomicI64,
    /// The timestamp the next block gets, set by `evm_setNextBlockTimestamp`.
    next: Mutex<Option<u64>>,
}

impl Clock {
    /// The time the next block is stamped with.
    pub fn now(&self) -> u64 {
        if let Some(next) = *self.next.lock() {
            return next;
        }
        self.shifted_now()
    }

    fn shifted_now(&self) -> u64 {
        let now = unix_now() as i64 + self.offset.load(Ordering::Relaxed);
        now.clamp(0, MAX_TIMESTAMP as i64) as u64
    }

    /// The offset from the wall clock, in seconds.
    pub fn offset(&self) -> i64 {
        self.offset.load(Ordering::Relaxed)
    }

    /// Puts the clock back to `offset` from the wall clock, with no pinned next timestamp (a
    /// dev chain's `evm_revert` restoring a snapshot's time).
    pub fn reset(&self, offset: i64) {
        let mut next = self.next.lock();
        *next = None;
        self.offset.store(offset, Ordering::Relaxed);
    }

    /// Moves the clock `seconds` forward; returns the new offset from the wall clock.
    pub fn advance(&self, seconds: u64) -> Result<i64, ClockError> {
        let mut next = self.next.lock();
        let target = next
            .unwrap_or_else(|| self.shifted_now())
            .saturating_add(seconds);
        if target > MAX_TIMESTAMP {
            return Err(ClockError::TooLate(target));
        }
        if let Some(pinned) = next.as_mut() {
            *pinned = target;
        }
        let seconds = seconds as i64;
        Ok(self.offset.fetch_add(seconds, Ordering::Relaxed) + seconds)
    }

    /// Makes the next block's timestamp exactly `timestamp`, and the blocks after it follow on
    /// from there, as anvil and Hardhat do.
    pub fn set_next(&self, timestamp: u64, head: u64) -> Result<(), ClockError> {
        if timestamp > MAX_TIMESTAMP {
            return Err(ClockError::TooLate(timestamp));
        }
        if timestamp <= head {
            return Err(ClockError::NotAfterHead { timestamp, head });
        }
        let mut next = self.next.lock();
        self.offset
            .store(timestamp as i64 - unix_now() as i64, Ordering::Relaxed);
        *next = Some(timestamp);
        Ok(())
    }

    /// The timestamp for a block being sealed now, given the one its producer asked for: a
    /// pinned next timestamp wins, and is used once.
    pub(crate) fn take_for_block(&self, asked: u64) -> u64 {
        self.next.lock().take().unwrap_or(asked).min(MAX_TIMESTAMP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_cannot_be_moved_past_the_latest_time_or_wrapped() {
        let clock = Clock::default();
        let err = clock.advance(u64::MAX).unwrap_err();
        assert!(matches!(err, ClockError::TooLate(_)), "{err}");
        assert_eq!(clock.offset(), 0);
        clock.advance(3_600).unwrap();
        assert!(clock.advance(u64::MAX).is_err());
        assert_eq!(clock.offset(), 3_600);
        assert!(clock.now() >= unix_now() + 3_600);
    }

    #[test]
    fn a_next_timestamp_is_checked_used_once_and_followed_on_from() {
        let clock = Clock::default();
        let head = unix_now();
        assert!(matches!(
            clock.set_next(u64::MAX, head),
            Err(ClockError::TooLate(u64::MAX))
        ));
        assert!(matches!(
            clock.set_next(head, head),
            Err(ClockError::NotAfterHead { .. })
        ));
        let pinned = head + 1_000_000;
        clock.set_next(pinned, head).unwrap();
        assert_eq!(clock.now(), pinned);
        assert_eq!(clock.take_for_block(head + 1), pinned);
        // Later blocks follow on from the pinned time, not from the wall clock.
        let after = clock.take_for_block(clock.now());
        assert!((pinned..pinned + 60).contains(&after), "{after}");
    }
}
