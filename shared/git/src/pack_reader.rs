//! Reading objects straight from a repository's packs, without libgit2.
//!
//! chartsync writes every object of a record into packs with a version-2
//! index (whole objects, or OFS_DELTA chains within the pack after a
//! repack), and never loose objects.
//! Opening such a repository with libgit2 (config, odb backends, pack
//! windows) and closing it again costs more than the few objects a sync
//! reads from it, so the hot paths read the packs directly. Anything this
//! reader does not handle (a delta on a base in another pack, a loose object written by plain
//! git, an object it cannot find) is reported as such, and the caller asks
//! libgit2 instead: this reader is a fast path, never the only path.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};

use super::delta::apply_delta;
use super::entry::{OFS_DELTA, REF_DELTA, read_type_and_size};
use super::inflate::Inflater;
use super::{Kind, Object, hash_object};
use git2::Oid;

/// The largest pack this reader loads into memory; larger ones are left to
/// libgit2 (a record's packs are kilobytes).
const MAX_PACK_BYTES: u64 = 16 << 20;

/// The longest delta chain this reader follows (chartsync's repack writes
/// at most 50).
const MAX_CHAIN: usize = 64;

/// The largest object or delta this reader rebuilds.
const MAX_OBJECT_BYTES: usize = 64 << 20;

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup<T> {
    /// The object.
    Found(T),
    /// Not in any indexed pack (it may be loose, or in a pack added since).
    Absent,
    /// Indexed, but stored in a form this reader leaves to libgit2 (a
    /// delta on a base elsewhere, an overlong chain), or unreadable.
    Unsupported,
}

/// The indexed packs of one repository, as they were when opened.
#[derive(Debug, Default)]
pub struct PackReader {
    packs: Vec<IndexedPack>,
}

#[derive(Debug)]
struct IndexedPack {
    /// The whole `.idx` file.
    idx: Vec<u8>,
    count: usize,
    pack: PathBuf,
    data: OnceCell<Option<Vec<u8>>>,
}

impl PackReader {
    /// Reads the index of every `pack-*.idx` in `pack_dir`. An index that
    /// does not parse is skipped (its objects are then absent here, and
    /// libgit2 is asked for them).
    pub fn open(pack_dir: &Path) -> std::io::Result<PackReader> {
        let mut packs = Vec::new();
        let entries = match std::fs::read_dir(pack_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(PackReader::default()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !(name.starts_with("pack-") && name.ends_with(".idx")) {
                continue;
            }
            let path = entry.path();
            let idx = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if let Some(count) = check_idx(&idx) {
                packs.push(IndexedPack {
                    idx,
                    count,
                    pack: path.with_extension("pack"),
                    data: OnceCell::new(),
                });
            }
        }
        Ok(PackReader { packs })
    }

    /// How many packs are indexed.
    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }

    /// Whether an indexed pack holds `id`.
    pub fn contains(&self, id: Oid) -> bool {
        self.packs.iter().any(|p| p.find(id).is_some())
    }

    /// Reads an object.
    pub fn read(&self, id: Oid) -> Lookup<Object> {
        for pack in &self.packs {
            if let Some(offset) = pack.find(id) {
                return match pack.read_at(offset, id) {
                    Some(object) => Lookup::Found(object),
                    None => Lookup::Unsupported,
                };
            }
        }
        Lookup::Absent
    }

    /// An object's kind and size, without inflating it.
    pub fn header(&self, id: Oid) -> Lookup<(Kind, usize)> {
        for pack in &self.packs {
            if let Some(offset) = pack.find(id) {
                return match pack.header_at(offset) {
                    Some((kind, size)) => Lookup::Found((kind, size)),
                    None => Lookup::Unsupported,
                };
            }
        }
        Lookup::Absent
    }
}

/// Checks an idx v2's layout; returns its object count.
fn check_idx(idx: &[u8]) -> Option<usize> {
    if idx.get(..8)? != b"\xfftOc\x00\x00\x00\x02" {
        return None;
    }
    let count = word(idx, 8 + 255 * 4)? as usize;
    // Ids, CRCs, small offsets, then (optional) large offsets and the two
    // checksums.
    let small_end = 8 + 256 * 4 + count.checked_mul(28)?;
    if idx.len() < small_end + 40 {
        return None;
    }
    Some(count)
}

