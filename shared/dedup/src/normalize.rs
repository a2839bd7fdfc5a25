//! Text as clinics type it, reduced to what comparing needs: lower case,
//! Latin letters without their accents, digits, and single spaces.

/// Lower case, accents folded to their base letter, every run of anything
/// that is not a letter or digit turned into one space, trimmed.
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars().flat_map(char::to_lowercase) {
        let c = fold(c);
        if c.is_alphanumeric() {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push(c);
        } else {
            space = true;
        }
    }
    out
}

/// Only the digits of `s` (a phone number or an id typed with spaces,
/// dashes or dots).
pub fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// Letters and digits only, lower case, no spaces: national ids such as
/// `AB 12-345` and `ab12345` are the same id.
pub fn alnum(s: &str) -> String {
    text(s).chars().filter(|c| *c != ' ').collect()
}

/// A name as one word: `O'Brien`, `o brien` and `OBRIEN` agree.
pub fn name(s: &str) -> String {
    alnum(s)
}

fn fold(c: char) -> char {
    match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => 'a',
        'ç' | 'ć' | 'č' => 'c',
        'ď' | 'đ' => 'd',
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' => 'e',
        'ì' | 'í' | 'î' | 'ï' | 'ī' | 'į' | 'ı' => 'i',
        'ñ' | 'ń' | 'ň' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' => 'o',
        'ř' => 'r',
        'ś' | 'š' | 'ş' => 's',
        'ť' | 'ţ' => 't',
        'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' | 'ų' => 'u',
        'ý' | 'ÿ' => 'y',
        'ź' | 'ż' | 'ž' => 'z',
        'ł' => 'l',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_lower_case_folded_and_single_spaced() {
        assert_eq!(text("  José  O'Brien-Núñez "), "jose o brien nunez");
        assert_eq!(text("12, Main St."), "12 main st");
        assert_eq!(text("---"), "");
    }

    #[test]
    fn names_and_ids_lose_their_separators() {
        assert_eq!(name("O'Brien"), "obrien");
        assert_eq!(alnum("AB 12-345"), "ab12345");
        assert_eq!(digits("+254 (0)712-345 678"), "2540712345678");
    }
}
