//! Fault injection: a [`Disk`] that wraps another and fails on command.
//!
//! Tests (and the reliability suite) wrap the real disk so that the code paths handling EIO,
//! ENOSPC and short writes run against real files.

use super::{Disk, DiskFile, IoFuture, SegmentFile, WriteBuffer};
use bytes::Bytes;
use std::cell::Cell;
use std::io;
use std::path::Path;
use std::rc::Rc;

/// Switches that make file operations fail. All start off.
#[derive(Debug, Default)]
pub struct Faults {
    fail_syncs: Cell<bool>,
    enospc_writes: Cell<bool>,
    short_next_write: Cell<bool>,
    syncs: Cell<u64>,
    writes: Cell<u64>,
}

impl Faults {
    /// Every fdatasync from now on fails with EIO.
    pub fn fail_syncs(&self, on: bool) {
        self.fail_syncs.set(on);
    }
    /// Every write from now on fails with ENOSPC, as on a full disk.
    pub fn fail_writes_with_enospc(&self, on: bool) {
        self.enospc_writes.set(on);
    }
    /// The next write reports writing half its bytes.
    pub fn shorten_next_write(&self) {
        self.short_next_write.set(true);
    }
    /// Number of fdatasyncs attempted so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.get()
    }
    /// Number of writes attempted so far.
    pub fn writes(&self) -> u64 {
        self.writes.get()
    }

    fn before_write(&self) -> io::Result<()> {
        self.writes.set(self.writes.get() + 1);
        if self.enospc_writes.get() {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }

    fn after_write(&self, written: usize) -> usize {
        if self.short_next_write.replace(false) {
            written / 2
        } else {
            written
        }
    }

    fn before_sync(&self) -> io::Result<()> {
        self.syncs.set(self.syncs.get() + 1);
        if self.fail_syncs.get() {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }
}

/// A disk whose files consult [`Faults`] before every write and fdatasync.
pub struct FaultyDisk {
    inner: Rc<dyn Disk>,
    faults: Rc<Faults>,
}

impl FaultyDisk {
    /// Wraps `inner`; `faults` stays with the caller to flip the switches.
    pub fn new(inner: Rc<dyn Disk>, faults: Rc<Faults>) -> FaultyDisk {
        FaultyDisk { inner, faults }
    }
}

struct FaultyFile {
    inner: SegmentFile,
    faults: Rc<Faults>,
}

impl DiskFile for FaultyFile {
    fn path(&self) -> &Path {
        self.inner.path()
    }
    fn alloc_buffer(&self, len: usize) -> WriteBuffer {
        self.inner.alloc_buffer(len)
    }
    fn write_at(&self, buf: WriteBuffer, pos: u64) -> IoFuture<'_, usize> {
        Box::pin(async move {
            self.faults.before_write()?;
            let written = self.inner.0.write_at(buf, pos).await?;
            Ok(self.faults.after_write(written))
        })
    }
    fn read_at(&self, pos: u64, len: usize) -> IoFuture<'_, Bytes> {
        self.inner.0.read_at(pos, len)
    }
    fn sync(&self) -> IoFuture<'_, ()> {
        Box::pin(async move {
            self.faults.before_sync()?;
            self.inner.0.sync().await
        })
    }
    fn len(&self) -> IoFuture<'_, u64> {
        self.inner.0.len()
    }
    fn set_len(&self, len: u64) -> IoFuture<'_, ()> {
        self.inner.0.set_len(len)
    }
    fn close(self: Rc<Self>) -> IoFuture<'static, ()> {
        Box::pin(async move {
            match Rc::try_unwrap(self) {
                Ok(file) => file.inner.close().await,
                Err(_) => Ok(()),
            }
        })
    }
}

impl FaultyDisk {
    fn wrap(&self, inner: SegmentFile) -> SegmentFile {
        SegmentFile::new(Rc::new(FaultyFile {
            inner,
            faults: self.faults.clone(),
        }))
    }
}

impl Disk for FaultyDisk {
    fn open(&self, path: &Path) -> IoFuture<'_, SegmentFile> {
        let path = path.to_path_buf();
        Box::pin(async move { Ok(self.wrap(self.inner.open(&path).await?)) })
    }
    fn open_read_only(&self, path: &Path) -> IoFuture<'_, SegmentFile> {
        let path = path.to_path_buf();
        Box::pin(async move { Ok(self.wrap(self.inner.open_read_only(&path).await?)) })
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn replace(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.replace(from, to)
    }
    fn rename(&self, from: &Path, to: &Path) -> IoFuture<'_, ()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> IoFuture<'_, ()> {
        self.inner.sync_dir(dir)
    }
    fn read_small(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        self.inner.read_small(path)
    }
}
