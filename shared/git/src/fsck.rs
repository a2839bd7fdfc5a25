//! The object checks of `git fsck --strict`, for objects received from a
//! peer: what fsck would flag is refused before it is stored, so it cannot
//! spread to other clinics.
//!
//! Ported from git's `fsck.c` (`fsck_commit`, `fsck_ident`,
//! `verify_headers`, `fsck_tree`, `verify_ordered`), `utf8.c`
//! (`is_hfs_dotgit` and friends) and `path.c` (`is_ntfs_dotgit` and
//! friends), in their order, with each of fsck's messages as one
//! [`FsckError`] variant ([`FsckError::msg_id`] gives fsck's id). Where
//! git only warns without `--strict` (zero-padded modes, `.`, `..`, `.git`
//! look-alikes, null ids, full paths, NUL in a commit), the check is made
//! as `--strict` makes it: an error.
//!
//! A few rules are stricter than fsck, because records are plain YAML
//! files written by chartsync and never need what they forbid:
//! - names of git's own control files (`.gitmodules`, `.gitattributes`,
//!   `.gitignore`, `.mailmap` and their NTFS and HFS+ look-alikes) are
//!   refused outright (fsck parses their content);
//! - tree entry names and commit messages must be UTF-8;
//! - after the committer line only `encoding` and `gpgsig` /
//!   `gpgsig-sha256` headers are allowed, once each and in their forms;
//! - tag objects are refused ([`check_object`]): records have none;
//! - the stricter commit parse of [`crate::parse_commit`] applies on top
//!   (one space before the date, lowercase hex ids).
//!
//! Reachability (every object of a pack reachable from the pushed head) and
//! record rules (only plain files and non-empty folders) are the receiver's
//! business: see `chartsync-store`'s `receive` module.

use super::commit::{Commit, parse_commit};
use super::error::FsckError;
use super::object::{Kind, oid_from_raw, parse_hex_oid};
use super::tree::{MODE_DIR, MODE_EXEC, MODE_FILE, MODE_GITLINK, MODE_SYMLINK, TreeEntry};

/// fsck's `max_tree_entry_len`: a longer entry name is `largePathname`.
pub const MAX_TREE_ENTRY_LEN: usize = 4096;

/// Why one tree entry name (one path component) is refused: the name rules
/// of `fsck_tree`, shared by the tree parser, the tree writer and the
/// record store's path rules (one place for the `.git` look-alikes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// The empty name.
    Empty,
    /// Contains `/` (fsck's `fullPathname`).
    Slash,
    /// Contains NUL (cannot be written in a tree).
    Nul,
    /// `.` (fsck's `hasDot`).
    Dot,
    /// `..` (fsck's `hasDotdot`).
    DotDot,
    /// `.git` or a name some file system reads as `.git` (fsck's
    /// `hasDotgit`).
    DotGit,
    /// `.gitmodules`, `.gitattributes`, `.gitignore` or `.mailmap`, or a
    /// look-alike of one (chartsync refuses them outright).
    GitControlFile(&'static str),
    /// Longer than [`MAX_TREE_ENTRY_LEN`] bytes (fsck's `largePathname`).
    TooLong,
}

impl NameRule {
    /// What is wrong, as the end of a sentence about the name.
    pub fn reason(&self) -> &'static str {
        match self {
            NameRule::Empty => "is empty",
            NameRule::Slash => "contains '/'",
            NameRule::Nul => "contains NUL",
            NameRule::Dot => "is \".\"",
            NameRule::DotDot => "is \"..\"",
            NameRule::DotGit => {
                "is \".git\" or a name NTFS or HFS+ reads as \".git\" (short name \"git~1\", trailing dots or spaces, an \":\" stream, ignorable Unicode)"
            }
            NameRule::GitControlFile(".gitmodules") => {
                "is \".gitmodules\" or a look-alike; records hold no git control files"
            }
            NameRule::GitControlFile(".gitattributes") => {
                "is \".gitattributes\" or a look-alike; records hold no git control files"
            }
            NameRule::GitControlFile(".gitignore") => {
                "is \".gitignore\" or a look-alike; records hold no git control files"
            }
            NameRule::GitControlFile(_) => {
                "is \".mailmap\" or a look-alike; records hold no git control files"
            }
            NameRule::TooLong => "is longer than 4096 bytes",
        }
    }
}

