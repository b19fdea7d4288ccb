//! Lifecycle events leaving the outbox: webhook deliveries (`delivery`).

pub mod delivery;
