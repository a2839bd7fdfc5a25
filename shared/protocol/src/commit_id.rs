use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A commit hash: a record's version, its consistency token and HTTP ETag.
/// Written as 40 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommitId(pub [u8; 20]);

/// Why a string is not a commit hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a commit hash (40 hex digits)")]
pub struct CommitIdError(pub String);

impl CommitId {
    /// The 20 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// From raw bytes; `None` unless exactly 20 of them.
    pub fn from_slice(bytes: &[u8]) -> Option<CommitId> {
        <[u8; 20]>::try_from(bytes).ok().map(CommitId)
    }
}

impl FromStr for CommitId {
    type Err = CommitIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CommitIdError(s.chars().take(64).collect());
        let bytes = s.as_bytes();
        if bytes.len() != 40 {
            return Err(bad());
        }
        let mut out = [0u8; 20];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or_else(bad)?;
            let lo = hex_val(pair[1]).ok_or_else(bad)?;
            out[i] = (hi << 4) | lo;
        }
        Ok(CommitId(out))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommitId({self})")
    }
}

/// Hex text in human-readable formats (JSON), 20 raw bytes in binary ones.
impl Serialize for CommitId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for CommitId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            let bytes = <serde_bytes::ByteBuf>::deserialize(deserializer)?;
            CommitId::from_slice(&bytes)
                .ok_or_else(|| serde::de::Error::custom("a commit hash is 20 bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_junk() {
        let s = "0123456789abcdef0123456789abcdef01234567";
        let id: CommitId = s.parse().expect("valid");
        assert_eq!(id.to_string(), s);
        assert!("0123".parse::<CommitId>().is_err());
        assert!(
            "g123456789abcdef0123456789abcdef01234567"
                .parse::<CommitId>()
                .is_err()
        );
    }
}
