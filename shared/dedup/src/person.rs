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

/// The most characters of a field kept ([`Person::from_document`] cuts
/// the rest): far more than any name, address or id needs, and short
/// enough for every field of a record to fit in one index row.
pub const MAX_FIELD_CHARS: usize = 200;

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
        // Empty is absent; a value longer than anyone's is cut, so that a
        // stored row (and a key made of it) stays short.
        let nonempty = |mut s: String| {
            if let Some((cut, _)) = s.char_indices().nth(MAX_FIELD_CHARS) {
                s.truncate(cut);
            }
            (!s.is_empty()).then_some(s)
        };
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

/// Separates the fields of a stored row ([`Person::to_row`]): normalised
/// values (letters, digits, spaces) never hold it.
const ROW_SEPARATOR: char = '\u{1f}';

/// The version of the row format, its first field.
const ROW_VERSION: &str = "1";

impl Person {
    /// The fields as one short text, to store beside each of the record's
    /// blocking keys so that a block's members are read with their fields
    /// in one range: the format's version (`1`), then given name, family
    /// name, birth date (`YYYYMMDD`), sex, address, phone and national id,
    /// separated by U+001F, an absent field empty. Read back by
    /// [`Person::from_row`].
    pub fn to_row(&self) -> String {
        let fields = [
            self.given_name.as_deref(),
            self.family_name.as_deref(),
            self.birth_date.as_ref().map(|d| d.0.as_str()),
            self.sex.as_deref(),
            self.address.as_deref(),
            self.phone.as_deref(),
            self.national_id.as_deref(),
        ];
        let mut row = String::with_capacity(
            ROW_VERSION.len() + 7 + fields.iter().flatten().map(|f| f.len()).sum::<usize>(),
        );
        row.push_str(ROW_VERSION);
        for field in fields {
            row.push(ROW_SEPARATOR);
            // A value set by hand may hold anything: the separator is
            // never written inside one.
            row.extend(
                field
                    .unwrap_or("")
                    .chars()
                    .map(|c| if c == ROW_SEPARATOR { ' ' } else { c }),
            );
        }
        row
    }

    /// The fields of a row written by [`Person::to_row`]; `None` for a row
    /// of another format or version, or a birth date that is not eight
    /// digits.
    pub fn from_row(row: &str) -> Option<Person> {
        PersonView::from_row(row).map(|v| v.to_person())
    }

    /// The fields, borrowed.
    pub fn view(&self) -> PersonView<'_> {
        PersonView {
            given_name: self.given_name.as_deref(),
            family_name: self.family_name.as_deref(),
            birth_date: self.birth_date.as_ref().map(|d| d.0.as_str()),
            sex: self.sex.as_deref(),
            address: self.address.as_deref(),
            phone: self.phone.as_deref(),
            national_id: self.national_id.as_deref(),
        }
    }
}

/// A patient's identifying fields borrowed from a [`Person`] or from a
/// stored row ([`PersonView::from_row`]), so that comparing a stored
/// record copies nothing. The birth date is written `YYYYMMDD`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PersonView<'a> {
    pub given_name: Option<&'a str>,
    pub family_name: Option<&'a str>,
    pub birth_date: Option<&'a str>,
    pub sex: Option<&'a str>,
    pub address: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub national_id: Option<&'a str>,
}

impl<'a> PersonView<'a> {
    /// [`Person::from_row`] without copying the fields.
    pub fn from_row(row: &'a str) -> Option<PersonView<'a>> {
        let mut parts = row.split(ROW_SEPARATOR);
        if parts.next()? != ROW_VERSION {
            return None;
        }
        let mut next = || -> Option<Option<&'a str>> {
            let part = parts.next()?;
            Some((!part.is_empty()).then_some(part))
        };
        let given_name = next()?;
        let family_name = next()?;
        let birth_date = match next()? {
            None => None,
            Some(d) if d.len() == 8 && d.bytes().all(|c| c.is_ascii_digit()) => Some(d),
            Some(_) => return None,
        };
        let view = PersonView {
            given_name,
            family_name,
            birth_date,
            sex: next()?,
            address: next()?,
            phone: next()?,
            national_id: next()?,
        };
        parts.next().is_none().then_some(view)
    }

    /// The fields, owned.
    pub fn to_person(&self) -> Person {
        let own = |s: Option<&str>| s.map(str::to_owned);
        Person {
            given_name: own(self.given_name),
            family_name: own(self.family_name),
            birth_date: self.birth_date.map(|d| BirthDate(d.to_owned())),
            sex: own(self.sex),
            address: own(self.address),
            phone: own(self.phone),
            national_id: own(self.national_id),
        }
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
    fn a_field_longer_than_anyone_s_is_cut() {
        let long = "ab".repeat(MAX_FIELD_CHARS);
        let p = Person::from_document(
            &json!({"address": long, "given_name": "é".repeat(300)}),
            &Fields::default(),
        );
        assert_eq!(p.address.as_deref(), Some(&long[..MAX_FIELD_CHARS]));
        assert_eq!(
            p.given_name.map(|n| n.chars().count()),
            Some(MAX_FIELD_CHARS)
        );
    }

    #[test]
    fn a_row_reads_back_as_the_same_person() {
        let full = Person::from_document(
            &json!({
                "given_name": "José", "family_name": "O'Brien", "born": "1980-03-07",
                "sex": "F", "address": "12, Main St.", "phone": "+254 712 345",
                "national_id": "ab-123"
            }),
            &Fields::default(),
        );
        let partial = Person {
            family_name: Some("otieno".into()),
            phone: Some("0712345678".into()),
            ..Person::default()
        };
        for p in [full, partial, Person::default()] {
            assert_eq!(Person::from_row(&p.to_row()), Some(p.clone()), "{p:?}");
        }
        // A separator typed into a value set by hand does not shift the
        // fields after it.
        let odd = Person {
            given_name: Some("a\u{1f}b".into()),
            sex: Some("f".into()),
            ..Person::default()
        };
        let back = Person::from_row(&odd.to_row()).expect("row");
        assert_eq!(back.given_name.as_deref(), Some("a b"));
        assert_eq!(back.sex.as_deref(), Some("f"));
    }

    #[test]
    fn rows_of_another_shape_are_refused() {
        let row = Person {
            given_name: Some("ann".into()),
            ..Person::default()
        }
        .to_row();
        assert!(Person::from_row(&row).is_some());
        assert_eq!(Person::from_row(&row.replacen('1', "2", 1)), None);
        assert_eq!(Person::from_row(&format!("{row}\u{1f}")), None);
        assert_eq!(Person::from_row(&row[..row.len() - 1]), None);
        assert_eq!(Person::from_row("{\"given_name\":\"ann\"}"), None);
        assert_eq!(
            Person::from_row("1\u{1f}ann\u{1f}\u{1f}1980\u{1f}\u{1f}\u{1f}\u{1f}"),
            None
        );
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
