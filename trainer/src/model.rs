//! The trained detector and its model file.
//!
//! A model file is a safetensors file. Its tensors are the Local-Net weights;
//! its `__metadata__` contains `funad` (a JSON [`ModelMeta`]) and
//! `payload_sha256` (a checksum of the tensor names and bytes).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{nn, Device, Kind, Tensor};

use crate::backbone::{Backbone, BackboneId};
use crate::features::{self, FeatureConfig};
use crate::head::{BankLayout, HeadParts, ScoreHead};
use crate::localnet::LocalNet;
use crate::train::{EpochStats, TrainConfig};

/// Version of the model file layout that this build writes. Version 3 added
/// the score head and its memory bank; a version 2 file reads as a
/// discriminator-head model.
pub const FORMAT_VERSION: u32 = 3;
/// Oldest model file layout that this build reads.
pub const OLDEST_READABLE_FORMAT: u32 = 2;
/// Name of the scoring bank's tensor in the model file.
const BANK_TENSOR: &str = "head.bank";
/// Name of the tensor with each bank row's patch index (positional banks
/// only), stored as float32 like every tensor of the file; exact below 2²⁴.
const BANK_POSITIONS_TENSOR: &str = "head.bank_positions";
/// Training image index of each bank row, stored when every patch of some
/// training image is in the bank (see [`crate::head::WholeImages`]).
const BANK_GROUPS_TENSOR: &str = "head.bank_groups";

/// Robust statistics of the training images' image logits (the largest patch
/// logit of each image). They calibrate every score the detector reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreStats {
    pub median: f32,
    /// Median absolute deviation, unscaled.
    pub mad: f32,
    pub min: f32,
    pub max: f32,
}

impl ScoreStats {
    pub fn from_scores(scores: &[f32]) -> Self {
        let median = median(scores);
        let dev: Vec<f32> = scores.iter().map(|s| (s - median).abs()).collect();
        ScoreStats {
            median,
            mad: median_of(dev),
            min: scores.iter().copied().fold(f32::INFINITY, f32::min),
            max: scores.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        }
    }

    /// Robust standard deviation: 1.4826 · MAD, the factor making the MAD a
    /// standard deviation estimate for normally distributed values. Floored so
    /// that a degenerate training set (all logits equal) still gives a finite scale.
    pub fn scale(&self) -> f32 {
        (1.4826 * self.mad).max(1e-3)
    }

    /// Calibrated score in (0, 1) of a logit: sigmoid((logit − median) / scale).
    /// A typical training image scores 0.5; k robust standard deviations above
    /// the median score sigmoid(k).
    pub fn calibrate(&self, logits: &Tensor) -> Tensor {
        ((logits - self.median as f64) / self.scale() as f64).sigmoid()
    }

    /// Default threshold on the calibrated score: `mads` robust standard
    /// deviations above the median training image, sigmoid(mads).
    pub fn threshold(mads: f64) -> f32 {
        (1.0 / (1.0 + (-mads).exp())) as f32
    }
}

fn median(x: &[f32]) -> f32 {
    median_of(x.to_vec())
}

fn median_of(mut x: Vec<f32>) -> f32 {
    if x.is_empty() {
        return f32::NAN;
    }
    x.sort_unstable_by(f32::total_cmp);
    let m = x.len() / 2;
    if x.len() % 2 == 1 {
        x[m]
    } else {
        0.5 * (x[m - 1] + x[m])
    }
}

/// Everything a model file records besides the weights.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelMeta {
    pub format_version: u32,
    /// Short content hash of the Local-Net weights.
    pub model_id: String,
    /// Version counter, raised by each retraining of one model lineage.
    pub version: u64,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    pub backbone: BackboneId,
    /// Backbone weights file used at training time; the default when loading.
    pub backbone_path: PathBuf,
    pub features: FeatureConfig,
    pub feature_size: i64,
    /// Patch grid side at the model input.
    pub grid: i64,
    /// Image maxima of the head's raw values on the training images; they
    /// calibrate the reported scores.
    pub score_stats: ScoreStats,
    /// Score head (version 2 files: the discriminator).
    #[serde(default = "ScoreHead::legacy")]
    pub score_head: ScoreHead,
    /// Training image logit maxima, which standardise the blend head's logit part.
    #[serde(default)]
    pub logit_stats: Option<ScoreStats>,
    /// Training image maxima of the bank distance, which standardise the blend head's bank part.
    #[serde(default)]
    pub bank_stats: Option<ScoreStats>,
    /// Default OK/NG threshold on the calibrated image score.
    pub threshold: f32,
    pub train: TrainConfig,
    /// Label-free rule that chose the final model.
    pub selection: String,
    pub history: Vec<EpochStats>,
    pub train_images: usize,
}

