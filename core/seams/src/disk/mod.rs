//! The storage seam: durable files on a real filesystem or on turmoil's simulated one.
//!
//! Every byte Weir means to keep (log segments, indexes, metadata, offsets, checkpoints) goes
//! through a [`Disk`]. The simulated disk follows turmoil's durability model: a write is pending
//! until its file is synced, a new or renamed entry is pending until its directory is synced, and a
//! crash throws pending work away (optionally tearing it). [`DiskFaults`] adds explicit, timed
//! faults on top: I/O errors and garbage left where an unsynced write was in flight.

mod faults;

pub use faults::DiskFaults;

use std::io;
use std::path::{Component, Path, PathBuf};
use turmoil::fs::shim::std::fs as simfs;

/// A directory tree that holds durable state.
#[derive(Clone, Debug)]
pub struct Disk {
    root: PathBuf,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Real,
    Sim(DiskFaults),
}

/// An open file on a [`Disk`].
#[derive(Debug)]
pub struct DiskFile {
    file: FileKind,
    path: PathBuf,
    faults: Option<DiskFaults>,
}

#[derive(Debug)]
enum FileKind {
    Real(std::fs::File),
    Sim(simfs::File),
}

/// Upper bound on a whole-file read through [`Disk::read_small`] (metadata files), in bytes.
pub const SMALL_FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;

