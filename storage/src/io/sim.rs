//! A simulated disk in memory that can crash the way a real one can.
//!
//! Each file keeps two versions: what readers see now, and what would survive a power loss
//! (the bytes as of its last fdatasync), plus the list of operations since. Directory changes
//! (create, rename, remove) are journaled in order and become durable when any directory is
//! fsynced, as ext4's journal commits them together. A journal commit flushes the device's
//! cache, so every write that completed before a committed change is durable with it (the
//! barrier that makes a renamed index imply its segment's data). [`SimDisk::crash`] throws away
//! what a device may lose: a prefix of the journaled directory changes survives, and of each
//! file's other unsynced writes every 512-byte sector is kept or lost on its own (so writes are
//! torn and reordered at sector granularity), truncations mostly kept. An fdatasync makes its
//! own file durable only (harsher than a real device flush, which covers every file).

use super::{Disk, DiskFile, IoFuture, SegmentFile, WriteBuffer};
use bytes::Bytes;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// The unit a device writes atomically.
const SECTOR_BYTES: usize = 512;

enum FileOp {
    Write { pos: u64, bytes: Vec<u8> },
    SetLen(u64),
}

/// An operation and its place in the machine-wide order of completions.
struct Sequenced<T> {
    seq: u64,
    op: T,
}

#[derive(Default)]
struct SimFile {
    content: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<Sequenced<FileOp>>,
}

enum DirOp {
    Link(PathBuf, u64),
    Unlink(PathBuf),
    /// One journal transaction: after a crash the file is under one name or the other.
    Rename(PathBuf, PathBuf, u64),
}

#[derive(Default)]
struct SimState {
    files: HashMap<u64, SimFile>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    journal: Vec<Sequenced<DirOp>>,
    /// Counts completed operations, for the barrier of a journal commit.
    next_seq: u64,
    dirs: BTreeSet<PathBuf>,
    next_inode: u64,
    syncs: u64,
    /// Crashes so far: a handle from before the last crash belongs to a process that died.
    generation: u64,
    /// When set, every operation first yields to other tasks a random number of times (up to
    /// the bound), so operations overlap as they do on a real device.
    latency: Option<(fastrand::Rng, usize)>,
}

/// What a crash keeps of unsynced state.
#[derive(Debug, Clone, Copy)]
pub struct CrashKeep {
    /// Chance that each unsynced sector reaches the platter.
    pub sector: f64,
    /// Chance that an unsynced truncation or extension is kept.
    pub set_len: f64,
}

/// An in-memory disk (one simulated machine), as seen by one boot of the software on it:
/// clones share it; after [`SimDisk::crash`], only views made by [`SimDisk::boot`] may touch
/// it, and everything the crashed process still holds fails.
#[derive(Clone, Default)]
pub struct SimDisk {
    state: Rc<RefCell<SimState>>,
    generation: u64,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{path:?} does not exist"))
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    /// Loses power: every file and directory falls back to what would be on the platter, with
    /// `rng` deciding what of the unsynced state made it. Handles opened before are stale.
    pub fn crash(&self, rng: &mut fastrand::Rng, keep: CrashKeep) {
        let mut st = self.state.borrow_mut();
        st.generation += 1;
        let journal = std::mem::take(&mut st.journal);
        let kept_ops = rng.usize(..=journal.len());
        // The last committed change flushed the device: what completed before it is durable.
        let barrier = journal[..kept_ops].last().map_or(0, |last| last.seq);
        let mut names = std::mem::take(&mut st.durable_names);
        for op in journal.into_iter().take(kept_ops) {
            apply_dir_op(&mut names, op.op);
        }
        st.names = names.clone();
        st.durable_names = names;
        for file in st.files.values_mut() {
            let mut bytes = std::mem::take(&mut file.durable);
            for Sequenced { seq, op } in file.unsynced.drain(..) {
                let flushed = seq < barrier;
                match op {
                    FileOp::SetLen(len) => {
                        if flushed || rng.f64() < keep.set_len {
                            bytes.resize(len as usize, 0);
                        }
                    }
                    FileOp::Write { pos, bytes: data } => {
                        for (i, sector) in data.chunks(SECTOR_BYTES).enumerate() {
                            if !flushed && rng.f64() >= keep.sector {
                                continue;
                            }
                            let at = pos as usize + i * SECTOR_BYTES;
                            if bytes.len() < at + sector.len() {
                                bytes.resize(at + sector.len(), 0);
                            }
                            bytes[at..at + sector.len()].copy_from_slice(sector);
                        }
                    }
                }
            }
            file.content = bytes.clone();
            file.durable = bytes;
        }
        let live: BTreeSet<u64> = st.names.values().copied().collect();
        st.files.retain(|inode, _| live.contains(inode));
    }

