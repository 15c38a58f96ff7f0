//! A bounded store of unlabeled frames on disk, for retraining on live footage.
//!
//! Each frame is one PNG file named by its id (`000000000042.png`). A frame is
//! written to a `.part` file, flushed and renamed, so a crash leaves either a
//! whole frame or a `.part` file that [`FrameStore::open`] deletes. The folder
//! listing is the index: there is no separate index file that could disagree
//! with the frames. `store.json` keeps the counters that sampling needs across
//! restarts; losing it only makes sampling forget how many frames it has seen.
//!
//! Two policies bound the store by a frame count and a byte count:
//!
//! - [`Policy::Reservoir`] keeps a uniform random sample of every frame
//!   offered since the store was created (reservoir sampling, Algorithm R),
//!   so old and new footage both stay represented.
//! - [`Policy::Recent`] keeps the newest frames.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::seq::IteratorRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::model::write_atomic;

const STATE_FILE: &str = "store.json";
const FRAME_EXT: &str = "png";
/// Offers between two writes of `store.json`.
const STATE_EVERY: u64 = 16;

/// Eviction policy of a full store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Policy {
    /// A uniform random sample of all frames offered so far.
    Reservoir,
    /// The newest frames.
    Recent,
}

/// Bounds of a store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub max_frames: usize,
    pub max_bytes: u64,
    pub policy: Policy,
    pub seed: u64,
}

/// An 8-bit image: `channels` is 1 (grey) or 3 (RGB), rows packed.
#[derive(Clone, Debug)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub data: Vec<u8>,
}

impl Frame {
    /// Encodes the frame as PNG.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        let color = match self.channels {
            1 => image::ExtendedColorType::L8,
            3 => image::ExtendedColorType::Rgb8,
            c => bail!("a frame has 1 or 3 channels, not {c}"),
        };
        let expected = self.width as usize * self.height as usize * self.channels as usize;
        if self.data.len() != expected {
            bail!(
                "a {}×{}×{} frame has {expected} bytes, not {}",
                self.width,
                self.height,
                self.channels,
                self.data.len()
            );
        }
        let mut png = Vec::new();
        image::ImageEncoder::write_image(
            image::codecs::png::PngEncoder::new_with_quality(
                &mut png,
                image::codecs::png::CompressionType::Fast,
                image::codecs::png::FilterType::Sub,
            ),
            &self.data,
            self.width,
            self.height,
            color,
        )?;
        Ok(png)
    }
}

/// Outcome of [`FrameStore::offer`] for one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Offered {
    /// Stored under `id`; `evicted` frames were deleted to make room.
    Stored { id: u64, evicted: Vec<u64> },
    /// Sampling left the frame out.
    Skipped,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Frames offered since the store was created.
    seen: u64,
    /// Id of the next stored frame.
    next_id: u64,
}

/// Result of [`FrameStore::open`]'s check of the folder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Half-written `.part` files deleted.
    pub partial_removed: usize,
    /// Frames that were not readable PNG files, deleted.
    pub unreadable_removed: usize,
}

/// A bounded folder of frames; see the module documentation.
#[derive(Debug)]
pub struct FrameStore {
    dir: PathBuf,
    cfg: StoreConfig,
    /// Frame id → file size.
    frames: BTreeMap<u64, u64>,
    bytes: u64,
    state: State,
    rng: ChaCha8Rng,
    recovery: Recovery,
}