impl Disk {
    /// A disk rooted at `root` on the real filesystem.
    pub fn real(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            kind: Kind::Real,
        }
    }

    /// A disk rooted at `root` on the current simulated host's filesystem.
    pub fn sim(root: impl Into<PathBuf>, faults: DiskFaults) -> Self {
        Self {
            root: root.into(),
            kind: Kind::Sim(faults),
        }
    }

    /// The same disk, rooted at the subdirectory `dir`.
    pub fn sub(&self, dir: &str) -> io::Result<Self> {
        Ok(Self {
            root: self.path(dir)?,
            kind: self.kind.clone(),
        })
    }

    /// The root of this disk.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn faults(&self) -> Option<&DiskFaults> {
        match &self.kind {
            Kind::Real => None,
            Kind::Sim(f) => Some(f),
        }
    }

    fn check(&self) -> io::Result<()> {
        self.faults().map_or(Ok(()), DiskFaults::check)
    }

    /// Resolves `rel` under the root, refusing absolute paths and `..` so that a name taken from
    /// the network can never reach outside the disk.
    fn path(&self, rel: &str) -> io::Result<PathBuf> {
        if rel.is_empty() || rel == "." {
            return Ok(self.root.clone());
        }
        let rel_path = Path::new(rel);
        let clean = rel_path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !clean {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("path {rel:?} escapes the disk"),
            ));
        }
        Ok(self.root.join(rel_path))
    }

    /// Creates the root directory if needed and makes its entry durable in its parent.
    pub async fn create_root(&self) -> io::Result<()> {
        self.check()?;
        match &self.kind {
            Kind::Real => std::fs::create_dir_all(&self.root)?,
            Kind::Sim(_) => simfs::create_dir_all(&self.root)?,
        }
        let Some(parent) = self.root.parent() else {
            return Ok(());
        };
        let parent_disk = Self {
            root: parent.to_path_buf(),
            kind: self.kind.clone(),
        };
        parent_disk.sync_dir(".").await
    }

    /// Creates `rel` and its parents. Call [`Disk::sync_dir`] on the parent to make it durable.
    pub fn create_dir_all(&self, rel: &str) -> io::Result<()> {
        self.check()?;
        let p = self.path(rel)?;
        match &self.kind {
            Kind::Real => std::fs::create_dir_all(p),
            Kind::Sim(_) => simfs::create_dir_all(p),
        }
    }

    /// Names of the entries in directory `rel`, sorted. A missing directory lists as empty.
    pub fn list(&self, rel: &str) -> io::Result<Vec<String>> {
        self.check()?;
        let p = self.path(rel)?;
        let mut names = Vec::new();
        match &self.kind {
            Kind::Real => match std::fs::read_dir(&p) {
                Ok(rd) => {
                    for e in rd {
                        names.push(e?.file_name().to_string_lossy().into_owned());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            },
            Kind::Sim(_) => {
                if !simfs::exists(&p) {
                    return Ok(names);
                }
                for e in simfs::read_dir(&p)? {
                    names.push(e?.file_name().to_string_lossy().into_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Whether `rel` exists.
    pub fn exists(&self, rel: &str) -> io::Result<bool> {
        let p = self.path(rel)?;
        Ok(match &self.kind {
            Kind::Real => p.exists(),
            Kind::Sim(_) => simfs::exists(&p),
        })
    }

    /// Opens `rel` for reading and writing, creating it if `create` is set. A created file is not
    /// durable until its directory is synced.
    pub fn open(&self, rel: &str, create: bool) -> io::Result<DiskFile> {
        self.check()?;
        let path = self.path(rel)?;
        let file = match &self.kind {
            Kind::Real => FileKind::Real(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(create)
                    .truncate(false)
                    .open(&path)?,
            ),
            Kind::Sim(_) => FileKind::Sim(
                simfs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(create)
                    .truncate(false)
                    .open(&path)?,
            ),
        };
        Ok(DiskFile {
            file,
            path,
            faults: self.faults().cloned(),
        })
    }

    /// Removes file `rel`; durable once its directory is synced.
    pub fn remove_file(&self, rel: &str) -> io::Result<()> {
        self.check()?;
        let p = self.path(rel)?;
        match &self.kind {
            Kind::Real => std::fs::remove_file(p),
            Kind::Sim(_) => simfs::remove_file(p),
        }
    }

    /// Removes directory `rel` and everything under it; sync its parent to make that durable.
    ///
    /// Each directory's entries are removed and the removals synced before the directory
    /// itself goes. A removal left pending in a directory that no longer exists is otherwise
    /// only made durable once a directory of the same name is created and synced again, and
    /// then it takes the new files of the same names with it.
    pub async fn remove_dir_all(&self, rel: &str) -> io::Result<()> {
        // Directories to empty, deepest last; emptied in reverse.
        let mut dirs = vec![rel.to_string()];
        let mut i = 0;
        while i < dirs.len() {
            let dir = dirs[i].clone();
            for name in self.list(&dir)? {
                let child = if dir == "." {
                    name
                } else {
                    format!("{dir}/{name}")
                };
                if self.is_dir(&child)? {
                    dirs.push(child);
                } else {
                    self.remove_file(&child)?;
                }
            }
            i += 1;
        }
        for dir in dirs.iter().rev() {
            self.sync_dir(dir).await?;
            let p = self.path(dir)?;
            match &self.kind {
                Kind::Real => std::fs::remove_dir(p)?,
                Kind::Sim(_) => simfs::remove_dir(p)?,
            }
        }
        Ok(())
    }

    fn is_dir(&self, rel: &str) -> io::Result<bool> {
        let p = self.path(rel)?;
        Ok(match &self.kind {
            Kind::Real => p.is_dir(),
            Kind::Sim(_) => simfs::metadata(&p).is_ok_and(|m| m.is_dir()),
        })
    }

    /// Renames `from` to `to`, replacing `to`; durable once the directory is synced.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.check()?;
        let (f, t) = (self.path(from)?, self.path(to)?);
        match &self.kind {
            Kind::Real => std::fs::rename(f, t),
            Kind::Sim(_) => simfs::rename(f, t),
        }
    }

    /// Makes the entries of directory `rel` (creations, renames, removals) durable.
    pub async fn sync_dir(&self, rel: &str) -> io::Result<()> {
        self.check()?;
        let p = self.path(rel)?;
        match &self.kind {
            Kind::Real => tokio::task::spawn_blocking(move || std::fs::File::open(p)?.sync_all())
                .await
                .map_err(io::Error::other)?,
            Kind::Sim(faults) => {
                tokio::time::sleep(faults.next_sync_latency()).await;
                faults.check()?;
                simfs::sync_dir(p)
            }
        }
    }

    /// Reads all of the small file `rel`, or `None` if it does not exist. Files over
    /// [`SMALL_FILE_BYTES_MAX`] are refused rather than read into memory.
    pub fn read_small(&self, rel: &str) -> io::Result<Option<Vec<u8>>> {
        if !self.exists(rel)? {
            return Ok(None);
        }
        let f = self.open(rel, false)?;
        let len = f.len()?;
        if len > SMALL_FILE_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{rel}: {len} bytes is over the {SMALL_FILE_BYTES_MAX}-byte limit"),
            ));
        }
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, 0)?;
        Ok(Some(buf))
    }

    /// Replaces `rel` with `bytes` atomically and durably: write a temporary file, sync it,
    /// rename it over `rel`, then sync the directory.
    pub async fn write_atomic(&self, rel: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = format!("{rel}.tmp");
        if self.exists(&tmp)? {
            self.remove_file(&tmp)?;
        }
        let f = self.open(&tmp, true)?;
        f.write_all_at(bytes, 0)?;
        f.sync().await?;
        drop(f);
        self.rename(&tmp, rel)?;
        let parent = Path::new(rel)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.sync_dir(&parent).await
    }

    /// Applies the damage a crash may leave on the simulated disk (see [`DiskFaults`]). Call it at
    /// host start, before anything reads the disk. A no-op on a real disk.
    pub fn apply_crash_damage(&self) -> io::Result<()> {
        let Some(faults) = self.faults() else {
            return Ok(());
        };
        let Some(damage) = faults.take_crash_damage() else {
            return Ok(());
        };
        if !simfs::exists(&damage.path) {
            return Ok(());
        }
        let f = simfs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&damage.path)?;
        std::os::unix::fs::FileExt::write_at(&f, &damage.garbage, damage.offset)?;
        // The garbage is what the platter holds now, so it must survive a later crash too.
        f.sync_all()
    }
}

