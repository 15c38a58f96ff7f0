//! Helpers for the funadtrain tests: frames from MTD, bus waits and tmpfs mounts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common;

/// Side of the square test frames.
pub const SIDE: u32 = 224;

/// Builds a `SIDE`×`SIDE` RGB buffer of an image file, with PTS `index` × 100 ms.
pub fn rgb_buffer(path: &Path, index: u64) -> gst::Buffer {
    let (mut buffer, _) = common::frame(
        &common::load(path),
        gst_video::VideoFormat::Rgb,
        Some((SIDE, SIDE)),
    );
    {
        let b = buffer.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_mseconds(100 * index));
        b.set_duration(gst::ClockTime::from_mseconds(100));
    }
    buffer
}

pub fn rgb_caps() -> gst::Caps {
    gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, SIDE, SIDE)
        .fps(gst::Fraction::new(10, 1))
        .build()
        .unwrap()
        .to_caps()
        .unwrap()
}

/// Writes the images as `SIDE`×`SIDE` PNG files `00000.png`, `00001.png`, …
/// into a new folder under `parent`, for multifilesrc.
pub fn png_sequence(parent: &Path, name: &str, files: &[PathBuf]) -> PathBuf {
    let dir = parent.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (i, file) in files.iter().enumerate() {
        common::load(file)
            .resize_exact(SIDE, SIDE, image::imageops::FilterType::Triangle)
            .to_rgb8()
            .save(dir.join(format!("{i:05}.png")))
            .unwrap();
    }
    dir
}

/// Creates a fresh folder under the scratch folder.
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = common::scratch_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Messages that [`wait_for`] popped besides the one it waited for.
#[derive(Debug, Default)]
pub struct Seen {
    pub warnings: Vec<String>,
    /// Element messages, in order.
    pub messages: Vec<gst::Structure>,
}

/// Waits for an element message named `name` that satisfies `accept`,
/// failing on pipeline errors. Everything else it pops goes into `seen`.
pub fn wait_for(
    bus: &gst::Bus,
    name: &str,
    timeout: Duration,
    seen: &mut Seen,
    mut accept: impl FnMut(&gst::StructureRef) -> bool,
) -> gst::Structure {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {name} message within {timeout:?}; saw {seen:?}"
        );
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(left.as_millis() as u64))
        else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Error(e) => {
                panic!(
                    "pipeline error while waiting for {name}: {} ({:?})",
                    e.error(),
                    e.debug()
                )
            }
            gst::MessageView::Warning(w) => seen.warnings.push(w.error().to_string()),
            gst::MessageView::Element(e) => {
                let s = e.structure().unwrap();
                if s.name() == name && accept(s) {
                    return s.to_owned();
                }
                seen.messages.push(s.to_owned());
            }
            _ => {}
        }
    }
}

/// A tmpfs mounted for one test and unmounted when dropped.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` at a fresh folder. The fault tests need
    /// root for this; they fail with this message otherwise.
    pub fn mount(name: &str, bytes: u64) -> Tmpfs {
        let path = fresh_dir(name);
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tmpfs")
            .arg(&path)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs at {} failed: the disk-full and read-only tests need root",
            path.display()
        );
        Tmpfs { path }
    }

    /// Makes the mount read-only.
    pub fn remount_read_only(&self) {
        let status = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.path)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "remounting {} read-only failed",
            self.path.display()
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// Bytes free on the file system of `path`.
pub fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .expect("df runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df prints the free bytes")
}
