//! Unit tests of the file-set merge.

use serde_json::{Value, json};

use super::super::files::{FileConflict, Files, merge_files};
use super::super::yaml::parse_yaml;

fn files(entries: &[(&str, &str)]) -> Files {
    entries
        .iter()
        .map(|(p, c)| ((*p).to_owned(), (*c).to_owned()))
        .collect()
}

fn s(text: &str) -> Option<Value> {
    Some(Value::String(text.to_owned()))
}

#[test]
fn yaml_fields_merge_and_file_is_rewritten() {
    let base = files(&[("patient.yaml", "name: Ann\nencounters:\n- id: 1\n")]);
    let ours = files(&[(
        "patient.yaml",
        "name: Ann Lee\nencounters:\n- id: 1\n- id: sat\n",
    )]);
    let theirs = files(&[(
        "patient.yaml",
        "name: Ann\nencounters:\n- id: 1\n- id: hq\n",
    )]);
    let m = merge_files(&base, &ours, &theirs);
    assert!(m.conflicts.is_empty());
    assert_eq!(m.merged_files, vec!["patient.yaml".to_owned()]);
    assert_eq!(
        m.files.get("patient.yaml").map(String::as_str),
        Some("name: Ann Lee\nencounters:\n- id: 1\n- id: hq\n- id: sat\n")
    );
}

#[test]
fn yaml_conflict_becomes_file_conflict() {
    let base = files(&[("v.yml", "weight: 70\n")]);
    let ours = files(&[("v.yml", "weight: 72\n")]);
    let theirs = files(&[("v.yml", "weight: 71\n")]);
    let m = merge_files(&base, &ours, &theirs);
    assert_eq!(
        m.conflicts,
        vec![FileConflict {
            file: "v.yml".into(),
            path: "/weight".into(),
            base: Some(json!(70)),
            ours: Some(json!(72)),
            theirs: Some(json!(71)),
        }]
    );
    assert_eq!(
        m.files.get("v.yml").map(String::as_str),
        Some("weight: 71\n")
    );
}

#[test]
fn file_added_on_both_sides_identically() {
    let m = merge_files(
        &Files::new(),
        &files(&[("a.yaml", "x: 1\n")]),
        &files(&[("a.yaml", "x: 1\n")]),
    );
    assert_eq!(m.files, files(&[("a.yaml", "x: 1\n")]));
    assert!(m.conflicts.is_empty() && m.merged_files.is_empty());
}

#[test]
fn file_added_on_both_sides_differently_merges_fields() {
    let m = merge_files(
        &Files::new(),
        &files(&[("a.yaml", "x: 1\n")]),
        &files(&[("a.yaml", "y: 2\n")]),
    );
    assert_eq!(m.files, files(&[("a.yaml", "y: 2\nx: 1\n")]));
    assert!(m.conflicts.is_empty());
}

#[test]
fn file_deleted_on_one_side() {
    let base = files(&[("a.yaml", "x: 1\n"), ("b.txt", "b")]);
    let kept = base.clone();
    let deleted = files(&[("b.txt", "b")]);
    assert_eq!(merge_files(&base, &deleted, &kept).files, deleted);
    assert_eq!(merge_files(&base, &kept, &deleted).files, deleted);
    // Deleted by ours, edited by theirs: theirs' file stays, conflict at "".
    let edited = files(&[("a.yaml", "x: 2\n"), ("b.txt", "b")]);
    let m = merge_files(&base, &deleted, &edited);
    assert_eq!(m.files, edited);
    assert_eq!(m.conflicts.len(), 1);
    assert_eq!(
        (m.conflicts[0].path.as_str(), &m.conflicts[0].ours),
        ("", &None)
    );
    assert_eq!(m.conflicts[0].theirs, Some(json!({"x": 2})));
    // Deleted by theirs, edited by ours: stays deleted, ours' document kept in the conflict.
    let m = merge_files(&base, &edited, &deleted);
    assert_eq!(m.files, deleted);
    assert_eq!(m.merged_files, vec!["a.yaml".to_owned()]);
    assert_eq!(m.conflicts[0].ours, Some(json!({"x": 2})));
}

#[test]
fn non_yaml_file_conflict_keeps_theirs() {
    let base = files(&[("scan.txt", "v1")]);
    let ours = files(&[("scan.txt", "v2-sat")]);
    let theirs = files(&[("scan.txt", "v2-hq")]);
    let m = merge_files(&base, &ours, &theirs);
    assert_eq!(m.files, theirs);
    assert!(m.merged_files.is_empty());
    assert_eq!(
        m.conflicts,
        vec![FileConflict {
            file: "scan.txt".into(),
            path: String::new(),
            base: s("v1"),
            ours: s("v2-sat"),
            theirs: s("v2-hq")
        }]
    );
    // Theirs deleted the file: it stays deleted.
    let m = merge_files(&base, &ours, &Files::new());
    assert!(m.files.is_empty());
    assert_eq!(m.conflicts[0].ours, s("v2-sat"));
    assert_eq!(m.conflicts[0].theirs, None);
}

#[test]
fn invalid_yaml_on_one_side_is_a_whole_file_conflict() {
    let base = files(&[("p.yaml", "a: 1\n")]);
    let ours = files(&[("p.yaml", "a: [1\n")]);
    let theirs = files(&[("p.yaml", "a: 2\n")]);
    let m = merge_files(&base, &ours, &theirs);
    assert_eq!(m.files, theirs);
    assert!(m.merged_files.is_empty());
    assert_eq!(
        m.conflicts,
        vec![FileConflict {
            file: "p.yaml".into(),
            path: String::new(),
            base: s("a: 1\n"),
            ours: s("a: [1\n"),
            theirs: s("a: 2\n")
        }]
    );
}

#[test]
fn formatting_only_changes_and_results_are_deterministic() {
    let base = files(&[("p.yaml", "a: 1\nb: 1\n")]);
    let ours = files(&[("p.yaml", "{a: 1, b: 2}")]);
    let theirs = files(&[("p.yaml", "a:   3\nb: 1  # comment\n")]);
    let m = merge_files(&base, &ours, &theirs);
    assert!(m.conflicts.is_empty());
    assert_eq!(
        m.files.get("p.yaml").map(String::as_str),
        Some("a: 3\nb: 2\n")
    );
    assert_eq!(merge_files(&base, &ours, &theirs), m);
    let merged_doc = m.files.get("p.yaml").map(|t| parse_yaml(t));
    assert_eq!(merged_doc, Some(Ok(json!({"a": 3, "b": 2}))));
}

#[test]
fn merged_document_deleted_removes_the_file() {
    // Ours edited the document, theirs deleted the file: it stays deleted.
    let base = files(&[("p.yaml", "a: 1\nb: 1\n")]);
    let ours = files(&[("p.yaml", "a: 1\n")]);
    let theirs = files(&[]);
    let m = merge_files(&base, &ours, &theirs);
    assert!(m.files.is_empty());
    assert_eq!(m.merged_files, vec!["p.yaml".to_owned()]);
    assert_eq!(m.conflicts.len(), 1);
}
