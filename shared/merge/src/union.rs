//! Uniting two records of the same person (a merge of duplicates): there
//! is no common ancestor, so instead of a three-way merge the two are
//! united. Objects are united key by key; lists keep the kept record's
//! items and add the other's items it does not hold yet (allergies, visits
//! and medications recorded at either clinic all stay, once); equal values
//! agree; two different values keep the kept record's and report the
//! other's as a conflict.

use serde_json::{Map, Value};

use super::files::{FileConflict, Files, FilesMerge};
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
}
