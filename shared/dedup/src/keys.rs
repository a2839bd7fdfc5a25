//! Blocking keys: short strings that a person's two records very likely
//! share, however they were misspelled, and that few other people share.
//! Only records with a key in common are compared, so the cost of finding
//! the candidates for one record follows the size of its blocks, not the
//! number of records.
//!
//! No single field survives every error, so each key combines two fields
//! loosely (how a name sounds, a year, a day of the year), and there are
//! several: a typo in the family name is caught by the given name's keys,
//! a wrong year by the day-and-month keys, swapped names by the unordered
//! name pair, a wholly different name by the birth date with the address's
//! numbers, a wrong birth date by a name with the address's numbers
//! (house number, postcode).

use std::collections::BTreeSet;

use rphonetic::DoubleMetaphone;

use crate::person::Person;

/// The blocking keys of `p`, sorted, without repeats. Each key starts with
/// the name of the rule that made it, so keys of different rules never
/// collide.
pub fn blocking_keys(p: &Person) -> Vec<String> {
    let mut keys = BTreeSet::new();
    let dm = DoubleMetaphone::default();
    let sounds = |name: &Option<String>| -> Vec<String> {
        let Some(name) = name else { return Vec::new() };
        let e = dm.double_metaphone(name);
        let mut codes = vec![e.primary()];
        if e.alternate() != e.primary() {
            codes.push(e.alternate());
        }
        codes.retain(|c| !c.is_empty());
        codes
    };
    let given = sounds(&p.given_name);
    let family = sounds(&p.family_name);
    let date = p.birth_date.as_ref();
    let year = date.map(|d| d.year());
    // Day and month in either order (a swap is a common slip).
    let day_month = date.map(|d| {
        let (m, dd) = (d.month(), d.day());
        if m <= dd {
            format!("{m}{dd}")
        } else {
            format!("{dd}{m}")
        }
    });
    let numbers: Vec<&str> = p
        .address
        .as_deref()
        .map(|a| {
            a.split(' ')
                .filter(|w| w.bytes().all(|c| c.is_ascii_digit()))
                .take(3)
                .collect()
        })
        .unwrap_or_default();

    for f in &family {
        if let Some(y) = year {
            keys.insert(format!("fy:{f}:{y}"));
        }
        if let Some(dm) = &day_month {
            keys.insert(format!("fd:{f}:{dm}"));
        }
        for g in &given {
            let (x, y) = if f <= g { (f, g) } else { (g, f) };
            keys.insert(format!("gf:{x}:{y}"));
        }
    }
    for g in &given {
        if let Some(y) = year {
            keys.insert(format!("gy:{g}:{y}"));
        }
        if let Some(dm) = &day_month {
            keys.insert(format!("gd:{g}:{dm}"));
        }
    }
    if let (Some(y), Some(dm)) = (year, &day_month) {
        keys.insert(format!("d:{y}{dm}"));
    }
    for n in &numbers {
        for f in &family {
            keys.insert(format!("fa:{f}:{n}"));
        }
        for g in &given {
            keys.insert(format!("ga:{g}:{n}"));
        }
    }
    if let Some(dm) = &day_month {
        for n in &numbers {
            keys.insert(format!("da:{dm}:{n}"));
        }
    }
    if let Some(phone) = p.phone.as_ref().filter(|p| p.len() >= 7) {
        keys.insert(format!("p:{}", &phone[phone.len().saturating_sub(9)..]));
    }
    if let Some(id) = &p.national_id {
        keys.insert(format!("n:{id}"));
    }
    keys.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::person::Fields;
    use serde_json::json;

    fn keys(v: serde_json::Value) -> Vec<String> {
        blocking_keys(&Person::from_document(&v, &Fields::default()))
    }

    fn share(a: &[String], b: &[String]) -> bool {
        a.iter().any(|k| b.contains(k))
    }

    #[test]
    fn misspelled_swapped_and_transposed_records_share_a_key() {
        let a = keys(
            json!({"given_name": "Catherine", "family_name": "Smith", "born": "1980-03-07", "address": "12 Moi Avenue"}),
        );
        for b in [
            json!({"given_name": "Kathryn", "family_name": "Smyth", "born": "1980-03-07"}),
            json!({"given_name": "Smith", "family_name": "Catherine", "born": "1908-03-07"}),
            json!({"given_name": "Catherine", "family_name": "Smith", "born": "1980-07-03"}),
            json!({"given_name": "Katrina", "family_name": "Jones", "born": "1981-03-07", "address": "12 Moi Ave"}),
        ] {
            assert!(share(&a, &keys(b.clone())), "{b}");
        }
    }

    #[test]
    fn different_people_share_no_key() {
        let a =
            keys(json!({"given_name": "Catherine", "family_name": "Smith", "born": "1980-03-07"}));
        let b =
            keys(json!({"given_name": "Grace", "family_name": "Wanjiru", "born": "1985-09-30"}));
        assert!(!share(&a, &b));
    }

    #[test]
    fn a_person_with_nothing_has_no_keys() {
        assert!(keys(json!({})).is_empty());
    }
}
