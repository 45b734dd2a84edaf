//! kelp-runtime: everything Kelp's three functions and the `kelp` CLI share.
//!
//! A tenant request flows gateway → auth → stores (install, version) → executor → cache
//! (engine, artifacts) → host capabilities (storage, secrets, egress, debug, business).
//! See docs/overview.md for the whole picture.
#![deny(missing_docs)]

pub mod admin;
pub mod alga_bundles;
pub mod alga_host;
pub mod artifact_fetch;
pub mod audit_log;
pub mod auth;
pub mod aws;
pub mod bindings;
pub mod blobs;
pub mod bundle;
pub mod business;
pub mod cache;
pub mod call_limits;
pub mod compile_cache;
pub mod components;
pub mod config;
pub mod context;
pub mod debug;
pub mod devtools;
pub mod egress;
pub mod engine;
pub mod executor;
mod fsutil;
pub mod gateway;
pub mod host;
pub mod http;
pub mod idempotency;
pub mod ids;
pub mod install_config;
pub mod installs;
pub mod limits;
pub mod local;
pub mod manifest;
pub mod metrics;
pub mod plans;
pub mod platform;
pub mod publish;
pub mod ratelimit;
pub mod redact;
pub mod relay;
pub mod runtime;
pub mod secrets;
pub mod storage;
pub mod stores;
pub mod telemetry;
pub mod ui;
pub mod ui_assets;
pub mod usage;
pub mod wiring;

pub use config::Settings;
pub use platform::Platform;
