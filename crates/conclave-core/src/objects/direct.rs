//! Local objects written, and read whole, with direct I/O (`O_DIRECT`), past the page cache.
//! Writing through the page cache cost a fifth of an upload's CPU time, and reading an object that
//! is not cached costs the kernel more than a second of CPU per GiB on these virtual disks, against
//! a twentieth of that read directly (bench/RESULTS.md "Documents"). Byte ranges are read through
//! the page cache ([`DirectReader::cached`]), where a range asked for again is fastest.
//!
//! An object is written the way `object_store`'s `LocalFileSystem` writes a multipart upload, so
//! its readers and listing see the same thing: under `<path>#<n>` beside the object, from one
//! reused, aligned buffer, renamed into place when complete, removed when not.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use conclave_crypto::segment::SegmentOutput;
use memmap2::{Advice, MmapMut, MmapOptions};

/// Direct I/O wants the buffer's address, the length and the file offset in multiples of the
/// device's logical block; 4 KiB covers every block size in use.
const ALIGN: usize = 4096;
/// The room of an upload's blocks of ciphertext: one huge page.
pub(crate) const BLOCK_CAPACITY: usize = HUGE_PAGE;
/// A block is written once it holds this much; the room left takes the last segment sealed
/// into it (64 KiB and its tag), so it never outgrows [`BLOCK_CAPACITY`].
pub(crate) const WRITE_BLOCK: usize = BLOCK_CAPACITY - (128 << 10);

/// One object being written, block by block. Dropped before [`publish`](Self::publish), it
/// removes what it wrote: an interrupted upload leaves nothing.
pub(crate) struct LocalObjectWriter {
    file: Option<File>,
    staging: PathBuf,
    dest: PathBuf,
    /// Whether the file is open with `O_DIRECT`; false on file systems that refuse it.
    direct: bool,
    /// Bytes of the object already in the file.
    written: u64,
    published: bool,
    #[cfg(test)]
    refuse_direct_writes: bool,
}

impl LocalObjectWriter {
    /// Starts the object that will be `dest` (its folders are created).
    pub(crate) fn create(dest: &Path) -> std::io::Result<Self> {
        Self::create_with(dest, DIRECT_IO)
    }

    fn create_with(dest: &Path, direct_io: DirectIo) -> std::io::Result<Self> {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let (file, staging, direct) = create_staging(dest, direct_io)?;
        Ok(Self {
            file: Some(file),
            staging,
            dest: dest.to_owned(),
            direct,
            written: 0,
            published: false,
            #[cfg(test)]
            refuse_direct_writes: matches!(direct_io, DirectIo::RefusedAtWrite),
        })
    }

    /// Appends a block whose length is a whole number of aligned units (see
    /// [`AlignedBuffer::take_aligned`]).
    pub(crate) fn write_block(&mut self, block: &AlignedBuffer) -> std::io::Result<()> {
        if !block.len().is_multiple_of(ALIGN) {
            return Err(std::io::Error::other("a block that is not the last must fill whole aligned units"));
        }
        self.write_out(block.as_slice())
    }

    /// Appends the last block (any length), sets the file to the object's length and renames it
    /// into place.
    pub(crate) fn publish(mut self, mut last: AlignedBuffer) -> std::io::Result<u64> {
        let rest = last.len();
        let length = self.written + rest as u64;
        if self.direct {
            // The last block is padded to the alignment, then the padding cut off (also when
            // the write fell back to the page cache on the way).
            let padded = rest.div_ceil(ALIGN) * ALIGN;
            last.grow(padded - rest).fill(0);
            self.write_out(last.as_slice())?;
            self.file()?.set_len(length)?;
        } else {
            self.write_out(last.as_slice())?;
        }
        if !self.direct {
            // Without direct I/O the data sits in the page cache, where a failed write-back
            // shows only at fsync or close: flush it so a failure fails the upload.
            self.file()?.sync_all()?;
        }
        drop(self.file.take());
        std::fs::rename(&self.staging, &self.dest)?;
        self.published = true;
        Ok(length)
    }

