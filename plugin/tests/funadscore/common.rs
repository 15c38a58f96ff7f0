//! Shared set-up: GStreamer with the plugin registered statically, the MTD
//! dataset, one model trained per test binary, and frames built from MTD images.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once, OnceLock};

use funad::features::Resize;
use funad::fit::fit;
use funad::{Backbone, Detector, FeatureConfig, ModelMeta, TrainConfig};
use gst::prelude::*;
use gst_video::prelude::*;

/// Images of train/good in the training set; the rest of the 40 are defects.
const TRAIN_GOOD: usize = 36;

pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // A fresh registry, so a plugin blacklisted in the user's cache by an
        // earlier failed load cannot hide elements the tests use.
        if std::env::var_os("GST_REGISTRY").is_none() {
            std::env::set_var("GST_REGISTRY", scratch_dir().join("registry.bin"));
        }
        gst::init().expect("GStreamer initialises");
        gstfunad::plugin_register_static().expect("plugin registers");
    });
}

/// Returns this process's scratch folder under cargo's test temporary folder,
/// after removing the folders of earlier test processes that have exited.
///
/// Statics are never dropped, so `tempfile::TempDir` would leave the model
/// and the plugin copy (about 160 MB in a debug build) behind after each run.
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("funadscore-tests");
        if let Ok(entries) = std::fs::read_dir(&root) {
            for entry in entries.flatten() {
                let pid = entry.file_name().to_string_lossy().to_string();
                if !Path::new("/proc").join(&pid).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = root.join(std::process::id().to_string());
        std::fs::create_dir_all(&dir).expect("scratch folder");
        dir
    })
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Returns the MTD dataset folder (MVTec layout): `FUNAD_MTD`, else `../shared/data/mtd`.
pub fn mtd() -> PathBuf {
    let path = std::env::var_os("FUNAD_MTD")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/data/mtd"));
    assert!(
        path.join("train/good").is_dir(),
        "MTD not found at {}; set FUNAD_MTD",
        path.display()
    );
    path
}

pub fn backbone_path() -> PathBuf {
    let path = repo_root().join("weights/dinov2_vits14.safetensors");
    assert!(
        path.is_file(),
        "{} missing; run scripts/setup.sh",
        path.display()
    );
    path
}

/// Image files of an MTD folder such as `test/crack`, sorted by name.
pub fn mtd_images(folder: &str) -> Vec<PathBuf> {
    funad::data::image_files(&mtd().join(folder)).expect("MTD folder lists")
}

/// `count` files spread evenly over `files`.
pub fn spread(files: &[PathBuf], count: usize) -> Vec<PathBuf> {
    let step = (files.len() / count.max(1)).max(1);
    files.iter().step_by(step).take(count).cloned().collect()
}

/// Images the test model is trained on: train/good plus one defect of each
/// class, taken from the end of each folder (the tests score from the start).
fn training_images() -> Vec<PathBuf> {
    let mut paths = spread(&mtd_images("train/good"), TRAIN_GOOD);
    for class in ["blowhole", "break", "crack", "fray"] {
        paths.push(
            mtd_images(&format!("test/{class}"))
                .pop()
                .expect("defect images"),
        );
    }
    paths
}

pub struct TestModel {
    pub path: PathBuf,
    pub meta: ModelMeta,
}

/// Trains a model on [`training_images`] with the backbone at `weights` and
/// its default features (batch 8), and saves it to the scratch folder as `file_name`.
fn train_and_save(weights: &Path, epochs: usize, resize: Resize, file_name: &str) -> TestModel {
    let backbone = Arc::new(Backbone::load(weights, tch::Device::Cpu).expect("backbone loads"));
    let config = TrainConfig {
        epochs,
        batch_size: 8,
        ..Default::default()
    };
    let features = FeatureConfig {
        resize,
        ..FeatureConfig::for_backbone(&backbone)
    };
    let detector = fit(
        backbone,
        &features,
        &config,
        &training_images(),
        None,
        &mut |_| {},
    )
    .expect("test model trains");
    let path = scratch_dir().join(file_name);
    detector.save(&path).expect("model saves");
    let meta = Detector::read_meta(&path).expect("saved model reads back");
    TestModel { path, meta }
}

/// Returns the model trained once per test binary (20 epochs of batch 8 on
/// 40 unlabeled images) and saved to the scratch folder.
pub fn model() -> &'static TestModel {
    static MODEL: OnceLock<TestModel> = OnceLock::new();
    MODEL.get_or_init(|| train_and_save(&backbone_path(), 20, Resize::Stretch, "model.safetensors"))
}

/// Returns a model on the EfficientNet-Lite0 backbone with its default
/// features (blocks 5 and 11, 3×3 pooling), trained once per test binary
/// (5 epochs) on the same images as [`model`] and saved to the scratch folder.
pub fn cnn_model() -> &'static TestModel {
    static MODEL: OnceLock<TestModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let weights = repo_root().join("weights/efficientnet_lite0.safetensors");
        train_and_save(&weights, 5, Resize::Stretch, "model_cnn.safetensors")
    })
}

/// Returns a model like [`model`] whose images keep their aspect ratio
/// (`Resize::Letterbox`), trained once per test binary.
pub fn letterbox_model() -> &'static TestModel {
    static MODEL: OnceLock<TestModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        train_and_save(
            &backbone_path(),
            20,
            Resize::Letterbox,
            "model_letterbox.safetensors",
        )
    })
}

