//! End-to-end tests: real components, real HTTP on loopback, the embedded default.

mod browser;
mod cache;
mod admin;
mod aws_backends;
mod conformance;
mod config_secrets;
mod debug_events;
mod egress;
mod deploy;
mod faults;
mod gateway;
mod host_api;
mod relay;
mod runner_api;
mod storage;
mod ui;
