//! Replacing a file whole: a reader of the path sees the old file or the new one, never a part,
//! and never a file with a wider mode than asked for. The bootstrap admin key and the port file
//! are written this way.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// Names drawn for the temporary file before giving up (another process would have to hold
/// every one of them).
const NAME_ATTEMPTS: usize = 16;

/// Writes `contents` to a new file in `path`'s directory, created with `mode` (on Unix, from its
/// creation: `O_CREAT | O_EXCL` with that mode, so no other user can open it meanwhile), syncs
/// it, and renames it over `path`. Whatever was at `path` is replaced, never written through: an
/// existing file keeps its old mode only on its old inode (which the rename unlinks), and a
/// symlink is replaced by the file rather than followed, so its target is untouched. On failure
/// the temporary file is removed and `path` is as it was.
pub(crate) fn replace(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let (temporary, mut file) = create_beside(&directory, &name.to_string_lossy(), mode)?;
    let persisted = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(error) = persisted {
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }
    // The rename is durable once the directory is.
    File::open(&directory)?.sync_all()
}

/// A new file `.<name>.<random>` in `directory`, created exclusively with `mode`.
fn create_beside(directory: &Path, name: &str, mode: u32) -> io::Result<(PathBuf, File)> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut last_error = None;
    for _ in 0..NAME_ATTEMPTS {
        let mut random = [0_u8; 8];
        rand::fill(&mut random);
        let temporary = directory.join(format!(".{name}.{}", hex::encode(random)));
        match options.open(&temporary) {
            Ok(file) => return Ok((temporary, file)),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => last_error = Some(error),
            Err(error) => return Err(error),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no temporary file name was free")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(directory: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(directory)
            .expect("directory")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_replaced_file_holds_the_new_contents_and_nothing_is_left_beside_it() {
        let directory = tempfile::tempdir().expect("dir");
        let path = directory.path().join("ports.json");
        replace(&path, b"first", 0o644).expect("written");
        replace(&path, b"second", 0o644).expect("replaced");
        assert_eq!(std::fs::read(&path).expect("read"), b"second");
        assert_eq!(names_in(directory.path()), ["ports.json"]);
    }

    #[cfg(unix)]
    #[test]
    fn the_new_file_has_the_asked_mode_even_over_a_wider_one() {
        use std::os::unix::fs::PermissionsExt;
        let directory = tempfile::tempdir().expect("dir");
        let path = directory.path().join("secret.key");
        std::fs::write(&path, "old").expect("old file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        replace(&path, b"new", 0o600).expect("replaced");
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_failed_rename_leaves_no_temporary_file() {
        let directory = tempfile::tempdir().expect("dir");
        // A non-empty directory at the path: the rename over it fails.
        let path = directory.path().join("taken");
        std::fs::create_dir(&path).expect("dir at the path");
        std::fs::write(path.join("inside"), "x").expect("file inside");
        assert!(replace(&path, b"contents", 0o600).is_err());
        assert_eq!(names_in(directory.path()), ["taken"]);
    }

    #[test]
    fn a_path_without_a_file_name_is_refused() {
        let error = replace(Path::new("/"), b"x", 0o600).expect_err("no file name");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}
