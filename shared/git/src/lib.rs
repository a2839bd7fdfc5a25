//! chartsync's git layer: the objects of a patient record (blobs, trees,
//! commits) and the pack files that carry them, written and read without
//! libgit2 on the hot paths. [`write_pack`] writes one pack plus index per
//! write; [`parse_pack`] parses and verifies a pack received from a peer
//! under [`PackLimits`] (malformed or hostile input is an error, never a
//! panic or an unbounded allocation); [`PackReader`] reads a record's packs
//! on disk through their indexes; [`apply_delta`] rebuilds deltified
//! objects and [`encode_delta`] makes them. Nothing here knows about patients, YAML or HTTP.

#![forbid(unsafe_code)]

mod commit;
mod delta;
mod delta_encode;
mod entry;
mod error;
pub mod fsck;
mod idx_writer;
mod inflate;
mod object;
mod pack_parser;
mod pack_reader;
mod pack_split;
mod pack_writer;
mod resolve;
mod tree;

#[cfg(test)]
mod tests;

pub use self::commit::{Commit, Signature, commit_trailer, encode_commit, parse_commit};
pub use self::delta::{DeltaHeader, apply_delta, delta_header};
pub use self::delta_encode::{encode_delta, encode_delta_within};
pub use self::entry::PackLimits;
pub use self::error::{DeltaError, FormatError, FsckError, PackError};
pub use self::idx_writer::{IdxEntry, write_idx};
pub use self::object::{Kind, Object, hash_object};
pub use self::pack_parser::parse_pack;
pub use self::pack_reader::{Lookup, PackReader};
pub use self::pack_split::{join_pack, join_pack_entries, split_pack, split_pack_entries};
pub use self::pack_writer::{PackFiles, write_pack, write_pack_deltified, write_pack_only};
pub use self::tree::{
    MODE_DIR, MODE_EXEC, MODE_FILE, MODE_GITLINK, MODE_SYMLINK, TreeEntry, build_tree, encode_tree,
    encode_tree_checked, parse_tree,
};