    /// A disk whose operations take a random number of scheduler turns (up to `yields_max`) to
    /// complete, drawn from `seed`: background work (a segment's seal, a directory fsync)
    /// overlaps foreground work in every order a real device allows.
    pub fn with_latency(seed: u64, yields_max: usize) -> SimDisk {
        let disk = SimDisk::new();
        disk.state.borrow_mut().latency = Some((fastrand::Rng::with_seed(seed), yields_max));
        disk
    }

    async fn latency(&self) {
        let yields = match &mut self.state.borrow_mut().latency {
            Some((rng, max)) => rng.usize(..=*max),
            None => 0,
        };
        for _ in 0..yields {
            futures_lite::future::yield_now().await;
        }
    }

    /// A view of the disk for the software starting after the last crash.
    pub fn boot(&self) -> SimDisk {
        SimDisk {
            state: self.state.clone(),
            generation: self.state.borrow().generation,
        }
    }

    fn check_alive(&self) -> io::Result<()> {
        if self.state.borrow().generation != self.generation {
            return Err(io::Error::other("the process using this disk crashed"));
        }
        Ok(())
    }

    /// fdatasyncs so far, for tests that count them.
    pub fn syncs(&self) -> u64 {
        self.state.borrow().syncs
    }

    /// Changes the current bytes of a file directly (damage, as a test injects it), without
    /// going through writes; the change is durable at once.
    pub fn damage(&self, path: &Path, change: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        let inode = *st.names.get(path).ok_or_else(|| not_found(path))?;
        let file = st.files.get_mut(&inode).expect("named files exist");
        change(&mut file.content);
        file.durable = file.content.clone();
        file.unsynced.clear();
        Ok(())
    }

    /// The current bytes of a file, if it exists.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.state.borrow();
        let inode = st.names.get(path)?;
        Some(st.files[inode].content.clone())
    }
}

impl SimState {
    fn journal_push(&mut self, op: DirOp) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.journal.push(Sequenced { seq, op });
    }
}

fn apply_dir_op(names: &mut BTreeMap<PathBuf, u64>, op: DirOp) {
    match op {
        DirOp::Link(path, inode) => {
            names.insert(path, inode);
        }
        DirOp::Unlink(path) => {
            names.remove(&path);
        }
        DirOp::Rename(from, to, inode) => {
            names.remove(&from);
            names.insert(to, inode);
        }
    }
}

struct SimHandle {
    disk: SimDisk,
    inode: u64,
    path: PathBuf,
    writable: bool,
    generation: u64,
}

impl SimHandle {
    fn with_file<T>(&self, f: impl FnOnce(&mut SimFile, u64) -> T) -> io::Result<T> {
        let mut st = self.disk.state.borrow_mut();
        if st.generation != self.generation {
            return Err(io::Error::other(
                "the process that opened this file crashed",
            ));
        }
        if !st.files.contains_key(&self.inode) {
            return Err(io::Error::other(format!(
                "{:?} was lost in a crash",
                self.path
            )));
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        let file = st.files.get_mut(&self.inode).expect("checked above");
        Ok(f(file, seq))
    }
}

impl DiskFile for SimHandle {
    fn path(&self) -> &Path {
        &self.path
    }

