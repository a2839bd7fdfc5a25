//! Numbers that must not change on their way into a record.
//!
//! Records hold the JSON data model as `serde_json` holds it: 64-bit
//! integers and 64-bit floating-point numbers. A number written with more
//! precision than that (a 23-digit national id, `0.1000000000000000001`,
//! `1e-400`) would be stored as a different number: `12345678901234567890123`
//! would come back as `1.2345678901234568e22`. Such numbers are refused
//! rather than silently changed; quoted, they are strings and keep every
//! digit.
//!
//! The rule, for YAML plain scalars and JSON alike:
//! - an integer (digits only, with an optional sign) must fit in 64 bits:
//!   from -9223372036854775808 to 18446744073709551615;
//! - a number with a fraction or an exponent must read back as the same
//!   decimal value from the shortest text of the 64-bit float it becomes:
//!   `0.1`, `1.5e300` and `2.50` pass, `0.10000000000000000001` does not.
//!
//! Keeping the exact text instead (serde_json's `arbitrary_precision`)
//! would change number equality (`1.0` and `1.00` would differ, so merges
//! would conflict on spelling) and the MessagePack form of every value on
//! the wire, and big integers would still be refused by the YAML side.

use serde_json::Value;

use super::scan::shorten;

/// A JSON text that is not acceptable, from [`parse_json_exact`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not valid JSON.
    #[error("not valid JSON: {message}")]
    Syntax {
        /// serde_json's description, with line and column.
        message: String,
    },
    /// A number that would not be stored exactly.
    #[error(
        "the number {number} cannot be stored exactly (it would become {stored}): records keep integers of at most 64 bits and decimals that survive a 64-bit float; send it as a string, in quotes, to keep every digit"
    )]
    InexactNumber {
        /// The number as written (cut if long).
        number: String,
        /// What it would have become (cut if long).
        stored: String,
    },
}

/// A decimal number's exact value: its sign, its significant digits
/// without leading or trailing zeros, and the power of ten of the last of
/// them. Zero has no digits (and its sign does not matter).
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    exponent: i64,
}

/// Largest exponent magnitude tracked exactly; anything beyond is far
/// outside the range of a 64-bit float either way, and clamping keeps the
/// arithmetic from overflowing.
const EXPONENT_CLAMP: i64 = 1 << 40;

/// Reads `[+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?`;
/// `None` for anything else.
fn parse_decimal(text: &str) -> Option<Decimal> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let negative = match bytes.first() {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let mut digits = Vec::new();
    let mut fraction_digits = 0i64;
    let mut seen_digit = false;
    while let Some(&b) = bytes.get(i)
        && b.is_ascii_digit()
    {
        digits.push(b);
        seen_digit = true;
        i += 1;
    }
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        while let Some(&b) = bytes.get(i)
            && b.is_ascii_digit()
        {
            digits.push(b);
            fraction_digits = fraction_digits.saturating_add(1);
            seen_digit = true;
            i += 1;
        }
    }
    if !seen_digit {
        return None;
    }
    let mut exponent = 0i64;
    if let Some(b'e' | b'E') = bytes.get(i) {
        i += 1;
        let exponent_negative = match bytes.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let start = i;
        while let Some(&b) = bytes.get(i)
            && b.is_ascii_digit()
        {
            exponent = (exponent * 10 + i64::from(b - b'0')).min(EXPONENT_CLAMP);
            i += 1;
        }
        if i == start {
            return None;
        }
        if exponent_negative {
            exponent = -exponent;
        }
    }
    if i != bytes.len() {
        return None;
    }
    // Normalise: drop leading zeros, move trailing zeros into the exponent.
    let first = digits
        .iter()
        .position(|&d| d != b'0')
        .unwrap_or(digits.len());
    digits.drain(..first);
    let mut exponent = exponent.saturating_sub(fraction_digits.min(EXPONENT_CLAMP));
    while digits.last() == Some(&b'0') {
        digits.pop();
        exponent += 1;
    }
    if digits.is_empty() {
        return Some(Decimal {
            negative: false,
            digits,
            exponent: 0,
        });
    }
    Some(Decimal {
        negative,
        digits,
        exponent,
    })
}

