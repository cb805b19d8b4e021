//! Device identity: a target proves it holds the key its id was registered with.
//!
//! Each target has an Ed25519 key pair (made on first run and kept by the agent). Its id is
//! derived from the public key, so an id cannot be claimed with another key. When it joins,
//! it signs the session code it joins; the broker checks the signature and pins the key to
//! the id on first contact, refusing a different key later. The signature covers the session
//! code, which is single use, so a copy of it is worth nothing for another session.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::code::SessionCode;
use crate::hex;
use crate::time::UnixMillis;

/// What a target sends with its join to prove which device it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceProof {
    /// `dev-` and 16 hex digits of the SHA-256 of the public key.
    pub id: String,
    /// The Ed25519 public key, hex.
    pub public_key: String,
    /// The signature of the joined session code, hex.
    pub signature: String,
}

/// Why a proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// Not hex, wrong lengths, not a curve point.
    #[error("the device proof is malformed")]
    Malformed,
    /// The id is not the one this public key gives.
    #[error("the device id does not belong to its key")]
    WrongId,
    /// The signature does not verify for this session.
    #[error("the device signature does not verify")]
    BadSignature,
}

/// A device's private key (32 bytes of seed).
pub struct DeviceKey {
    key: SigningKey,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceKey({})", self.id())
    }
}

impl DeviceKey {
    /// The key from its 32-byte seed (as stored by the agent).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The seed, to store.
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// This device's id.
    pub fn id(&self) -> String {
        id_of(self.key.verifying_key().as_bytes())
    }

    /// The proof to send when joining `session`.
    pub fn prove(&self, session: SessionCode) -> DeviceProof {
        self.sign(&message(session))
    }

    /// The proof for a LAN password report (see [`lan_report_message`]).
    pub fn prove_lan_report(
        &self,
        password: &str,
        rotates_at: UnixMillis,
        reported_at: UnixMillis,
    ) -> DeviceProof {
        self.sign(&lan_report_message(password, rotates_at, reported_at))
    }

    /// The proof for an agent standing by for unattended calls, made at `at`.
    pub fn prove_standby(&self, at: UnixMillis) -> DeviceProof {
        self.sign(&standby_message(at))
    }

    /// The proof for reporting unattended-access grant `grant` as `record` (its JSON) at
    /// `reported_at`.
    pub fn prove_grant_report(
        &self,
        grant: u32,
        record: &str,
        reported_at: UnixMillis,
    ) -> DeviceProof {
        self.sign(&grant_report_message(grant, record, reported_at))
    }

    fn sign(&self, message: &[u8]) -> DeviceProof {
        let signature = self.key.sign(message);
        DeviceProof {
            id: self.id(),
            public_key: hex::encode(self.key.verifying_key().as_bytes()),
            signature: hex::encode(&signature.to_bytes()),
        }
    }
}

impl DeviceProof {
    /// Check the proof for `session`; returns the public key to pin to the id.
    pub fn verify(&self, session: SessionCode) -> Result<[u8; 32], DeviceError> {
        self.verify_message(&message(session))
    }

    /// Check the proof of a LAN password report; returns the public key to pin to the id.
    pub fn verify_lan_report(
        &self,
        password: &str,
        rotates_at: UnixMillis,
        reported_at: UnixMillis,
    ) -> Result<[u8; 32], DeviceError> {
        self.verify_message(&lan_report_message(password, rotates_at, reported_at))
    }

    /// Check the proof of a standby made at `at`; returns the public key.
    pub fn verify_standby(&self, at: UnixMillis) -> Result<[u8; 32], DeviceError> {
        self.verify_message(&standby_message(at))
    }

    /// Check the proof of a grant report; returns the public key.
    pub fn verify_grant_report(
        &self,
        grant: u32,
        record: &str,
        reported_at: UnixMillis,
    ) -> Result<[u8; 32], DeviceError> {
        self.verify_message(&grant_report_message(grant, record, reported_at))
    }

    fn verify_message(&self, message: &[u8]) -> Result<[u8; 32], DeviceError> {
        let key: [u8; 32] = hex::decode(&self.public_key)
            .and_then(|b| b.try_into().ok())
            .ok_or(DeviceError::Malformed)?;
        let signature: [u8; 64] = hex::decode(&self.signature)
            .and_then(|b| b.try_into().ok())
            .ok_or(DeviceError::Malformed)?;
        if id_of(&key) != self.id {
            return Err(DeviceError::WrongId);
        }
        let verifying = VerifyingKey::from_bytes(&key).map_err(|_| DeviceError::Malformed)?;
        verifying
            .verify(message, &Signature::from_bytes(&signature))
            .map_err(|_| DeviceError::BadSignature)?;
        Ok(key)
    }
}

