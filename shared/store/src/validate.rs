//! The checks every candidate record passes before its head moves.

use crate::path::{PathError, validate_paths};
use chartsync_merge::yaml::{YamlError, is_yaml_path, parse_yaml};
use chartsync_protocol::Files;

/// Size limits of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest file, in bytes.
    pub max_file_bytes: usize,
    /// Largest record (all files), in bytes.
    pub max_record_bytes: usize,
    /// Most files in a record.
    pub max_files: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 1 << 20,
            max_record_bytes: 8 << 20,
            max_files: 2000,
        }
    }
}

/// Why a candidate record is refused. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum InvalidRecord {
    /// No files at all.
    #[error("a record needs at least one file (for example patient.yaml)")]
    Empty,
    /// A bad path.
    #[error(transparent)]
    Path(#[from] PathError),
    /// Too many files.
    #[error("the record would hold {count} files; at most {max} are allowed")]
    TooManyFiles {
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// One file too large.
    #[error("{file} is {size} bytes; at most {max} bytes per file are allowed")]
    FileTooLarge {
        /// The file.
        file: String,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The whole record too large.
    #[error("the record would be {size} bytes; at most {max} bytes per record are allowed")]
    RecordTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not UTF-8 text.
    #[error("{file} is not UTF-8 text")]
    NotText {
        /// The file.
        file: String,
    },
    /// A YAML file that does not parse, or holds what records may not
    /// (anchors, aliases, tags, deep nesting, inexact numbers: see
    /// [`chartsync_merge::yaml`]). The message names the file, then the
    /// line and column and what is wrong there.
    #[error("{file}: {source}")]
    Yaml {
        /// The file.
        file: String,
        /// The parser's complaint.
        #[source]
        source: YamlError,
    },
    /// A merge patch sent for a file that is not YAML.
    #[error(
        "{file} is not a YAML file; a merge patch applies to .yaml/.yml files only (send a string to replace a file)"
    )]
    PatchNotYaml {
        /// The file.
        file: String,
    },
    /// A write through the record API that touches the retirement marker
    /// (only retire and restore write it).
    #[error(
        "{file} marks a retired record; it is written only by retiring (DELETE) or restoring (POST .../restore), not by a record write"
    )]
    Reserved {
        /// The file.
        file: String,
    },
    /// A folder without files (git keeps none; a record's folders exist only
    /// for the files in them).
    #[error("folder {folder:?} is empty; a record's folders hold files")]
    EmptyFolder {
        /// The folder's path.
        folder: String,
    },
    /// A tree entry that is not a plain file or folder.
    #[error("{file} is not a plain file (mode {mode:o}); records hold only plain files")]
    UnsupportedEntry {
        /// The path.
        file: String,
        /// Its git mode.
        mode: u32,
    },
}

impl InvalidRecord {
    /// A short machine-readable code for error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            InvalidRecord::Empty => "empty_record",
            InvalidRecord::Path(_) => "invalid_path",
            InvalidRecord::TooManyFiles { .. } => "too_many_files",
            InvalidRecord::FileTooLarge { .. } | InvalidRecord::RecordTooLarge { .. } => {
                "record_too_large"
            }
            InvalidRecord::NotText { .. } => "not_text",
            InvalidRecord::Yaml { .. } => "invalid_yaml",
            InvalidRecord::PatchNotYaml { .. } => "invalid_patch",
            InvalidRecord::UnsupportedEntry { .. } => "unsupported_entry",
            InvalidRecord::EmptyFolder { .. } => "empty_folder",
            InvalidRecord::Reserved { .. } => "reserved_file",
        }
    }
}

/// Checks the size and count limits, given every file's size.
pub fn check_sizes<'a>(
    sizes: impl IntoIterator<Item = (&'a str, usize)>,
    limits: &Limits,
) -> Result<(), InvalidRecord> {
    let mut total = 0usize;
    let mut count = 0usize;
    for (file, size) in sizes {
        count += 1;
        if size > limits.max_file_bytes {
            return Err(InvalidRecord::FileTooLarge {
                file: file.to_string(),
                size,
                max: limits.max_file_bytes,
            });
        }
        total = total.saturating_add(size);
    }
    if count == 0 {
        return Err(InvalidRecord::Empty);
    }
    if count > limits.max_files {
        return Err(InvalidRecord::TooManyFiles {
            count,
            max: limits.max_files,
        });
    }
    if total > limits.max_record_bytes {
        return Err(InvalidRecord::RecordTooLarge {
            size: total,
            max: limits.max_record_bytes,
        });
    }
    Ok(())
}

