//! The first pass over a record file: the YAML parser's event stream,
//! checked against the record rules before anything is built from it.
//!
//! Records are plain data, so this pass refuses, at the first event that
//! shows one, with its line and column:
//! - anchors (`&name`) and aliases (`*name`): an alias is expanded in
//!   memory by every later step, so a few kilobytes of aliases to one large
//!   anchor would cost gigabytes;
//! - tags of any form (`!local`, `!!binary`, `!!python/object/apply:...`,
//!   `!<verbatim>`, `!`): `yaml_serde` silently drops the standard ones and
//!   the README promises none;
//! - nesting deeper than [`MAX_DEPTH`] mappings and sequences: the parser's
//!   scanner costs time proportional to the flow nesting depth for every
//!   token, so unbounded nesting is quadratic (`{a: ` 100,000 times took
//!   80 s). The pass stops at the first event beyond the bound, so its
//!   work is linear in the text whatever the text;
//! - a second document;
//! - numbers that would not be stored exactly ([`crate::number`]).
//!
//! The events come from `libyaml-rs`, the very parser `yaml_serde` runs
//! afterwards on the same text, so this pass and the full parse can never
//! disagree about where a node, a quoted string, a comment or a block
//! scalar starts (a scan of the text written by hand could: `"`, `#`, `&`,
//! `*` and `!` are content or syntax depending on context that only the
//! parser knows). `libyaml-rs` is a translation of C libyaml with a C-style
//! API; this module is the crate's only `unsafe` code, a thin wrapper in
//! the manner of `yaml_serde`'s own (which is private).
//!
//! A text that the parser cannot read passes this check unchanged: the full
//! parse then stops at the same place and reports the syntax error.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::marker::PhantomData;
use std::mem::MaybeUninit;

use libyaml_rs as sys;

use super::number;
use super::yaml::{Position, YamlError};

/// The deepest nesting of mappings and sequences a record file may have: a
/// top-level mapping is depth 1, a mapping inside it depth 2, and so on.
/// Patient records need a handful of levels; 64 leaves room for any real
/// document while keeping the parser linear (its per-token cost grows with
/// the flow nesting depth) and every recursive step (merging, diffing,
/// writing YAML) shallow. `yaml_serde` itself stops at 128, but only after
/// it has read the whole text.
pub const MAX_DEPTH: usize = 64;

/// Longest anchor, alias or tag name, or number, quoted in full in an
/// error message; longer ones are cut.
const MAX_QUOTED: usize = 60;

/// What the check needs to know about one event.
enum Event {
    /// The end of the stream (or no event: the parser has finished).
    StreamEnd,
    /// The start of a document.
    DocumentStart,
    /// An alias to an anchor.
    Alias { name: String },
    /// A scalar or the start of a collection, with its properties.
    Node {
        anchor: Option<String>,
        tag: Option<String>,
        /// True for the start of a mapping or sequence.
        opens: bool,
        /// The value of a plain, untagged scalar that may be a number.
        number: Option<String>,
    },
    /// The end of a mapping or sequence.
    CollectionEnd,
    /// Any other event (document end, stream start).
    Other,
}

/// A libyaml parser reading one borrowed text.
struct EventParser<'input> {
    /// The parser. libyaml keeps a pointer to the parser itself (its read
    /// handler's data), so it lives in a box that never moves.
    parser: Box<MaybeUninit<sys::yaml_parser_t>>,
    /// libyaml reads the text through a raw pointer.
    _input: PhantomData<&'input [u8]>,
}

