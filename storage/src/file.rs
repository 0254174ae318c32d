//! The one narrow I/O surface of the storage engine: a segment or index file on direct I/O.
//!
//! Everything the log does to disk goes through [`SegmentFile`]: positioned writes of aligned
//! buffers, positioned reads, fdatasync, length, truncate. Tests attach [`Faults`] to make any of
//! these fail on command (EIO on sync, ENOSPC, short writes) against real files.

use crate::faults::Faults;
use bytes::Bytes;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
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

fn to_io(e: glommio::GlommioError<()>) -> io::Error {
    io::Error::from(e)
}

/// A file opened for direct I/O on the current shard. Cheap to clone: readers keep a handle
/// while the writer appends, and a removed file stays readable until the last handle drops.
#[derive(Clone)]
pub struct SegmentFile {
    file: Rc<DmaFile>,
    path: Rc<PathBuf>,
    faults: Option<Rc<Faults>>,
}

impl SegmentFile {
    /// Opens `path` read-write, creating it if absent. Call [`prepare_shard_io`] on this thread
    /// first.
    pub async fn open(path: &Path, faults: Option<Rc<Faults>>) -> io::Result<SegmentFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(path)
            .await
            .map_err(to_io)?;
        Ok(SegmentFile {
            file: Rc::new(file),
            path: Rc::new(path.to_path_buf()),
            faults,
        })
    }

    /// Opens an existing file for reading only (verification must change nothing).
    pub async fn open_read_only(path: &Path) -> io::Result<SegmentFile> {
        let file = DmaFile::open(path).await.map_err(to_io)?;
        Ok(SegmentFile {
            file: Rc::new(file),
            path: Rc::new(path.to_path_buf()),
            faults: None,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A buffer suitable for [`SegmentFile::write_all_at`] of at least `len` bytes, rounded up to
    /// the alignment. Its contents are not zeroed.
    pub fn alloc_buffer(&self, len: usize) -> DmaBuffer {
        self.file.alloc_dma_buffer(align_up(len as u64) as usize)
    }

    /// Writes the whole buffer at an aligned position. A short write is an error: the caller
    /// cannot know which bytes landed, only that the bytes before `pos` are untouched.
    pub async fn write_all_at(&self, buf: DmaBuffer, pos: u64) -> io::Result<()> {
        assert!(
            pos.is_multiple_of(IO_ALIGNMENT),
            "unaligned write at {pos} to {:?}",
            self.path
        );
        assert!(
            (buf.len() as u64).is_multiple_of(IO_ALIGNMENT),
            "unaligned write length {}",
            buf.len()
        );
        let wanted = buf.len();
        if let Some(faults) = &self.faults {
            faults.before_write(wanted)?;
        }
        let mut written = self.file.write_at(buf, pos).await.map_err(to_io)?;
        if let Some(faults) = &self.faults {
            written = faults.after_write(written);
        }
        if written != wanted {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "short write to {:?} at {pos}: {written} of {wanted} bytes",
                    self.path
                ),
            ));
        }
        Ok(())
    }

    /// Reads up to `len` bytes at `pos` (any alignment); fewer at the end of the file.
    pub async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        let read = self.file.read_at(pos, len).await.map_err(to_io)?;
        Ok(Bytes::copy_from_slice(&read))
    }

    /// fdatasync. After an error the caller must treat everything unsynced as lost.
    pub async fn sync(&self) -> io::Result<()> {
        if let Some(faults) = &self.faults {
            faults.before_sync()?;
        }
        let started = std::time::Instant::now();
        let synced = self.file.fdatasync().await.map_err(to_io);
        crate::metrics::record_fsync(started.elapsed());
        synced
    }

    /// Current file length.
    pub async fn len(&self) -> io::Result<u64> {
        self.file.file_size().await.map_err(to_io)
    }

    /// Closes this handle. The descriptor is released once the last clone is closed or dropped
    /// (a reader may still hold one); glommio would otherwise close a dropped file only on a
    /// later I/O cycle of the shard, which never comes if the shard is stopping.
    pub async fn close(self) -> io::Result<()> {
        DmaFile::close_rc(self.file).await.map_err(to_io)?;
        Ok(())
    }

    /// Truncates or extends the file to `len` bytes.
    pub async fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.truncate(len).await.map_err(to_io)
    }
}

/// Works around glommio's io-poll probe bug (glommio #605, #670): the first DMA open on a thread
/// probes io-poll support by reading block 0 of that file; if the file is empty the probe
/// "succeeds", the device is marked pollable for the thread, and every later DMA read fails with
/// EOPNOTSUPP. Opening a file that holds a written, synced block first makes the probe read real
/// data and get the right answer. Call once per thread (a shard, a tool) before any other DMA
/// open; `thread_name` names the probe file (`<data_dir>/.<thread_name>.probe`), which must be
/// on the same device as the data.
pub async fn prepare_shard_io(data_dir: &Path, thread_name: &str) -> io::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    let probe_path = data_dir.join(format!(".{thread_name}.probe"));
    {
        use std::io::Write;
        let mut probe = std::fs::File::create(&probe_path)?;
        probe.write_all(&[0x5a; IO_ALIGNMENT as usize])?;
        probe.sync_all()?;
    }
    let probe = DmaFile::open(&probe_path).await.map_err(to_io)?;
    let block = probe
        .read_at_aligned(0, IO_ALIGNMENT as usize)
        .await
        .map_err(to_io)?;
    assert_eq!(
        block.len(),
        IO_ALIGNMENT as usize,
        "probe file {probe_path:?} reads short"
    );
    probe.close().await.map_err(to_io)?;
    Ok(())
}

/// Writes a small file atomically: `<path>.tmp` by direct I/O, then rename over `path`. Used for
/// index files, which are derived data: a torn one fails its checksum and is rebuilt.
pub async fn write_file_atomically(
    path: &Path,
    bytes: &[u8],
    faults: Option<Rc<Faults>>,
) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let file = SegmentFile::open(&tmp, faults).await?;
    file.set_len(0).await?;
    let mut buf = file.alloc_buffer(bytes.len());
    buf.as_bytes_mut()[..bytes.len()].copy_from_slice(bytes);
    buf.as_bytes_mut()[bytes.len()..].fill(0);
    file.write_all_at(buf, 0).await?;
    file.set_len(bytes.len() as u64).await?;
    file.close().await?;
    glommio::io::rename(&tmp, path).await.map_err(to_io)
}

/// fsyncs a directory so that files created or renamed in it survive a power loss.
pub async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = glommio::io::Directory::open(dir).await.map_err(to_io)?;
    dir.sync().await.map_err(to_io)?;
    dir.close().await.map_err(to_io)
}