/// OK/NG decision on one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    #[serde(rename = "OK")]
    Ok,
    #[serde(rename = "NG")]
    Ng,
}

impl Verdict {
    pub fn from_score(score: f32, threshold: f32) -> Self {
        if score > threshold {
            Verdict::Ng
        } else {
            Verdict::Ok
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Ng => "NG",
        }
    }
}

/// Scores of one image.
#[derive(Debug)]
pub struct Scored {
    /// Maximum patch score, in (0, 1).
    pub image_score: f32,
    /// Calibrated patch scores on the CPU, in (0, 1); see
    /// [`ScoreStats::calibrate`]. `[grid, grid]`, or with the letterbox fit
    /// only the patches that show the image (`[rows, cols]`, see
    /// [`features::Content`]).
    pub patch_scores: Tensor,
}

/// A backbone and a trained Local-Net, ready to score images.
pub struct Detector {
    vit: Arc<Backbone>,
    _vs: nn::VarStore,
    net: LocalNet,
    head: HeadParts,
    meta: ModelMeta,
}

// SAFETY: a loaded or trained `Detector` never writes its weights again (the
// var store is frozen and scoring runs under `no_grad`), and libtorch allows
// concurrent reads of one tensor, so several threads may score with it at once.
unsafe impl Sync for Detector {}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("model_id", &self.meta.model_id)
            .finish()
    }
}

