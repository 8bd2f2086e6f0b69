//! Asking the broker again while it answers that it is not ready yet: a partition's leader not
//! yet known, a group or transaction coordinator loading, a created topic not yet listed. These
//! are answers a fresh broker or a just-created topic gives for a moment, not failures.

use std::time::{Duration, Instant};

/// How long to wait between attempts, and for how long in all.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Patience {
    /// Attempts stop once the next pause would end past this.
    pub within: Duration,
    /// The first pause.
    pub pause: Duration,
    /// Each pause doubles up to this (equal to `pause`: a fixed pause).
    pub max_pause: Duration,
}

impl Patience {
    /// A fixed `pause`, for up to `within`.
    pub(crate) const fn fixed(within: Duration, pause: Duration) -> Patience {
        Patience { within, pause, max_pause: pause }
    }
}

/// Runs `attempt` until it succeeds, fails with an error `transient` does not accept, or
/// `patience` runs out (then the last error is returned). `transient` sees each error with the
/// number of the attempt that failed (1 for the first), so it can log the first one alone.
pub(crate) fn retry<T, E>(
    patience: Patience,
    mut attempt: impl FnMut() -> Result<T, E>,
    mut transient: impl FnMut(&E, u32) -> bool,
) -> Result<T, E> {
    let deadline = Instant::now() + patience.within;
    let mut pause = patience.pause;
    let mut n = 0;
    loop {
        n += 1;
        match attempt() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() + pause <= deadline && transient(&e, n) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(patience.max_pause);
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: Patience = Patience {
        within: Duration::from_secs(5),
        pause: Duration::from_millis(1),
        max_pause: Duration::from_millis(4),
    };

    #[test]
    fn a_transient_error_is_retried_until_the_attempt_succeeds() {
        let mut tries = 0;
        let mut seen = Vec::new();
        let r: Result<u32, &str> = retry(
            QUICK,
            || {
                tries += 1;
                if tries < 4 {
                    Err("not ready")
                } else {
                    Ok(tries)
                }
            },
            |e, n| {
                seen.push((*e, n));
                true
            },
        );
        assert_eq!(r, Ok(4));
        assert_eq!(seen, [("not ready", 1), ("not ready", 2), ("not ready", 3)]);
    }

    #[test]
    fn an_error_that_is_not_transient_is_returned_at_once() {
        let mut tries = 0;
        let r: Result<(), &str> = retry(
            QUICK,
            || {
                tries += 1;
                Err(if tries == 1 { "not ready" } else { "refused" })
            },
            |e, _| *e == "not ready",
        );
        assert_eq!((r, tries), (Err("refused"), 2));
    }

    #[test]
    fn retries_stop_when_patience_runs_out_with_the_last_error() {
        let patience = Patience::fixed(Duration::from_millis(30), Duration::from_millis(10));
        let start = Instant::now();
        let mut tries = 0;
        let r: Result<(), u32> = retry(
            patience,
            || {
                tries += 1;
                Err(tries)
            },
            |_, _| true,
        );
        // Pauses of 10 ms fit at most three times in 30 ms (fewer when a sleep runs long): at
        // most four attempts, and the last one's error is returned.
        assert_eq!(r, Err(tries));
        assert!((2..=4).contains(&tries), "{tries} attempts");
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
