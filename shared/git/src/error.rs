//! Error types for object encoding/parsing and pack parsing.

use git2::Oid;

/// A tree, commit or path is not in the strict format this module accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Tree data ended in the middle of an entry.
    #[error("tree entry at byte {offset} is truncated")]
    TreeTruncated {
        /// Byte offset of the entry inside the tree data.
        offset: usize,
    },
    /// A tree entry has a mode other than the five git writes.
    #[error("tree entry at byte {offset} has unsupported mode {mode:?}")]
    BadMode {
        /// Byte offset of the entry inside the tree data.
        offset: usize,
        /// The mode text as found (lossy UTF-8).
        mode: String,
    },
    /// A tree entry name (or a path component) is not acceptable.
    #[error("name {name:?} is invalid: {reason}")]
    BadName {
        /// The offending name (lossy UTF-8).
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Tree entries are not in git's order.
    #[error("tree entry {name:?} is out of git order")]
    NotSorted {
        /// The first entry found out of order.
        name: String,
    },
    /// Two tree entries share a name (possibly as file and directory).
    #[error("tree has duplicate entry {name:?}")]
    Duplicate {
        /// The duplicated name.
        name: String,
    },
    /// A path given to `build_tree` is unusable.
    #[error("path {path:?} is invalid: {reason}")]
    BadPath {
        /// The offending path.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A commit header line is malformed or out of order.
    #[error("commit header line {line}: {reason}")]
    CommitHeader {
        /// 1-based line number inside the commit data.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// An author/committer identity is malformed or contains forbidden characters.
    #[error("invalid {field}: {reason}")]
    BadIdent {
        /// Which part of the identity ("name", "email", "time", "offset", "author", ...).
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// Text that must be UTF-8 is not.
    #[error("{what} is not valid UTF-8")]
    NotUtf8 {
        /// What was being decoded.
        what: &'static str,
    },
}

/// A delta instruction stream cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// The delta ends in the middle of its header or an instruction.
    #[error("delta data is truncated at byte {at}")]
    Truncated {
        /// Byte offset inside the delta data.
        at: usize,
    },
    /// A size in the delta header does not fit in 64 bits.
    #[error("delta size varint overflows")]
    SizeOverflow,
    /// The delta was made against a base of another size.
    #[error("delta expects a base of {expected} bytes but the base has {actual}")]
    BaseSize {
        /// Size declared in the delta header.
        expected: u64,
        /// Size of the base object supplied.
        actual: u64,
    },
    /// The delta result would exceed the allowed size.
    #[error("delta result of {size} bytes exceeds the limit of {limit}")]
    ResultTooLarge {
        /// Declared result size.
        size: u64,
        /// Limit in force.
        limit: u64,
    },
    /// Opcode 0 is reserved and never valid.
    #[error("reserved delta opcode 0 at byte {at}")]
    ZeroOpcode {
        /// Byte offset inside the delta data.
        at: usize,
    },
    /// A copy instruction reads outside the base.
    #[error("copy of {size} bytes from base offset {offset} is outside the {base_len}-byte base")]
    CopyOutOfRange {
        /// Copy source offset.
        offset: u64,
        /// Copy length.
        size: u64,
        /// Base length.
        base_len: u64,
    },
    /// Instructions produce more or fewer bytes than the header declares.
    #[error("delta declares a {declared}-byte result but its instructions produce {produced}")]
    ResultSize {
        /// Declared result size.
        declared: u64,
        /// Bytes produced (or that would be produced, when larger).
        produced: u64,
    },
}

/// A pack cannot be accepted. Offsets are byte offsets into the pack, indices
/// count entries from 0 in pack order.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The data ends before `what` could be read.
    #[error("pack truncated at offset {offset}: {what} is incomplete")]
    Truncated {
        /// Offset at which more data was needed.
        offset: u64,
        /// What was being read.
        what: &'static str,
    },
    /// The data does not start with `PACK`.
    #[error("not a pack: missing \"PACK\" signature")]
    BadSignature,
    /// Only pack versions 2 and 3 exist.
    #[error("unsupported pack version {0}")]
    UnsupportedVersion(u32),
    /// The trailing SHA-1 does not match the content.
    #[error("pack checksum mismatch: trailer says {expected}, content hashes to {actual}")]
    Checksum {
        /// Checksum stored in the trailer.
        expected: Oid,
        /// Checksum computed over the content.
        actual: Oid,
    },
    /// The header declares more objects than allowed.
    #[error("pack declares {count} objects, more than the limit of {limit}")]
    TooManyObjects {
        /// Declared count.
        count: u32,
        /// Limit in force.
        limit: u32,
    },
    /// The header declares fewer or more objects than the pack holds.
    #[error("pack header declares {declared} objects but the pack holds {found}")]
    CountMismatch {
        /// Count in the header.
        declared: u32,
        /// Objects actually present.
        found: u32,
    },
    /// An object (or delta result) is larger than allowed.
    #[error(
        "pack object {index} at offset {offset}: size {size} exceeds the limit of {limit} bytes"
    )]
    ObjectTooLarge {
        /// Entry index.
        index: u32,
        /// Entry offset.
        offset: u64,
        /// Declared size.
        size: u64,
        /// Limit in force.
        limit: u64,
    },
    /// The pack inflates to more bytes in total than allowed.
    #[error(
        "pack object {index} at offset {offset}: total inflated size would exceed the limit of {limit} bytes"
    )]
    TotalTooLarge {
        /// Entry index.
        index: u32,
        /// Entry offset.
        offset: u64,
        /// Limit in force.
        limit: u64,
    },
    /// An entry header is malformed (bad type code, size varint overflow, ...).
    #[error("pack object {index} at offset {offset}: bad entry header: {reason}")]
    BadHeader {
        /// Entry index.
        index: u32,
        /// Entry offset.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The zlib data of an entry is corrupt.
    #[error("pack object {index} at offset {offset}: corrupt zlib data")]
    Inflate {
        /// Entry index.
        index: u32,
        /// Entry offset.
        offset: u64,
        /// The decompressor's complaint.
        #[source]
        source: flate2::DecompressError,
    },
    /// The zlib stream stopped making progress before its end.
    #[error("pack object {index} at offset {offset}: zlib data stalls before its end")]
    InflateStalled {
        /// Entry index.
        index: u32,
        /// Entry offset.
        offset: u64,
    },
    /// The zlib data inflates to a size other than declared.
    #[error("pack object {index} at offset {offset}: header declares {declared} bytes but zlib data inflates to {}", describe_actual(*.actual, *.declared))]
    SizeMismatch {
        /// Entry index.
        index: u32,
        /// Entry offset.
        offset: u64,
        /// Size in the entry header.
        declared: u64,
        /// Inflated size; `None` when it is larger than declared (inflation stops there).
        actual: Option<u64>,
    },
    /// An OFS_DELTA base offset does not designate an earlier entry.
    #[error("pack object {index} at offset {offset}: OFS_DELTA base distance {distance} {reason}")]
    BadBaseOffset {
        /// Entry index.
        index: u32,
        /// Entry offset.
        offset: u64,
        /// Encoded backwards distance.
        distance: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A delta cannot be applied to its base.
    #[error("pack object {index} at offset {offset}: bad delta: {reason}")]
    Delta {
        /// Entry index.
        index: u32,
        /// Entry offset.
        offset: u64,
        /// What is wrong.
        reason: DeltaError,
    },
    /// A REF_DELTA base is neither in the pack nor supplied by the caller.
    #[error("pack object {index} at offset {offset}: delta base {base} is missing")]
    MissingBase {
        /// Entry index.
        index: u32,
        /// Entry offset.
        offset: u64,
        /// Id of the missing base.
        base: Oid,
    },
    /// The caller's base lookup returned an object with another id.
    #[error("base lookup for {requested} returned object {returned}")]
    BaseMismatch {
        /// Id asked for.
        requested: Oid,
        /// Id of the object returned.
        returned: Oid,
    },
    /// A delta chain is longer than allowed.
    #[error("pack object {index} at offset {offset}: delta chain deeper than the limit of {limit}")]
    DeltaTooDeep {
        /// Entry index.
        index: u32,
        /// Entry offset.
        offset: u64,
        /// Limit in force.
        limit: u32,
    },
    /// Bytes follow the pack checksum.
    #[error("pack has {len} bytes of trailing data at offset {offset}")]
    TrailingData {
        /// Offset where the extra data starts.
        offset: u64,
        /// Number of extra bytes.
        len: u64,
    },
}

fn describe_actual(actual: Option<u64>, declared: u64) -> String {
    match actual {
        Some(n) => n.to_string(),
        None => format!("more than {declared}"),
    }
}

/// An object `git fsck --strict` would flag (or that chartsync's stricter
/// rules refuse; see [`crate::fsck`]). Each variant is one of fsck's
/// messages; [`FsckError::msg_id`] gives its id as fsck prints it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FsckError {
    /// The header part of a commit holds a NUL byte.
    #[error("commit header has a NUL byte at offset {offset}")]
    NulInHeader {
        /// Byte offset inside the object.
        offset: usize,
    },
    /// The commit's last header line does not end in a newline.
    #[error("commit header is not terminated by a newline")]
    UnterminatedHeader,
    /// The commit does not start with a `tree` line.
    #[error("commit does not start with a \"tree <id>\" line")]
    MissingTree,
    /// The `tree` line's id is not 40 lowercase hex digits.
    #[error("commit's tree line does not hold 40 lowercase hex digits")]
    BadTreeSha1,
    /// A `parent` line's id is not 40 lowercase hex digits.
    #[error("commit's parent line {line} does not hold 40 lowercase hex digits")]
    BadParentSha1 {
        /// 1-based line number.
        line: usize,
    },
    /// No `author` line after the tree and parents.
    #[error("commit has no \"author\" line after its tree and parent lines")]
    MissingAuthor,
    /// More than one `author` line.
    #[error("commit has more than one \"author\" line")]
    MultipleAuthors,
    /// No `committer` line right after the author.
    #[error("commit has no \"committer\" line right after its author line")]
    MissingCommitter,
    /// The identity starts with `<`.
    #[error("{who} line has no name before the email (\"Name <email> 123 +0000\")")]
    MissingNameBeforeEmail {
        /// "author" or "committer".
        who: &'static str,
    },
    /// The identity has no `<email>`.
    #[error("{who} line has no \"<email>\"")]
    MissingEmail {
        /// "author" or "committer".
        who: &'static str,
    },
    /// The name holds a `>`.
    #[error("{who} line has a '>' in the name")]
    BadName {
        /// "author" or "committer".
        who: &'static str,
    },
    /// No space between the name and `<`.
    #[error("{who} line has no space between the name and '<'")]
    MissingSpaceBeforeEmail {
        /// "author" or "committer".
        who: &'static str,
    },
    /// The email holds a `<` or is not closed by `>`.
    #[error("{who} line has an email with '<' or without a closing '>'")]
    BadEmail {
        /// "author" or "committer".
        who: &'static str,
    },
    /// No space after `>`.
    #[error("{who} line has no space between '>' and the date")]
    MissingSpaceBeforeDate {
        /// "author" or "committer".
        who: &'static str,
    },
    /// The date is not a decimal number followed by a space.
    #[error("{who} line's date is not a number of seconds followed by a space")]
    BadDate {
        /// "author" or "committer".
        who: &'static str,
    },
    /// The date starts with `0` but is not `0`.
    #[error("{who} line's date is zero-padded")]
    ZeroPaddedDate {
        /// "author" or "committer".
        who: &'static str,
    },
    /// The date does not fit a signed 64-bit time.
    #[error("{who} line's date overflows a 64-bit time")]
    BadDateOverflow {
        /// "author" or "committer".
        who: &'static str,
    },
    /// The time zone is not `+hhmm` or `-hhmm` ending the line.
    #[error("{who} line's time zone is not [+-]hhmm at the end of the line")]
    BadTimezone {
        /// "author" or "committer".
        who: &'static str,
    },
    /// The commit (header or message) holds a NUL byte.
    #[error("commit has a NUL byte at offset {offset}")]
    NulInCommit {
        /// Byte offset inside the object.
        offset: usize,
    },
    /// A header continuation line (starting with a space) follows no
    /// header that takes one.
    #[error("commit header line {line} is a continuation line without a header to continue")]
    BadHeaderContinuation {
        /// 1-based line number.
        line: usize,
    },
    /// A header after the committer that records never carry.
    #[error(
        "commit header line {line} is an unexpected {key:?} header (only \"encoding\" and \"gpgsig\" may follow the committer)"
    )]
    ExtraHeader {
        /// 1-based line number.
        line: usize,
        /// The header's key (lossy UTF-8).
        key: String,
    },
    /// A header after the committer appears twice.
    #[error("commit header line {line} repeats the {key:?} header")]
    DuplicateHeader {
        /// 1-based line number.
        line: usize,
        /// The header's key (lossy UTF-8).
        key: String,
    },
    /// An `encoding` header not in its form.
    #[error("commit's encoding header on line {line} {reason}")]
    BadEncoding {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A `gpgsig` header not in its form.
    #[error("commit's signature header on line {line} {reason}")]
    BadGpgsig {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// Passes fsck but not chartsync's stricter commit parse.
    #[error("commit is not in chartsync's strict form: {source}")]
    Format {
        /// The parser's complaint.
        #[source]
        source: FormatError,
    },
    /// Tree data cannot be parsed as entries.
    #[error("tree cannot be parsed: at byte {offset}, {reason}")]
    BadTree {
        /// Byte offset of the entry.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// An entry points at the all-zero id.
    #[error("tree entry {name:?} points to the null id")]
    NullSha1 {
        /// The entry name (lossy UTF-8).
        name: String,
    },
    /// An entry name holds a `/`.
    #[error("tree entry {name:?} is a full path (contains '/')")]
    FullPathname {
        /// The entry name (lossy UTF-8).
        name: String,
    },
    /// An entry named `.`.
    #[error("tree has an entry named \".\"")]
    HasDot,
    /// An entry named `..`.
    #[error("tree has an entry named \"..\"")]
    HasDotdot,
    /// An entry named `.git` or a look-alike.
    #[error(
        "tree entry {name:?} is \".git\" or a name NTFS or HFS+ reads as \".git\" (short name \"git~1\", trailing dots or spaces, an \":\" stream, ignorable Unicode)"
    )]
    HasDotgit {
        /// The entry name (lossy UTF-8).
        name: String,
    },
    /// An entry named like one of git's control files.
    #[error("tree entry {name:?} is {file} or a look-alike; records hold no git control files")]
    GitControlFile {
        /// The entry name (lossy UTF-8).
        name: String,
        /// Which control file.
        file: &'static str,
    },
    /// A mode written with a leading zero.
    #[error("tree entry {name:?} has the zero-padded mode {mode:?}")]
    ZeroPaddedFilemode {
        /// The entry name (lossy UTF-8).
        name: String,
        /// The mode text.
        mode: String,
    },
    /// A mode other than the five git writes.
    #[error(
        "tree entry {name:?} has mode {mode:?}; only 100644, 100755, 40000, 120000 and 160000 are valid"
    )]
    BadFilemode {
        /// The entry name (lossy UTF-8).
        name: String,
        /// The mode text.
        mode: String,
    },
    /// An entry name longer than fsck allows.
    #[error("tree has an entry name of {len} bytes; at most 4096 are allowed")]
    LargePathname {
        /// The name's length.
        len: usize,
    },
    /// Entries out of git's order.
    #[error("tree entry {name:?} is out of git's order")]
    TreeNotSorted {
        /// The first entry found out of order (lossy UTF-8).
        name: String,
    },
    /// Two entries of one name (a file and a folder count).
    #[error("tree has two entries named {name:?}")]
    DuplicateEntries {
        /// The duplicated name (lossy UTF-8).
        name: String,
    },
    /// An entry name that is not UTF-8.
    #[error("tree entry {name:?} is not UTF-8")]
    NameNotUtf8 {
        /// The entry name (lossy UTF-8).
        name: String,
    },
    /// A tag object.
    #[error("tag objects are refused: records have no tags")]
    TagObject,
}