/// Loads an 8-bit image file, grey or RGB.
pub fn load(path: &Path) -> image::DynamicImage {
    image::open(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Byte offsets of R, G and B (or of grey) in one pixel, and bytes per pixel.
/// Written out here rather than taken from GStreamer, so the tests check the
/// element's reading of the formats.
pub fn layout(format: gst_video::VideoFormat) -> (usize, Vec<usize>) {
    use gst_video::VideoFormat as F;
    match format {
        F::Gray8 => (1, vec![0]),
        F::Rgb => (3, vec![0, 1, 2]),
        F::Bgr => (3, vec![2, 1, 0]),
        F::Rgbx | F::Rgba => (4, vec![0, 1, 2]),
        F::Bgrx | F::Bgra => (4, vec![2, 1, 0]),
        F::Xrgb | F::Argb => (4, vec![1, 2, 3]),
        F::Xbgr | F::Abgr => (4, vec![3, 2, 1]),
        other => panic!("no test layout for {other:?}"),
    }
}

/// Video info of a `width`×`height` frame at 10 frames/s.
pub fn video_info(format: gst_video::VideoFormat, width: u32, height: u32) -> gst_video::VideoInfo {
    gst_video::VideoInfo::builder(format, width, height)
        .fps(gst::Fraction::new(10, 1))
        .build()
        .expect("valid video info")
}

/// Builds a frame of `image` resized to `width`×`height` (native size when `None`)
/// in `format`, with padding and alpha bytes set to 255.
pub fn frame(
    image: &image::DynamicImage,
    format: gst_video::VideoFormat,
    size: Option<(u32, u32)>,
) -> (gst::Buffer, gst_video::VideoInfo) {
    let image = match size {
        Some((w, h)) => image.resize_exact(w, h, image::imageops::FilterType::Triangle),
        None => image.clone(),
    };
    let rgb = image.to_rgb8();
    let grey = image.to_luma8();
    let (width, height) = rgb.dimensions();
    let info = video_info(format, width, height);
    let (pixel_stride, offsets) = layout(format);

    let mut buffer = gst::Buffer::with_size(info.size()).expect("buffer allocates");
    {
        let buffer = buffer.get_mut().unwrap();
        let mut frame = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, &info).unwrap();
        let stride = frame.plane_stride()[0] as usize;
        let data = frame.plane_data_mut(0).unwrap();
        data.fill(255);
        for y in 0..height {
            for x in 0..width {
                let start = y as usize * stride + x as usize * pixel_stride;
                if offsets.len() == 1 {
                    data[start] = grey.get_pixel(x, y).0[0];
                } else {
                    let p = rgb.get_pixel(x, y).0;
                    for (channel, &offset) in offsets.iter().enumerate() {
                        data[start + offset] = p[channel];
                    }
                }
            }
        }
    }
    (buffer, info)
}

/// Bytes of a whole buffer.
pub fn bytes(buffer: &gst::BufferRef) -> Vec<u8> {
    buffer.map_readable().expect("buffer maps").to_vec()
}

/// Creates a `funadscore` element with the given properties.
pub fn element(properties: &[(&str, &dyn ToValue)]) -> gst::Element {
    init();
    let mut builder = gst::ElementFactory::make("funadscore");
    for (name, value) in properties {
        builder = builder.property(name, value.to_value());
    }
    builder.build().expect("funadscore is registered")
}

/// Creates a `funadscore` element that uses the test model.
pub fn scorer(properties: &[(&str, &dyn ToValue)]) -> gst::Element {
    let model = model().path.display().to_string();
    let mut all: Vec<(&str, &dyn ToValue)> = vec![("model", &model)];
    all.extend_from_slice(properties);
    element(&all)
}

/// Wraps `element` in a harness, which sets it to PLAYING, and attaches a bus.
pub fn harness(element: &gst::Element) -> (gst_check::Harness, gst::Bus) {
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    (
        gst_check::Harness::with_element(element, Some("sink"), Some("src")),
        bus,
    )
}

/// Pops the `funad-result` messages waiting on `bus`, in order.
pub fn results(bus: &gst::Bus) -> Vec<gst::Structure> {
    let mut out = Vec::new();
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Element]) {
        let s = msg.structure().expect("element messages carry a structure");
        if s.name() == gstfunad::message::RESULT_STRUCTURE_NAME {
            out.push(s.to_owned());
        }
    }
    out
}

/// Finds the plugin `.so` that cargo built for this test binary.
pub fn plugin_library() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps folder");
    [deps.join("libgstfunad.so"), deps.join("../libgstfunad.so")]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("libgstfunad.so not found next to {}", exe.display()))
}

/// Returns a folder holding only the plugin (a hard link, or a copy where
/// linking fails), for `GST_PLUGIN_PATH` of the GStreamer tools.
pub fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_dir().join("plugins");
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("libgstfunad.so");
        let _ = std::fs::remove_file(&target);
        if std::fs::hard_link(plugin_library(), &target).is_err() {
            std::fs::copy(plugin_library(), &target).expect("plugin copies");
        }
        dir
    })
}

/// Creates a command for a GStreamer tool that loads this build of the plugin and no other copy.
pub fn gst_tool(program: &str) -> std::process::Command {
    let mut command = std::process::Command::new(program);
    command
        .env("GST_PLUGIN_PATH", plugin_dir())
        .env("GST_REGISTRY", scratch_dir().join("tools-registry.bin"))
        .env_remove("GST_DEBUG");
    command
}