    fn alloc_buffer(&self, len: usize) -> WriteBuffer {
        WriteBuffer::Plain(vec![0; super::align_up(len as u64) as usize])
    }

    fn write_at(&self, buf: WriteBuffer, pos: u64) -> IoFuture<'_, usize> {
        Box::pin(async move {
            self.disk.latency().await;
            if !self.writable {
                return Err(io::Error::from_raw_os_error(libc::EBADF));
            }
            self.with_file(|file, seq| {
                let bytes = buf.as_bytes().to_vec();
                let end = pos as usize + bytes.len();
                if file.content.len() < end {
                    file.content.resize(end, 0);
                }
                file.content[pos as usize..end].copy_from_slice(&bytes);
                let written = bytes.len();
                file.unsynced.push(Sequenced {
                    seq,
                    op: FileOp::Write { pos, bytes },
                });
                written
            })
        })
    }

    fn read_at(&self, pos: u64, len: usize) -> IoFuture<'_, Bytes> {
        Box::pin(async move {
            self.disk.latency().await;
            self.with_file(|file, _| {
                let start = (pos as usize).min(file.content.len());
                let end = (start + len).min(file.content.len());
                Bytes::copy_from_slice(&file.content[start..end])
            })
        })
    }

    fn sync(&self) -> IoFuture<'_, ()> {
        Box::pin(async move {
            self.disk.latency().await;
            self.with_file(|file, _| {
                file.durable = file.content.clone();
                file.unsynced.clear();
            })?;
            self.disk.state.borrow_mut().syncs += 1;
            Ok(())
        })
    }

    fn len(&self) -> IoFuture<'_, u64> {
        Box::pin(async move { self.with_file(|file, _| file.content.len() as u64) })
    }

    fn set_len(&self, len: u64) -> IoFuture<'_, ()> {
        Box::pin(async move {
            self.disk.latency().await;
            self.with_file(|file, seq| {
                file.content.resize(len as usize, 0);
                file.unsynced.push(Sequenced {
                    seq,
                    op: FileOp::SetLen(len),
                });
            })
        })
    }

    fn close(self: Rc<Self>) -> IoFuture<'static, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
}

impl SimDisk {
    fn handle(&self, path: &Path, create: bool, writable: bool) -> io::Result<SegmentFile> {
        self.check_alive()?;
        let mut st = self.state.borrow_mut();
        let inode = match st.names.get(path) {
            Some(&inode) => inode,
            None if create => {
                let parent = path.parent().expect("files live in directories");
                if !st.dirs.contains(parent) {
                    return Err(not_found(parent));
                }
                st.next_inode += 1;
                let inode = st.next_inode;
                st.files.insert(inode, SimFile::default());
                st.names.insert(path.to_path_buf(), inode);
                st.journal_push(DirOp::Link(path.to_path_buf(), inode));
                inode
            }
            None => return Err(not_found(path)),
        };
        let generation = st.generation;
        Ok(SegmentFile::new(Rc::new(SimHandle {
            disk: self.clone(),
            inode,
            path: path.to_path_buf(),
            writable,
            generation,
        })))
    }
}

