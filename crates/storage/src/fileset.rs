//! Immutable filesets: one per (namespace, shard, block window, volume).
//!
//! Directory `<root>/<namespace>/<shard>/<block_start>-<volume>/` holds:
//! - `data.db`   — the series' compressed chunks (cairn-codec), back to back;
//! - `index.db`  — header (`CAIRNFI2`, entry count u64) then fixed 24-byte
//!   entries sorted by series id: id u128 BE, end offset of the chunk in
//!   data.db u32 LE (it starts where the previous one ends), crc32c(chunk) u32 LE;
//! - `checkpoint` — written last, after both files are fsynced: `CAIRNCP1`,
//!   sizes and crc32c of data.db and index.db, and the last commit-log
//!   segment whose samples of this block the fileset includes (replay skips
//!   those samples). A directory without a valid
//!   checkpoint is an interrupted flush and is deleted on open.
//!
//! A later volume of the same block supersedes the earlier ones (a flush into
//! an already-flushed block merges the old volume in), so readers use only the
//! highest complete volume.

use crate::error::{Error, Result};
use cairn_common::{Sample, SeriesId};
use memmap2::Mmap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

const INDEX_MAGIC: &[u8; 8] = b"CAIRNFI2";
const CHECKPOINT_MAGIC: &[u8; 8] = b"CAIRNCP1";
const ENTRY: usize = 24;
const CHECKPOINT_LEN: usize = 40;
const INDEX_HEADER: usize = 16;

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

pub fn fileset_dir(root: &Path, shard: u32, block_start: i64, volume: u32) -> PathBuf {
    root.join(shard.to_string())
        .join(format!("{block_start}-{volume}"))
}

/// Writes a complete fileset from samples (encodes them). `series` must be
/// sorted by id; each entry's samples sorted by time. Returns bytes written.
pub fn write(dir: &Path, series: &[(SeriesId, Vec<Sample>)], log_upto: u64) -> Result<u64> {
    let mut chunks = Vec::with_capacity(series.len());
    for (id, samples) in series {
        chunks.push((
            *id,
            encode(samples).map_err(|e| {
                Error::Corrupt(format!("encoding series {id} for {}: {e}", dir.display()))
            })?,
        ));
    }
    write_chunks(dir, &chunks, log_upto)
}

/// Encodes sorted samples as one chunk.
pub fn encode(samples: &[Sample]) -> std::result::Result<Vec<u8>, cairn_codec::CodecError> {
    let pairs: Vec<(i64, f64)> = samples.iter().map(|s| (s.t, s.v)).collect();
    cairn_codec::encode_all(&pairs)
}

/// Writes a complete fileset from already-encoded chunks, sorted by id.
pub fn write_chunks(dir: &Path, chunks: &[(SeriesId, Vec<u8>)], log_upto: u64) -> Result<u64> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(io_err(format!("clearing {}", dir.display())))?;
    }
    fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let mut data = Vec::with_capacity(chunks.iter().map(|c| c.1.len()).sum());
    let mut index = Vec::with_capacity(INDEX_HEADER + chunks.len() * ENTRY);
    index.extend_from_slice(INDEX_MAGIC);
    index.extend_from_slice(&(chunks.len() as u64).to_le_bytes());
    for (id, chunk) in chunks {
        data.extend_from_slice(chunk);
        let end = u32::try_from(data.len()).map_err(|_| {
            Error::Invalid(format!(
                "fileset {} would exceed 4 GiB of chunk data; use more shards",
                dir.display()
            ))
        })?;
        index.extend_from_slice(&id.to_be_bytes());
        index.extend_from_slice(&end.to_le_bytes());
        index.extend_from_slice(&crc32c::crc32c(chunk).to_le_bytes());
    }
    crate::fault::fail_point("fileset-before-data");
    write_synced(&dir.join("data.db"), &data)?;
    write_synced(&dir.join("index.db"), &index)?;
    crate::fault::fail_point("fileset-before-checkpoint");
    let mut cp = Vec::with_capacity(CHECKPOINT_LEN);
    cp.extend_from_slice(CHECKPOINT_MAGIC);
    cp.extend_from_slice(&(data.len() as u64).to_le_bytes());
    cp.extend_from_slice(&crc32c::crc32c(&data).to_le_bytes());
    cp.extend_from_slice(&(index.len() as u64).to_le_bytes());
    cp.extend_from_slice(&crc32c::crc32c(&index).to_le_bytes());
    cp.extend_from_slice(&log_upto.to_le_bytes());
    write_synced(&dir.join("checkpoint"), &cp)?;
    if let Some(parent) = dir.parent() {
        if let Ok(d) = File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok((data.len() + index.len() + cp.len()) as u64)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::fault::io_fault("fileset-write", path)
        .map_err(io_err(format!("writing {}", path.display())))?;
    let mut f = File::create(path).map_err(io_err(format!("creating {}", path.display())))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io_err(format!("writing {}", path.display())))
}