/// Checks one tree entry name (one path component) against fsck's name
/// rules, in `fsck_tree`'s order, plus chartsync's refusal of git's control
/// files.
pub fn check_name(name: &[u8]) -> Result<(), NameRule> {
    if name.contains(&b'/') {
        return Err(NameRule::Slash);
    }
    if name.is_empty() {
        return Err(NameRule::Empty);
    }
    if name.contains(&0) {
        return Err(NameRule::Nul);
    }
    if name == b"." {
        return Err(NameRule::Dot);
    }
    if name == b".." {
        return Err(NameRule::DotDot);
    }
    if is_hfs_dotgit(name) || is_ntfs_dotgit(name) {
        return Err(NameRule::DotGit);
    }
    if name.len() > MAX_TREE_ENTRY_LEN {
        return Err(NameRule::TooLong);
    }
    for (needle, short) in CONTROL_FILES {
        if is_hfs_dot(name, needle.as_bytes()) || is_ntfs_dot(name, needle.as_bytes(), short) {
            return Err(NameRule::GitControlFile(control_file_name(needle)));
        }
    }
    // fsck reads a backslash as a directory separator (NTFS), so each part
    // after one is checked too.
    let mut rest = name;
    while let Some(at) = rest.iter().position(|&c| c == b'\\') {
        rest = &rest[at + 1..];
        if is_ntfs_dotgit(rest) {
            return Err(NameRule::DotGit);
        }
        for (needle, short) in CONTROL_FILES {
            if is_ntfs_dot(rest, needle.as_bytes(), short) {
                return Err(NameRule::GitControlFile(control_file_name(needle)));
            }
        }
    }
    Ok(())
}

/// git's control files and the prefix of their NTFS fall-back short names
/// (`path.c`).
const CONTROL_FILES: [(&str, &[u8; 6]); 4] = [
    ("gitmodules", b"gi7eba"),
    ("gitattributes", b"gi7d29"),
    ("gitignore", b"gi250a"),
    ("mailmap", b"maba30"),
];

fn control_file_name(needle: &str) -> &'static str {
    match needle {
        "gitmodules" => ".gitmodules",
        "gitattributes" => ".gitattributes",
        "gitignore" => ".gitignore",
        _ => ".mailmap",
    }
}

/// The byte at `i`, or NUL past the end (git's names are NUL-terminated).
fn at(name: &[u8], i: usize) -> u8 {
    name.get(i).copied().unwrap_or(0)
}

/// git's `is_xplatform_dir_sep`.
fn is_xplatform_dir_sep(c: u8) -> bool {
    c == b'/' || c == b'\\'
}

/// `path.c`'s `is_ntfs_dotgit`: `.git` or `git~1` (any case), followed only
/// by spaces and periods, up to the end, a directory separator or a `:`
/// (an alternate data stream such as `.git::$INDEX_ALLOCATION`).
pub fn is_ntfs_dotgit(name: &[u8]) -> bool {
    let rest = match name {
        [b'.', g, i, t, rest @ ..]
            if g.eq_ignore_ascii_case(&b'g')
                && i.eq_ignore_ascii_case(&b'i')
                && t.eq_ignore_ascii_case(&b't') =>
        {
            rest
        }
        [g, i, t, b'~', b'1', rest @ ..]
            if g.eq_ignore_ascii_case(&b'g')
                && i.eq_ignore_ascii_case(&b'i')
                && t.eq_ignore_ascii_case(&b't') =>
        {
            rest
        }
        _ => return false,
    };
    for &c in rest {
        if is_xplatform_dir_sep(c) || c == b':' || c == 0 {
            return true;
        }
        if c != b'.' && c != b' ' {
            return false;
        }
    }
    true
}

