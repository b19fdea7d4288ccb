//! One integration-test binary: the real server on port 0, real databases, real gRPC clients.

mod helpers;

mod admin_auth;
mod admin_keys;
mod check;
mod cli;
mod console;
mod credits;
mod envoy;
mod events;
mod faults;
mod fleet;
mod gateways;
mod hostile_input;
mod hot_path;
mod import;
mod key_separation;
mod leaks;
mod metadata_suspension;
mod ops;
mod policy;
mod secrets;
mod signing;
mod store_conformance;
mod tenant_isolation;
mod token_lifecycle;
mod usage;
mod webhooks;
