//! Image files and MVTec-AD-layout datasets.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

/// File extensions read as images.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// Loads an image as 8-bit pixels `[H, W, C]`: C = 1 for grey images, 3 for colour.
/// Alpha is dropped and 16-bit images are reduced to 8 bits.
pub fn load_image(path: &Path) -> Result<Tensor> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("cannot open image {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read image {}", path.display()))?
        .decode()
        .with_context(|| {
            format!(
                "cannot decode image {} (corrupt or unsupported format?)",
                path.display()
            )
        })?;
    let (w, h) = (img.width() as i64, img.height() as i64);
    let t = if img.color().has_color() {
        Tensor::from_slice(img.to_rgb8().as_raw()).view([h, w, 3])
    } else {
        Tensor::from_slice(img.to_luma8().as_raw()).view([h, w, 1])
    };
    Ok(t)
}

/// Loads a ground-truth mask as booleans `[H, W]` (true where the value is above 127).
pub fn load_mask(path: &Path) -> Result<Tensor> {
    let img = image::open(path).with_context(|| format!("cannot read mask {}", path.display()))?;
    let luma = img.to_luma8();
    let (w, h) = (luma.width() as i64, luma.height() as i64);
    Ok(Tensor::from_slice(luma.as_raw()).view([h, w]).gt(127))
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Image files directly inside `dir`, sorted by name.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list folder {}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list folder {}", dir.display()))?
            .path();
        if path.is_file() && is_image(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Expands command-line inputs (image files and folders of images) into image files.
pub fn collect_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let found = image_files(input)?;
            if found.is_empty() {
                bail!(
                    "folder {} contains no {} images",
                    input.display(),
                    IMAGE_EXTENSIONS.join("/")
                );
            }
            files.extend(found);
        } else if input.is_file() {
            files.push(input.clone());
        } else {
            bail!("input {} does not exist", input.display());
        }
    }
    Ok(files)
}

/// One image of an evaluation split. Labels exist only for evaluation and are
/// never passed to training.
#[derive(Clone, Debug)]
pub struct Sample {
    pub path: PathBuf,
    /// Folder name under `test/`: `good` or the defect type.
    pub defect: String,
    /// Ground-truth mask, for defect images that have one.
    pub mask: Option<PathBuf>,
}

impl Sample {
    pub fn is_anomalous(&self) -> bool {
        self.defect != "good"
    }
}

/// Whether the defect images moved into training are also evaluated.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Overlap {
    /// Moved images are not evaluated.
    NoOverlap,
    /// Moved images stay in the test set.
    Overlap,
}

/// A contaminated training set and its test set, built from an MVTec-layout folder.
#[derive(Debug)]
pub struct ContaminatedSplit {
    /// Unlabeled training images: `train/good` plus the moved defect images.
    pub train: Vec<PathBuf>,
    /// How many of `train` are defect images (reported, never used in training).
    pub moved: usize,
    /// The moved defect images, the last `moved` entries of `train`, with their labels.
    pub moved_samples: Vec<Sample>,
    pub test: Vec<Sample>,
}

/// Builds the FUN-AD protocol split: moves `round(ratio × |train/good|)` defect
/// images from `test/` into the training set, spread over the defect types in
/// proportion to their counts and chosen with `seed`.
pub fn contaminated_split(
    root: &Path,
    ratio: f64,
    overlap: Overlap,
    seed: u64,
) -> Result<ContaminatedSplit> {
    if !(0.0..=1.0).contains(&ratio) {
        bail!("anomaly-to-normal ratio {ratio} is invalid: use a value from 0 to 1 (0.1 for 10%)");
    }
    let train_good = image_files(&root.join("train/good"))?;
    if train_good.is_empty() {
        bail!(
            "{} has no images in train/good; expected the MVTec AD layout",
            root.display()
        );
    }
    let test_dir = root.join("test");
    let mut kinds: Vec<String> = std::fs::read_dir(&test_dir)
        .with_context(|| {
            format!(
                "cannot list {}; expected the MVTec AD layout",
                test_dir.display()
            )
        })?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    kinds.sort();

    let mut good = Vec::new();
    let mut defects: Vec<Vec<Sample>> = Vec::new();
    for kind in &kinds {
        let mut samples = Vec::new();
        for path in image_files(&test_dir.join(kind))? {
            let mask = (kind != "good").then(|| {
                let stem = path.file_stem().unwrap_or_default().to_string_lossy();
                root.join("ground_truth")
                    .join(kind)
                    .join(format!("{stem}_mask.png"))
            });
            let mask = mask.filter(|m| m.is_file());
            samples.push(Sample {
                path,
                defect: kind.clone(),
                mask,
            });
        }
        if kind == "good" {
            good = samples;
        } else {
            defects.push(samples);
        }
    }
    let total_defects: usize = defects.iter().map(Vec::len).sum();
    let wanted = (ratio * train_good.len() as f64).round() as usize;
    if wanted > total_defects {
        bail!(
            "ratio {ratio} needs {wanted} defect images but {} has only {total_defects}",
            test_dir.display()
        );
    }

    // Largest-remainder apportionment of `wanted` over the defect types.
    let mut quota: Vec<usize> = defects
        .iter()
        .map(|d| d.len() * wanted / total_defects.max(1))
        .collect();
    let mut rest: Vec<usize> = (0..defects.len()).collect();
    rest.sort_by_key(|&i| std::cmp::Reverse((defects[i].len() * wanted) % total_defects.max(1)));
    for &i in rest.iter().take(wanted - quota.iter().sum::<usize>()) {
        quota[i] += 1;
    }

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut train = train_good;
    let mut test = good;
    let mut moved_samples = Vec::with_capacity(wanted);
    for (mut samples, q) in defects.into_iter().zip(quota) {
        samples.shuffle(&mut rng);
        for (i, s) in samples.into_iter().enumerate() {
            if i < q {
                train.push(s.path.clone());
                if overlap == Overlap::Overlap {
                    test.push(s.clone());
                }
                moved_samples.push(s);
            } else {
                test.push(s);
            }
        }
    }
    Ok(ContaminatedSplit {
        train,
        moved: wanted,
        moved_samples,
        test,
    })
}