/// `path.c`'s `is_ntfs_dot_generic`: `.<needle>` (any case), its short name
/// `<first 6>~1`..`~4`, or a fall-back short name `<prefix>~<digits>`
/// (8 characters), each followed only by spaces and periods up to the end
/// or a `:`.
fn is_ntfs_dot(name: &[u8], needle: &[u8], short_prefix: &[u8; 6]) -> bool {
    let only_spaces_and_periods = |mut i: usize| loop {
        let c = at(name, i);
        i += 1;
        if c == 0 || c == b':' {
            return true;
        }
        if c != b' ' && c != b'.' {
            return false;
        }
    };
    let len = needle.len();
    if at(name, 0) == b'.' && strncasecmp_eq(&name[1..], needle, len) {
        return only_spaces_and_periods(len + 1);
    }
    // A regular short name: the first six characters, then ~1 to ~4.
    if strncasecmp_eq(name, needle, 6)
        && at(name, 6) == b'~'
        && (b'1'..=b'4').contains(&at(name, 7))
    {
        return only_spaces_and_periods(8);
    }
    // A fall-back short name: up to six characters of the hashed prefix,
    // '~', then digits, eight characters in all.
    let mut saw_tilde = false;
    let mut i = 0;
    while i < 8 {
        let c = at(name, i);
        if c == 0 {
            return false;
        } else if saw_tilde {
            if !c.is_ascii_digit() {
                return false;
            }
        } else if c == b'~' {
            i += 1;
            if !(b'1'..=b'9').contains(&at(name, i)) {
                return false;
            }
            saw_tilde = true;
        } else if i >= 6 || c & 0x80 != 0 || c.to_ascii_lowercase() != short_prefix[i] {
            return false;
        }
        i += 1;
    }
    only_spaces_and_periods(i)
}

/// C's `!strncasecmp(a, b, n)` for a NUL-free `b` of at least `n` bytes:
/// `a` (NUL-terminated where it ends) equals `b` in its first `n` bytes.
fn strncasecmp_eq(a: &[u8], b: &[u8], n: usize) -> bool {
    (0..n).all(|i| at(a, i).eq_ignore_ascii_case(&at(b, i)) && at(b, i) != 0)
}

/// Code points HFS+ ignores in names (`utf8.c`'s `next_hfs_char`).
fn is_hfs_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{200c}'
            | '\u{200d}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{206a}'..='\u{206f}'
            | '\u{feff}'
    )
}

/// `utf8.c`'s `is_hfs_dotgit`: `.git` (any case) once the code points HFS+
/// ignores are dropped, up to the end or a `/`.
pub fn is_hfs_dotgit(name: &[u8]) -> bool {
    is_hfs_dot(name, b"git")
}

/// `utf8.c`'s `is_hfs_dot_generic`. Malformed UTF-8 ends the name, as in
/// git.
fn is_hfs_dot(name: &[u8], needle: &[u8]) -> bool {
    let valid = name.utf8_chunks().next().map_or("", |chunk| chunk.valid());
    let mut chars = valid.chars().filter(|&c| !is_hfs_ignorable(c));
    if chars.next() != Some('.') {
        return false;
    }
    for &want in needle {
        match chars.next() {
            Some(c) if c.is_ascii() && c.to_ascii_lowercase() as u32 == u32::from(want) => {}
            _ => return false,
        }
    }
    matches!(chars.next(), None | Some('/' | '\0'))
}

/// An object that passed [`check_object`], parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checked {
    /// A commit.
    Commit(Commit),
    /// A tree's entries.
    Tree(Vec<TreeEntry>),
    /// A blob (fsck checks blobs only as `.gitmodules` or `.gitattributes`,
    /// which records cannot name).
    Blob,
}

