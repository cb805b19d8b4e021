//! Signalling messages: JSON over a WebSocket, every message typed and versioned.
//!
//! ```text
//! controller                      broker                         target
//!   create_session  ------------->
//!                   <-------------  session_created {session}
//!   (code = session + secret, read to the user)
//!                                         <--------------------  join {session part}
//!                                  join_refused {reason} ------>  (enter again or leave)
//!   <-- peer_joined                joined  -------------------->
//!   relay {pake} ------------------------------------------------> relay {pake}
//!   relay {confirm} ---------------------------------------------> (checked; user asked:
//!                   <-- relay {awaiting_consent}  <-------------   awaiting_consent)
//!                   <-- relay {offer, mac}  <-------------------  relay {offer, mac}
//!   relay {answer, mac} -->          relay {answer, mac} ------>
//!   verification_failed (either side, when a MAC does not match) -> the target may retry
//! ```
//! The broker relays [`PeerSignal`]s between the two sockets of a session and never sees
//! media, nor the code's secret half. The SDP it relays is only size-checked; the peers
//! check its MAC (see [`crate::pake`]).

use serde::{Deserialize, Serialize};

use crate::code::SessionCode;
use crate::pake::{MAC_HEX, PAKE_MESSAGE_HEX};
use crate::time::UnixMillis;

/// The signalling protocol version this crate speaks.
pub const VERSION: u16 = 1;
/// Largest signalling message accepted, in bytes, checked before parsing.
pub const MAX_SIGNAL_BYTES: usize = 64 * 1024;
/// Largest SDP accepted inside a message.
pub const MAX_SDP_BYTES: usize = 32 * 1024;
/// Longest free-text reason accepted (a bye reason, an error message).
pub const MAX_REASON_CHARS: usize = 256;
/// Longest resume token accepted, in hex digits. Brokers issue 64 (256 bits); the slack lets
/// a later broker lengthen them without older peers refusing the message.
const MAX_RESUME_HEX: usize = 128;
/// Longest API token accepted in `authorize` (brokers issue `dw_` + 75 characters).
const MAX_TOKEN_CHARS: usize = 256;
/// Longest grant record accepted in `report_grant` (a grant's JSON is a few hundred bytes).
const MAX_GRANT_RECORD: usize = 8 * 1024;
/// Longest code text accepted in `join` and `resume` (the user may type spaces or dashes).
const MAX_CODE_CHARS: usize = 64;

/// Every message on the wire is `{"v": VERSION, "type": ..., ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Protocol version.
    pub v: u16,
    /// The message.
    #[serde(flatten)]
    pub msg: T,
}

