//! Integration tests of the `funadscore` element, in one binary so that the
//! test model is trained once.

mod common;
mod errors;
mod harness;
mod meta;
mod pipeline;
mod python;
