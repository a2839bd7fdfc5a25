//! Uniting two records of the same person (a merge of duplicates): there
//! is no common ancestor, so instead of a three-way merge the two are
//! united. Objects are united key by key; lists keep the kept record's
//! items and add the other's items it does not hold yet (allergies, visits
//! and medications recorded at either clinic all stay, once); equal values
//! agree; two different values keep the kept record's and report the
//! other's as a conflict.

use serde_json::{Map, Value};

use super::files::{FileConflict, Files, FilesMerge, merge_files};
use super::pointer;
use super::yaml::{is_yaml_path, parse_yaml, to_yaml};

/// Unites record `other` into record `kept`. A conflict's `theirs` is the
/// kept value (in the result), `ours` the other's, `base` is `None`.
#[must_use]
pub fn unite_files(kept: &Files, other: &Files) -> FilesMerge {
    let mut out = FilesMerge {
        files: kept.clone(),
        conflicts: Vec::new(),
        merged_files: Vec::new(),
    };
    for (file, theirs) in other {
        let Some(mine) = kept.get(file) else {
            out.files.insert(file.clone(), theirs.clone());
            continue;
        };
        if mine == theirs {
            continue;
        }
        let parsed = if is_yaml_path(file) {
            parse_yaml(mine).ok().zip(parse_yaml(theirs).ok())
        } else {
            None
        };
        match parsed {
            Some((k, o)) => {
                let mut conflicts = Vec::new();
                let united = unite_values("", &k, &o, &mut conflicts);
                if united != k {
                    out.files.insert(file.clone(), to_yaml(&united));
                    out.merged_files.push(file.clone());
                }
                out.conflicts
                    .extend(
                        conflicts
                            .into_iter()
                            .map(|(path, kept, other)| FileConflict {
                                file: file.clone(),
                                path,
                                base: None,
                                ours: Some(other),
                                theirs: Some(kept),
                            }),
                    );
            }
            None => out.conflicts.push(FileConflict {
                file: file.clone(),
                path: String::new(),
                base: None,
                ours: Some(Value::String(theirs.clone())),
                theirs: Some(Value::String(mine.clone())),
            }),
        }
    }
    out
}

/// Carries an edit made to a record that was merged into `kept` (the
/// survivor): the edited record's data went from `base` to `ours`, and that
/// change is applied to `kept`.
///
/// - Items the edit added to a list, and fields `kept` lacks, come in as
///   through [`unite_files`] (the survivor's lists were united with the
///   other record's when they were merged, so the other record's list is
///   not a prefix of the survivor's).
/// - A field both hold, which the edit changed: when `kept` still has the
///   value the edit started from (`base`'s), it takes the edit's value;
///   when it has a third value, it keeps its own and the edit's is a
///   conflict (`ours` the edit's value, `theirs` the kept one, `base` what
///   the edit started from).
/// - A field the edit did not change keeps `kept`'s value, and a field or
///   list item the edit removed stays in `kept` (a merge never drops the
///   survivor's data).
#[must_use]
pub fn carry_files(kept: &Files, base: &Files, ours: &Files) -> FilesMerge {
    let before = unite_files(kept, base).files;
    let after = unite_files(kept, ours);
    let mut out = merge_files(&before, &after.files, kept);
    // The fields the union settled for `kept`: the edit's changes to them.
    for c in after.conflicts {
        let (Some(edited), Some(_)) = (c.ours, c.theirs) else {
            continue;
        };
        let started = value_at(base, &c.file, &c.path);
        if started.as_ref() == Some(&edited) {
            continue;
        }
        let current = value_at(&out.files, &c.file, &c.path);
        if current.as_ref() == Some(&edited) {
            continue;
        }
        if started.is_some() && current == started {
            if set_value(&mut out.files, &c.file, &c.path, edited)
                && !out.merged_files.contains(&c.file)
            {
                out.merged_files.push(c.file);
            }
        } else if !out
            .conflicts
            .iter()
            .any(|k| k.file == c.file && crate::pointer::is_ancestor_or_self(&k.path, &c.path))
        {
            out.conflicts.push(FileConflict {
                file: c.file,
                path: c.path,
                base: started,
                ours: Some(edited),
                theirs: current,
            });
        }
    }
    out
}

/// The value at `path` in `file`: a YAML file's field, or (`path` `""`) any
/// other file's contents as a string.
fn value_at(files: &Files, file: &str, path: &str) -> Option<Value> {
    let text = files.get(file)?;
    if is_yaml_path(file) {
        let doc = parse_yaml(text).ok()?;
        pointer::get(&doc, path).cloned()
    } else if path.is_empty() {
        Some(Value::String(text.clone()))
    } else {
        None
    }
}

/// Sets the value at `path` in `file` (see [`value_at`]); `false` when
/// nothing is there to replace.
fn set_value(files: &mut Files, file: &str, path: &str, value: Value) -> bool {
    let Some(text) = files.get_mut(file) else {
        return false;
    };
    if is_yaml_path(file) {
        let Ok(mut doc) = parse_yaml(text) else {
            return false;
        };
        if !pointer::replace(&mut doc, path, value) {
            return false;
        }
        *text = to_yaml(&doc);
        true
    } else if let (true, Value::String(contents)) = (path.is_empty(), value) {
        *text = contents;
        true
    } else {
        false
    }
}

