//! An in-memory blocking index: records go in one at a time and each comes
//! out with the earlier records it may duplicate. Central keeps the same
//! keys in its database; this one serves tests, the quality measurement
//! and tools.

use std::collections::{HashMap, HashSet};

use crate::compare::{Comparison, compare_at_least};
use crate::keys::{blocking_keys, key_plan};
use crate::person::Person;

/// Blocks larger than this are not searched (the finer key is, see
/// [`crate::keys::Key`]): a key that many records share (a very common
/// name in one year) tells little, and the record's other keys still find
/// its duplicates. It bounds the cost of one record's candidates whatever
/// the number of records.
pub const MAX_BLOCK: usize = 100;

/// Records by blocking key.
#[derive(Debug, Default)]
pub struct Index {
    people: Vec<Person>,
    blocks: HashMap<String, Vec<u32>>,
    compared: u64,
}

/// A likely duplicate found on insertion: the position of the earlier
/// record and the comparison.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub other: usize,
    pub comparison: Comparison,
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    /// Adds `person` as record number `self.len()` and returns the earlier
    /// records scoring at least `min_score` against it.
    pub fn insert(&mut self, person: Person, min_score: f64) -> Vec<Candidate> {
        let me = self.people.len() as u32;
        let mut seen = HashSet::new();
        let mut found = Vec::new();
        for key in key_plan(&person) {
            let searched = key.searched(MAX_BLOCK, |k| self.blocks.get(k).map_or(0, Vec::len));
            let Some(block) = searched.and_then(|k| self.blocks.get(k)) else {
                continue;
            };
            for &other in block.iter() {
                if seen.insert(other) {
                    self.compared += 1;
                    if let Some(comparison) =
                        compare_at_least(&self.people[other as usize], &person, min_score)
                    {
                        found.push(Candidate {
                            other: other as usize,
                            comparison,
                        });
                    }
                }
            }
        }
        for key in blocking_keys(&person) {
            self.blocks.entry(key).or_default().push(me);
        }
        self.people.push(person);
        found
    }

    /// Records in the index.
    pub fn len(&self) -> usize {
        self.people.len()
    }

    pub fn is_empty(&self) -> bool {
        self.people.is_empty()
    }

    /// Pairs compared so far (the cost of blocking).
    pub fn compared(&self) -> u64 {
        self.compared
    }

    /// Whether records `a` and `b` share a searchable block (for measuring
    /// how many true pairs blocking keeps).
    pub fn share_block(&self, a: usize, b: usize) -> bool {
        let (ka, kb) = (
            blocking_keys(&self.people[a]),
            blocking_keys(&self.people[b]),
        );
        ka.iter()
            .any(|k| kb.contains(k) && self.blocks.get(k).is_some_and(|blk| blk.len() <= MAX_BLOCK))
    }
}
