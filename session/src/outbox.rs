//! What both cores share: the queue of messages and events they hand their driver, why a
//! session ended, the peer's liveness and the cadence of periodic work.

use std::time::Duration;

use std::collections::VecDeque;

use bytes::BytesMut;

use crate::wire::{ByeReason, Channel, ControlMessage};

/// A message for the driver to send on one of the three data channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The channel it belongs on.
    pub channel: Channel,
    /// The encoded message.
    pub data: BytesMut,
}

/// Why an established session ended, as far as the core can tell. The driver adds the
/// endings it alone sees (the transport failed, the broker went away).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEnd {
    /// This side closed the session.
    Local,
    /// The peer said goodbye.
    PeerBye {
        /// Its reason code.
        reason: ByeReason,
        /// Its sentence.
        detail: String,
    },
    /// Nothing was heard from the peer for this long.
    PeerTimeout(Duration),
    /// The peer sent something no correct peer sends (the sentence says what).
    ProtocolViolation(String),
}

/// How a peer's goodbye reads to people: its own sentence, else one for its reason. Shared
/// by every type that carries a goodbye, so the agent and the viewer say it alike.
pub fn goodbye_words(reason: ByeReason, detail: &str) -> &str {
    match (detail.is_empty(), reason) {
        (false, _) => detail,
        (true, ByeReason::Error) => "the other side hit an error and ended the session",
        (true, _) => "the other side ended the session",
    }
}

/// How a silent peer reads to people.
pub fn silence_words(quiet: Duration) -> String {
    format!(
        "nothing heard from the other side for {}",
        deskwire_signal::words::duration(quiet)
    )
}

impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionEnd::Local => write!(f, "ended on this side"),
            SessionEnd::PeerBye { reason, detail } => f.write_str(goodbye_words(*reason, detail)),
            SessionEnd::PeerTimeout(d) => f.write_str(&silence_words(*d)),
            SessionEnd::ProtocolViolation(why) => write!(f, "the peer broke the protocol: {why}"),
        }
    }
}

/// What a core has queued for its driver, and whether the session is still open: once it
/// ended, nothing more is queued to send.
#[derive(Debug)]
pub(crate) struct Outbox<E> {
    transmits: VecDeque<Transmit>,
    events: VecDeque<E>,
    end: Option<SessionEnd>,
}

