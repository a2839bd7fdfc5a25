//! Property tests of merging, YAML round trips and merge patches.

use proptest::prelude::*;
use serde_json::Value;

use super::super::diff::diff_values;
use super::super::files::{Files, merge_files};
use super::super::patch::{apply_merge_patch, stale_patch_conflicts, touched_paths};
use super::super::pointer;
use super::super::value::{ValueConflict, ValueMerge, merge_values};
use super::super::yaml::{parse_yaml, to_yaml};
use super::strategies::{
    anywhere, apply_ops, key, merge_patch, object, ops, three_versions, value, yaml_value,
};

/// Order-sensitive rendering (`Value`'s `==` ignores key order).
fn render(m: &ValueMerge) -> String {
    format!("{m:?}")
}

/// Checks that every change a side made relative to `base` survives the
/// merge: for each leaf path where `side` differs from `base` (per
/// `diff_values`), the merged document holds the side's value there, or the
/// side's appended array items, or (only when `covered_by_conflicts`) a
/// conflict at that path or an ancestor records the side's value.
fn check_kept(
    base: Option<&Value>,
    side: Option<&Value>,
    merge: &ValueMerge,
    side_of: fn(&ValueConflict) -> Option<&Value>,
    covered_by_conflicts: bool,
) -> Result<(), String> {
    diff_values(base, side).iter().try_for_each(|d| {
        kept(
            &d.path,
            d.a.as_ref(),
            d.b.as_ref(),
            merge,
            side_of,
            covered_by_conflicts,
        )
    })
}

fn kept(
    path: &str,
    base: Option<&Value>,
    side: Option<&Value>,
    merge: &ValueMerge,
    side_of: fn(&ValueConflict) -> Option<&Value>,
    covered_by_conflicts: bool,
) -> Result<(), String> {
    if covered_by_conflicts
        && let Some(c) = merge
            .conflicts
            .iter()
            .find(|c| pointer::is_ancestor_or_self(&c.path, path))
    {
        let held = pointer::get_opt(side_of(c), &path[c.path.len()..]);
        return if held == side {
            Ok(())
        } else {
            Err(format!(
                "conflict at {} does not hold the value {side:?} of {path}",
                c.path
            ))
        };
    }
    let merged = pointer::get_opt(merge.merged.as_ref(), path);
    if merged == side {
        return Ok(());
    }
    match (side, merged) {
        // An object the side created or replaced: each of its fields counts.
        (Some(Value::Object(s)), Some(Value::Object(_))) => {
            let b = base.and_then(Value::as_object);
            for (k, sv) in s {
                let bv = b.and_then(|b| b.get(k));
                if bv != Some(sv) {
                    kept(
                        &pointer::join(path, k),
                        bv,
                        Some(sv),
                        merge,
                        side_of,
                        covered_by_conflicts,
                    )?;
                }
            }
            for (k, bv) in b
                .into_iter()
                .flatten()
                .filter(|(k, _)| !s.contains_key(k.as_str()))
            {
                kept(
                    &pointer::join(path, k),
                    Some(bv),
                    None,
                    merge,
                    side_of,
                    covered_by_conflicts,
                )?;
            }
            Ok(())
        }
        // Items the side appended must be in the merged array, after base's.
        (Some(Value::Array(s)), Some(Value::Array(m))) => {
            let b = match base {
                Some(Value::Array(b)) => b.as_slice(),
                _ => &[],
            };
            let appended = &s[b.len().min(s.len())..];
            let tail = &m[b.len().min(m.len())..];
            let contained =
                appended.is_empty() || tail.windows(appended.len()).any(|w| w == appended);
            if s.starts_with(b) && m.len() >= b.len() && contained {
                Ok(())
            } else {
                Err(format!(
                    "array change at {path} lost: side {side:?}, merged {merged:?}"
                ))
            }
        }
        _ => Err(format!(
            "change at {path} lost: side {side:?}, merged {merged:?}"
        )),
    }
}

/// The first reference token of a pointer, if any.
fn top_key(path: &str) -> Option<String> {
    pointer::parse(path).and_then(|t| t.into_iter().next())
}

