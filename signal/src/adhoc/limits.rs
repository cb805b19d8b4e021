//! Quotas and times for ad-hoc sessions, and their JSON form.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::AdhocError;

/// Quotas and times for ad-hoc sessions. Read from JSON only if within range
/// ([`Self::validate`]); durations are written in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "LimitsRepr", into = "LimitsRepr")]
pub struct AdhocLimits {
    /// Sessions one technician may hold at once (invited or active): 1..=100.
    pub per_technician: u32,
    /// Sessions one company may hold at once (invited or active): 1..=100 000.
    pub per_company: u32,
    /// How long a session lives from activation: 1 minute to 7 days. Capped at a week
    /// because a temporary host that stays longer is a permanent agent without its policy.
    pub lifetime: Duration,
    /// How long an invitation may wait for activation: 1 minute to 30 days.
    pub invitation_ttl: Duration,
    /// Wrong security codes that burn an invitation: 1..=10.
    pub max_code_attempts: u32,
}

impl AdhocLimits {
    /// One session per technician.
    pub const DEFAULT_PER_TECHNICIAN: u32 = 1;
    /// Five per company.
    pub const DEFAULT_PER_COMPANY: u32 = 5;
    /// A day from activation.
    pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
    /// Three days to activate (see the module docs for why).
    pub const DEFAULT_INVITATION_TTL: Duration = Duration::from_secs(72 * 3600);
    /// Five wrong codes.
    pub const DEFAULT_MAX_CODE_ATTEMPTS: u32 = 5;

    const MIN_TIME: Duration = Duration::from_secs(60);
    const MAX_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
    const MAX_INVITATION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

    /// Whether every field is within its range; the error names the field and the range.
    pub fn validate(&self) -> Result<(), AdhocError> {
        count_in("limits.per_technician", self.per_technician, 1, 100)?;
        count_in("limits.per_company", self.per_company, 1, 100_000)?;
        time_in(
            "limits.lifetime_ms",
            self.lifetime,
            Self::MIN_TIME,
            Self::MAX_LIFETIME,
            "1 minute to 7 days",
        )?;
        time_in(
            "limits.invitation_ttl_ms",
            self.invitation_ttl,
            Self::MIN_TIME,
            Self::MAX_INVITATION_TTL,
            "1 minute to 30 days",
        )?;
        count_in("limits.max_code_attempts", self.max_code_attempts, 1, 10)
    }
}

impl Default for AdhocLimits {
    fn default() -> Self {
        Self {
            per_technician: Self::DEFAULT_PER_TECHNICIAN,
            per_company: Self::DEFAULT_PER_COMPANY,
            lifetime: Self::DEFAULT_LIFETIME,
            invitation_ttl: Self::DEFAULT_INVITATION_TTL,
            max_code_attempts: Self::DEFAULT_MAX_CODE_ATTEMPTS,
        }
    }
}

fn count_in(field: &'static str, value: u32, min: u32, max: u32) -> Result<(), AdhocError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(AdhocError::Invalid {
        field,
        value: value.to_string(),
        expected: format!("{min}..={max}"),
    })
}

fn time_in(
    field: &'static str,
    value: Duration,
    min: Duration,
    max: Duration,
    words: &str,
) -> Result<(), AdhocError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(AdhocError::Invalid {
        field,
        value: value.as_millis().to_string(),
        expected: format!("{}..={} ms, {words}", min.as_millis(), max.as_millis()),
    })
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsRepr {
    per_technician: u32,
    per_company: u32,
    lifetime_ms: u64,
    invitation_ttl_ms: u64,
    max_code_attempts: u32,
}

impl TryFrom<LimitsRepr> for AdhocLimits {
    type Error = AdhocError;
    fn try_from(r: LimitsRepr) -> Result<Self, AdhocError> {
        let limits = Self {
            per_technician: r.per_technician,
            per_company: r.per_company,
            lifetime: Duration::from_millis(r.lifetime_ms),
            invitation_ttl: Duration::from_millis(r.invitation_ttl_ms),
            max_code_attempts: r.max_code_attempts,
        };
        limits.validate()?;
        Ok(limits)
    }
}

impl From<AdhocLimits> for LimitsRepr {
    fn from(l: AdhocLimits) -> Self {
        // Validated limits are at most 30 days, so the conversion never saturates.
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            per_technician: l.per_technician,
            per_company: l.per_company,
            lifetime_ms: ms(l.lifetime),
            invitation_ttl_ms: ms(l.invitation_ttl),
            max_code_attempts: l.max_code_attempts,
        }
    }
}
