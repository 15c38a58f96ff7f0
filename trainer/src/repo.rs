//! Versioned model files beside the one in service.
//!
//! A retraining lineage keeps its models next to the served file
//! `NAME.EXT` (for example `line.safetensors` or `line.funad`):
//!
//! | file | content |
//! | --- | --- |
//! | `NAME.EXT` | the model in service; scorers load this path |
//! | `NAME.v000007.EXT` | accepted version 7 |
//! | `NAME.v000008.rejected.EXT` | version 8, which the acceptance gate rejected |
//!
//! Every file is written atomically (see [`crate::model::write_atomic`]), so
//! a scorer that reloads the served file reads the old model or the new one.
//! Only the newest `keep` accepted and `keep` rejected versions stay; the
//! version in service is never deleted.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::model::{write_atomic, Detector, ModelMeta};

/// One versioned model file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub version: u64,
    pub rejected: bool,
    pub path: PathBuf,
}

/// The served model file and its versions; see the module documentation.
#[derive(Clone, Debug)]
pub struct ModelRepo {
    served: PathBuf,
    stem: String,
    ext: String,
    dir: PathBuf,
    keep: usize,
}

impl ModelRepo {
    /// `served` is the model file that scorers load; `keep` (at least 1) is
    /// how many accepted and how many rejected versions stay on disk.
    pub fn new(served: &Path, keep: usize) -> Result<Self> {
        if keep == 0 {
            bail!("keep-versions is 0; keep at least 1 version");
        }
        let name = served
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("model path {} has no file name", served.display()))?;
        let (stem, ext) = name
            .rsplit_once('.')
            .filter(|(stem, ext)| !stem.is_empty() && !ext.is_empty())
            .with_context(|| {
                format!(
                    "model path {} has no file extension; name it like line.safetensors",
                    served.display()
                )
            })?;
        let dir = match served.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create model folder {}", dir.display()))?;
        Ok(ModelRepo {
            served: served.to_path_buf(),
            stem: stem.to_string(),
            ext: ext.to_string(),
            dir,
            keep,
        })
    }

    pub fn served_path(&self) -> &Path {
        &self.served
    }

    pub fn version_path(&self, version: u64, rejected: bool) -> PathBuf {
        let tag = if rejected { ".rejected" } else { "" };
        self.dir
            .join(format!("{}.v{version:06}{tag}.{}", self.stem, self.ext))
    }

    fn parse(&self, name: &str) -> Option<(u64, bool)> {
        let rest = name.strip_prefix(&self.stem)?.strip_prefix(".v")?;
        let rest = rest.strip_suffix(&format!(".{}", self.ext))?;
        let (digits, rejected) = match rest.strip_suffix(".rejected") {
            Some(d) => (d, true),
            None => (rest, false),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((digits.parse().ok()?, rejected))
    }

    /// Lists the versioned files, oldest first.
    pub fn versions(&self) -> Result<Vec<Version>> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.dir)
            .with_context(|| format!("cannot list model folder {}", self.dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", self.dir.display()))?;
            let name = entry.file_name();
            if let Some((version, rejected)) = name.to_str().and_then(|n| self.parse(n)) {
                out.push(Version {
                    version,
                    rejected,
                    path: entry.path(),
                });
            }
        }
        out.sort_by_key(|v| (v.version, v.rejected));
        Ok(out)
    }

    /// Metadata of the served model; `None` when there is no served file yet.
    pub fn served_meta(&self) -> Result<Option<ModelMeta>> {
        if !self.served.exists() {
            return Ok(None);
        }
        Detector::read_meta(&self.served).map(Some)
    }

    /// The version after every version on disk, served or kept.
    pub fn next_version(&self) -> Result<u64> {
        let kept = self
            .versions()?
            .iter()
            .map(|v| v.version)
            .max()
            .unwrap_or(0);
        let served = match self.served_meta() {
            Ok(meta) => meta.map_or(0, |m| m.version),
            // An unreadable served file still must not be overwritten by a
            // version number it may hold; the kept files decide.
            Err(_) => 0,
        };
        Ok(kept.max(served) + 1)
    }

    /// Writes `detector` as its version, accepted or rejected, and returns the path.
    pub fn archive(&self, detector: &Detector, rejected: bool) -> Result<PathBuf> {
        let path = self.version_path(detector.meta().version, rejected);
        detector
            .save(&path)
            .with_context(|| format!("cannot save model version {}", path.display()))?;
        Ok(path)
    }

    /// Puts accepted `version` into service: its file is checked, then copied
    /// atomically over the served file.
    pub fn serve(&self, version: u64) -> Result<ModelMeta> {
        let path = self.version_path(version, false);
        if !path.is_file() {
            let kept: Vec<String> = self
                .versions()?
                .iter()
                .filter(|v| !v.rejected)
                .map(|v| v.version.to_string())
                .collect();
            bail!(
                "model version {version} is not kept ({} not found); kept versions: {}",
                path.display(),
                if kept.is_empty() {
                    "none".to_string()
                } else {
                    kept.join(", ")
                }
            );
        }
        let meta = Detector::read_meta(&path)?;
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        write_atomic(&self.served, &bytes)
            .with_context(|| format!("cannot put version {version} into service"))?;
        Ok(meta)
    }

    /// Deletes all but the newest `keep` accepted and `keep` rejected
    /// versions, never `protect`. Returns the deleted paths.
    pub fn prune(&self, protect: u64) -> Result<Vec<PathBuf>> {
        let versions = self.versions()?;
        let mut deleted = Vec::new();
        for rejected in [false, true] {
            let group: Vec<&Version> = versions.iter().filter(|v| v.rejected == rejected).collect();
            let excess = group.len().saturating_sub(self.keep);
            for v in group.into_iter().take(excess) {
                if !rejected && v.version == protect {
                    continue;
                }
                fs::remove_file(&v.path)
                    .with_context(|| format!("cannot delete old model {}", v.path.display()))?;
                deleted.push(v.path.clone());
            }
        }
        Ok(deleted)
    }

    /// Deletes files that an interrupted atomic write left in the model folder.
    pub fn remove_partial_writes(&self) -> Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir)
            .with_context(|| format!("cannot list model folder {}", self.dir.display()))?
        {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".funad-") && name.ends_with(".part") {
                fs::remove_file(entry.path()).with_context(|| {
                    format!("cannot delete partial write {}", entry.path().display())
                })?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_foreign_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let repo = ModelRepo::new(&dir.path().join("line3.safetensors"), 2).unwrap();
        for (v, r) in [(1, false), (2, true), (12, false)] {
            fs::write(repo.version_path(v, r), b"x").unwrap();
        }
        fs::write(dir.path().join("line3.vX.safetensors"), b"x").unwrap();
        fs::write(dir.path().join("other.v000003.safetensors"), b"x").unwrap();
        let found: Vec<(u64, bool)> = repo
            .versions()
            .unwrap()
            .iter()
            .map(|v| (v.version, v.rejected))
            .collect();
        assert_eq!(found, vec![(1, false), (2, true), (12, false)]);
        assert_eq!(repo.next_version().unwrap(), 13);
    }

    #[test]
    fn served_file_is_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let repo = ModelRepo::new(&dir.path().join("m.safetensors"), 2).unwrap();
        write_atomic(&repo.version_path(1, false), b"x").unwrap();
        let mode = fs::metadata(repo.version_path(1, false))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "mode {mode:o}");
    }

    #[test]
    fn prune_keeps_the_newest_and_the_protected_version() {
        let dir = tempfile::tempdir().unwrap();
        let repo = ModelRepo::new(&dir.path().join("m.safetensors"), 2).unwrap();
        for v in 1..=5 {
            fs::write(repo.version_path(v, false), b"x").unwrap();
        }
        for v in 6..=8 {
            fs::write(repo.version_path(v, true), b"x").unwrap();
        }
        let deleted = repo.prune(1).unwrap();
        assert_eq!(deleted.len(), 3, "{deleted:?}");
        let left: Vec<(u64, bool)> = repo
            .versions()
            .unwrap()
            .iter()
            .map(|v| (v.version, v.rejected))
            .collect();
        assert_eq!(
            left,
            vec![(1, false), (4, false), (5, false), (7, true), (8, true)]
        );
    }

    #[test]
    fn bad_settings_and_missing_versions_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModelRepo::new(&dir.path().join("model"), 2).unwrap_err();
        assert!(err.to_string().contains("no file extension"), "{err}");
        let funad = ModelRepo::new(&dir.path().join("m.funad"), 2).unwrap();
        assert_eq!(
            funad.version_path(4, true),
            dir.path().join("m.v000004.rejected.funad")
        );
        let err = ModelRepo::new(&dir.path().join("m.safetensors"), 0).unwrap_err();
        assert!(err.to_string().contains("keep-versions"), "{err}");
        let repo = ModelRepo::new(&dir.path().join("m.safetensors"), 2).unwrap();
        fs::write(repo.version_path(3, false), b"x").unwrap();
        let err = repo.serve(9).unwrap_err().to_string();
        assert!(
            err.contains("version 9") && err.contains("kept versions: 3"),
            "{err}"
        );
    }
}
