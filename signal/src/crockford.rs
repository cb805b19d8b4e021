//! Short secrets people read out and type: Crockford base-32 characters in groups of four
//! (`7KQM-2X9P`). The alphabet has no I, L, O or U; typing I or L reads as 1 and O as 0, the
//! digits they are mistaken for, and U is refused.

use std::fmt;

/// Crockford's base-32 alphabet.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Why typed text is not a code of the expected length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CodeTextError {
    /// A character outside the alphabet.
    Character(char),
    /// How many characters there were, dashes and spaces left out.
    Length(usize),
}

/// `N` characters from the low `5 * N` bits of `random`.
pub(crate) fn from_random<const N: usize>(random: u64) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, c) in out.iter_mut().enumerate() {
        *c = ALPHABET[((random >> (5 * i)) & 31) as usize];
    }
    out
}

/// Read `N` characters as a person typed them: any case, with or without dashes and spaces.
pub(crate) fn parse<const N: usize>(text: &str) -> Result<[u8; N], CodeTextError> {
    let mut out = [0u8; N];
    let mut n = 0usize;
    for ch in text.chars() {
        if ch == '-' || ch.is_whitespace() {
            continue;
        }
        let c = match ch.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) {
            return Err(CodeTextError::Character(ch));
        }
        if let Some(slot) = out.get_mut(n) {
            *slot = c as u8;
        }
        n = n.saturating_add(1);
    }
    if n != N {
        return Err(CodeTextError::Length(n));
    }
    Ok(out)
}

/// Write `chars` in groups of four joined by dashes.
pub(crate) fn write_grouped(f: &mut fmt::Formatter<'_>, chars: &[u8]) -> fmt::Result {
    for (i, group) in chars.chunks(4).enumerate() {
        if i > 0 {
            f.write_str("-")?;
        }
        // The alphabet is ASCII, so this never falls back.
        f.write_str(std::str::from_utf8(group).unwrap_or("?"))?;
    }
    Ok(())
}
