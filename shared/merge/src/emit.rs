//! Writing JSON-model values as block-style YAML.
//!
//! The emitter is deliberately conservative: a string is written as a plain
//! (unquoted) scalar only when reading it back gives the very same string,
//! multi-line text is written as a literal block (`|`) only when that is
//! unambiguous, and everything else is double-quoted with escapes. Keys keep
//! their insertion order.

use serde_json::{Map, Value};

use super::yaml::parse_scanned;

/// Spaces per nesting level.
const INDENT: usize = 2;

/// Longest key (in bytes, as written) that may be written as an implicit
/// key; YAML parsers only look 1024 characters ahead for the `:`.
const MAX_IMPLICIT_KEY: usize = 1000;

/// Writes `value` as a block-style YAML document, keys in insertion order.
///
/// `parse_yaml(&to_yaml(v)) == Ok(v)` for every value `parse_yaml` can
/// return. The output always ends with a newline.
#[must_use]
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0, false),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0, false),
        _ => {
            write_inline(&mut out, value, INDENT);
            end_line(&mut out);
        }
    }
    out
}

/// Writes a scalar or empty collection (no trailing newline, except that a
/// literal block ends with its last line break). `block_indent` is the
/// indentation for the lines of a literal block.
fn write_inline(out: &mut String, value: &Value, block_indent: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(out, s, block_indent),
        Value::Array(_) => out.push_str("[]"),
        Value::Object(_) => out.push_str("{}"),
    }
}

/// Writes the entries of a non-empty mapping, each key at `indent`. With
/// `after_dash`, the first key goes on the current line (after "- ").
fn write_map(out: &mut String, map: &Map<String, Value>, indent: usize, after_dash: bool) {
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 || !after_dash {
            push_indent(out, indent);
        }
        let mut written_key = String::new();
        write_key(&mut written_key, key);
        if written_key.len() > MAX_IMPLICIT_KEY {
            // Explicit key: "? key" then ": value" on the next line.
            out.push_str("? ");
            out.push_str(&written_key);
            out.push('\n');
            push_indent(out, indent);
        } else {
            out.push_str(&written_key);
        }
        out.push(':');
        write_nested(out, value, indent, true);
    }
}

/// Writes the items of a non-empty sequence, each dash at `indent`. With
/// `after_dash`, the first dash goes on the current line (after "- ").
fn write_seq(out: &mut String, items: &[Value], indent: usize, after_dash: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !after_dash {
            push_indent(out, indent);
        }
        out.push('-');
        write_nested(out, item, indent, false);
    }
}

/// Writes the value of a mapping entry (`in_map`) or sequence item whose
/// key or dash sits at `indent`, right after the `:` or `-`.
fn write_nested(out: &mut String, value: &Value, indent: usize, in_map: bool) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            if in_map {
                out.push('\n');
            } else {
                out.push(' ');
            }
            write_map(out, map, indent + INDENT, !in_map);
        }
        Value::Array(items) if !items.is_empty() => {
            if in_map {
                // A sequence under a key sits at the key's indentation.
                out.push('\n');
                write_seq(out, items, indent, false);
            } else {
                out.push(' ');
                write_seq(out, items, indent + INDENT, true);
            }
        }
        _ => {
            out.push(' ');
            write_inline(out, value, indent + INDENT);
            end_line(out);
        }
    }
}

/// Ends the current line unless a literal block already did.
fn end_line(out: &mut String) {
    if !out.ends_with('\n') {
        out.push('\n');
    }
}

