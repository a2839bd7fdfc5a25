//! RFC 6901 JSON Pointers: building, parsing and resolving them.
//!
//! A pointer is either the empty string (the whole document) or a sequence
//! of `/`-prefixed reference tokens in which `~` is written `~0` and `/` is
//! written `~1`.

use serde_json::Value;

/// Escapes one reference token: `~` becomes `~0` and `/` becomes `~1`
/// (so `a/b~c` becomes `a~1b~0c`).
#[must_use]
pub fn escape_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Reverses [`escape_token`]; `None` when the token has a `~` that is not
/// followed by `0` or `1`.
#[must_use]
pub fn unescape_token(token: &str) -> Option<String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Appends the (unescaped) `token` to the pointer `parent`.
///
/// `join("/a", "b/c") == "/a/b~1c"` and `join("", "x") == "/x"`.
#[must_use]
pub fn join(parent: &str, token: &str) -> String {
    let escaped = escape_token(token);
    let mut out = String::from(parent);
    out.push('/');
    out.push_str(&escaped);
    out
}

/// Appends an array index to the pointer `parent`.
#[must_use]
pub fn join_index(parent: &str, index: usize) -> String {
    format!("{parent}/{index}")
}

/// Splits a pointer into its unescaped reference tokens.
///
/// `Some(vec![])` for `""` (the whole document); `None` when the pointer is
/// not well formed (does not start with `/`, or has a bad `~` escape).
#[must_use]
pub fn parse(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    let rest = pointer.strip_prefix('/')?;
    rest.split('/').map(unescape_token).collect()
}

/// Parses an RFC 6901 array index: `0` or a decimal number without leading
/// zeros. (`-`, "past the end", never resolves to an existing element.)
fn parse_index(token: &str) -> Option<usize> {
    if token.is_empty()
        || !token.bytes().all(|b| b.is_ascii_digit())
        || (token.len() > 1 && token.starts_with('0'))
    {
        return None;
    }
    token.parse().ok()
}

/// Resolves `pointer` in `doc`: `""` is the whole document, array elements
/// are addressed by decimal index. `None` when nothing is there (or the
/// pointer is malformed).
#[must_use]
pub fn get<'a>(doc: &'a Value, pointer: &str) -> Option<&'a Value> {
    let tokens = parse(pointer)?;
    tokens.iter().try_fold(doc, |node, token| match node {
        Value::Object(map) => map.get(token.as_str()),
        Value::Array(items) => items.get(parse_index(token)?),
        _ => None,
    })
}

/// Replaces the value at `pointer` (which must already be there) with
/// `value`; `false` when nothing is there.
pub fn replace(doc: &mut Value, pointer: &str, value: Value) -> bool {
    let Some(tokens) = parse(pointer) else {
        return false;
    };
    let mut node = doc;
    for token in &tokens {
        let next = match node {
            Value::Object(map) => map.get_mut(token.as_str()),
            Value::Array(items) => match parse_index(token) {
                Some(i) => items.get_mut(i),
                None => None,
            },
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    *node = value;
    true
}

/// Like [`get`], for an optional (possibly absent) document.
#[must_use]
pub fn get_opt<'a>(doc: Option<&'a Value>, pointer: &str) -> Option<&'a Value> {
    doc.and_then(|d| get(d, pointer))
}

/// True when `ancestor` is `path` itself or one of its ancestors
/// (`""` is an ancestor of every pointer; `/a` is one of `/a/b` but not of
/// `/ab`).
#[must_use]
pub fn is_ancestor_or_self(ancestor: &str, path: &str) -> bool {
    match path.strip_prefix(ancestor) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The pointers of `path`'s proper ancestors, outermost (`""`) first.
///
/// `ancestors("/a/b") == ["", "/a"]`; `ancestors("") == []`.
#[must_use]
pub fn ancestors(path: &str) -> Vec<&str> {
    path.match_indices('/')
        .filter_map(|(i, _)| path.get(..i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escaping_round_trips() {
        assert_eq!(escape_token("a/b~c"), "a~1b~0c");
        assert_eq!(escape_token("~1"), "~01");
        assert_eq!(unescape_token("~01").as_deref(), Some("~1"));
        assert_eq!(unescape_token("a~1b~0c").as_deref(), Some("a/b~c"));
        assert_eq!(unescape_token("bad~2"), None);
        assert_eq!(unescape_token("bad~"), None);
    }

    #[test]
    fn join_examples() {
        assert_eq!(join("/a", "b/c"), "/a/b~1c");
        assert_eq!(join("", "x"), "/x");
        assert_eq!(join("", ""), "/");
        assert_eq!(join_index("/list", 3), "/list/3");
    }

    #[test]
    fn get_resolves_rfc6901_examples() {
        let doc = json!({
            "foo": ["bar", "baz"], "": 0, "a/b": 1, "c%d": 2, "e^f": 3,
            "g|h": 4, "i\\j": 5, "k\"l": 6, " ": 7, "m~n": 8
        });
        assert_eq!(get(&doc, ""), Some(&doc));
        assert_eq!(get(&doc, "/foo"), Some(&json!(["bar", "baz"])));
        assert_eq!(get(&doc, "/foo/0"), Some(&json!("bar")));
        assert_eq!(get(&doc, "/"), Some(&json!(0)));
        assert_eq!(get(&doc, "/a~1b"), Some(&json!(1)));
        assert_eq!(get(&doc, "/c%d"), Some(&json!(2)));
        assert_eq!(get(&doc, "/ "), Some(&json!(7)));
        assert_eq!(get(&doc, "/m~0n"), Some(&json!(8)));
        assert_eq!(get(&doc, "/foo/2"), None);
        assert_eq!(get(&doc, "/foo/01"), None);
        assert_eq!(get(&doc, "/foo/-"), None);
        assert_eq!(get(&doc, "/foo/0/x"), None);
        assert_eq!(get(&doc, "foo"), None);
        assert_eq!(get(&doc, "/m~2n"), None);
    }

    #[test]
    fn ancestry() {
        assert!(is_ancestor_or_self("", "/a"));
        assert!(is_ancestor_or_self("", ""));
        assert!(is_ancestor_or_self("/a", "/a/b"));
        assert!(is_ancestor_or_self("/a/b", "/a/b"));
        assert!(!is_ancestor_or_self("/a", "/ab"));
        assert!(!is_ancestor_or_self("/a/b", "/a"));
        assert_eq!(ancestors("/a/b~1c/d"), vec!["", "/a", "/a/b~1c"]);
        assert!(ancestors("").is_empty());
    }
}
