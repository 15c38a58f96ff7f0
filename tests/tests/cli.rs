//! The `funad` command-line tool, run as a user would: real images, real
//! backbone, exit codes and messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn mtd() -> PathBuf {
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

/// Returns a command for the `funad` binary of this test's build profile.
fn funad() -> Command {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let bin = profile_dir.join("funad");
    assert!(
        bin.is_file(),
        "{} not built; run `cargo test --workspace`",
        bin.display()
    );
    let mut cmd = Command::new(bin);
    cmd.current_dir(repo_root());
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run funad")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Links the first `count` images of an MTD folder into `dest`.
fn link_images(folder: &str, count: usize, dest: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dest).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(mtd().join(folder))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.truncate(count);
    for f in &files {
        std::os::unix::fs::symlink(f, dest.join(f.file_name().unwrap())).unwrap();
    }
    files
}

#[test]
fn train_then_score_images() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train");
    link_images("train/good", 20, &train);
    link_images("test/crack", 2, &train);
    let model = dir.path().join("model.funad");
    let out = run(funad()
        .args(["train", "--epochs", "2", "-o"])
        .arg(&model)
        .arg(&train));
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    assert!(model.is_file());

    let test = dir.path().join("test");
    let good = link_images("test/good", 3, &test);
    let bad = link_images("test/blowhole", 3, &test);
    let maps = dir.path().join("maps");
    let out = run(funad()
        .args(["score", "-m"])
        .arg(&model)
        .arg("--maps")
        .arg(&maps)
        .arg(&test));
    assert!(out.status.success(), "score failed: {}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), good.len() + bad.len());
    for line in &lines {
        let score = line["image_score"].as_f64().unwrap();
        let threshold = line["threshold"].as_f64().unwrap();
        assert!(score > 0.0, "score {score}");
        assert!(score < 1.0, "score {score}");
        let expected = if score > threshold { "NG" } else { "OK" };
        assert_eq!(line["verdict"], expected, "{line}");
        assert_eq!(line["model_id"].as_str().unwrap().len(), 12);
    }
    // Each anomaly map has its image's size.
    for f in good.iter().chain(&bad) {
        let stem = f.file_stem().unwrap().to_string_lossy();
        let map = image::image_dimensions(maps.join(format!("{stem}_map.png"))).unwrap();
        assert_eq!(map, image::image_dimensions(f).unwrap(), "map of {stem}");
    }

    // A threshold of 0 turns every verdict NG.
    let out = run(funad()
        .args(["score", "--threshold", "0", "-m"])
        .arg(&model)
        .arg(&test));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.matches("\"NG\"").count(), 6, "{text}");
}

