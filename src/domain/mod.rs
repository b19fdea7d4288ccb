//! Pure rules: no I/O, no proto, no async. Everything here is unit-tested beside its code.

pub mod admin_key;
pub mod credits;
pub mod decision;
pub mod event;
pub mod fields;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod http;
pub mod leak;
pub mod metadata;
pub mod model;
pub mod network;
pub mod permission;
pub mod policy;
pub mod report_handle;
pub mod route;
pub mod session;
pub mod signature;
pub mod token;
pub mod usage;
pub mod webhook;
