//! Duplicate patients: the same person registered twice, at two clinics
//! while both were offline or twice at one under a misspelled name.
//!
//! A patient's identifying fields are read from `patient.yaml` at
//! configured JSON pointers ([`Fields`], [`Person`]); each record gets a few
//! blocking keys ([`blocking_keys`]) built to survive typos, swapped names,
//! transposed dates and missing fields; records sharing a key are compared
//! field by field ([`compare`]) into a score in `[0, 1]`. Central keeps the
//! keys in its database so a pushed record is checked against its blocks
//! only; [`Index`] is the same in memory.

#![forbid(unsafe_code)]

pub mod compare;
pub mod index;
pub mod keys;
pub mod normalize;
pub mod person;

pub use compare::{
    Comparison, FieldSimilarity, PRIOR_BITS, compare, compare_at_least, compare_views_at_least,
};
pub use index::{Candidate, Index, MAX_BLOCK};
pub use keys::{Key, LEVEL_SEPARATOR, block_end, blocking_keys, key_plan, stored_keys};
pub use person::{BirthDate, Fields, Person, PersonView};

/// Pairs scoring at or above this are listed unless configured otherwise.
pub const DEFAULT_MIN_SCORE: f64 = 0.8;
