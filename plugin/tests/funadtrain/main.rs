//! Integration tests of `funadtrain` and of model hot swap in `funadscore`,
//! in one binary so that the test model is trained once.

#[path = "../funadscore/common.rs"]
#[allow(dead_code)]
mod common;
mod element;
mod faults;
mod live;
mod reload;
mod support;
