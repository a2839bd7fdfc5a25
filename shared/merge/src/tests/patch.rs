//! Unit tests of JSON Merge Patch and the stale-patch check.

use serde_json::{Value, json};

use super::super::diff::ValueDiff;
use super::super::patch::{apply_merge_patch, stale_patch_conflicts, touched_paths};

#[test]
fn rfc7396_appendix_a_examples() {
    let cases = [
        (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
        (
            json!({"a": "b"}),
            json!({"b": "c"}),
            json!({"a": "b", "b": "c"}),
        ),
        (json!({"a": "b"}), json!({"a": null}), json!({})),
        (
            json!({"a": "b", "b": "c"}),
            json!({"a": null}),
            json!({"b": "c"}),
        ),
        (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
        (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
        (
            json!({"a": {"b": "c"}}),
            json!({"a": {"b": "d", "c": null}}),
            json!({"a": {"b": "d"}}),
        ),
        (
            json!({"a": [{"b": "c"}]}),
            json!({"a": [1]}),
            json!({"a": [1]}),
        ),
        (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
        (json!({"a": "b"}), json!(["c"]), json!(["c"])),
        (json!({"a": "foo"}), json!(null), json!(null)),
        (json!({"a": "foo"}), json!("bar"), json!("bar")),
        (
            json!({"e": null}),
            json!({"a": 1}),
            json!({"e": null, "a": 1}),
        ),
        (
            json!([1, 2]),
            json!({"a": "b", "c": null}),
            json!({"a": "b"}),
        ),
        (
            json!({}),
            json!({"a": {"bb": {"ccc": null}}}),
            json!({"a": {"bb": {}}}),
        ),
    ];
    for (target, patch, want) in cases {
        assert_eq!(
            apply_merge_patch(&target, &patch),
            want,
            "{target} + {patch}"
        );
    }
}

#[test]
fn patch_keeps_member_positions() {
    let out = apply_merge_patch(
        &json!({"a": 1, "b": 2, "c": 3}),
        &json!({"b": null, "a": 9, "d": 4}),
    );
    assert_eq!(out.to_string(), r#"{"a":9,"c":3,"d":4}"#);
}

#[test]
fn touched_paths_examples() {
    assert_eq!(
        touched_paths(&json!({"a": {"b": 1, "c": null}})),
        vec!["/a/b", "/a/c"]
    );
    assert_eq!(touched_paths(&json!({"a": [1]})), vec!["/a"]);
    assert_eq!(touched_paths(&json!(5)), vec![""]);
    assert_eq!(touched_paths(&json!(null)), vec![""]);
    assert!(touched_paths(&json!({})).is_empty());
    assert!(touched_paths(&json!({"a": {}})).is_empty());
    assert_eq!(touched_paths(&json!({"x/y": {"~": 1}})), vec!["/x~1y/~0"]);
}

fn diff(path: &str, a: Option<Value>, b: Option<Value>) -> ValueDiff {
    ValueDiff {
        path: path.into(),
        a,
        b,
    }
}

#[test]
fn stale_patch_on_untouched_fields_is_safe() {
    let expected = json!({"name": "Ann", "vitals": {"bp": "120/80", "pulse": 60}});
    let current = json!({"name": "Ann Lee", "vitals": {"bp": "120/80", "pulse": 61}});
    let patch = json!({"vitals": {"bp": "130/85"}});
    assert!(stale_patch_conflicts(Some(&expected), Some(&current), &patch).is_empty());
}

#[test]
fn stale_patch_on_changed_fields_conflicts() {
    let expected = json!({"vitals": {"bp": "120/80"}, "tags": [1]});
    let current = json!({"vitals": {"bp": "125/80"}, "tags": [1, 2]});
    let patch = json!({"vitals": {"bp": "130/85"}, "tags": [3], "new": null});
    assert_eq!(
        stale_patch_conflicts(Some(&expected), Some(&current), &patch),
        vec![
            diff("/vitals/bp", Some(json!("120/80")), Some(json!("125/80"))),
            diff("/tags", Some(json!([1])), Some(json!([1, 2]))),
        ]
    );
    // A change below a touched path counts.
    let patch = json!({"vitals": null});
    assert_eq!(
        stale_patch_conflicts(Some(&expected), Some(&current), &patch).len(),
        1
    );
}

#[test]
fn stale_patch_ancestor_changes_conflict() {
    let patch = json!({"a": {"b": 1}});
    // /a deleted since: reported at the touched path, whose value differs.
    let e = json!({"a": {"b": 0, "c": 1}});
    assert_eq!(
        stale_patch_conflicts(Some(&e), Some(&json!({})), &patch),
        vec![diff("/a/b", Some(json!(0)), None)]
    );
    // /a replaced by a scalar while /a/b was absent anyway: reported at /a.
    let e = json!({"a": {"c": 1}});
    assert_eq!(
        stale_patch_conflicts(Some(&e), Some(&json!({"a": 7})), &patch),
        vec![diff("/a", Some(json!({"c": 1})), Some(json!(7)))]
    );
    // /a changed from one scalar to another: the patch would clobber it.
    assert_eq!(
        stale_patch_conflicts(Some(&json!({"a": 5})), Some(&json!({"a": 7})), &patch),
        vec![diff("/a", Some(json!(5)), Some(json!(7)))]
    );
    // Unchanged scalar ancestor: safe.
    assert!(
        stale_patch_conflicts(
            Some(&json!({"a": 5})),
            Some(&json!({"a": 5, "z": 1})),
            &patch
        )
        .is_empty()
    );
    // Empty object members still turn a changed scalar into {}.
    assert_eq!(
        stale_patch_conflicts(
            Some(&json!({"a": 5})),
            Some(&json!({"a": 7})),
            &json!({"a": {}})
        ),
        vec![diff("/a", Some(json!(5)), Some(json!(7)))]
    );
    // A whole-document patch conflicts with any change.
    assert_eq!(
        stale_patch_conflicts(Some(&json!(1)), Some(&json!(2)), &json!(3)).len(),
        1
    );
    assert!(stale_patch_conflicts(Some(&json!(1)), Some(&json!(1)), &json!(3)).is_empty());
    // Several touched paths under one changed ancestor give one entry.
    let got = stale_patch_conflicts(
        Some(&json!({"a": 1})),
        Some(&json!({"a": 2})),
        &json!({"a": {"x": 1, "y": 2}}),
    );
    assert_eq!(got, vec![diff("/a", Some(json!(1)), Some(json!(2)))]);
}