/// What a peer (controller or target) sends to the broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Controller: open a session and give me a connection code.
    CreateSession {
        /// The technician's API token (`dw_...`), for a broker with accounts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// Ask for a resume token in `session_created`, to re-attach with [`Self::Resume`]
        /// after losing the broker. Opt-in because `session_created` is decoded strictly:
        /// a controller that does not know the field must never receive it.
        #[serde(default, skip_serializing_if = "is_false")]
        resumable: bool,
    },
    /// Controller, on a new connection: re-attach to a code this controller created before
    /// its broker restarted (or on another broker sharing the database). Answered by
    /// `session_created` with the same code and expiry, or by an `error`.
    Resume {
        /// The broker's half of the code, as `session_created` gave it.
        session: String,
        /// The resume token `session_created` gave with it.
        resume: String,
    },
    /// Technician, on a connection of its own: does my group hold `permission` (e.g. `lan`
    /// before connecting on the LAN, where no broker is in the path)? Answered by
    /// `authorized` or by an `error` that says why not; the broker then closes.
    Authorize {
        /// The technician's API token.
        token: String,
        /// The permission's name, as the admin CLI spells it (`lan`, `unattended`, ...).
        permission: String,
    },
    /// A LAN target this broker manages, on a connection of its own: its current LAN
    /// password, signed with its device key (see [`crate::device`]). Answered by
    /// `lan_reported` or an `error`; the broker then closes.
    ReportLanPassword {
        /// Which device, signed over the password and both times.
        device: crate::device::DeviceProof,
        /// The password as the target shows it.
        password: String,
        /// When it rotates.
        rotates_at: UnixMillis,
        /// When the target sent this (a report older than the stored one is refused).
        reported_at: UnixMillis,
    },
    /// Technician, on a connection of its own: the current LAN password of `device` (their
    /// group needs the `lan` permission). Answered by `lan_password` or an `error`.
    GetLanPassword {
        /// The technician's API token.
        token: String,
        /// The device id (`dev-...`).
        device: String,
    },
    /// Target: join the session this code names. May be sent again after a refusal.
    Join {
        /// The code as the user typed it; the broker parses and checks it.
        code: String,
        /// Which device this is, signed (see [`crate::device`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<crate::device::DeviceProof>,
    },
    /// Either side, once paired: hand this to the other peer.
    Relay {
        /// The payload.
        signal: PeerSignal,
    },
    /// Technician, on a connection of its own: open an ad-hoc support session. Answered by
    /// `adhoc_created` (the invitation, shown once) or an `error` naming the limit that
    /// refused it; the broker then closes.
    CreateAdhoc {
        /// The technician's API token.
        token: String,
        /// Have the broker e-mail the invitation link (which it then reads once).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mail: Option<AdhocMail>,
    },
    /// Technician, on a connection of its own: connect to active ad-hoc session `session`
    /// (any number of times in its lifetime). Answered like `create_session`, with a code for
    /// this connection alone; the broker calls the temporary host to join it.
    CallAdhoc {
        /// The technician's API token.
        token: String,
        /// The ad-hoc session.
        session: crate::adhoc::AdhocId,
    },
    /// Technician, on a connection of its own: end ad-hoc session `session` now. Answered by
    /// `adhoc_ended`; the temporary host is told the same and removes itself.
    EndAdhoc {
        /// The technician's API token.
        token: String,
        /// The ad-hoc session.
        session: crate::adhoc::AdhocId,
    },
    /// Temporary host, first contact: activate the invitation on this computer. Answered by
    /// `adhoc_activated`; the connection then stays open for `adhoc_call` and `adhoc_ended`.
    ActivateAdhoc {
        /// The token from the link.
        token: crate::adhoc::InvitationToken,
        /// The security code the user typed.
        code: String,
        /// This computer's id.
        device: String,
        /// A permanent agent runs on this computer (then ad-hoc sessions are refused).
        #[serde(default, skip_serializing_if = "is_false")]
        permanent_agent: bool,
    },
    /// Temporary host, after losing its connection: take the session up again. Answered
    /// like `activate_adhoc`.
    ReattachAdhoc {
        /// The ad-hoc session.
        session: crate::adhoc::AdhocId,
        /// The host token `adhoc_activated` gave.
        host_token: String,
    },
    /// Temporary host, on its standing connection: the user ends the session now.
    LeaveAdhoc {},
    /// A target's agent, on a connection of its own: keep this grant's record (signed with
    /// the device key), so the broker can check the window before it calls the agent.
    /// Answered by `grant_reported` or an `error`; the broker then closes. A later report of
    /// the same grant (say, revoked) replaces an earlier one.
    ReportGrant {
        /// Which device, signed over the grant number, the record and the time.
        device: crate::device::DeviceProof,
        /// The grant's number on the device.
        grant: u32,
        /// The technician it was approved for.
        technician: String,
        /// The grant as JSON ([`crate::grant::Grant`]).
        record: String,
        /// When the device sent this.
        reported_at: UnixMillis,
    },
    /// A target's agent: stand by for unattended calls on this connection (answered by
    /// `standing_by`; then `unattended_call`s arrive on it).
    Standby {
        /// Which device, signed over `at`.
        device: crate::device::DeviceProof,
        /// When the agent signed (the broker refuses a proof that is not recent).
        at: UnixMillis,
    },
    /// Technician, on a connection of its own: connect unattended to `device` under its
    /// grant `grant`. The broker checks its copy of the grant at its own clock (a refusal is
    /// audited), then answers like `create_session` and calls the device's agent.
    CallUnattended {
        /// The technician's API token.
        token: String,
        /// The device id (`dev-...`).
        device: String,
        /// The grant's number on the device.
        grant: u32,
    },
    /// Either side, once paired: the peer's description failed verification (a wrong
    /// secret, or a tampered SDP). The target is unpaired and may try again; the third
    /// failure burns the code.
    VerificationFailed {},
}

