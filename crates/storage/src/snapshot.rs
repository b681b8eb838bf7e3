//! Head snapshots: what bounds commit-log replay at start.
//!
//! A snapshot holds, per shard, every block buffer the shard keeps in
//! memory (the head's, and those of a flush that failed and waits to be
//! retried) as one encoded chunk each, taken right after the commit log
//! was sealed at segment `N`. Together with the filesets it stands for
//! every record in segments `1..=N`, so a restart loads it and replays
//! only the segments after `N`.
//!
//! Layout: `<data-dir>/snapshots/<N, 16 digits>/<shard, 5 digits>.snap`,
//! one file per shard:
//!
//! ```text
//! magic "CAIRNHS1" (8)  covers N (u64 LE)  shard (u32 LE)  shards (u32 LE)
//! entries (u64 LE), then each entry:
//!   series id (u128 LE)  block start (i64 LE)  chunk length (u32 LE)  chunk
//! crc32c of everything before it (u32 LE)
//! ```
//!
//! Entries of one series and block appear oldest first (a retried flush's
//! buffer before the head's); loading appends them in file order, so the
//! newer value of a timestamp wins as it did in memory.
//!
//! Crash safety: the files are written into `<N>.tmp`, each fsynced, then
//! the directory is fsynced and renamed to `<N>` and the parent fsynced;
//! a `.tmp` directory is an interrupted snapshot and is removed at start.
//! The newest complete snapshot is used; the one before it is kept (with
//! the commit log after it), so a snapshot that fails its checksum falls
//! back to the previous one and a longer replay instead of losing data.

use crate::error::{Error, Result};
use cairn_common::{Sample, SeriesId};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"CAIRNHS1";
const HEADER: usize = 8 + 8 + 4 + 4 + 8;
const ENTRY_HEADER: usize = 16 + 8 + 4;

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

/// `<data-dir>/snapshots`.
pub(crate) fn root(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

fn dir_of(root: &Path, covers: u64) -> PathBuf {
    root.join(format!("{covers:016}"))
}

fn shard_file(dir: &Path, shard: u32) -> PathBuf {
    dir.join(format!("{shard:05}.snap"))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("syncing directory {}", dir.display())))
}

/// One shard's part of a snapshot: (series, block start, chunk), in the
/// order they are to be applied.
pub(crate) type ShardChunks = Vec<(SeriesId, i64, Vec<u8>)>;

/// Encodes one shard's file.
fn encode(covers: u64, shard: u32, shards: u32, chunks: &ShardChunks) -> Vec<u8> {
    let len = HEADER
        + chunks
            .iter()
            .map(|c| ENTRY_HEADER + c.2.len())
            .sum::<usize>()
        + 4;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&covers.to_le_bytes());
    out.extend_from_slice(&shard.to_le_bytes());
    out.extend_from_slice(&shards.to_le_bytes());
    out.extend_from_slice(&(chunks.len() as u64).to_le_bytes());
    for (id, block, chunk) in chunks {
        out.extend_from_slice(&id.0.to_le_bytes());
        out.extend_from_slice(&block.to_le_bytes());
        // A block buffer's chunk is far below 4 GiB (a block window of one series).
        out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A shard's file, checked and parsed: entries borrowing from the bytes.
#[derive(Debug)]
pub(crate) struct Parsed<'a> {
    pub entries: Vec<(SeriesId, i64, &'a [u8])>,
}

/// Parses a shard's file, checking its checksum and header against what
/// is expected; every error names the file and what is wrong.
pub(crate) fn parse<'a>(
    path: &Path,
    bytes: &'a [u8],
    covers: u64,
    shard: u32,
    shards: u32,
) -> Result<Parsed<'a>> {
    let bad = |why: String| Error::Corrupt(format!("head snapshot {}: {why}", path.display()));
    if bytes.len() < HEADER + 4 {
        return Err(bad(format!(
            "{} bytes, shorter than its header",
            bytes.len()
        )));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(body) != want {
        return Err(bad("checksum mismatch".into()));
    }
    if &body[..8] != MAGIC {
        return Err(bad("not a head snapshot (bad magic)".into()));
    }
    let u64_at = |p: usize| u64::from_le_bytes(body[p..p + 8].try_into().unwrap_or([0; 8]));
    let u32_at = |p: usize| u32::from_le_bytes(body[p..p + 4].try_into().unwrap_or([0; 4]));
    let (c, s, n) = (u64_at(8), u32_at(16), u32_at(20));
    if (c, s, n) != (covers, shard, shards) {
        return Err(bad(format!(
            "says segment {c}, shard {s} of {n}; expected segment {covers}, shard {shard} of {shards}"
        )));
    }
    let count = u64_at(24);
    // Every entry takes at least its header: bounds the allocation.
    if count > (body.len() / ENTRY_HEADER) as u64 {
        return Err(bad(format!(
            "{count} entries cannot fit in {} bytes",
            body.len()
        )));
    }
    let mut entries = Vec::with_capacity(count as usize);
    let mut p = HEADER;
    for i in 0..count {
        if body.len() - p < ENTRY_HEADER {
            return Err(bad(format!("entry {i} truncated")));
        }
        let id = u128::from_le_bytes(body[p..p + 16].try_into().unwrap_or([0; 16]));
        let block = u64_at(p + 16) as i64;
        let len = u32_at(p + 24) as usize;
        p += ENTRY_HEADER;
        if body.len() - p < len {
            return Err(bad(format!("entry {i}: chunk of {len} bytes truncated")));
        }
        entries.push((SeriesId(id), block, &body[p..p + len]));
        p += len;
    }
    if p != body.len() {
        return Err(bad(format!(
            "{} bytes after the last entry",
            body.len() - p
        )));
    }
    Ok(Parsed { entries })
}