#[test]
fn missing_images_folder_is_an_error() {
    let out = run(funad().args(["train", "/nonexistent/images", "-o", "/tmp/never.funad"]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent/images"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

#[test]
fn invalid_option_names_value() {
    let dir = tempfile::tempdir().unwrap();
    link_images("train/good", 4, dir.path());
    let out = run(funad()
        .args(["train", "--tau", "1.5", "-o", "/tmp/never.funad"])
        .arg(dir.path()));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("tau = 1.5 is invalid"),
        "{}",
        stderr(&out)
    );
    let out = run(funad()
        .args(["train", "--blocks", "13", "-o", "/tmp/never.funad"])
        .arg(dir.path()));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("block 13 does not exist"),
        "{}",
        stderr(&out)
    );
    let out = run(funad()
        .args(["train", "--device", "tpu", "-o", "/tmp/never.funad"])
        .arg(dir.path()));
    assert!(
        stderr(&out).contains("device `tpu` is invalid"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn corrupt_model_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("broken.funad");
    std::fs::write(&model, b"not a model").unwrap();
    let out = run(funad()
        .args(["score", "-m"])
        .arg(&model)
        .arg(mtd().join("test/good")));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("broken.funad"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("corrupt or truncated"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty(), "no result lines for a broken model");
}

#[test]
fn corrupt_image_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    link_images("train/good", 4, dir.path());
    std::fs::write(dir.path().join("zz_broken.png"), b"\x89PNG broken").unwrap();
    let out = run(funad()
        .args(["train", "--epochs", "1", "-o"])
        .arg(dir.path().join("m.funad"))
        .arg(dir.path()));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("zz_broken.png"), "{}", stderr(&out));
    assert!(
        !dir.path().join("m.funad").exists(),
        "no model may be written"
    );
}

#[test]
fn eval_reports_auroc_on_small_mvtec_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    link_images("train/good", 30, &root.join("train/good"));
    link_images("test/good", 10, &root.join("test/good"));
    let defects = link_images("test/crack", 12, &root.join("test/crack"));
    std::fs::create_dir_all(root.join("ground_truth/crack")).unwrap();
    for d in &defects {
        let mask = format!("{}_mask.png", d.file_stem().unwrap().to_string_lossy());
        std::os::unix::fs::symlink(
            mtd().join("ground_truth/crack").join(&mask),
            root.join("ground_truth/crack").join(&mask),
        )
        .unwrap();
    }
    let report = root.join("report.json");
    let out = run(funad()
        .args(["eval", "--epochs", "2", "--ratio", "0.1", "--data"])
        .arg(root)
        .arg("--json")
        .arg(&report));
    assert!(out.status.success(), "eval failed: {}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    // 10% of 30 normal images: 3 defects move into training and leave the test set.
    assert_eq!(r["moved_anomalies"], 3);
    assert_eq!(r["train_images"], 33);
    assert_eq!(r["test_images"], 19);
    assert_eq!(r["test_anomalies"], 9);
    let methods = r["methods"].as_array().unwrap();
    let kinds: Vec<&str> = methods
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    // PatchCore gives two rows: the plain maximum and the reweighted score.
    assert_eq!(
        kinds,
        ["knn", "patchcore", "patchcore", "softpatch", "funad"]
    );
    for m in methods {
        for key in [
            "image_auroc",
            "pixel_auroc",
            "aupro",
            "overlap_image_auroc",
            "overlap_pixel_auroc",
            "overlap_aupro",
        ] {
            let v = m[key].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{key} {v}");
        }
        assert_eq!(m["image_scores"].as_array().unwrap().len(), 19);
    }
    // 1% of 33 × 256 training patch features: a coreset of 84.
    assert_eq!(methods[1]["bank_size"], 84);
    // Reweighting scales each image's largest distance by a weight from
    // 1 − 1/9 to 1 (9 neighbours) and leaves the maps, and so the pixel
    // metrics, alone.
    let (plain, reweighted) = (&methods[1], &methods[2]);
    assert!(
        reweighted["method"]
            .as_str()
            .unwrap()
            .ends_with("reweighted (9 neighbours)"),
        "{}",
        reweighted["method"]
    );
    assert_eq!(plain["pixel_auroc"], reweighted["pixel_auroc"]);
    assert_eq!(plain["aupro"], reweighted["aupro"]);
    let scores = |m: &serde_json::Value| -> Vec<f64> {
        m["image_scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    for (p, w) in scores(plain).iter().zip(scores(reweighted)) {
        assert!(
            w >= p * (1.0 - 1.0 / 9.0) * 0.999,
            "reweighted score {w} of plain {p}"
        );
        assert!(w <= *p, "reweighted score {w} above plain {p}");
    }
    // Ratio 0 moves nothing, so both overlap settings score the same images.
    // The reweighted PatchCore row then weights an empty set of moved images.
    let clean = root.join("clean.json");
    let out = run(funad()
        .args([
            "eval",
            "--methods",
            "knn,patchcore,funad",
            "--epochs",
            "1",
            "--ratio",
            "0",
            "--data",
        ])
        .arg(root)
        .arg("--json")
        .arg(&clean));
    assert!(
        out.status.success(),
        "eval at ratio 0 failed: {}",
        stderr(&out)
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&clean).unwrap()).unwrap();
    assert_eq!(r["moved_anomalies"], 0);
    assert_eq!(r["test_anomalies"], 12);
    assert_eq!(r["methods"].as_array().unwrap().len(), 4);
    for m in r["methods"].as_array().unwrap() {
        assert_eq!(m["image_auroc"], m["overlap_image_auroc"]);
        assert_eq!(m["aupro"], m["overlap_aupro"]);
    }
    // The score heads of one training, on the contaminated folder. With every
    // training image in the scoring bank and no cap, the bank head is the
    // nearest-neighbour distance to all training patches, as is the knn
    // baseline with a bank larger than the 33 × 256 patches: same ranking.
    let heads = root.join("heads.json");
    let out = run(funad()
        .args([
            "eval",
            "--methods",
            "knn,funad",
            "--knn-bank",
            "100000",
            "--epochs",
            "1",
            "--compare-heads",
            "--compare-bank-shares",
            "1.0",
            "--score-bank-features",
            "100000",
            "--ratio",
            "0.1",
            "--data",
        ])
        .arg(root)
        .arg("--json")
        .arg(&heads));
    assert!(
        out.status.success(),
        "eval with heads failed: {}",
        stderr(&out)
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&heads).unwrap()).unwrap();
    let methods = r["methods"].as_array().unwrap();
    let names: Vec<&str> = methods
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 5, "{names:?}");
    assert!(names[2].contains("Discriminator head"), "{names:?}");
    assert!(names[3].contains("Blend head"), "{names:?}");
    assert!(names[4].contains("100% of images"), "{names:?}");
    assert_eq!(methods[0]["bank_size"], 33 * 256);
    assert_eq!(methods[4]["bank_size"], 33 * 256);
    let (knn, all) = (
        methods[0]["image_auroc"].as_f64().unwrap(),
        methods[4]["image_auroc"].as_f64().unwrap(),
    );
    assert!((knn - all).abs() < 1e-9, "knn {knn}, bank head {all}");
    // The default share keeps round(0.9 × 33) = 30 images.
    assert_eq!(methods[1]["bank_size"], 30 * 256);
    // Pseudo-label diagnostics against the 3 moved images' masks.
    let epoch = &methods[1]["history"][0];
    let precision = epoch["pseudo_precision"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&precision), "{epoch}");
    let share = epoch["bank_anomalous_images"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&share), "{epoch}");
    let out = run(funad()
        .args(["eval", "--compare-bank-shares", "0", "--data"])
        .arg(root));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("bank share 0 is invalid"),
        "{}",
        stderr(&out)
    );
    // An invalid baseline option is rejected with its value and a fix.
    let out = run(funad()
        .args([
            "eval",
            "--methods",
            "patchcore",
            "--coreset-ratio",
            "0",
            "--data",
        ])
        .arg(root));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("coreset ratio 0 is invalid"),
        "{}",
        stderr(&out)
    );
    // One reweighting neighbour is m* alone and would zero every score.
    let out = run(funad()
        .args([
            "eval",
            "--methods",
            "patchcore",
            "--reweight-neighbours",
            "1",
            "--data",
        ])
        .arg(root));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("reweighting neighbours 1 is invalid"),
        "{}",
        stderr(&out)
    );
    // Asking for more defects than exist is an error that names the counts.
    let out = run(funad()
        .args(["eval", "--baseline-only", "--ratio", "1.0", "--data"])
        .arg(root));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("needs 30 defect images"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn cnn_backbone_trains_and_scores() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train");
    link_images("train/good", 30, &train);
    link_images("test/crack", 2, &train);
    let weights = repo_root().join("weights/efficientnet_lite0.safetensors");
    let model = dir.path().join("model.funad");
    let out = run(funad()
        .args(["train", "--epochs", "3", "--backbone"])
        .arg(&weights)
        .arg("-o")
        .arg(&model)
        .arg(&train));
    assert!(out.status.success(), "train failed: {}", stderr(&out));

    let test = dir.path().join("test");
    let good = link_images("test/good", 6, &test);
    link_images("test/blowhole", 3, &test);
    link_images("test/fray", 3, &test);
    let out = run(funad().args(["score", "-m"]).arg(&model).arg(&test));
    assert!(out.status.success(), "score failed: {}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12);
    let good_names: Vec<String> = good
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let (mut good_sum, mut bad_sum) = (0.0, 0.0);
    for line in &lines {
        let score = line["image_score"].as_f64().unwrap();
        let name = line["path"].as_str().unwrap();
        if good_names.iter().any(|g| name.ends_with(g.as_str())) {
            good_sum += score;
        } else {
            bad_sum += score;
        }
    }
    assert!(
        bad_sum > good_sum,
        "defects score {bad_sum} in total, good images {good_sum}"
    );

    // A CNN has no CLS token, and the error names the option to drop.
    let out = run(funad()
        .args(["train", "--epochs", "1", "--with-cls", "--backbone"])
        .arg(&weights)
        .arg("-o")
        .arg(dir.path().join("never.funad"))
        .arg(&train));
    assert!(!out.status.success());
    let msg = stderr(&out);
    assert!(
        msg.contains("no CLS token") && msg.contains("--with-cls"),
        "{msg}"
    );
    assert!(!dir.path().join("never.funad").exists());
}
