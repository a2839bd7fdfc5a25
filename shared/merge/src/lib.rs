//! Field-level three-way merging of patient records.
//!
//! A record is a set of files (mostly YAML). Satellites ("ours") edit
//! offline and central ("theirs") merges their edits against the common
//! ancestor ("base"). Concurrent edits are merged per YAML field; a true
//! conflict keeps central's value in the record and reports the satellite's
//! value (with base and central's) so that nothing is ever silently lost.

#![forbid(unsafe_code)]

pub mod diff;
mod emit;
pub mod files;
pub mod patch;
pub mod pointer;
pub mod value;
pub mod yaml;

pub use self::diff::{FileDiff, ValueDiff, diff_files, diff_values};
pub use self::files::{FileConflict, Files, FilesMerge, merge_files};
pub use self::patch::{apply_merge_patch, stale_patch_conflicts, touched_paths};
pub use self::value::{ValueConflict, ValueMerge, merge_values};
pub use self::yaml::{Position, YamlError, is_yaml_path, parse_yaml, to_yaml};

#[cfg(test)]
mod tests;
