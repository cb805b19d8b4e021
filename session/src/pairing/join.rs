//! The agent's first step: joining the broker with the code its user typed (or the code a
//! call was made with), before the key exchange. Wrong codes go back to the user; a
//! technician's side that is re-attaching after a broker restart is waited for.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use deskwire_signal::device::DeviceKey;
use deskwire_signal::{
    BrokerMessage, ClientMessage, ConnectionCode, JoinRefusal, SessionCode, SessionPolicy,
};

use super::PairingEnd;

/// How long to wait before joining again while the technician's side reconnects.
pub const AWAY_RETRY: Duration = Duration::from_millis(500);
/// How many times (half a minute at [`AWAY_RETRY`]).
pub const MAX_AWAY_RETRIES: u32 = 60;

/// What the driver must show or do, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeJoinEvent {
    /// The broker accepted the code: pairing starts. `code` is the whole code the user
    /// typed (`None` for a call, whose secret is not a code's).
    Joined {
        /// The code that was accepted.
        code: Option<ConnectionCode>,
        /// The technician's group policy, from a broker with accounts.
        policy: Option<SessionPolicy>,
    },
    /// The broker refused the code: ask the user for another
    /// ([`CodeJoin::handle_code`]).
    Refused {
        /// Why.
        reason: JoinRefusal,
        /// The sentence to show.
        message: String,
    },
    /// No session: the broker failed, or a call was refused.
    Ended(PairingEnd),
}

/// Joining with a code, as a state machine.
pub struct CodeJoin {
    device: Option<Arc<DeviceKey>>,
    /// The code being tried (the broker's half goes out; the whole code is kept).
    pending: Option<(SessionCode, Option<ConnectionCode>)>,
    /// A call joins once: a refusal ends it instead of asking the user.
    once: bool,
    away_retries: u32,
    retry_at: Option<Duration>,
    done: bool,
    transmits: VecDeque<ClientMessage>,
    events: VecDeque<CodeJoinEvent>,
}