/// What the broker sends to a peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BrokerMessage {
    /// To the controller: the code to read to the user.
    SessionCreated {
        /// The broker's half of the code; the controller adds the secret half.
        session: SessionCode,
        /// When the code stops working if nobody has joined.
        expires_at: UnixMillis,
        /// Hex token proving this controller created the code, when `create_session` asked
        /// for one (the broker keeps only its hash). Absent in the answer to a `resume`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<String>,
    },
    /// To the target: the code was right; the controller is waiting for an offer.
    Joined {
        /// What the technician's group allows, from a broker with accounts. The target
        /// applies it on top of its own settings, never widening them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        policy: Option<SessionPolicy>,
    },
    /// To the controller: the target joined with the code.
    PeerJoined {},
    /// To the target: the code did not work. The socket stays open for another `join`.
    JoinRefused {
        /// Machine-readable reason.
        reason: JoinRefusal,
        /// A sentence for the user.
        message: String,
    },
    /// From the other peer.
    Relay {
        /// The payload.
        signal: PeerSignal,
    },
    /// To a target's `report_lan_password`: stored.
    LanReported {},
    /// To a technician's `get_lan_password`.
    LanPassword {
        /// The device id.
        device: String,
        /// Its password, as last reported.
        password: String,
        /// When it rotates (then it is worth asking again).
        rotates_at: UnixMillis,
        /// When the device reported it.
        reported_at: UnixMillis,
    },
    /// To a technician's `authorize`: their group holds the permission.
    Authorized {
        /// The technician's name.
        technician: String,
        /// The permission asked about.
        permission: String,
    },
    /// To the controller: the target's attempt failed verification and it was unpaired;
    /// the code still works for another attempt unless it burned (then an error follows).
    AttemptFailed {
        /// Failed attempts on this code so far.
        failures: u32,
    },
    /// To a technician's `create_adhoc`: the invitation, shown once (the broker keeps only
    /// digests of the token and the code).
    AdhocCreated {
        /// The ad-hoc session.
        session: crate::adhoc::AdhocId,
        /// The bearer token for the link.
        token: crate::adhoc::InvitationToken,
        /// The security code the user types.
        code: crate::adhoc::SecurityCode,
        /// When the invitation stops working if not activated.
        expires_at: UnixMillis,
        /// What the technician may open.
        capabilities: crate::adhoc::Capabilities,
        /// The address the invitation was e-mailed to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mailed_to: Option<String>,
        /// Why the e-mail could not be sent (the session exists anyway).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mail_error: Option<String>,
    },
    /// To the temporary host: the session is active on this computer until
    /// `activation.expires_at`.
    AdhocActivated {
        /// The session, its deadline and capabilities.
        activation: crate::adhoc::Activation,
        /// Re-attach with this after losing the connection (first activation only; the
        /// broker keeps its hash).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host_token: Option<String>,
    },
    /// To the temporary host: a technician is connecting; join `session` on a new connection.
    AdhocCall {
        /// The code for this connection.
        session: SessionCode,
        /// Who.
        technician: String,
    },
    /// To the temporary host and to whoever ended it: the ad-hoc session is over.
    AdhocEnded {
        /// The ad-hoc session.
        session: crate::adhoc::AdhocId,
        /// Why, for a human.
        reason: String,
    },
    /// To a device's `report_grant`: kept.
    GrantReported {},
    /// To a device's `standby`: calls will come on this connection.
    StandingBy {},
    /// To a standing-by agent: a technician connects under grant `grant`; join `session` on
    /// a new connection (the agent checks the grant itself first).
    UnattendedCall {
        /// The code for this connection.
        session: SessionCode,
        /// The grant.
        grant: u32,
        /// Who.
        technician: String,
    },
    /// The other peer's signalling connection closed.
    PeerLeft {},
    /// The broker could not accept the last message; it closes the socket after this.
    Error {
        /// What was wrong.
        message: String,
    },
}

