//! The accidental-press guard of the chord (policy `[hotkey] repeat`, `window_ms`, `hold_ms`),
//! as a small state machine with no clock and no threads of its own, so it is tested exactly.
//!
//! - `repeat = N` (default 1): the chord triggers on the N-th press within `window_ms`.
//! - `hold_ms = H` (default 0 = off): a press counts only once the chord has been held H ms
//!   without being released. The caller arms a timer on [`PressOutcome::HoldStarted`] and asks
//!   [`HotkeyGuard::hold_elapsed`] when it fires.
//!
//! Both may be combined: each press must be held, and N held presses within the window trigger.
//! Auto-repeat of a held chord is not a second press: the hotkey back ends report a press once
//! until the release (global-hotkey asks X11 for detectable auto-repeat and tracks `pressed`).

use std::time::{Duration, Instant};

/// What a press means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PressOutcome {
    /// Raise the alarm now.
    Trigger,
    /// Counted; more presses are needed within the window.
    Counted { presses: u32, needed: u32 },
    /// Hold detection started: call [`HotkeyGuard::hold_elapsed`] with `generation` after `hold`.
    HoldStarted { generation: u64, hold: Duration },
}

/// The guard's state. One per agent (all chords share it: any configured chord counts).
#[derive(Debug, Clone)]
pub struct HotkeyGuard {
    repeat: u32,
    window: Duration,
    hold: Duration,
    /// Times of the counted presses inside the current window (at most `repeat` of them).
    presses: Vec<Instant>,
    /// Bumped at every press and release: a hold timer whose generation is stale is void.
    generation: u64,
    /// The generation of the press being held, while it is held.
    held: Option<u64>,
}

impl HotkeyGuard {
    /// From the policy values; `repeat = 0` is treated as 1.
    pub fn new(repeat: u32, window_ms: u64, hold_ms: u64) -> Self {
        let repeat = repeat.max(1);
        HotkeyGuard {
            repeat,
            window: Duration::from_millis(window_ms),
            hold: Duration::from_millis(hold_ms),
            presses: Vec::with_capacity(repeat as usize),
            generation: 0,
            held: None,
        }
    }

    /// From the policy's `[hotkey]` section.
    pub fn from_policy(p: &crate::policy::HotkeyPolicy) -> Self {
        HotkeyGuard::new(p.repeat, p.window_ms, p.hold_ms)
    }

    /// True when every press triggers at once (no guard configured).
    pub fn is_immediate(&self) -> bool {
        self.repeat == 1 && self.hold.is_zero()
    }

    /// The chord went down at `now`.
    pub fn press(&mut self, now: Instant) -> PressOutcome {
        self.generation = self.generation.wrapping_add(1);
        if !self.hold.is_zero() {
            self.held = Some(self.generation);
            return PressOutcome::HoldStarted {
                generation: self.generation,
                hold: self.hold,
            };
        }
        self.count(now)
    }

    /// The chord went up.
    pub fn release(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.held = None;
    }

    /// The hold timer of press `generation` fired at `now`: true when that press is still held
    /// and completes the guard (the alarm must be raised).
    pub fn hold_elapsed(&mut self, generation: u64, now: Instant) -> bool {
        if self.held != Some(generation) {
            return false;
        }
        // One press is one count, however long it is held.
        self.held = None;
        self.count(now) == PressOutcome::Trigger
    }

