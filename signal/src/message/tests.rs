//! The wire format: exact encodings, limits and refusals.
use super::*;

#[test]
fn messages_carry_version_and_type_on_the_wire() {
    assert_eq!(
        encode(&ClientMessage::CreateSession {
            token: None,
            resumable: false
        }),
        r#"{"v":1,"type":"create_session"}"#
    );
    assert_eq!(
        encode(&ClientMessage::Relay {
            signal: PeerSignal::Offer {
                sdp: "x".into(),
                mac: "ab".into()
            }
        }),
        r#"{"v":1,"type":"relay","signal":{"kind":"offer","sdp":"x","mac":"ab"}}"#
    );
    let session = SessionCode::from_number(123_456).unwrap();
    assert_eq!(
        encode(&BrokerMessage::SessionCreated {
            session,
            expires_at: UnixMillis(7),
            resume: None,
        }),
        r#"{"v":1,"type":"session_created","session":"123 456","expires_at":7}"#
    );
    assert_eq!(
        encode(&BrokerMessage::JoinRefused {
            reason: JoinRefusal::AlreadyUsed,
            message: "m".into()
        }),
        r#"{"v":1,"type":"join_refused","reason":"already_used","message":"m"}"#
    );
}

#[test]
fn every_message_round_trips() {
    let client = [
        ClientMessage::CreateSession {
            token: None,
            resumable: false,
        },
        ClientMessage::Join {
            code: "123 456".into(),
            device: None,
        },
        ClientMessage::Relay {
            signal: PeerSignal::Answer {
                sdp: "v=0".into(),
                mac: "00".into(),
            },
        },
        ClientMessage::Relay {
            signal: PeerSignal::Pake { msg: "53".into() },
        },
        ClientMessage::VerificationFailed {},
        ClientMessage::Relay {
            signal: PeerSignal::Bye {
                reason: "done".into(),
            },
        },
    ];
    for m in client {
        assert_eq!(decode_client(&encode(&m)).unwrap(), m);
    }
    let broker = [
        BrokerMessage::Joined { policy: None },
        BrokerMessage::PeerJoined {},
        BrokerMessage::PeerLeft {},
        BrokerMessage::Error {
            message: "no".into(),
        },
        BrokerMessage::Relay {
            signal: PeerSignal::Offer {
                sdp: "v=0".into(),
                mac: "00".into(),
            },
        },
    ];
    for m in broker {
        assert_eq!(decode_broker(&encode(&m)).unwrap(), m);
    }
}