fn tensor_bytes(t: &Tensor) -> Vec<u8> {
    let t = t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
    let v: Vec<f32> = Vec::try_from(t.flatten(0, -1)).expect("float tensor");
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn payload_digest(tensors: &[(String, Vec<i64>, Vec<u8>)]) -> String {
    let mut h = Sha256::new();
    for (name, shape, bytes) in tensors {
        h.update(name.as_bytes());
        for s in shape {
            h.update(s.to_le_bytes());
        }
        h.update(bytes);
    }
    hex::encode(h.finalize())
}

/// Returns every tensor of a model file, sorted by name: the Local-Net
/// weights, the bank and the bank's grid positions.
fn payload(vs: &nn::VarStore, head: &HeadParts) -> Vec<(String, Vec<i64>, Vec<u8>)> {
    let mut vars = sorted_variables(vs);
    if let Some(b) = &head.bank {
        let b = b.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
        vars.push((BANK_TENSOR.to_string(), b.size(), tensor_bytes(&b)));
    }
    if let Some(layout) = &head.layout {
        let p = &layout.positions;
        vars.push((BANK_POSITIONS_TENSOR.to_string(), p.size(), tensor_bytes(p)));
    }
    if let Some(whole) = head.whole_images() {
        let g = &whole.bank_groups;
        vars.push((BANK_GROUPS_TENSOR.to_string(), g.size(), tensor_bytes(g)));
    }
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

fn sorted_variables(vs: &nn::VarStore) -> Vec<(String, Vec<i64>, Vec<u8>)> {
    let mut vars: Vec<_> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars.into_iter()
        .map(|(name, t)| (name, t.size(), tensor_bytes(&t)))
        .collect()
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder,
/// flushed to disk, then renamed over `path`. A crash leaves either the old
/// file or the new one, never a partial file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_inner(path, bytes, false)
}

/// Name of the environment variable that makes [`Detector::save`] abort the
/// process halfway through writing, with the value `abort-in-model-write`.
/// Only the fault tests set it, to check that a crash during a write leaves
/// the previous model file intact.
pub const FAILPOINT_ENV: &str = "FUNAD_FAILPOINT";

fn write_atomic_inner(path: &Path, bytes: &[u8], abort_halfway: bool) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".funad-")
        .suffix(".part")
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    // tempfile creates the file private (0600). Other processes, possibly of
    // other users, read model and state files, so they get the usual 0644.
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("cannot set the permissions of {}", tmp.path().display()))?;
    }
    if abort_halfway {
        let _ = tmp.write_all(&bytes[..bytes.len() / 2]);
        let _ = tmp.as_file().sync_all();
        log::error!("{FAILPOINT_ENV}: aborting while writing {}", path.display());
        std::process::abort();
    }
    tmp.write_all(bytes)
        .with_context(|| format!("cannot write {}", tmp.path().display()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("cannot flush {}", tmp.path().display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

impl Detector {
    /// Wraps a trained Local-Net and its score head. `meta.model_id` is set
    /// from the weights and the bank, and the head's fields of `meta` from `head`.
    pub fn new(
        vit: Arc<Backbone>,
        vs: nn::VarStore,
        net: LocalNet,
        head: HeadParts,
        mut meta: ModelMeta,
    ) -> Self {
        meta.score_head = head.head;
        meta.logit_stats = Some(head.logit_stats.clone());
        meta.bank_stats = head.bank_stats.clone();
        meta.model_id = payload_digest(&payload(&vs, &head))[..12].to_string();
        Detector {
            vit,
            _vs: vs,
            net,
            head,
            meta,
        }
    }

    /// Returns the trained Local-Net.
    pub fn local_net(&self) -> &LocalNet {
        &self.net
    }

    /// Returns the score head with its bank.
    pub fn head(&self) -> &HeadParts {
        &self.head
    }

    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    pub fn backbone(&self) -> &Arc<Backbone> {
        &self.vit
    }

    pub fn device(&self) -> Device {
        self.vit.device()
    }

    /// Serialises the detector into model-file bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let vars = payload(&self._vs, &self.head);
        let digest = payload_digest(&vars);
        let views: Vec<(String, safetensors::tensor::TensorView)> = vars
            .iter()
            .map(|(name, shape, bytes)| {
                let shape: Vec<usize> = shape.iter().map(|&s| s as usize).collect();
                let view =
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, bytes)
                        .expect("shape matches bytes");
                (name.clone(), view)
            })
            .collect();
        let mut metadata = HashMap::new();
        metadata.insert("funad".to_string(), serde_json::to_string(&self.meta)?);
        metadata.insert("payload_sha256".to_string(), digest);
        Ok(safetensors::serialize(views, &Some(metadata))?)
    }

    /// Writes the model file atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let abort = std::env::var_os(FAILPOINT_ENV).is_some_and(|v| v == "abort-in-model-write");
        write_atomic_inner(path, &self.to_bytes()?, abort)
    }

    /// Sets the version recorded in the model file, for example the next
    /// version of a retrained model lineage.
    pub fn set_version(&mut self, version: u64) {
        self.meta.version = version;
    }

    /// Reads only the metadata of a model file, checking its format and checksum.
    pub fn read_meta(path: &Path) -> Result<ModelMeta> {
        Ok(read_model_file(path)?.0)
    }

    /// Loads a model file. The backbone comes from `backbone` when given, else
    /// from the path recorded at training time. Either way, its SHA-256 must
    /// match the one in the model file.
    pub fn load(path: &Path, backbone: Option<&Path>, device: Device) -> Result<Self> {
        let (meta, tensors) = read_model_file(path)?;
        let backbone_path = backbone
            .map(Path::to_path_buf)
            .unwrap_or_else(|| meta.backbone_path.clone());
        if !backbone_path.is_file() {
            bail!(
                "model {}: backbone weights {} not found; pass the {} file with --backbone",
                path.display(),
                backbone_path.display(),
                meta.backbone.name
            );
        }
        let vit = Arc::new(Backbone::load(&backbone_path, device)?);
        Self::with_backbone(path, meta, tensors, vit)
    }

    /// Loads a model file onto an already loaded backbone, which must be the one it was trained with.
    pub fn load_with_backbone(path: &Path, vit: Arc<Backbone>) -> Result<Self> {
        let (meta, tensors) = read_model_file(path)?;
        Self::with_backbone(path, meta, tensors, vit)
    }

    /// Builds the detector. A libtorch panic on bad tensor values (a damaged
    /// file whose checksum was recomputed) becomes an error.
    fn with_backbone(
        path: &Path,
        meta: ModelMeta,
        tensors: Vec<(String, Tensor)>,
        vit: Arc<Backbone>,
    ) -> Result<Self> {
        crate::catch_torch_panic(|| Self::with_backbone_inner(path, meta, tensors, vit))
            .unwrap_or_else(|failure| {
                bail!(
                    "model {}: {failure}; retrain the model or restore its file",
                    path.display()
                )
            })
    }

    fn with_backbone_inner(
        path: &Path,
        meta: ModelMeta,
        tensors: Vec<(String, Tensor)>,
        vit: Arc<Backbone>,
    ) -> Result<Self> {
        if vit.id().sha256 != meta.backbone.sha256 {
            bail!(
                "model {} was trained with backbone {} (sha256 {}), but {} has sha256 {}; \
                 pass the original backbone file",
                path.display(),
                meta.backbone.name,
                &meta.backbone.sha256[..12],
                vit.path().display(),
                &vit.id().sha256[..12]
            );
        }
        let size = meta
            .features
            .validate(&vit)
            .with_context(|| format!("model {}", path.display()))?;
        if size != meta.feature_size {
            bail!(
                "model {}: feature size {} does not match its options ({size})",
                path.display(),
                meta.feature_size
            );
        }
        let mut vs = nn::VarStore::new(vit.device());
        let net = LocalNet::new(&vs.root(), meta.feature_size);
        let mut src: HashMap<String, Tensor> = tensors.into_iter().collect();
        let bank = src.remove(BANK_TENSOR);
        let positions = src.remove(BANK_POSITIONS_TENSOR);
        let groups = src.remove(BANK_GROUPS_TENSOR);
        let grid = meta.features.grid(&vit);
        let head = head_of(path, &meta, bank, positions, groups, grid, vit.device())?;
        {
            let _guard = tch::no_grad_guard();
            for (name, mut var) in vs.variables() {
                let t = src
                    .get(&name)
                    .with_context(|| format!("model {} has no tensor `{name}`", path.display()))?;
                if t.size() != var.size() {
                    bail!(
                        "model {}: `{name}` has shape {:?}, expected {:?}",
                        path.display(),
                        t.size(),
                        var.size()
                    );
                }
                var.copy_(t);
            }
        }
        vs.freeze();
        Ok(Detector {
            vit,
            _vs: vs,
            net,
            head,
            meta,
        })
    }

    /// Calibrated patch scores `[B, grid, grid]` in (0, 1) of patch features
    /// `[B, grid, grid, D]`. Local-Net's logits go through
    /// [`ScoreStats::calibrate`], because its sigmoid saturates: after
    /// training, most image scores would round to 1.0 in f32 and tie.
    pub fn score_features(&self, features: &Tensor) -> Result<Tensor> {
        let (b, gh, gw, d) = features.size4()?;
        if d != self.meta.feature_size {
            bail!(
                "patch features have width {d}, this model expects {}",
                self.meta.feature_size
            );
        }
        let raw = self
            .head
            .raw(&self.net, &features.reshape([b * gh * gw, d]))?;
        Ok(self.meta.score_stats.calibrate(&raw).view([b, gh, gw]))
    }

    /// Patch features `[B, grid, grid, D]` of normalised model inputs `[B, 3, S, S]`.
    pub fn features(&self, inputs: &Tensor) -> Result<Tensor> {
        features::extract(&self.vit, &self.meta.features, inputs)
    }

    /// Normalised model input `[3, S, S]` of 8-bit pixels `[H, W, C]`.
    pub fn preprocess(&self, pixels: &Tensor) -> Result<Tensor> {
        let f = &self.meta.features;
        features::preprocess_with(
            pixels,
            f.input_size,
            f.resize,
            self.meta.grid,
            self.device(),
        )
    }

    /// Scores a batch of 8-bit images, each `[H, W, C]`.
    pub fn score_images(&self, images: &[Tensor]) -> Result<Vec<Scored>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let inputs: Vec<Tensor> = images
            .iter()
            .map(|i| self.preprocess(i))
            .collect::<Result<_>>()?;
        let maps = self
            .score_features(&self.features(&Tensor::stack(&inputs, 0))?)?
            .to_device(Device::Cpu);
        Ok(images
            .iter()
            .enumerate()
            .map(|(i, image)| {
                let (h, w) = (image.size()[0], image.size()[1]);
                let content = self.meta.features.content(self.meta.grid, w, h);
                let patch_scores = content.crop(&maps.get(i as i64)).contiguous();
                let image_score = f32::try_from(patch_scores.max()).unwrap_or(f32::NAN);
                Scored {
                    image_score,
                    patch_scores,
                }
            })
            .collect())
    }
}