impl std::fmt::Debug for Fileset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fileset").finish_non_exhaustive()
    }
}

/// A complete, open fileset (memory-mapped).
pub struct Fileset {
    pub dir: PathBuf,
    pub block_start: i64,
    pub volume: u32,
    /// Commit-log segments up to this number are included for this block.
    pub log_upto: u64,
    index: Mmap,
    data: Mmap,
    count: usize,
}

/// The little-endian integer at byte `at` of `file`'s bytes; an error
/// naming the file and the offset when they end before it.
fn le_bytes<const N: usize>(bytes: &[u8], at: usize, file: &Path) -> Result<[u8; N]> {
    at.checked_add(N)
        .and_then(|end| bytes.get(at..end))
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            Error::Corrupt(format!(
                "{}: {} bytes, too short for the {N}-byte field at offset {at}",
                file.display(),
                bytes.len()
            ))
        })
}

fn le_u64(bytes: &[u8], at: usize, file: &Path) -> Result<u64> {
    le_bytes(bytes, at, file).map(u64::from_le_bytes)
}

fn le_u32(bytes: &[u8], at: usize, file: &Path) -> Result<u32> {
    le_bytes(bytes, at, file).map(u32::from_le_bytes)
}

fn map(path: &Path) -> Result<Mmap> {
    let f = File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
    // SAFETY: filesets are immutable once their checkpoint exists; Cairn never
    // writes to a mapped file, and removes (unlinks) rather than truncates it.
    #[allow(unsafe_code)]
    let m = unsafe { Mmap::map(&f) }.map_err(io_err(format!("mapping {}", path.display())))?;
    Ok(m)
}

impl Fileset {
    /// Opens and verifies a fileset; Ok(None) when it is incomplete (no or bad checkpoint).
    pub fn open(dir: &Path, block_start: i64, volume: u32) -> Result<Option<Fileset>> {
        let Ok(cp) = fs::read(dir.join("checkpoint")) else {
            return Ok(None);
        };
        if cp.len() != CHECKPOINT_LEN || &cp[..8] != CHECKPOINT_MAGIC {
            return Ok(None);
        }
        let cp_path = dir.join("checkpoint");
        let (data_len, data_crc, index_len, index_crc) = (
            le_u64(&cp, 8, &cp_path)?,
            le_u32(&cp, 16, &cp_path)?,
            le_u64(&cp, 20, &cp_path)?,
            le_u32(&cp, 28, &cp_path)?,
        );
        let log_upto = le_u64(&cp, 32, &cp_path)?;
        let index = map(&dir.join("index.db"))?;
        let data = map(&dir.join("data.db"))?;
        if index.len() as u64 != index_len || data.len() as u64 != data_len {
            return Err(Error::Corrupt(format!(
                "fileset {}: file sizes differ from checkpoint",
                dir.display()
            )));
        }
        if crc32c::crc32c(&index) != index_crc {
            return Err(Error::Corrupt(format!(
                "fileset {}: index checksum mismatch",
                dir.display()
            )));
        }
        let _ = data_crc; // data is verified per chunk on read (cheaper than at open)
        if index.len() < INDEX_HEADER || &index[..8] != INDEX_MAGIC {
            return Err(Error::Corrupt(format!(
                "fileset {}: bad index header",
                dir.display()
            )));
        }
        let count = le_u64(&index, 8, &dir.join("index.db"))?;
        // Checked: a count near 2^64 / 24 would wrap to a small length and
        // pass, then every entry read would be out of bounds.
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        let want = count
            .checked_mul(ENTRY)
            .and_then(|n| n.checked_add(INDEX_HEADER));
        if want != Some(index.len()) {
            return Err(Error::Corrupt(format!(
                "fileset {}: index length",
                dir.display()
            )));
        }
        Ok(Some(Fileset {
            dir: dir.to_path_buf(),
            block_start,
            volume,
            log_upto,
            index,
            data,
            count,
        }))
    }

