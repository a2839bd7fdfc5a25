//! Unit tests of the three-way document merge rules.

use serde_json::{Value, json};

use super::super::value::{ValueConflict, ValueMerge, merge_values};

fn merge(base: Value, ours: Value, theirs: Value) -> ValueMerge {
    merge_values(Some(&base), Some(&ours), Some(&theirs))
}

fn clean(m: &ValueMerge) -> &Value {
    assert!(
        m.conflicts.is_empty(),
        "unexpected conflicts: {:?}",
        m.conflicts
    );
    m.merged
        .as_ref()
        .expect("merged document should be present")
}

/// Key order matters in these tests; `Value`'s `==` ignores it.
fn text(v: &Value) -> String {
    v.to_string()
}

fn conflict(
    path: &str,
    base: Option<Value>,
    ours: Option<Value>,
    theirs: Option<Value>,
) -> ValueConflict {
    ValueConflict {
        path: path.into(),
        base,
        ours,
        theirs,
    }
}

#[test]
fn shortcut_rules() {
    let b = json!({"a": 1});
    let x = json!({"a": 2});
    assert_eq!(
        merge(b.clone(), x.clone(), x.clone()).merged,
        Some(x.clone())
    );
    assert_eq!(
        merge(b.clone(), b.clone(), x.clone()).merged,
        Some(x.clone())
    );
    assert_eq!(
        merge(b.clone(), x.clone(), b.clone()).merged,
        Some(x.clone())
    );
    assert_eq!(merge_values(Some(&b), None, Some(&b)).merged, None);
    assert_eq!(merge_values(Some(&b), Some(&b), None).merged, None);
    assert_eq!(merge_values(None, None, Some(&x)).merged, Some(x.clone()));
    assert_eq!(
        merge_values(None, None, None),
        ValueMerge {
            merged: None,
            conflicts: vec![]
        }
    );
}

#[test]
fn different_keys_edited_on_two_sides_merge() {
    let m = merge(
        json!({"name": "Ann", "dob": "1970-01-01", "blood": "A+"}),
        json!({"name": "Ann Lee", "dob": "1970-01-01", "blood": "A+"}),
        json!({"name": "Ann", "dob": "1970-01-02", "blood": "A+"}),
    );
    assert_eq!(
        text(clean(&m)),
        text(&json!({"name": "Ann Lee", "dob": "1970-01-02", "blood": "A+"}))
    );
}

#[test]
fn both_append_different_encounters_keeps_both_central_first() {
    let m = merge(
        json!({"encounters": [{"id": 1}]}),
        json!({"encounters": [{"id": 1}, {"id": "sat"}]}),
        json!({"encounters": [{"id": 1}, {"id": "hq"}, {"id": "hq2"}]}),
    );
    assert_eq!(
        clean(&m),
        &json!({"encounters": [{"id": 1}, {"id": "hq"}, {"id": "hq2"}, {"id": "sat"}]})
    );
}

#[test]
fn both_append_the_same_item_keeps_it_once() {
    let m = merge(
        json!({"e": [1]}),
        json!({"e": [1, 2]}),
        json!({"e": [1, 2]}),
    );
    assert_eq!(clean(&m), &json!({"e": [1, 2]}));
    // ... also next to other changes, so the shortcut rule does not apply.
    let m = merge(
        json!({"e": [1], "x": 0}),
        json!({"e": [1, 2], "x": 1}),
        json!({"e": [1, 2]}),
    );
    assert_eq!(m.conflicts.len(), 1);
    assert_eq!(m.merged, Some(json!({"e": [1, 2]})));
}

#[test]
fn append_prefix_of_the_other_takes_the_longer() {
    let m = merge(json!([0]), json!([0, 1]), json!([0, 1, 2]));
    assert_eq!(clean(&m), &json!([0, 1, 2]));
    let m = merge(json!([0]), json!([0, 1, 2]), json!([0, 1]));
    assert_eq!(clean(&m), &json!([0, 1, 2]));
    // Arrays added on both sides (no base) are appends to [].
    let m = merge_values(None, Some(&json!(["o"])), Some(&json!(["t"])));
    assert_eq!(clean(&m), &json!(["t", "o"]));
}

