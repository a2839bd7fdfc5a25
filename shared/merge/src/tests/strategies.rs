//! proptest strategies: small JSON-like documents (few keys, so that sides
//! collide), edit operations deriving new versions from a base, merge
//! patches and YAML-hostile values.

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value, json};

use super::super::pointer;

/// The key pool for merge tests: small, with keys that need escaping.
const KEYS: [&str; 5] = ["a", "b", "c", "a/b", "~"];

pub fn key() -> impl Strategy<Value = String> {
    select(&KEYS[..]).prop_map(str::to_owned)
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-2i64..3).prop_map(Value::from),
        select(vec![0.5, -1.5]).prop_map(|f| json!(f)),
        select(vec!["", "x", "y", "1", "true"]).prop_map(Value::from),
    ]
}

fn object_of(entries: Vec<(String, Value)>) -> Value {
    Value::Object(entries.into_iter().collect::<Map<_, _>>())
}

/// Nested JSON-like values over a small key pool.
pub fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..4).prop_map(object_of),
        ]
    })
}

/// An object with keys from the pool.
pub fn object() -> impl Strategy<Value = Value> {
    prop::collection::vec((key(), value()), 0..5).prop_map(object_of)
}

/// One edit of a document; `usize` picks the node it applies to.
#[derive(Debug, Clone)]
pub enum Op {
    /// Replace a node.
    Set(usize, Value),
    /// Remove a node from its object or array.
    Delete(usize),
    /// Insert or overwrite a key of an object node.
    AddKey(usize, String, Value),
    /// Append to an array node.
    Append(usize, Value),
    /// Reverse an array node.
    Reverse(usize),
}

pub fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        (any::<usize>(), value()).prop_map(|(i, v)| Op::Set(i, v)),
        any::<usize>().prop_map(Op::Delete),
        (any::<usize>(), key(), value()).prop_map(|(i, k, v)| Op::AddKey(i, k, v)),
        (any::<usize>(), value()).prop_map(|(i, v)| Op::Append(i, v)),
        any::<usize>().prop_map(Op::Reverse),
    ];
    prop::collection::vec(op, 0..4)
}

/// All node pointers of `v`, in pre-order (the root `""` first).
fn node_paths(v: &Value, path: &str, out: &mut Vec<(String, &'static str)>) {
    let kind = match v {
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        _ => "scalar",
    };
    out.push((path.to_owned(), kind));
    match v {
        Value::Object(map) => map
            .iter()
            .for_each(|(k, c)| node_paths(c, &pointer::join(path, k), out)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, c)| node_paths(c, &pointer::join_index(path, i), out)),
        _ => {}
    }
}

/// Picks the `sel`-th (modulo) node whose path `allowed` accepts and whose
/// kind is one of `kinds`.
fn pick(doc: &Value, sel: usize, kinds: &[&str], allowed: &dyn Fn(&str) -> bool) -> Option<String> {
    let mut all = Vec::new();
    node_paths(doc, "", &mut all);
    let fit: Vec<String> = all
        .into_iter()
        .filter(|(p, k)| kinds.contains(k) && allowed(p))
        .map(|(p, _)| p)
        .collect();
    (!fit.is_empty()).then(|| fit[sel % fit.len()].clone())
}

/// Applies `ops` to `base`, skipping edits of paths `allowed` refuses (for
/// `AddKey`, the path of the added key is checked).
pub fn apply_ops(base: &Value, ops: &[Op], allowed: &dyn Fn(&str) -> bool) -> Value {
    const ANY: &[&str] = &["object", "array", "scalar"];
    let mut doc = base.clone();
    for op in ops {
        match op {
            Op::Set(sel, v) => {
                if let Some(p) = pick(&doc, *sel, ANY, allowed)
                    && let Some(node) = doc.pointer_mut(&p)
                {
                    *node = v.clone();
                }
            }
            Op::Delete(sel) => {
                let non_root = |p: &str| !p.is_empty() && allowed(p);
                if let Some(p) = pick(&doc, *sel, ANY, &non_root) {
                    delete(&mut doc, &p);
                }
            }
            Op::AddKey(sel, k, v) => {
                let fits = |p: &str| allowed(&pointer::join(p, k));
                if let Some(p) = pick(&doc, *sel, &["object"], &fits)
                    && let Some(Value::Object(map)) = doc.pointer_mut(&p)
                {
                    map.insert(k.clone(), v.clone());
                }
            }
            Op::Append(sel, v) => {
                if let Some(p) = pick(&doc, *sel, &["array"], allowed)
                    && let Some(Value::Array(items)) = doc.pointer_mut(&p)
                {
                    items.push(v.clone());
                }
            }
            Op::Reverse(sel) => {
                if let Some(p) = pick(&doc, *sel, &["array"], allowed)
                    && let Some(Value::Array(items)) = doc.pointer_mut(&p)
                {
                    items.reverse();
                }
            }
        }
    }
    doc
}