    /// Writes `data` at the end of the file.
    fn write_out(&mut self, data: &[u8]) -> std::io::Result<()> {
        let offset = self.written;
        #[cfg(test)]
        let result = if self.direct && self.refuse_direct_writes {
            Err(std::io::Error::from_raw_os_error(libc::EINVAL))
        } else {
            self.file()?.write_all_at(data, offset)
        };
        #[cfg(not(test))]
        let result = self.file()?.write_all_at(data, offset);
        match result {
            Ok(()) => {}
            // A file system may take O_DIRECT at open and refuse the writes: write through the
            // page cache instead, from where the direct writes stopped.
            Err(e) if self.direct && e.kind() == ErrorKind::InvalidInput => {
                tracing::warn!(folder = %self.dest.parent().unwrap_or(&self.dest).display(), error = %e,
                    "direct writes refused by the object folder's file system; writing through the page cache");
                self.file = Some(OpenOptions::new().write(true).open(&self.staging)?);
                self.direct = false;
                self.file()?.write_all_at(data, offset)?;
            }
            Err(e) => return Err(e),
        }
        self.written += data.len() as u64;
        Ok(())
    }

    fn file(&self) -> std::io::Result<&File> {
        self.file.as_ref().ok_or_else(|| std::io::Error::other("the object file is already closed"))
    }
}

impl Drop for LocalObjectWriter {
    fn drop(&mut self) {
        // A published object has no staging file any more; anything else is removed.
        drop(self.file.take());
        if !self.published {
            if let Err(e) = std::fs::remove_file(&self.staging) {
                tracing::warn!(path = %self.staging.display(), error = %e, "an interrupted object could not be removed");
            }
        }
    }
}

/// Reads blocks of a local object directly (or through the page cache where the file system has
/// no direct I/O), each into a fresh block that can be handed on as `Bytes`.
pub(crate) struct DirectReader {
    file: File,
    /// The file's path until a direct reopen was tried (on the first read, on the blocking pool).
    reopen: Option<PathBuf>,
    direct: bool,
}

impl DirectReader {
    /// Reads `file`, which is `path`: reopened for direct reads at the first read where the file
    /// system allows, read as it is otherwise.
    pub(crate) fn new(file: File, path: PathBuf) -> Self {
        Self { file, reopen: Some(path), direct: false }
    }

    /// Reads `file` through the page cache: for byte ranges, which clients tend to ask for again
    /// (a viewer paging back and forth), where a cached read is the fastest.
    pub(crate) fn cached(file: File) -> Self {
        Self { file, reopen: None, direct: false }
    }

    fn try_direct(&mut self) {
        let Some(path) = self.reopen.take() else { return };
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::OpenOptionsExt;
            if let Ok(direct) = OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&path) {
                self.file = direct;
                self.direct = true;
            }
        }
        let _ = path;
    }

    /// Exactly `len` bytes from `offset`: a block and where in it they are. A file that ends
    /// before is an error.
    pub(crate) fn read(&mut self, offset: u64, len: u64) -> std::io::Result<(Vec<u8>, std::ops::Range<usize>)> {
        let short = || {
            let message = format!("the object ends before byte {}", offset + len);
            std::io::Error::new(ErrorKind::UnexpectedEof, message)
        };
        let end = offset.checked_add(len).ok_or_else(short)?;
        let want = usize::try_from(len).map_err(|_| short())?;
        self.try_direct();
        if self.direct {
            let first = offset / ALIGN as u64 * ALIGN as u64;
            let last = end.div_ceil(ALIGN as u64) * ALIGN as u64;
            let span = usize::try_from(last - first).map_err(|_| short())?;
            let mut storage = vec![0u8; span + ALIGN];
            let start = storage.as_ptr().align_offset(ALIGN);
            match read_fully(&self.file, &mut storage[start..start + span], first) {
                Ok(got) => {
                    let skip = (offset - first) as usize;
                    if got < skip + want {
                        return Err(short());
                    }
                    let at = start + skip;
                    return Ok((storage, at..at + want));
                }
                // Refused after all (a file system that takes the flag but not the reads).
                Err(e) if e.kind() == ErrorKind::InvalidInput => self.direct = false,
                Err(e) => return Err(e),
            }
        }
        let mut block = vec![0u8; want];
        if read_fully(&self.file, &mut block, offset)? < want {
            return Err(short());
        }
        Ok((block, 0..want))
    }
}

