//! The gRPC edge: the only layer that sees generated proto types or builds a `tonic::Status`.

pub mod admin;
pub mod auth;
pub mod authorization;
pub mod check_answer;
pub mod codec;
pub mod convert;
pub mod envoy;
pub mod status;