fn word(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

impl IndexedPack {
    /// The offset of `id` in the pack, by the fan-out table and a binary
    /// search of the sorted ids.
    fn find(&self, id: Oid) -> Option<u64> {
        let first = usize::from(*id.as_bytes().first()?);
        let lo = if first == 0 {
            0
        } else {
            word(&self.idx, 8 + (first - 1) * 4)? as usize
        };
        let hi = (word(&self.idx, 8 + first * 4)? as usize).min(self.count);
        let ids = 8 + 256 * 4;
        let (mut lo, mut hi) = (lo, hi);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let at = ids + mid * 20;
            let candidate = self.idx.get(at..at + 20)?;
            match candidate.cmp(id.as_bytes()) {
                std::cmp::Ordering::Equal => return self.offset(mid),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        None
    }

    fn offset(&self, index: usize) -> Option<u64> {
        let offsets = 8 + 256 * 4 + self.count * 24;
        let small = word(&self.idx, offsets + index * 4)?;
        if small & 0x8000_0000 == 0 {
            return Some(u64::from(small));
        }
        let large = offsets + self.count * 4 + (small & 0x7fff_ffff) as usize * 8;
        let b = self.idx.get(large..large + 8)?;
        Some(u64::from_be_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }

    fn data(&self) -> Option<&[u8]> {
        self.data
            .get_or_init(|| {
                let len = std::fs::metadata(&self.pack).ok()?.len();
                if len > MAX_PACK_BYTES {
                    return None;
                }
                std::fs::read(&self.pack).ok()
            })
            .as_deref()
    }

    /// The kind and inflated size of the object at `offset`, following
    /// OFS_DELTA entries to their whole base for the kind.
    fn header_at(&self, offset: u64) -> Option<(Kind, usize)> {
        let data = self.data()?;
        let header = read_type_and_size(data, usize::try_from(offset).ok()?).ok()?;
        if let Some(kind) = Kind::from_type_code(header.type_code) {
            return Some((kind, usize::try_from(header.size).ok()?));
        }
        let (kind, bytes) = self.resolve_at(offset)?;
        Some((kind, bytes.len()))
    }

    /// The whole object at `offset`: a whole entry, or a chain of at most
    /// [`MAX_CHAIN`] deltas over a whole one in this pack. `None` for a
    /// delta whose base is not in this pack, and anything malformed.
    fn resolve_at(&self, offset: u64) -> Option<(Kind, Vec<u8>)> {
        let data = self.data()?;
        // The pack's trailing checksum is not part of any entry.
        let end = data.len().checked_sub(20)?;
        let mut inflater = Inflater::new();
        let mut deltas: Vec<Vec<u8>> = Vec::new();
        let mut at = usize::try_from(offset).ok()?;
        loop {
            let header = read_type_and_size(data, at).ok()?;
            let size = usize::try_from(header.size).ok()?;
            if let Some(kind) = Kind::from_type_code(header.type_code) {
                let input = data.get(header.data_at..end)?;
                let (mut bytes, _) = inflater.inflate_exact(input, size).ok()?;
                for delta in deltas.iter().rev() {
                    bytes = apply_delta(&bytes, delta, MAX_OBJECT_BYTES).ok()?;
                }
                return Some((kind, bytes));
            }
            if deltas.len() >= MAX_CHAIN || size > MAX_OBJECT_BYTES {
                return None;
            }
            let (base_at, used) = match header.type_code {
                OFS_DELTA => {
                    let (distance, used) = read_ofs_distance(data, header.data_at)?;
                    let distance = usize::try_from(distance).ok().filter(|&d| d > 0)?;
                    (at.checked_sub(distance)?, used)
                }
                REF_DELTA => {
                    let base = data.get(header.data_at..header.data_at + 20)?;
                    let base = Oid::from_bytes(base).ok()?;
                    (usize::try_from(self.find(base)?).ok()?, 20)
                }
                _ => return None,
            };
            let input = data.get(header.data_at + used..end)?;
            let (delta, _) = inflater.inflate_exact(input, size).ok()?;
            deltas.push(delta);
            at = base_at;
        }
    }

    fn read_at(&self, offset: u64, id: Oid) -> Option<Object> {
        let (kind, bytes) = self.resolve_at(offset)?;
        // A stored object that does not hash to its id is corrupt: let
        // libgit2 report it.
        (hash_object(kind, &bytes) == id).then_some(Object {
            id,
            kind,
            data: bytes,
        })
    }
}

/// Reads an OFS_DELTA distance at `pos`: the distance and its length.
fn read_ofs_distance(data: &[u8], pos: usize) -> Option<(u64, usize)> {
    let mut used = 0;
    let mut byte = *data.get(pos)?;
    used += 1;
    let mut distance = u64::from(byte & 0x7f);
    while byte & 0x80 != 0 {
        byte = *data.get(pos + used)?;
        used += 1;
        distance = distance
            .checked_add(1)?
            .checked_mul(128)?
            .checked_add(u64::from(byte & 0x7f))?;
    }
    Some((distance, used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write_pack;

    fn blob(text: &str) -> Object {
        Object::new(Kind::Blob, text.as_bytes().to_vec())
    }

    fn write(dir: &Path, objects: &[Object], level: u32) {
        let files = write_pack(objects, level);
        std::fs::write(
            dir.join(format!("pack-{}.pack", files.checksum)),
            &files.pack,
        )
        .expect("write pack");
        std::fs::write(dir.join(format!("pack-{}.idx", files.checksum)), &files.idx)
            .expect("write idx");
    }

    #[test]
    fn reads_what_the_pack_writer_wrote_across_packs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first: Vec<Object> = (0..300).map(|i| blob(&format!("one {i}\n"))).collect();
        let second: Vec<Object> = (0..5).map(|i| blob(&format!("two {i}\n"))).collect();
        write(dir.path(), &first, 0);
        write(dir.path(), &second, 6);
        let index = PackReader::open(dir.path()).expect("open");
        assert_eq!(index.pack_count(), 2);
        for object in first.iter().chain(&second) {
            assert!(index.contains(object.id));
            match index.read(object.id) {
                Lookup::Found(o) => assert_eq!(o, *object),
                other => panic!("{other:?}"),
            }
            match index.header(object.id) {
                Lookup::Found((kind, size)) => {
                    assert_eq!((kind, size), (Kind::Blob, object.data.len()));
                }
                other => panic!("{other:?}"),
            }
        }
        let missing = blob("never written\n").id;
        assert!(!index.contains(missing));
        assert!(matches!(index.read(missing), Lookup::Absent));
        let mut entries_idx = write_pack(&first, 0).idx;
        entries_idx.truncate(100);
        assert!(check_idx(&entries_idx).is_none());
    }

    #[test]
    fn agrees_with_libgit2_on_its_deltified_packs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = git2::Repository::init_bare(dir.path()).expect("init");
        // A pack written by libgit2's own packbuilder, with deltas between
        // similar blobs.
        let base: String = (0..200).map(|i| format!("line {i}\n")).collect();
        let mut ids = Vec::new();
        for i in 0..4 {
            ids.push(
                repo.blob(format!("{base}change {i}\n").as_bytes())
                    .expect("blob"),
            );
        }
        let mut builder = repo.packbuilder().expect("packbuilder");
        for id in &ids {
            builder.insert_object(*id, None).expect("insert");
        }
        let pack_dir = dir.path().join("objects/pack");
        builder.write(&pack_dir, 0o644).expect("write");
        for id in &ids {
            let loose = dir
                .path()
                .join("objects")
                .join(&id.to_string()[..2])
                .join(&id.to_string()[2..]);
            std::fs::remove_file(loose).expect("remove loose");
        }
        let index = PackReader::open(&pack_dir).expect("open");
        let odb = repo.odb().expect("odb");
        let mut deltas = 0;
        for id in &ids {
            let pack = &index.packs[0];
            let offset = pack.find(*id).expect("indexed");
            let data = pack.data().expect("readable");
            let header = read_type_and_size(data, offset as usize).expect("header");
            if header.type_code == OFS_DELTA || header.type_code == REF_DELTA {
                deltas += 1;
            }
            match index.read(*id) {
                Lookup::Found(o) => assert_eq!(o.data, odb.read(*id).expect("read").data()),
                other => panic!("{id} (type {}): {other:?}", header.type_code),
            }
        }
        assert!(
            deltas > 0,
            "libgit2 wrote no deltas; the test proves nothing"
        );
    }

    #[test]
    fn a_corrupt_pack_is_unsupported_not_wrong() {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = vec![blob("hello\n")];
        let files = write_pack(&objects, 6);
        let mut pack = files.pack.clone();
        let middle = pack.len() / 2;
        pack[middle] ^= 0xff;
        std::fs::write(
            dir.path().join(format!("pack-{}.pack", files.checksum)),
            &pack,
        )
        .expect("write");
        std::fs::write(
            dir.path().join(format!("pack-{}.idx", files.checksum)),
            &files.idx,
        )
        .expect("write");
        let index = PackReader::open(dir.path()).expect("open");
        assert!(matches!(index.read(objects[0].id), Lookup::Unsupported));
    }
}