impl Disk for SimDisk {
    fn open(&self, path: &Path) -> IoFuture<'_, SegmentFile> {
        Box::pin(std::future::ready(self.handle(path, true, true)))
    }

    fn open_read_only(&self, path: &Path) -> IoFuture<'_, SegmentFile> {
        Box::pin(std::future::ready(self.handle(path, false, false)))
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        // Directories themselves are not crash-simulated: they are created once, long before.
        self.check_alive()?;
        let mut st = self.state.borrow_mut();
        for ancestor in dir.ancestors() {
            st.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.state.borrow();
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(st
            .names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .collect())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.check_alive()?;
        let mut st = self.state.borrow_mut();
        if st.names.remove(path).is_some() {
            st.journal_push(DirOp::Unlink(path.to_path_buf()));
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> IoFuture<'_, ()> {
        let (from, to) = (from.to_path_buf(), to.to_path_buf());
        Box::pin(async move {
            self.latency().await;
            self.replace(&from, &to)
        })
    }

    fn replace(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check_alive()?;
        let mut st = self.state.borrow_mut();
        let inode = st.names.remove(from).ok_or_else(|| not_found(from))?;
        st.names.insert(to.to_path_buf(), inode);
        st.journal_push(DirOp::Rename(from.to_path_buf(), to.to_path_buf(), inode));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> IoFuture<'_, ()> {
        let dir = dir.to_path_buf();
        Box::pin(async move {
            self.latency().await;
            self.check_alive()?;
            let mut st = self.state.borrow_mut();
            if !st.dirs.contains(&dir) {
                return Err(not_found(&dir));
            }
            let journal = std::mem::take(&mut st.journal);
            for op in journal {
                apply_dir_op(&mut st.durable_names, op.op);
            }
            // The commit flushes the device: every completed write is durable now.
            for file in st.files.values_mut() {
                file.durable = file.content.clone();
                file.unsynced.clear();
            }
            st.syncs += 1;
            Ok(())
        })
    }

    fn read_small(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        Ok(self.contents(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::IO_ALIGNMENT;

    fn block(byte: u8) -> WriteBuffer {
        WriteBuffer::Plain(vec![byte; IO_ALIGNMENT as usize])
    }

    #[test]
    fn synced_bytes_survive_and_unsynced_ones_may_not() {
        let mut outcomes = BTreeSet::new();
        for seed in 0..32 {
            futures_lite::future::block_on(async {
                let disk = SimDisk::new();
                let dir = Path::new("/d");
                disk.create_dir_all(dir).unwrap();
                let file = disk.open(&dir.join("a")).await.unwrap();
                file.write_all_at(block(1), 0).await.unwrap();
                file.sync().await.unwrap();
                disk.sync_dir(dir).await.unwrap();
                file.write_all_at(block(2), 4096).await.unwrap();
                // A name never fsynced into its directory may be gone, whatever its data.
                let other = disk.open(&dir.join("b")).await.unwrap();
                other.write_all_at(block(3), 0).await.unwrap();
                other.sync().await.unwrap();
                disk.crash(&mut fastrand::Rng::with_seed(seed), KEEP_NOTHING);
                // The unsynced second block survives only if a later journal commit flushed it.
                let a = disk.contents(&dir.join("a")).unwrap();
                assert!(a == vec![1; 4096] || a == [vec![1; 4096], vec![2; 4096]].concat());
                let b = disk.contents(&dir.join("b"));
                assert!(b.is_none() || b == Some(vec![3; 4096]), "{b:?}");
                outcomes.insert(b.is_some());
            });
        }
        assert_eq!(outcomes.len(), 2, "both outcomes happen");
    }

    #[test]
    fn unsynced_writes_tear_at_sector_granularity() {
        futures_lite::future::block_on(async {
            let disk = SimDisk::new();
            disk.create_dir_all(Path::new("/d")).unwrap();
            let path = Path::new("/d/a");
            let file = disk.open(path).await.unwrap();
            disk.sync_dir(Path::new("/d")).await.unwrap();
            file.write_all_at(block(7), 0).await.unwrap();
            let half = CrashKeep {
                sector: 0.5,
                set_len: 1.0,
            };
            disk.crash(&mut fastrand::Rng::with_seed(3), half);
            let bytes = disk.contents(path).unwrap();
            let kept: Vec<bool> = bytes.chunks(SECTOR_BYTES).map(|s| s[0] == 7).collect();
            assert!(
                kept.iter().any(|k| *k) && kept.iter().any(|k| !*k),
                "{kept:?}"
            );
            for sector in bytes.chunks(SECTOR_BYTES) {
                assert!(sector.iter().all(|b| *b == sector[0]), "sectors are atomic");
            }
        });
    }

    const KEEP_NOTHING: CrashKeep = CrashKeep {
        sector: 0.0,
        set_len: 0.0,
    };
}
