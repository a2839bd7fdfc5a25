//! Delta resolution for parsed pack entries, without recursion.
//!
//! Full objects are roots; resolving an object releases the deltas waiting
//! on it (by entry for OFS_DELTA, by id for REF_DELTA), using an explicit
//! work stack. Bases missing from the pack are asked of the caller, in pack
//! order, only once nothing else can be resolved.

use std::collections::{HashMap, HashSet};

use super::delta::{apply_delta, delta_header};
use super::entry::{Budget, Entry, Payload};
use super::error::PackError;
use super::object::{Kind, Object, hash_object};
use git2::Oid;

/// What a resolved entry is.
#[derive(Clone, Copy)]
struct Resolved {
    kind: Kind,
    id: Oid,
    depth: u32,
}

/// An object whose dependent deltas still need resolving.
enum Source {
    /// Entry index in the pack.
    Entry(usize),
    /// A base supplied by the caller.
    External(Object),
}

struct State<'b> {
    offsets: Vec<usize>,
    deltas: Vec<Option<Vec<u8>>>,
    data: Vec<Option<Vec<u8>>>,
    info: Vec<Option<Resolved>>,
    ofs_children: HashMap<usize, Vec<usize>>,
    ref_waiting: HashMap<Oid, Vec<usize>>,
    stack: Vec<Source>,
    budget: &'b mut Budget,
}

/// Resolves all deltas and returns the objects in pack order, each id once.
pub(crate) fn resolve(
    entries: Vec<Entry>,
    budget: &mut Budget,
    base: &mut dyn FnMut(Oid) -> Option<Object>,
) -> Result<Vec<Object>, PackError> {
    let n = entries.len();
    let mut state = State {
        offsets: Vec::with_capacity(n),
        deltas: Vec::with_capacity(n),
        data: Vec::with_capacity(n),
        info: Vec::with_capacity(n),
        ofs_children: HashMap::new(),
        ref_waiting: HashMap::new(),
        stack: Vec::new(),
        budget,
    };
    let mut refs = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        state.offsets.push(entry.offset);
        match entry.payload {
            Payload::Full(kind, data) => {
                let id = hash_object(kind, &data);
                state.deltas.push(None);
                state.data.push(Some(data));
                state.info.push(Some(Resolved { kind, id, depth: 0 }));
                state.stack.push(Source::Entry(i));
            }
            Payload::Ofs(base_index, delta) => {
                state.push_delta(delta);
                state.ofs_children.entry(base_index).or_default().push(i);
            }
            Payload::Ref(base_id, delta) => {
                state.push_delta(delta);
                state.ref_waiting.entry(base_id).or_default().push(i);
                refs.push((i, base_id));
            }
        }
    }
    // Roots in pack order (the stack pops from the end).
    state.stack.reverse();

    let mut asked = HashSet::new();
    let mut cursor = 0;
    loop {
        while let Some(source) = state.stack.pop() {
            state.release(source)?;
        }
        // Entries before `cursor` are resolved or have had their base asked for.
        let mut wanted = None;
        while let Some(&(i, id)) = refs.get(cursor) {
            if state.info[i].is_none() && !asked.contains(&id) {
                wanted = Some(id);
                break;
            }
            cursor += 1;
        }
        let Some(wanted) = wanted else {
            break;
        };
        asked.insert(wanted);
        if let Some(object) = base(wanted) {
            if object.id != wanted {
                return Err(PackError::BaseMismatch {
                    requested: wanted,
                    returned: object.id,
                });
            }
            state.stack.push(Source::External(object));
        }
    }

    if let Some(i) = state.info.iter().position(Option::is_none) {
        let index = refs.iter().find(|(r, _)| state.info[*r].is_none()).copied();
        return Err(match index {
            Some((r, base)) => PackError::MissingBase {
                index: r as u32,
                offset: state.offsets[r] as u64,
                base,
            },
            None => PackError::BadBaseOffset {
                index: i as u32,
                offset: state.offsets[i] as u64,
                distance: 0,
                reason: "leads to a base that cannot be resolved",
            },
        });
    }

    let mut seen = HashSet::with_capacity(n);
    let mut objects = Vec::with_capacity(n);
    for (info, data) in state.info.into_iter().zip(state.data) {
        if let (Some(info), Some(data)) = (info, data)
            && seen.insert(info.id)
        {
            objects.push(Object {
                id: info.id,
                kind: info.kind,
                data,
            });
        }
    }
    Ok(objects)
}

impl State<'_> {
    fn push_delta(&mut self, delta: Vec<u8>) {
        self.deltas.push(Some(delta));
        self.data.push(None);
        self.info.push(None);
    }

    /// Resolves every delta whose base is `source`.
    fn release(&mut self, source: Source) -> Result<(), PackError> {
        match source {
            Source::Entry(i) => {
                let Some(info) = self.info[i] else {
                    return Ok(());
                };
                let mut children = self.ofs_children.remove(&i).unwrap_or_default();
                children.extend(self.ref_waiting.remove(&info.id).unwrap_or_default());
                if children.is_empty() {
                    return Ok(());
                }
                // Move the base out while its children are written.
                let base = self.data[i].take().unwrap_or_default();
                let result = self.apply_children(&children, &base, info);
                self.data[i] = Some(base);
                result
            }
            Source::External(object) => {
                let children = self.ref_waiting.remove(&object.id).unwrap_or_default();
                let info = Resolved {
                    kind: object.kind,
                    id: object.id,
                    depth: 0,
                };
                self.apply_children(&children, &object.data, info)
            }
        }
    }

    fn apply_children(
        &mut self,
        children: &[usize],
        base: &[u8],
        base_info: Resolved,
    ) -> Result<(), PackError> {
        for &child in children {
            if self.info[child].is_some() {
                continue;
            }
            let index = child as u32;
            let offset = self.offsets[child] as u64;
            let depth = base_info.depth.saturating_add(1);
            if depth > self.budget.limits.max_delta_depth {
                return Err(PackError::DeltaTooDeep {
                    index,
                    offset,
                    limit: self.budget.limits.max_delta_depth,
                });
            }
            let delta = self.deltas[child].take().unwrap_or_default();
            let bad = |reason| PackError::Delta {
                index,
                offset,
                reason,
            };
            let header = delta_header(&delta).map_err(bad)?;
            let size = self
                .budget
                .take(child, self.offsets[child], header.result_size)?;
            let data = apply_delta(base, &delta, size).map_err(bad)?;
            let id = hash_object(base_info.kind, &data);
            self.data[child] = Some(data);
            self.info[child] = Some(Resolved {
                kind: base_info.kind,
                id,
                depth,
            });
            self.stack.push(Source::Entry(child));
        }
        Ok(())
    }
}
