//! Reading YAML record files into the JSON data model, and writing them back.
//!
//! Record files must fit the JSON data model exactly, so that merging,
//! diffing and re-serialising them can never change what they say: one
//! document, string mapping keys (no duplicates), finite numbers stored
//! exactly (64-bit integers, decimals that survive a 64-bit float). Records
//! are plain data: anchors, aliases and tags of any form are refused, and
//! so is nesting deeper than [`MAX_DEPTH`] mappings and sequences (see
//! [`crate::scan`]). Anything else is a [`YamlError`] rather than a
//! silently altered value.
//!
//! Reading costs time and memory linear in the text: the rules above are
//! checked on the parser's event stream, which stops at the first refusal,
//! before `yaml_serde` builds anything.

use std::fmt;

use serde_json::{Map, Number, Value};

use super::{pointer, scan};

pub use super::scan::MAX_DEPTH;

pub use super::emit::to_yaml;

/// A position in YAML text; both numbers start at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line number, starting at 1.
    pub line: usize,
    /// Column number, starting at 1.
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Describes where in the document a JSON pointer leads, for messages.
fn node(path: &str) -> String {
    if path.is_empty() {
        "at the document root".to_owned()
    } else {
        format!("at {path}")
    }
}

/// Why a text could not be read as a record document.
///
/// Errors that the YAML parser finds carry a line and column; errors about
/// content that is valid YAML but does not fit the JSON data model carry
/// the JSON pointer of the offending node instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YamlError {
    /// The text is not well-formed YAML (or repeats a mapping key); the
    /// message comes from the parser and usually names line and column.
    #[error("invalid YAML: {message}")]
    Syntax {
        /// The parser's description of the problem.
        message: String,
        /// Where the parser stopped, when it says.
        position: Option<Position>,
    },
    /// The text holds more than one YAML document.
    #[error(
        "the text holds more than one YAML document (`---` starts a new one); a record file must hold exactly one"
    )]
    MultipleDocuments,
    /// A mapping key is not a string.
    #[error(
        "mapping key {key} in the mapping {} is not a string; record files only allow string keys (quote the key)",
        node(.path)
    )]
    NonStringKey {
        /// The offending key, as read (e.g. `integer 1`).
        key: String,
        /// JSON pointer of the mapping holding the key.
        path: String,
    },
    /// A float is NaN or infinite, which JSON cannot represent.
    #[error(
        "number {value} {} is not finite; NaN and infinities are not supported (quote it to keep it as text)",
        node(.path)
    )]
    NonFiniteNumber {
        /// The value read (`NaN`, `inf` or `-inf`).
        value: String,
        /// JSON pointer of the number.
        path: String,
    },
    /// A node carries an anchor (`&name`); records are plain data.
    #[error(
        "{position}: YAML anchor &{name} refused: record files are plain data, without anchors or aliases (write the value out in full)"
    )]
    Anchor {
        /// The anchor's name (cut if long).
        name: String,
        /// Where the anchored node starts.
        position: Position,
    },
    /// An alias (`*name`) repeats an anchored node; records are plain data,
    /// and aliases expand in memory.
    #[error(
        "{position}: YAML alias *{name} refused: record files are plain data, without anchors or aliases (write the value out in full)"
    )]
    Alias {
        /// The anchor it refers to (cut if long).
        name: String,
        /// Where the alias is.
        position: Position,
    },
    /// A node carries a tag of any form: `!secret`, `!!binary`,
    /// `!!python/object/apply:...`, `!<tag:...>`, `!`.
    #[error(
        "{position}: YAML tag {tag} refused: record files are plain data, without tags (remove the tag; quote the value to keep it as text)"
    )]
    Tag {
        /// The tag, with `!!` for the standard prefix (cut if long).
        tag: String,
        /// Where the tagged node starts.
        position: Position,
    },
    /// Mappings and sequences nested deeper than [`MAX_DEPTH`].
    #[error(
        "{position}: nesting deeper than {max} mappings and sequences refused: record files nest at most {max} levels deep"
    )]
    TooDeep {
        /// The limit, [`MAX_DEPTH`].
        max: usize,
        /// Where the first collection beyond the limit starts.
        position: Position,
    },
    /// A number that would not be stored exactly (see [`crate::number`]).
    #[error(
        "{position}: number {number} refused: it cannot be stored exactly (records keep integers of at most 64 bits and decimals that survive a 64-bit float); quote it to keep it as text"
    )]
    InexactNumber {
        /// The number as written (cut if long).
        number: String,
        /// Where it is.
        position: Position,
    },
}

