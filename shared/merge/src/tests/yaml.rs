//! Unit tests of YAML reading.

use serde_json::json;

use super::super::yaml::{YamlError, is_yaml_path, parse_yaml, to_yaml};

#[test]
fn yaml_paths() {
    assert!(is_yaml_path("a/b.yaml"));
    assert!(is_yaml_path("B.YML"));
    assert!(is_yaml_path("x.Yaml"));
    assert!(!is_yaml_path("a.yaml.txt"));
    assert!(!is_yaml_path("yaml"));
    assert!(!is_yaml_path("a.json"));
}

#[test]
fn parses_the_json_data_model() {
    assert_eq!(parse_yaml(""), Ok(json!(null)));
    assert_eq!(parse_yaml("# only a comment\n"), Ok(json!(null)));
    assert_eq!(parse_yaml("---\na: 1\n"), Ok(json!({"a": 1})));
    assert_eq!(parse_yaml("a: 1\n...\n"), Ok(json!({"a": 1})));
    let doc = "s: text\nq: '1'\nn: ~\nb: true\ni: -3\nu: 18446744073709551615\nf: 1.5\nl: [1, x]\n\
               m: {k: v}\nlit: |\n  line\nanchor: &x [1]\nalias: *x\nstr: !!str 12\n";
    assert_eq!(
        parse_yaml(doc),
        Ok(
            json!({"s": "text", "q": "1", "n": null, "b": true, "i": -3, "u": u64::MAX, "f": 1.5,
                  "l": [1, "x"], "m": {"k": "v"}, "lit": "line\n", "anchor": [1], "alias": [1], "str": "12"})
        )
    );
    // Key order is kept.
    let v = parse_yaml("z: 1\na: 2\nm: 3\n");
    assert_eq!(
        v.map(|v| v.to_string()),
        Ok(r#"{"z":1,"a":2,"m":3}"#.to_owned())
    );
}

#[test]
fn rejects_what_json_cannot_hold_with_clear_errors() {
    let err = |text: &str| match parse_yaml(text) {
        Ok(v) => panic!("{text:?} parsed as {v}"),
        Err(e) => e,
    };

    let e = err("a:\n  1: x\n");
    assert_eq!(
        e,
        YamlError::NonStringKey {
            key: "number 1".into(),
            path: "/a".into()
        }
    );
    assert!(
        e.to_string()
            .contains("mapping key number 1 in the mapping at /a is not a string"),
        "{e}"
    );
    assert!(matches!(err("true: x"), YamlError::NonStringKey { .. }));
    assert!(matches!(err("~: x"), YamlError::NonStringKey { .. }));
    assert!(matches!(err("[a]: x"), YamlError::NonStringKey { .. }));

    let e = err("w: [1, .nan]\n");
    assert!(
        matches!(&e, YamlError::NonFiniteNumber { path, .. } if path == "/w/1"),
        "{e:?}"
    );
    assert!(e.to_string().contains("not finite"), "{e}");
    assert!(matches!(err("-.inf"), YamlError::NonFiniteNumber { .. }));

    let e = err("secret: !vault abc\n");
    assert_eq!(
        e,
        YamlError::Tag {
            tag: "!vault".into(),
            path: "/secret".into()
        }
    );
    assert!(
        e.to_string()
            .contains("YAML tag !vault at /secret is not supported"),
        "{e}"
    );

    let e = err("a: 1\n---\nb: 2\n");
    assert_eq!(e, YamlError::MultipleDocuments);
    assert!(e.to_string().contains("more than one YAML document"), "{e}");
    assert_eq!(err("---\na: 1\n---\n"), YamlError::MultipleDocuments);

    let e = err("a: [1, 2\nb: 3\n");
    assert!(
        matches!(
            &e,
            YamlError::Syntax {
                position: Some(_),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().starts_with("invalid YAML: "), "{e}");
    assert!(e.to_string().contains("line"), "{e}");

    let e = err("a: 1\na: 2\n");
    assert!(
        matches!(&e, YamlError::Syntax { .. }) && e.to_string().contains("duplicate"),
        "{e}"
    );
    assert!(matches!(
        err("n: 123456789012345678901234567890\n"),
        YamlError::Syntax { .. }
    ));
}

#[test]
fn to_yaml_writes_block_style() {
    let v =
        json!({"patient": {"name": "Ann", "allergies": [{"name": "nuts", "severity": "high"}]}});
    assert_eq!(
        to_yaml(&v),
        "patient:\n  name: Ann\n  allergies:\n  - name: nuts\n    severity: high\n"
    );
    assert_eq!(to_yaml(&json!(null)), "null\n");
    assert_eq!(to_yaml(&json!({})), "{}\n");
}
