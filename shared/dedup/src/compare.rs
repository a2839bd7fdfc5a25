//! How alike two patients are: a similarity per field in `[0, 1]` and one
//! score, the weighted share of the identifying evidence that agrees.
//!
//! Each field's similarity is built for the errors clinics make: names by
//! Jaro-Winkler (typos weigh less near the end of a name, as people
//! misspell) raised to at least 0.9 when both names sound alike (Double
//! Metaphone), given and family names tried both ways round; birth dates
//! by digits (one mistyped digit, or day and month swapped, still count);
//! addresses word by word (Monge-Elkan), numbers exactly; phone numbers
//! and national ids by their digits, one slip allowed.
//!
//! The score is Fellegi and Sunter's: each field both records have adds
//! the log-odds of what was seen on it, `log2(m / u)` when it agrees and
//! `log2((1 - m) / (1 - u))` when it does not (partial agreement in
//! between), where `m` is how often one person's two records agree on the
//! field (data entry is not perfect) and `u` how often two different
//! people do (a birth date is shared by about one person in 25,000, a sex
//! by one in two). The weights come from those population figures, not
//! from any data set. The sum, less [`PRIOR_BITS`] (the odds against two
//! records picked from one block being one person), becomes a probability:
//! the score. A name alone, however rare, does not reach 0.8; a name with
//! a birth date or an address does; so do a birth date and an address
//! with one name wrong (a name replaced, as happens with nicknames and
//! married names).

use rphonetic::DoubleMetaphone;
use serde::Serialize;
use strsim::damerau_levenshtein;

use crate::person::{BirthDate, Person, PersonView};

/// `(m, u)` of each field, see the module's documentation.
const GIVEN_NAME: (f64, f64) = (0.9, 0.01);
const FAMILY_NAME: (f64, f64) = (0.9, 0.002);
/// Birth dates are often estimated or unknown (a default date typed in)
/// where people are not registered at birth.
const BIRTH_DATE: (f64, f64) = (0.8, 1.0 / 25_000.0);
const SEX: (f64, f64) = (0.95, 0.5);
/// Households share an address (about one in a thousand); people move,
/// and rural addresses are written in many ways.
const ADDRESS: (f64, f64) = (0.8, 0.001);
/// Phones change and are shared in a household.
const PHONE: (f64, f64) = (0.7, 0.0001);
const NATIONAL_ID: (f64, f64) = (0.95, 1e-7);

/// The odds against a pair being one person before its fields are looked
/// at, in bits: a score of 0.8 takes `PRIOR_BITS + 2` bits of evidence.
pub const PRIOR_BITS: f64 = 15.0;

/// Below this Jaro-Winkler similarity two words are unrelated (random
/// names score 0.4 to 0.7); at [`TEXT_AGREE`] and above they agree fully.
const TEXT_UNRELATED: f64 = 0.7;
const TEXT_AGREE: f64 = 0.95;

/// The evidence, in bits, of a field whose agreement is `a` in `[0, 1]`.
fn bits((m, u): (f64, f64), a: f64) -> f64 {
    let agree = (m / u).log2();
    let disagree = ((1.0 - m) / (1.0 - u)).log2();
    disagree + a * (agree - disagree)
}

/// One field compared: the two values as shown to a person, and their
/// similarity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldSimilarity {
    pub field: &'static str,
    pub a: String,
    pub b: String,
    pub similarity: f64,
}

/// Two patients compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// In `[0, 1]`; 1 when every field both have agrees exactly.
    pub score: f64,
    /// The fields both records have, in a fixed order.
    pub fields: Vec<FieldSimilarity>,
}

/// Compares two patients field by field.
pub fn compare(a: &Person, b: &Person) -> Comparison {
    compare_at_least(a, b, 0.0).unwrap_or(Comparison {
        score: 0.0,
        fields: Vec::new(),
    })
}

/// Compares two patients, or says `None` as soon as the score cannot reach
/// `min_score`: the cheap fields (birth date, sex, phone, national id)
/// first, then the names only when they could still make the difference,
/// the address (the costly field) last on the same condition; the values
/// shown are copied only for a pair that reaches `min_score`.
pub fn compare_at_least(a: &Person, b: &Person, min_score: f64) -> Option<Comparison> {
    compare_views_at_least(a.view(), b.view(), min_score)
}