/// Reads into `buf` from `offset` until it is full or the file ends; how much was read.
fn read_fully(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Whether to open objects with `O_DIRECT`.
#[derive(Clone, Copy)]
enum DirectIo {
    Use,
    /// Tests: behave as a file system that refuses `O_DIRECT` at open.
    #[cfg(test)]
    RefusedAtOpen,
    /// Tests: take `O_DIRECT` at open and refuse the writes.
    #[cfg(test)]
    RefusedAtWrite,
}

const DIRECT_IO: DirectIo = DirectIo::Use;

/// Creates `<dest>#<n>` for the first free `n`, as `LocalFileSystem` names its staging files
/// (which its listing skips), with `O_DIRECT` where the file system takes it.
fn create_staging(dest: &Path, direct_io: DirectIo) -> std::io::Result<(File, PathBuf, bool)> {
    for n in 1u32.. {
        let mut staging = dest.as_os_str().to_owned();
        staging.push(format!("#{n}"));
        let staging = PathBuf::from(staging);
        match open_new(&staging, direct_io) {
            Ok((file, direct)) => return Ok((file, staging, direct)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free staging name"))
}

fn open_new(path: &Path, direct_io: DirectIo) -> std::io::Result<(File, bool)> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    let buffered = options.clone();
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_DIRECT);
        let opened = match direct_io {
            DirectIo::Use => options.open(path),
            #[cfg(test)]
            DirectIo::RefusedAtOpen => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
            #[cfg(test)]
            DirectIo::RefusedAtWrite => options.open(path),
        };
        match opened {
            Ok(file) => return Ok((file, true)),
            // EINVAL: this file system has no direct I/O (older tmpfs, some FUSE file systems).
            Err(e) if e.kind() == ErrorKind::InvalidInput => {}
            Err(e) => return Err(e),
        }
    }
    let _ = direct_io;
    buffered.open(path).map(|f| (f, false))
}

/// A byte buffer whose start is aligned for direct I/O: fresh zeroed pages of its own mapping,
/// so sealing into it never zeroes first. Room of [`HUGE_PAGE`] or more starts on a huge-page
/// boundary and is asked to be backed by transparent huge pages: the kernel then pins one page
/// instead of 512 for each direct write from it, which cut the writer's CPU time by about a half
/// (bench/RESULTS.md "Documents").
pub(crate) struct AlignedBuffer {
    map: MmapMut,
    start: usize,
    len: usize,
    capacity: usize,
}

/// A transparent huge page on x86-64 and most aarch64 kernels.
pub(crate) const HUGE_PAGE: usize = 2 << 20;

impl AlignedBuffer {
    /// An empty buffer with room for `capacity` bytes; an error when the system will not map
    /// them (out of memory, or of mappings), so one upload fails rather than the server.
    pub(crate) fn new(capacity: usize) -> std::io::Result<Self> {
        let align = if capacity >= HUGE_PAGE { HUGE_PAGE } else { ALIGN };
        // Mappings start on a page (ALIGN) boundary; for a huge-page boundary, map a huge page
        // more than needed and start inside it (the part not used is never touched).
        let extra = if align == HUGE_PAGE { HUGE_PAGE } else { 0 };
        let length = capacity.max(1) + extra;
        let map = MmapOptions::new().len(length).map_anon()?;
        let start = map.as_ptr().align_offset(align);
        if align == HUGE_PAGE {
            // A hint: without transparent huge pages (or with them disabled) the buffer works
            // the same from ordinary pages.
            let _ = map.advise(Advice::HugePage);
        }
        Ok(Self { map, start, len: 0, capacity })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len]
    }

    /// Empties the buffer, keeping its room.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// Ends this buffer at its last whole aligned unit; the bytes after it (less than one unit)
    /// go to `rest`, which is emptied first.
    pub(crate) fn take_aligned(&mut self, rest: &mut AlignedBuffer) {
        let whole = self.len / ALIGN * ALIGN;
        rest.clear();
        rest.grow(self.len - whole).copy_from_slice(&self.as_slice()[whole..]);
        self.len = whole;
    }

    /// The bytes, as `Bytes` (for stores that take them as they are); the mapping goes with them.
    pub(crate) fn into_bytes(self) -> bytes::Bytes {
        let range = self.start..self.start + self.len;
        bytes::Bytes::from_owner(self.map).slice(range)
    }
}