#[test]
fn a_newer_version_is_named_in_the_error() {
    let err = decode_client(r#"{"v":2,"type":"create_session","extra":1}"#).unwrap_err();
    assert_eq!(err, SignalError::Version { got: 2 });
    assert!(err.to_string().contains("speaks 1"));
}

#[test]
fn garbage_unknown_types_and_missing_versions_are_malformed() {
    for text in [
        "",
        "nope",
        "{}",
        r#"{"type":"create_session"}"#,
        r#"{"v":1,"type":"fly"}"#,
        "[1,2]",
        // A number is not a message name, even where serde would read it as an index.
        r#"{"v":1,"type":0}"#,
        r#"{"v":1,"type":"relay","signal":{"kind":3}}"#,
    ] {
        assert!(
            matches!(decode_client(text), Err(SignalError::Malformed(_))),
            "{text:?}"
        );
    }
}

#[test]
fn oversized_messages_are_refused_before_parsing() {
    let text = format!(
        r#"{{"v":1,"type":"join","code":"{}"}}"#,
        "1".repeat(MAX_SIGNAL_BYTES)
    );
    assert!(matches!(
        decode_client(&text),
        Err(SignalError::TooLarge { .. })
    ));
}

#[test]
fn oversized_fields_are_refused_with_their_name() {
    let sdp = "a".repeat(MAX_SDP_BYTES + 1);
    let text = encode(&ClientMessage::Relay {
        signal: PeerSignal::Offer {
            sdp,
            mac: String::new(),
        },
    });
    assert!(matches!(
        decode_client(&text),
        Err(SignalError::FieldTooLong { field: "sdp", .. })
    ));
    let text = encode(&ClientMessage::Relay {
        signal: PeerSignal::Pake {
            msg: "0".repeat(PAKE_MESSAGE_HEX + 1),
        },
    });
    assert!(matches!(
        decode_client(&text),
        Err(SignalError::FieldTooLong { field: "msg", .. })
    ));
}

#[test]
fn every_refusal_has_a_sentence_for_the_user() {
    for r in [
        JoinRefusal::Malformed,
        JoinRefusal::WrongCode,
        JoinRefusal::Expired,
        JoinRefusal::AlreadyUsed,
        JoinRefusal::Cancelled,
        JoinRefusal::VerificationFailed,
        JoinRefusal::Burned,
        JoinRefusal::TooManyAttempts,
        JoinRefusal::LockedOut,
        JoinRefusal::DeviceNotAuthenticated,
        JoinRefusal::ControllerAway,
    ] {
        assert!(r.message().len() > 20);
    }
}

#[test]
fn resume_messages_have_their_wire_shape_and_round_trip() {
    let session = SessionCode::from_number(123_456).unwrap();
    let token = "ab".repeat(32);
    let asked = ClientMessage::CreateSession {
        token: Some("dw_x".into()),
        resumable: true,
    };
    assert_eq!(
        encode(&asked),
        r#"{"v":1,"type":"create_session","token":"dw_x","resumable":true}"#
    );
    let created = BrokerMessage::SessionCreated {
        session,
        expires_at: UnixMillis(7),
        resume: Some(token.clone()),
    };
    assert_eq!(
        encode(&created),
        format!(
            r#"{{"v":1,"type":"session_created","session":"123 456","expires_at":7,"resume":"{token}"}}"#
        )
    );
    let resume = ClientMessage::Resume {
        session: "123 456".into(),
        resume: token.clone(),
    };
    assert_eq!(
        encode(&resume),
        format!(r#"{{"v":1,"type":"resume","session":"123 456","resume":"{token}"}}"#)
    );
    let away = BrokerMessage::JoinRefused {
        reason: JoinRefusal::ControllerAway,
        message: JoinRefusal::ControllerAway.message().into(),
    };
    assert!(encode(&away).contains(r#""reason":"controller_away""#));
    for m in [asked, resume] {
        assert_eq!(decode_client(&encode(&m)).unwrap(), m);
    }
    for m in [created, away] {
        assert_eq!(decode_broker(&encode(&m)).unwrap(), m);
    }
}

#[test]
fn messages_without_the_resume_fields_still_decode() {
    // What peers and brokers from before resume send.
    assert_eq!(
        decode_client(r#"{"v":1,"type":"create_session","token":"dw_x"}"#).unwrap(),
        ClientMessage::CreateSession {
            token: Some("dw_x".into()),
            resumable: false
        }
    );
    assert_eq!(
        decode_broker(r#"{"v":1,"type":"session_created","session":"123 456","expires_at":7}"#)
            .unwrap(),
        BrokerMessage::SessionCreated {
            session: SessionCode::from_number(123_456).unwrap(),
            expires_at: UnixMillis(7),
            resume: None,
        }
    );
}

#[test]
fn oversized_resume_fields_are_refused_with_their_name() {
    let long = ClientMessage::Resume {
        session: "1".repeat(MAX_CODE_CHARS + 1),
        resume: "ab".into(),
    };
    assert!(matches!(
        decode_client(&encode(&long)),
        Err(SignalError::FieldTooLong {
            field: "session",
            ..
        })
    ));
    let long = ClientMessage::Resume {
        session: "123 456".into(),
        resume: "a".repeat(MAX_RESUME_HEX + 1),
    };
    assert!(matches!(
        decode_client(&encode(&long)),
        Err(SignalError::FieldTooLong {
            field: "resume",
            ..
        })
    ));
    let long = BrokerMessage::SessionCreated {
        session: SessionCode::from_number(1).unwrap(),
        expires_at: UnixMillis(7),
        resume: Some("a".repeat(MAX_RESUME_HEX + 1)),
    };
    assert!(matches!(
        decode_broker(&encode(&long)),
        Err(SignalError::FieldTooLong {
            field: "resume",
            ..
        })
    ));
}

#[test]
fn adhoc_messages_have_a_stable_shape_and_their_limits_are_checked() {
    let call = encode(&ClientMessage::CallAdhoc {
        token: "dw_x".into(),
        session: crate::adhoc::AdhocId(7),
    });
    assert_eq!(
        call,
        r#"{"v":1,"type":"call_adhoc","token":"dw_x","session":7}"#
    );
    assert_eq!(
        decode_client(&call).unwrap(),
        ClientMessage::CallAdhoc {
            token: "dw_x".into(),
            session: crate::adhoc::AdhocId(7)
        }
    );
    let leave = encode(&ClientMessage::LeaveAdhoc {});
    assert_eq!(leave, r#"{"v":1,"type":"leave_adhoc"}"#);
    let long = "a".repeat(300);
    let mail = encode(&ClientMessage::CreateAdhoc {
        token: "dw_x".into(),
        mail: Some(AdhocMail {
            to: long.clone(),
            secret: "00".into(),
        }),
    });
    assert!(matches!(
        decode_client(&mail),
        Err(SignalError::FieldTooLong {
            field: "mail.to",
            ..
        })
    ));
    let activate = format!(
        r#"{{"v":1,"type":"activate_adhoc","token":"{}","code":"7KQM-2X9P","device":"dev-1"}}"#,
        "ab".repeat(16)
    );
    assert!(matches!(
        decode_client(&activate),
        Ok(ClientMessage::ActivateAdhoc {
            permanent_agent: false,
            ..
        })
    ));
    let bad_token = activate.replace(&"ab".repeat(16), "not-a-token");
    assert!(matches!(
        decode_client(&bad_token),
        Err(SignalError::Malformed(_))
    ));
    let ended = encode(&BrokerMessage::AdhocEnded {
        session: crate::adhoc::AdhocId(7),
        reason: long,
    });
    assert!(matches!(
        decode_broker(&ended),
        Err(SignalError::FieldTooLong {
            field: "message",
            ..
        })
    ));
}
