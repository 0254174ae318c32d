//! The one narrow I/O surface of the storage engine, and its backends.
//!
//! Everything the log does to disk goes through a [`Disk`] (directories, small metadata files,
//! opening files) and the [`SegmentFile`]s it opens (positioned writes of aligned buffers,
//! positioned reads, fdatasync, length, truncate). Three backends:
//! - [`DmaDisk`]: the real one, O_DIRECT through glommio;
//! - [`FaultyDisk`]: wraps any disk and fails on command ([`Faults`]: EIO on fdatasync, ENOSPC,
//!   short writes), against real files;
//! - [`SimDisk`]: in memory, remembering what is only written and what is synced, and able to
//!   crash (keep the synced bytes, a random subset of the unsynced writes in any order, the last
//!   of them torn), so crash tests run in-process by the thousand.
//!
//! Every future is `!Send` and lives on the partition's shard.

mod dma;
mod faulty;
mod sim;

pub use dma::{prepare_shard_io, DmaDisk};
pub use faulty::{Faults, FaultyDisk};
pub use sim::{CrashKeep, SimDisk};

use bytes::Bytes;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;

/// Alignment of every write position and length. A page, so it satisfies any logical block
/// size (512 or 4096) the device reports.
pub const IO_ALIGNMENT: u64 = 4096;

/// Rounds `v` down to [`IO_ALIGNMENT`].
pub fn align_down(v: u64) -> u64 {
    v & !(IO_ALIGNMENT - 1)
}

/// Rounds `v` up to [`IO_ALIGNMENT`].
pub fn align_up(v: u64) -> u64 {
    align_down(v + IO_ALIGNMENT - 1)
}

/// A disk operation in flight.
pub type IoFuture<'a, T> = Pin<Box<dyn Future<Output = io::Result<T>> + 'a>>;

/// A buffer for one positioned write: DMA memory for direct I/O, plain memory otherwise.
pub enum WriteBuffer {
    /// Aligned memory registered for direct I/O.
    Dma(glommio::io::DmaBuffer),
    /// Ordinary memory (the simulated disk).
    Plain(Vec<u8>),
}

impl WriteBuffer {
    /// The bytes, to fill.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        match self {
            WriteBuffer::Dma(buf) => buf.as_bytes_mut(),
            WriteBuffer::Plain(buf) => buf,
        }
    }
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            WriteBuffer::Dma(buf) => buf.as_bytes(),
            WriteBuffer::Plain(buf) => buf,
        }
    }
    /// Length in bytes (a multiple of [`IO_ALIGNMENT`]).
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }
    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One open file of a backend.
#[allow(clippy::len_without_is_empty)] // a length is asked of the device, emptiness never is
pub trait DiskFile {
    /// The file's path.
    fn path(&self) -> &Path;
    /// A buffer of at least `len` bytes, rounded up to [`IO_ALIGNMENT`]; not zeroed.
    fn alloc_buffer(&self, len: usize) -> WriteBuffer;
    /// Writes `buf` at `pos`; returns how many bytes the device took.
    fn write_at(&self, buf: WriteBuffer, pos: u64) -> IoFuture<'_, usize>;
    /// Reads up to `len` bytes at `pos`; fewer at the end of the file.
    fn read_at(&self, pos: u64, len: usize) -> IoFuture<'_, Bytes>;
    /// fdatasync.
    fn sync(&self) -> IoFuture<'_, ()>;
    /// Current length.
    fn len(&self) -> IoFuture<'_, u64>;
    /// Truncates or extends to `len` bytes.
    fn set_len(&self, len: u64) -> IoFuture<'_, ()>;
    /// Releases this handle's descriptor (once the last handle is closed).
    fn close(self: Rc<Self>) -> IoFuture<'static, ()>;
}

