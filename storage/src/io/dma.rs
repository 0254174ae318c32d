//! The real backend: files on the local file system through glommio's direct I/O.

use super::{Disk, DiskFile, IoFuture, SegmentFile, WriteBuffer, IO_ALIGNMENT};
use bytes::Bytes;
use glommio::io::{DmaFile, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

fn to_io(e: glommio::GlommioError<()>) -> io::Error {
    io::Error::from(e)
}

/// O_DIRECT files through glommio, on the current shard. Call [`prepare_shard_io`] once per
/// thread before the first open.
#[derive(Debug, Default, Clone, Copy)]
pub struct DmaDisk;

struct DmaSegment {
    file: Rc<DmaFile>,
    path: PathBuf,
}

impl DiskFile for DmaSegment {
    fn path(&self) -> &Path {
        &self.path
    }

    fn alloc_buffer(&self, len: usize) -> WriteBuffer {
        WriteBuffer::Dma(
            self.file
                .alloc_dma_buffer(super::align_up(len as u64) as usize),
        )
    }

    fn write_at(&self, buf: WriteBuffer, pos: u64) -> IoFuture<'_, usize> {
        Box::pin(async move {
            let WriteBuffer::Dma(buf) = buf else {
                panic!("direct I/O needs a buffer from alloc_buffer");
            };
            self.file.write_at(buf, pos).await.map_err(to_io)
        })
    }

    fn read_at(&self, pos: u64, len: usize) -> IoFuture<'_, Bytes> {
        Box::pin(async move {
            let read = self.file.read_at(pos, len).await.map_err(to_io)?;
            Ok(Bytes::copy_from_slice(&read))
        })
    }

    fn sync(&self) -> IoFuture<'_, ()> {
        Box::pin(async move { self.file.fdatasync().await.map_err(to_io) })
    }

    fn len(&self) -> IoFuture<'_, u64> {
        Box::pin(async move { self.file.file_size().await.map_err(to_io) })
    }

    fn set_len(&self, len: u64) -> IoFuture<'_, ()> {
        Box::pin(async move { self.file.truncate(len).await.map_err(to_io) })
    }

    fn close(self: Rc<Self>) -> IoFuture<'static, ()> {
        Box::pin(async move {
            // The last handle closes the descriptor; other handles keep it open.
            if let Ok(segment) = Rc::try_unwrap(self) {
                DmaFile::close_rc(segment.file).await.map_err(to_io)?;
            }
            Ok(())
        })
    }
}

fn segment(file: DmaFile, path: &Path) -> SegmentFile {
    SegmentFile::new(Rc::new(DmaSegment {
        file: Rc::new(file),
        path: path.to_path_buf(),
    }))
}

impl Disk for DmaDisk {
    fn open(&self, path: &Path) -> IoFuture<'_, SegmentFile> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .dma_open(&path)
                .await
                .map_err(to_io)?;
            Ok(segment(file, &path))
        })
    }

    fn open_read_only(&self, path: &Path) -> IoFuture<'_, SegmentFile> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let file = DmaFile::open(&path).await.map_err(to_io)?;
            Ok(segment(file, &path))
        })
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        std::fs::read_dir(dir)?
            .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
            .collect()
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn replace(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn rename(&self, from: &Path, to: &Path) -> IoFuture<'_, ()> {
        let (from, to) = (from.to_path_buf(), to.to_path_buf());
        Box::pin(async move { glommio::io::rename(&from, &to).await.map_err(to_io) })
    }

    fn sync_dir(&self, dir: &Path) -> IoFuture<'_, ()> {
        let dir = dir.to_path_buf();
        Box::pin(async move {
            let dir = glommio::io::Directory::open(&dir).await.map_err(to_io)?;
            dir.sync().await.map_err(to_io)?;
            dir.close().await.map_err(to_io)
        })
    }

    fn read_small(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
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