impl SegmentOutput for AlignedBuffer {
    fn grow(&mut self, n: usize) -> &mut [u8] {
        let needed = self.len + n;
        if needed > self.capacity {
            // Only when more is sealed into a block than it has room for (the upload's sealer
            // never does): a larger buffer, once. Out of memory here aborts, as a `Vec` would.
            let room = needed.next_power_of_two();
            let mut larger = AlignedBuffer::new(room).unwrap_or_else(|_| {
                std::alloc::handle_alloc_error(
                    std::alloc::Layout::from_size_align(room, ALIGN).unwrap_or(std::alloc::Layout::new::<u8>()),
                )
            });
            larger.grow(self.len).copy_from_slice(self.as_slice());
            *self = larger;
        }
        let from = self.start + self.len;
        self.len = needed;
        &mut self.map[from..from + n]
    }

    fn shrink(&mut self, n: usize) {
        self.len = self.len.saturating_sub(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ (i >> 12) as u8).collect()
    }

    /// Writes `data` in blocks as an upload fills them from pieces of `piece` bytes, and publishes it.
    fn write(dest: &Path, data: &[u8], piece: usize, direct_io: DirectIo) -> (u64, bool) {
        let mut writer = LocalObjectWriter::create_with(dest, direct_io).unwrap();
        let opened_direct = writer.direct;
        let (mut block, mut next) =
            (AlignedBuffer::new(2 * WRITE_BLOCK).unwrap(), AlignedBuffer::new(2 * WRITE_BLOCK).unwrap());
        for chunk in data.chunks(piece.max(1)) {
            block.grow(chunk.len()).copy_from_slice(chunk);
            if block.len() >= WRITE_BLOCK {
                block.take_aligned(&mut next);
                writer.write_block(&block).unwrap();
                std::mem::swap(&mut block, &mut next);
            }
        }
        (writer.publish(block).unwrap(), opened_direct)
    }

