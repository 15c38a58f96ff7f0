//! Patch features of every image of a dataset folder, extracted once and
//! cached, so that each contaminated split is an index selection.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use tch::{Kind, Tensor};

use crate::backbone::Backbone;
use crate::data;
use crate::features::FeatureConfig;
use crate::fit;

/// Patch features `[images, patches, D]` of a fixed list of images, one row per image.
pub struct DatasetFeatures {
    rows: HashMap<PathBuf, i64>,
    features: Tensor,
}

impl DatasetFeatures {
    /// Features of `paths` (all must have been extracted), stacked in that order.
    pub fn select(&self, paths: &[PathBuf]) -> Result<Tensor> {
        let rows: Vec<i64> = paths
            .iter()
            .map(|p| {
                self.rows.get(p).copied().with_context(|| {
                    format!(
                        "no cached features for {}; delete the cache file",
                        p.display()
                    )
                })
            })
            .collect::<Result<_>>()?;
        let index = Tensor::from_slice(&rows).to_device(self.features.device());
        Ok(self.features.index_select(0, &index))
    }
}

/// Cache key of the features of `paths`: backbone, feature options and the image list.
fn cache_key(vit: &Backbone, cfg: &FeatureConfig, paths: &[PathBuf]) -> String {
    let mut h = Sha256::new();
    h.update(&vit.id().sha256);
    h.update(serde_json::to_string(cfg).unwrap_or_default());
    for p in paths {
        h.update(p.to_string_lossy().as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())[..16].to_string()
}

/// Patch features of `paths`, read from `cache` when a file for the same
/// backbone, feature options and image list is there, otherwise extracted
/// (and written to `cache` when given). `on_done(done, total)` reports extraction.
pub fn dataset_features(
    vit: &Backbone,
    cfg: &FeatureConfig,
    paths: &[PathBuf],
    cache: Option<&Path>,
    on_done: &mut dyn FnMut(usize, usize),
) -> Result<DatasetFeatures> {
    let mut sorted = paths.to_vec();
    sorted.sort();
    sorted.dedup();
    let rows: HashMap<PathBuf, i64> = sorted
        .iter()
        .enumerate()
        .map(|(i, p)| (p.clone(), i as i64))
        .collect();
    let file = cache.map(|dir| {
        dir.join(format!(
            "dataset-{}.safetensors",
            cache_key(vit, cfg, &sorted)
        ))
    });
    if let Some(f) = file.as_ref().filter(|f| f.is_file()) {
        let named: HashMap<String, Tensor> = Tensor::read_safetensors(f)
            .with_context(|| format!("cannot read feature cache {}", f.display()))?
            .into_iter()
            .collect();
        match named.get("features") {
            Some(t) if t.size().first() == Some(&(sorted.len() as i64)) => {
                return Ok(DatasetFeatures {
                    rows,
                    features: t.to_device(vit.device()).to_kind(Kind::Float),
                });
            }
            _ => bail!(
                "feature cache {} does not hold {} images; delete it to extract again",
                f.display(),
                sorted.len()
            ),
        }
    }
    let images = sorted.iter().map(|p| data::load_image(p));
    let features = fit::extract_images(vit, cfg, images, sorted.len(), on_done)?;
    if let Some(f) = &file {
        if let Some(dir) = f.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create cache folder {}", dir.display()))?;
        }
        let tmp = f.with_extension("part");
        Tensor::write_safetensors(&[("features", &features)], &tmp)?;
        std::fs::rename(&tmp, f)?;
    }
    Ok(DatasetFeatures { rows, features })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_follows_requested_order() {
        let features = Tensor::from_slice(&[0.0f32, 1.0, 2.0]).view([3, 1, 1]);
        let rows = ["a.png", "b.png", "c.png"]
            .iter()
            .enumerate()
            .map(|(i, p)| (PathBuf::from(p), i as i64))
            .collect();
        let dataset = DatasetFeatures { rows, features };
        let picked = dataset
            .select(&[PathBuf::from("c.png"), PathBuf::from("a.png")])
            .unwrap();
        assert_eq!(
            Vec::<f32>::try_from(picked.flatten(0, 2)).unwrap(),
            vec![2.0, 0.0]
        );
        let missing = dataset.select(&[PathBuf::from("d.png")]).unwrap_err();
        assert!(missing.to_string().contains("d.png"), "{missing}");
    }
}