/// Checks one object as `git fsck --strict` does (and refuses tags).
pub fn check_object(kind: Kind, data: &[u8]) -> Result<Checked, FsckError> {
    match kind {
        Kind::Commit => check_commit(data).map(Checked::Commit),
        Kind::Tree => check_tree(data).map(Checked::Tree),
        Kind::Blob => Ok(Checked::Blob),
        Kind::Tag => Err(FsckError::TagObject),
    }
}

/// A mode git writes for a tree entry (`fsck_tree`'s standard modes;
/// `100664` is only tolerated without `--strict`).
fn is_standard_mode(mode: u32) -> bool {
    matches!(
        mode,
        MODE_FILE | MODE_EXEC | MODE_DIR | MODE_SYMLINK | MODE_GITLINK
    )
}

/// Checks tree data as `fsck_tree` does and returns its entries.
pub fn check_tree(data: &[u8]) -> Result<Vec<TreeEntry>, FsckError> {
    let mut entries: Vec<TreeEntry> = Vec::new();
    // Names of non-directories that a later directory of the same name
    // could duplicate (`verify_ordered`'s candidate stack).
    let mut candidates: Vec<usize> = Vec::new();
    let mut pos = 0;
    let mut names: Vec<&[u8]> = Vec::new();
    while pos < data.len() {
        let offset = pos;
        let rest = &data[pos..];
        let bad_tree = |reason| FsckError::BadTree { offset, reason };
        // decode_tree_entry: room for a mode, a space, a name, a NUL and an id.
        if rest.len() < 20 + 3 {
            return Err(bad_tree("entry is truncated"));
        }
        let space = rest
            .iter()
            .position(|&c| c == b' ')
            .ok_or(bad_tree("entry is truncated"))?;
        let mode_text = &rest[..space];
        if mode_text.is_empty() || !mode_text.iter().all(|c| (b'0'..=b'7').contains(c)) {
            return Err(bad_tree("mode is not an octal number"));
        }
        let after_mode = &rest[space + 1..];
        let nul = after_mode
            .iter()
            .position(|&c| c == 0)
            .ok_or(bad_tree("entry is truncated"))?;
        let name = &after_mode[..nul];
        if name.is_empty() {
            return Err(bad_tree("entry has an empty name"));
        }
        let raw_id = after_mode
            .get(nul + 1..nul + 21)
            .ok_or(bad_tree("entry is truncated"))?;
        pos += space + 1 + nul + 21;
        let shown = || String::from_utf8_lossy(name).into_owned();

        if raw_id.iter().all(|&b| b == 0) {
            return Err(FsckError::NullSha1 { name: shown() });
        }
        match check_name(name) {
            Ok(()) => {}
            Err(NameRule::Slash) => return Err(FsckError::FullPathname { name: shown() }),
            Err(NameRule::Empty) => return Err(bad_tree("entry has an empty name")),
            Err(NameRule::Nul) => return Err(bad_tree("entry is truncated")),
            Err(NameRule::Dot) => return Err(FsckError::HasDot),
            Err(NameRule::DotDot) => return Err(FsckError::HasDotdot),
            Err(NameRule::DotGit) => return Err(FsckError::HasDotgit { name: shown() }),
            Err(NameRule::TooLong) => return Err(FsckError::LargePathname { len: name.len() }),
            Err(NameRule::GitControlFile(file)) => {
                return Err(FsckError::GitControlFile {
                    name: shown(),
                    file,
                });
            }
        }
        let mode_shown = || String::from_utf8_lossy(mode_text).into_owned();
        if mode_text[0] == b'0' {
            return Err(FsckError::ZeroPaddedFilemode {
                name: shown(),
                mode: mode_shown(),
            });
        }
        let mode = mode_text
            .iter()
            .try_fold(0u32, |m, &d| {
                m.checked_mul(8)?.checked_add(u32::from(d - b'0'))
            })
            .filter(|&m| is_standard_mode(m))
            .ok_or_else(|| FsckError::BadFilemode {
                name: shown(),
                mode: mode_shown(),
            })?;
        if let (Some(prev), Some(prev_name)) = (entries.last(), names.last()) {
            match verify_ordered(prev.mode, prev_name, mode, name, &names, &mut candidates) {
                Order::Ordered => {}
                Order::Unordered => return Err(FsckError::TreeNotSorted { name: shown() }),
                Order::Duplicate => return Err(FsckError::DuplicateEntries { name: shown() }),
            }
        }
        let text =
            std::str::from_utf8(name).map_err(|_| FsckError::NameNotUtf8 { name: shown() })?;
        names.push(name);
        entries.push(TreeEntry {
            mode,
            name: text.to_owned(),
            id: oid_from_raw(raw_id),
        });
    }
    Ok(entries)
}

