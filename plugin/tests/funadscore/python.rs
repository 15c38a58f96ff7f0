//! The `funad-result` messages read from Python through PyGObject, by
//! `plugin/tests/python/bus_messages.py` with Debian's system interpreter.

use std::path::Path;

use crate::common::{self, gst_tool, model, mtd_images, spread};

/// Debian's interpreter, which has the `gi` module of python3-gst-1.0. A
/// `python3` earlier in PATH (pyenv, a venv) may lack it.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

#[test]
fn python_reads_bus_messages() {
    assert!(
        Path::new(SYSTEM_PYTHON).is_file(),
        "{SYSTEM_PYTHON} not found; run scripts/setup.sh to install python3-gst-1.0"
    );
    let mut images = spread(&mtd_images("test/good"), 3);
    images.extend(spread(&mtd_images("test/crack"), 2));
    images.extend(spread(&mtd_images("test/blowhole"), 2));
    let script = common::repo_root().join("plugin/tests/python/bus_messages.py");

    let output = gst_tool(SYSTEM_PYTHON)
        .arg(&script)
        .arg(&model().path)
        .args(&images)
        .output()
        .expect("the system Python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} failed:\n{stdout}\n{stderr}",
        script.display()
    );
    let expected = format!("all checks passed on {} frames", 2 * images.len());
    assert!(stdout.contains(&expected), "no `{expected}` in:\n{stdout}");
}