/// [`compare_at_least`] of two records' fields as borrowed
/// ([`PersonView`], such as a stored row read without copying it).
pub fn compare_views_at_least(
    a: PersonView<'_>,
    b: PersonView<'_>,
    min_score: f64,
) -> Option<Comparison> {
    // score >= m  <=>  evidence >= PRIOR_BITS - log2(1/m - 1)
    let needed = if min_score <= 0.0 {
        f64::NEG_INFINITY
    } else if min_score >= 1.0 {
        f64::INFINITY
    } else {
        PRIOR_BITS - (1.0 / min_score - 1.0).log2()
    };
    let mut evidence = 0.0;
    // The most the fields not compared yet can add.
    let both = |x: Option<&str>, y: Option<&str>| x.is_some() && y.is_some();
    // Each name is worth at most its field's full agreement, whichever
    // way round the names are taken.
    let names_at_most = {
        let given = both(a.given_name, b.given_name) || both(a.given_name, b.family_name);
        let family = both(a.family_name, b.family_name) || both(a.family_name, b.given_name);
        let worth = |present: bool, mu| if present { bits(mu, 1.0) } else { 0.0 };
        worth(given, GIVEN_NAME) + worth(family, FAMILY_NAME)
    };
    let address_at_most = if both(a.address, b.address) {
        bits(ADDRESS, 1.0)
    } else {
        0.0
    };

    let date = match (a.birth_date, b.birth_date) {
        (Some(da), Some(db)) => {
            let sim = date_digits_sim(da, db);
            evidence += bits(BIRTH_DATE, sim);
            Some((sim, da, db))
        }
        _ => None,
    };
    let sex = match (a.sex, b.sex) {
        (Some(sa), Some(sb)) => {
            let sim = if sa == sb { 1.0 } else { 0.0 };
            evidence += bits(SEX, sim);
            Some((sim, sa, sb))
        }
        _ => None,
    };
    let phone = match (a.phone, b.phone) {
        (Some(pa), Some(pb)) => {
            let sim = phone_sim(pa, pb);
            evidence += bits(PHONE, sim);
            Some((sim, pa, pb))
        }
        _ => None,
    };
    let national_id = match (a.national_id, b.national_id) {
        (Some(ia), Some(ib)) => {
            let sim = id_sim(ia, ib);
            evidence += bits(NATIONAL_ID, sim);
            Some((sim, ia, ib))
        }
        _ => None,
    };
    if evidence + names_at_most + address_at_most < needed {
        return None;
    }

    // Names, straight or swapped, whichever agrees better (a swap must
    // agree clearly better, so that it is not chosen on noise). Spelling
    // first: how they sound (the costly part) can only raise a similarity
    // to 0.9, so a pair that cannot reach `needed` even then is left here.
    let spelled_straight = (
        pair_spelling(a.given_name, b.given_name),
        pair_spelling(a.family_name, b.family_name),
    );
    let spelled_swapped = (
        pair_spelling(a.given_name, b.family_name),
        pair_spelling(a.family_name, b.given_name),
    );
    // The most a name can add, taken either way round (absent: nothing).
    let at_most = |mu, x: Option<f64>, y: Option<f64>| {
        let worth = |s: Option<f64>| s.map_or(0.0, |s| bits(mu, text_agreement(sound_at_most(s))));
        worth(x).max(worth(y))
    };
    let names_at_most = at_most(GIVEN_NAME, spelled_straight.0, spelled_swapped.0)
        + at_most(FAMILY_NAME, spelled_straight.1, spelled_swapped.1);
    if evidence + names_at_most + address_at_most < needed - MARGIN {
        return None;
    }
    let straight = (
        pair_sound(a.given_name, b.given_name, spelled_straight.0),
        pair_sound(a.family_name, b.family_name, spelled_straight.1),
    );
    let swapped = (
        pair_sound(a.given_name, b.family_name, spelled_swapped.0),
        pair_sound(a.family_name, b.given_name, spelled_swapped.1),
    );
    let total = |s: (Option<f64>, Option<f64>)| s.0.unwrap_or(0.0) + s.1.unwrap_or(0.0);
    let swap = swapped.0.is_some() && swapped.1.is_some() && total(swapped) > total(straight) + 0.3;
    let (given, family) = if swap { swapped } else { straight };
    let (b_given, b_family) = if swap {
        (b.family_name, b.given_name)
    } else {
        (b.given_name, b.family_name)
    };
    let given = match (given, a.given_name, b_given) {
        (Some(sim), Some(va), Some(vb)) => {
            evidence += bits(GIVEN_NAME, text_agreement(sim));
            Some((sim, va, vb))
        }
        _ => None,
    };
    let family = match (family, a.family_name, b_family) {
        (Some(sim), Some(va), Some(vb)) => {
            evidence += bits(FAMILY_NAME, text_agreement(sim));
            Some((sim, va, vb))
        }
        _ => None,
    };
    let address = match (a.address, b.address) {
        (Some(aa), Some(ab)) => {
            if evidence + address_at_most < needed {
                return None;
            }
            // The least similarity that can still reach `needed`: the
            // words are compared only while it can be reached.
            let (agree, disagree) = (bits(ADDRESS, 1.0), bits(ADDRESS, 0.0));
            let least = (needed - evidence - disagree) / (agree - disagree);
            let least_sim = if least > 0.0 {
                TEXT_UNRELATED + least * (TEXT_AGREE - TEXT_UNRELATED) - MARGIN
            } else {
                f64::NEG_INFINITY
            };
            let sim = address_sim_at_least(aa, ab, least_sim)?;
            evidence += bits(ADDRESS, text_agreement(sim));
            Some((sim, aa, ab))
        }
        _ => None,
    };
    let score = 1.0 / (1.0 + (PRIOR_BITS - evidence).exp2());
    if score < min_score && min_score > 0.0 {
        return None;
    }
    // The fields both records have, in a fixed order: those that identify
    // a person, the address, then phone and national id.
    let show = |field: &'static str, seen: Option<(f64, &str, &str)>| {
        seen.map(|(sim, va, vb)| FieldSimilarity {
            field,
            a: va.to_owned(),
            b: vb.to_owned(),
            similarity: round(sim),
        })
    };
    let date = date.map(|(sim, da, db)| FieldSimilarity {
        field: "birth_date",
        a: display_date(da),
        b: display_date(db),
        similarity: round(sim),
    });
    let fields = [
        show("given_name", given),
        show("family_name", family),
        date,
        show("sex", sex),
        show("address", address),
        show("phone", phone),
        show("national_id", national_id),
    ]
    .into_iter()
    .flatten()
    .collect();
    Some(Comparison {
        score: round(score),
        fields,
    })
}