fn push_indent(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// Writes a mapping key: plain when safe, else double-quoted.
fn write_key(out: &mut String, key: &str) {
    if is_plain_safe(key) {
        out.push_str(key);
    } else {
        write_double_quoted(out, key);
    }
}

/// Writes a string value: plain, literal block or double-quoted.
fn write_string(out: &mut String, s: &str, block_indent: usize) {
    if is_plain_safe(s) {
        out.push_str(s);
    } else if is_literal_safe(s) {
        write_literal(out, s, block_indent);
    } else {
        write_double_quoted(out, s);
    }
}

/// True when `s` can be written unquoted and reads back as the same string
/// in any block context (mapping key, mapping value, sequence item). To stay
/// unambiguous for YAML 1.1 readers too, strings starting with a digit
/// (numbers, dates, `007`) and yes/no/on/off words are quoted.
fn is_plain_safe(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    if !(first.is_alphabetic() || first == '_') || s.ends_with(' ') {
        return false;
    }
    // Words that YAML 1.1 readers (other tools) take for booleans.
    if matches!(s.to_ascii_lowercase().as_str(), "yes" | "no" | "on" | "off") {
        return false;
    }
    let chars_ok = chars.all(|c| c.is_alphanumeric() || " _-./()+,'@".contains(c));
    // Resolution check: "true", "null", "1e5", "0x1F" etc. must be quoted.
    // (Such a string has no anchor, alias, tag, nesting or number that the
    // record scan would refuse, so the scan is skipped.)
    chars_ok && matches!(parse_scanned(s), Ok(Value::String(back)) if back == s)
}

/// True when `s` is multi-line text that a literal block scalar reproduces
/// exactly: it has a line break, its first line starts with a visible
/// character, no line has trailing blanks and it uses no characters that
/// YAML treats as line breaks or cannot show unescaped.
fn is_literal_safe(s: &str) -> bool {
    s.contains('\n')
        && s.starts_with(|c: char| !c.is_whitespace())
        && s.chars()
            .all(|c| c == '\n' || (c != '\r' && is_printable(c)))
        && s.split('\n').all(|line| !line.ends_with([' ', '\t']))
}

/// Writes `s` as a literal block scalar whose lines are indented by
/// `indent`, with the chomping indicator that keeps its final line breaks.
fn write_literal(out: &mut String, s: &str, indent: usize) {
    let body = s.trim_end_matches('\n');
    let trailing_breaks = s.len().saturating_sub(body.len());
    out.push_str(match trailing_breaks {
        0 => "|-",
        1 => "|",
        _ => "|+",
    });
    out.push('\n');
    for line in body.split('\n') {
        if !line.is_empty() {
            push_indent(out, indent);
            out.push_str(line);
        }
        out.push('\n');
    }
    for _ in 1..trailing_breaks {
        out.push('\n');
    }
}

/// YAML's printable characters minus those it may treat as line breaks or
/// byte-order marks (NEL, LS, PS, BOM), which are always escaped.
fn is_printable(c: char) -> bool {
    matches!(c,
        '\t' | ' '..='~'
        | '\u{A0}'..='\u{2027}'
        | '\u{202A}'..='\u{D7FF}'
        | '\u{E000}'..='\u{FEFE}'
        | '\u{FF00}'..='\u{FFFD}'
        | '\u{10000}'..='\u{10FFFF}')
}

/// Writes `s` as a double-quoted scalar, escaping everything that is not a
/// plain printable character.
fn write_double_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if is_printable(c) => out.push(c),
            c if u32::from(c) <= 0xFF => out.push_str(&format!("\\x{:02X}", u32::from(c))),
            c if u32::from(c) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08X}", u32::from(c))),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse_yaml;
    use serde_json::json;

    fn round_trip(v: &Value) -> String {
        let text = to_yaml(v);
        assert_eq!(parse_yaml(&text).ok().as_ref(), Some(v), "text:\n{text}");
        text
    }

    #[test]
    fn block_style_and_key_order() {
        let v = json!({"name": "Ann Lee", "zeta": 1, "alpha": [1, {"x": "y", "z": []}],
                       "nested": {"b": true, "a": null}, "empty": {}});
        let text = round_trip(&v);
        assert_eq!(
            text,
            "name: Ann Lee\nzeta: 1\nalpha:\n- 1\n- x: y\n  z: []\nnested:\n  b: true\n  a: null\nempty: {}\n"
        );
    }

    #[test]
    fn ambiguous_strings_are_quoted() {
        for s in [
            "1", "true", "null", "~", "", " a", "a: b", "# c", "1e5", "0x1F", ".inf", "-", "- a",
            "? x", "a #b", "'q'", "\"", "yes", "NaN", "0123", "[x]", "{}", "*ref", "&a", "!tag",
            "%x", "@x", "`x", "|", ">", "---", "...",
        ] {
            round_trip(&json!(s));
            round_trip(&json!({ s: s }));
            round_trip(&json!([s, [s], { s: [s] }]));
        }
        assert_eq!(to_yaml(&json!({"1": "true"})), "\"1\": \"true\"\n");
        assert_eq!(
            to_yaml(&json!({"dob": "1970-01-02", "ok": "on"})),
            "dob: \"1970-01-02\"\nok: \"on\"\n"
        );
    }

    #[test]
    fn multi_line_strings_use_literal_blocks() {
        let v = json!({"note": "line one\n  indented\n\nlast\n", "keep": "a\n\n", "strip": "a\nb"});
        let text = round_trip(&v);
        assert!(
            text.starts_with("note: |\n  line one\n    indented\n\n  last\n"),
            "{text}"
        );
        round_trip(&json!(["x\ny", {"k": "p\nq\n\n\n"}, "\n", "\nlead", " lead\nx", "t \nx"]));
    }

    #[test]
    fn special_characters_are_escaped() {
        let s = "nul\0 bell\x07 del\x7f nel\u{85} ls\u{2028} bom\u{FEFF} nonchar\u{FFFE} \r\n tab\t é 日本 🎉";
        round_trip(&json!({ s: s }));
        assert_eq!(to_yaml(&json!("\x07")), "\"\\x07\"\n");
    }

    #[test]
    fn numbers_and_long_keys() {
        round_trip(&json!([
            0,
            -1,
            u64::MAX,
            i64::MIN,
            1.0,
            -0.5,
            1e300,
            1.5e-7,
            -0.0
        ]));
        let long = "k".repeat(2000);
        round_trip(&json!({ long.clone(): {"a": 1}, "x": [long.clone()] }));
        let text = round_trip(
            &json!({ long.clone(): [1, {long.clone(): "x\ny"}], "k": [{ "é".repeat(600): "p\nq" }] }),
        );
        assert!(text.starts_with("? kkk"), "{text}");
        round_trip(&json!({"a": [[1, [2]], [], [{}]]}));
    }
}