impl<'input> EventParser<'input> {
    /// A parser over `input`; `None` if libyaml cannot set one up.
    fn new(input: &'input [u8]) -> Option<EventParser<'input>> {
        let mut parser = Box::new(MaybeUninit::<sys::yaml_parser_t>::uninit());
        let raw = parser.as_mut_ptr();
        // SAFETY: `raw` points to memory sized and aligned for a
        // `yaml_parser_t`, which `yaml_parser_initialize` zeroes and
        // initialises before anything reads it.
        if unsafe { sys::yaml_parser_initialize(raw) }.fail {
            return None;
        }
        // SAFETY: the parser is initialised. The text outlives the parser
        // (`'input`), and the boxed parser never moves, so the pointers
        // libyaml keeps (to the text, and to the parser itself) stay valid
        // until `Drop` deletes the parser.
        unsafe {
            sys::yaml_parser_set_encoding(raw, sys::YAML_UTF8_ENCODING);
            sys::yaml_parser_set_input_string(raw, input.as_ptr(), input.len() as u64);
        }
        Some(EventParser {
            parser,
            _input: PhantomData,
        })
    }

    /// The next event and where it starts; `None` when the text is not
    /// valid YAML there.
    fn next(&mut self) -> Option<(Event, Position)> {
        let mut event = MaybeUninit::<sys::yaml_event_t>::uninit();
        let raw = self.parser.as_mut_ptr();
        // SAFETY: the parser was initialised in `new` and is used from one
        // thread at a time (`&mut self`); `yaml_parser_parse` zeroes the
        // event before filling it in.
        if unsafe { sys::yaml_parser_parse(raw, event.as_mut_ptr()) }.fail {
            return None;
        }
        // SAFETY: a successful `yaml_parser_parse` initialised the event;
        // `summarise` only reads the union member its type names, and the
        // event is deleted exactly once, after the last read.
        unsafe {
            let summary = summarise(&*event.as_ptr());
            sys::yaml_event_delete(event.as_mut_ptr());
            Some(summary)
        }
    }
}

impl Drop for EventParser<'_> {
    fn drop(&mut self) {
        // SAFETY: the parser was initialised in `new` (a value of this type
        // exists only then) and is deleted only here.
        unsafe { sys::yaml_parser_delete(self.parser.as_mut_ptr()) }
    }
}

/// Copies what the check needs out of a parsed event.
///
/// # Safety
///
/// `event` must be an event filled in by a successful `yaml_parser_parse`
/// and not yet deleted.
unsafe fn summarise(event: &sys::yaml_event_t) -> (Event, Position) {
    let mark = event.start_mark;
    let position = Position {
        line: usize::try_from(mark.line)
            .unwrap_or(usize::MAX)
            .saturating_add(1),
        column: usize::try_from(mark.column)
            .unwrap_or(usize::MAX)
            .saturating_add(1),
    };
    // SAFETY (all blocks below): the union member read is the one the
    // event's type says is filled in; its string pointers are null or point
    // to NUL-terminated strings owned by the event.
    let summary = match event.type_ {
        sys::YAML_STREAM_END_EVENT | sys::YAML_NO_EVENT => Event::StreamEnd,
        sys::YAML_DOCUMENT_START_EVENT => Event::DocumentStart,
        sys::YAML_ALIAS_EVENT => Event::Alias {
            name: unsafe { c_string(event.data.alias.anchor) }.unwrap_or_default(),
        },
        sys::YAML_SCALAR_EVENT => {
            let scalar = unsafe { event.data.scalar };
            let tag = unsafe { c_string(scalar.tag) };
            let number = if tag.is_none() && scalar.style == sys::YAML_PLAIN_SCALAR_STYLE {
                let len = usize::try_from(scalar.length).unwrap_or(0);
                let first = if len > 0 && !scalar.value.is_null() {
                    // SAFETY: the value holds `length` bytes.
                    Some(unsafe { *scalar.value })
                } else {
                    None
                };
                match first {
                    Some(b) if number::may_start_number(b) => {
                        // SAFETY: the value holds `length` bytes.
                        let bytes = unsafe { std::slice::from_raw_parts(scalar.value, len) };
                        Some(String::from_utf8_lossy(bytes).into_owned())
                    }
                    _ => None,
                }
            } else {
                None
            };
            Event::Node {
                anchor: unsafe { c_string(scalar.anchor) },
                tag,
                opens: false,
                number,
            }
        }
        sys::YAML_SEQUENCE_START_EVENT => {
            let start = unsafe { event.data.sequence_start };
            Event::Node {
                anchor: unsafe { c_string(start.anchor) },
                tag: unsafe { c_string(start.tag) },
                opens: true,
                number: None,
            }
        }
        sys::YAML_MAPPING_START_EVENT => {
            let start = unsafe { event.data.mapping_start };
            Event::Node {
                anchor: unsafe { c_string(start.anchor) },
                tag: unsafe { c_string(start.tag) },
                opens: true,
                number: None,
            }
        }
        sys::YAML_SEQUENCE_END_EVENT | sys::YAML_MAPPING_END_EVENT => Event::CollectionEnd,
        _ => Event::Other,
    };
    (summary, position)
}

/// A NUL-terminated string owned by an event, as text; `None` for null.
///
/// # Safety
///
/// `ptr` must be null or point to a NUL-terminated string.
unsafe fn c_string(ptr: *const u8) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-null, and NUL-terminated by the caller's contract.
    let bytes = unsafe { CStr::from_ptr(ptr.cast()) }.to_bytes();
    Some(String::from_utf8_lossy(bytes).into_owned())
}

