//! Object kinds, in-memory objects and object hashing.

use sha1::{Digest, Sha1};

use git2::Oid;

/// The four git object kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A commit (pack type 1).
    Commit,
    /// A tree (pack type 2).
    Tree,
    /// A blob (pack type 3).
    Blob,
    /// An annotated tag (pack type 4).
    Tag,
}

impl Kind {
    /// The name git uses in object headers: "commit", "tree", "blob", "tag".
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Commit => "commit",
            Kind::Tree => "tree",
            Kind::Blob => "blob",
            Kind::Tag => "tag",
        }
    }

    /// The pack entry type code (1..=4).
    pub fn type_code(&self) -> u8 {
        match self {
            Kind::Commit => 1,
            Kind::Tree => 2,
            Kind::Blob => 3,
            Kind::Tag => 4,
        }
    }

    /// The kind for a pack entry type code, if it is one of 1..=4.
    pub fn from_type_code(code: u8) -> Option<Kind> {
        match code {
            1 => Some(Kind::Commit),
            2 => Some(Kind::Tree),
            3 => Some(Kind::Blob),
            4 => Some(Kind::Tag),
            _ => None,
        }
    }
}

/// A git object held in memory. `id` must be `hash_object(kind, &data)`;
/// [`Object::new`] guarantees that, and [`Object::is_consistent`] checks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    /// The object id (SHA-1 of header and data).
    pub id: Oid,
    /// The object kind.
    pub kind: Kind,
    /// The object content, without the `"<kind> <len>\0"` header.
    pub data: Vec<u8>,
}

impl Object {
    /// Creates an object, computing its id.
    pub fn new(kind: Kind, data: Vec<u8>) -> Object {
        let id = hash_object(kind, &data);
        Object { id, kind, data }
    }

    /// Whether `id` is the hash of `kind` and `data`.
    pub fn is_consistent(&self) -> bool {
        hash_object(self.kind, &self.data) == self.id
    }
}

/// The object id git gives `data` as an object of `kind`: the SHA-1 of
/// `"<kind> <len>\0<data>"` (what `git hash-object` prints).
pub fn hash_object(kind: Kind, data: &[u8]) -> Oid {
    let mut hasher = Sha1::new();
    hasher.update(kind.name().as_bytes());
    hasher.update(b" ");
    let mut buf = [0u8; 20];
    hasher.update(format_decimal(data.len() as u64, &mut buf));
    hasher.update(b"\0");
    hasher.update(data);
    oid_from_sha1(hasher)
}

/// Finishes a SHA-1 computation into an [`Oid`].
pub(crate) fn oid_from_sha1(hasher: Sha1) -> Oid {
    oid_from_raw(hasher.finalize().as_slice())
}

/// Makes an [`Oid`] from exactly 20 raw bytes.
pub(crate) fn oid_from_raw(raw: &[u8]) -> Oid {
    let mut bytes = [0u8; 20];
    let n = raw.len().min(20);
    bytes[..n].copy_from_slice(&raw[..n]);
    Oid::from_bytes(&bytes).expect("a 20-byte array is always a valid SHA-1 object id")
}

/// Writes `n` in decimal into `buf`, returning the digits.
pub(crate) fn format_decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Parses 40 lowercase hex digits into an [`Oid`].
pub(crate) fn parse_hex_oid(hex: &[u8]) -> Option<Oid> {
    if hex.len() != 40 {
        return None;
    }
    let mut raw = [0u8; 20];
    for (byte, pair) in raw.iter_mut().zip(hex.chunks_exact(2)) {
        let hi = hex_digit(pair[0])?;
        let lo = hex_digit(pair[1])?;
        *byte = (hi << 4) | lo;
    }
    Some(oid_from_raw(&raw))
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_codes_round_trip() {
        for kind in [Kind::Commit, Kind::Tree, Kind::Blob, Kind::Tag] {
            assert_eq!(Kind::from_type_code(kind.type_code()), Some(kind));
        }
        assert_eq!(Kind::from_type_code(0), None);
        assert_eq!(Kind::from_type_code(5), None);
    }

    #[test]
    fn decimal_formatting() {
        let mut buf = [0u8; 20];
        assert_eq!(format_decimal(0, &mut buf), b"0");
        assert_eq!(format_decimal(1234567, &mut buf), b"1234567");
        assert_eq!(format_decimal(u64::MAX, &mut buf), b"18446744073709551615");
    }

    #[test]
    fn hex_parsing_is_strict() {
        let hex = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
        assert_eq!(
            parse_hex_oid(hex.as_bytes()).map(|o| o.to_string()),
            Some(hex.into())
        );
        assert!(parse_hex_oid(hex.to_uppercase().as_bytes()).is_none());
        assert!(parse_hex_oid(&hex.as_bytes()[..39]).is_none());
        assert!(parse_hex_oid(b"g000000000000000000000000000000000000000").is_none());
    }

    #[test]
    fn empty_tree_and_blob_ids() {
        assert_eq!(
            hash_object(Kind::Tree, b"").to_string(),
            "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
        );
        assert_eq!(
            hash_object(Kind::Blob, b"").to_string(),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
    }
}