impl FsckError {
    /// The id `git fsck` prints for this problem (`None` for chartsync's
    /// own, stricter rules).
    pub fn msg_id(&self) -> Option<&'static str> {
        Some(match self {
            FsckError::NulInHeader { .. } => "nulInHeader",
            FsckError::UnterminatedHeader => "unterminatedHeader",
            FsckError::MissingTree => "missingTree",
            FsckError::BadTreeSha1 => "badTreeSha1",
            FsckError::BadParentSha1 { .. } => "badParentSha1",
            FsckError::MissingAuthor => "missingAuthor",
            FsckError::MultipleAuthors => "multipleAuthors",
            FsckError::MissingCommitter => "missingCommitter",
            FsckError::MissingNameBeforeEmail { .. } => "missingNameBeforeEmail",
            FsckError::MissingEmail { .. } => "missingEmail",
            FsckError::BadName { .. } => "badName",
            FsckError::MissingSpaceBeforeEmail { .. } => "missingSpaceBeforeEmail",
            FsckError::BadEmail { .. } => "badEmail",
            FsckError::MissingSpaceBeforeDate { .. } => "missingSpaceBeforeDate",
            FsckError::BadDate { .. } => "badDate",
            FsckError::ZeroPaddedDate { .. } => "zeroPaddedDate",
            FsckError::BadDateOverflow { .. } => "badDateOverflow",
            FsckError::BadTimezone { .. } => "badTimezone",
            FsckError::NulInCommit { .. } => "nulInCommit",
            FsckError::BadHeaderContinuation { .. } => "badHeaderContinuation",
            FsckError::ExtraHeader { .. } => "extraHeaderEntry",
            FsckError::BadGpgsig { .. } => "badGpgsig",
            FsckError::BadTree { .. } => "badTree",
            FsckError::NullSha1 { .. } => "nullSha1",
            FsckError::FullPathname { .. } => "fullPathname",
            FsckError::HasDot => "hasDot",
            FsckError::HasDotdot => "hasDotdot",
            FsckError::HasDotgit { .. } => "hasDotgit",
            FsckError::ZeroPaddedFilemode { .. } => "zeroPaddedFilemode",
            FsckError::BadFilemode { .. } => "badFilemode",
            FsckError::LargePathname { .. } => "largePathname",
            FsckError::TreeNotSorted { .. } => "treeNotSorted",
            FsckError::DuplicateEntries { .. } => "duplicateEntries",
            FsckError::DuplicateHeader { .. }
            | FsckError::BadEncoding { .. }
            | FsckError::Format { .. }
            | FsckError::GitControlFile { .. }
            | FsckError::NameNotUtf8 { .. }
            | FsckError::TagObject => return None,
        })
    }
}