/// Decodes one entry's chunk into samples.
pub(crate) fn samples(path: &Path, id: SeriesId, chunk: &[u8]) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    cairn_codec::decode_into_with(chunk, &mut out, |t, v| Sample { t, v }).map_err(|e| {
        Error::Corrupt(format!(
            "head snapshot {}: chunk of series {id}: {e}",
            path.display()
        ))
    })?;
    Ok(out)
}

/// Writes one snapshot covering segment `covers`, a shard at a time,
/// crash-safely (see the module docs): [`Writer::shard`] for shards `0..n`
/// in order, then [`Writer::finish`] makes it current.
pub(crate) struct Writer {
    root: PathBuf,
    tmp: PathBuf,
    covers: u64,
    shards: u32,
    next: u32,
    pub bytes: u64,
}

impl Writer {
    pub(crate) fn begin(root: &Path, covers: u64, shards: u32) -> Result<Self> {
        fs::create_dir_all(root).map_err(io_err(format!("creating {}", root.display())))?;
        let tmp = root.join(format!("{covers:016}.tmp"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_err(format!("clearing {}", tmp.display())))?;
        }
        fs::create_dir_all(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
        Ok(Self {
            root: root.to_path_buf(),
            tmp,
            covers,
            shards,
            next: 0,
            bytes: 0,
        })
    }

    /// Writes and syncs the next shard's file.
    pub(crate) fn shard(&mut self, chunks: &ShardChunks) -> Result<()> {
        let path = shard_file(&self.tmp, self.next);
        let data = encode(self.covers, self.next, self.shards, chunks);
        crate::fault::io_fault("snapshot-write", &path)
            .and_then(|()| File::create(&path))
            .and_then(|mut f| {
                f.write_all(&data)?;
                f.sync_all()
            })
            .map_err(io_err(format!("writing head snapshot {}", path.display())))?;
        self.bytes += data.len() as u64;
        self.next += 1;
        Ok(())
    }

    /// Makes the snapshot current: directory synced, renamed, parent synced.
    pub(crate) fn finish(self) -> Result<u64> {
        if self.next != self.shards {
            return Err(Error::Invalid(format!(
                "head snapshot {} has {} of {} shards",
                self.tmp.display(),
                self.next,
                self.shards
            )));
        }
        sync_dir(&self.tmp)?;
        crate::fault::fail_point("snapshot-before-rename");
        let done = dir_of(&self.root, self.covers);
        fs::rename(&self.tmp, &done).map_err(io_err(format!(
            "renaming {} to {}",
            self.tmp.display(),
            done.display()
        )))?;
        sync_dir(&self.root)?;
        Ok(self.bytes)
    }
}

/// [`Writer`] over all shards at once (`shards[i]` is shard `i`).
#[cfg(test)]
pub(crate) fn write(root: &Path, covers: u64, shards: &[ShardChunks]) -> Result<u64> {
    let mut w = Writer::begin(root, covers, shards.len() as u32)?;
    for s in shards {
        w.shard(s)?;
    }
    w.finish()
}

/// Complete snapshots under `root`, newest first; interrupted ones
/// (`.tmp`) are removed.
pub(crate) fn list(root: &Path) -> Result<Vec<u64>> {
    let rd = match fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(format!("listing {}", root.display()))(e)),
    };
    let mut out = Vec::new();
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with(".tmp") {
            tracing::warn!(dir = %e.path().display(), "removing an interrupted head snapshot");
            let _ = fs::remove_dir_all(e.path());
        } else if let Ok(n) = name.parse::<u64>() {
            out.push(n);
        }
    }
    out.sort_unstable_by(|a, b| b.cmp(a));
    Ok(out)
}

