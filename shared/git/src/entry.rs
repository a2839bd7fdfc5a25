//! One pack entry: what an entry header says, and an entry's payload once
//! inflated. Shared by the pack parser ([`crate::parse_pack`]), delta
//! resolution, the on-disk pack reader and pack splitting, so that none of
//! them imports another.

use git2::Oid;

use super::error::PackError;
use super::object::Kind;

/// Limits applied while parsing an untrusted pack. They are checked before
/// the memory they guard is allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackLimits {
    /// Most entries a pack may declare.
    pub max_objects: u32,
    /// Largest inflated entry (object, delta data, or delta result).
    pub max_object_bytes: usize,
    /// Largest sum of all inflated entries and delta results.
    pub max_total_bytes: usize,
    /// Longest delta chain (number of deltas on top of a full object).
    pub max_delta_depth: u32,
}

impl Default for PackLimits {
    fn default() -> PackLimits {
        PackLimits {
            max_objects: 100_000,
            max_object_bytes: 16 << 20,
            max_total_bytes: 256 << 20,
            max_delta_depth: 50,
        }
    }
}

/// Type code of a delta against an earlier entry of the same pack.
pub(crate) const OFS_DELTA: u8 = 6;
/// Type code of a delta against an object named by id.
pub(crate) const REF_DELTA: u8 = 7;

/// An entry header: the type code and inflated size, and where the entry's
/// data (or, for deltas, its base reference) starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) type_code: u8,
    pub(crate) size: u64,
    pub(crate) data_at: usize,
}

/// Why an entry header could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// The bytes end at this offset inside the header.
    Truncated(usize),
    /// The size does not fit in 64 bits.
    SizeOverflow,
}

/// Reads the entry header at `pos`: a type code and a variable-length size.
pub(crate) fn read_type_and_size(bytes: &[u8], mut pos: usize) -> Result<Header, HeaderError> {
    let mut next = || {
        let byte = bytes.get(pos).copied().ok_or(HeaderError::Truncated(pos));
        pos += 1;
        byte
    };
    let first = next()?;
    let type_code = (first >> 4) & 0x07;
    let mut size = u64::from(first & 0x0f);
    let mut shift = 4u32;
    let mut byte = first;
    while byte & 0x80 != 0 {
        byte = next()?;
        let part = u64::from(byte & 0x7f);
        if shift >= 64 || (shift > 57 && part >> (64 - shift) != 0) {
            return Err(HeaderError::SizeOverflow);
        }
        size |= part << shift;
        shift += 7;
    }
    Ok(Header {
        type_code,
        size,
        data_at: pos,
    })
}

/// The payload of one pack entry after inflation.
pub(crate) enum Payload {
    /// A full object.
    Full(Kind, Vec<u8>),
    /// A delta against the entry with this index.
    Ofs(usize, Vec<u8>),
    /// A delta against the object with this id.
    Ref(Oid, Vec<u8>),
}

/// One pack entry: its offset and payload.
pub(crate) struct Entry {
    pub(crate) offset: usize,
    pub(crate) payload: Payload,
}

/// Running total of inflated bytes, checked against the limit.
pub(crate) struct Budget {
    pub(crate) used: usize,
    pub(crate) limits: PackLimits,
}

impl Budget {
    /// Accounts for an object of `size` bytes at entry `index`, or refuses it.
    pub(crate) fn take(
        &mut self,
        index: usize,
        offset: usize,
        size: u64,
    ) -> Result<usize, PackError> {
        let limit = self.limits.max_object_bytes;
        let size_usize = usize::try_from(size).ok().filter(|&s| s <= limit).ok_or(
            PackError::ObjectTooLarge {
                index: index as u32,
                offset: offset as u64,
                size,
                limit: limit as u64,
            },
        )?;
        self.used = self
            .used
            .checked_add(size_usize)
            .filter(|&t| t <= self.limits.max_total_bytes)
            .ok_or(PackError::TotalTooLarge {
                index: index as u32,
                offset: offset as u64,
                limit: self.limits.max_total_bytes as u64,
            })?;
        Ok(size_usize)
    }
}
