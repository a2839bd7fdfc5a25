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

/// Separates a key's levels: a finer key is the coarser one, this
/// character, then more. Keys hold no other character at or below it
/// (they are made of rule names, name sounds, letters, digits and `:`), so
/// the records holding a level are those stored under a key equal to it or
/// starting with it and this separator: one range of a bytewise sorted
/// index, `[level, `[`block_end`]`(level))`, in which a record stored
/// under its finest key appears once per rule.
pub const LEVEL_SEPARATOR: char = ' ';

/// The end (excluded) of `level`'s block in a bytewise sorted index of
/// stored keys, see [`LEVEL_SEPARATOR`]: `level` followed by the character
/// after the separator.
pub fn block_end(level: &str) -> String {
    format!("{level}!")
}

/// One way of blocking: a coarse key, a finer one (the coarse key with a
/// little more of the record: the initial sound of the other name, the
/// decade of birth) and a finest one (the finer key with all of that
/// field: the other name's whole sound, the year of birth), each searched
/// instead of the one before when that one's block has grown too large to
/// search, as blocks do in a large population. Each finer key's block is
/// part of the one before it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub coarse: String,
    pub fine: Option<String>,
    pub finest: Option<String>,
}

impl Key {
    /// The keys from coarse to finest.
    pub fn levels(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.coarse.as_str())
            .chain(self.fine.as_deref())
            .chain(self.finest.as_deref())
    }

    /// The finest level: the key a record is stored under for this rule
    /// (every coarser level is a prefix of it, see [`LEVEL_SEPARATOR`]).
    pub fn finest_level(&self) -> &str {
        self.finest
            .as_deref()
            .or(self.fine.as_deref())
            .unwrap_or(&self.coarse)
    }

    /// The key to search: the first whose block holds at most `max_block`
    /// records (`size` tells a block's size); `None` when the coarse block
    /// is empty (so is every finer one) or every block is too large.
    pub fn searched(&self, max_block: usize, mut size: impl FnMut(&str) -> usize) -> Option<&str> {
        for level in self.levels() {
            match size(level) {
                0 => return None,
                n if n <= max_block => return Some(level),
                _ => {}
            }
        }
        None
    }
}

/// Every key of `p` to store (coarse and fine), sorted, without repeats.
/// Each key starts with the name of the rule that made it, so keys of
/// different rules never collide.
pub fn blocking_keys(p: &Person) -> Vec<String> {
    let mut keys = BTreeSet::new();
    for k in key_plan(p) {
        keys.insert(k.coarse);
        keys.extend(k.fine);
        keys.extend(k.finest);
    }
    keys.into_iter().collect()
}

/// The keys `p` is stored under, one per rule (its finest level, see
/// [`Key::finest_level`]), sorted, without repeats: each of its blocks, at
/// any level, is a range of these keys.
pub fn stored_keys(p: &Person) -> Vec<String> {
    let keys: BTreeSet<String> = key_plan(p)
        .iter()
        .map(|k| k.finest_level().to_owned())
        .collect();
    keys.into_iter().collect()
}