/// The start of `yaml_serde`'s message for a text with several documents.
const MULTI_DOCUMENT_MESSAGE: &str = "deserializing from YAML containing more than one document";

/// True for paths of YAML files: names ending in `.yaml` or `.yml`, in any
/// letter case.
#[must_use]
pub fn is_yaml_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml")
}

/// Parses exactly one YAML document into the JSON data model.
///
/// An empty text (or one holding only comments) is `Null`. See the module
/// documentation for what is rejected. Time and memory are linear in the
/// length of `text`, whatever it holds.
pub fn parse_yaml(text: &str) -> Result<Value, YamlError> {
    scan::check(text)?;
    parse_scanned(text)
}

/// [`parse_yaml`] without the scan: only for texts that passed it, or that
/// cannot hold what it refuses (the emitter's short candidate strings).
pub(crate) fn parse_scanned(text: &str) -> Result<Value, YamlError> {
    let yaml: yaml_serde::Value = yaml_serde::from_str(text).map_err(|err| {
        let message = err.to_string();
        if message.starts_with(MULTI_DOCUMENT_MESSAGE) {
            YamlError::MultipleDocuments
        } else {
            YamlError::Syntax {
                message,
                position: err.location().map(|l| Position {
                    line: l.line(),
                    column: l.column(),
                }),
            }
        }
    })?;
    convert(yaml, "")
}

/// Converts a parsed YAML node (found at JSON pointer `path`) into a JSON
/// value, rejecting what JSON cannot hold.
fn convert(yaml: yaml_serde::Value, path: &str) -> Result<Value, YamlError> {
    Ok(match yaml {
        yaml_serde::Value::Null => Value::Null,
        yaml_serde::Value::Bool(b) => Value::Bool(b),
        yaml_serde::Value::Number(n) => Value::Number(convert_number(&n, path)?),
        yaml_serde::Value::String(s) => Value::String(s),
        yaml_serde::Value::Sequence(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| convert(item, &pointer::join_index(path, i)))
                .collect::<Result<_, _>>()?,
        ),
        yaml_serde::Value::Mapping(mapping) => {
            let mut map = Map::with_capacity(mapping.len());
            for (key, value) in mapping {
                let key = match key {
                    yaml_serde::Value::String(key) => key,
                    other => {
                        return Err(YamlError::NonStringKey {
                            key: describe_key(&other),
                            path: path.to_owned(),
                        });
                    }
                };
                let value = convert(value, &pointer::join(path, &key))?;
                map.insert(key, value);
            }
            Value::Object(map)
        }
        // The scan refuses every tag before this parse; this is defence
        // in depth only, without a position.
        yaml_serde::Value::Tagged(tagged) => {
            return Err(YamlError::Syntax {
                message: format!(
                    "YAML tag {} {} refused: record files are plain data, without tags",
                    scan::shorten(&tagged.tag.to_string()),
                    node(path)
                ),
                position: None,
            });
        }
    })
}

/// Converts a YAML number; only finite floats and 64-bit integers fit.
fn convert_number(n: &yaml_serde::Number, path: &str) -> Result<Number, YamlError> {
    if let Some(u) = n.as_u64() {
        return Ok(u.into());
    }
    if let Some(i) = n.as_i64() {
        return Ok(i.into());
    }
    n.as_f64()
        .and_then(Number::from_f64)
        .ok_or_else(|| YamlError::NonFiniteNumber {
            value: n.to_string(),
            path: path.to_owned(),
        })
}

/// Names a non-string mapping key for an error message.
fn describe_key(key: &yaml_serde::Value) -> String {
    match key {
        yaml_serde::Value::Null => "null".to_owned(),
        yaml_serde::Value::Bool(b) => format!("boolean {b}"),
        yaml_serde::Value::Number(n) => format!("number {n}"),
        yaml_serde::Value::String(s) => format!("{s:?}"),
        yaml_serde::Value::Sequence(_) => "(a sequence)".to_owned(),
        yaml_serde::Value::Mapping(_) => "(a mapping)".to_owned(),
        yaml_serde::Value::Tagged(t) => format!("tagged {}", t.tag),
    }
}
