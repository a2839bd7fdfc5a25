//! Tests, including interoperability checks against the `git` command.

mod fsck;
mod hostile;
mod objects;
mod pack_parser;
mod pack_writer;
mod props;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use flate2::Compression;
use flate2::write::ZlibEncoder;
use sha1::{Digest, Sha1};

use super::pack_writer::{stored_zlib_into, write_entry_header};
use git2::Oid;

/// Runs git in `dir` with a clean configuration and returns stdout;
/// panics (test failure) if git fails.
pub(super) fn git_with(dir: &Path, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Vec<u8> {
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.org"])
        .args(["-c", "init.defaultBranch=main", "-c", "core.autocrlf=false"])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn git");
    let mut input = child.stdin.take().expect("stdin is piped");
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || input.write_all(&stdin));
    let out = child.wait_with_output().expect("wait for git");
    writer
        .join()
        .expect("stdin writer")
        .expect("write git stdin");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs git in `dir` and returns trimmed stdout as text.
pub(super) fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_with(dir, args, b"", &[]);
    String::from_utf8(out)
        .expect("git output is UTF-8")
        .trim()
        .to_owned()
}

pub(super) fn oid(hex: &str) -> Oid {
    Oid::from_str(hex.trim()).expect("valid hex id")
}

pub(super) fn zlib(data: &[u8], level: u32) -> Vec<u8> {
    let mut enc = ZlibEncoder::new(Vec::new(), Compression::new(level));
    enc.write_all(data).expect("write to Vec");
    enc.finish().expect("finish to Vec")
}

/// Git's OFS_DELTA distance encoding.
pub(super) fn ofs_bytes(distance: u64) -> Vec<u8> {
    let mut n = distance;
    let mut out = vec![(n & 0x7f) as u8];
    n >>= 7;
    while n != 0 {
        n -= 1;
        out.push(0x80 | (n & 0x7f) as u8);
        n >>= 7;
    }
    out.reverse();
    out
}

/// A delta: header with sizes, then raw instruction bytes.
pub(super) fn delta(base_len: u64, result_len: u64, ops: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for mut n in [base_len, result_len] {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
    out.extend_from_slice(ops);
    out
}

/// A zlib stream of stored blocks (cheap to make by the hundred thousand).
pub(super) fn stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    stored_zlib_into(data, &mut out);
    out
}

/// Hand-built packs for hostile-input tests.
pub(super) struct Craft {
    pub(super) version: u32,
    pub(super) count: Option<u32>,
    entries: u32,
    body: Vec<u8>,
}

impl Craft {
    pub(super) fn new() -> Craft {
        Craft {
            version: 2,
            count: None,
            entries: 0,
            body: Vec::new(),
        }
    }

    /// Offset the next entry will have.
    pub(super) fn next_offset(&self) -> u64 {
        12 + self.body.len() as u64
    }

    /// Adds an entry with any type code, declared size, extra header bytes
    /// (OFS distance or REF id) and raw zlib data. Returns its offset.
    pub(super) fn raw(&mut self, type_code: u8, size: u64, extra: &[u8], zdata: &[u8]) -> u64 {
        let offset = self.next_offset();
        write_entry_header(&mut self.body, type_code, size);
        self.body.extend_from_slice(extra);
        self.body.extend_from_slice(zdata);
        self.entries += 1;
        offset
    }

    pub(super) fn full(&mut self, type_code: u8, data: &[u8]) -> u64 {
        self.raw(type_code, data.len() as u64, &[], &zlib(data, 6))
    }

    /// Like `full`, with stored zlib blocks.
    pub(super) fn full_stored(&mut self, type_code: u8, data: &[u8]) -> u64 {
        self.raw(type_code, data.len() as u64, &[], &stored(data))
    }

    pub(super) fn ofs(&mut self, base_offset: u64, delta: &[u8]) -> u64 {
        let distance = self.next_offset() - base_offset;
        self.raw(6, delta.len() as u64, &ofs_bytes(distance), &stored(delta))
    }

    pub(super) fn ofs_distance(&mut self, distance: u64, delta: &[u8]) -> u64 {
        self.raw(6, delta.len() as u64, &ofs_bytes(distance), &zlib(delta, 6))
    }

    pub(super) fn refd(&mut self, base: Oid, delta: &[u8]) -> u64 {
        self.raw(7, delta.len() as u64, base.as_bytes(), &stored(delta))
    }

    pub(super) fn finish(&self) -> Vec<u8> {
        let mut pack = b"PACK".to_vec();
        pack.extend_from_slice(&self.version.to_be_bytes());
        pack.extend_from_slice(&self.count.unwrap_or(self.entries).to_be_bytes());
        pack.extend_from_slice(&self.body);
        pack.extend_from_slice(&Sha1::digest(&pack));
        pack
    }
}

/// Recomputes the trailing checksum of a (mutated) pack.
pub(super) fn fix_checksum(pack: &mut [u8]) {
    if pack.len() >= 20 {
        let split = pack.len() - 20;
        let sum = Sha1::digest(&pack[..split]);
        pack[split..].copy_from_slice(&sum);
    }
}

/// The error of a result that must fail (without printing a large `Ok`).
pub(super) fn fails<T, E>(result: Result<T, E>, what: impl std::fmt::Display) -> E {
    match result {
        Ok(_) => panic!("unexpectedly succeeded: {what}"),
        Err(e) => e,
    }
}
