//! Field-level three-way merging of patient records.
//!
//! A record is a set of files (mostly YAML). Satellites ("ours") edit
//! offline and central ("theirs") merges their edits against the common
//! ancestor ("base"). Concurrent edits are merged per YAML field; a true
//! conflict keeps central's value in the record and reports the satellite's
//! value (with base and central's) so that nothing is ever silently lost.

//!
//! Every YAML text is read by [`parse_yaml`], which refuses anchors,
//! aliases, tags, nesting deeper than [`MAX_DEPTH`] and numbers that would
//! not be stored exactly, in time and memory linear in the text.

// The only unsafe code is the event-stream wrapper in `scan`, which allows
// it for itself.
#![deny(unsafe_code)]

pub mod diff;
mod emit;
pub mod files;
pub mod number;
pub mod patch;
pub mod pointer;
mod scan;
pub mod union;
pub mod value;
pub mod yaml;

pub use self::diff::{FileDiff, ValueDiff, diff_files, diff_values};
pub use self::files::{FileConflict, Files, FilesMerge, merge_files};
pub use self::number::{JsonError, parse_json_exact};
pub use self::patch::{apply_merge_patch, stale_patch_conflicts, touched_paths};
pub use self::union::{carry_files, unite_files, unite_values};
pub use self::value::{ValueConflict, ValueMerge, merge_values};
pub use self::yaml::{MAX_DEPTH, Position, YamlError, is_yaml_path, parse_yaml, to_yaml};

#[cfg(test)]
mod tests;