/// Builds the score head of a loaded model: its kind and statistics from `meta`, its bank from the file.
fn head_of(
    path: &Path,
    meta: &ModelMeta,
    bank: Option<Tensor>,
    positions: Option<Tensor>,
    groups: Option<Tensor>,
    grid: i64,
    device: Device,
) -> Result<HeadParts> {
    let head = meta.score_head;
    let bank = match (head.uses_bank(), bank) {
        (true, Some(b)) => {
            if b.dim() != 2 || b.size()[1] != meta.feature_size || b.size()[0] == 0 {
                bail!(
                    "model {}: memory bank has shape {:?}, expected [rows, {}]",
                    path.display(),
                    b.size(),
                    meta.feature_size
                );
            }
            Some(b.to_device(device))
        }
        (true, None) => bail!(
            "model {} uses the {head:?} score head but contains no memory bank; retrain or restore it",
            path.display()
        ),
        (false, _) => None,
    };
    if head == ScoreHead::Blend && (meta.logit_stats.is_none() || meta.bank_stats.is_none()) {
        bail!(
            "model {} uses the blend score head but lacks its statistics; retrain or restore it",
            path.display()
        );
    }
    let layout = match (&bank, meta.train.score_bank_radius, positions) {
        (Some(_), Some(radius), Some(p)) => Some(BankLayout {
            positions: p.to_device(device).to_kind(Kind::Int64),
            grid,
            radius,
        }),
        (Some(_), Some(_), None) => bail!(
            "model {} has a positional scoring bank without its positions; retrain or restore it",
            path.display()
        ),
        _ => None,
    };
    HeadParts::new(
        head,
        bank,
        layout,
        meta.logit_stats
            .clone()
            .unwrap_or_else(|| meta.score_stats.clone()),
        meta.bank_stats.clone(),
        meta.train.score_bank_precision,
    )
    .and_then(|parts| match groups {
        Some(g) if Some(g.size()) == parts.bank.as_ref().map(|b| vec![b.size()[0]]) => {
            parts.with_bank_groups(&g.to_device(device), grid * grid)
        }
        Some(g) => bail!(
            "memory bank groups have shape {:?}, which does not match the bank; retrain or \
             restore the model",
            g.size()
        ),
        None => Ok(parts),
    })
    .with_context(|| format!("model {}", path.display()))
}

