//! The health of one relay as a state machine over probe outcomes, with
//! hysteresis so that one lost UDP packet does not take a relay out of
//! the ICE answers. Pure: time comes in as an argument, so the tests drive
//! it with a fake clock, and the transitions come out as values for the
//! caller to log (one line per transition, never one per probe).

use std::time::{Duration, Instant};

use crate::Health;

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The relay answered (STUN, and /readyz when asked).
    Passed {
        /// /readyz said the relay is draining: alive, but not to be handed out.
        draining: bool,
        /// The allocation count /readyz reported, if it did.
        allocations: Option<u64>,
        /// The capacity (allocations at most) /readyz reported, if any.
        capacity: Option<u64>,
    },
    /// It did not; why, for the log and the status page.
    Failed(String),
}

/// A change worth one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Left out of the answers after enough consecutive failures.
    BecameUnhealthy { reason: String },
    /// Served again; `down_for` is how long it was unhealthy (`None` for a
    /// relay seen for the first time).
    BecameHealthy { down_for: Option<Duration> },
    /// /readyz started saying draining.
    DrainingStarted,
    /// /readyz stopped saying draining.
    DrainingEnded,
}

/// The hysteresis thresholds; both are at least 1 in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive failures that make a relay unhealthy.
    pub unhealthy_after: u32,
    /// Consecutive successes that make an unhealthy relay healthy again.
    pub healthy_after: u32,
}

/// One relay's health, as the probes have seen it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthState {
    pub health: Health,
    pub draining: bool,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    /// The last failure's reason, until the relay is healthy again.
    pub last_error: Option<String>,
    pub allocations: Option<u64>,
    pub capacity: Option<u64>,
    /// When the current `health` began.
    since: Option<Instant>,
}

impl Default for HealthState {
    fn default() -> Self {
        HealthState {
            health: Health::Unknown,
            draining: false,
            consecutive_failures: 0,
            consecutive_successes: 0,
            last_error: None,
            allocations: None,
            capacity: None,
            since: None,
        }
    }
}

impl HealthState {
    /// Takes one probe's outcome at `now`; returns what changed.
    pub fn observe(
        &mut self,
        outcome: ProbeOutcome,
        now: Instant,
        t: Thresholds,
    ) -> Vec<Transition> {
        let mut transitions = Vec::new();
        match outcome {
            ProbeOutcome::Failed(reason) => {
                self.consecutive_successes = 0;
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                // Draining is left as it was: a lost probe says nothing
                // about it, and an unhealthy relay is left out anyway.
                if self.health != Health::Unhealthy
                    && self.consecutive_failures >= t.unhealthy_after.max(1)
                {
                    self.health = Health::Unhealthy;
                    self.since = Some(now);
                    transitions.push(Transition::BecameUnhealthy {
                        reason: reason.clone(),
                    });
                }
                self.last_error = Some(reason);
            }
            ProbeOutcome::Passed {
                draining,
                allocations,
                capacity,
            } => {
                self.consecutive_failures = 0;
                self.consecutive_successes = self.consecutive_successes.saturating_add(1);
                self.allocations = allocations;
                self.capacity = capacity;
                let recovered = match self.health {
                    // The first answer of a relay never probed is trusted at
                    // once: there is no flapping to damp yet.
                    Health::Unknown => true,
                    Health::Unhealthy => self.consecutive_successes >= t.healthy_after.max(1),
                    Health::Healthy => false,
                };
                if recovered {
                    let down_for = match self.health {
                        Health::Unhealthy => {
                            self.since.map(|since| now.saturating_duration_since(since))
                        }
                        _ => None,
                    };
                    self.health = Health::Healthy;
                    self.since = Some(now);
                    transitions.push(Transition::BecameHealthy { down_for });
                }
                if self.health == Health::Healthy {
                    self.last_error = None;
                }
                // Draining is an explicit state, not a flap: no hysteresis.
                if draining != self.draining {
                    self.draining = draining;
                    transitions.push(if draining {
                        Transition::DrainingStarted
                    } else {
                        Transition::DrainingEnded
                    });
                }
            }
        }
        transitions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        unhealthy_after: 2,
        healthy_after: 3,
    };

    fn pass() -> ProbeOutcome {
        ProbeOutcome::Passed {
            draining: false,
            allocations: Some(4),
            capacity: None,
        }
    }

    fn fail() -> ProbeOutcome {
        ProbeOutcome::Failed("no STUN answer in 1s".into())
    }

    /// A fake clock: each probe one "interval" after the last.
    struct Clock(Instant, u64);
    impl Clock {
        fn tick(&mut self) -> Instant {
            self.1 += 1;
            self.0 + Duration::from_secs(self.1 * 10)
        }
    }

