//! Which file paths a record may hold.
//!
//! A record is a small tree of text documents. Paths are checked before any
//! write: relative, `/`-separated, a small charset, nothing hidden (so no
//! `.git`, `..` or `.gitattributes`), bounded length and depth. Each
//! component also passes git fsck's name rules
//! ([`chartsync_git::fsck::check_name`]: `.git` and its NTFS and HFS+
//! look-alikes such as `git~1`, git's control files), the one place those
//! rules live, so a path rule can never let through a name that the checks
//! on received trees refuse.

/// Longest path, in bytes.
pub const MAX_PATH_BYTES: usize = 200;
/// Most directory levels (`a/b/c.yaml` has depth 3).
pub const MAX_DEPTH: usize = 6;

/// Why a path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Empty path or empty component (`a//b`, trailing `/`).
    #[error("path {0:?} is empty or has an empty component")]
    Empty(String),
    /// Starts with `/`.
    #[error(
        "path {0:?} is absolute; paths are relative to the record, like \"encounters/2026-11-02.yaml\""
    )]
    Absolute(String),
    /// A component starting with `.` (covers `..`, `.git`, dotfiles).
    #[error(
        "path {0:?} has a component starting with '.'; '..', '.git' and hidden files are not allowed"
    )]
    Hidden(String),
    /// A character outside `A-Z a-z 0-9 . _ -` (and `/` between components).
    #[error(
        "path {path:?} has the character {ch:?}; allowed are letters, digits, '.', '_', '-' and '/' between folders"
    )]
    Charset {
        /// The path.
        path: String,
        /// The first bad character.
        ch: char,
    },
    /// Too long or too deep.
    #[error("path {0:?} is too long (at most {MAX_PATH_BYTES} bytes and {MAX_DEPTH} levels)")]
    TooLong(String),
    /// A component git fsck refuses as a tree entry name.
    #[error("path {path:?} has the component {component:?}, which git refuses: it {reason}")]
    GitName {
        /// The path.
        path: String,
        /// The component.
        component: String,
        /// Why git refuses it.
        reason: &'static str,
    },
    /// A file and a folder of the same name (`a.yaml` and `a.yaml/b.yaml`).
    #[error("path {0:?} is used both as a file and as a folder")]
    FileAndFolder(String),
}

/// Checks one path.
pub fn validate_path(path: &str) -> Result<(), PathError> {
    let owned = || path.chars().take(MAX_PATH_BYTES + 8).collect::<String>();
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong(owned()));
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute(owned()));
    }
    if let Some(ch) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
    {
        return Err(PathError::Charset { path: owned(), ch });
    }
    let mut depth = 0;
    for component in path.split('/') {
        depth += 1;
        if component.is_empty() {
            return Err(PathError::Empty(owned()));
        }
        if component.starts_with('.') {
            return Err(PathError::Hidden(owned()));
        }
        if let Err(rule) = chartsync_git::fsck::check_name(component.as_bytes()) {
            return Err(PathError::GitName {
                path: owned(),
                component: component.to_string(),
                reason: rule.reason(),
            });
        }
    }
    if depth > MAX_DEPTH {
        return Err(PathError::TooLong(owned()));
    }
    Ok(())
}

/// Checks every path of a file set, including that no path is both a file
/// and a folder.
pub fn validate_paths<'a>(paths: impl IntoIterator<Item = &'a str>) -> Result<(), PathError> {
    let paths: Vec<&str> = paths.into_iter().collect();
    let files: std::collections::HashSet<&str> = paths.iter().copied().collect();
    for path in &paths {
        validate_path(path)?;
        for (at, _) in path.match_indices('/') {
            let folder = &path[..at];
            if files.contains(folder) {
                return Err(PathError::FileAndFolder(folder.to_string()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for ok in [
            "patient.yaml",
            "encounters/2026-11-02.yaml",
            "notes/a_b-c.txt",
            "A1.yml",
        ] {
            validate_path(ok).expect(ok);
        }
    }

    #[test]
    fn refuses_tricks() {
        for bad in [
            "",
            "/etc/passwd",
            "../x.yaml",
            "a/../b.yaml",
            ".git/config",
            "a/.git/HEAD",
            ".gitattributes",
            "a//b.yaml",
            "a/",
            "a\\b.yaml",
            "a b.yaml",
            "é.yaml",
            "a\0b",
            "a/b/c/d/e/f/g.yaml",
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_path(&"a".repeat(MAX_PATH_BYTES + 1)).is_err());
    }

    #[test]
    fn refuses_every_name_git_fsck_refuses() {
        for name in [
            ".git",
            "GIT~1",
            "git~1",
            ".git.",
            ".git ",
            ".git::$INDEX_ALLOCATION",
            "\u{200c}.git",
            ".gitmodules",
            "gitmod~1",
            "gi7eba~1",
            ".mailmap",
            "a\\.git",
            ".",
            "..",
        ] {
            assert!(chartsync_git::fsck::check_name(name.as_bytes()).is_err());
            assert!(validate_path(name).is_err(), "{name:?} accepted");
            assert!(
                validate_path(&format!("a/{name}/b.yaml")).is_err(),
                "{name:?} accepted"
            );
        }
    }

    proptest::proptest! {
        /// Whatever fsck's name rules refuse, the path rules refuse too.
        #[test]
        fn path_rules_cover_the_fsck_name_rules(
            name in proptest::collection::vec(
                proptest::sample::select(&b"gitGIT.~1 :\\modulesa-_"[..]),
                1..12,
            )
        ) {
            let name = String::from_utf8(name).expect("ASCII");
            if chartsync_git::fsck::check_name(name.as_bytes()).is_err() {
                proptest::prop_assert!(validate_path(&name).is_err(), "{:?} accepted", name);
            }
        }
    }

    #[test]
    fn the_git_name_rule_explains_itself() {
        let err = PathError::GitName {
            path: "a/git~1/b.yaml".into(),
            component: "git~1".into(),
            reason: chartsync_git::fsck::NameRule::DotGit.reason(),
        };
        assert!(err.to_string().starts_with(
            "path \"a/git~1/b.yaml\" has the component \"git~1\", which git refuses: it is \".git\""
        ));
    }

    #[test]
    fn refuses_file_and_folder_of_one_name() {
        let paths = ["a.yaml", "a.yaml-x", "a.yaml/b.yaml"];
        assert!(matches!(
            validate_paths(paths.iter().copied()),
            Err(PathError::FileAndFolder(_))
        ));
    }
}
