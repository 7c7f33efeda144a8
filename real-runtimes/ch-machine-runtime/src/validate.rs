//! Confinement: names that can never escape a directory, and paths that must stay inside
//! configured directories (canonicalized, so `..` and symlinks cannot leave them).

use std::path::{Path, PathBuf};

/// Why a name or path was rejected (always an `InvalidArgument` on the wire).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name is empty, too long, or has characters outside `[A-Za-z0-9._-]`, or is `.`/`..`.
    #[error("{what} {name:?} is invalid: use 1-63 characters of [A-Za-z0-9._-], not . or ..")]
    Name {
        /// What the name is of.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A path does not exist or is not a regular file.
    #[error("{what} {path:?} is not an existing regular file")]
    Missing {
        /// What the path is of.
        what: &'static str,
        /// The path.
        path: String,
    },
    /// A path is outside every allowed directory.
    #[error("{what} {path:?} is outside the allowed directories")]
    Outside {
        /// What the path is of.
        what: &'static str,
        /// The path.
        path: String,
    },
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Check a name used in file or device names.
pub fn name(what: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name != "."
        && name != ".."
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Name {
            what,
            name: name.to_owned(),
        })
    }
}

/// Resolve `path` (absolute, or relative to one of `dirs`) to a canonical regular file inside
/// one of the canonical `dirs`.
pub fn confined_file(what: &'static str, path: &str, dirs: &[PathBuf]) -> Result<PathBuf> {
    let outside = || Error::Outside {
        what,
        path: path.to_owned(),
    };
    if path.is_empty() || path.contains('\0') {
        return Err(Error::Missing {
            what,
            path: path.to_owned(),
        });
    }
    let given = Path::new(path);
    let candidates: Vec<PathBuf> = if given.is_absolute() {
        vec![given.to_owned()]
    } else {
        dirs.iter().map(|d| d.join(given)).collect()
    };
    let mut found_any = false;
    for candidate in candidates {
        let Ok(real) = std::fs::canonicalize(&candidate) else {
            continue;
        };
        found_any = true;
        if dirs.iter().any(|d| real.starts_with(d)) {
            return if real.is_file() {
                Ok(real)
            } else {
                Err(Error::Missing {
                    what,
                    path: path.to_owned(),
                })
            };
        }
    }
    if found_any || dirs.is_empty() {
        Err(outside())
    } else {
        Err(Error::Missing {
            what,
            path: path.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("root", true)]
    #[case("data-1.disk_2", true)]
    #[case("", false)]
    #[case(".", false)]
    #[case("..", false)]
    #[case("a..b", false)]
    #[case("a/b", false)]
    #[case("a\0b", false)]
    #[case("space here", false)]
    #[case(&"x".repeat(64), false)]
    fn names(#[case] input: &str, #[case] ok: bool) {
        assert_eq!(name("volume name", input).is_ok(), ok);
    }

    #[test]
    fn paths_stay_inside_allowed_dirs() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let allowed = root.path().join("allowed");
        let other = root.path().join("other");
        std::fs::create_dir_all(&allowed).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(&other).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(allowed.join("a.raw"), b"x").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(other.join("b.raw"), b"x").unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(other.join("b.raw"), allowed.join("link.raw"))
            .unwrap_or_else(|e| panic!("{e}"));
        let dirs = vec![std::fs::canonicalize(&allowed).unwrap_or_else(|e| panic!("{e}"))];
        let a = allowed.join("a.raw");
        assert!(confined_file("disk", a.to_str().unwrap_or_default(), &dirs).is_ok());
        assert!(confined_file("disk", "a.raw", &dirs).is_ok());
        let b = other.join("b.raw");
        assert!(matches!(
            confined_file("disk", b.to_str().unwrap_or_default(), &dirs),
            Err(Error::Outside { .. })
        ));
        assert!(matches!(
            confined_file("disk", "../other/b.raw", &dirs),
            Err(Error::Outside { .. })
        ));
        assert!(matches!(
            confined_file("disk", "link.raw", &dirs),
            Err(Error::Outside { .. })
        ));
        assert!(matches!(
            confined_file("disk", "missing.raw", &dirs),
            Err(Error::Missing { .. })
        ));
        assert!(confined_file("disk", "a.raw\0", &dirs).is_err());
        assert!(confined_file("disk", ".", &dirs).is_err());
    }
}