/// A backend: where files are opened and directories changed.
pub trait Disk {
    /// Opens `path` read-write, creating it if absent.
    fn open(&self, path: &Path) -> IoFuture<'_, SegmentFile>;
    /// Opens an existing file for reading only.
    fn open_read_only(&self, path: &Path) -> IoFuture<'_, SegmentFile>;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries of a directory (`NotFound` if it does not exist).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Removes a file; one that is already gone is not an error.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing any file at `to`.
    fn rename(&self, from: &Path, to: &Path) -> IoFuture<'_, ()>;
    /// Renames `from` to `to` now, replacing `to` atomically, without awaiting: like
    /// [`Disk::remove`], so a caller can change a file and what it knows of the file with no
    /// other task in between. Durable once the directory is synced.
    fn replace(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// fsyncs a directory, so that entries created, renamed or removed in it survive a crash.
    fn sync_dir(&self, dir: &Path) -> IoFuture<'_, ()>;
    /// The whole content of a small file, `None` if it does not exist.
    fn read_small(&self, path: &Path) -> io::Result<Option<Vec<u8>>>;
}

/// A file opened on a [`Disk`]. Cheap to clone: readers keep a handle while the writer appends,
/// and a removed file stays readable until the last handle is closed.
#[derive(Clone)]
pub struct SegmentFile(Rc<dyn DiskFile>);

impl SegmentFile {
    /// Wraps a backend's file.
    pub fn new(file: Rc<dyn DiskFile>) -> SegmentFile {
        SegmentFile(file)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// A buffer suitable for [`SegmentFile::write_all_at`] of at least `len` bytes, rounded up
    /// to the alignment. Its contents are not zeroed.
    pub fn alloc_buffer(&self, len: usize) -> WriteBuffer {
        self.0.alloc_buffer(len)
    }

    /// Writes the whole buffer at an aligned position. A short write is an error: the caller
    /// cannot know which bytes landed, only that the bytes before `pos` are untouched.
    pub async fn write_all_at(&self, buf: WriteBuffer, pos: u64) -> io::Result<()> {
        assert!(
            pos.is_multiple_of(IO_ALIGNMENT),
            "unaligned write at {pos} to {:?}",
            self.path()
        );
        assert!(
            (buf.len() as u64).is_multiple_of(IO_ALIGNMENT),
            "unaligned write length {}",
            buf.len()
        );
        let wanted = buf.len();
        let written = self.0.write_at(buf, pos).await?;
        if written != wanted {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "short write to {:?} at {pos}: {written} of {wanted} bytes",
                    self.path()
                ),
            ));
        }
        Ok(())
    }

    /// Reads up to `len` bytes at `pos` (any alignment); fewer at the end of the file.
    pub async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        self.0.read_at(pos, len).await
    }

    /// fdatasync. After an error the caller must treat everything unsynced as lost.
    pub async fn sync(&self) -> io::Result<()> {
        let started = std::time::Instant::now();
        let synced = self.0.sync().await;
        crate::metrics::record_fsync(started.elapsed());
        synced
    }

    /// Current file length.
    pub async fn len(&self) -> io::Result<u64> {
        self.0.len().await
    }

    /// Truncates or extends the file to `len` bytes.
    pub async fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len).await
    }

    /// Closes this handle. The descriptor is released once the last clone is closed or dropped
    /// (a reader may still hold one); glommio would otherwise close a dropped file only on a
    /// later I/O cycle of the shard, which never comes if the shard is stopping.
    pub async fn close(self) -> io::Result<()> {
        self.0.close().await
    }
}

/// Writes a small file atomically: `<path>.tmp`, then rename over `path`, so a reader sees the
/// old file or the new one, never a mix. With `durable`, the temporary file is fdatasynced
/// before the rename and the directory after it, so the new file also survives a crash; derived
/// files (indexes, which a checksum guards and recovery rebuilds) skip that under flush `never`,
/// where any fdatasync makes the device flush the whole unsynced segment from its cache.
pub async fn write_file_atomically(
    disk: &dyn Disk,
    path: &Path,
    bytes: &[u8],
    durable: bool,
) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let file = disk.open(&tmp).await?;
    file.set_len(0).await?;
    let mut buf = file.alloc_buffer(bytes.len().max(1));
    buf.as_bytes_mut()[..bytes.len()].copy_from_slice(bytes);
    buf.as_bytes_mut()[bytes.len()..].fill(0);
    file.write_all_at(buf, 0).await?;
    file.set_len(bytes.len() as u64).await?;
    if durable {
        file.sync().await?;
    }
    file.close().await?;
    disk.rename(&tmp, path).await?;
    if durable {
        let dir = path.parent().expect("a file lives in a directory");
        disk.sync_dir(dir).await?;
    }
    Ok(())
}

/// The disk a partition uses when none is given: direct I/O on the real file system.
pub fn default_disk() -> Rc<dyn Disk> {
    Rc::new(DmaDisk)
}
