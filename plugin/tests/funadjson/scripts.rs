//! The example scripts in pipelines/, run on MTD images with the test model
//! and the plugin of this build.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::{self, model, mtd_images, spread};
use crate::lines::{assert_valid, check_scored, parse_line};

/// OK and NG fill colours of the mark that `overlay=both` draws in the top-left corner.
const OK_RGB: [u8; 3] = [0, 200, 0];
const NG_RGB: [u8; 3] = [230, 0, 0];

/// Creates a command for `pipelines/<script>` that uses the plugin of this
/// build instead of building a release one.
fn pipeline_script(script: &str) -> Command {
    let mut command = Command::new(common::repo_root().join("pipelines").join(script));
    command
        .env("FUNAD_PLUGIN_LIB", common::plugin_library())
        .env(
            "FUNAD_PLUGIN_DIR",
            common::scratch_dir().join("script-plugins"),
        )
        .env_remove("GST_DEBUG");
    command
}

/// Fills `dir` with four MTD JPEGs of different sizes, two good and two
/// defective, and one MTD image converted to PNG. Returns the inputs in name order.
fn mixed_images(dir: &Path) -> Vec<PathBuf> {
    let mut jpegs = spread(&mtd_images("test/good"), 2);
    jpegs.extend(spread(&mtd_images("test/crack"), 2));
    let mut inputs = Vec::new();
    for (i, file) in jpegs.iter().enumerate() {
        let link = dir.join(format!(
            "{i}-{}",
            file.file_name().unwrap().to_string_lossy()
        ));
        std::os::unix::fs::symlink(file, &link).unwrap();
        inputs.push(link);
    }
    let png = dir.join("4-uneven.png");
    common::load(&mtd_images("test/uneven")[0])
        .save(&png)
        .expect("PNG writes");
    inputs.push(png);
    inputs
}

#[test]
fn images_script_scores_mixed_folder() {
    let input_dir = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let inputs = mixed_images(input_dir.path());
    let sizes: Vec<(u32, u32)> = inputs
        .iter()
        .map(|p| image::image_dimensions(p).expect("input size reads"))
        .collect();
    assert_ne!(
        sizes[0], sizes[1],
        "the test needs images of different sizes"
    );

    let output = pipeline_script("images.sh")
        .arg(&model().path)
        .arg(input_dir.path())
        .arg(out_dir.path())
        .output()
        .expect("images.sh runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "images.sh failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("Scored {} images", inputs.len())),
        "summary missing in:\n{stdout}"
    );

    let text = std::fs::read_to_string(out_dir.path().join("results.jsonl")).unwrap();
    let lines: Vec<Value> = text
        .split_inclusive('\n')
        .map(|l| parse_line(l.as_bytes()))
        .collect();
    assert_eq!(lines.len(), inputs.len(), "one line per image");

    let index = std::fs::read_to_string(out_dir.path().join("images.tsv")).unwrap();
    let index: Vec<&str> = index.lines().collect();
    assert_eq!(index.len(), inputs.len(), "one images.tsv row per image");

    let source_id = input_dir.path().file_name().unwrap().to_string_lossy();
    for (i, (line, input)) in lines.iter().zip(&inputs).enumerate() {
        assert_valid(line);
        check_scored(line);
        assert_eq!(line["sequence"], i as u64);
        assert_eq!(line["source_id"], source_id.as_ref());
        assert_eq!(index[i], format!("{i}\t{}", input.display()));

        let stem = input.file_stem().unwrap().to_string_lossy();
        let annotated = out_dir.path().join(format!("{stem}.png"));
        let image = image::open(&annotated)
            .unwrap_or_else(|e| panic!("{} cannot be read: {e}", annotated.display()))
            .to_rgb8();
        assert_eq!(
            image.dimensions(),
            sizes[i],
            "size of {}",
            annotated.display()
        );
        let centre = (image.width().min(image.height()) / 8).clamp(8, 64) / 2;
        let expected = if line["verdict"] == "NG" {
            NG_RGB
        } else {
            OK_RGB
        };
        assert_eq!(
            image.get_pixel(centre, centre).0,
            expected,
            "mark colour of {} with verdict {}",
            annotated.display(),
            line["verdict"]
        );
    }
}