#[test]
fn same_scalar_changed_two_ways_is_one_conflict_theirs_wins() {
    let m = merge(
        json!({"weight": 70, "h": 1}),
        json!({"weight": 72, "h": 1}),
        json!({"weight": 71, "h": 1}),
    );
    assert_eq!(m.merged, Some(json!({"weight": 71, "h": 1})));
    assert_eq!(
        m.conflicts,
        vec![conflict(
            "/weight",
            Some(json!(70)),
            Some(json!(72)),
            Some(json!(71))
        )]
    );
}

#[test]
fn delete_versus_modify() {
    let base = json!({"allergy": "nuts", "keep": 1});
    // Ours deleted, theirs modified: theirs' value stays.
    let m = merge(
        base.clone(),
        json!({"keep": 1}),
        json!({"allergy": "peanuts", "keep": 1}),
    );
    assert_eq!(m.merged, Some(json!({"allergy": "peanuts", "keep": 1})));
    assert_eq!(
        m.conflicts,
        vec![conflict(
            "/allergy",
            Some(json!("nuts")),
            None,
            Some(json!("peanuts"))
        )]
    );
    // Theirs deleted, ours modified: stays deleted, ours' value is recorded.
    let m = merge(
        base.clone(),
        json!({"allergy": "peanuts", "keep": 1}),
        json!({"keep": 1}),
    );
    assert_eq!(m.merged, Some(json!({"keep": 1})));
    assert_eq!(
        m.conflicts,
        vec![conflict(
            "/allergy",
            Some(json!("nuts")),
            Some(json!("peanuts")),
            None
        )]
    );
    // Deleted on one side, unchanged on the other: deleted.
    let m = merge(base.clone(), json!({"keep": 1}), base.clone());
    assert_eq!(clean(&m), &json!({"keep": 1}));
    let m = merge(
        json!({"a": 1, "b": 1}),
        json!({"a": 2, "b": 1}),
        json!({"a": 1}),
    );
    assert_eq!(clean(&m), &json!({"a": 2}));
}

#[test]
fn nested_objects_added_on_both_sides_with_disjoint_keys() {
    let m = merge(
        json!({}),
        json!({"vitals": {"bp": "120/80"}}),
        json!({"vitals": {"pulse": 60}}),
    );
    assert_eq!(
        text(clean(&m)),
        text(&json!({"vitals": {"pulse": 60, "bp": "120/80"}}))
    );
    let m = merge(json!({}), json!({"v": {"x": 1}}), json!({"v": {"x": 2}}));
    assert_eq!(
        m.conflicts,
        vec![conflict("/v/x", None, Some(json!(1)), Some(json!(2)))]
    );
}

