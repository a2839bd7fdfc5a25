//! Git's delta format: a header with base and result sizes, then copy
//! (from base) and insert (literal) instructions.

use super::error::DeltaError;

/// Sizes declared by a delta header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaHeader {
    /// Size of the base the delta applies to.
    pub base_size: u64,
    /// Size of the result.
    pub result_size: u64,
    /// Bytes taken by the header; instructions follow.
    pub len: usize,
}

/// Reads a little-endian base-128 size at `*pos`.
fn read_size(delta: &[u8], pos: &mut usize) -> Result<u64, DeltaError> {
    let mut value = 0u64;
    let mut shift = 0u32;
    loop {
        let byte = *delta.get(*pos).ok_or(DeltaError::Truncated { at: *pos })?;
        *pos += 1;
        let part = u64::from(byte & 0x7f);
        if shift >= 64 || (shift > 57 && part >> (64 - shift) != 0) {
            return Err(DeltaError::SizeOverflow);
        }
        value |= part << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
    }
}

/// Reads the delta header (base size and result size).
pub fn delta_header(delta: &[u8]) -> Result<DeltaHeader, DeltaError> {
    let mut pos = 0;
    let base_size = read_size(delta, &mut pos)?;
    let result_size = read_size(delta, &mut pos)?;
    Ok(DeltaHeader {
        base_size,
        result_size,
        len: pos,
    })
}

/// Applies `delta` to `base`. The result may be at most `max_result` bytes;
/// this is checked before allocating. Every instruction is bounds-checked.
pub fn apply_delta(base: &[u8], delta: &[u8], max_result: usize) -> Result<Vec<u8>, DeltaError> {
    let header = delta_header(delta)?;
    if header.base_size != base.len() as u64 {
        return Err(DeltaError::BaseSize {
            expected: header.base_size,
            actual: base.len() as u64,
        });
    }
    let result_size = usize::try_from(header.result_size)
        .ok()
        .filter(|&n| n <= max_result)
        .ok_or(DeltaError::ResultTooLarge {
            size: header.result_size,
            limit: max_result as u64,
        })?;
    let mut out = Vec::with_capacity(result_size);
    let mut pos = header.len;
    let overflow = |out: &Vec<u8>, more: u64| DeltaError::ResultSize {
        declared: header.result_size,
        produced: out.len() as u64 + more,
    };
    while let Some(&op) = delta.get(pos) {
        let at = pos;
        pos += 1;
        if op & 0x80 != 0 {
            // Copy: bits 0-3 select offset bytes, bits 4-6 size bytes.
            let mut offset = 0u64;
            let mut size = 0u64;
            for i in 0..7u32 {
                if op & (1 << i) != 0 {
                    let byte = *delta.get(pos).ok_or(DeltaError::Truncated { at: pos })?;
                    pos += 1;
                    if i < 4 {
                        offset |= u64::from(byte) << (8 * i);
                    } else {
                        size |= u64::from(byte) << (8 * (i - 4));
                    }
                }
            }
            if size == 0 {
                size = 0x10000;
            }
            let range = usize::try_from(offset)
                .ok()
                .zip(usize::try_from(size).ok())
                .and_then(|(start, len)| Some(start..start.checked_add(len)?))
                .and_then(|r| base.get(r))
                .ok_or(DeltaError::CopyOutOfRange {
                    offset,
                    size,
                    base_len: base.len() as u64,
                })?;
            if range.len() > result_size - out.len() {
                return Err(overflow(&out, size));
            }
            out.extend_from_slice(range);
        } else if op == 0 {
            return Err(DeltaError::ZeroOpcode { at });
        } else {
            let len = usize::from(op);
            let literal = delta
                .get(pos..pos + len)
                .ok_or(DeltaError::Truncated { at: delta.len() })?;
            pos += len;
            if len > result_size - out.len() {
                return Err(overflow(&out, len as u64));
            }
            out.extend_from_slice(literal);
        }
    }
    if out.len() != result_size {
        return Err(overflow(&out, 0));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(base: u64, result: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for mut n in [base, result] {
            loop {
                let byte = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    out.push(byte);
                    break;
                }
                out.push(byte | 0x80);
            }
        }
        out
    }

    #[test]
    fn copy_and_insert() {
        let base = b"hello, world";
        let mut delta = header(12, 11);
        delta.extend_from_slice(&[0x91, 7, 5]); // copy offset 7 len 5: "world"
        delta.extend_from_slice(&[6]);
        delta.extend_from_slice(b", ciao");
        assert_eq!(
            apply_delta(base, &delta, 100).as_deref(),
            Ok(&b"world, ciao"[..])
        );
    }

    #[test]
    fn copy_size_zero_means_64k() {
        let base = vec![7u8; 0x10000];
        let mut delta = header(0x10000, 0x10000);
        delta.push(0x80); // no offset bytes, no size bytes
        assert_eq!(
            apply_delta(&base, &delta, 1 << 20).map(|v| v.len()),
            Ok(0x10000)
        );
    }

    #[test]
    fn errors() {
        let base = b"0123456789";
        let with = |h: Vec<u8>, ops: &[u8]| {
            let mut d = h;
            d.extend_from_slice(ops);
            apply_delta(base, &d, 1000)
        };
        assert!(matches!(
            with(header(10, 5), &[0x91, 8, 5]),
            Err(DeltaError::CopyOutOfRange { .. })
        ));
        assert!(matches!(
            with(header(10, 5), &[0x9f, 0xff, 0xff, 0xff, 0xff, 1]),
            Err(DeltaError::CopyOutOfRange { .. })
        ));
        assert!(matches!(
            with(header(10, 5), &[0]),
            Err(DeltaError::ZeroOpcode { .. })
        ));
        assert!(matches!(
            with(header(9, 5), &[]),
            Err(DeltaError::BaseSize { .. })
        ));
        assert!(matches!(
            with(header(10, 5), &[0x90, 4]),
            Err(DeltaError::ResultSize { .. })
        ));
        assert!(matches!(
            with(header(10, 5), &[0x90, 6]),
            Err(DeltaError::ResultSize { .. })
        ));
        assert!(matches!(
            with(header(10, 5), &[3, b'a']),
            Err(DeltaError::Truncated { .. })
        ));
        assert!(matches!(
            with(header(10, 5), &[0x91]),
            Err(DeltaError::Truncated { .. })
        ));
        assert!(matches!(
            with(header(10, 5000), &[]),
            Err(DeltaError::ResultTooLarge { .. })
        ));
        assert!(matches!(
            apply_delta(base, &[0x8a], 10),
            Err(DeltaError::Truncated { .. })
        ));
        assert!(matches!(
            apply_delta(base, &[0xff; 12], 10),
            Err(DeltaError::SizeOverflow)
        ));
    }
}