/// Unites two values (see the module documentation).
#[must_use]
pub fn unite_values(
    path: &str,
    kept: &Value,
    other: &Value,
    conflicts: &mut Vec<(String, Value, Value)>,
) -> Value {
    match (kept, other) {
        _ if kept == other => kept.clone(),
        (Value::Object(k), Value::Object(o)) => {
            let mut out = Map::new();
            for (key, kv) in k {
                let value = match o.get(key) {
                    Some(ov) => unite_values(&pointer::join(path, key), kv, ov, conflicts),
                    None => kv.clone(),
                };
                out.insert(key.clone(), value);
            }
            for (key, ov) in o {
                if !k.contains_key(key) {
                    out.insert(key.clone(), ov.clone());
                }
            }
            Value::Object(out)
        }
        (Value::Array(k), Value::Array(o)) => {
            let mut out = k.clone();
            for item in o {
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
            Value::Array(out)
        }
        (_, Value::Null) => kept.clone(),
        (Value::Null, _) => other.clone(),
        _ => {
            conflicts.push((path.to_string(), kept.clone(), other.clone()));
            kept.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_are_united_once_and_the_kept_value_wins() {
        let mut conflicts = Vec::new();
        let kept = json!({"name": "Odhiambo", "allergies": ["penicillin", "latex"], "a": {"x": 1}});
        let other = json!({"name": "Odiambo", "allergies": ["latex", "sulfa"], "a": {"y": 2}, "phone": "1"});
        let united = unite_values("", &kept, &other, &mut conflicts);
        assert_eq!(
            united,
            json!({"name": "Odhiambo", "allergies": ["penicillin", "latex", "sulfa"], "a": {"x": 1, "y": 2}, "phone": "1"})
        );
        assert_eq!(
            conflicts,
            vec![("/name".to_string(), json!("Odhiambo"), json!("Odiambo"))]
        );
    }

    #[test]
    fn files_only_in_the_other_record_are_added() {
        let kept = Files::from([("patient.yaml".to_string(), "a: [1]\n".to_string())]);
        let other = Files::from([
            ("patient.yaml".to_string(), "a: [2]\n".to_string()),
            ("visits/1.yaml".to_string(), "v: 1\n".to_string()),
            ("notes.txt".to_string(), "x".to_string()),
        ]);
        let united = unite_files(&kept, &other);
        assert_eq!(united.files.len(), 3);
        assert_eq!(
            parse_yaml(&united.files["patient.yaml"]).expect("yaml"),
            json!({"a": [1, 2]})
        );
        assert!(united.conflicts.is_empty());
    }

    fn record(doc: serde_json::Value) -> Files {
        Files::from([("patient.yaml".to_string(), to_yaml(&doc))])
    }

    fn doc(files: &Files) -> serde_json::Value {
        parse_yaml(&files["patient.yaml"]).expect("yaml")
    }

    /// The survivor A united B's data at the merge; B (at the clinic) had
    /// "Aminah", a birth date both agreed on, a phone A lacked and latex.
    fn merged_pair() -> (Files, Files) {
        let survivor = record(json!({
            "given_name": "Amina", "born": "1990-04-02", "phone": "0711",
            "allergies": ["penicillin", "latex"], "sex": "F"
        }));
        let retired = record(json!({
            "given_name": "Aminah", "born": "1990-04-02", "phone": "0711",
            "allergies": ["latex"]
        }));
        (survivor, retired)
    }

    #[test]
    fn an_edit_of_a_field_the_survivor_still_holds_as_edited_is_carried() {
        let (survivor, base) = merged_pair();
        // The clinic corrects the birth date and the phone, adds an allergy.
        let edited = record(json!({
            "given_name": "Aminah", "born": "1990-02-04", "phone": "0722",
            "allergies": ["latex", "sulfa"]
        }));
        let carried = carry_files(&survivor, &base, &edited);
        assert!(carried.conflicts.is_empty(), "{:?}", carried.conflicts);
        assert_eq!(
            doc(&carried.files),
            json!({
                "given_name": "Amina", "born": "1990-02-04", "phone": "0722",
                "allergies": ["penicillin", "latex", "sulfa"], "sex": "F"
            })
        );
        assert_eq!(carried.merged_files, ["patient.yaml"]);
    }

    #[test]
    fn an_edit_of_a_field_the_survivor_holds_otherwise_is_a_conflict_that_keeps_the_survivors() {
        let (survivor, base) = merged_pair();
        // The names differed at the merge (A's kept); the clinic's new
        // spelling is a third value.
        let edited = record(json!({
            "given_name": "Aminah W.", "born": "1990-04-02", "phone": "0711",
            "allergies": ["latex"], "note": "new"
        }));
        let carried = carry_files(&survivor, &base, &edited);
        assert_eq!(doc(&carried.files)["given_name"], "Amina");
        assert_eq!(doc(&carried.files)["note"], "new", "a new field comes in");
        assert_eq!(
            carried.conflicts,
            vec![FileConflict {
                file: "patient.yaml".into(),
                path: "/given_name".into(),
                base: Some(json!("Aminah")),
                ours: Some(json!("Aminah W.")),
                theirs: Some(json!("Amina")),
            }]
        );
    }

    #[test]
    fn fields_the_edit_left_alone_or_removed_keep_the_survivors_values() {
        let (survivor, base) = merged_pair();
        let edited = record(json!({"given_name": "Aminah", "born": "1990-04-02"}));
        let carried = carry_files(&survivor, &base, &edited);
        assert!(carried.conflicts.is_empty(), "{:?}", carried.conflicts);
        assert_eq!(carried.files, survivor);
    }

    #[test]
    fn other_files_are_carried_whole_when_the_survivor_has_the_edited_version() {
        let file = |text: &str| Files::from([("notes.txt".to_string(), text.to_string())]);
        let carried = carry_files(&file("x"), &file("x"), &file("y"));
        assert_eq!(carried.files, file("y"));
        let kept = carry_files(&file("z"), &file("x"), &file("y"));
        assert_eq!(kept.files, file("z"));
        assert_eq!(kept.conflicts.len(), 1);
        assert_eq!(kept.conflicts[0].ours, Some(json!("y")));
    }
}