    fn count(&mut self, now: Instant) -> PressOutcome {
        let window = self.window;
        self.presses
            .retain(|t| now.checked_duration_since(*t).is_some_and(|d| d <= window));
        self.presses.push(now);
        let presses = self.presses.len() as u32;
        if presses >= self.repeat {
            self.presses.clear();
            PressOutcome::Trigger
        } else {
            PressOutcome::Counted {
                presses,
                needed: self.repeat,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Default policy: every press triggers at once.
    #[test]
    fn default_triggers_every_press() {
        let mut g = HotkeyGuard::new(1, 1500, 0);
        assert!(g.is_immediate());
        let t0 = Instant::now();
        assert_eq!(g.press(t0), PressOutcome::Trigger);
        g.release();
        assert_eq!(g.press(t0 + ms(10)), PressOutcome::Trigger);
    }

    /// `repeat = 3`: three presses inside the window trigger; presses that fall out of the
    /// window are forgotten; after a trigger counting starts again.
    #[test]
    fn repeat_needs_n_presses_within_the_window() {
        let mut g = HotkeyGuard::new(3, 1000, 0);
        assert!(!g.is_immediate());
        let t0 = Instant::now();
        assert_eq!(
            g.press(t0),
            PressOutcome::Counted {
                presses: 1,
                needed: 3
            }
        );
        g.release();
        assert_eq!(
            g.press(t0 + ms(300)),
            PressOutcome::Counted {
                presses: 2,
                needed: 3
            }
        );
        g.release();
        assert_eq!(g.press(t0 + ms(600)), PressOutcome::Trigger);
        g.release();
        // Counting restarts after a trigger.
        assert!(matches!(
            g.press(t0 + ms(700)),
            PressOutcome::Counted { presses: 1, .. }
        ));
        g.release();
        // Too slow: the first presses leave the window.
        let t1 = t0 + ms(10_000);
        assert!(matches!(
            g.press(t1),
            PressOutcome::Counted { presses: 1, .. }
        ));
        g.release();
        assert!(matches!(
            g.press(t1 + ms(900)),
            PressOutcome::Counted { presses: 2, .. }
        ));
        g.release();
        // t1 is now 1100 ms old: out of the window.
        assert!(matches!(
            g.press(t1 + ms(1100)),
            PressOutcome::Counted { presses: 2, .. }
        ));
        g.release();
        assert_eq!(g.press(t1 + ms(1200)), PressOutcome::Trigger);
    }

    /// `hold_ms`: a press released early does nothing; a press still held when its timer fires
    /// triggers once; a stale timer (from an earlier press) is void.
    #[test]
    fn hold_requires_the_chord_to_stay_down() {
        let mut g = HotkeyGuard::new(1, 1500, 800);
        let t0 = Instant::now();
        let PressOutcome::HoldStarted {
            generation: g1,
            hold,
        } = g.press(t0)
        else {
            panic!("hold expected");
        };
        assert_eq!(hold, ms(800));
        g.release();
        assert!(!g.hold_elapsed(g1, t0 + ms(800)), "released early");

        let PressOutcome::HoldStarted { generation: g2, .. } = g.press(t0 + ms(1000)) else {
            panic!("hold expected");
        };
        assert!(!g.hold_elapsed(g1, t0 + ms(1800)), "a stale timer is void");
        assert!(g.hold_elapsed(g2, t0 + ms(1800)), "held long enough");
        assert!(
            !g.hold_elapsed(g2, t0 + ms(2600)),
            "one held press triggers once"
        );
    }

    /// `hold_ms` with `repeat = 2`: two held presses within the window trigger.
    #[test]
    fn hold_and_repeat_combine() {
        let mut g = HotkeyGuard::new(2, 5000, 500);
        let t0 = Instant::now();
        let PressOutcome::HoldStarted { generation: a, .. } = g.press(t0) else {
            panic!()
        };
        assert!(
            !g.hold_elapsed(a, t0 + ms(500)),
            "first held press only counts"
        );
        g.release();
        let PressOutcome::HoldStarted { generation: b, .. } = g.press(t0 + ms(1000)) else {
            panic!()
        };
        assert!(g.hold_elapsed(b, t0 + ms(1500)));
    }

    /// `repeat = 0` in a policy is read as 1 (never a chord that cannot trigger).
    #[test]
    fn repeat_zero_is_one() {
        let mut g = HotkeyGuard::new(0, 0, 0);
        assert_eq!(g.press(Instant::now()), PressOutcome::Trigger);
    }
}