/// The file that describes the patient; its top-level `catchment` key names
/// the record's catchment.
pub const PATIENT_FILE: &str = "patient.yaml";

/// Checks one file's content (the path is checked separately). Returns the
/// catchment the content declares, when `file` is [`PATIENT_FILE`] and it
/// has a top-level string `catchment` (read from the same parse, so a write
/// parses each file once).
pub fn check_content(file: &str, content: &str) -> Result<Option<String>, InvalidRecord> {
    if !is_yaml_path(file) {
        return Ok(None);
    }
    let doc = parse_yaml(content).map_err(|source| InvalidRecord::Yaml {
        file: file.to_string(),
        source,
    })?;
    if file != PATIENT_FILE {
        return Ok(None);
    }
    Ok(declared_catchment(doc))
}

/// The top-level string `catchment` of a parsed patient document.
fn declared_catchment(doc: serde_json::Value) -> Option<String> {
    match doc {
        serde_json::Value::Object(mut map) => match map.remove("catchment") {
            Some(serde_json::Value::String(c)) => Some(c),
            _ => None,
        },
        _ => None,
    }
}

/// Checks a whole candidate file set. Returns the catchment its
/// [`PATIENT_FILE`] declares, if any.
pub fn validate_files(files: &Files, limits: &Limits) -> Result<Option<String>, InvalidRecord> {
    check_sizes(files.iter().map(|(k, v)| (k.as_str(), v.len())), limits)?;
    validate_paths(files.keys().map(String::as_str))?;
    let mut catchment = None;
    for (file, content) in files {
        if let Some(c) = check_content(file, content)? {
            catchment = Some(c);
        }
    }
    Ok(catchment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patient_file_declares_its_catchment_from_the_validating_parse() {
        let declared = |file: &str, text: &str| check_content(file, text).expect("valid YAML");
        assert_eq!(
            declared("patient.yaml", "name: A\ncatchment: north\n"),
            Some("north".to_string())
        );
        assert_eq!(
            declared("patient.yaml", "{catchment: south}"),
            Some("south".to_string())
        );
        assert_eq!(declared("patient.yaml", "name: A\n"), None);
        assert_eq!(declared("patient.yaml", "catchment: [a, b]\n"), None);
        assert_eq!(declared("patient.yaml", "- catchment\n"), None);
        assert_eq!(declared("visits/1.yaml", "catchment: north\n"), None);
        assert_eq!(declared("notes.txt", "catchment: north\n"), None);
        assert!(check_content("patient.yaml", "catchment: [\n").is_err());
    }

    #[test]
    fn refusals_name_the_file_the_line_and_what_is_refused() {
        let message = |file: &str, text: &str| match check_content(file, text) {
            Ok(c) => panic!("{text:?} accepted ({c:?})"),
            Err(e) => {
                assert_eq!(e.code(), "invalid_yaml");
                e.to_string()
            }
        };
        let bomb = format!(
            "name: A\nnote: &n \"{}\"\nnotes: [{}]\n",
            "x".repeat(50_000),
            vec!["*n"; 10_000].join(", ")
        );
        assert_eq!(
            message("visits/1.yaml", &bomb),
            "visits/1.yaml: line 2, column 7: YAML anchor &n refused: record files are plain data, without anchors or aliases (write the value out in full)"
        );
        assert!(
            message("patient.yaml", "a: 1\nb: *x\n")
                .starts_with("patient.yaml: line 2, column 4: YAML alias *x refused"),
        );
        assert!(
            message("p.yml", "x: !!python/object/apply:os.system [ls]\n").starts_with(
                "p.yml: line 1, column 4: YAML tag !!python/object/apply:os.system refused"
            )
        );
        assert!(message("p.yaml", &"{a: ".repeat(100_000)).starts_with(
            "p.yaml: line 1, column 257: nesting deeper than 64 mappings and sequences refused"
        ));
        assert!(
            message("p.yaml", "nid: 12345678901234567890123\n")
                .starts_with("p.yaml: line 1, column 6: number 12345678901234567890123 refused")
        );
        assert!(message("p.yaml", "a: [\n").starts_with("p.yaml: invalid YAML: "));
        // Only YAML files are read as YAML.
        assert_eq!(
            check_content("notes.txt", "&x *x !!binary\n").ok(),
            Some(None)
        );
    }

    #[test]
    fn validate_files_returns_the_declared_catchment() {
        let mut files = Files::new();
        files.insert("patient.yaml".into(), "catchment: east\n".into());
        files.insert("visits/a.yaml".into(), "catchment: west\n".into());
        assert_eq!(
            validate_files(&files, &Limits::default()).expect("valid record"),
            Some("east".to_string())
        );
    }
}
