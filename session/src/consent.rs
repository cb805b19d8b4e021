//! The target user's consent, decided on the target before anything connects.
//!
//! Sans-IO: [`ConsentPrompt`] is fed the user's answer and the time, and says when the
//! session may start and with what. The agent runs it after both descriptions verified and
//! before it applies the answer, so a refused session never opens a channel.

use std::time::Duration;

/// How a target admits a technician.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptanceMode {
    /// The session starts on its own unless the user rejects it within `reject_window`
    /// (zero: at once, no prompt).
    AllowAutomatically {
        /// How long the user has to reject.
        reject_window: Duration,
    },
    /// The session starts only when the user accepts, within `timeout`.
    AllowByRequest {
        /// How long to wait for the user.
        timeout: Duration,
    },
    /// No sessions.
    Deny,
}

impl AcceptanceMode {
    /// The stricter of two modes (the target's own setting and what the broker said):
    /// deny beats asking, asking beats allowing, and a longer window wins.
    pub fn stricter(self, other: AcceptanceMode) -> AcceptanceMode {
        use AcceptanceMode::*;
        match (self, other) {
            (Deny, _) | (_, Deny) => Deny,
            (AllowByRequest { timeout: a }, AllowByRequest { timeout: b }) => {
                AllowByRequest { timeout: a.min(b) }
            }
            (r @ AllowByRequest { .. }, _) | (_, r @ AllowByRequest { .. }) => r,
            (AllowAutomatically { reject_window: a }, AllowAutomatically { reject_window: b }) => {
                AllowAutomatically {
                    reject_window: a.max(b),
                }
            }
        }
    }
}

/// What the target user answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentAnswer {
    /// Let the technician in; `control` says whether they may also drive the screen.
    Allow {
        /// Keyboard and mouse allowed.
        control: bool,
    },
    /// Keep the technician out.
    Reject,
}

/// Why a session did not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentRefusal {
    /// The user said no.
    RejectedByUser,
    /// The user did not answer in time.
    TimedOut,
    /// The acceptance mode is deny.
    DeniedByPolicy,
}

impl ConsentRefusal {
    /// A sentence for the technician.
    pub fn message(self) -> &'static str {
        match self {
            ConsentRefusal::RejectedByUser => "the user rejected the session",
            ConsentRefusal::TimedOut => "the user did not answer the session request in time",
            ConsentRefusal::DeniedByPolicy => "this computer does not accept sessions",
        }
    }
}

/// The outcome, once there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentOutcome {
    /// Let the technician in, with control or view only.
    Granted {
        /// Keyboard and mouse may be injected.
        control: bool,
    },
    /// Keep them out, for this reason.
    Refused(ConsentRefusal),
}

/// One pending question to the user.
#[derive(Debug)]
pub struct ConsentPrompt {
    mode: AcceptanceMode,
    /// What the session asks for: control unless the target is view-only.
    control: bool,
    started: Duration,
    answer: Option<ConsentAnswer>,
}

impl ConsentPrompt {
    /// Ask at `now` (any monotonic clock, as a duration since its origin).
    pub fn new(mode: AcceptanceMode, control: bool, now: Duration) -> Self {
        Self {
            mode,
            control,
            started: now,
            answer: None,
        }
    }

    /// Whether the user is asked at all (an immediate allow or deny asks nothing).
    pub fn asks_the_user(&self) -> bool {
        match self.mode {
            AcceptanceMode::AllowAutomatically { reject_window } => !reject_window.is_zero(),
            AcceptanceMode::AllowByRequest { .. } => true,
            AcceptanceMode::Deny => false,
        }
    }

    /// When the question is settled without an answer.
    pub fn deadline(&self) -> Duration {
        match self.mode {
            AcceptanceMode::AllowAutomatically { reject_window } => self.started + reject_window,
            AcceptanceMode::AllowByRequest { timeout } => self.started + timeout,
            AcceptanceMode::Deny => self.started,
        }
    }

    /// The user answered. The first answer counts.
    pub fn handle_answer(&mut self, answer: ConsentAnswer) {
        self.answer.get_or_insert(answer);
    }

