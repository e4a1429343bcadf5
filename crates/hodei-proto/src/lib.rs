//! The gRPC protocol between the Hodei server and its workers (`hodei.worker.v1`).
//!
//! **Architecture Invariant:** only this crate knows protobuf; it holds no logic.

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("hodei.worker.v1");
}

pub use v1::*;