/// True for text written as an integer: digits with an optional sign, no
/// fraction and no exponent.
fn is_integer_literal(text: &str) -> bool {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// True when an integer literal fits a 64-bit integer, signed or not.
fn fits_64_bits(text: &str) -> bool {
    text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok()
}

/// The shortest text that reads back as `f` (what records store).
fn shortest(f: f64) -> Option<String> {
    serde_json::Number::from_f64(f).map(|n| n.to_string())
}

/// True when the float text `written` denotes the same decimal value as
/// the shortest text of `stored`, the float it was read as.
fn float_is_exact(written: &str, stored: f64) -> bool {
    let Some(text) = shortest(stored) else {
        return false;
    };
    match (parse_decimal(written), parse_decimal(&text)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// True for the first byte of a plain scalar that may be a decimal number;
/// the scan copies only such scalars.
pub(crate) fn may_start_number(b: u8) -> bool {
    b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.')
}

/// True unless `text`, the value of a plain untagged YAML scalar, is a
/// decimal number that `yaml_serde` would read as a different number.
///
/// Mirrors `yaml_serde`'s resolution: digits with a leading zero (`0123`)
/// are a string; other integer literals are integers (refused here beyond
/// 64 bits, where they would become floats or be refused later with a
/// vaguer message); other decimals are floats when Rust reads them as a
/// finite `f64` (`1e400` stays a string). Hexadecimal, octal and binary
/// integers are left to the full parse.
pub(crate) fn yaml_plain_number_is_exact(text: &str) -> bool {
    if parse_decimal(text).is_none() {
        return true;
    }
    if is_integer_literal(text) {
        let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
        let leading_zero_string = unsigned.len() > 1 && unsigned.starts_with('0');
        return leading_zero_string || fits_64_bits(text);
    }
    let unpositive = text.strip_prefix('+').unwrap_or(text);
    match unpositive.parse::<f64>() {
        Ok(f) if f.is_finite() => float_is_exact(text, f),
        // Read as a string.
        _ => true,
    }
}

/// Parses a JSON text (a merge patch) into a value, refusing numbers that
/// the value would not hold exactly (see the module documentation).
pub fn parse_json_exact(json: &[u8]) -> Result<Value, JsonError> {
    let value: Value = serde_json::from_slice(json).map_err(|e| JsonError::Syntax {
        message: e.to_string(),
    })?;
    // The text is valid JSON: outside strings, a '-' or a digit starts a
    // number, which runs on over digits, '.', 'e', 'E', '+' and '-'.
    let mut i = 0;
    while let Some(&b) = json.get(i) {
        if b == b'"' {
            i += 1;
            while let Some(&c) = json.get(i) {
                i += if c == b'\\' { 2 } else { 1 };
                if c == b'"' {
                    break;
                }
            }
        } else if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while let Some(&c) = json.get(i)
                && (c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
            {
                i += 1;
            }
            let token = String::from_utf8_lossy(json.get(start..i).unwrap_or_default());
            check_json_number(&token)?;
        } else {
            i += 1;
        }
    }
    Ok(value)
}

/// Checks one JSON number token against the rule.
fn check_json_number(token: &str) -> Result<(), JsonError> {
    let refuse = |stored: String| JsonError::InexactNumber {
        number: shorten(token),
        stored: shorten(&stored),
    };
    if is_integer_literal(token) {
        if fits_64_bits(token) {
            return Ok(());
        }
        // serde_json reads it as a float.
        let stored = token
            .parse::<f64>()
            .ok()
            .and_then(shortest)
            .unwrap_or_else(|| "a different number".to_owned());
        return Err(refuse(stored));
    }
    // Read it exactly as serde_json did when it parsed the whole text.
    let stored = serde_json::from_str::<serde_json::Number>(token)
        .ok()
        .and_then(|n| n.as_f64());
    match stored {
        Some(f) if float_is_exact(token, f) => Ok(()),
        Some(f) => Err(refuse(
            shortest(f).unwrap_or_else(|| "a different number".to_owned()),
        )),
        None => Err(refuse("a different number".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decimal_values_compare_exactly() {
        let same = |a: &str, b: &str| parse_decimal(a).expect(a) == parse_decimal(b).expect(b);
        assert!(same("1.50", "1.5"));
        assert!(same("150e-2", "1.5"));
        assert!(same("+0.0", "-0"));
        assert!(same(".5", "0.5"));
        assert!(same("5.", "5"));
        assert!(same("1e22", "10000000000000000000000"));
        assert!(same("1.2345678901234568e22", "12345678901234568000000"));
        assert!(!same("12345678901234567890123", "1.2345678901234568e22"));
        assert!(!same("-1", "1"));
        assert!(!same("0.1", "0.01"));
        for bad in [
            "", "-", ".", "e5", "1e", "1.2.3", "1e+", "0x10", "1_000", " 1", "--1",
        ] {
            assert!(parse_decimal(bad).is_none(), "{bad:?}");
        }
        // Huge exponents do not overflow, and stay far from any float's.
        assert!(!same("1e9999999999999999999999", "1e308"));
        assert!(!same("1e-9999999999999999999999", "5e-324"));
    }

    #[test]
    fn yaml_numbers() {
        for fine in [
            "0",
            "-0",
            "+5",
            "18446744073709551615",
            "-9223372036854775808",
            "0.1",
            "1.5",
            "2.50",
            "1e22",
            "1.5e300",
            "-0.0",
            ".5",
            "0123",
            "000012345678901234567890123",
            "1e400",
            "not a number",
            "1.2.3",
            "0x10",
            "-",
            "+",
        ] {
            assert!(yaml_plain_number_is_exact(fine), "{fine}");
        }
        for inexact in [
            "12345678901234567890123",
            "18446744073709551616",
            "-9223372036854775809",
            "0.10000000000000000001",
            "1e-400",
            "3.14159265358979323846",
            "1.2345678901234567890123e22",
        ] {
            assert!(!yaml_plain_number_is_exact(inexact), "{inexact}");
        }
    }

    #[test]
    fn json_numbers_must_survive() {
        assert_eq!(
            parse_json_exact(br#"{"a": [0, -1, 1.5, 0.1, 1e22, 18446744073709551615], "s": "12345678901234567890123"}"#),
            Ok(json!({"a": [0, -1, 1.5, 0.1, 1e22, u64::MAX], "s": "12345678901234567890123"}))
        );
        let err = parse_json_exact(br#"{"patient.yaml": {"nid": 12345678901234567890123}}"#)
            .expect_err("inexact");
        assert_eq!(
            err,
            JsonError::InexactNumber {
                number: "12345678901234567890123".into(),
                stored: "1.2345678901234568e+22".into()
            }
        );
        assert!(err.to_string().contains("send it as a string"), "{err}");
        for inexact in [
            "[18446744073709551616]",
            "[-9223372036854775809]",
            "{\"x\": 0.10000000000000000001}",
            "[1e-400]",
            "[\"\\\"\", 123456789012345678901234567890]",
        ] {
            assert!(
                matches!(
                    parse_json_exact(inexact.as_bytes()),
                    Err(JsonError::InexactNumber { .. })
                ),
                "{inexact}"
            );
        }
        assert!(matches!(
            parse_json_exact(b"{\"a\": "),
            Err(JsonError::Syntax { .. })
        ));
        // Digits inside strings (escaped quotes included) are not numbers.
        assert!(
            parse_json_exact(br#"["a\"1234567890123456789012345\\", "9999999999999999999999"]"#)
                .is_ok()
        );
        let long = format!("[{}]", "9".repeat(300));
        match parse_json_exact(long.as_bytes()) {
            Err(JsonError::InexactNumber { number, .. }) => assert!(number.len() < 100),
            other => panic!("{other:?}"),
        }
    }
}