impl std::fmt::Debug for CodeJoin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeJoin")
            .field("once", &self.once)
            .field("away_retries", &self.away_retries)
            .field("retry_at", &self.retry_at)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl CodeJoin {
    /// Join with the code the user typed (`None`: wait for one), proving this computer's
    /// identity with `device` when it has a key.
    pub fn code(first: Option<ConnectionCode>, device: Option<Arc<DeviceKey>>) -> Self {
        let mut this = Self::new(device, false);
        if let Some(code) = first {
            this.try_code(code.session(), Some(code));
        }
        this
    }

    /// Join the code a call (ad-hoc or unattended) was made with, once.
    pub fn call(session: SessionCode, device: Option<Arc<DeviceKey>>) -> Self {
        let mut this = Self::new(device, true);
        this.try_code(session, None);
        this
    }

    fn new(device: Option<Arc<DeviceKey>>, once: bool) -> Self {
        Self {
            device,
            pending: None,
            once,
            away_retries: 0,
            retry_at: None,
            done: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    fn try_code(&mut self, session: SessionCode, whole: Option<ConnectionCode>) {
        self.pending = Some((session, whole));
        self.send_join();
    }

    /// Only the broker's half of the code goes to the broker.
    fn send_join(&mut self) {
        if let Some((session, _)) = self.pending {
            self.transmits.push_back(ClientMessage::Join {
                code: session.to_string(),
                device: self.device.as_ref().map(|k| k.prove(session)),
            });
        }
    }

    /// The user typed another code.
    pub fn handle_code(&mut self, code: ConnectionCode) {
        if self.done || self.once {
            return;
        }
        self.away_retries = 0;
        self.retry_at = None;
        self.try_code(code.session(), Some(code));
    }

    /// A message from the broker.
    pub fn handle_broker(&mut self, now: Duration, msg: BrokerMessage) {
        if self.done {
            return;
        }
        match msg {
            BrokerMessage::Joined { policy } => match self.pending {
                Some((_, code)) => {
                    self.done = true;
                    self.events
                        .push_back(CodeJoinEvent::Joined { code, policy });
                }
                None => self.end(PairingEnd::Broker("joined without a code".into())),
            },
            // The technician's side is re-attaching after a broker restart: the code still
            // works, so send it again shortly rather than asking the user to retype it.
            BrokerMessage::JoinRefused {
                reason: JoinRefusal::ControllerAway,
                message,
            } if !self.once && self.away_retries < MAX_AWAY_RETRIES => {
                self.away_retries += 1;
                tracing::info!(
                    message,
                    "the technician is reconnecting; joining again shortly"
                );
                self.retry_at = Some(now + AWAY_RETRY);
            }
            BrokerMessage::JoinRefused { message, .. } if self.once => {
                self.end(PairingEnd::Broker(message))
            }
            BrokerMessage::JoinRefused { reason, message } => {
                self.events
                    .push_back(CodeJoinEvent::Refused { reason, message });
            }
            BrokerMessage::Error { message } => self.end(PairingEnd::Broker(message)),
            other => tracing::debug!(?other, "ignored while joining"),
        }
    }

    /// Time passed: join again after a technician's side that was away.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.retry_at.is_some_and(|at| now >= at) {
            self.retry_at = None;
            self.send_join();
        }
    }

    /// When [`Self::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.retry_at.filter(|_| !self.done)
    }

    /// The next message for the broker.
    pub fn poll_transmit(&mut self) -> Option<ClientMessage> {
        self.transmits.pop_front()
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<CodeJoinEvent> {
        self.events.pop_front()
    }

    fn end(&mut self, why: PairingEnd) {
        self.done = true;
        self.retry_at = None;
        self.events.push_back(CodeJoinEvent::Ended(why));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(n: u32) -> ConnectionCode {
        ConnectionCode::new(SessionCode::from_number(n).unwrap(), 1234).unwrap()
    }

    fn joined_code(msg: Option<ClientMessage>) -> String {
        match msg {
            Some(ClientMessage::Join { code, device }) => {
                assert!(device.is_none());
                code
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_the_brokers_half_of_the_code_goes_out_and_a_refusal_asks_for_another() {
        let mut join = CodeJoin::code(Some(code(111_111)), None);
        assert_eq!(joined_code(join.poll_transmit()), "111 111");
        join.handle_broker(
            Duration::ZERO,
            BrokerMessage::JoinRefused {
                reason: JoinRefusal::WrongCode,
                message: "no such code".into(),
            },
        );
        assert!(matches!(
            join.poll_event(),
            Some(CodeJoinEvent::Refused {
                reason: JoinRefusal::WrongCode,
                ..
            })
        ));
        join.handle_code(code(222_222));
        assert_eq!(joined_code(join.poll_transmit()), "222 222");
        join.handle_broker(Duration::ZERO, BrokerMessage::Joined { policy: None });
        assert_eq!(
            join.poll_event(),
            Some(CodeJoinEvent::Joined {
                code: Some(code(222_222)),
                policy: None
            })
        );
    }

    #[test]
    fn an_away_technician_is_retried_every_half_second_for_half_a_minute_then_reported() {
        let mut join = CodeJoin::code(Some(code(111_111)), None);
        let _ = join.poll_transmit();
        let away = || BrokerMessage::JoinRefused {
            reason: JoinRefusal::ControllerAway,
            message: "reconnecting".into(),
        };
        let mut now = Duration::ZERO;
        for _ in 0..MAX_AWAY_RETRIES {
            join.handle_broker(now, away());
            assert_eq!(join.poll_event(), None, "the user is not asked yet");
            assert_eq!(join.poll_timeout(), Some(now + AWAY_RETRY));
            join.handle_timeout(now + AWAY_RETRY - Duration::from_millis(1));
            assert_eq!(join.poll_transmit(), None);
            now += AWAY_RETRY;
            join.handle_timeout(now);
            assert_eq!(joined_code(join.poll_transmit()), "111 111");
        }
        assert_eq!(now, Duration::from_secs(30));
        join.handle_broker(now, away());
        assert!(matches!(
            join.poll_event(),
            Some(CodeJoinEvent::Refused { .. })
        ));
        assert_eq!(join.poll_timeout(), None);
    }

    #[test]
    fn a_call_joins_once_and_a_refusal_ends_it() {
        let session = SessionCode::from_number(333_333).unwrap();
        let mut join = CodeJoin::call(session, None);
        assert_eq!(joined_code(join.poll_transmit()), "333 333");
        join.handle_code(code(444_444));
        assert_eq!(join.poll_transmit(), None, "a call takes no other code");
        join.handle_broker(
            Duration::ZERO,
            BrokerMessage::JoinRefused {
                reason: JoinRefusal::ControllerAway,
                message: "gone".into(),
            },
        );
        assert_eq!(
            join.poll_event(),
            Some(CodeJoinEvent::Ended(PairingEnd::Broker("gone".into())))
        );
        join.handle_broker(Duration::ZERO, BrokerMessage::Joined { policy: None });
        assert_eq!(join.poll_event(), None, "nothing after the end");
    }

    #[test]
    fn a_joined_without_a_code_or_a_broker_error_ends_the_attempt() {
        let mut join = CodeJoin::code(None, None);
        assert_eq!(join.poll_transmit(), None, "nothing to send before a code");
        join.handle_broker(Duration::ZERO, BrokerMessage::Joined { policy: None });
        assert!(matches!(
            join.poll_event(),
            Some(CodeJoinEvent::Ended(PairingEnd::Broker(_)))
        ));
        let mut join = CodeJoin::code(Some(code(111_111)), None);
        join.handle_broker(
            Duration::ZERO,
            BrokerMessage::Error {
                message: "shutting down".into(),
            },
        );
        assert_eq!(
            join.poll_event(),
            Some(CodeJoinEvent::Ended(PairingEnd::Broker(
                "shutting down".into()
            )))
        );
    }
}
