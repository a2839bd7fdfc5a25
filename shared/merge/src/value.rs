//! Three-way merge of one document.
//!
//! "Ours" is the satellite's side, "theirs" is central's and "base" their
//! common ancestor; `None` means absent. The rules, in order:
//!
//! 1. `ours == theirs` gives that (in theirs' key order); `base == ours` gives theirs;
//!    `base == theirs` gives ours.
//! 2. Two objects merge key by key (a base that is absent or not an object
//!    counts as `{}`). Result key order: theirs' keys in theirs' order, then
//!    keys only in ours in ours' order.
//! 3. Two arrays (a base that is absent or not an array counts as `[]`):
//!    appends on both sides are kept (central's new items first; identical
//!    appends once; when one side's new items start the other's, the longer
//!    run); equal lengths merge element by element; in-place edits on one
//!    side merge element by element with appends on the other. Anything else
//!    is a conflict on the whole array.
//! 4. Anything else is a conflict.
//!
//! A conflict resolves to theirs (central wins) and is reported at the
//! deepest path where the sides disagree, with all three values.

use serde_json::{Map, Value};

use super::pointer;

/// A field that both sides changed in different ways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueConflict {
    /// JSON pointer of the field within the document.
    pub path: String,
    /// The common ancestor's value (`None`: absent).
    pub base: Option<Value>,
    /// Our (the satellite's) value (`None`: deleted or absent).
    pub ours: Option<Value>,
    /// Their (central's) value, the one kept in the merged document.
    pub theirs: Option<Value>,
}

/// The outcome of [`merge_values`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueMerge {
    /// The merged document; `None` when it ends up absent (deleted).
    pub merged: Option<Value>,
    /// The true conflicts, in document order; each resolved to theirs.
    pub conflicts: Vec<ValueConflict>,
}

/// Three-way merges one document; see the module documentation for the
/// rules. Deterministic: the same inputs always give the same output, key
/// order included.
#[must_use]
pub fn merge_values(
    base: Option<&Value>,
    ours: Option<&Value>,
    theirs: Option<&Value>,
) -> ValueMerge {
    let mut conflicts = Vec::new();
    let merged = merge_optional("", base, ours, theirs, &mut conflicts);
    ValueMerge { merged, conflicts }
}

/// Merges a field that may be absent on any side.
fn merge_optional(
    path: &str,
    base: Option<&Value>,
    ours: Option<&Value>,
    theirs: Option<&Value>,
    conflicts: &mut Vec<ValueConflict>,
) -> Option<Value> {
    if ours == theirs || base == ours {
        return theirs.cloned();
    }
    if base == theirs {
        return ours.cloned();
    }
    match (ours, theirs) {
        (Some(o), Some(t)) => Some(merge_present(path, base, o, t, conflicts)),
        // Deleted on one side, changed on the other.
        _ => conflict(path, base, ours, theirs, conflicts),
    }
}

/// Merges a field that is present on both sides.
fn merge_present(
    path: &str,
    base: Option<&Value>,
    ours: &Value,
    theirs: &Value,
    conflicts: &mut Vec<ValueConflict>,
) -> Value {
    if ours == theirs || base == Some(ours) {
        return theirs.clone();
    }
    if base == Some(theirs) {
        return ours.clone();
    }
    match (ours, theirs) {
        (Value::Object(o), Value::Object(t)) => {
            let b = base.and_then(Value::as_object);
            Value::Object(merge_objects(path, b, o, t, conflicts))
        }
        (Value::Array(o), Value::Array(t)) => {
            let b = match base {
                Some(Value::Array(b)) => b.as_slice(),
                _ => &[],
            };
            match merge_arrays(path, b, o, t, conflicts) {
                Some(items) => Value::Array(items),
                None => conflict_present(path, base, ours, theirs, conflicts),
            }
        }
        _ => conflict_present(path, base, ours, theirs, conflicts),
    }
}

/// Merges two objects key by key; `base` `None` counts as `{}`.
fn merge_objects(
    path: &str,
    base: Option<&Map<String, Value>>,
    ours: &Map<String, Value>,
    theirs: &Map<String, Value>,
    conflicts: &mut Vec<ValueConflict>,
) -> Map<String, Value> {
    let keys = theirs
        .keys()
        .chain(ours.keys().filter(|k| !theirs.contains_key(k.as_str())));
    let mut merged = Map::new();
    for key in keys {
        let b = base.and_then(|b| b.get(key));
        let child = pointer::join(path, key);
        if let Some(v) = merge_optional(&child, b, ours.get(key), theirs.get(key), conflicts) {
            merged.insert(key.clone(), v);
        }
    }
    merged
}

/// Merges two arrays against base `b`; `None` when the sides' changes
/// cannot be combined (a conflict on the whole array).
fn merge_arrays(
    path: &str,
    b: &[Value],
    ours: &[Value],
    theirs: &[Value],
    conflicts: &mut Vec<ValueConflict>,
) -> Option<Vec<Value>> {
    // The items each side appended to `b`, when it only appended.
    let ours_new = ours.strip_prefix(b);
    let theirs_new = theirs.strip_prefix(b);
    if let (Some(ours_new), Some(theirs_new)) = (ours_new, theirs_new) {
        let mut merged = b.to_vec();
        if ours_new.starts_with(theirs_new) {
            // Identical appends, or theirs' new items start ours'.
            merged.extend_from_slice(ours_new);
        } else if theirs_new.starts_with(ours_new) {
            merged.extend_from_slice(theirs_new);
        } else {
            merged.extend_from_slice(theirs_new);
            merged.extend_from_slice(ours_new);
        }
        return Some(merged);
    }
    // Element-wise over `b`'s length, then one side's appended items.
    let appended = match (ours_new, theirs_new) {
        _ if ours.len() == b.len() && theirs.len() == b.len() => &[][..],
        (Some(ours_new), None) if theirs.len() == b.len() => ours_new,
        (None, Some(theirs_new)) if ours.len() == b.len() => theirs_new,
        _ => return None,
    };
    let mut merged: Vec<Value> = b
        .iter()
        .zip(ours)
        .zip(theirs)
        .enumerate()
        .map(|(i, ((bv, ov), tv))| {
            merge_present(&pointer::join_index(path, i), Some(bv), ov, tv, conflicts)
        })
        .collect();
    merged.extend_from_slice(appended);
    Some(merged)
}

/// Records a conflict where at least one side is absent; theirs wins.
fn conflict(
    path: &str,
    base: Option<&Value>,
    ours: Option<&Value>,
    theirs: Option<&Value>,
    conflicts: &mut Vec<ValueConflict>,
) -> Option<Value> {
    conflicts.push(ValueConflict {
        path: path.to_owned(),
        base: base.cloned(),
        ours: ours.cloned(),
        theirs: theirs.cloned(),
    });
    theirs.cloned()
}

/// Records a conflict where both sides are present; theirs wins.
fn conflict_present(
    path: &str,
    base: Option<&Value>,
    ours: &Value,
    theirs: &Value,
    conflicts: &mut Vec<ValueConflict>,
) -> Value {
    conflicts.push(ValueConflict {
        path: path.to_owned(),
        base: base.cloned(),
        ours: Some(ours.clone()),
        theirs: Some(theirs.clone()),
    });
    theirs.clone()
}