/// Checks a record file's text against the rules in the module
/// documentation. Time and memory are linear in the text's length.
pub(crate) fn check(text: &str) -> Result<(), YamlError> {
    check_counting(text).0
}

/// [`check`], and how many events it read: the measure of its work that
/// tests assert on (the scan stops at the first refusal).
fn check_counting(text: &str) -> (Result<(), YamlError>, usize) {
    let mut events = 0usize;
    let result = check_events(text, &mut events);
    (result, events)
}

fn check_events(text: &str, events: &mut usize) -> Result<(), YamlError> {
    let Some(mut parser) = EventParser::new(text.as_bytes()) else {
        return Err(YamlError::Syntax {
            message: "the YAML parser could not be set up".to_owned(),
            position: None,
        });
    };
    let mut depth = 0usize;
    let mut documents = 0usize;
    loop {
        let Some((event, position)) = parser.next() else {
            // Not valid YAML from here on: the full parse says why.
            return Ok(());
        };
        *events += 1;
        match event {
            Event::StreamEnd => return Ok(()),
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(YamlError::MultipleDocuments);
                }
            }
            Event::Alias { name } => {
                return Err(YamlError::Alias {
                    name: shorten(&name),
                    position,
                });
            }
            Event::Node {
                anchor,
                tag,
                opens,
                number,
            } => {
                if let Some(name) = anchor {
                    return Err(YamlError::Anchor {
                        name: shorten(&name),
                        position,
                    });
                }
                if let Some(tag) = tag {
                    return Err(YamlError::Tag {
                        tag: shorten(&display_tag(&tag)),
                        position,
                    });
                }
                if opens {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(YamlError::TooDeep {
                            max: MAX_DEPTH,
                            position,
                        });
                    }
                }
                if let Some(text) = number
                    && !number::yaml_plain_number_is_exact(&text)
                {
                    return Err(YamlError::InexactNumber {
                        number: shorten(&text),
                        position,
                    });
                }
            }
            Event::CollectionEnd => depth = depth.saturating_sub(1),
            Event::Other => {}
        }
    }
}

/// The prefix libyaml resolves the `!!` handle to.
const CORE_TAG_PREFIX: &str = "tag:yaml.org,2002:";

/// A resolved tag as it was most likely written: `!!binary` rather than
/// `tag:yaml.org,2002:binary`; `!local` as is; anything else verbatim.
fn display_tag(tag: &str) -> String {
    if let Some(rest) = tag.strip_prefix(CORE_TAG_PREFIX) {
        format!("!!{rest}")
    } else if tag.starts_with('!') {
        tag.to_owned()
    } else {
        format!("!<{tag}>")
    }
}

/// `s`, cut to [`MAX_QUOTED`] characters (marked with `...`) for messages.
pub(crate) fn shorten(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTED) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bombs are refused after reading a handful of events, however
    /// long the text: the work is bounded by where the refusal is, not by
    /// the size of the input (asserted on events read, not on time).
    #[test]
    fn bombs_are_refused_after_a_bounded_number_of_events() {
        let mib = 1 << 20;
        let alias_bomb = format!(
            "a: &x \"{}\"\nb: [{}]\n",
            "x".repeat(mib / 2),
            vec!["*x"; mib / 8].join(",")
        );
        let bombs = [
            ("alias bomb", alias_bomb),
            ("flow mappings", "{a: ".repeat(mib / 4)),
            ("flow sequences", "[".repeat(mib)),
            ("block sequences", "- ".repeat(mib / 2)),
            ("tags", "- !t x\n".repeat(mib / 7)),
        ];
        for (what, bomb) in bombs {
            let (result, events) = check_counting(&bomb);
            assert!(result.is_err(), "{what}");
            assert!(events <= 2 * MAX_DEPTH + 8, "{what}: {events} events read");
        }
        // An ordinary document is read to its end.
        let (result, events) = check_counting("a: [1, {b: 2}]\n");
        assert_eq!(result, Ok(()));
        // Stream, document, mapping, a, sequence, 1, mapping, b, 2, and the
        // four ends.
        assert_eq!(events, 14);
    }

    #[test]
    fn tags_are_shown_as_written() {
        assert_eq!(display_tag("tag:yaml.org,2002:binary"), "!!binary");
        assert_eq!(display_tag("!local"), "!local");
        assert_eq!(
            display_tag("tag:example.com,2000:x"),
            "!<tag:example.com,2000:x>"
        );
        assert_eq!(shorten("abc"), "abc");
        assert_eq!(
            shorten(&"é".repeat(100)),
            format!("{}...", "é".repeat(MAX_QUOTED))
        );
    }
}
