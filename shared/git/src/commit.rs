//! Commit objects: encoding in git's format, strict parsing, trailers.

use super::error::FormatError;
use super::object::{format_decimal, parse_hex_oid};
use git2::Oid;

/// Largest time zone offset git can write ("+9959").
const MAX_OFFSET_MINUTES: i32 = 99 * 60 + 59;

/// An author or committer identity with a timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// Display name; must not contain '<', '>', newline or NUL.
    pub name: String,
    /// E-mail address; same restrictions as `name`.
    pub email: String,
    /// Seconds since the Unix epoch; git refuses negative times.
    pub time: i64,
    /// Time zone offset east of UTC in minutes (e.g. 90 for "+0130").
    pub offset_minutes: i32,
}

impl Signature {
    /// Creates a signature, refusing values git could not represent or
    /// `git fsck` would flag.
    pub fn new(
        name: &str,
        email: &str,
        time: i64,
        offset_minutes: i32,
    ) -> Result<Signature, FormatError> {
        let sig = Signature {
            name: name.to_owned(),
            email: email.to_owned(),
            time,
            offset_minutes,
        };
        sig.validate()?;
        Ok(sig)
    }

    /// Checks the restrictions documented on the fields.
    pub fn validate(&self) -> Result<(), FormatError> {
        let bad = |field, reason| Err(FormatError::BadIdent { field, reason });
        let forbidden = |s: &str| s.contains(['<', '>', '\n', '\0']);
        if forbidden(&self.name) {
            return bad("name", "contains '<', '>', newline or NUL");
        }
        if forbidden(&self.email) {
            return bad("email", "contains '<', '>', newline or NUL");
        }
        if self.time < 0 {
            return bad("time", "is negative");
        }
        if self.offset_minutes.abs() > MAX_OFFSET_MINUTES {
            return bad("offset", "is beyond +/-99:59");
        }
        Ok(())
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(b" <");
        out.extend_from_slice(self.email.as_bytes());
        out.extend_from_slice(b"> ");
        let mut buf = [0u8; 20];
        if self.time < 0 {
            out.push(b'-');
        }
        out.extend_from_slice(format_decimal(self.time.unsigned_abs(), &mut buf));
        out.push(b' ');
        out.push(if self.offset_minutes < 0 { b'-' } else { b'+' });
        let abs = self.offset_minutes.unsigned_abs();
        let hhmm = (abs / 60) * 100 + abs % 60;
        for div in [1000, 100, 10, 1] {
            out.push(b'0' + ((hhmm / div) % 10) as u8);
        }
    }
}

/// A commit's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// Root tree.
    pub tree: Oid,
    /// Parent commits, in order.
    pub parents: Vec<Oid>,
    /// Author identity and time.
    pub author: Signature,
    /// Committer identity and time.
    pub committer: Signature,
    /// Message, stored verbatim (git conventionally ends it with '\n').
    pub message: String,
}

impl Commit {
    /// Checks both signatures (see [`Signature::validate`]).
    pub fn validate(&self) -> Result<(), FormatError> {
        self.author.validate()?;
        self.committer.validate()
    }
}

/// Encodes a commit exactly as git does. The signatures are trusted; call
/// [`Commit::validate`] first for values not built with [`Signature::new`].
pub fn encode_commit(c: &Commit) -> Vec<u8> {
    let size = 48 * (1 + c.parents.len())
        + 2 * 40
        + c.author.name.len()
        + c.author.email.len()
        + c.committer.name.len()
        + c.committer.email.len()
        + c.message.len();
    let mut out = Vec::with_capacity(size);
    let push_id = |out: &mut Vec<u8>, key: &[u8], id: &Oid| {
        out.extend_from_slice(key);
        out.extend_from_slice(id.to_string().as_bytes());
        out.push(b'\n');
    };
    push_id(&mut out, b"tree ", &c.tree);
    for parent in &c.parents {
        push_id(&mut out, b"parent ", parent);
    }
    out.extend_from_slice(b"author ");
    c.author.encode_into(&mut out);
    out.extend_from_slice(b"\ncommitter ");
    c.committer.encode_into(&mut out);
    out.extend_from_slice(b"\n\n");
    out.extend_from_slice(c.message.as_bytes());
    out
}

/// Splits off one '\n'-terminated line.
fn take_line<'a>(rest: &mut &'a [u8], line_no: usize) -> Result<&'a [u8], FormatError> {
    let nl = rest
        .iter()
        .position(|&c| c == b'\n')
        .ok_or(FormatError::CommitHeader {
            line: line_no,
            reason: "header line is not terminated by a newline",
        })?;
    let line = &rest[..nl];
    *rest = &rest[nl + 1..];
    Ok(line)
}