#[test]
fn key_order_is_theirs_then_ours_only() {
    let m = merge(
        json!({"a": 1, "b": 1, "c": 1}),
        json!({"z": 0, "c": 1, "a": 1, "b": 2, "y": 0}),
        json!({"c": 1, "x": 0, "b": 1, "a": 1}),
    );
    assert_eq!(text(clean(&m)), r#"{"c":1,"x":0,"b":2,"a":1,"z":0,"y":0}"#);
    let again = merge(
        json!({"a": 1, "b": 1, "c": 1}),
        json!({"z": 0, "c": 1, "a": 1, "b": 2, "y": 0}),
        json!({"c": 1, "x": 0, "b": 1, "a": 1}),
    );
    assert_eq!(text(clean(&again)), text(clean(&m)));
}

#[test]
fn element_edited_in_place_while_other_side_appends() {
    let base = json!({"meds": [{"name": "a", "dose": 1}, {"name": "b", "dose": 1}]});
    let edited = json!({"meds": [{"name": "a", "dose": 2}, {"name": "b", "dose": 1}]});
    let appended =
        json!({"meds": [{"name": "a", "dose": 1}, {"name": "b", "dose": 1}, {"name": "c"}]});
    let want = json!({"meds": [{"name": "a", "dose": 2}, {"name": "b", "dose": 1}, {"name": "c"}]});
    assert_eq!(
        clean(&merge(base.clone(), edited.clone(), appended.clone())),
        &want
    );
    assert_eq!(clean(&merge(base, appended, edited)), &want);
}

#[test]
fn conflicts_are_reported_at_the_deepest_path() {
    let m = merge(
        json!({"allergies": [{"name": "nuts", "severity": "low"}]}),
        json!({"allergies": [{"name": "nuts", "severity": "high"}]}),
        json!({"allergies": [{"name": "nuts", "severity": "medium"}]}),
    );
    assert_eq!(m.conflicts.len(), 1);
    assert_eq!(m.conflicts[0].path, "/allergies/0/severity");
    assert_eq!(
        m.merged,
        Some(json!({"allergies": [{"name": "nuts", "severity": "medium"}]}))
    );
    // Equal-length arrays merge element-wise.
    let m = merge(json!([1, 2, 3]), json!([9, 2, 3]), json!([1, 2, 8]));
    assert_eq!(clean(&m), &json!([9, 2, 8]));
    // Keys with "/" and "~" are escaped.
    let m = merge(
        json!({"a/b": {"~": 0}}),
        json!({"a/b": {"~": 1}}),
        json!({"a/b": {"~": 2}}),
    );
    assert_eq!(m.conflicts[0].path, "/a~1b/~0");
}

#[test]
fn incompatible_array_changes_conflict_on_the_whole_array() {
    // Ours deleted an item, theirs appended.
    let m = merge(
        json!({"l": [1, 2]}),
        json!({"l": [2]}),
        json!({"l": [1, 2, 3]}),
    );
    assert_eq!(m.merged, Some(json!({"l": [1, 2, 3]})));
    assert_eq!(
        m.conflicts,
        vec![conflict(
            "/l",
            Some(json!([1, 2])),
            Some(json!([2])),
            Some(json!([1, 2, 3]))
        )]
    );
    // Deleted versus edited in place.
    let m = merge(json!([1, 2]), json!([2]), json!([1, 3]));
    assert_eq!(
        m.conflicts,
        vec![conflict(
            "",
            Some(json!([1, 2])),
            Some(json!([2])),
            Some(json!([1, 3]))
        )]
    );
    assert_eq!(m.merged, Some(json!([1, 3])));
    // A reorder keeps the length, so it merges element-wise like in-place edits.
    let m = merge(json!([1, 2]), json!([2, 1]), json!([1, 3]));
    assert_eq!(
        m.conflicts,
        vec![conflict(
            "/1",
            Some(json!(2)),
            Some(json!(1)),
            Some(json!(3))
        )]
    );
    assert_eq!(m.merged, Some(json!([2, 3])));
}

#[test]
fn type_changes_and_whole_document_conflicts() {
    let m = merge(json!({"a": {"x": 1}}), json!({"a": [1]}), json!({"a": "s"}));
    assert_eq!(
        m.conflicts,
        vec![conflict(
            "/a",
            Some(json!({"x": 1})),
            Some(json!([1])),
            Some(json!("s"))
        )]
    );
    // Ours edited inside an object that theirs deleted.
    let m = merge(json!({"a": {"x": 1}}), json!({"a": {"x": 2}}), json!({}));
    assert_eq!(m.merged, Some(json!({})));
    assert_eq!(m.conflicts[0].path, "/a");
    // Document deleted centrally, edited on the satellite.
    let m = merge_values(Some(&json!({"a": 1})), Some(&json!({"a": 2})), None);
    assert_eq!(m.merged, None);
    assert_eq!(
        m.conflicts,
        vec![conflict(
            "",
            Some(json!({"a": 1})),
            Some(json!({"a": 2})),
            None
        )]
    );
    // Non-object base with objects on both sides counts as {}.
    let m = merge(json!(5), json!({"a": 1}), json!({"b": 2}));
    assert_eq!(clean(&m), &json!({"b": 2, "a": 1}));
}