enum Order {
    Ordered,
    Unordered,
    Duplicate,
}

/// `fsck.c`'s `is_less_than_slash`.
fn is_less_than_slash(c: u8) -> bool {
    0 < c && c < b'/'
}

/// `fsck.c`'s `verify_ordered`: `name2` (mode2) must sort after `name1`
/// (mode1), a directory as if its name ended in '/'; a file and a
/// directory of one name are duplicates even when not adjacent, which the
/// candidate stack (indices into `names`) catches.
fn verify_ordered(
    mode1: u32,
    name1: &[u8],
    mode2: u32,
    name2: &[u8],
    names: &[&[u8]],
    candidates: &mut Vec<usize>,
) -> Order {
    let len = name1.len().min(name2.len());
    match name1[..len].cmp(&name2[..len]) {
        std::cmp::Ordering::Less => return Order::Ordered,
        std::cmp::Ordering::Greater => return Order::Unordered,
        std::cmp::Ordering::Equal => {}
    }
    let mut c1 = at(name1, len);
    let mut c2 = at(name2, len);
    if c1 == 0 && c2 == 0 {
        return Order::Duplicate;
    }
    if c1 == 0 && mode1 == MODE_DIR {
        c1 = b'/';
    }
    if c2 == 0 && mode2 == MODE_DIR {
        c2 = b'/';
    }
    if c1 == 0 && is_less_than_slash(c2) {
        // name1 is a file that a later directory could duplicate.
        candidates.push(names.len() - 1);
    } else if c2 == b'/' && is_less_than_slash(c1) {
        while let Some(index) = candidates.pop() {
            let file = names[index];
            let Some(p) = name2.strip_prefix(file) else {
                continue;
            };
            if p.is_empty() {
                return Order::Duplicate;
            }
            if is_less_than_slash(p[0]) {
                candidates.push(index);
                break;
            }
        }
    }
    if c1 < c2 {
        Order::Ordered
    } else {
        Order::Unordered
    }
}

/// `fsck.c`'s `verify_headers`: the header part (up to the first blank
/// line) has no NUL, and ends in a newline.
fn verify_headers(data: &[u8]) -> Result<(), FsckError> {
    for (i, &c) in data.iter().enumerate() {
        match c {
            0 => return Err(FsckError::NulInHeader { offset: i }),
            b'\n' if data.get(i + 1) == Some(&b'\n') => return Ok(()),
            _ => {}
        }
    }
    // No body is no crime, but the last header line must end.
    if data.last() == Some(&b'\n') {
        Ok(())
    } else {
        Err(FsckError::UnterminatedHeader)
    }
}

/// Which identity line an ident error is about.
const AUTHOR: &str = "author";
const COMMITTER: &str = "committer";

