//! Free space and free inodes of the file system holding a data folder,
//! for `/healthz`, metrics and status: a disk that runs out of either
//! stops every write.

use std::path::Path;

/// What is left on a file system, for an unprivileged process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FreeSpace {
    /// Bytes free.
    pub bytes: u64,
    /// Bytes in all.
    pub total_bytes: u64,
    /// Inodes (files) free; `None` on file systems that do not count them.
    pub inodes: Option<u64>,
}

/// Below these, the satellite and central say the disk is (nearly) full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskLimits {
    /// Least free bytes (default 64 MiB).
    #[serde(default = "default_min_bytes")]
    pub min_free_bytes: u64,
    /// Least free inodes (default 2000).
    #[serde(default = "default_min_inodes")]
    pub min_free_inodes: u64,
}

impl Default for DiskLimits {
    fn default() -> Self {
        DiskLimits {
            min_free_bytes: default_min_bytes(),
            min_free_inodes: default_min_inodes(),
        }
    }
}

fn default_min_bytes() -> u64 {
    64 << 20
}
fn default_min_inodes() -> u64 {
    2000
}

/// Free space of the file system holding `path`.
pub fn free_space(path: &Path) -> std::io::Result<FreeSpace> {
    let st = rustix::fs::statvfs(path).map_err(std::io::Error::from)?;
    let unit = st.f_frsize.max(1);
    Ok(FreeSpace {
        bytes: st.f_bavail.saturating_mul(unit),
        total_bytes: st.f_blocks.saturating_mul(unit),
        // File systems without an inode table report 0 of 0.
        inodes: (st.f_files > 0).then_some(st.f_favail),
    })
}

impl FreeSpace {
    /// Why the disk counts as full under `limits`, in words; `None` when
    /// there is room.
    pub fn shortage(&self, limits: &DiskLimits) -> Option<String> {
        if self.bytes < limits.min_free_bytes {
            return Some(format!(
                "the disk is full: {} free, below the {} kept in reserve",
                human_bytes(self.bytes),
                human_bytes(limits.min_free_bytes)
            ));
        }
        match self.inodes {
            Some(n) if n < limits.min_free_inodes => Some(format!(
                "the disk is full: only {n} more files can be created (out of inodes), below the {} kept in reserve",
                limits.min_free_inodes
            )),
            _ => None,
        }
    }
}

/// `1.5 GB`, `12 MB`, `800 bytes`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [(&str, f64); 4] = [("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)];
    for (unit, size) in UNITS {
        if n as f64 >= size {
            return format!("{:.1} {unit}", n as f64 / size);
        }
    }
    format!("{n} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_real_file_system() {
        let dir = tempfile::tempdir().expect("tempdir");
        let free = free_space(dir.path()).expect("statvfs");
        assert!(free.total_bytes > 0);
        assert!(free.bytes <= free.total_bytes);
        assert!(free_space(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn shortage_names_space_and_inodes() {
        let limits = DiskLimits {
            min_free_bytes: 1000,
            min_free_inodes: 10,
        };
        let room = FreeSpace {
            bytes: 5000,
            total_bytes: 10000,
            inodes: Some(50),
        };
        assert_eq!(room.shortage(&limits), None);
        let no_bytes = FreeSpace { bytes: 10, ..room };
        assert!(
            no_bytes
                .shortage(&limits)
                .expect("full")
                .contains("10 bytes free")
        );
        let no_inodes = FreeSpace {
            inodes: Some(3),
            ..room
        };
        assert!(
            no_inodes
                .shortage(&limits)
                .expect("full")
                .contains("out of inodes")
        );
        let uncounted = FreeSpace {
            inodes: None,
            ..room
        };
        assert_eq!(uncounted.shortage(&limits), None);
        assert_eq!(human_bytes(1_500_000_000), "1.5 GB");
    }
}