impl<E> Outbox<E> {
    pub(crate) fn new() -> Self {
        Self {
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            end: None,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.end.is_none()
    }

    pub(crate) fn end(&self) -> Option<&SessionEnd> {
        self.end.as_ref()
    }

    /// Queue `t`, unless the session has ended.
    pub(crate) fn send(&mut self, t: Transmit) {
        if self.is_open() {
            self.transmits.push_back(t);
        }
    }

    /// Queue a control message, unless the session has ended.
    pub(crate) fn send_control(&mut self, msg: &ControlMessage) {
        self.send_on(Channel::Control, msg);
    }

    /// Queue a control message on `channel` (see [`crate::wire::is_video_chunk`]).
    pub(crate) fn send_on(&mut self, channel: Channel, msg: &ControlMessage) {
        let mut data = BytesMut::with_capacity(64);
        msg.encode(&mut data);
        self.send(Transmit { channel, data });
    }

    pub(crate) fn event(&mut self, e: E) {
        self.events.push_back(e);
    }

    /// End the session: `ended(end)` is the last event, and nothing is sent after what is
    /// already queued.
    pub(crate) fn finish(&mut self, end: SessionEnd, ended: impl FnOnce(SessionEnd) -> E) {
        self.events.push_back(ended(end.clone()));
        self.end = Some(end);
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub(crate) fn poll_event(&mut self) -> Option<E> {
        self.events.pop_front()
    }
}

/// When the peer was last heard, and how long it may stay silent.
#[derive(Debug)]
pub(crate) struct Liveness {
    last_heard: Duration,
    timeout: Duration,
}

impl Liveness {
    pub(crate) fn new(now: Duration, timeout: Duration) -> Self {
        Self {
            last_heard: now,
            timeout,
        }
    }

    pub(crate) fn heard(&mut self, now: Duration) {
        self.last_heard = self.last_heard.max(now);
    }

    /// How long the peer has been silent at `now`, once that is longer than allowed.
    pub(crate) fn timed_out(&self, now: Duration) -> Option<Duration> {
        let silent = now.saturating_sub(self.last_heard);
        (silent > self.timeout).then_some(silent)
    }

    /// When the silence since the peer was last heard means the link is down: `quiet`
    /// after it if the session is still `active` at that moment, else `idle_quiet` after
    /// it (an idle peer only sends its slow heartbeat). Just past, like [`Self::deadline`].
    pub(crate) fn quiet_due(
        &self,
        quiet: Duration,
        idle_quiet: Duration,
        active: impl Fn(Duration) -> bool,
    ) -> Duration {
        let soon = self.last_heard + quiet + Duration::from_millis(1);
        if active(soon) {
            soon
        } else {
            self.last_heard + idle_quiet.max(quiet) + Duration::from_millis(1)
        }
    }

    /// Just past the deadline, so the check at that instant sees the silence exceed it.
    pub(crate) fn deadline(&self) -> Duration {
        self.last_heard + self.timeout + Duration::from_millis(1)
    }
}

/// Work due every `interval`: when it last ran and when it runs next.
#[derive(Debug)]
pub(crate) struct Every {
    interval: Duration,
    last: Duration,
    next: Duration,
}

impl Every {
    /// First due at `first`; the period before it counts from `now`.
    pub(crate) fn new(now: Duration, first: Duration, interval: Duration) -> Self {
        Self {
            interval,
            last: now,
            next: first,
        }
    }

    /// Whether it is due at `now`; if so, how long since it last ran, and it is rescheduled.
    pub(crate) fn due(&mut self, now: Duration) -> Option<Duration> {
        if now < self.next {
            return None;
        }
        let since = now.saturating_sub(self.last);
        self.last = now;
        self.next = now + self.interval;
        Some(since)
    }

    pub(crate) fn next(&self) -> Duration {
        self.next
    }
}

/// A session counts as active for this long after its last video or input; then it idles,
/// and its heartbeat slows down so that a still desktop costs next to nothing on the wire.
pub(crate) const ACTIVE_FOR: Duration = Duration::from_secs(3);

/// A session-clock instant in the microseconds the wire carries.
pub(crate) fn micros(t: Duration) -> u64 {
    u64::try_from(t.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn nothing_is_queued_to_send_after_the_end_but_the_ended_event_is() {
        let mut out: Outbox<u32> = Outbox::new();
        out.send_control(&ControlMessage::Permissions { control: true });
        out.finish(SessionEnd::Local, |_| 7);
        out.send_control(&ControlMessage::Permissions { control: false });
        assert!(out.poll_transmit().is_some());
        assert!(out.poll_transmit().is_none());
        assert_eq!(out.poll_event(), Some(7));
        assert_eq!(out.end(), Some(&SessionEnd::Local));
    }

    #[test]
    fn silence_counts_from_the_latest_message_and_only_beyond_the_timeout() {
        let mut l = Liveness::new(Duration::ZERO, 100 * MS);
        l.heard(50 * MS);
        l.heard(20 * MS); // late delivery of an older message moves nothing back
        assert_eq!(l.timed_out(150 * MS), None);
        assert_eq!(l.timed_out(l.deadline()), Some(101 * MS));
    }

    #[test]
    fn periodic_work_reports_the_time_since_it_last_ran() {
        let mut e = Every::new(Duration::ZERO, 10 * MS, 10 * MS);
        assert_eq!(e.due(5 * MS), None);
        assert_eq!(e.due(12 * MS), Some(12 * MS));
        assert_eq!(e.next(), 22 * MS);
        assert_eq!(e.due(30 * MS), Some(18 * MS));
    }
}