/// Parses commit data. Strict about the order and form of the tree, parent,
/// author and committer lines; other headers after the committer (gpgsig,
/// encoding, mergetag, ...) are skipped together with their continuation
/// lines. The message must be UTF-8.
pub fn parse_commit(data: &[u8]) -> Result<Commit, FormatError> {
    let mut rest = data;
    let mut line_no = 1;
    let err = |line, reason| FormatError::CommitHeader { line, reason };

    let line = take_line(&mut rest, line_no)?;
    let tree = line
        .strip_prefix(b"tree ")
        .ok_or(err(line_no, "first line must be \"tree <id>\""))
        .and_then(|hex| {
            parse_hex_oid(hex).ok_or(err(line_no, "tree id is not 40 lowercase hex digits"))
        })?;

    let mut parents = Vec::new();
    let author = loop {
        line_no += 1;
        let line = take_line(&mut rest, line_no)?;
        if let Some(hex) = line.strip_prefix(b"parent ") {
            let id = parse_hex_oid(hex)
                .ok_or(err(line_no, "parent id is not 40 lowercase hex digits"))?;
            parents.push(id);
        } else if let Some(ident) = line.strip_prefix(b"author ") {
            break parse_ident(ident, "author")?;
        } else {
            return Err(err(line_no, "expected \"parent\" or \"author\" line"));
        }
    };
    line_no += 1;
    let line = take_line(&mut rest, line_no)?;
    let committer = match line.strip_prefix(b"committer ") {
        Some(ident) => parse_ident(ident, "committer")?,
        None => return Err(err(line_no, "expected \"committer\" line after \"author\"")),
    };

    // Extra headers, until the blank line or the end of the data.
    loop {
        line_no += 1;
        match rest.first() {
            None => break,
            Some(b'\n') => {
                rest = &rest[1..];
                break;
            }
            Some(b' ') => return Err(err(line_no, "continuation line without a header")),
            Some(_) => {}
        }
        let line = take_line(&mut rest, line_no)?;
        let key = line.split(|&c| c == b' ').next().unwrap_or(line);
        if matches!(key, b"tree" | b"parent" | b"author" | b"committer") {
            return Err(err(
                line_no,
                "tree/parent/author/committer header out of order",
            ));
        }
        while rest.first() == Some(&b' ') {
            line_no += 1;
            take_line(&mut rest, line_no)?;
        }
    }
    let message = std::str::from_utf8(rest)
        .map_err(|_| FormatError::NotUtf8 {
            what: "commit message",
        })?
        .to_owned();
    Ok(Commit {
        tree,
        parents,
        author,
        committer,
        message,
    })
}

/// Parses "Name <email> 1700000000 +0130".
fn parse_ident(text: &[u8], field: &'static str) -> Result<Signature, FormatError> {
    let bad = |reason| FormatError::BadIdent { field, reason };
    let lt = text
        .iter()
        .position(|&c| c == b'<')
        .ok_or(bad("missing '<'"))?;
    let name = text[..lt]
        .strip_suffix(b" ")
        .ok_or(bad("missing space before '<'"))?;
    let after_lt = &text[lt + 1..];
    let gt = after_lt
        .iter()
        .position(|&c| c == b'>')
        .ok_or(bad("missing '>'"))?;
    let email = &after_lt[..gt];
    if name.contains(&b'>') || email.contains(&b'<') || name.contains(&0) || email.contains(&0) {
        return Err(bad("name or email contains '<', '>' or NUL"));
    }
    let tail = after_lt[gt + 1..]
        .strip_prefix(b" ")
        .ok_or(bad("missing space before time"))?;
    let sp = tail
        .iter()
        .position(|&c| c == b' ')
        .ok_or(bad("missing time zone"))?;
    let (digits, tz) = (&tail[..sp], &tail[sp + 1..]);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad("time is not a decimal number"));
    }
    if digits.len() > 1 && digits[0] == b'0' {
        return Err(bad("time is zero-padded"));
    }
    let time = digits
        .iter()
        .try_fold(0i64, |acc, &d| {
            acc.checked_mul(10)?.checked_add(i64::from(d - b'0'))
        })
        .ok_or(bad("time overflows"))?;
    let offset_minutes = match tz {
        [sign @ (b'+' | b'-'), h1, h2, m1, m2]
            if [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()) =>
        {
            let num = |d: &u8| i32::from(d - b'0');
            let minutes = (num(h1) * 10 + num(h2)) * 60 + num(m1) * 10 + num(m2);
            if *sign == b'-' { -minutes } else { minutes }
        }
        _ => return Err(bad("time zone is not [+-]hhmm")),
    };
    let to_string =
        |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| FormatError::NotUtf8 { what: field });
    Ok(Signature {
        name: to_string(name)?,
        email: to_string(email)?,
        time,
        offset_minutes,
    })
}

/// The value of a `Key: value` trailer in the message's last paragraph
/// (key compared case-insensitively, value trimmed; the last occurrence
/// wins). As in git, a message's first paragraph (the subject) never holds
/// trailers.
pub fn commit_trailer<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    let mut paragraphs = 0;
    let mut in_paragraph = false;
    let mut last: Vec<&str> = Vec::new();
    for line in message.lines() {
        if line.trim().is_empty() {
            in_paragraph = false;
            continue;
        }
        if !in_paragraph {
            in_paragraph = true;
            paragraphs += 1;
            last.clear();
        }
        last.push(line);
    }
    if paragraphs < 2 {
        return None;
    }
    last.iter().rev().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim_end().eq_ignore_ascii_case(key).then(|| v.trim())
    })
}
