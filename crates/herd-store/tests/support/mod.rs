//! Test harness: the conformance cases in [`cases`], and real redis-server processes from
//! `herd_store::testkit`.

#![allow(dead_code, unreachable_pub)]

pub mod cancel_cases;
pub mod cases;
pub mod queue_cases;

pub use herd_store::testkit::*;