    pub fn series_count(&self) -> usize {
        self.count
    }

    fn id_at(&self, i: usize) -> SeriesId {
        let o = INDEX_HEADER + i * ENTRY;
        let mut id = [0u8; 16];
        id.copy_from_slice(&self.index[o..o + 16]);
        SeriesId::from_be_bytes(id)
    }

    fn end_at(&self, i: usize) -> (usize, u32) {
        let o = INDEX_HEADER + i * ENTRY + 16;
        let e = &self.index[o..o + 8];
        (
            u32::from_le_bytes([e[0], e[1], e[2], e[3]]) as usize,
            u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
        )
    }

    /// Entry `i`: its id and its checksum-verified chunk bytes.
    pub fn raw(&self, i: usize) -> Result<(SeriesId, &[u8])> {
        let id = self.id_at(i);
        let start = if i == 0 { 0 } else { self.end_at(i - 1).0 };
        let (end, crc) = self.end_at(i);
        let chunk = self.data.get(start..end).ok_or_else(|| {
            Error::Corrupt(format!(
                "fileset {}: chunk of {id} out of range",
                self.dir.display()
            ))
        })?;
        if crc32c::crc32c(chunk) != crc {
            return Err(Error::Corrupt(format!(
                "fileset {}: checksum mismatch in chunk of series {id}",
                self.dir.display()
            )));
        }
        Ok((id, chunk))
    }

    fn decode_entry(&self, i: usize) -> Result<Vec<Sample>> {
        let (id, chunk) = self.raw(i)?;
        let mut out = Vec::new();
        cairn_codec::decode_into_with(chunk, &mut out, |t, v| Sample { t, v }).map_err(|e| {
            Error::Corrupt(format!("fileset {}: series {id}: {e}", self.dir.display()))
        })?;
        Ok(out)
    }

    /// Index of series `id`, if present.
    pub fn find(&self, id: SeriesId) -> Option<usize> {
        self.find_from(id, usize::MAX).ok()
    }

    pub fn decode(&self, i: usize) -> Result<Vec<Sample>> {
        self.decode_entry(i)
    }

