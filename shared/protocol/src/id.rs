//! Patient record identifiers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// The id of a patient record: a version 4 UUID, always shown in lowercase
/// hyphenated form. The record's repository is named after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PatientId(Uuid);

/// Why a string is not a patient id.
#[derive(Debug, thiserror::Error)]
pub enum IdError {
    /// Not a UUID at all.
    #[error("{input:?} is not a UUID (expected the form 0b6f3c1e-8d2a-4c1f-9e0a-2a4b6c8d0e1f)")]
    Syntax {
        /// What was given (truncated).
        input: String,
        /// The parser's complaint.
        #[source]
        source: uuid::Error,
    },
    /// A UUID, but not a random (version 4) one.
    #[error("{input} is a version {version} UUID; patient ids are random (version 4) UUIDs")]
    Version {
        /// What was given.
        input: String,
        /// The version it has.
        version: usize,
    },
}

impl PatientId {
    /// A new random id.
    pub fn random() -> PatientId {
        PatientId(Uuid::new_v4())
    }

    /// The id from its 16 bytes, checking it is a version 4 UUID.
    pub fn from_bytes(bytes: [u8; 16]) -> Result<PatientId, IdError> {
        Self::checked(Uuid::from_bytes(bytes))
    }

    /// Wraps a UUID, checking it is a version 4 UUID.
    pub fn checked(uuid: Uuid) -> Result<PatientId, IdError> {
        if uuid.get_version_num() != 4 || uuid.get_variant() != uuid::Variant::RFC4122 {
            return Err(IdError::Version {
                input: uuid.to_string(),
                version: uuid.get_version_num(),
            });
        }
        Ok(PatientId(uuid))
    }

    /// The UUID.
    pub fn uuid(&self) -> Uuid {
        self.0
    }

    /// The 16 raw bytes (how databases store it).
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl FromStr for PatientId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the canonical 36-character hyphenated form: no braces, no urn
        // prefix, no simple form, so that one record has one spelling.
        let uuid = if s.len() == 36 {
            Uuid::try_parse(s)
        } else {
            Uuid::try_parse("not-a-uuid")
        }
        .map_err(|source| IdError::Syntax {
            input: s.chars().take(64).collect(),
            source,
        })?;
        Self::checked(uuid)
    }
}

impl fmt::Display for PatientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

/// Text in human-readable formats (JSON), 16 raw bytes in binary ones (the
/// sync envelope).
impl Serialize for PatientId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_bytes(self.as_bytes())
        }
    }
}

impl<'de> Deserialize<'de> for PatientId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            let bytes = <serde_bytes::ByteBuf>::deserialize(deserializer)?;
            let bytes: [u8; 16] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| serde::de::Error::custom("a patient id is 16 bytes"))?;
            PatientId::from_bytes(bytes).map_err(serde::de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_canonical_v4_and_prints_lowercase() {
        let id: PatientId = "0B6F3C1E-8D2A-4C1F-9E0A-2A4B6C8D0E1F"
            .parse()
            .expect("valid");
        assert_eq!(id.to_string(), "0b6f3c1e-8d2a-4c1f-9e0a-2a4b6c8d0e1f");
    }

    #[test]
    fn refuses_other_forms_and_versions() {
        for bad in [
            "",
            "x",
            "0b6f3c1e8d2a4c1f9e0a2a4b6c8d0e1f",
            "{0b6f3c1e-8d2a-4c1f-9e0a-2a4b6c8d0e1f}",
            "../../etc/passwd",
            "00000000-0000-0000-0000-000000000000",
            "0b6f3c1e-8d2a-1c1f-9e0a-2a4b6c8d0e1f",
            "0b6f3c1e-8d2a-4c1f-9e0a-2a4b6c8d0e1g",
        ] {
            assert!(bad.parse::<PatientId>().is_err(), "{bad:?} accepted");
        }
    }
}
