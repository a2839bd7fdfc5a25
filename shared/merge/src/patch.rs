//! RFC 7396 JSON Merge Patch, and the stale-version check of the HTTP API.

use serde_json::{Map, Value};

use super::diff::ValueDiff;
use super::pointer;

/// Applies `patch` to `target` exactly as RFC 7396 section 2 says: a
/// non-object patch replaces the target; an object patch turns a non-object
/// target into `{}`, removes members whose patch value is `null` and merges
/// the others recursively (creating objects as needed). Existing members
/// keep their position; new ones are appended in the patch's order.
#[must_use]
pub fn apply_merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(patch) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    for (key, value) in patch {
        if value.is_null() {
            out.shift_remove(key);
        } else {
            let merged = apply_merge_patch(out.get(key).unwrap_or(&Value::Null), value);
            out.insert(key.clone(), merged);
        }
    }
    Value::Object(out)
}

/// JSON pointers of the fields `patch` sets or removes, in patch order:
/// `{"a":{"b":1,"c":null}}` gives `["/a/b", "/a/c"]`; arrays are replaced
/// whole (`{"a":[1]}` gives `["/a"]`); a non-object patch gives `[""]` and
/// `{}` gives `[]`. (An empty object member such as `{"a":{}}` sets no field,
/// so it is not listed, although it turns a non-object `/a` into `{}`;
/// [`stale_patch_conflicts`] accounts for that.)
#[must_use]
pub fn touched_paths(patch: &Value) -> Vec<String> {
    let mut out = Vec::new();
    match patch {
        Value::Object(map) => collect_targets("", map, &mut out, &mut Vec::new()),
        _ => out.push(String::new()),
    }
    out
}

/// Collects the leaf paths of an object patch at `path` into `leaves`, and
/// the paths of its empty object members into `empty_objects`.
fn collect_targets(
    path: &str,
    patch: &Map<String, Value>,
    leaves: &mut Vec<String>,
    empty_objects: &mut Vec<String>,
) {
    for (key, value) in patch {
        let child = pointer::join(path, key);
        match value {
            Value::Object(map) if map.is_empty() => empty_objects.push(child),
            Value::Object(map) => collect_targets(&child, map, leaves, empty_objects),
            _ => leaves.push(child),
        }
    }
}

/// The check behind "a PATCH sent with a stale version still succeeds when
/// the fields it touches did not change since that version".
///
/// `expected` is the version the client saw, `current` the one now stored.
/// Returns one [`ValueDiff`] (`a` from `expected`, `b` from `current`) per
/// change since `expected` that applying `patch` to `current` would
/// overwrite:
/// - a touched path whose value differs (a change anywhere below it counts);
/// - a change of an ancestor of a touched path that is not an object on
///   both sides (replaced by a scalar or array, deleted, created), since the
///   patch would replace that value by an object; it is reported at the
///   touched path when the values there differ, else at the ancestor.
///
/// An empty result means applying the patch to `current` loses no change
/// made since `expected`. Entries are in patch order, without duplicates.
#[must_use]
pub fn stale_patch_conflicts(
    expected: Option<&Value>,
    current: Option<&Value>,
    patch: &Value,
) -> Vec<ValueDiff> {
    let mut leaves = Vec::new();
    let mut objects = Vec::new();
    match patch {
        // The root patch object itself makes the root an object.
        Value::Object(map) => {
            objects.push(String::new());
            collect_targets("", map, &mut leaves, &mut objects);
        }
        _ => leaves.push(String::new()),
    }
    let mut out: Vec<ValueDiff> = Vec::new();
    let targets = leaves
        .iter()
        .map(|p| (p, true))
        .chain(objects.iter().map(|p| (p, false)));
    for (path, is_leaf) in targets {
        if let Some(diff) = stale_change(expected, current, path, is_leaf)
            && !out.iter().any(|d| d.path == diff.path)
        {
            out.push(diff);
        }
    }
    out
}

/// The change since `expected` that patching `path` would overwrite, if any.
/// A leaf is overwritten whole; an object target (an ancestor, or an empty
/// object member) only when it is not an object on both sides.
fn stale_change(
    expected: Option<&Value>,
    current: Option<&Value>,
    path: &str,
    is_leaf: bool,
) -> Option<ValueDiff> {
    let at = |p: &str| (pointer::get_opt(expected, p), pointer::get_opt(current, p));
    let diff = |p: &str, (a, b): (Option<&Value>, Option<&Value>)| ValueDiff {
        path: p.to_owned(),
        a: a.cloned(),
        b: b.cloned(),
    };
    let own = at(path);
    let mut object_paths = pointer::ancestors(path);
    if !is_leaf {
        object_paths.push(path);
    }
    for ancestor in object_paths {
        let (e, c) = at(ancestor);
        if e == c {
            // Nothing changed below here.
            return None;
        }
        let both_objects = matches!((e, c), (Some(Value::Object(_)), Some(Value::Object(_))));
        if !both_objects {
            return Some(if own.0 != own.1 {
                diff(path, own)
            } else {
                diff(ancestor, (e, c))
            });
        }
    }
    (is_leaf && own.0 != own.1).then(|| diff(path, own))
}