/// `fsck.c`'s `fsck_ident` on one line (without its newline).
fn check_ident(line: &[u8], who: &'static str) -> Result<(), FsckError> {
    let c = |i: usize| line.get(i).copied();
    if c(0) == Some(b'<') {
        return Err(FsckError::MissingNameBeforeEmail { who });
    }
    let mut p = 0;
    loop {
        match c(p) {
            None => return Err(FsckError::MissingEmail { who }),
            Some(b'>') => return Err(FsckError::BadName { who }),
            Some(b'<') => break,
            Some(_) => p += 1,
        }
    }
    if p == 0 || c(p - 1) != Some(b' ') {
        return Err(FsckError::MissingSpaceBeforeEmail { who });
    }
    p += 1;
    loop {
        match c(p) {
            None | Some(b'<') => return Err(FsckError::BadEmail { who }),
            Some(b'>') => break,
            Some(_) => p += 1,
        }
    }
    p += 1;
    if c(p) != Some(b' ') {
        return Err(FsckError::MissingSpaceBeforeDate { who });
    }
    p += 1;
    while matches!(c(p), Some(b' ' | b'\t')) {
        p += 1;
    }
    if !c(p).is_some_and(|d| d.is_ascii_digit()) {
        return Err(FsckError::BadDate { who });
    }
    if c(p) == Some(b'0') && c(p + 1) != Some(b' ') {
        return Err(FsckError::ZeroPaddedDate { who });
    }
    let start = p;
    while c(p).is_some_and(|d| d.is_ascii_digit()) {
        p += 1;
    }
    // date_overflows: the time must fit a signed 64-bit time_t.
    let fits = line[start..p].iter().try_fold(0i64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(i64::from(d - b'0'))
    });
    if fits.is_none() {
        return Err(FsckError::BadDateOverflow { who });
    }
    if c(p) != Some(b' ') {
        return Err(FsckError::BadDate { who });
    }
    p += 1;
    match &line[p..] {
        [b'+' | b'-', a, b, c, d] if [a, b, c, d].iter().all(|x| x.is_ascii_digit()) => Ok(()),
        _ => Err(FsckError::BadTimezone { who }),
    }
}

/// Checks commit data as `fsck_commit` does, then chartsync's rules for
/// the headers after the committer and the stricter parse of
/// [`parse_commit`]; returns the parsed commit.
pub fn check_commit(data: &[u8]) -> Result<Commit, FsckError> {
    verify_headers(data)?;
    // verify_headers guarantees that every header line ends in '\n'.
    let mut lines = HeaderLines {
        rest: data,
        line: 0,
    };

    let tree_line = match lines.peek() {
        Some(line) if line.starts_with(b"tree ") => lines.take(),
        _ => return Err(FsckError::MissingTree),
    };
    if tree_line
        .and_then(|l| l.strip_prefix(b"tree "))
        .and_then(parse_hex_oid)
        .is_none()
    {
        return Err(FsckError::BadTreeSha1);
    }
    while lines.peek().is_some_and(|l| l.starts_with(b"parent ")) {
        let line_no = lines.line + 1;
        if lines
            .take()
            .and_then(|l| l.strip_prefix(b"parent "))
            .and_then(parse_hex_oid)
            .is_none()
        {
            return Err(FsckError::BadParentSha1 { line: line_no });
        }
    }
    let mut authors = 0;
    while lines.peek().is_some_and(|l| l.starts_with(b"author ")) {
        authors += 1;
        let line = lines.take().unwrap_or_default();
        check_ident(&line[b"author ".len()..], AUTHOR)?;
    }
    match authors {
        0 => return Err(FsckError::MissingAuthor),
        1 => {}
        _ => return Err(FsckError::MultipleAuthors),
    }
    match lines.peek() {
        Some(line) if line.starts_with(b"committer ") => {
            let line = lines.take().unwrap_or_default();
            check_ident(&line[b"committer ".len()..], COMMITTER)?;
        }
        _ => return Err(FsckError::MissingCommitter),
    }
    if let Some(offset) = data.iter().position(|&c| c == 0) {
        return Err(FsckError::NulInCommit { offset });
    }
    check_extra_headers(&mut lines)?;
    parse_commit(data).map_err(|source| FsckError::Format { source })
}

