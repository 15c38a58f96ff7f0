//! The Modbus TCP bridge `pipelines/modbus_bridge.py` (pymodbus) read by
//! mbpoll (libmodbus), a client of another implementation, on loopback.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gst::prelude::*;
use serde_json::Value;

use crate::common::{self, model, mtd_images, spread};
use crate::lines::parse_line;

// Register addresses of the bridge, from its register map.
const STATUS: usize = 0;
const INSPECTION_ID: usize = 1;
const VERDICT: usize = 2;
const SCORE: usize = 3;
const THRESHOLD: usize = 4;
const MODEL_VERSION: usize = 5;
const SEQUENCE: usize = 7;
const REGION_COUNT: usize = 9;
const REGIONS_DROPPED: usize = 10;
const PROCESSING_TIME_US: usize = 11;
const QUEUED: usize = 13;
const RESULTS_DROPPED: usize = 14;
const INVALID_LINES: usize = 15;
const REGIONS: usize = 16;
const BLOCK_SIZE: u16 = 36;
const ACKNOWLEDGE: u16 = 100;

const STATUS_VALID: u16 = 1;
const STATUS_PASS: u16 = 2;
const STATUS_FAIL: u16 = 4;
const STATUS_CONNECTED: u16 = 16;

/// The bridge process, ended when dropped. Its log goes to a file that
/// failures print.
struct BridgeProcess {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl BridgeProcess {
    fn start(args: &[&str], stdin: Stdio) -> Self {
        let python = common::repo_root().join(".venv/bin/python");
        assert!(
            python.is_file(),
            "{} not found; run scripts/setup.sh",
            python.display()
        );
        let port = free_port();
        let log = common::scratch_dir().join(format!("modbus-bridge-{port}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(python)
            .arg(common::repo_root().join("pipelines/modbus_bridge.py"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdin(stdin)
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("the bridge starts");
        let bridge = BridgeProcess { child, log, port };
        bridge.wait_until(Duration::from_secs(30), "the Modbus server answers", |_| {
            true
        });
        bridge
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Reads the result block from input registers (`true`) or holding registers.
    fn read_block(&self, input_registers: bool) -> Result<Vec<u16>, String> {
        mbpoll_read(self.port, input_registers, 0, BLOCK_SIZE)
    }

    /// Polls the input registers until `done` holds, and returns them.
    fn wait_until(&self, timeout: Duration, what: &str, done: impl Fn(&[u16]) -> bool) -> Vec<u16> {
        let start = Instant::now();
        let mut last = Err("no read yet".to_string());
        while start.elapsed() < timeout {
            last = self.read_block(true);
            if let Ok(registers) = &last {
                if done(registers) {
                    return registers.clone();
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out after {timeout:?} waiting until {what}; last read {last:?}; bridge log:\n{}",
            self.log_text()
        );
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Returns a loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a loopback port is free")
        .port()
}

fn mbpoll(port: u16, args: &[String]) -> Result<String, String> {
    let output = Command::new("mbpoll")
        .args(["-m", "tcp", "-0", "-1", "-o", "2", "-p", &port.to_string()])
        .args(args)
        .output()
        .map_err(|e| format!("mbpoll cannot run ({e}); run scripts/setup.sh to install it"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "mbpoll {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Reads `count` 16-bit registers from `start` with mbpoll, which prints one
/// `[address]: value` line per register, and the signed value in brackets
/// after values from 32768 on.
fn mbpoll_read(
    port: u16,
    input_registers: bool,
    start: u16,
    count: u16,
) -> Result<Vec<u16>, String> {
    let table = if input_registers { "3" } else { "4" };
    let args = [
        "-t",
        table,
        "-r",
        &start.to_string(),
        "-c",
        &count.to_string(),
        "127.0.0.1",
    ]
    .map(String::from);
    let stdout = mbpoll(port, &args)?;
    let values: Vec<u16> = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix('['))
        .filter_map(|l| l.split_once("]:"))
        .map(|(_, value)| value.split_whitespace().next().unwrap_or("").parse::<u16>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot parse mbpoll output ({e}):\n{stdout}"))?;
    if values.len() != count as usize {
        return Err(format!(
            "mbpoll printed {} of {count} registers:\n{stdout}",
            values.len()
        ));
    }
    Ok(values)
}

fn mbpoll_write(port: u16, address: u16, value: u16) -> Result<String, String> {
    let args = [
        "-t",
        "4",
        "-r",
        &address.to_string(),
        "127.0.0.1",
        &value.to_string(),
    ]
    .map(String::from);
    mbpoll(port, &args)
}

fn word32(registers: &[u16], address: usize) -> u32 {
    (registers[address] as u32) << 16 | registers[address + 1] as u32
}

fn scaled(value: f32) -> u16 {
    (value as f64 * 10000.0).round_ties_even() as u16
}

/// Creates a folder of links `000.jpg`, `001.jpg`, … to good and defective
/// MTD images, for multifilesrc.
fn numbered_images(count: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut files = spread(&mtd_images("test/good"), count / 2);
    files.extend(spread(&mtd_images("test/blowhole"), count - count / 2));
    for (i, file) in files.iter().enumerate() {
        std::os::unix::fs::symlink(file, dir.path().join(format!("{i:03}.jpg"))).unwrap();
    }
    dir
}

fn scoring_pipeline(images: &Path, count: usize, sink: &str) -> gst::Element {
    common::init();
    let description = format!(
        "multifilesrc location={}/%03d.jpg index=0 stop-index={} caps=image/jpeg,framerate=5/1 \
         ! jpegdec ! videoconvert ! funadscore model={} ! funadjson ! {sink}",
        images.display(),
        count - 1,
        model().path.display()
    );
    gst::parse::launch(&description).unwrap()
}

/// Plays `pipeline` to EOS and returns the `funad-result` messages of funadscore.
fn play_to_eos(pipeline: &gst::Element) -> Vec<gstfunad::FunadResult> {
    let bus = pipeline.bus().unwrap();
    pipeline
        .set_state(gst::State::Playing)
        .expect("pipeline plays");
    let mut results = Vec::new();
    loop {
        let msg = bus
            .timed_pop(gst::ClockTime::from_seconds(120))
            .expect("no message for 120 s");
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                pipeline.set_state(gst::State::Null).unwrap();
                panic!("pipeline error: {} ({:?})", e.error(), e.debug());
            }
            gst::MessageView::Element(e) => {
                let s = e.structure().unwrap();
                if s.name() == gstfunad::message::RESULT_STRUCTURE_NAME {
                    let (result, _) = gstfunad::message::parse_result_structure(s).unwrap();
                    results.push(result);
                }
            }
            _ => {}
        }
    }
    results
}

/// Checks the registers of one shown result against funadscore's result.
fn check_registers(registers: &[u16], result: &gstfunad::FunadResult, line_sequence: u32) {
    let (code, bit) = match result.verdict {
        gstfunad::FunadVerdict::Ok => (1, STATUS_PASS),
        gstfunad::FunadVerdict::Ng => (2, STATUS_FAIL),
        gstfunad::FunadVerdict::NoModel => (3, 8),
    };
    let frame = result.sequence;

    assert_eq!(registers[VERDICT], code, "verdict code of frame {frame}");
    assert_ne!(
        registers[STATUS] & bit,
        0,
        "status bit of {} in frame {frame}",
        result.verdict
    );
    assert_eq!(
        registers[SCORE],
        scaled(result.score),
        "score of frame {frame}"
    );
    assert_eq!(
        registers[THRESHOLD],
        scaled(result.threshold),
        "threshold of frame {frame}"
    );
    assert_eq!(
        word32(registers, MODEL_VERSION) as u64,
        result.model_version
    );
    assert_eq!(
        word32(registers, SEQUENCE),
        line_sequence,
        "sequence of frame {frame}"
    );

    assert_eq!(registers[REGION_COUNT] as usize, result.regions.len());
    assert_eq!(registers[REGIONS_DROPPED] as u32, result.regions_dropped);
    assert_eq!(
        word32(registers, PROCESSING_TIME_US) as u64,
        result.processing_time_ns / 1000,
        "processing time of frame {frame}"
    );

    for slot in 0..4 {
        let words = &registers[REGIONS + 5 * slot..REGIONS + 5 * slot + 5];
        match result.regions.get(slot) {
            Some(r) => assert_eq!(
                words,
                [
                    r.x as u16,
                    r.y as u16,
                    r.width as u16,
                    r.height as u16,
                    scaled(r.peak_score)
                ],
                "region {slot} of frame {frame}"
            ),
            None => assert_eq!(words, [0; 5], "empty region slot {slot} of frame {frame}"),
        }
    }
}

#[test]
fn plc_reads_verdicts_in_order() {
    const FRAMES: usize = 8;
    let images = numbered_images(FRAMES);
    let pipeline = scoring_pipeline(
        images.path(),
        FRAMES,
        "tcpserversink name=tcp host=127.0.0.1 port=0 sync=false",
    );
    // READY opens the server socket, so the bridge can connect before the
    // first line; tcpserversink sends a client only what follows its connection.
    pipeline
        .set_state(gst::State::Ready)
        .expect("pipeline is ready");
    let tcp = pipeline
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .by_name("tcp")
        .unwrap();
    let line_port = tcp.property::<i32>("current-port");
    let bridge = BridgeProcess::start(
        &[
            "--connect",
            &format!("127.0.0.1:{line_port}"),
            "--handshake",
            "--queue",
            "16",
        ],
        Stdio::null(),
    );
    bridge.wait_until(Duration::from_secs(30), "the bridge connects", |r| {
        r[STATUS] & STATUS_CONNECTED != 0
    });
    let results = play_to_eos(&pipeline);
    assert_eq!(results.len(), FRAMES, "one funad-result message per frame");

    // The PLC side: wait for a valid result, check it, acknowledge it.
    let mut verdicts = Vec::new();
    for (k, result) in results.iter().enumerate() {
        let id = k as u16 + 1;
        let registers =
            bridge.wait_until(Duration::from_secs(30), &format!("inspection {id}"), |r| {
                r[STATUS] & STATUS_VALID != 0 && r[INSPECTION_ID] == id
            });
        check_registers(&registers, result, k as u32);
        verdicts.push(result.verdict.as_str());

        if k == 0 {
            let holding = bridge.read_block(false).expect("holding registers read");
            assert_eq!(
                holding, registers,
                "holding registers mirror the input registers"
            );
            let error = mbpoll_write(bridge.port, SCORE as u16, 77).expect_err("write to a result");
            assert!(error.contains("Illegal data address"), "{error}");
            mbpoll_write(bridge.port, ACKNOWLEDGE, id + 5)
                .expect("a wrong acknowledge is accepted");
            let after = bridge.read_block(true).unwrap();
            assert_eq!(after[INSPECTION_ID], id, "a wrong acknowledge moved on");
            assert_ne!(after[STATUS] & STATUS_VALID, 0);
        }
        mbpoll_write(bridge.port, ACKNOWLEDGE, id).expect("acknowledge writes");
    }
    eprintln!("verdicts read over Modbus: {verdicts:?}");

    let last = bridge.wait_until(
        Duration::from_secs(10),
        "the last result is released",
        |r| r[STATUS] & STATUS_VALID == 0,
    );
    assert_eq!(last[INSPECTION_ID], FRAMES as u16);
    assert_eq!(last[QUEUED], 0);
    assert_eq!(
        last[RESULTS_DROPPED],
        0,
        "bridge log:\n{}",
        bridge.log_text()
    );
    assert_eq!(last[INVALID_LINES], 0, "bridge log:\n{}", bridge.log_text());
    pipeline.set_state(gst::State::Null).unwrap();
}

#[test]
fn stdin_bridge_shows_latest_line() {
    const FRAMES: usize = 3;
    let images = numbered_images(FRAMES);
    let out = tempfile::tempdir().unwrap();
    let lines_path = out.path().join("results.jsonl");
    let pipeline = scoring_pipeline(
        images.path(),
        FRAMES,
        &format!("filesink location={}", lines_path.display()),
    );
    let results = play_to_eos(&pipeline);
    pipeline.set_state(gst::State::Null).unwrap();
    let text = std::fs::read_to_string(&lines_path).unwrap();
    let lines: Vec<Value> = text
        .split_inclusive('\n')
        .map(|l| parse_line(l.as_bytes()))
        .collect();
    assert_eq!(lines.len(), FRAMES);

    // Real lines, then one that is not JSON, one of another schema and one
    // with a NaN score (which Python's json module reads).
    let input = out.path().join("input.jsonl");
    let mut old_schema = lines[0].clone();
    old_schema["schema_version"] = 1.into();
    let mut nan = lines[0].clone();
    nan["score"] = 0.123456.into();
    let nan = nan.to_string().replace("0.123456", "NaN");
    std::fs::write(&input, format!("{text}not json\n{old_schema}\n{nan}\n")).unwrap();
    let bridge = BridgeProcess::start(&[], Stdio::from(std::fs::File::open(&input).unwrap()));

    let registers = bridge.wait_until(Duration::from_secs(30), "all lines are read", |r| {
        r[INVALID_LINES] == 3
    });
    assert_eq!(
        registers[INSPECTION_ID], FRAMES as u16,
        "one inspection per valid line"
    );
    assert_ne!(registers[STATUS] & STATUS_VALID, 0);
    assert_eq!(
        registers[STATUS] & STATUS_CONNECTED,
        0,
        "standard input has ended"
    );
    check_registers(&registers, &results[FRAMES - 1], FRAMES as u32 - 1);

    // Without --handshake an acknowledge changes nothing.
    mbpoll_write(bridge.port, ACKNOWLEDGE, FRAMES as u16).unwrap();
    assert_eq!(bridge.read_block(true).unwrap(), registers);
    let log = bridge.log_text();
    assert!(
        log.contains("schema_version 1 is not 2"),
        "bridge log:\n{log}"
    );
    assert!(log.contains("not JSON"), "bridge log:\n{log}");
    assert!(log.contains("not a finite number"), "bridge log:\n{log}");
}
