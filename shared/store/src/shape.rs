//! The shape of every version a received pack brings: each tree holds only
//! plain files and non-empty folders, every name passes the record's path
//! rules ([`crate::path`]), and every full path is within the length and
//! depth limits; at most `max_files` files per version.
//!
//! A tree's shape does not depend on where it sits, so it is worked out
//! once per tree id (a pack of many versions shares most of its trees);
//! what does depend on the place (the full path's length and depth) is
//! checked from the shape's longest and deepest paths.

use std::collections::HashMap;

use chartsync_git::{MODE_DIR, MODE_EXEC, MODE_FILE, TreeEntry};
use git2::Oid;

use crate::path::{MAX_DEPTH, MAX_PATH_BYTES, PathError, validate_path};
use crate::validate::InvalidRecord;

/// What a tree holds, wherever it sits.
#[derive(Clone, Debug)]
struct Shape {
    /// Files below it.
    files: usize,
    /// Levels below it (a file directly in it counts 1).
    height: usize,
    /// Its deepest path, relative to it.
    deepest: String,
    /// Its longest path, relative to it.
    longest: String,
}

/// Why a shape could not be worked out.
#[derive(Debug)]
pub(crate) enum ShapeError<E> {
    /// The version is not a record.
    Invalid(InvalidRecord),
    /// A tree could not be read.
    Read(E),
}

impl<E> From<InvalidRecord> for ShapeError<E> {
    fn from(e: InvalidRecord) -> Self {
        ShapeError::Invalid(e)
    }
}

impl<E> From<PathError> for ShapeError<E> {
    fn from(e: PathError) -> Self {
        ShapeError::Invalid(e.into())
    }
}

/// Checks versions' root trees, remembering each tree's shape across them.
pub(crate) struct Shapes<F> {
    read: F,
    max_files: usize,
    known: HashMap<Oid, Shape>,
}

impl<E, F: FnMut(Oid) -> Result<Vec<TreeEntry>, E>> Shapes<F> {
    /// `read` gives a tree's entries; `max_files` is the record's limit.
    pub(crate) fn new(read: F, max_files: usize) -> Shapes<F> {
        Shapes {
            read,
            max_files,
            known: HashMap::new(),
        }
    }

    /// Checks the version whose root tree is `root`.
    pub(crate) fn check_root(&mut self, root: Oid) -> Result<(), ShapeError<E>> {
        let shape = self.shape(root, "", 0)?;
        if shape.files == 0 {
            return Err(InvalidRecord::Empty.into());
        }
        Ok(())
    }

    /// The shape of `tree` at `prefix` (`""` or ending in '/'), `level`
    /// folders below the root.
    fn shape(&mut self, tree: Oid, prefix: &str, level: usize) -> Result<Shape, ShapeError<E>> {
        if let Some(shape) = self.known.get(&tree) {
            // Seen elsewhere: only the place can make it too long or deep.
            if level + shape.height > MAX_DEPTH {
                return Err(PathError::TooLong(format!("{prefix}{}", shape.deepest)).into());
            }
            if prefix.len() + shape.longest.len() > MAX_PATH_BYTES {
                return Err(PathError::TooLong(format!("{prefix}{}", shape.longest)).into());
            }
            return Ok(shape.clone());
        }
        let entries = (self.read)(tree).map_err(ShapeError::Read)?;
        if entries.is_empty() && level > 0 {
            return Err(InvalidRecord::EmptyFolder {
                folder: prefix.trim_end_matches('/').to_string(),
            }
            .into());
        }
        let mut shape = Shape {
            files: 0,
            height: 0,
            deepest: String::new(),
            longest: String::new(),
        };
        for entry in entries {
            let path = format!("{prefix}{}", entry.name);
            // The whole path: charset, hidden names (so every ".git"
            // look-alike), length and depth at this place.
            validate_path(&path)?;
            let (files, height, deepest, longest) = match entry.mode {
                MODE_FILE | MODE_EXEC => (1, 1, entry.name.clone(), entry.name.clone()),
                MODE_DIR => {
                    let sub = self.shape(entry.id, &format!("{path}/"), level + 1)?;
                    (
                        sub.files,
                        sub.height + 1,
                        format!("{}/{}", entry.name, sub.deepest),
                        format!("{}/{}", entry.name, sub.longest),
                    )
                }
                mode => return Err(InvalidRecord::UnsupportedEntry { file: path, mode }.into()),
            };
            shape.files = shape.files.saturating_add(files);
            if shape.files > self.max_files {
                return Err(InvalidRecord::TooManyFiles {
                    count: shape.files,
                    max: self.max_files,
                }
                .into());
            }
            if height > shape.height {
                shape.height = height;
                shape.deepest = deepest;
            }
            if longest.len() > shape.longest.len() {
                shape.longest = longest;
            }
        }
        self.known.insert(tree, shape.clone());
        Ok(shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chartsync_git::{Kind, Object, encode_tree};

    /// Trees by id, built bottom-up.
    #[derive(Default)]
    struct Trees(HashMap<Oid, Vec<TreeEntry>>);

    impl Trees {
        fn add(&mut self, entries: Vec<TreeEntry>) -> Oid {
            let id = Object::new(Kind::Tree, encode_tree(&entries)).id;
            self.0.insert(id, entries);
            id
        }

        fn check(&self, root: Oid) -> Result<(), InvalidRecord> {
            let mut shapes = Shapes::new(|id| self.0.get(&id).cloned().ok_or(()), 2000);
            shapes.check_root(root).map_err(|e| match e {
                ShapeError::Invalid(e) => e,
                ShapeError::Read(()) => panic!("tree missing"),
            })
        }
    }

    fn file(name: &str) -> TreeEntry {
        TreeEntry {
            mode: MODE_FILE,
            name: name.into(),
            id: Object::new(Kind::Blob, b"a: 1\n".to_vec()).id,
        }
    }

    fn dir(name: &str, id: Oid) -> TreeEntry {
        TreeEntry {
            mode: MODE_DIR,
            name: name.into(),
            id,
        }
    }

    #[test]
    fn a_tree_too_deep_where_it_is_reused_is_refused() {
        let mut t = Trees::default();
        let leaf = t.add(vec![file("x.yaml")]);
        let mut deep = leaf;
        for _ in 0..4 {
            deep = t.add(vec![dir("d", deep)]);
        }
        // d/d/d/d/x.yaml: depth 5, fine at the root.
        let ok = t.add(vec![dir("a", deep), file("p.yaml")]);
        t.check(ok).expect("depth 6");
        // The same subtree one level further down: depth 7.
        let wrapper = t.add(vec![dir("b", ok)]);
        let both = t.add(vec![dir("a", deep), dir("c", wrapper)]);
        let err = t.check(both).expect_err("too deep");
        assert!(
            matches!(&err, InvalidRecord::Path(PathError::TooLong(p)) if p == "c/b/a/d/d/d/d/x.yaml"),
            "{err:?}"
        );
    }

    #[test]
    fn an_empty_folder_is_refused() {
        let mut t = Trees::default();
        let empty = t.add(Vec::new());
        let root = t.add(vec![dir("visits", empty), file("p.yaml")]);
        let err = t.check(root).expect_err("empty folder");
        assert!(
            matches!(&err, InvalidRecord::EmptyFolder { folder } if folder == "visits"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "folder \"visits\" is empty; a record's folders hold files"
        );
        let err = t.check(empty).expect_err("empty");
        assert!(matches!(err, InvalidRecord::Empty), "{err:?}");
    }
}