/// Collects the pointers of the object values in a patch (the root too),
/// which the patch turns into objects where they are not.
fn object_members(patch: &Value, path: &str, out: &mut Vec<String>) {
    if let Value::Object(map) = patch {
        out.push(path.to_owned());
        for (k, v) in map {
            object_members(v, &pointer::join(path, k), out);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (a) An unchanged side takes the other side's version, conflict-free.
    #[test]
    fn unchanged_side_takes_the_other(base in prop::option::weighted(0.9, value()), edits in ops(), x in value(), fresh in any::<bool>()) {
        let x = match (&base, fresh) {
            (Some(b), false) => apply_ops(b, &edits, &anywhere),
            _ => x,
        };
        for m in [merge_values(base.as_ref(), base.as_ref(), Some(&x)), merge_values(base.as_ref(), Some(&x), base.as_ref())] {
            prop_assert!(m.conflicts.is_empty());
            prop_assert_eq!(m.merged.as_ref(), Some(&x));
        }
        let m = merge_values(base.as_ref(), base.as_ref(), None);
        prop_assert!(m.conflicts.is_empty() && m.merged.is_none());
    }

    /// (b) Edits of disjoint top-level keys merge without conflicts, in
    /// either order, to the same document.
    #[test]
    fn disjoint_edits_commute(base in object(), ours_keys in prop::collection::vec(key(), 0..5), o in ops(), t in ops()) {
        let mine = |p: &str| top_key(p).is_some_and(|k| ours_keys.contains(&k));
        let yours = |p: &str| top_key(p).is_some_and(|k| !ours_keys.contains(&k));
        let ours = apply_ops(&base, &o, &mine);
        let theirs = apply_ops(&base, &t, &yours);
        let one = merge_values(Some(&base), Some(&ours), Some(&theirs));
        let other = merge_values(Some(&base), Some(&theirs), Some(&ours));
        prop_assert!(one.conflicts.is_empty(), "{:?}", one.conflicts);
        prop_assert!(other.conflicts.is_empty(), "{:?}", other.conflicts);
        prop_assert_eq!(one.merged, other.merged);
    }

    /// (c) Nothing is lost: ours' changes are merged or recorded in a
    /// conflict; theirs' changes are always in the merged document.
    #[test]
    fn nothing_is_lost((base, ours, theirs) in three_versions()) {
        let m = merge_values(base.as_ref(), ours.as_ref(), theirs.as_ref());
        let ours_kept = check_kept(base.as_ref(), ours.as_ref(), &m, |c| c.ours.as_ref(), true);
        prop_assert!(ours_kept.is_ok(), "ours: {:?}\n{:?}", ours_kept, m);
        let theirs_kept = check_kept(base.as_ref(), theirs.as_ref(), &m, |c| c.theirs.as_ref(), false);
        prop_assert!(theirs_kept.is_ok(), "theirs: {:?}\n{:?}", theirs_kept, m);
        // Every conflict records the three sides' values at its path.
        for c in &m.conflicts {
            prop_assert_eq!(c.base.as_ref(), pointer::get_opt(base.as_ref(), &c.path));
            prop_assert_eq!(c.ours.as_ref(), pointer::get_opt(ours.as_ref(), &c.path));
            prop_assert_eq!(c.theirs.as_ref(), pointer::get_opt(theirs.as_ref(), &c.path));
            prop_assert_ne!(c.ours.as_ref(), c.theirs.as_ref());
        }
    }

    /// (d) Merging is deterministic, key order included, and the file-set
    /// merge agrees with the document merge.
    #[test]
    fn merge_is_deterministic((base, ours, theirs) in three_versions()) {
        let m = merge_values(base.as_ref(), ours.as_ref(), theirs.as_ref());
        prop_assert_eq!(render(&m), render(&merge_values(base.as_ref(), ours.as_ref(), theirs.as_ref())));

        let as_files = |v: &Option<Value>| -> Files {
            v.iter().map(|v| ("r.yaml".to_owned(), to_yaml(v))).collect()
        };
        let (fb, fo, ft) = (as_files(&base), as_files(&ours), as_files(&theirs));
        let fm = merge_files(&fb, &fo, &ft);
        prop_assert_eq!(&fm, &merge_files(&fb, &fo, &ft));
        let merged_doc = fm.files.get("r.yaml").map(|t| parse_yaml(t));
        prop_assert_eq!(merged_doc, m.merged.clone().map(Ok));
        prop_assert_eq!(fm.conflicts.len(), if fo == ft || fb == fo || fb == ft { 0 } else { m.conflicts.len() });
    }

    /// (e) `to_yaml` then `parse_yaml` gives back the value, key order included.
    #[test]
    fn yaml_round_trip(v in yaml_value()) {
        let text = to_yaml(&v);
        let back = parse_yaml(&text);
        prop_assert_eq!(back.as_ref().map(Value::to_string), Ok(v.to_string()), "text:\n{}", text);
    }

    /// (f) After applying a patch, every touched path holds the patch's
    /// value (or is absent for null); patches are idempotent.
    #[test]
    fn patch_sets_touched_paths(target in value(), patch in merge_patch()) {
        let out = apply_merge_patch(&target, &patch);
        for p in touched_paths(&patch) {
            if p.is_empty() {
                prop_assert_eq!(&out, &patch);
                continue;
            }
            let want = pointer::get(&patch, &p).filter(|v| !v.is_null());
            prop_assert_eq!(pointer::get(&out, &p), want, "path {}", p);
        }
        prop_assert_eq!(apply_merge_patch(&out, &patch), out);
    }

}

proptest! {
    // Only about one case in nine has a change since `expected` and no
    // conflict, so this property gets more cases.
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// (g) No stale-patch conflicts: patching `current` agrees with
    /// patching `expected` at the touched paths, keeps every change made
    /// since `expected`, and equals the three-way merge of the two. (When
    /// there are conflicts, each is a real change on a touched path.)
    #[test]
    fn safe_stale_patch_loses_nothing(expected in value(), edits in ops(), patch in merge_patch()) {
        let current = apply_ops(&expected, &edits, &anywhere);
        let reported = stale_patch_conflicts(Some(&expected), Some(&current), &patch);
        if !reported.is_empty() {
            // Each report is a real change at a path the patch writes (a
            // touched path or an object member) or at an ancestor of one.
            let mut written = touched_paths(&patch);
            object_members(&patch, "", &mut written);
            for d in &reported {
                prop_assert_ne!(&d.a, &d.b);
                prop_assert_eq!(d.a.as_ref(), pointer::get(&expected, &d.path));
                prop_assert_eq!(d.b.as_ref(), pointer::get(&current, &d.path));
                let near = written.iter().any(|t| pointer::is_ancestor_or_self(&d.path, t));
                prop_assert!(near, "{} is not on a touched path", d.path);
            }
            return Ok(());
        }
        let from_expected = apply_merge_patch(&expected, &patch);
        let from_current = apply_merge_patch(&current, &patch);
        for p in touched_paths(&patch) {
            prop_assert_eq!(pointer::get(&from_current, &p), pointer::get(&from_expected, &p));
        }
        for d in diff_values(Some(&expected), Some(&current)) {
            prop_assert_eq!(pointer::get(&from_current, &d.path), d.b.as_ref(), "change at {} lost", d.path);
        }
        let merged = merge_values(Some(&expected), Some(&from_expected), Some(&current));
        prop_assert!(merged.conflicts.is_empty(), "{:?}", merged.conflicts);
        prop_assert_eq!(merged.merged, Some(from_current));
    }

    /// A stale patch whose touched fields changed is always reported.
    #[test]
    fn changed_touched_field_is_reported(expected in value(), edits in ops(), patch in merge_patch()) {
        let current = apply_ops(&expected, &edits, &anywhere);
        let reported = stale_patch_conflicts(Some(&expected), Some(&current), &patch);
        for p in touched_paths(&patch) {
            if pointer::get(&expected, &p) != pointer::get(&current, &p) {
                prop_assert!(reported.iter().any(|d| pointer::is_ancestor_or_self(&d.path, &p)), "{} not reported", p);
            }
        }
    }
}
