//! Tessera: API-token authorization on every request.
//!
//! Layers, each depending only on those below it:
//! - [`grpc`]: tonic services (AuthorizationService, TokenAdminService), admin-key auth, proto ↔
//!   domain conversion, and the one place errors become `tonic::Status`.
//! - [`authz`]: the hot path, `Authorizer::check`.
//! - [`admin`]: the token lifecycle rules, per-owner limits, audit events.
//! - [`usage`]: write-behind usage statistics: the Check path's recorder, flushes, ListUsage.
//! - [`store`]: the `Store` trait with its Postgres and SQLite backends, the call deadline every
//!   store call ends by, and the store error count.
//! - [`domain`]: pure rules (token format, permissions, CIDRs, the decision order); no I/O.
//!
//! [`app`] builds the whole server from a [`config::Config`] (the raw [`config::Settings`] parsed
//! once) and runs its lifecycle (health, draining, limits, the port file of bound addresses);
//! [`tls`], [`metrics`] and [`telemetry`] are its TLS listener, Prometheus exporter and
//! logs/traces. The admin client lives in the binary (`src/cli`), the load generator in its own
//! crate (`bench/`).

pub mod admin;
pub mod app;
pub mod authz;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod metrics;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod usage;

pub mod proto {
    tonic::include_proto!("tessera.v1");

    /// The encoded descriptor set of `proto/`, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("tessera_descriptor");
}