/// The keys to search for `p`'s duplicates, each coarse with its finer
/// fallbacks.
pub fn key_plan(p: &Person) -> Vec<Key> {
    let mut keys = BTreeSet::new();
    // The finer keys add a field's first letter, the finest all of it,
    // each after the level separator (which, like anything below it, is
    // kept out of the parts: a level's block must be a range).
    let clean = |s: String| {
        if s.chars().any(|c| c <= LEVEL_SEPARATOR) {
            s.chars()
                .map(|c| if c <= LEVEL_SEPARATOR { '_' } else { c })
                .collect()
        } else {
            s
        }
    };
    let mut add = |coarse: String, more: Option<(String, String)>| {
        let coarse = clean(coarse);
        let (fine, finest) = match more {
            Some((first, all)) => {
                let sep = LEVEL_SEPARATOR;
                let fine = format!("{coarse}{sep}{}", clean(first));
                let finest = format!("{fine}{sep}{}", clean(all));
                (Some(fine), Some(finest))
            }
            None => (None, None),
        };
        keys.insert(Key {
            coarse,
            fine,
            finest,
        });
    };
    let dm = DoubleMetaphone::default();
    let sounds = |name: &Option<String>| -> Vec<String> {
        let Some(name) = name else { return Vec::new() };
        // Double Metaphone is for Latin letters (and its implementation
        // slices by bytes): a name with other letters is keyed by its
        // first four letters as written.
        if !name.is_ascii() {
            return vec![format!("~{}", name.chars().take(4).collect::<String>())];
        }
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
    // The sound of each name (its initial, then all of it), to make a key
    // finer.
    let sound = |codes: &[String]| {
        let code = codes.first()?;
        Some((code.get(..1)?.to_string(), code.clone()))
    };
    let (gi, fi) = (sound(&given), sound(&family));
    let date = p.birth_date.as_ref();
    let year = date.map(|d| d.year());
    let decade = year.map(|y| (y[..3].to_string(), y.to_string()));
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
            let k = format!("fy:{f}:{y}");
            add(k, gi.clone());
        }
        if let Some(dm) = &day_month {
            let k = format!("fd:{f}:{dm}");
            add(k, gi.clone());
        }
        for g in &given {
            let (x, y) = if f <= g { (f, g) } else { (g, f) };
            let k = format!("gf:{x}:{y}");
            add(k, decade.clone());
        }
        for n in &numbers {
            let k = format!("fa:{f}:{n}");
            add(k, gi.clone());
        }
    }
    for g in &given {
        if let Some(y) = year {
            let k = format!("gy:{g}:{y}");
            add(k, fi.clone());
        }
        if let Some(dm) = &day_month {
            let k = format!("gd:{g}:{dm}");
            add(k, fi.clone());
        }
        for n in &numbers {
            let k = format!("ga:{g}:{n}");
            add(k, fi.clone());
        }
    }
    if let (Some(y), Some(dm)) = (year, &day_month) {
        let k = format!("d:{y}{dm}");
        add(k, fi.clone());
    }
    if let Some(dm) = &day_month {
        for n in &numbers {
            add(format!("da:{dm}:{n}"), None);
        }
    }
    if let Some(phone) = p.phone.as_ref().filter(|p| p.len() >= 7) {
        add(
            format!("p:{}", &phone[phone.len().saturating_sub(9)..]),
            None,
        );
    }
    if let Some(id) = &p.national_id {
        add(format!("n:{id}"), None);
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
    fn names_in_any_script_get_keys_without_panicking() {
        for given in ["Cường", "Иван", "cж", "李明", "Ờ"] {
            let k = keys(
                json!({"given_name": given, "family_name": "Nguyễn Văn", "born": "1990-01-02"}),
            );
            assert!(k.iter().any(|k| k.starts_with("gy:")), "{given}: {k:?}");
        }
        let a = keys(json!({"given_name": "Иван", "family_name": "Петров", "born": "1990-01-02"}));
        let b = keys(json!({"given_name": "Иван", "family_name": "Петров", "born": "1990-01-03"}));
        assert!(share(&a, &b));
    }

    #[test]
    fn each_level_s_block_is_a_range_of_the_stored_keys() {
        let people = [
            json!({"given_name": "Catherine", "family_name": "Smith", "born": "1980-03-07", "address": "12 Moi Avenue 00100", "phone": "0712 345 678", "national_id": "AB 12"}),
            json!({"given_name": "Иван", "family_name": "Петров", "born": "1990-01-02"}),
            json!({"given_name": "Ann", "born": "1912-12-12", "address": "1 2 3 4"}),
            json!({"family_name": "O'Neil", "born": "2001-10-03"}),
        ];
        for v in people {
            let p = Person::from_document(&v, &Fields::default());
            let stored = stored_keys(&p);
            for key in key_plan(&p) {
                for level in key.levels() {
                    // No character at or below the separator but the
                    // separator itself between levels.
                    let parts = level.split(LEVEL_SEPARATOR);
                    assert!(
                        parts
                            .clone()
                            .all(|s| !s.is_empty() && s.chars().all(|c| c > LEVEL_SEPARATOR)),
                        "{level:?}"
                    );
                    let end = block_end(level);
                    let in_range: Vec<&str> = stored
                        .iter()
                        .map(String::as_str)
                        .filter(|s| *s >= level && *s < end.as_str())
                        .collect();
                    // Exactly the stored key of this rule falls in it.
                    assert_eq!(
                        in_range,
                        vec![key.finest_level()],
                        "{level:?} in {stored:?}"
                    );
                }
                assert!(key.finest_level().starts_with(&key.coarse));
            }
        }
    }

    #[test]
    fn a_key_that_merely_starts_like_another_is_outside_its_block() {
        // "fa:SM0:12" and "fa:SM0:123" are different blocks.
        let level = "fa:SM0:12";
        let end = block_end(level);
        assert!("fa:SM0:123 K KTRN" >= level && "fa:SM0:123 K KTRN" > end.as_str());
        assert!("fa:SM0:12 K KTRN" >= level && "fa:SM0:12 K KTRN" < end.as_str());
    }

    #[test]
    fn a_person_with_nothing_has_no_keys() {
        assert!(keys(json!({})).is_empty());
        assert!(stored_keys(&Person::default()).is_empty());
    }
}