/// Reads every shard's file of snapshot `covers` (`shards` of them).
pub(crate) fn read(root: &Path, covers: u64, shards: u32) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    let dir = dir_of(root, covers);
    (0..shards)
        .map(|i| {
            let path = shard_file(&dir, i);
            let mut buf = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut buf))
                .map_err(io_err(format!("reading head snapshot {}", path.display())))?;
            Ok((path, buf))
        })
        .collect()
}

/// Removes every snapshot but the newest `keep` (numbers from [`list`]).
pub(crate) fn remove_older(root: &Path, keep: usize) -> Result<()> {
    for covers in list(root)?.into_iter().skip(keep) {
        let dir = dir_of(root, covers);
        fs::remove_dir_all(&dir).map_err(io_err(format!("removing {}", dir.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(samples: &[(i64, f64)]) -> Vec<u8> {
        cairn_codec::encode_all(samples).unwrap()
    }

    #[test]
    fn round_trip_and_every_damage_is_named() {
        let entries: ShardChunks = vec![
            (SeriesId(7), 0, chunk(&[(1, 1.0), (2, f64::NAN)])),
            (SeriesId(u128::MAX), -7_200_000, chunk(&[(-5, -0.0)])),
        ];
        let bytes = encode(9, 2, 4, &entries);
        let p = Path::new("x.snap");
        let parsed = parse(p, &bytes, 9, 2, 4).unwrap();
        assert_eq!(parsed.entries.len(), 2);
        for ((id, b, c), (id2, b2, c2)) in entries.iter().zip(&parsed.entries) {
            assert_eq!((id, b, c.as_slice()), (id2, b2, *c2));
        }
        let s = samples(p, SeriesId(7), parsed.entries[0].2).unwrap();
        assert_eq!(s[0], Sample { t: 1, v: 1.0 });
        assert!(s[1].v.is_nan());
        // The header must match what is expected.
        let e = parse(p, &bytes, 9, 3, 4).unwrap_err().to_string();
        assert!(e.contains("x.snap") && e.contains("shard 2 of 4"), "{e}");
        // Any flipped byte or cut tail is refused, never a panic.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x20;
            assert!(parse(p, &b, 9, 2, 4).is_err(), "flip at {i} accepted");
        }
        for len in 0..bytes.len() {
            assert!(
                parse(p, &bytes[..len], 9, 2, 4).is_err(),
                "cut at {len} accepted"
            );
        }
        // An empty shard is a valid file.
        let empty = encode(9, 0, 1, &Vec::new());
        assert!(parse(p, &empty, 9, 0, 1).unwrap().entries.is_empty());
    }

    #[test]
    fn write_is_atomic_and_old_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        let root = root(dir.path());
        let one: Vec<ShardChunks> = vec![vec![(SeriesId(1), 0, chunk(&[(1, 1.0)]))], vec![]];
        write(&root, 3, &one).unwrap();
        write(&root, 5, &one).unwrap();
        write(&root, 8, &one).unwrap();
        // An interrupted one is not listed and is removed.
        fs::create_dir_all(root.join(format!("{:016}.tmp", 9))).unwrap();
        assert_eq!(list(&root).unwrap(), vec![8, 5, 3]);
        assert!(!root.join(format!("{:016}.tmp", 9)).exists());
        remove_older(&root, 2).unwrap();
        assert_eq!(list(&root).unwrap(), vec![8, 5]);
        let files = read(&root, 8, 2).unwrap();
        assert_eq!(files.len(), 2);
        let parsed = parse(&files[0].0, &files[0].1, 8, 0, 2).unwrap();
        assert_eq!(parsed.entries[0].0, SeriesId(1));
        // A shard file missing is an error naming it.
        fs::remove_file(shard_file(&dir_of(&root, 5), 1)).unwrap();
        let e = read(&root, 5, 2).unwrap_err().to_string();
        assert!(e.contains("00001.snap"), "{e}");
    }
}
