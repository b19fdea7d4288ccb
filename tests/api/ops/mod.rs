//! Operations: health, lifecycle, limits, metrics, reflection, TLS and traces, against the real
//! server (and, where signals and process exit matter, the real binary). Their helpers are
//! `crate::helpers::ops` and `crate::helpers::process`.

mod bulkhead;
mod health;
mod lifecycle;
mod limits;
mod metrics;
mod port_file;
mod reflection;
mod telemetry;
mod tls;
