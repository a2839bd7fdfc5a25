//! Field-level differences between two documents or two file sets.

use serde_json::Value;

use super::files::Files;
use super::pointer;
use super::yaml::{is_yaml_path, parse_yaml};

/// One leaf path where two documents differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueDiff {
    /// JSON pointer of the differing field.
    pub path: String,
    /// The value in the first document (`None`: absent).
    pub a: Option<Value>,
    /// The value in the second document (`None`: absent).
    pub b: Option<Value>,
}

/// One differing field of one file between two file sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiff {
    /// Relative path of the file.
    pub file: String,
    /// JSON pointer of the field within the file; `""` for a whole-file
    /// difference.
    pub path: String,
    /// The value in the first set (`None`: absent).
    pub a: Option<Value>,
    /// The value in the second set (`None`: absent).
    pub b: Option<Value>,
}

/// The leaf paths where `a` and `b` differ, in document order (`a`'s keys,
/// then keys only in `b`). Objects are compared key by key and arrays of
/// equal length element by element; anything else that differs (including
/// arrays of different lengths) is reported whole at its path. Empty exactly
/// when `a == b`.
#[must_use]
pub fn diff_values(a: Option<&Value>, b: Option<&Value>) -> Vec<ValueDiff> {
    let mut out = Vec::new();
    diff_at("", a, b, &mut out);
    out
}

fn diff_at(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<ValueDiff>) {
    if a == b {
        return;
    }
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys = x
                .keys()
                .chain(y.keys().filter(|k| !x.contains_key(k.as_str())));
            for key in keys {
                diff_at(&pointer::join(path, key), x.get(key), y.get(key), out);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) if x.len() == y.len() => {
            for (i, (xv, yv)) in x.iter().zip(y).enumerate() {
                diff_at(&pointer::join_index(path, i), Some(xv), Some(yv), out);
            }
        }
        _ => out.push(ValueDiff {
            path: path.to_owned(),
            a: a.cloned(),
            b: b.cloned(),
        }),
    }
}

/// The differences between two file sets, file by file in path order.
///
/// A YAML file (see [`is_yaml_path`]) whose present sides all parse is
/// compared field by field with [`diff_values`] (an absent file is `None`);
/// any other differing file is reported whole, at path `""`, with its
/// contents as `Value::String`.
#[must_use]
pub fn diff_files(a: &Files, b: &Files) -> Vec<FileDiff> {
    let mut paths: Vec<&String> = a.keys().chain(b.keys()).collect();
    paths.sort();
    paths.dedup();
    let mut out = Vec::new();
    for file in paths {
        let (x, y) = (a.get(file), b.get(file));
        if x == y {
            continue;
        }
        let diffs = match parse_pair(file, x, y) {
            Some((px, py)) => diff_values(px.as_ref(), py.as_ref()),
            None => vec![ValueDiff {
                path: String::new(),
                a: x.map(|s| Value::String(s.clone())),
                b: y.map(|s| Value::String(s.clone())),
            }],
        };
        out.extend(diffs.into_iter().map(|d| FileDiff {
            file: file.clone(),
            path: d.path,
            a: d.a,
            b: d.b,
        }));
    }
    out
}

/// Parses both present sides of a YAML file; `None` when the file is not
/// YAML or a present side does not parse.
fn parse_pair(
    file: &str,
    x: Option<&String>,
    y: Option<&String>,
) -> Option<(Option<Value>, Option<Value>)> {
    if !is_yaml_path(file) {
        return None;
    }
    let parse = |s: Option<&String>| match s {
        Some(text) => parse_yaml(text).ok().map(Some),
        None => Some(None),
    };
    Some((parse(x)?, parse(y)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(path: &str, a: Option<Value>, b: Option<Value>) -> ValueDiff {
        ValueDiff {
            path: path.into(),
            a,
            b,
        }
    }

    #[test]
    fn diff_of_documents() {
        let a = json!({"n": 1, "o": {"x": 1, "y": 2}, "l": [1, {"k": 1}], "m": [1], "gone": 0});
        let b = json!({"n": 1, "o": {"x": 3, "y": 2}, "l": [1, {"k": 2}], "m": [1, 2], "new": {"z": 1}});
        assert_eq!(
            diff_values(Some(&a), Some(&b)),
            vec![
                d("/o/x", Some(json!(1)), Some(json!(3))),
                d("/l/1/k", Some(json!(1)), Some(json!(2))),
                d("/m", Some(json!([1])), Some(json!([1, 2]))),
                d("/gone", Some(json!(0)), None),
                d("/new", None, Some(json!({"z": 1}))),
            ]
        );
        assert!(diff_values(Some(&a), Some(&a)).is_empty());
        assert!(diff_values(None, None).is_empty());
        assert_eq!(
            diff_values(None, Some(&json!(1))),
            vec![d("", None, Some(json!(1)))]
        );
        assert_eq!(
            diff_values(Some(&json!({"a/b": 1})), Some(&json!({"a/b": 2})))[0].path,
            "/a~1b"
        );
    }

    #[test]
    fn diff_of_file_sets() {
        let a = Files::from([
            ("p.yaml".to_owned(), "a: 1\nb: 2\n".to_owned()),
            ("same.yaml".to_owned(), "x: 1\n".to_owned()),
            ("fmt.yml".to_owned(), "{x: 1}".to_owned()),
            ("notes.txt".to_owned(), "hi".to_owned()),
            ("bad.yaml".to_owned(), "a: [".to_owned()),
        ]);
        let b = Files::from([
            ("p.yaml".to_owned(), "a: 1\nb: 3\n".to_owned()),
            ("same.yaml".to_owned(), "x: 1\n".to_owned()),
            ("fmt.yml".to_owned(), "x: 1\n".to_owned()),
            ("notes.txt".to_owned(), "ho".to_owned()),
            ("bad.yaml".to_owned(), "a: 1".to_owned()),
            ("new.yaml".to_owned(), "k: v".to_owned()),
        ]);
        let got: Vec<(String, String, Option<Value>, Option<Value>)> = diff_files(&a, &b)
            .into_iter()
            .map(|f| (f.file, f.path, f.a, f.b))
            .collect();
        let s = |v: &str| Some(json!(v));
        assert_eq!(
            got,
            vec![
                ("bad.yaml".into(), "".into(), s("a: ["), s("a: 1")),
                ("new.yaml".into(), "".into(), None, Some(json!({"k": "v"}))),
                ("notes.txt".into(), "".into(), s("hi"), s("ho")),
                ("p.yaml".into(), "/b".into(), Some(json!(2)), Some(json!(3))),
            ]
        );
    }
}