/// The header lines of a commit, one at a time, up to the blank line.
struct HeaderLines<'a> {
    rest: &'a [u8],
    /// Number of the last line taken (1-based).
    line: usize,
}

impl<'a> HeaderLines<'a> {
    /// The next header line without its newline; `None` at the blank line
    /// or the end.
    fn peek(&self) -> Option<&'a [u8]> {
        let nl = self.rest.iter().position(|&c| c == b'\n')?;
        (nl > 0).then(|| &self.rest[..nl])
    }

    fn take(&mut self) -> Option<&'a [u8]> {
        let line = self.peek()?;
        self.rest = &self.rest[line.len() + 1..];
        self.line += 1;
        Some(line)
    }
}

/// The headers git writes after the committer, in their forms: `encoding
/// <name>` (one line), then `gpgsig` and/or `gpgsig-sha256` (an armored
/// signature on continuation lines); each at most once. Anything else
/// (`mergetag`: records have no tags; unknown headers) is refused.
fn check_extra_headers(lines: &mut HeaderLines<'_>) -> Result<(), FsckError> {
    let mut seen: Vec<&[u8]> = Vec::new();
    while let Some(line) = lines.take() {
        let line_no = lines.line;
        if line.starts_with(b" ") {
            return Err(FsckError::BadHeaderContinuation { line: line_no });
        }
        let (key, value) = match line.iter().position(|&c| c == b' ') {
            Some(sp) => (&line[..sp], &line[sp + 1..]),
            None => (line, &b""[..]),
        };
        let shown = String::from_utf8_lossy(key).into_owned();
        if seen.contains(&key) {
            return Err(FsckError::DuplicateHeader {
                line: line_no,
                key: shown,
            });
        }
        let mut continuation: Vec<&[u8]> = Vec::new();
        while let Some(next) = lines.peek().and_then(|l| l.strip_prefix(b" ")) {
            continuation.push(next);
            lines.take();
        }
        match key {
            b"encoding" => {
                if !seen.is_empty() {
                    return Err(FsckError::BadEncoding {
                        line: line_no,
                        reason: "must come right after the committer line",
                    });
                }
                if value.is_empty() || !value.iter().all(|c| c.is_ascii_graphic()) {
                    return Err(FsckError::BadEncoding {
                        line: line_no,
                        reason: "is not one word of printable ASCII",
                    });
                }
                if !continuation.is_empty() {
                    return Err(FsckError::BadEncoding {
                        line: line_no,
                        reason: "has continuation lines",
                    });
                }
            }
            b"gpgsig" | b"gpgsig-sha256" => check_signature(line_no, value, &continuation)?,
            _ => {
                return Err(FsckError::ExtraHeader {
                    line: line_no,
                    key: shown,
                });
            }
        }
        seen.push(key);
    }
    Ok(())
}

/// An armored signature: `-----BEGIN <type>-----`, continuation lines,
/// the last `-----END <type>-----`.
fn check_signature(line: usize, first: &[u8], rest: &[&[u8]]) -> Result<(), FsckError> {
    let bad = |reason| Err(FsckError::BadGpgsig { line, reason });
    let Some(kind) = first
        .strip_prefix(b"-----BEGIN ")
        .and_then(|k| k.strip_suffix(b"-----"))
    else {
        return bad("does not start with \"-----BEGIN <type>-----\"");
    };
    const KINDS: [&[u8]; 3] = [b"PGP SIGNATURE", b"SSH SIGNATURE", b"SIGNED MESSAGE"];
    if !KINDS.contains(&kind) {
        return bad("is not a PGP, SSH or X.509 signature");
    }
    let Some((last, body)) = rest.split_last() else {
        return bad("has no signature lines");
    };
    let end = [&b"-----END "[..], kind, b"-----"].concat();
    if *last != end.as_slice() {
        return bad("does not end with \"-----END <type>-----\"");
    }
    if body.iter().any(|l| l.starts_with(b"-----")) {
        return bad("has armor lines inside the signature");
    }
    Ok(())
}
