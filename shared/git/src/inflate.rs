//! Bounded zlib inflation of one pack entry.

use flate2::{Decompress, DecompressError, FlushDecompress, Status};

/// Why an entry could not be inflated to exactly its declared size.
#[derive(Debug)]
pub(crate) enum InflateError {
    /// The input ended before the zlib stream did.
    Truncated,
    /// The zlib stream is corrupt (or stalled without progress).
    Corrupt(Option<DecompressError>),
    /// The stream inflates to more than the declared size.
    Overrun,
    /// The stream ended after this many bytes, fewer than declared.
    Short(u64),
}

/// Deflate cannot expand data by more than about 1032:1, so an entry whose
/// zlib data is `n` bytes long cannot honestly inflate to more than this.
fn max_honest_output(input_len: usize) -> usize {
    input_len.saturating_mul(1040).saturating_add(1024)
}

/// A reusable zlib decompressor.
pub(crate) struct Inflater {
    inner: Decompress,
}

impl Inflater {
    pub(crate) fn new() -> Inflater {
        Inflater {
            inner: Decompress::new(true),
        }
    }

    /// Inflates the zlib stream at the start of `input`, which must produce
    /// exactly `size` bytes. Returns the data and the number of input bytes
    /// the stream occupies. Never allocates much more than the smaller of
    /// `size` and what `input` could honestly inflate to.
    pub(crate) fn inflate_exact(
        &mut self,
        input: &[u8],
        size: usize,
    ) -> Result<(Vec<u8>, usize), InflateError> {
        self.inner.reset(true);
        let mut out = Vec::with_capacity(size.min(max_honest_output(input.len())));
        let mut probe = [0u8; 64];
        loop {
            let in_pos = self.consumed(input.len());
            let before = (self.inner.total_in(), self.inner.total_out());
            let rest = input.get(in_pos..).unwrap_or_default();
            let status = if out.len() < size {
                if out.len() == out.capacity() {
                    let room = size - out.len();
                    out.reserve_exact(out.len().max(4096).min(room));
                }
                self.inner
                    .decompress_vec(rest, &mut out, FlushDecompress::None)
            } else {
                // Output is full: the stream must end without producing more.
                self.inner
                    .decompress(rest, &mut probe, FlushDecompress::None)
            }
            .map_err(|e| InflateError::Corrupt(Some(e)))?;
            if self.inner.total_out() > size as u64 {
                return Err(InflateError::Overrun);
            }
            if status == Status::StreamEnd {
                break;
            }
            if before == (self.inner.total_in(), self.inner.total_out()) {
                return Err(if self.consumed(input.len()) >= input.len() {
                    InflateError::Truncated
                } else {
                    InflateError::Corrupt(None)
                });
            }
        }
        if out.len() != size {
            return Err(InflateError::Short(out.len() as u64));
        }
        Ok((out, self.consumed(input.len())))
    }

    fn consumed(&self, input_len: usize) -> usize {
        usize::try_from(self.inner.total_in()).map_or(input_len, |n| n.min(input_len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::ZlibEncoder};
    use std::io::Write;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut enc = ZlibEncoder::new(Vec::new(), Compression::new(6));
        enc.write_all(data).expect("write to Vec");
        enc.finish().expect("finish to Vec")
    }

    #[test]
    fn exact_and_consumed() {
        let mut z = zlib(b"hello hello hello");
        let len = z.len();
        z.extend_from_slice(b"next entry");
        let mut inf = Inflater::new();
        let (data, used) = inf.inflate_exact(&z, 17).expect("valid");
        assert_eq!(data, b"hello hello hello");
        assert_eq!(used, len);
        let (data, used) = inf.inflate_exact(&zlib(b""), 0).expect("valid empty");
        assert!(data.is_empty());
        assert_eq!(used, 8);
    }

    #[test]
    fn size_errors() {
        let z = zlib(&[0u8; 1000]);
        let mut inf = Inflater::new();
        assert!(matches!(
            inf.inflate_exact(&z, 999),
            Err(InflateError::Overrun)
        ));
        assert!(matches!(
            inf.inflate_exact(&z, 1001),
            Err(InflateError::Short(1000))
        ));
        assert!(matches!(
            inf.inflate_exact(&z, 0),
            Err(InflateError::Overrun)
        ));
        assert!(matches!(
            inf.inflate_exact(&z[..z.len() - 1], 1000),
            Err(InflateError::Truncated)
        ));
        assert!(matches!(
            inf.inflate_exact(b"garbage!", 10),
            Err(InflateError::Corrupt(_))
        ));
        // A huge declared size with tiny input must not allocate it.
        assert!(matches!(
            inf.inflate_exact(&z, usize::MAX),
            Err(InflateError::Short(1000))
        ));
    }
}
