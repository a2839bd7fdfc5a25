//! Tree objects: encoding in git's canonical form, strict parsing, and
//! building nested trees from a map of paths.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};

use super::error::FormatError;
use super::object::{Kind, Object, oid_from_raw};
use git2::Oid;

/// Mode of a regular file.
pub const MODE_FILE: u32 = 0o100644;
/// Mode of an executable file.
pub const MODE_EXEC: u32 = 0o100755;
/// Mode of a subdirectory (tree); git writes it as "40000".
pub const MODE_DIR: u32 = 0o040000;
/// Mode of a symbolic link.
pub const MODE_SYMLINK: u32 = 0o120000;
/// Mode of a submodule commit.
pub const MODE_GITLINK: u32 = 0o160000;

/// One entry of a tree object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    /// One of the `MODE_*` constants.
    pub mode: u32,
    /// The entry name (one path component).
    pub name: String,
    /// Id of the blob, tree or (for gitlinks) commit.
    pub id: Oid,
}

/// The text git writes for a mode, for the five known modes.
fn mode_text(mode: u32) -> Option<&'static [u8]> {
    match mode {
        MODE_FILE => Some(b"100644"),
        MODE_EXEC => Some(b"100755"),
        MODE_DIR => Some(b"40000"),
        MODE_SYMLINK => Some(b"120000"),
        MODE_GITLINK => Some(b"160000"),
        _ => None,
    }
}

fn mode_from_text(text: &[u8]) -> Option<u32> {
    match text {
        b"100644" => Some(MODE_FILE),
        b"100755" => Some(MODE_EXEC),
        b"40000" => Some(MODE_DIR),
        b"120000" => Some(MODE_SYMLINK),
        b"160000" => Some(MODE_GITLINK),
        _ => None,
    }
}

/// git's tree order: names compare bytewise, a directory as if its name
/// ended with '/'.
fn git_order(a: &[u8], a_dir: bool, b: &[u8], b_dir: bool) -> Ordering {
    let common = a.len().min(b.len());
    match a[..common].cmp(&b[..common]) {
        Ordering::Equal => {}
        other => return other,
    }
    let end = |name: &[u8], dir: bool| name.get(common).copied().or(dir.then_some(b'/'));
    end(a, a_dir).cmp(&end(b, b_dir))
}

/// Checks one entry name with fsck's name rules ([`crate::fsck::check_name`]:
/// empty, '/', NUL, ".", "..", ".git" and its NTFS/HFS+ look-alikes, git's
/// control files, over-long names); `Err` carries the reason.
fn check_name(name: &[u8]) -> Result<(), &'static str> {
    crate::fsck::check_name(name).map_err(|rule| rule.reason())
}

fn bad_name(name: &[u8], reason: &'static str) -> FormatError {
    FormatError::BadName {
        name: String::from_utf8_lossy(name).into_owned(),
        reason,
    }
}

/// Encodes tree entries exactly as git does, sorting them into git order.
///
/// The entries are trusted: names must be valid and unique and modes one of
/// the `MODE_*` constants (an unknown mode is written in octal as is). Use
/// [`encode_tree_checked`] for entries that are not known to be valid.
pub fn encode_tree(entries: &[TreeEntry]) -> Vec<u8> {
    let mut sorted: Vec<&TreeEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| {
        git_order(
            a.name.as_bytes(),
            a.mode == MODE_DIR,
            b.name.as_bytes(),
            b.mode == MODE_DIR,
        )
    });
    let size: usize = sorted.iter().map(|e| e.name.len() + 28).sum();
    let mut out = Vec::with_capacity(size);
    for entry in sorted {
        match mode_text(entry.mode) {
            Some(text) => out.extend_from_slice(text),
            None => out.extend_from_slice(format!("{:o}", entry.mode).as_bytes()),
        }
        out.push(b' ');
        out.extend_from_slice(entry.name.as_bytes());
        out.push(0);
        out.extend_from_slice(entry.id.as_bytes());
    }
    out
}

/// Like [`encode_tree`], but first refuses unknown modes, names git fsck
/// refuses ([`crate::fsck::check_name`]: empty, ".", "..", '/', NUL,
/// ".git" and its look-alikes, git's control files) and duplicate names.
pub fn encode_tree_checked(entries: &[TreeEntry]) -> Result<Vec<u8>, FormatError> {
    let mut seen = HashSet::with_capacity(entries.len());
    for entry in entries {
        if mode_text(entry.mode).is_none() {
            return Err(FormatError::BadMode {
                offset: 0,
                mode: format!("{:o}", entry.mode),
            });
        }
        check_name(entry.name.as_bytes()).map_err(|r| bad_name(entry.name.as_bytes(), r))?;
        if !seen.insert(entry.name.as_str()) {
            return Err(FormatError::Duplicate {
                name: entry.name.clone(),
            });
        }
    }
    Ok(encode_tree(entries))
}

