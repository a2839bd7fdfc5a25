//! Retiring a record: a tombstone is an ordinary commit that keeps every
//! file and adds the marker [`RETIRED_FILE`]; restoring is one commit that
//! removes it. History stays, and sync moves tombstones like any change.

use chartsync_merge::yaml::parse_yaml;
use chartsync_protocol::Files;
use chartsync_protocol::id::PatientId;
use serde_json::Value;

/// The marker file of a retired record. Only retire and restore write it;
/// a record API write that touches it is refused.
pub const RETIRED_FILE: &str = "retired.yaml";

/// What the marker of a retired record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retirement {
    /// When it was retired (RFC 3339, UTC).
    pub retired_at: String,
    /// The record that holds this patient now (a merge), if any.
    pub replaced_by: Option<PatientId>,
    /// Who retired it (the instance that wrote the tombstone).
    pub by: String,
}

impl Retirement {
    /// The marker's YAML text.
    pub fn to_yaml(&self) -> String {
        let replaced_by = match &self.replaced_by {
            Some(id) => format!("\"{id}\""),
            None => "null".to_string(),
        };
        let by = serde_json::Value::String(self.by.clone()).to_string();
        format!(
            "retired_at: \"{}\"\nreplaced_by: {replaced_by}\nby: {by}\n",
            self.retired_at
        )
    }

    /// Reads the marker of `files`, if the record is retired. A marker that
    /// cannot be read still means retired (with nothing known about it).
    pub fn of(files: &Files) -> Option<Retirement> {
        let text = files.get(RETIRED_FILE)?;
        let doc = parse_yaml(text).unwrap_or(Value::Null);
        let field = |name: &str| doc.get(name).and_then(Value::as_str).map(str::to_string);
        Some(Retirement {
            retired_at: field("retired_at").unwrap_or_default(),
            replaced_by: field("replaced_by").and_then(|s| s.parse().ok()),
            by: field("by").unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips() {
        let r = Retirement {
            retired_at: "2026-12-03T01:00:00Z".into(),
            replaced_by: Some(PatientId::random()),
            by: "hq \"main\"".into(),
        };
        let mut files = Files::new();
        files.insert(RETIRED_FILE.into(), r.to_yaml());
        assert_eq!(Retirement::of(&files), Some(r.clone()));
        let none = Retirement {
            replaced_by: None,
            ..r
        };
        files.insert(RETIRED_FILE.into(), none.to_yaml());
        assert_eq!(Retirement::of(&files), Some(none));
        files.remove(RETIRED_FILE);
        assert_eq!(Retirement::of(&files), None);
    }
}
