//! Git object and pack handling for patient-record repositories.
//!
//! Objects are written as one pack plus idx per write ([`write_pack`]), and
//! packs received from peers are parsed and verified in memory
//! ([`parse_pack`]) under [`PackLimits`]: malformed or hostile input gives
//! an error, never a panic or an unbounded allocation.

mod commit;
mod delta;
mod error;
mod idx;
mod inflate;
mod object;
mod pack_index;
mod pack_read;
mod pack_split;
mod pack_write;
mod resolve;
mod tree;

#[cfg(test)]
mod tests;

pub use git2::Oid;

pub use self::commit::{Commit, Signature, commit_trailer, encode_commit, parse_commit};
pub use self::delta::{DeltaHeader, apply_delta, delta_header};
pub use self::error::{DeltaError, FormatError, PackError};
pub use self::idx::{IdxEntry, write_idx};
pub use self::object::{Kind, Object, hash_object};
pub use self::pack_index::{Lookup, PackIndex};
pub use self::pack_read::{PackLimits, parse_pack};
pub use self::pack_split::{join_pack, split_pack};
pub use self::pack_write::{PackFiles, write_pack, write_pack_only};
pub use self::tree::{
    MODE_DIR, MODE_EXEC, MODE_FILE, MODE_GITLINK, MODE_SYMLINK, TreeEntry, build_tree, encode_tree,
    encode_tree_checked, parse_tree,
};