/// What a broker with accounts tells the target about the technician who created the
/// session: who they are and what their group's policy allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionPolicy {
    /// The technician's name, to show the user.
    pub technician: String,
    /// The technician's company as the broker knows it, to show the user (empty: none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub company: String,
    /// How the target must admit them.
    pub acceptance: PolicyAcceptance,
    /// Seconds the user has to reject (`auto`) or to accept (`request`).
    pub window_secs: u32,
    /// Whether the group may send keyboard and mouse input.
    pub control: bool,
    /// Whether the group may ask for unattended access.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unattended: bool,
    /// Unattended access only with the target's admin credentials at each connection (the
    /// group may not choose the customer's credentials).
    #[serde(default, skip_serializing_if = "is_false")]
    pub admin_credentials_only: bool,
}

/// An e-mailed invitation: to whom, and the link with the technician's secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdhocMail {
    /// The user's address.
    pub to: String,
    /// The link's secret half, hex ([`crate::adhoc::AdhocLink::secret`]).
    pub secret: String,
}

/// A group's acceptance mode, as the broker states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyAcceptance {
    /// The session starts unless the user rejects it within the window.
    Auto,
    /// The user must accept within the window.
    Request,
    /// No sessions.
    Deny,
}

/// How the question "let the technician in?" was settled at the target: told to the
/// technician, and recorded in the broker's audit as it passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentDecision {
    /// Let in to see and control.
    Control,
    /// Let in to see only.
    ViewOnly,
    /// The user said no.
    Rejected,
    /// Nobody answered in time and the mode refuses on silence.
    TimedOut,
    /// The computer's (or the group's) mode refuses every session.
    Denied,
    /// The computer asked for one of its administrators' name and password, and the one
    /// given was wrong.
    BadCredentials,
}

impl ConsentDecision {
    /// A sentence for the technician.
    pub fn message(self) -> &'static str {
        match self {
            ConsentDecision::Control => "the user let you in to see and control the screen",
            ConsentDecision::ViewOnly => "the user let you in to see the screen only",
            ConsentDecision::Rejected => "the user refused the session",
            ConsentDecision::TimedOut => "the user did not answer in time",
            ConsentDecision::Denied => "this computer does not accept sessions",
            ConsentDecision::BadCredentials => {
                "the computer refused the administrator name or password"
            }
        }
    }
}