fn frame_id(path: &Path) -> Option<u64> {
    if path.extension()? != FRAME_EXT {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    if stem.len() != 12 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

impl FrameStore {
    /// Opens the store in `dir`, creating it when missing. Deletes `.part`
    /// files and frames whose PNG header cannot be read, then trims the store
    /// to the bounds of `cfg` (the bounds may have been lowered since).
    pub fn open(dir: &Path, cfg: StoreConfig) -> Result<Self> {
        if cfg.max_frames == 0 {
            bail!(
                "frame store {}: max-frames is 0; set it to 1 or more",
                dir.display()
            );
        }
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create frame store folder {}", dir.display()))?;
        let mut recovery = Recovery::default();
        let mut frames = BTreeMap::new();
        let entries = fs::read_dir(dir)
            .with_context(|| format!("cannot list frame store folder {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".part") {
                fs::remove_file(&path)
                    .with_context(|| format!("cannot delete partial frame {}", path.display()))?;
                recovery.partial_removed += 1;
                continue;
            }
            let Some(id) = frame_id(&path) else { continue };
            if image::image_dimensions(&path).is_err() {
                log::warn!("deleting unreadable frame {}", path.display());
                fs::remove_file(&path).with_context(|| {
                    format!("cannot delete unreadable frame {}", path.display())
                })?;
                recovery.unreadable_removed += 1;
                continue;
            }
            let size = entry
                .metadata()
                .with_context(|| format!("cannot read the size of {}", path.display()))?
                .len();
            frames.insert(id, size);
        }

        let mut state: State = match fs::read(dir.join(STATE_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                log::warn!(
                    "ignoring unreadable {}: {err}",
                    dir.join(STATE_FILE).display()
                );
                State::default()
            }),
            Err(_) => State::default(),
        };
        // The counters may lag the frames after a crash between two state writes.
        let last = frames.keys().next_back().map_or(0, |&id| id + 1);
        state.next_id = state.next_id.max(last);
        state.seen = state.seen.max(frames.len() as u64);

        let bytes = frames.values().sum();
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ state.seen.rotate_left(17));
        let mut store = FrameStore {
            dir: dir.to_path_buf(),
            cfg,
            frames,
            bytes,
            state,
            rng,
            recovery,
        };
        while store.frames.len() > store.cfg.max_frames || store.bytes > store.cfg.max_bytes {
            store.evict_one()?;
        }
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Bytes of all stored frames.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Frames offered since the store was created.
    pub fn seen(&self) -> u64 {
        self.state.seen
    }

    /// Returns what [`FrameStore::open`] repaired.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    pub fn path_of(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:012}.{FRAME_EXT}"))
    }

    /// Paths of the stored frames, oldest first.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.frames.keys().map(|&id| self.path_of(id)).collect()
    }

    fn evict_one(&mut self) -> Result<u64> {
        let id = match self.cfg.policy {
            Policy::Recent => *self.frames.keys().next().expect("store is not empty"),
            Policy::Reservoir => *self
                .frames
                .keys()
                .choose(&mut self.rng)
                .expect("store is not empty"),
        };
        self.remove(id)?;
        Ok(id)
    }

    fn remove(&mut self, id: u64) -> Result<()> {
        let path = self.path_of(id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(err).with_context(|| format!("cannot delete frame {}", path.display()))
            }
        }
        if let Some(size) = self.frames.remove(&id) {
            self.bytes -= size;
        }
        Ok(())
    }

    /// Offers a frame. The policy decides whether it is stored and which
    /// frames leave to make room. On an error (a full disk, an unwritable
    /// folder) the store is unchanged apart from evicted frames, and stays usable.
    pub fn offer(&mut self, frame: &Frame) -> Result<Offered> {
        self.state.seen += 1;
        let seen = self.state.seen;
        let outcome = self.offer_counted(frame, seen);
        if seen % STATE_EVERY == 0 {
            // The counters only steer sampling; failing to save them loses no frame.
            if let Err(err) = self.save_state() {
                log::warn!("{err:#}");
            }
        }
        outcome
    }

    fn offer_counted(&mut self, frame: &Frame, seen: u64) -> Result<Offered> {
        let mut evicted = Vec::new();
        if self.frames.len() >= self.cfg.max_frames {
            if self.cfg.policy == Policy::Reservoir {
                // Algorithm R: the seen-th frame replaces a random one with
                // probability max_frames / seen.
                let j = self.rng.gen_range(0..seen);
                if j >= self.cfg.max_frames as u64 {
                    return Ok(Offered::Skipped);
                }
            }
            evicted.push(self.evict_one()?);
        }
        let png = frame.to_png()?;
        let size = png.len() as u64;
        if size > self.cfg.max_bytes {
            bail!(
                "a {}×{} frame takes {size} bytes as PNG, more than the store's max-bytes {}; \
                 raise max-bytes",
                frame.width,
                frame.height,
                self.cfg.max_bytes
            );
        }
        while self.bytes + size > self.cfg.max_bytes {
            evicted.push(self.evict_one()?);
        }
        let id = self.state.next_id;
        self.write_frame(id, &png)?;
        self.state.next_id += 1;
        self.frames.insert(id, size);
        self.bytes += size;
        Ok(Offered::Stored { id, evicted })
    }

    fn write_frame(&self, id: u64, png: &[u8]) -> Result<()> {
        let path = self.path_of(id);
        let part = self.dir.join(format!("{id:012}.{FRAME_EXT}.part"));
        let result = (|| -> std::io::Result<()> {
            let mut file = fs::File::create(&part)?;
            file.write_all(png)?;
            file.sync_all()?;
            fs::rename(&part, &path)
        })();
        if let Err(err) = result {
            let _ = fs::remove_file(&part);
            return Err(err).with_context(|| format!("cannot write frame {}", path.display()));
        }
        Ok(())
    }

    /// Deletes the stored frame with the file name of `path` (a path in the
    /// store or in a snapshot of it). Returns whether the store had it.
    pub fn discard(&mut self, path: &Path) -> Result<bool> {
        let Some(id) = frame_id(path) else {
            return Ok(false);
        };
        let had = self.frames.contains_key(&id);
        self.remove(id)?;
        Ok(had)
    }

    /// Writes the sampling counters to `store.json`.
    pub fn save_state(&self) -> Result<()> {
        let json = serde_json::to_vec(&self.state)?;
        write_atomic(&self.dir.join(STATE_FILE), &json)
            .with_context(|| format!("frame store {}", self.dir.display()))
    }

    /// Hard-links every stored frame into `dest` (created empty), so that a
    /// training run can read a fixed set of frames while eviction goes on.
    /// Returns the linked paths, oldest first.
    pub fn snapshot(&self, dest: &Path) -> Result<Vec<PathBuf>> {
        if dest.exists() {
            fs::remove_dir_all(dest)
                .with_context(|| format!("cannot clear snapshot folder {}", dest.display()))?;
        }
        fs::create_dir_all(dest)
            .with_context(|| format!("cannot create snapshot folder {}", dest.display()))?;
        let mut out = Vec::with_capacity(self.frames.len());
        for &id in self.frames.keys() {
            let src = self.path_of(id);
            let dst = dest.join(src.file_name().expect("frame file name"));
            if let Err(err) = fs::hard_link(&src, &dst) {
                // Another file system or no hard links: fall back to a copy.
                fs::copy(&src, &dst).with_context(|| {
                    format!(
                        "cannot link or copy {} to {} ({err})",
                        src.display(),
                        dst.display()
                    )
                })?;
            }
            out.push(dst);
        }
        Ok(out)
    }
}

