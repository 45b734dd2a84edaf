//! kelp-runtime: everything Kelp's three functions and the `kelp` CLI share.
//!
//! A tenant request flows gateway → auth → stores (install, version) → executor → cache
//! (engine, artifacts) → host capabilities (storage, secrets, egress, debug, business).
//! See docs/overview.md for the whole picture.
#![deny(missing_docs)]

pub mod admin;
pub mod auth;
pub mod aws;
pub mod bindings;
pub mod blobs;
pub mod body;
pub mod business;
pub mod cache;
pub mod components;
pub mod config;
pub mod debug;
pub mod devtools;
pub mod egress;
pub mod engine;
pub mod error;
pub mod executor;
mod fsutil;
pub mod gateway;
pub mod host;
pub mod lambda;
pub mod local;
pub mod manifest;
pub mod platform;
pub mod publish;
pub mod relay;
pub mod secrets;
pub mod storage;
pub mod stores;
pub mod telemetry;
pub mod ui;

pub use config::Settings;
pub use platform::Platform;