    fn staging_files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(staging_files(&path));
            } else if path.to_string_lossy().contains('#') {
                out.push(path);
            }
        }
        out
    }

    #[test]
    fn objects_of_any_length_are_written_exactly() {
        let dir = tempfile::tempdir().unwrap();
        objects_of_any_length_in(dir.path());
    }

    /// tmpfs takes O_DIRECT since Linux 6.6 (it writes through its own pages).
    #[test]
    fn objects_of_any_length_are_written_exactly_to_tmpfs() {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            let dir = tempfile::tempdir_in(shm).unwrap();
            objects_of_any_length_in(dir.path());
        }
    }

    fn objects_of_any_length_in(dir: &Path) {
        // Empty, under one aligned unit, exactly aligned, one short of a block, exactly a block,
        // a block and a partial last unit, several blocks.
        for (i, len) in [0, 1, 4095, 4096, 4097, WRITE_BLOCK - 1, WRITE_BLOCK, WRITE_BLOCK + 5000, 3 * WRITE_BLOCK + 17]
            .into_iter()
            .enumerate()
        {
            let data = pattern(len);
            for piece in [1000, 65_552, 700_000, 3 * WRITE_BLOCK] {
                let dest = dir.join(format!("a/b/object-{i}-{piece}"));
                let (written, _) = write(&dest, &data, piece, DIRECT_IO);
                assert_eq!(written, len as u64);
                assert!(std::fs::read(&dest).unwrap() == data, "object {len} bytes in pieces of {piece} differs");
            }
        }
        assert!(staging_files(dir).is_empty(), "no staging file is left");
    }

    #[test]
    fn any_range_is_read_directly_and_a_short_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("object");
        let data = pattern(3 * WRITE_BLOCK + 1234);
        write(&dest, &data, 65_552, DIRECT_IO);
        let mut reader = DirectReader::new(File::open(&dest).unwrap(), dest.clone());
        let total = data.len() as u64;
        for (offset, len) in [
            (0, 16),
            (16, 65_552),
            (4095, 2),
            (4096, 4096),
            (1_000_000, 1 << 20),
            (total - 10, 10),
            (0, total),
            (total, 0),
        ] {
            let (block, at) = reader.read(offset, len).unwrap();
            assert!(block[at] == data[offset as usize..(offset + len) as usize], "{offset}+{len}");
            assert!(reader.direct);
        }
        let past = reader.read(total - 10, 11).unwrap_err();
        assert_eq!(past.kind(), ErrorKind::UnexpectedEof);
        assert!(past.to_string().contains(&format!("before byte {}", total + 1)));

        let mut buffered = DirectReader::cached(File::open(&dest).unwrap());
        let (block, at) = buffered.read(5000, 70_000).unwrap();
        assert!(block[at] == data[5000..75_000]);
        assert_eq!(buffered.read(total - 1, 2).unwrap_err().kind(), ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_writer_dropped_before_publishing_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("tenants/t/object");
        let mut writer = LocalObjectWriter::create(&dest).unwrap();
        let mut block = AlignedBuffer::new(WRITE_BLOCK).unwrap();
        block.grow(3 * WRITE_BLOCK).copy_from_slice(&pattern(3 * WRITE_BLOCK));
        writer.write_block(&block).unwrap();
        block.clear();
        block.grow(100);
        assert!(writer.write_block(&block).is_err(), "only the last block may end mid-unit");
        assert_eq!(staging_files(dir.path()).len(), 1, "the object is written beside its place");
        assert!(!dest.exists(), "and is not visible before it is complete");
        drop(writer);
        assert!(!dest.exists());
        assert!(staging_files(dir.path()).is_empty(), "the interrupted object is removed");
    }

    #[test]
    fn blocks_of_a_huge_page_start_on_one() {
        for capacity in [HUGE_PAGE, 2 * HUGE_PAGE] {
            let mut block = AlignedBuffer::new(capacity).unwrap();
            block.grow(capacity).fill(7);
            assert_eq!(block.as_slice().as_ptr() as usize % HUGE_PAGE, 0);
            assert!(block.as_slice().iter().all(|&b| b == 7));
        }
        let small = AlignedBuffer::new(10_000).unwrap();
        assert_eq!(small.as_slice().as_ptr() as usize % ALIGN, 0);
    }

    #[test]
    fn a_staging_name_in_use_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("object");
        std::fs::write(dir.path().join("object#1"), b"another writer's").unwrap();
        let data = pattern(10_000);
        write(&dest, &data, 4096, DIRECT_IO);
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        assert_eq!(std::fs::read(dir.path().join("object#1")).unwrap(), b"another writer's");
    }

    #[test]
    fn file_systems_without_direct_io_get_buffered_writes() {
        let dir = tempfile::tempdir().unwrap();
        for direct_io in [DirectIo::RefusedAtOpen, DirectIo::RefusedAtWrite] {
            for len in [0, 5000, WRITE_BLOCK + 4096, 2 * WRITE_BLOCK + 3] {
                let dest = dir.path().join(format!("object-{len}-{}", matches!(direct_io, DirectIo::RefusedAtOpen)));
                let data = pattern(len);
                let (written, _) = write(&dest, &data, 300_000, direct_io);
                assert_eq!(written, len as u64);
                assert!(std::fs::read(&dest).unwrap() == data, "{len} bytes");
            }
        }
        assert!(staging_files(dir.path()).is_empty());
    }
}