fn message(session: SessionCode) -> Vec<u8> {
    format!("deskwire-device-v1:join:{session}").into_bytes()
}

/// What a device signs to report its LAN password: the password with when it rotates and
/// when it was reported, so a replayed report is recognisably old and cannot be moved to
/// another time.
fn lan_report_message(password: &str, rotates_at: UnixMillis, reported_at: UnixMillis) -> Vec<u8> {
    format!(
        "deskwire-device-v1:lan-password:{password}:{}:{}",
        rotates_at.0, reported_at.0
    )
    .into_bytes()
}

/// What an agent signs to stand by: the time, which the broker checks is recent.
fn standby_message(at: UnixMillis) -> Vec<u8> {
    format!("deskwire-device-v1:standby:{}", at.0).into_bytes()
}

/// What a device signs to report a grant: its number, a digest of the record as sent and
/// when, so a report cannot be moved to another grant, record or time.
fn grant_report_message(grant: u32, record: &str, reported_at: UnixMillis) -> Vec<u8> {
    let digest = Sha256::digest(record.as_bytes());
    format!(
        "deskwire-device-v1:grant:{grant}:{}:{}",
        hex::encode(&digest),
        reported_at.0
    )
    .into_bytes()
}

fn id_of(public_key: &[u8]) -> String {
    let digest = Sha256::digest(public_key);
    format!("dev-{}", hex::encode(&digest[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(n: u32) -> SessionCode {
        SessionCode::from_number(n).unwrap()
    }

    #[test]
    fn a_lan_report_verifies_only_for_what_was_signed() {
        let key = DeviceKey::from_seed([9; 32]);
        let (r, t) = (UnixMillis(2_000), UnixMillis(1_000));
        let proof = key.prove_lan_report("ABCD-EFGH-JKMN", r, t);
        assert!(proof.verify_lan_report("ABCD-EFGH-JKMN", r, t).is_ok());
        for (pw, r2, t2) in [
            ("ABCD-EFGH-JKMP", r, t),
            ("ABCD-EFGH-JKMN", UnixMillis(2_001), t),
            ("ABCD-EFGH-JKMN", r, UnixMillis(999)),
        ] {
            assert_eq!(
                proof.verify_lan_report(pw, r2, t2),
                Err(DeviceError::BadSignature)
            );
        }
        // A join proof is not a report, and the other way round.
        assert!(proof.verify(session(123_456)).is_err());
    }

    #[test]
    fn standby_and_grant_proofs_verify_only_for_what_was_signed() {
        let key = DeviceKey::from_seed([5; 32]);
        let at = UnixMillis(1_000);
        let standby = key.prove_standby(at);
        assert!(standby.verify_standby(at).is_ok());
        assert_eq!(
            standby.verify_standby(UnixMillis(1_001)),
            Err(DeviceError::BadSignature)
        );
        let report = key.prove_grant_report(3, "{\"a\":1}", at);
        assert!(report.verify_grant_report(3, "{\"a\":1}", at).is_ok());
        for (g, r, t) in [
            (4, "{\"a\":1}", at),
            (3, "{\"a\":2}", at),
            (3, "{\"a\":1}", UnixMillis(2)),
        ] {
            assert_eq!(
                report.verify_grant_report(g, r, t),
                Err(DeviceError::BadSignature)
            );
        }
        assert!(report.verify_standby(at).is_err());
    }

    #[test]
    fn a_proof_verifies_for_its_session_only_and_names_its_key() {
        let key = DeviceKey::from_seed([7; 32]);
        let proof = key.prove(session(123_456));
        let pinned = proof.verify(session(123_456)).unwrap();
        assert_eq!(hex::encode(&pinned), proof.public_key);
        assert!(proof.id.starts_with("dev-") && proof.id.len() == 20);
        assert_eq!(
            proof.verify(session(123_457)),
            Err(DeviceError::BadSignature),
            "a copied proof is worth nothing for another session"
        );
    }

    #[test]
    fn another_key_cannot_claim_the_id_and_garbage_is_refused() {
        let a = DeviceKey::from_seed([1; 32]);
        let b = DeviceKey::from_seed([2; 32]);
        let mut forged = b.prove(session(1));
        forged.id = a.id();
        assert_eq!(forged.verify(session(1)), Err(DeviceError::WrongId));
        let mut bad = a.prove(session(1));
        bad.signature = "00".repeat(64);
        assert_eq!(bad.verify(session(1)), Err(DeviceError::BadSignature));
        for junk in ["", "zz", &"0".repeat(63)] {
            let mut p = a.prove(session(1));
            p.public_key = junk.to_owned();
            assert_eq!(
                p.verify(session(1)),
                Err(DeviceError::Malformed),
                "{junk:?}"
            );
        }
        assert_eq!(DeviceKey::from_seed(a.seed()).id(), a.id());
    }
}