/// Peer-to-peer payloads the broker relays without interpreting (it reads only a
/// [`PeerSignal::ConsentDecided`], for its audit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PeerSignal {
    /// A SPAKE2 message (hex), one from each side, keyed by the whole code.
    Pake {
        /// The message.
        msg: String,
    },
    /// The controller's key confirmation (hex HMAC), sent as soon as its PAKE finished:
    /// the target checks it before asking its user anything.
    Confirm {
        /// The MAC.
        mac: String,
    },
    /// A LAN controller's first word to the target: connect under this unattended-access
    /// grant (its secret is then the PAKE input), or with the target's password (`None`).
    LanHello {
        /// The grant's number on the target.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grant: Option<u32>,
    },
    /// The target lets technicians in only with one of its administrator accounts: send
    /// `credentials`.
    CredentialsRequired {},
    /// The controller's administrator credentials for the target, sealed under the PAKE
    /// key ([`crate::pake::SessionKeys::seal_credentials`]); sent right after `confirm`
    /// when the technician has them. A target that requires them checks them before its
    /// user is asked anything.
    Credentials {
        /// Hex of nonce and ciphertext.
        sealed: String,
    },
    /// The target's SDP offer, after full ICE gathering.
    Offer {
        /// Session description.
        sdp: String,
        /// HMAC-SHA256 (hex) under the offer key the PAKE derived.
        mac: String,
    },
    /// The controller's SDP answer, after full ICE gathering.
    Answer {
        /// Session description.
        sdp: String,
        /// HMAC-SHA256 (hex) under the answer key the PAKE derived.
        mac: String,
    },
    /// The target is asking its user whether to let the technician in; the controller
    /// should wait this long (milliseconds) before giving up.
    AwaitingConsent {
        /// Longest wait.
        for_ms: u64,
        /// Silence lets the technician in when the wait ends (automatic acceptance with a
        /// window to refuse), rather than refusing them.
        #[serde(default)]
        starts_on_its_own: bool,
        /// The computer's own setting, stricter than the technician's group policy, is
        /// what decided the wait (the stricter of the two always wins).
        #[serde(default)]
        by_computer: bool,
    },
    /// The target's consent question was settled (target -> controller).
    ConsentDecided {
        /// How.
        decision: ConsentDecision,
    },
    /// The sender is leaving the session.
    Bye {
        /// Why.
        reason: String,
    },
}

/// Why the broker refused a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinRefusal {
    /// Not a code at all (letters, wrong length).
    Malformed,
    /// No session has this code.
    WrongCode,
    /// The code was right but its time ran out.
    Expired,
    /// The code was already used by another target: codes are single use.
    AlreadyUsed,
    /// The technician closed the session before anyone joined.
    Cancelled,
    /// The session code was right but the peers' codes differ (or the description was
    /// altered in transit): nothing was connected.
    VerificationFailed,
    /// Too many failed verifications: the code no longer works.
    Burned,
    /// Too many failed attempts from this address (or at this session) lately: wait.
    TooManyAttempts,
    /// This address failed so often that it is locked out for a while.
    LockedOut,
    /// The device did not prove it holds the key it registered with.
    DeviceNotAuthenticated,
    /// The code is live but its technician's connection is not (the broker restarted and
    /// they have not re-attached yet). The code still works: try again shortly.
    ControllerAway,
}

impl JoinRefusal {
    /// The sentence shown to the user.
    pub fn message(self) -> &'static str {
        match self {
            JoinRefusal::Malformed => "that is not a connection code: it has ten digits",
            JoinRefusal::WrongCode => "no session has this code; check the digits and try again",
            JoinRefusal::Expired => "this code has expired; ask the technician for a new one",
            JoinRefusal::AlreadyUsed => {
                "this code was already used; ask the technician for a new one"
            }
            JoinRefusal::Cancelled => "the technician closed this session; ask for a new code",
            JoinRefusal::VerificationFailed => {
                "the code did not match the technician's: check the last four digits and try again"
            }
            JoinRefusal::Burned => {
                "this code was disabled after failed attempts; ask the technician for a new one"
            }
            JoinRefusal::TooManyAttempts => {
                "too many failed attempts; wait a minute before entering a code again"
            }
            JoinRefusal::DeviceNotAuthenticated => {
                "this computer could not prove its identity to the broker; contact your administrator"
            }
            JoinRefusal::LockedOut => {
                "too many failed attempts from this network; try again in an hour"
            }
            JoinRefusal::ControllerAway => {
                "the technician is reconnecting; try the same code again in a moment"
            }
        }
    }
}

/// A signalling message that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// Larger than [`MAX_SIGNAL_BYTES`].
    #[error("signalling message of {len} bytes is larger than the {max}-byte limit", max = MAX_SIGNAL_BYTES)]
    TooLarge {
        /// Its size.
        len: usize,
    },
    /// A version this side does not speak.
    #[error("signalling version {got} is not supported (this side speaks {VERSION})")]
    Version {
        /// The version received.
        got: u16,
    },
    /// Not JSON, or not a message of this protocol.
    #[error("malformed signalling message: {0}")]
    Malformed(String),
    /// Well-formed but over a field limit.
    #[error("{field} is {len} long, over the {max} limit")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Serialise a message in its envelope.
