//! The file a merge writes, which copies column chunks from file to file inside the kernel.
//!
//! Parquet's writer counts every byte it writes (the footer records where each chunk lands), so
//! a copied chunk must pass through it. It passes as placeholders ([`Placeholders`], zeros that
//! cost no memory traffic) in a range registered beforehand with [`Sink::splice`]; the sink
//! writes everything else as it comes and replaces each registered range by the source's bytes,
//! copied with `copy_file_range` (what `std::io::copy` does between two files on Linux, with a
//! read/write loop where the kernel cannot). The encoded bytes are never read into this process.
//!
//! The writer hands bytes on in order, a copied chunk's as one run of exactly its length, so
//! the ranges stay in step; [`Sink::into_file`] refuses to finish a file that is not.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, Length};

/// One registered copy: bytes `at..at + len` of the output come from `offset..` of `src`.
struct Splice {
    at: u64,
    src: File,
    offset: u64,
    len: u64,
    copied: bool,
}

/// Writes to `file`, with registered ranges copied from other files (see the module).
pub(super) struct Sink {
    file: File,
    /// Bytes received so far: the position of the next one in the output.
    received: u64,
    /// Registered copies not yet passed, in order.
    splices: VecDeque<Splice>,
}

impl Sink {
    pub(super) fn new(file: File) -> Sink {
        Sink { file, received: 0, splices: VecDeque::new() }
    }

    /// Registers that output bytes `at..at + len` (ahead of what was received, after the last
    /// registered range) are to be `len` bytes of `src` from `offset`: the writer will pass
    /// placeholders there.
    pub(super) fn splice(&mut self, at: u64, src: &File, offset: u64, len: u64) -> io::Result<()> {
        let after = self.splices.back().map_or(self.received, |s| s.at + s.len);
        if at < after {
            return Err(io::Error::other(format!("a copy at byte {at} overlaps what is written up to {after}")));
        }
        if len > 0 {
            self.splices.push_back(Splice { at, src: src.try_clone()?, offset, len, copied: false });
        }
        Ok(())
    }

    /// The written file; an error if a registered range was not passed in full.
    pub(super) fn into_file(self) -> io::Result<File> {
        match self.splices.front() {
            None => Ok(self.file),
            Some(s) => Err(io::Error::other(format!(
                "the copy of {} bytes at byte {} was not written (the file ends at {})",
                s.len, s.at, self.received
            ))),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(next) = self.splices.front_mut() else {
            let n = self.file.write(buf)?;
            self.received += n as u64;
            return Ok(n);
        };
        if self.received < next.at {
            // Bytes of the writer's own, up to the next copy.
            let before = usize::try_from(next.at - self.received).unwrap_or(usize::MAX).min(buf.len());
            let n = self.file.write(&buf[..before])?;
            self.received += n as u64;
            return Ok(n);
        }
        if !next.copied {
            next.src.seek(SeekFrom::Start(next.offset))?;
            let copied = io::copy(&mut (&next.src).take(next.len), &mut self.file)?;
            if copied != next.len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("copied {copied} of {} bytes: the file ended", next.len),
                ));
            }
            next.copied = true;
        }
        // Placeholders: the bytes are in the file already.
        let end = next.at + next.len;
        let n = usize::try_from(end - self.received).unwrap_or(usize::MAX).min(buf.len());
        self.received += n as u64;
        if self.received == end {
            self.splices.pop_front();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// What `append_column` reads a copied chunk from: zeros, standing for the chunk's bytes in the
/// stream the writer counts (the sink puts the real ones in their place).
pub(super) struct Placeholders;

impl Length for Placeholders {
    fn len(&self) -> u64 {
        u64::MAX
    }
}

impl ChunkReader for Placeholders {
    type T = io::Repeat;

    fn get_read(&self, _start: u64) -> parquet::errors::Result<Self::T> {
        Ok(io::repeat(0))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        Err(ParquetError::General(format!("placeholders hold no bytes ({length} asked at {start})")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_ranges_are_copied_between_the_writers_bytes() {
        let d = tempfile::tempdir().unwrap();
        let src_path = d.path().join("src");
        std::fs::write(&src_path, b"0123456789abcdefghij").unwrap();
        let src = File::open(&src_path).unwrap();
        let out_path = d.path().join("out");
        let mut sink = Sink::new(File::create(&out_path).unwrap());
        sink.write_all(b"HEAD").unwrap();
        sink.splice(4, &src, 10, 5).unwrap();
        sink.splice(9, &src, 0, 3).unwrap();
        sink.splice(12, &src, 3, 0).unwrap();
        sink.splice(14, &src, 18, 2).unwrap();
        // Placeholders arrive in pieces, mixed with the writer's bytes.
        sink.write_all(&[0; 2]).unwrap();
        sink.write_all(&[0; 6]).unwrap();
        let mut rest = b"--".to_vec();
        rest.extend_from_slice(&[0, 0]);
        rest.extend_from_slice(b"TAIL");
        sink.write_all(&rest).unwrap();
        sink.into_file().unwrap();
        assert_eq!(std::fs::read(&out_path).unwrap(), b"HEADabcde012--ijTAIL");
    }

    #[test]
    fn a_short_source_or_a_range_left_unwritten_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let src_path = d.path().join("src");
        std::fs::write(&src_path, b"0123").unwrap();
        let src = File::open(&src_path).unwrap();
        let mut sink = Sink::new(File::create(d.path().join("out")).unwrap());
        sink.splice(0, &src, 2, 5).unwrap();
        let err = sink.write_all(&[0; 5]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
        let mut sink = Sink::new(File::create(d.path().join("out2")).unwrap());
        sink.splice(0, &src, 0, 4).unwrap();
        sink.write_all(&[0; 3]).unwrap();
        assert!(sink.into_file().is_err());
        let mut sink = Sink::new(File::create(d.path().join("out3")).unwrap());
        sink.splice(4, &src, 0, 4).unwrap();
        assert!(sink.splice(6, &src, 0, 1).is_err(), "overlapping ranges");
    }
}