fn read_model_file(path: &Path) -> Result<(ModelMeta, Vec<(String, Tensor)>)> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read model file {}", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "model file {} is corrupt or truncated ({e}); retrain or restore it",
            path.display()
        )
    })?;
    let meta_map = header.metadata().clone().unwrap_or_default();
    let json = meta_map.get("funad").with_context(|| {
        format!(
            "{} is a safetensors file but not a funad model (no `funad` metadata)",
            path.display()
        )
    })?;
    let version: serde_json::Value = serde_json::from_str(json)
        .with_context(|| format!("model file {}: metadata is not valid JSON", path.display()))?;
    let found = version
        .get("format_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    if !(OLDEST_READABLE_FORMAT as u64..=FORMAT_VERSION as u64).contains(&found) {
        bail!(
            "model file {} has format version {found}; this funad reads versions \
             {OLDEST_READABLE_FORMAT} to {FORMAT_VERSION}; retrain the model with this funad",
            path.display()
        );
    }
    let meta: ModelMeta = serde_json::from_str(json).with_context(|| {
        format!(
            "model file {}: metadata does not match format version {found}",
            path.display()
        )
    })?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "model file {} is corrupt or truncated ({e}); retrain or restore it",
            path.display()
        )
    })?;
    let mut raw: Vec<(String, Vec<i64>, Vec<u8>)> = Vec::new();
    let mut tensors = Vec::new();
    let mut names: Vec<String> = st.names().into_iter().cloned().collect();
    names.sort();
    for name in names {
        let view = st.tensor(&name)?;
        if view.dtype() != safetensors::Dtype::F32 {
            bail!(
                "model file {}: tensor `{name}` is {:?}, expected F32",
                path.display(),
                view.dtype()
            );
        }
        let shape: Vec<i64> = view.shape().iter().map(|&s| s as i64).collect();
        let data = view.data().to_vec();
        let floats: Vec<f32> = data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        tensors.push((
            name.clone(),
            Tensor::from_slice(&floats).view(shape.as_slice()),
        ));
        raw.push((name, shape, data));
    }
    let expected = meta_map.get("payload_sha256").cloned().unwrap_or_default();
    if payload_digest(&raw) != expected {
        bail!("model file {} is corrupt: its weights do not match their checksum; retrain or restore it", path.display());
    }
    Ok((meta, tensors))
}