pub fn encode<T: Serialize>(msg: &T) -> String {
    #[derive(Serialize)]
    struct Out<'a, T> {
        v: u16,
        #[serde(flatten)]
        msg: &'a T,
    }
    // Serialising these plain enums into a String cannot fail: no maps with non-string keys,
    // no fallible Serialize impls.
    serde_json::to_string(&Out { v: VERSION, msg }).expect("signalling messages always serialise")
}

/// Parse what a peer sent to the broker.
pub fn decode_client(text: &str) -> Result<ClientMessage, SignalError> {
    let msg: ClientMessage = decode(text)?;
    if let ClientMessage::Relay { signal } = &msg {
        check_signal(signal)?;
    }
    if let ClientMessage::Authorize { token, permission } = &msg {
        check_len("token", token.len(), MAX_TOKEN_CHARS)?;
        check_len("permission", permission.len(), 32)?;
    }
    if let ClientMessage::ReportLanPassword {
        device, password, ..
    } = &msg
    {
        check_proof(device)?;
        check_len("password", password.len(), 32)?;
    }
    if let ClientMessage::GetLanPassword { token, device } = &msg {
        check_len("token", token.len(), MAX_TOKEN_CHARS)?;
        check_len("device", device.len(), 64)?;
    }
    match &msg {
        ClientMessage::CreateAdhoc { token, mail } => {
            check_len("token", token.len(), MAX_TOKEN_CHARS)?;
            if let Some(mail) = mail {
                check_len("mail.to", mail.to.len(), 254)?;
                check_len("mail.secret", mail.secret.len(), 32)?;
            }
        }
        ClientMessage::CallAdhoc { token, .. } | ClientMessage::EndAdhoc { token, .. } => {
            check_len("token", token.len(), MAX_TOKEN_CHARS)?
        }
        ClientMessage::ActivateAdhoc { code, device, .. } => {
            check_len("code", code.len(), MAX_CODE_CHARS)?;
            check_len("device", device.len(), 128)?;
        }
        ClientMessage::ReattachAdhoc { host_token, .. } => {
            check_len("host_token", host_token.len(), MAX_RESUME_HEX)?
        }
        ClientMessage::ReportGrant {
            device,
            technician,
            record,
            ..
        } => {
            check_proof(device)?;
            check_len("technician", technician.len(), 128)?;
            check_len("record", record.len(), MAX_GRANT_RECORD)?;
        }
        ClientMessage::Standby { device, .. } => check_proof(device)?,
        ClientMessage::CallUnattended { token, device, .. } => {
            check_len("token", token.len(), MAX_TOKEN_CHARS)?;
            check_len("device", device.len(), 64)?;
        }
        _ => {}
    }
    if let ClientMessage::Resume { session, resume } = &msg {
        check_len("session", session.len(), MAX_CODE_CHARS)?;
        check_len("resume", resume.len(), MAX_RESUME_HEX)?;
    }
    if let ClientMessage::Join { code, device } = &msg {
        check_len("code", code.len(), MAX_CODE_CHARS)?;
        if let Some(d) = device {
            check_proof(d)?;
        }
    }
    Ok(msg)
}

/// An id, a 32-byte key and a 64-byte signature, in hex.
fn check_proof(d: &crate::device::DeviceProof) -> Result<(), SignalError> {
    check_len("device id", d.id.len(), 64)?;
    check_len("public_key", d.public_key.len(), 64)?;
    check_len("signature", d.signature.len(), 128)
}

