//! The identifying fields of a patient, read from `patient.yaml` (as JSON)
//! at configured JSON pointers and normalised once.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::normalize;

/// Where each identifying field lives in `patient.yaml`, as JSON pointers
/// (RFC 6901). A field whose pointer finds nothing, or an empty value, is
/// simply not compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fields {
    pub given_name: String,
    pub family_name: String,
    /// `YYYY-MM-DD` (also read: `YYYYMMDD`, or a YAML date).
    pub birth_date: String,
    pub sex: String,
    pub address: String,
    pub phone: String,
    pub national_id: String,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            given_name: "/given_name".into(),
            family_name: "/family_name".into(),
            birth_date: "/born".into(),
            sex: "/sex".into(),
            address: "/address".into(),
            phone: "/phone".into(),
            national_id: "/national_id".into(),
        }
    }
}

impl Fields {
    /// The pointers that are not JSON pointers (they must be empty or start
    /// with `/`), by field name.
    pub fn invalid(&self) -> Vec<&'static str> {
        self.named()
            .into_iter()
            .filter(|(_, p)| !p.is_empty() && !p.starts_with('/'))
            .map(|(n, _)| n)
            .collect()
    }

    fn named(&self) -> [(&'static str, &str); 7] {
        [
            ("given_name", &self.given_name),
            ("family_name", &self.family_name),
            ("birth_date", &self.birth_date),
            ("sex", &self.sex),
            ("address", &self.address),
            ("phone", &self.phone),
            ("national_id", &self.national_id),
        ]
    }
}

/// A birth date as eight digits `YYYYMMDD`, kept even when a typo made it
/// an impossible date (`19801332`): the typo is evidence too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BirthDate(pub String);

impl BirthDate {
    /// Reads `YYYY-MM-DD`, `YYYY/MM/DD`, `YYYYMMDD` and a date-time's date.
    pub fn parse(s: &str) -> Option<BirthDate> {
        let s = s.trim();
        let date = s.split(['T', ' ']).next().unwrap_or(s);
        let digits = normalize::digits(date);
        let separated = date.chars().filter(|c| !c.is_ascii_digit()).count();
        (digits.len() == 8 && separated <= 2).then_some(BirthDate(digits))
    }

    pub fn year(&self) -> &str {
        &self.0[..4]
    }

    pub fn month(&self) -> &str {
        &self.0[4..6]
    }

    pub fn day(&self) -> &str {
        &self.0[6..8]
    }

    /// The date written `YYYY-MM-DD`.
    pub fn display(&self) -> String {
        format!("{}-{}-{}", self.year(), self.month(), self.day())
    }
}

/// A patient's identifying fields, normalised. `None`: absent or empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub birth_date: Option<BirthDate>,
    pub sex: Option<String>,
    pub address: Option<String>,
    pub phone: Option<String>,
    pub national_id: Option<String>,
}

impl Person {
    /// The fields of `patient` (the document of `patient.yaml`) at the
    /// pointers of `fields`.
    pub fn from_document(patient: &Value, fields: &Fields) -> Person {
        let get = |pointer: &str| -> Option<String> {
            if pointer.is_empty() {
                return None;
            }
            match patient.pointer(pointer)? {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let nonempty = |s: String| (!s.is_empty()).then_some(s);
        Person {
            given_name: get(&fields.given_name).and_then(|s| nonempty(normalize::name(&s))),
            family_name: get(&fields.family_name).and_then(|s| nonempty(normalize::name(&s))),
            birth_date: get(&fields.birth_date).and_then(|s| BirthDate::parse(&s)),
            sex: get(&fields.sex).and_then(|s| nonempty(sex(&s))),
            address: get(&fields.address).and_then(|s| nonempty(normalize::text(&s))),
            phone: get(&fields.phone).and_then(|s| nonempty(normalize::digits(&s))),
            national_id: get(&fields.national_id).and_then(|s| nonempty(normalize::alnum(&s))),
        }
    }

    /// True when nothing identifying was found: such a record is not
    /// indexed, as it cannot be told apart from anyone.
    pub fn is_empty(&self) -> bool {
        self == &Person::default()
    }
}

/// `F`, `female`, `Woman` are one sex; anything else is kept as typed.
fn sex(s: &str) -> String {
    let t = normalize::text(s);
    match t.as_str() {
        "f" | "female" | "woman" | "w" | "girl" => "f".into(),
        "m" | "male" | "man" | "boy" => "m".into(),
        _ => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_configured_pointers_and_normalises() {
        let doc = json!({
            "given_name": "José", "family_name": "O'Brien", "born": "1980-03-07",
            "sex": "Female", "address": "12, Main St.", "phone": "+254 712 345",
            "national_id": "ab-123", "other": 1
        });
        let p = Person::from_document(&doc, &Fields::default());
        assert_eq!(p.given_name.as_deref(), Some("jose"));
        assert_eq!(p.family_name.as_deref(), Some("obrien"));
        assert_eq!(p.birth_date, Some(BirthDate("19800307".into())));
        assert_eq!(p.sex.as_deref(), Some("f"));
        assert_eq!(p.address.as_deref(), Some("12 main st"));
        assert_eq!(p.phone.as_deref(), Some("254712345"));
        assert_eq!(p.national_id.as_deref(), Some("ab123"));
    }

    #[test]
    fn missing_empty_and_odd_values_are_absent() {
        let doc = json!({"given_name": "", "family_name": ["x"], "born": "March 1980"});
        let p = Person::from_document(&doc, &Fields::default());
        assert!(p.is_empty());
        let nested = Fields {
            family_name: "/name/family".into(),
            ..Fields::default()
        };
        let p = Person::from_document(&json!({"name": {"family": "Okoth"}}), &nested);
        assert_eq!(p.family_name.as_deref(), Some("okoth"));
    }

    #[test]
    fn birth_dates_in_common_spellings() {
        assert_eq!(
            BirthDate::parse("1980-03-07")
                .map(|d| d.display())
                .as_deref(),
            Some("1980-03-07")
        );
        assert_eq!(
            BirthDate::parse("19800307").map(|d| d.0).as_deref(),
            Some("19800307")
        );
        assert_eq!(
            BirthDate::parse("1980-03-07T10:00:00Z")
                .map(|d| d.0)
                .as_deref(),
            Some("19800307")
        );
        assert_eq!(BirthDate::parse("1980-3-7"), None);
        assert_eq!(BirthDate::parse("07/03/80"), None);
    }

    #[test]
    fn invalid_pointers_are_named() {
        let f = Fields {
            phone: "phone".into(),
            ..Fields::default()
        };
        assert_eq!(f.invalid(), vec!["phone"]);
        assert!(Fields::default().invalid().is_empty());
    }
}