impl DiskFile {
    /// The file's path, for error messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check(&self) -> io::Result<()> {
        self.faults.as_ref().map_or(Ok(()), DiskFaults::check)
    }

    /// A second handle on the same file.
    pub fn try_clone(&self) -> io::Result<Self> {
        let file = match &self.file {
            FileKind::Real(f) => FileKind::Real(f.try_clone()?),
            FileKind::Sim(f) => FileKind::Sim(f.try_clone()?),
        };
        Ok(Self {
            file,
            path: self.path.clone(),
            faults: self.faults.clone(),
        })
    }

    /// Current length in bytes.
    pub fn len(&self) -> io::Result<u64> {
        self.check()?;
        match &self.file {
            FileKind::Real(f) => Ok(f.metadata()?.len()),
            FileKind::Sim(f) => Ok(f.metadata()?.len()),
        }
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (short at EOF).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.check()?;
        let mut done = 0;
        while done < buf.len() {
            let n = match &self.file {
                FileKind::Real(f) => {
                    std::os::unix::fs::FileExt::read_at(f, &mut buf[done..], offset + done as u64)?
                }
                FileKind::Sim(f) => {
                    std::os::unix::fs::FileExt::read_at(f, &mut buf[done..], offset + done as u64)?
                }
            };
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let n = self.read_at(buf, offset)?;
        if n < buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: short read", self.path.display()),
            ));
        }
        Ok(())
    }

    /// Writes all of `buf` at `offset`. Not durable until [`DiskFile::sync`].
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check()?;
        match &self.file {
            FileKind::Real(f) => std::os::unix::fs::FileExt::write_all_at(f, buf, offset)?,
            FileKind::Sim(f) => std::os::unix::fs::FileExt::write_all_at(f, buf, offset)?,
        }
        if let Some(faults) = &self.faults {
            faults.record_write(&self.path, offset + buf.len() as u64);
        }
        Ok(())
    }

    /// Truncates or extends the file to `len` bytes. Not durable until [`DiskFile::sync`].
    pub fn set_len(&self, len: u64) -> io::Result<()> {
        self.check()?;
        match &self.file {
            FileKind::Real(f) => f.set_len(len),
            FileKind::Sim(f) => f.set_len(len),
        }
    }

    /// Makes the file's contents durable (fsync).
    pub async fn sync(&self) -> io::Result<()> {
        self.check()?;
        match &self.file {
            FileKind::Real(f) => {
                let f = f.try_clone()?;
                tokio::task::spawn_blocking(move || f.sync_all())
                    .await
                    .map_err(io::Error::other)?
            }
            FileKind::Sim(f) => {
                if let Some(faults) = &self.faults {
                    tokio::time::sleep(faults.next_sync_latency()).await;
                    faults.check()?;
                }
                f.sync_all()?;
                if let Some(faults) = &self.faults {
                    faults.record_sync(&self.path);
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_escape_the_root() {
        let d = Disk::real("/tmp/weir-root");
        assert!(d.path("../etc/passwd").is_err());
        assert!(d.path("/etc/passwd").is_err());
        assert!(d.path("a/../../b").is_err());
        assert_eq!(
            d.path("topic-0/00.log").unwrap(),
            PathBuf::from("/tmp/weir-root/topic-0/00.log")
        );
    }

    #[tokio::test]
    async fn real_disk_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let d = Disk::real(dir.path());
        d.create_dir_all("a").unwrap();
        let f = d.open("a/f", true).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        f.sync().await.unwrap();
        let mut buf = [0u8; 5];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello");
        d.write_atomic("a/meta", b"{}").await.unwrap();
        assert_eq!(d.read_small("a/meta").unwrap().unwrap(), b"{}");
        assert_eq!(
            d.list("a").unwrap(),
            vec!["f".to_string(), "meta".to_string()]
        );
        assert_eq!(d.list("missing").unwrap(), Vec::<String>::new());
    }
}