/// A date written `YYYYMMDD` as `YYYY-MM-DD` ([`BirthDate::display`]).
fn display_date(digits: &str) -> String {
    match (digits.get(..4), digits.get(4..6), digits.get(6..8)) {
        (Some(y), Some(m), Some(d)) if digits.len() == 8 => format!("{y}-{m}-{d}"),
        _ => digits.to_owned(),
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Room left in the bounds that end a comparison early, for rounding: a
/// pair is given up only when it falls short by more than this.
const MARGIN: f64 = 1e-6;

/// Two names' similarity by spelling alone ([`name_spelling`]).
fn pair_spelling(a: Option<&str>, b: Option<&str>) -> Option<f64> {
    Some(name_spelling(a?, b?))
}

/// Two names' similarity ([`name_sim`]) from their spelling's.
fn pair_sound(a: Option<&str>, b: Option<&str>, spelling: Option<f64>) -> Option<f64> {
    Some(name_sound(a?, b?, spelling?))
}

/// Jaro-Winkler, at least 0.9 when the names sound alike.
pub fn name_sim(a: &str, b: &str) -> f64 {
    name_sound(a, b, name_spelling(a, b))
}

/// A name similarity by spelling: 1 when equal, else Jaro-Winkler.
fn name_spelling(a: &str, b: &str) -> f64 {
    if a == b { 1.0 } else { jaro_winkler(a, b) }
}

/// Whether a spelling similarity is one that sound may raise: names far
/// apart in spelling are not looked at for sound (it is the costly part of
/// a comparison, and such names rarely sound alike).
fn sound_may_raise(spelling: f64) -> bool {
    (TEXT_UNRELATED - 0.1..0.9).contains(&spelling)
}

/// The most [`name_sound`] can make of a spelling similarity.
fn sound_at_most(spelling: f64) -> f64 {
    if sound_may_raise(spelling) {
        0.9
    } else {
        spelling
    }
}

/// [`name_sim`] of `a` and `b` from their [`name_spelling`]: raised to
/// 0.9 when they sound alike.
fn name_sound(a: &str, b: &str, spelling: f64) -> f64 {
    if sound_may_raise(spelling) && sounds_alike(a, b) {
        0.9
    } else {
        spelling
    }
}

fn sounds_alike(a: &str, b: &str) -> bool {
    // Double Metaphone is for Latin letters (and its implementation slices
    // by bytes): names with other letters are compared by spelling only.
    if !a.is_ascii() || !b.is_ascii() {
        return false;
    }
    let dm = DoubleMetaphone::default();
    let (ea, eb) = (dm.double_metaphone(a), dm.double_metaphone(b));
    let (pa, pb) = (ea.primary(), eb.primary());
    !pa.is_empty() && (pa == pb || pa == eb.alternate() || ea.alternate() == pb)
}

/// Jaro-Winkler exactly as `strsim::jaro_winkler` computes it (the same
/// steps in the same order, so the same value to the last bit), without
/// its allocations and character decoding for ASCII text of at most
/// [`SHORT`] bytes (names and address words): it is most of the cost of a
/// comparison. Other text goes to `strsim`.
pub fn jaro_winkler(a: &str, b: &str) -> f64 {
    if !a.is_ascii() || !b.is_ascii() || a.len() > SHORT || b.len() > SHORT {
        return strsim::jaro_winkler(a, b);
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let sim = jaro_short(a, b);
    if sim > 0.7 {
        let prefix = a.iter().take(4).zip(b).take_while(|(x, y)| x == y).count();
        sim + 0.1 * prefix as f64 * (1.0 - sim)
    } else {
        sim
    }
}

/// The longest text [`jaro_winkler`] compares itself.
const SHORT: usize = 64;

/// Jaro similarity of two byte strings of at most [`SHORT`] bytes, as
/// `strsim::generic_jaro`.
fn jaro_short(a: &[u8], b: &[u8]) -> f64 {
    let (a_len, b_len) = (a.len(), b.len());
    if a_len == 0 && b_len == 0 {
        return 1.0;
    } else if a_len == 0 || b_len == 0 {
        return 0.0;
    }
    let search_range = (a_len.max(b_len) / 2).saturating_sub(1);
    let mut a_flags = [false; SHORT];
    let mut b_flags = [false; SHORT];
    let mut matches = 0_usize;
    for (i, &x) in a.iter().enumerate() {
        let from = i.saturating_sub(search_range);
        let to = b_len.min(i + search_range + 1);
        for j in from..to {
            if x == b[j] && !b_flags[j] {
                a_flags[i] = true;
                b_flags[j] = true;
                matches += 1;
                break;
            }
        }
    }
    if matches == 0 {
        return 0.0;
    }
    let mut transpositions = 0_usize;
    let mut j = 0;
    for (i, &x) in a.iter().enumerate() {
        if a_flags[i] {
            // As many flags are set in b as in a: the next one exists.
            while j < b_len && !b_flags[j] {
                j += 1;
            }
            if j < b_len && x != b[j] {
                transpositions += 1;
            }
            j += 1;
        }
    }
    transpositions /= 2;
    ((matches as f64 / a_len as f64)
        + (matches as f64 / b_len as f64)
        + ((matches - transpositions) as f64 / matches as f64))
        / 3.0
}

/// How much two similar texts count as agreeing: nothing below
/// [`TEXT_UNRELATED`], fully from [`TEXT_AGREE`], linearly between.
fn text_agreement(sim: f64) -> f64 {
    ((sim - TEXT_UNRELATED) / (TEXT_AGREE - TEXT_UNRELATED)).clamp(0.0, 1.0)
}

/// 1 when equal; 0.9 for day and month swapped; 0.8 for one digit typed
/// wrong (or two neighbours swapped); 0.4 for two; 0 otherwise.
pub fn date_sim(a: &BirthDate, b: &BirthDate) -> f64 {
    date_digits_sim(&a.0, &b.0)
}

/// [`date_sim`] of two dates written `YYYYMMDD` (as [`BirthDate`] holds
/// them).
fn date_digits_sim(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    fn part(s: &str, at: std::ops::Range<usize>) -> &str {
        s.get(at).unwrap_or("")
    }
    if part(a, 0..4) == part(b, 0..4)
        && part(a, 4..6) == part(b, 6..8)
        && part(a, 6..8) == part(b, 4..6)
    {
        return 0.9;
    }
    if one_edit(a, b) {
        return 0.8;
    }
    if edits_at_least(a, b) > 2 {
        return 0.0;
    }
    match damerau_levenshtein_short(a, b) {
        1 => 0.8,
        2 => 0.4,
        _ => 0.0,
    }
}

/// Whether `a` and `b` are one edit apart (one letter changed, added,
/// removed, or two neighbours swapped): a Damerau-Levenshtein distance of
/// exactly 1, without its tables.
fn one_edit(a: &str, b: &str) -> bool {
    if !a.is_ascii() || !b.is_ascii() {
        return damerau_levenshtein(a, b) == 1;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let p = short.iter().zip(long).take_while(|(x, y)| x == y).count();
    match long.len() - short.len() {
        0 if p == short.len() => false,
        0 => {
            short[p + 1..] == long[p + 1..]
                || (p + 1 < short.len()
                    && short[p] == long[p + 1]
                    && short[p + 1] == long[p]
                    && short[p + 2..] == long[p + 2..])
        }
        1 => short[p..] == long[p + 1..],
        _ => false,
    }
}

/// A lower bound of the Damerau-Levenshtein distance of two ASCII texts
/// (0 for others): an edit changes the count of at most two letters by
/// one each.
fn edits_at_least(a: &str, b: &str) -> usize {
    if !a.is_ascii() || !b.is_ascii() {
        return 0;
    }
    let digits = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
    let off: u32 = if digits(a) && digits(b) {
        // Dates and numbers: ten counts to look at instead of 128.
        let mut counts = [0i32; 10];
        for &c in a.as_bytes() {
            counts[usize::from(c - b'0')] += 1;
        }
        for &c in b.as_bytes() {
            counts[usize::from(c - b'0')] -= 1;
        }
        counts.iter().map(|c| c.unsigned_abs()).sum()
    } else {
        let mut counts = [0i32; 128];
        for &c in a.as_bytes() {
            counts[usize::from(c)] += 1;
        }
        for &c in b.as_bytes() {
            counts[usize::from(c)] -= 1;
        }
        counts.iter().map(|c| c.unsigned_abs()).sum()
    };
    (off as usize).div_ceil(2)
}

/// Monge-Elkan in both directions: each word's best match in the other
/// address, averaged; words with digits (house numbers, postcodes) match
/// only exactly or with one slip in a long number.
pub fn address_sim(a: &str, b: &str) -> f64 {
    address_sim_at_least(a, b, f64::NEG_INFINITY).unwrap_or(0.0)
}

/// [`address_sim`], or `None` as soon as it cannot reach `least` (each
/// word's best match is at most 1): the same value when it is returned.
fn address_sim_at_least(a: &str, b: &str, least: f64) -> Option<f64> {
    let wa: Vec<&str> = a.split(' ').collect();
    let wb: Vec<&str> = b.split(' ').collect();
    // The other direction adds at most 1 before halving.
    let there = monge_elkan_at_least(&wa, &wb, 2.0 * least - 1.0)?;
    let back = monge_elkan_at_least(&wb, &wa, 2.0 * least - there)?;
    Some((there + back) / 2.0)
}

/// Monge-Elkan of `a` against `b`, or `None` as soon as it cannot reach
/// `least` (the words left counted as matching fully).
fn monge_elkan_at_least(a: &[&str], b: &[&str], least: f64) -> Option<f64> {
    if a.is_empty() || b.is_empty() {
        return (0.0 >= least).then_some(0.0);
    }
    let n = a.len() as f64;
    let mut sum = 0.0;
    for (i, x) in a.iter().enumerate() {
        // A word's best match: the largest similarity, 1 at most.
        let mut best: f64 = 0.0;
        for y in b {
            best = best.max(word_sim(x, y));
            if best >= 1.0 {
                break;
            }
        }
        sum += best;
        let left = (a.len() - i - 1) as f64;
        if (sum + left) / n < least {
            return None;
        }
    }
    Some(sum / n)
}

fn word_sim(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    let numeric = |s: &str| s.bytes().any(|c| c.is_ascii_digit());
    if numeric(a) || numeric(b) {
        if a.len() >= 4 && b.len() >= 4 && one_edit(a, b) {
            0.8
        } else {
            0.0
        }
    } else {
        jaro_winkler(a, b)
    }
}

/// The Damerau-Levenshtein distance (adjacent transpositions, no
/// restriction on later edits) exactly as `strsim::damerau_levenshtein`
/// computes it, without its hash map and table allocations for ASCII text
/// of at most [`SHORT_EDIT`] bytes (birth dates, numbers). Other text goes
/// to `strsim`.
fn damerau_levenshtein_short(a: &str, b: &str) -> usize {
    if !a.is_ascii() || !b.is_ascii() || a.len() > SHORT_EDIT || b.len() > SHORT_EDIT {
        return damerau_levenshtein(a, b);
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (n, m) = (a.len(), b.len());
    if n == 0 {
        return m;
    }
    if m == 0 {
        return n;
    }
    // Lowrance and Wagner's table with a border row and column of
    // `max` (n + m), as strsim builds it.
    // Equal lengths differing in two places: two substitutions, or one
    // transposition when the two are neighbours holding each other's
    // letters (one edit cannot make two differences otherwise).
    if n == m {
        let mut differ = (0..n).filter(|&i| a[i] != b[i]);
        if let (Some(p), Some(q), None) = (differ.next(), differ.next(), differ.next()) {
            let swapped = q == p + 1 && a[p] == b[q] && a[q] == b[p];
            return if swapped { 1 } else { 2 };
        }
    }
    // Cells hold at most 2 (n + m) + 1 (a transposition from the
    // border), under 256 for these lengths: bytes keep the table small.
    const W: usize = SHORT_EDIT + 2;
    let max = (n + m) as u8;
    let mut d = [[0u8; W]; W];
    d[0][0] = max;
    for i in 0..=n {
        d[i + 1][0] = max;
        d[i + 1][1] = i as u8;
    }
    for j in 0..=m {
        d[0][j + 1] = max;
        d[1][j + 1] = j as u8;
    }
    // The last row where each byte was seen in `a`.
    let mut last_row = [0u8; 128];
    for i in 1..=n {
        let mut last_match_col = 0;
        for j in 1..=m {
            let i1 = usize::from(last_row[usize::from(b[j - 1])]);
            let j1 = last_match_col;
            let cost = if a[i - 1] == b[j - 1] {
                last_match_col = j;
                0
            } else {
                1
            };
            let substitution = usize::from(d[i][j]) + cost;
            let insertion = usize::from(d[i + 1][j]) + 1;
            let deletion = usize::from(d[i][j + 1]) + 1;
            let transposition = usize::from(d[i1][j1]) + (i - i1 - 1) + 1 + (j - j1 - 1);
            d[i + 1][j + 1] = substitution.min(insertion).min(deletion).min(transposition) as u8;
        }
        last_row[usize::from(a[i - 1])] = i as u8;
    }
    usize::from(d[n + 1][m + 1])
}

/// The longest text [`damerau_levenshtein_short`] compares itself.
const SHORT_EDIT: usize = 16;

/// 1 when equal or when the last nine digits are (a country code or a
/// trunk zero added); 0.7 for one digit wrong; 0 otherwise.
pub fn phone_sim(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    fn tail(s: &str) -> &str {
        s.get(s.len().saturating_sub(9)..).unwrap_or(s)
    }
    if a.len() >= 7 && b.len() >= 7 && tail(a) == tail(b) {
        return 1.0;
    }
    if one_edit(a, b) { 0.7 } else { 0.0 }
}

/// 1 when equal, 0.6 for one slip, 0 otherwise.
pub fn id_sim(a: &str, b: &str) -> f64 {
    if a == b {
        1.0
    } else if one_edit(a, b) {
        0.6
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::person::Fields;
    use serde_json::json;

    fn person(v: serde_json::Value) -> Person {
        Person::from_document(&v, &Fields::default())
    }

    #[test]
    fn the_same_person_typed_twice_scores_one() {
        let a =
            person(json!({"given_name": "Amina", "family_name": "Odhiambo", "born": "1990-04-12"}));
        let c = compare(&a, &a);
        assert_eq!(c.score, 1.0);
        assert_eq!(c.fields.len(), 3);
    }

    #[test]
    fn typos_swaps_and_transposed_dates_still_match() {
        let a = person(
            json!({"given_name": "Amina", "family_name": "Odhiambo", "born": "1990-04-12", "address": "12 Kisumu Road"}),
        );
        for b in [
            json!({"given_name": "Amina", "family_name": "Odhiambi", "born": "1990-04-12", "address": "12 Kisumu Rd"}),
            json!({"given_name": "Odhiambo", "family_name": "Amina", "born": "1990-04-12", "address": "12 Kisumu Road"}),
            json!({"given_name": "Aminah", "family_name": "Odhiambo", "born": "1990-12-04", "address": "12 Kisumu Road"}),
            json!({"given_name": "Amina", "family_name": "Odhiambo", "born": "1990-04-13"}),
        ] {
            let c = compare(&a, &person(b.clone()));
            assert!(c.score >= 0.8, "{b}: {c:?}");
        }
    }

    #[test]
    fn a_shared_name_alone_or_a_relative_is_not_a_match() {
        let a = person(
            json!({"given_name": "John", "family_name": "Smith", "born": "1970-01-01", "address": "4 Lake View"}),
        );
        let name_only = person(json!({"given_name": "John", "family_name": "Smith"}));
        assert!(compare(&a, &name_only).score < 0.8);
        let brother = person(
            json!({"given_name": "Peter", "family_name": "Smith", "born": "1974-06-20", "address": "4 Lake View"}),
        );
        assert!(compare(&a, &brother).score < 0.6);
        let stranger = person(
            json!({"given_name": "Grace", "family_name": "Wanjiru", "born": "1985-09-30", "address": "Plot 7 Moi Avenue"}),
        );
        assert!(compare(&a, &stranger).score < 0.3);
    }

    #[test]
    fn names_that_sound_alike_are_close() {
        assert!(name_sim("catherine", "kathryn") >= 0.9);
        assert!(name_sim("smith", "smyth") >= 0.9);
        assert!(name_sim("grace", "wanjiru") < 0.7);
    }

    #[test]
    fn names_in_any_script_are_compared_without_panicking() {
        for (a, b) in [
            ("cường", "cuong"),
            ("иван", "иванн"),
            ("cж", "ch"),
            ("ờờ", "ơ"),
            ("李", "李明"),
        ] {
            let s = name_sim(a, b);
            assert!((0.0..=1.0).contains(&s), "{a} {b}: {s}");
        }
    }

    #[test]
    fn phone_numbers_with_and_without_country_code_agree() {
        assert_eq!(phone_sim("254712345678", "0712345678"), 1.0);
        assert_eq!(phone_sim("0712345678", "0712345679"), 0.7);
        assert_eq!(phone_sim("0712345678", "0733000000"), 0.0);
    }

    #[test]
    fn house_numbers_must_agree_exactly() {
        assert!(address_sim("12 kisumu road", "12 kisumu road") == 1.0);
        assert!(address_sim("12 kisumu road", "21 kisumu road") < 0.8);
    }

    #[test]
    fn jaro_winkler_is_strsim_s_to_the_last_bit() {
        let mut words: Vec<String> = [
            "",
            "a",
            "ab",
            "ba",
            "martha",
            "marhta",
            "dixon",
            "dicksonx",
            "jellyfish",
            "smellyfish",
            "catherine",
            "kathryn",
            "odhiambo",
            "odhiambi",
            "12",
            "road",
            "rd",
            "aaaa",
            "aaab",
            "abab",
            "cheeseburger",
            "cheese fries",
        ]
        .iter()
        .map(|w| (*w).to_owned())
        .collect();
        // Generated words over a small alphabet (many repeated letters, so
        // many transpositions), of every length up to the fast path's
        // limit and past it.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for len in 0..70 {
            for _ in 0..6 {
                let word = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        char::from(b'a' + (state % 5) as u8)
                    })
                    .collect();
                words.push(word);
            }
        }
        for a in &words {
            for b in &words {
                let (ours, theirs) = (jaro_winkler(a, b), strsim::jaro_winkler(a, b));
                assert_eq!(ours.to_bits(), theirs.to_bits(), "{a:?} {b:?}");
            }
        }
        assert_eq!(
            jaro_winkler("cường", "cuong"),
            strsim::jaro_winkler("cường", "cuong")
        );
    }

    #[test]
    fn the_short_damerau_levenshtein_is_strsim_s() {
        let mut words: Vec<String> = ["", "a", "ab", "ba", "abc", "ca", "19800307", "19800703"]
            .iter()
            .map(|w| (*w).to_owned())
            .collect();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for len in 0..20 {
            for _ in 0..8 {
                let word = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        char::from(b'0' + (state % 4) as u8)
                    })
                    .collect();
                words.push(word);
            }
        }
        words.push("Иван".into());
        for a in &words {
            for b in &words {
                assert_eq!(
                    damerau_levenshtein_short(a, b),
                    damerau_levenshtein(a, b),
                    "{a:?} {b:?}"
                );
            }
        }
    }

    /// People built from few letters, so that many pairs are near one
    /// another and near the thresholds.
    fn near_people() -> Vec<Person> {
        let mut state = 0x1234_5678_9abc_def1_u64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let names = [
            "ann",
            "anne",
            "anna",
            "john",
            "jon",
            "joan",
            "smith",
            "smyth",
            "smit",
            "kamau",
            "kamao",
            "otieno",
            "otienno",
            "catherine",
            "kathryn",
        ];
        let words = [
            "road", "rd", "moi", "avenue", "ave", "kisumu", "12", "21", "120",
        ];
        (0..300)
            .map(|_| {
                let mut pick = |list: &[&str]| -> Option<String> {
                    let i = next(list.len() as u64 + 1) as usize;
                    list.get(i).map(|s| (*s).to_owned())
                };
                let given_name = pick(&names);
                let family_name = pick(&names);
                let birth_date = (next(5) > 0).then(|| {
                    BirthDate(format!(
                        "19{}{}0{}1{}",
                        8 + next(2),
                        next(2),
                        1 + next(3),
                        next(3)
                    ))
                });
                let sex = [None, Some("f"), Some("m")][next(3) as usize].map(str::to_owned);
                let address = (next(3) > 0).then(|| {
                    (0..1 + next(4))
                        .map(|_| words[next(words.len() as u64) as usize])
                        .collect::<Vec<_>>()
                        .join(" ")
                });
                let phone = (next(3) == 0).then(|| format!("07123456{}", 7 + next(2)));
                Person {
                    given_name,
                    family_name,
                    birth_date,
                    sex,
                    address,
                    phone,
                    national_id: None,
                }
            })
            .collect()
    }

    #[test]
    fn stopping_early_changes_no_pair_kept() {
        let people = near_people();
        let mut kept = [0; 3];
        for a in &people {
            for b in &people {
                let full = compare(a, b);
                for (k, min) in [0.3, 0.5, 0.8].into_iter().enumerate() {
                    match compare_at_least(a, b, min) {
                        Some(c) => {
                            kept[k] += 1;
                            assert_eq!(c, full, "{a:?} {b:?} at {min}");
                        }
                        // Dropped: below the threshold (rounding may show
                        // it at the threshold).
                        None => assert!(full.score <= min, "{a:?} {b:?} at {min}: {full:?}"),
                    }
                }
            }
        }
        // The set has pairs on both sides of each threshold.
        assert!(kept.iter().all(|&k| k > 1000 && k < 80_000), "{kept:?}");
    }

    #[test]
    fn the_quick_edit_checks_agree_with_damerau_levenshtein() {
        let words = [
            "",
            "1",
            "12",
            "21",
            "123",
            "132",
            "213",
            "1234",
            "1243",
            "2134",
            "12345",
            "1235",
            "0712345678",
            "0712345687",
            "0712354678",
            "712345678",
            "07123456789",
            "0812345678",
            "19800307",
            "19800703",
            "19810307",
            "18900307",
            "19800370",
            "abc",
            "acb",
            "ca",
            "abcd",
            "Иван",
            "Ивна",
            "Ива",
        ];
        for a in words {
            for b in words {
                let d = damerau_levenshtein(a, b);
                assert_eq!(one_edit(a, b), d == 1, "{a} {b}");
                assert!(edits_at_least(a, b) <= d, "{a} {b}");
            }
        }
    }
}
