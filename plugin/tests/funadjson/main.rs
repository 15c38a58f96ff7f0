//! Integration tests of the `funadjson` element, in one binary so that the
//! test model is trained once.

// The set-up shared with the funadscore tests; this binary uses part of it.
#[allow(dead_code)]
#[path = "../funadscore/common.rs"]
mod common;

mod harness;
mod lines;
mod modbus;
mod pipeline;
mod scripts;