    #[test]
    fn unknown_becomes_healthy_at_the_first_success() {
        let mut clock = Clock(Instant::now(), 0);
        let mut s = HealthState::default();
        assert_eq!(s.health, Health::Unknown);
        let tr = s.observe(pass(), clock.tick(), T);
        assert_eq!(tr, [Transition::BecameHealthy { down_for: None }]);
        assert_eq!(
            (s.health, s.allocations, s.consecutive_successes),
            (Health::Healthy, Some(4), 1)
        );
    }

    #[test]
    fn one_lost_probe_does_not_flap_n_do() {
        let mut clock = Clock(Instant::now(), 0);
        let mut s = HealthState::default();
        s.observe(pass(), clock.tick(), T);
        assert!(s.observe(fail(), clock.tick(), T).is_empty());
        assert_eq!((s.health, s.consecutive_failures), (Health::Healthy, 1));
        // A success in between resets the count.
        assert!(s.observe(pass(), clock.tick(), T).is_empty());
        assert!(s.observe(fail(), clock.tick(), T).is_empty());
        assert_eq!(s.health, Health::Healthy);
        let tr = s.observe(fail(), clock.tick(), T);
        assert_eq!(
            tr,
            [Transition::BecameUnhealthy {
                reason: "no STUN answer in 1s".into()
            }]
        );
        assert_eq!((s.health, s.consecutive_failures), (Health::Unhealthy, 2));
        assert_eq!(s.last_error.as_deref(), Some("no STUN answer in 1s"));
        // Further failures are no new transition.
        assert!(s.observe(fail(), clock.tick(), T).is_empty());
        assert_eq!(s.consecutive_failures, 3);
    }

    #[test]
    fn recovery_takes_m_successes_and_reports_the_outage() {
        let mut clock = Clock(Instant::now(), 0);
        let mut s = HealthState::default();
        s.observe(fail(), clock.tick(), T);
        s.observe(fail(), clock.tick(), T); // unhealthy at t=20s
        assert_eq!(s.health, Health::Unhealthy);
        assert!(s.observe(pass(), clock.tick(), T).is_empty());
        assert!(s.observe(pass(), clock.tick(), T).is_empty());
        assert_eq!(s.health, Health::Unhealthy);
        assert!(
            s.last_error.is_some(),
            "the reason stays while still unhealthy"
        );
        let tr = s.observe(pass(), clock.tick(), T); // t=50s
        assert_eq!(
            tr,
            [Transition::BecameHealthy {
                down_for: Some(Duration::from_secs(30))
            }]
        );
        assert_eq!((s.health, s.last_error.as_deref()), (Health::Healthy, None));
        // A failure during recovery starts the count again.
        s.observe(fail(), clock.tick(), T);
        s.observe(fail(), clock.tick(), T);
        s.observe(pass(), clock.tick(), T);
        s.observe(pass(), clock.tick(), T);
        s.observe(fail(), clock.tick(), T);
        s.observe(pass(), clock.tick(), T);
        s.observe(pass(), clock.tick(), T);
        assert_eq!(s.health, Health::Unhealthy);
    }

    #[test]
    fn a_never_answering_relay_goes_from_unknown_to_unhealthy() {
        let mut clock = Clock(Instant::now(), 0);
        let mut s = HealthState::default();
        assert!(s.observe(fail(), clock.tick(), T).is_empty());
        assert_eq!(s.health, Health::Unknown);
        assert_eq!(s.observe(fail(), clock.tick(), T).len(), 1);
        assert_eq!(s.health, Health::Unhealthy);
    }

    #[test]
    fn draining_is_immediate_both_ways() {
        let mut clock = Clock(Instant::now(), 0);
        let mut s = HealthState::default();
        s.observe(pass(), clock.tick(), T);
        let tr = s.observe(
            ProbeOutcome::Passed {
                draining: true,
                allocations: Some(9),
                capacity: Some(10),
            },
            clock.tick(),
            T,
        );
        assert_eq!(tr, [Transition::DrainingStarted]);
        assert!(s.draining);
        assert_eq!(s.health, Health::Healthy);
        // A lost probe leaves it draining.
        s.observe(fail(), clock.tick(), T);
        assert!(s.draining);
        let tr = s.observe(pass(), clock.tick(), T);
        assert_eq!(tr, [Transition::DrainingEnded]);
        assert!(!s.draining);
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let t = Thresholds {
            unhealthy_after: 0,
            healthy_after: 0,
        };
        let mut clock = Clock(Instant::now(), 0);
        let mut s = HealthState::default();
        s.observe(pass(), clock.tick(), t);
        assert!(s.observe(fail(), clock.tick(), t).len() == 1);
        assert!(s.observe(pass(), clock.tick(), t).len() == 1);
    }
}