/// Parse what the broker sent to a peer.
pub fn decode_broker(text: &str) -> Result<BrokerMessage, SignalError> {
    let msg: BrokerMessage = decode(text)?;
    match &msg {
        BrokerMessage::Relay { signal } => check_signal(signal)?,
        BrokerMessage::JoinRefused { message, .. } | BrokerMessage::Error { message } => {
            check_len("message", message.chars().count(), MAX_REASON_CHARS)?
        }
        BrokerMessage::AdhocEnded {
            reason: message, ..
        }
        | BrokerMessage::UnattendedCall {
            technician: message,
            ..
        }
        | BrokerMessage::AdhocCall {
            technician: message,
            ..
        } => check_len("message", message.chars().count(), MAX_REASON_CHARS)?,
        BrokerMessage::AdhocCreated {
            mailed_to,
            mail_error,
            ..
        } => {
            let len = |s: &Option<String>| s.as_ref().map_or(0, |s| s.chars().count());
            check_len("mailed_to", len(mailed_to), 254)?;
            check_len("mail_error", len(mail_error), MAX_REASON_CHARS)?;
        }
        BrokerMessage::SessionCreated {
            resume: Some(resume),
            ..
        } => check_len("resume", resume.len(), MAX_RESUME_HEX)?,
        _ => {}
    }
    Ok(msg)
}

fn decode<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, SignalError> {
    if text.len() > MAX_SIGNAL_BYTES {
        return Err(SignalError::TooLarge { len: text.len() });
    }
    // Read the version alone first, so a newer peer gets "unsupported version" rather than
    // a confusing complaint about a field it added.
    #[derive(Deserialize)]
    struct Version {
        v: u16,
        /// Read as any value, to be checked: serde takes a number for a tag as the
        /// variant's index (`{"type":0}` read as the first message), which no peer of ours
        /// sends and none may rely on.
        #[serde(rename = "type")]
        kind: Option<serde_json::Value>,
        signal: Option<serde_json::Value>,
    }
    let version: Version =
        serde_json::from_str(text).map_err(|e| SignalError::Malformed(e.to_string()))?;
    if version.v != VERSION {
        return Err(SignalError::Version { got: version.v });
    }
    let named = |tag: Option<&serde_json::Value>, field: &str| match tag {
        Some(serde_json::Value::String(_)) | None => Ok(()),
        Some(_) => Err(SignalError::Malformed(format!("`{field}` must be a name"))),
    };
    named(version.kind.as_ref(), "type")?;
    named(
        version.signal.as_ref().and_then(|s| s.get("kind")),
        "signal.kind",
    )?;
    let envelope: Envelope<T> =
        serde_json::from_str(text).map_err(|e| SignalError::Malformed(e.to_string()))?;
    Ok(envelope.msg)
}

fn check_signal(signal: &PeerSignal) -> Result<(), SignalError> {
    match signal {
        PeerSignal::Offer { sdp, mac } | PeerSignal::Answer { sdp, mac } => {
            check_len("sdp", sdp.len(), MAX_SDP_BYTES)?;
            check_len("mac", mac.len(), MAC_HEX)
        }
        PeerSignal::Pake { msg } => check_len("msg", msg.len(), PAKE_MESSAGE_HEX),
        PeerSignal::AwaitingConsent { .. }
        | PeerSignal::ConsentDecided { .. }
        | PeerSignal::CredentialsRequired {}
        | PeerSignal::LanHello { .. } => Ok(()),
        PeerSignal::Confirm { mac } => check_len("mac", mac.len(), MAC_HEX),
        PeerSignal::Credentials { sealed } => check_len(
            "sealed",
            sealed.len(),
            2 * (12 + 16 + 4 + 2 * crate::pake::MAX_CREDENTIAL_BYTES),
        ),
        PeerSignal::Bye { reason } => check_len("reason", reason.chars().count(), MAX_REASON_CHARS),
    }
}

// serde's `skip_serializing_if` passes a reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_false(b: &bool) -> bool {
    !*b
}

fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), SignalError> {
    if len > max {
        return Err(SignalError::FieldTooLong { field, len, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