    /// `Ok(index)` of series `id`, or `Err(where it would be)`, searching
    /// forward from `from` by doubling steps when the entry there is not
    /// past `id`: reads in ascending id order then touch nearby entries
    /// instead of a whole binary search's path. Any `from` gives the right
    /// answer.
    pub fn find_from(&self, id: SeriesId, from: usize) -> std::result::Result<usize, usize> {
        let n = self.count;
        let (mut lo, mut hi) = (0usize, n);
        if from < n && self.id_at(from) <= id {
            lo = from;
            let mut step = 1;
            while lo + step < n && self.id_at(lo + step) <= id {
                lo += step;
                step *= 2;
            }
            hi = (lo + step).min(n);
        }
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.id_at(mid).cmp(&id) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// The samples of one series, or empty when it has none here.
    pub fn read(&self, id: SeriesId) -> Result<Vec<Sample>> {
        match self.find(id) {
            Some(i) => self.decode_entry(i),
            None => Ok(Vec::new()),
        }
    }

    /// Every series and its samples (for merging into a new volume).
    pub fn read_all(&self) -> Result<Vec<(SeriesId, Vec<Sample>)>> {
        (0..self.count)
            .map(|i| Ok((self.id_at(i), self.decode_entry(i)?)))
            .collect()
    }

    pub fn disk_bytes(&self) -> u64 {
        (self.index.len() + self.data.len()) as u64
    }
}

/// Scans `<root>/<shard>/` directories: returns per shard the highest complete
/// volume of each block, deleting incomplete and superseded volumes.
pub fn load_all(root: &Path) -> Result<Vec<(u32, Fileset)>> {
    let mut out = Vec::new();
    let Ok(shards) = fs::read_dir(root) else {
        return Ok(out);
    };
    for sh in shards.filter_map(|e| e.ok()) {
        let Ok(shard) = sh.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let mut vols: Vec<(i64, u32, PathBuf)> = fs::read_dir(sh.path())
            .map_err(io_err(format!("listing {}", sh.path().display())))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                let (b, v) = n.rsplit_once('-')?;
                Some((b.parse().ok()?, v.parse().ok()?, e.path()))
            })
            .collect();
        // Highest volume first within each block.
        vols.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut current: Option<i64> = None;
        for (block, vol, path) in vols {
            if current == Some(block) {
                tracing::info!(fileset = %path.display(), "removing superseded fileset volume");
                let _ = fs::remove_dir_all(&path);
                continue;
            }
            match Fileset::open(&path, block, vol)? {
                Some(fs_) => {
                    current = Some(block);
                    out.push((shard, fs_));
                }
                None => {
                    tracing::warn!(fileset = %path.display(), "removing incomplete fileset (interrupted flush)");
                    let _ = fs::remove_dir_all(&path);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_open_read_and_incomplete_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let mut series: Vec<(SeriesId, Vec<Sample>)> = (0..50u128)
            .map(|i| {
                (
                    SeriesId(i * 7919),
                    (0..20)
                        .map(|j| Sample::new(j * 15_000, (i * j as u128) as f64 / 100.0))
                        .collect(),
                )
            })
            .collect();
        series.sort_by_key(|s| s.0);
        write(&fileset_dir(d.path(), 3, 7200000, 0), &series, 5).unwrap();
        // An interrupted flush of a newer volume: no checkpoint.
        let incomplete = fileset_dir(d.path(), 3, 7200000, 1);
        fs::create_dir_all(&incomplete).unwrap();
        fs::write(incomplete.join("data.db"), b"x").unwrap();
        let all = load_all(d.path()).unwrap();
        assert_eq!(all.len(), 1);
        assert!(!incomplete.exists());
        let f = &all[0].1;
        for (id, samples) in &series {
            assert_eq!(&f.read(*id).unwrap(), samples);
        }
        assert!(f.read(SeriesId(1)).unwrap().is_empty());
        assert_eq!(f.read_all().unwrap(), series);
        // The galloping search answers like a plain one from any start.
        for probe in 0..360u128 {
            let id = SeriesId(probe * 7919 / 7 * 7 + probe % 3);
            let want = series.binary_search_by_key(&id, |s| s.0);
            for from in [0, 1, 5, 17, 49, 50, 51, usize::MAX] {
                assert_eq!(f.find_from(id, from), want, "{id} from {from}");
            }
        }
    }

    #[test]
    fn corrupt_chunk_is_reported_not_returned() {
        let d = tempfile::tempdir().unwrap();
        let dir = fileset_dir(d.path(), 0, 0, 0);
        write(
            &dir,
            &[(SeriesId(5), vec![Sample::new(1, 1.0), Sample::new(2, 2.0)])],
            0,
        )
        .unwrap();
        let mut data = fs::read(dir.join("data.db")).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        fs::write(dir.join("data.db"), &data).unwrap();
        let f = Fileset::open(&dir, 0, 0).unwrap().unwrap();
        assert!(matches!(f.read(SeriesId(5)), Err(Error::Corrupt(_))));
    }

    /// A field read past the end of a file's bytes is an error naming the
    /// file and the offset, never a zero.
    #[test]
    fn short_bytes_are_an_error_naming_file_and_offset() {
        let p = Path::new("/d/3/0-0/checkpoint");
        let cp = 7u64.to_le_bytes();
        assert_eq!(le_u64(&cp, 0, p).unwrap(), 7);
        let e = le_u64(&cp, 4, p).unwrap_err().to_string();
        assert!(
            e.contains("/d/3/0-0/checkpoint") && e.contains("offset 4"),
            "{e}"
        );
        assert!(le_u32(&cp, 6, p).is_err());
        assert!(le_u64(&cp, usize::MAX - 2, p).is_err());
    }
}