/// Parses tree data strictly: only the five modes git writes (no zero
/// padding), UTF-8 names that pass the same checks as
/// [`encode_tree_checked`], entries in git order, no duplicate names (a
/// file and a directory of the same name count as duplicates).
pub fn parse_tree(data: &[u8]) -> Result<Vec<TreeEntry>, FormatError> {
    let mut entries: Vec<TreeEntry> = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let start = pos;
        let truncated = || FormatError::TreeTruncated { offset: start };
        let rest = &data[pos..];
        let space = rest.iter().position(|&c| c == b' ').ok_or_else(truncated)?;
        let mode_bytes = &rest[..space];
        let mode = mode_from_text(mode_bytes).ok_or_else(|| FormatError::BadMode {
            offset: start,
            mode: String::from_utf8_lossy(mode_bytes).into_owned(),
        })?;
        let after_mode = &rest[space + 1..];
        let nul = after_mode
            .iter()
            .position(|&c| c == 0)
            .ok_or_else(truncated)?;
        let name_bytes = &after_mode[..nul];
        check_name(name_bytes).map_err(|r| bad_name(name_bytes, r))?;
        let name = std::str::from_utf8(name_bytes).map_err(|_| FormatError::NotUtf8 {
            what: "tree entry name",
        })?;
        let raw_id = after_mode.get(nul + 1..nul + 21).ok_or_else(truncated)?;
        pos = start + space + 1 + nul + 21;
        if let Some(prev) = entries.last() {
            if prev.name == name {
                return Err(FormatError::Duplicate { name: name.into() });
            }
            let order = git_order(
                prev.name.as_bytes(),
                prev.mode == MODE_DIR,
                name_bytes,
                mode == MODE_DIR,
            );
            if order != Ordering::Less {
                return Err(FormatError::NotSorted { name: name.into() });
            }
        }
        entries.push(TreeEntry {
            mode,
            name: name.to_owned(),
            id: oid_from_raw(raw_id),
        });
    }
    // A file "a" and a directory "a" need not be adjacent ("a", "a.b", "a/"),
    // so look each directory's name up as a file. Entries are strictly
    // ordered, so binary search works.
    for dir in entries.iter().filter(|e| e.mode == MODE_DIR) {
        let found = entries.binary_search_by(|e| {
            git_order(
                e.name.as_bytes(),
                e.mode == MODE_DIR,
                dir.name.as_bytes(),
                false,
            )
        });
        if found.is_ok() {
            return Err(FormatError::Duplicate {
                name: dir.name.clone(),
            });
        }
    }
    Ok(entries)
}

/// Builds blobs and nested trees for `files` (relative paths with '/'
/// separators; every file gets [`MODE_FILE`]). Returns the root tree id and
/// all objects (blobs, subtrees, root tree), each id once. An empty map
/// gives the empty tree.
pub fn build_tree(files: &BTreeMap<String, Vec<u8>>) -> Result<(Oid, Vec<Object>), FormatError> {
    // Entries of each directory, keyed by the directory's path ("" = root).
    let mut dirs: BTreeMap<&str, Vec<TreeEntry>> = BTreeMap::new();
    let mut objects = Vec::with_capacity(files.len() * 2 + 1);
    let mut seen = HashSet::with_capacity(files.len() * 2 + 1);
    for (path, content) in files {
        let bad_path = |reason| FormatError::BadPath {
            path: path.clone(),
            reason,
        };
        for component in path.split('/') {
            check_name(component.as_bytes()).map_err(bad_path)?;
        }
        let blob = Object::new(Kind::Blob, content.clone());
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
        dirs.entry(dir).or_default().push(TreeEntry {
            mode: MODE_FILE,
            name: name.to_owned(),
            id: blob.id,
        });
        // Make sure every ancestor directory exists.
        let mut ancestor = dir;
        while let Some((parent, _)) = ancestor.rsplit_once('/') {
            dirs.entry(parent).or_default();
            ancestor = parent;
        }
        if seen.insert(blob.id) {
            objects.push(blob);
        }
    }
    // Deepest directories first, so each subtree id is known before its
    // parent is encoded; the root comes last.
    let mut order: Vec<&str> = dirs.keys().copied().filter(|d| !d.is_empty()).collect();
    order.sort_by_key(|d| std::cmp::Reverse(depth(d)));
    for dir in order {
        let entries = dirs.remove(dir).unwrap_or_default();
        let id = add_tree(dir, &entries, &mut objects, &mut seen)?;
        let (parent, name) = dir.rsplit_once('/').unwrap_or(("", dir));
        dirs.entry(parent).or_default().push(TreeEntry {
            mode: MODE_DIR,
            name: name.to_owned(),
            id,
        });
    }
    let root_entries = dirs.remove("").unwrap_or_default();
    let root = add_tree("", &root_entries, &mut objects, &mut seen)?;
    Ok((root, objects))
}

/// Encodes one directory of `build_tree` and records the tree object.
fn add_tree(
    dir: &str,
    entries: &[TreeEntry],
    objects: &mut Vec<Object>,
    seen: &mut HashSet<Oid>,
) -> Result<Oid, FormatError> {
    let data = encode_tree_checked(entries).map_err(|e| match e {
        FormatError::Duplicate { name } => FormatError::BadPath {
            path: if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            },
            reason: "is both a file and a directory",
        },
        other => other,
    })?;
    let tree = Object::new(Kind::Tree, data);
    let id = tree.id;
    if seen.insert(id) {
        objects.push(tree);
    }
    Ok(id)
}

fn depth(dir: &str) -> usize {
    if dir.is_empty() {
        0
    } else {
        dir.bytes().filter(|&c| c == b'/').count() + 1
    }
}
