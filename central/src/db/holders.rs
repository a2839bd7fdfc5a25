//! Which instances hold a record: a bit string, bit `i` for instance `i`
//! (like GNU Health's `synchronized_instances`), stored compactly with
//! trailing zero bytes trimmed.

use bitvec::prelude::*;

/// The holders of one record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holders(BitVec<u8, Lsb0>);

impl Holders {
    /// From the stored bytes.
    pub fn from_bytes(bytes: &[u8]) -> Holders {
        Holders(BitVec::from_slice(bytes))
    }

    /// The bytes to store (trailing zero bytes trimmed).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = self.0.clone().into_vec();
        while bytes.last() == Some(&0) {
            bytes.pop();
        }
        bytes
    }

    /// Whether `instance` holds the record.
    pub fn contains(&self, instance: u32) -> bool {
        self.0.get(instance as usize).is_some_and(|b| *b)
    }

    /// Marks `instance` as a holder; true if it was not one.
    pub fn insert(&mut self, instance: u32) -> bool {
        let i = instance as usize;
        if self.0.len() <= i {
            self.0.resize(i + 1, false);
        }
        !self.0.replace(i, true)
    }

    /// The holding instances, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter_ones().map(|i| i as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_compactly() {
        let mut h = Holders::default();
        assert!(h.to_bytes().is_empty());
        assert!(h.insert(3));
        assert!(!h.insert(3));
        assert!(h.insert(1023));
        let bytes = h.to_bytes();
        assert_eq!(bytes.len(), 128);
        let back = Holders::from_bytes(&bytes);
        assert_eq!(back.iter().collect::<Vec<_>>(), vec![3, 1023]);
        assert!(back.contains(3) && !back.contains(4) && !back.contains(5000));
        let mut small = Holders::from_bytes(&[0b0000_0100, 0, 0]);
        assert_eq!(small.to_bytes(), vec![0b0000_0100]);
        small.insert(0);
        assert_eq!(small.iter().collect::<Vec<_>>(), vec![0, 2]);
    }
}