/// Removes the node at non-root pointer `p` from its parent.
fn delete(doc: &mut Value, p: &str) {
    let Some(cut) = p.rfind('/') else { return };
    let (parent, token) = (&p[..cut], &p[cut + 1..]);
    let Some(token) = pointer::unescape_token(token) else {
        return;
    };
    match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.shift_remove(&token);
        }
        Some(Value::Array(items)) => {
            if let Ok(i) = token.parse::<usize>()
                && i < items.len()
            {
                items.remove(i);
            }
        }
        _ => {}
    }
}

/// Any path is editable.
pub fn anywhere(_: &str) -> bool {
    true
}

/// A base document and two versions derived from it by independent edits;
/// now and then a side is absent (document deleted or not yet created).
pub fn three_versions() -> impl Strategy<Value = (Option<Value>, Option<Value>, Option<Value>)> {
    (
        prop::option::weighted(0.9, value()),
        ops(),
        ops(),
        0u8..20,
        0u8..20,
        value(),
        value(),
    )
        .prop_map(|(base, o_ops, t_ops, o_roll, t_roll, o_new, t_new)| {
            let derive = |ops: &[Op], roll: u8, fresh: Value| match (&base, roll) {
                (_, 0) => None,
                (None, _) => Some(fresh),
                (Some(b), _) => Some(apply_ops(b, ops, &anywhere)),
            };
            let ours = derive(&o_ops, o_roll, o_new);
            let theirs = derive(&t_ops, t_roll, t_new);
            (base, ours, theirs)
        })
}

/// A JSON merge patch: mostly objects (with nulls, arrays and nested
/// patches), sometimes a scalar or array.
pub fn merge_patch() -> impl Strategy<Value = Value> {
    let member = leaf().prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..3).prop_map(object_of),
        ]
    });
    prop_oneof![
        4 => prop::collection::vec((key(), member), 0..4).prop_map(object_of),
        1 => leaf(),
        1 => prop::collection::vec(leaf(), 0..3).prop_map(Value::Array),
    ]
}

/// Strings that stress YAML quoting.
pub fn yaml_string() -> impl Strategy<Value = String> {
    let tricky = vec![
        "",
        "1",
        "-1",
        "1.5",
        "1e3",
        "0x1F",
        "0o7",
        "007",
        "+1",
        ".5",
        "true",
        "False",
        "yes",
        "no",
        "null",
        "Null",
        "~",
        "NaN",
        ".nan",
        ".inf",
        "-.inf",
        "inf",
        ": ",
        "a: b",
        "#",
        "a #b",
        "- x",
        "-",
        "?",
        "? x",
        "[",
        "]",
        "{",
        "}",
        "*a",
        "&a",
        "!t",
        "!!str",
        "|",
        ">",
        "'",
        "\"",
        "%",
        "@",
        "`",
        "---",
        "...",
        " ",
        "  lead",
        "trail ",
        "\n",
        "a\n",
        "a\nb",
        "\n\n",
        "a\n\n",
        " a\nb",
        "\t",
        "a\tb",
        "\r\n",
        "é",
        "日本語",
        "🎉",
        "\u{85}",
        "\u{2028}",
        "\u{feff}x",
        "\u{0}",
        "\u{7f}",
        "a\\b",
        "\\n",
        "key:",
        "a,b",
        "x #",
        "<<",
    ];
    prop_oneof![
        select(tricky).prop_map(str::to_owned),
        "[a-z0-9 :#'\"\\-\\n\\t{}\\[\\],&*!|>%@`?~.\\\\]{0,10}",
        any::<String>(),
        prop::collection::vec(prop_oneof!["[a-z ]{0,8}", Just(String::new())], 1..5)
            .prop_map(|lines| lines.join("\n")),
    ]
}

/// Values of the whole JSON data model as `parse_yaml` can return them.
pub fn yaml_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        yaml_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((yaml_string(), inner), 0..5).prop_map(object_of),
        ]
    })
}
