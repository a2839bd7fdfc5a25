//! Three-way merge of a record's file set.

use std::collections::BTreeMap;

use serde_json::Value;

use super::value::merge_values;
use super::yaml::{is_yaml_path, parse_yaml, to_yaml};

/// A record's files: relative path to UTF-8 content.
pub type Files = BTreeMap<String, String>;

/// A conflict inside one file (or on the whole file, with `path` `""`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileConflict {
    /// Relative path of the file.
    pub file: String,
    /// JSON pointer of the conflicting field; `""` is the whole document,
    /// or the whole file when the values are its raw contents.
    pub path: String,
    /// The common ancestor's value (`None`: absent).
    pub base: Option<Value>,
    /// Our (the satellite's) value (`None`: deleted or absent).
    pub ours: Option<Value>,
    /// Their (central's) value, the one kept in the merged files.
    pub theirs: Option<Value>,
}

/// The outcome of [`merge_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesMerge {
    /// The merged file set.
    pub files: Files,
    /// The true conflicts, by file path then document order; each resolved
    /// to theirs.
    pub conflicts: Vec<FileConflict>,
    /// The YAML files whose result came from a field-level merge (written
    /// with [`to_yaml`], or deleted when the merged document is absent), in
    /// path order.
    pub merged_files: Vec<String>,
}

/// Three-way merges a record's file set.
///
/// For each path (sorted): the raw contents (`None`: absent) go through the
/// shortcut rules first (`ours == theirs` gives that, `base == ours` gives
/// theirs, `base == theirs` gives ours). Otherwise a YAML file whose present
/// sides all parse is merged with [`merge_values`]; any other file is a
/// whole-file conflict (path `""`, contents as `Value::String`) that keeps
/// theirs (absent if theirs is).
#[must_use]
pub fn merge_files(base: &Files, ours: &Files, theirs: &Files) -> FilesMerge {
    let mut paths: Vec<&String> = base
        .keys()
        .chain(ours.keys())
        .chain(theirs.keys())
        .collect();
    paths.sort();
    paths.dedup();

    let mut out = FilesMerge {
        files: Files::new(),
        conflicts: Vec::new(),
        merged_files: Vec::new(),
    };
    for file in paths {
        let (b, o, t) = (base.get(file), ours.get(file), theirs.get(file));
        let resolved = if o == t || b == o {
            t.cloned()
        } else if b == t {
            o.cloned()
        } else if let Some((pb, po, pt)) = parse_all(file, b, o, t) {
            let merge = merge_values(pb.as_ref(), po.as_ref(), pt.as_ref());
            out.merged_files.push(file.clone());
            out.conflicts
                .extend(merge.conflicts.into_iter().map(|c| FileConflict {
                    file: file.clone(),
                    path: c.path,
                    base: c.base,
                    ours: c.ours,
                    theirs: c.theirs,
                }));
            // Keep a side's own text (comments, layout) when the merged
            // document is exactly that side's.
            match merge.merged {
                None => None,
                Some(doc) if Some(&doc) == pt.as_ref() => t.cloned(),
                Some(doc) if Some(&doc) == po.as_ref() => o.cloned(),
                Some(doc) => Some(to_yaml(&doc)),
            }
        } else {
            let text = |s: Option<&String>| s.map(|s| Value::String(s.clone()));
            out.conflicts.push(FileConflict {
                file: file.clone(),
                path: String::new(),
                base: text(b),
                ours: text(o),
                theirs: text(t),
            });
            t.cloned()
        };
        if let Some(content) = resolved {
            out.files.insert(file.clone(), content);
        }
    }
    out
}

/// The parsed documents of a YAML file's three sides (`None`: absent);
/// `None` when the file is not YAML or a present side does not parse.
type Parsed = (Option<Value>, Option<Value>, Option<Value>);

fn parse_all(
    file: &str,
    b: Option<&String>,
    o: Option<&String>,
    t: Option<&String>,
) -> Option<Parsed> {
    if !is_yaml_path(file) {
        return None;
    }
    let parse = |s: Option<&String>| match s {
        Some(text) => parse_yaml(text).ok().map(Some),
        None => Some(None),
    };
    Some((parse(b)?, parse(o)?, parse(t)?))
}
