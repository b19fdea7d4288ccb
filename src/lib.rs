//! Tessera: API-token authorization on every request.
//!
//! Layers, each depending only on those below it (docs/architecture.md):
//! - [`gateway`]: the mapping every gateway shares (Envoy's ext_authz, HTTP forward-auth):
//!   request → `CheckRequest`, decision → HTTP answer; [`http`]: the HTTP listener
//!   (`TESSERA_HTTP_LISTEN`, an axum router with its limits, drain and TLS) and forward-auth for
//!   nginx, Caddy, Traefik. Same layer as `grpc`.
//! - [`grpc`]: tonic services — `authorization` (AuthorizationService), `admin`
//!   (TokenAdminService), `envoy` (ext_authz v3) —, `auth` (admin-key authentication and the
//!   right each RPC needs, with the keys a replica holds), `convert` (proto ↔
//!   domain, once at the edge) and `status`, the one place errors become `tonic::Status`.
//! - [`authz`]: the hot path, `Authorizer::check`: `cache` (credentials, unknown tokens and API
//!   status in memory, weighed in bytes), `fill` (a load in flight loses to an invalidation),
//!   `intern` (the parts cached credentials share, held once), `rate_limit` (per-token and
//!   per-owner GCRA, per replica or the fleet's) and `replay` (the signatures seen, per-token
//!   partitions inside one bound).
//! - [`admin`]: the token lifecycle rules, per-owner limits, audit events; `keys` (admin keys as
//!   scoped credentials) and `rights` (the one table of TokenAdminService RPC → right).
//! - [`usage`]: write-behind usage statistics: `recorder` (the Check path's buffer and its
//!   flushes), ListUsage, `user_agent` and `geoip` (what a last use is shown with).
//! - [`events`]: lifecycle events beyond the store's outbox writes: expiry notices, retention,
//!   WatchEvents streams.
//! - [`fleet`]: state shared by all replicas on Redis: fleet-wide rate limits, replay guard,
//!   live replica count.
//! - [`store`]: the `Store` trait with its Postgres and SQLite backends, the call deadline every
//!   store call ends by, the store error count, and `invalidation` (what replicas tell each
//!   other).
//! - [`domain`]: pure rules, no I/O: token format, fields, permissions and routes, CIDRs,
//!   request targets (`http`), signatures, report handles, usage shapes and the decision order.
//!
//! [`app`] builds the whole server from a [`config::Config`] (the raw [`config::Settings`] parsed
//! once) and runs its lifecycle (the gate every call passes, health, draining, limits, the port
//! file of bound addresses); [`tls`], [`metrics`] and [`telemetry`] are its TLS listener,
//! Prometheus exporter and logs/traces. The admin client lives in the binary (`src/cli`), the
//! load generator in its own crate (`bench/`).

pub mod admin;
pub mod app;
pub mod authz;
pub mod config;
pub mod console;
pub mod domain;
pub mod events;
pub mod fleet;
pub mod gateway;
pub mod grpc;
pub mod http;
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