impl Drop for FrameStore {
    fn drop(&mut self) {
        if let Err(err) = self.save_state() {
            log::warn!("{err:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(value: u8) -> Frame {
        Frame {
            width: 8,
            height: 4,
            channels: 3,
            data: vec![value; 8 * 4 * 3],
        }
    }

    fn cfg(max_frames: usize, policy: Policy) -> StoreConfig {
        StoreConfig {
            max_frames,
            max_bytes: u64::MAX,
            policy,
            seed: 7,
        }
    }

    fn read_value(path: &Path) -> u8 {
        image::open(path).unwrap().to_rgb8().as_raw()[0]
    }

    #[test]
    fn recent_keeps_the_newest_frames() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FrameStore::open(dir.path(), cfg(3, Policy::Recent)).unwrap();
        for v in 0..5 {
            store.offer(&frame(v)).unwrap();
        }
        let values: Vec<u8> = store.paths().iter().map(|p| read_value(p)).collect();
        assert_eq!(values, vec![2, 3, 4]);
        assert_eq!(store.seen(), 5);
    }

    #[test]
    fn reservoir_keeps_old_and_new_frames_uniformly() {
        // 200 frames through a 20-frame reservoir, over many seeds: each frame
        // should survive with probability 20 / 200 = 0.1.
        let mut survived = vec![0u32; 200];
        let trials = 60;
        for seed in 0..trials {
            let dir = tempfile::tempdir().unwrap();
            let mut c = cfg(20, Policy::Reservoir);
            c.seed = seed;
            let mut store = FrameStore::open(dir.path(), c).unwrap();
            let mut ids = Vec::new();
            for i in 0..200u32 {
                match store.offer(&frame((i % 250) as u8)).unwrap() {
                    Offered::Stored { id, .. } => ids.push((id, i)),
                    Offered::Skipped => {}
                }
            }
            assert_eq!(store.len(), 20);
            for (id, i) in ids {
                if store.frames.contains_key(&id) {
                    survived[i as usize] += 1;
                }
            }
        }
        let first: u32 = survived[..100].iter().sum();
        let second: u32 = survived[100..].iter().sum();
        let expected = 0.1 * 100.0 * trials as f64;
        // Both halves near 600; keeping only the newest would give 0 and 1200.
        for half in [first, second] {
            assert!(
                (half as f64 - expected).abs() < 0.2 * expected,
                "halves kept {first} and {second}, expected about {expected}"
            );
        }
    }

    #[test]
    fn reopening_finds_frames_and_discards_partial_ones() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = FrameStore::open(dir.path(), cfg(10, Policy::Reservoir)).unwrap();
            for v in 0..4 {
                store.offer(&frame(v * 10)).unwrap();
            }
        }
        // A crash during a write leaves a .part file; a damaged frame has a bad header.
        fs::write(dir.path().join("000000000004.png.part"), b"\x89PNG half").unwrap();
        fs::write(dir.path().join("000000000009.png"), b"not a png").unwrap();
        let mut store = FrameStore::open(dir.path(), cfg(10, Policy::Reservoir)).unwrap();
        assert_eq!(
            store.recovery(),
            &Recovery {
                partial_removed: 1,
                unreadable_removed: 1
            }
        );
        assert_eq!(store.len(), 4);
        assert_eq!(store.seen(), 4);
        let values: Vec<u8> = store.paths().iter().map(|p| read_value(p)).collect();
        assert_eq!(values, vec![0, 10, 20, 30]);
        // New frames continue the ids instead of overwriting old ones.
        match store.offer(&frame(99)).unwrap() {
            Offered::Stored { id, evicted } => {
                assert_eq!(id, 4);
                assert!(evicted.is_empty());
            }
            other => panic!("expected a stored frame, got {other:?}"),
        }
        assert!(!dir.path().join("000000000004.png.part").exists());
    }

    #[test]
    fn byte_cap_evicts_and_rejects_oversized_frames() {
        let dir = tempfile::tempdir().unwrap();
        let sizes: Vec<u64> = (0..6)
            .map(|v| frame(v).to_png().unwrap().len() as u64)
            .collect();
        let cap = 3 * sizes.iter().max().unwrap();
        // The newest frames that fit under the cap, counted from the last.
        let mut fit = 0;
        let mut total = 0;
        for &s in sizes.iter().rev() {
            if total + s > cap {
                break;
            }
            total += s;
            fit += 1;
        }
        let mut c = cfg(100, Policy::Recent);
        c.max_bytes = cap;
        let mut store = FrameStore::open(dir.path(), c.clone()).unwrap();
        for v in 0..6 {
            store.offer(&frame(v)).unwrap();
        }
        assert!(fit >= 3);
        assert_eq!(store.len(), fit);
        assert_eq!(store.bytes(), total);

        let big = Frame {
            width: 64,
            height: 64,
            channels: 3,
            data: (0..64 * 64 * 3).map(|i| (i * 7919 % 251) as u8).collect(),
        };
        let err = store.offer(&big).unwrap_err().to_string();
        assert!(err.contains("max-bytes"), "{err}");
        // Lowering the cap on reopen trims the store.
        c.max_frames = 1;
        let store = FrameStore::open(dir.path(), c).unwrap();
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn snapshot_survives_eviction() {
        let dir = tempfile::tempdir().unwrap();
        let snap = tempfile::tempdir().unwrap();
        let mut store = FrameStore::open(dir.path(), cfg(2, Policy::Recent)).unwrap();
        store.offer(&frame(1)).unwrap();
        store.offer(&frame(2)).unwrap();
        let paths = store.snapshot(&snap.path().join("s")).unwrap();
        store.offer(&frame(3)).unwrap();
        store.offer(&frame(4)).unwrap();
        let values: Vec<u8> = paths.iter().map(|p| read_value(p)).collect();
        assert_eq!(values, vec![1, 2]);
    }

    #[test]
    fn write_errors_leave_the_store_usable() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FrameStore::open(dir.path(), cfg(5, Policy::Recent)).unwrap();
        store.offer(&frame(1)).unwrap();
        let bad = Frame {
            width: 2,
            height: 2,
            channels: 4,
            data: vec![0; 16],
        };
        assert!(store.offer(&bad).is_err());
        assert_eq!(store.len(), 1);
        store.offer(&frame(2)).unwrap();
        assert_eq!(store.len(), 2);
    }
}