    /// The outcome at `now`, if settled. The user can narrow what was asked (no control)
    /// but never widen it.
    pub fn poll(&self, now: Duration) -> Option<ConsentOutcome> {
        if self.mode == AcceptanceMode::Deny {
            return Some(ConsentOutcome::Refused(ConsentRefusal::DeniedByPolicy));
        }
        match self.answer {
            Some(ConsentAnswer::Reject) => {
                return Some(ConsentOutcome::Refused(ConsentRefusal::RejectedByUser))
            }
            Some(ConsentAnswer::Allow { control }) => {
                return Some(ConsentOutcome::Granted {
                    control: control && self.control,
                })
            }
            None => {}
        }
        if now < self.deadline() {
            return None;
        }
        Some(match self.mode {
            AcceptanceMode::AllowAutomatically { .. } => ConsentOutcome::Granted {
                control: self.control,
            },
            _ => ConsentOutcome::Refused(ConsentRefusal::TimedOut),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn auto(window: u64) -> AcceptanceMode {
        AcceptanceMode::AllowAutomatically {
            reject_window: S(window),
        }
    }

    fn request(timeout: u64) -> AcceptanceMode {
        AcceptanceMode::AllowByRequest {
            timeout: S(timeout),
        }
    }

    #[test]
    fn allow_automatically_starts_after_the_window_unless_rejected_within_it() {
        let p = ConsentPrompt::new(auto(30), true, S(100));
        assert!(p.asks_the_user());
        assert_eq!(p.poll(S(129)), None);
        assert_eq!(
            p.poll(S(130)),
            Some(ConsentOutcome::Granted { control: true })
        );
        let mut p = ConsentPrompt::new(auto(30), true, S(100));
        p.handle_answer(ConsentAnswer::Reject);
        assert_eq!(
            p.poll(S(101)),
            Some(ConsentOutcome::Refused(ConsentRefusal::RejectedByUser))
        );
        // A zero window asks nothing and starts at once.
        let p = ConsentPrompt::new(auto(0), true, S(5));
        assert!(!p.asks_the_user());
        assert_eq!(
            p.poll(S(5)),
            Some(ConsentOutcome::Granted { control: true })
        );
    }

    #[test]
    fn allow_by_request_waits_for_the_user_and_times_out_with_a_reason() {
        let mut p = ConsentPrompt::new(request(60), true, S(0));
        assert_eq!(p.poll(S(59)), None);
        p.handle_answer(ConsentAnswer::Allow { control: false });
        assert_eq!(
            p.poll(S(59)),
            Some(ConsentOutcome::Granted { control: false })
        );
        let p = ConsentPrompt::new(request(60), true, S(0));
        assert_eq!(
            p.poll(S(60)),
            Some(ConsentOutcome::Refused(ConsentRefusal::TimedOut))
        );
    }

    #[test]
    fn deny_refuses_at_once_and_answers_cannot_widen_what_was_asked() {
        let mut p = ConsentPrompt::new(AcceptanceMode::Deny, true, S(0));
        p.handle_answer(ConsentAnswer::Allow { control: true });
        assert_eq!(
            p.poll(S(0)),
            Some(ConsentOutcome::Refused(ConsentRefusal::DeniedByPolicy))
        );
        // A view-only target asked for view only: allowing control changes nothing.
        let mut p = ConsentPrompt::new(request(60), false, S(0));
        p.handle_answer(ConsentAnswer::Allow { control: true });
        assert_eq!(
            p.poll(S(1)),
            Some(ConsentOutcome::Granted { control: false })
        );
        // The first answer counts.
        let mut p = ConsentPrompt::new(request(60), true, S(0));
        p.handle_answer(ConsentAnswer::Reject);
        p.handle_answer(ConsentAnswer::Allow { control: true });
        assert_eq!(
            p.poll(S(1)),
            Some(ConsentOutcome::Refused(ConsentRefusal::RejectedByUser))
        );
    }

    #[test]
    fn the_stricter_mode_wins() {
        let deny = AcceptanceMode::Deny;
        assert_eq!(auto(30).stricter(deny), deny);
        assert_eq!(auto(30).stricter(request(60)), request(60));
        assert_eq!(request(60).stricter(request(20)), request(20));
        assert_eq!(auto(0).stricter(auto(30)), auto(30));
    }
}
