//! End-to-end tests: real components, real HTTP on loopback, the embedded default.

mod admin;
mod alga_bundles;
mod alga_callers;
mod alga_host;
mod alga_sdk;
mod architecture;
mod aws_backends;
mod browser;
mod cache;
mod config_secrets;
mod conformance;
mod debug_events;
mod deploy;
mod deploy_settings;
mod egress;
mod faults;
mod gateway;
mod host_api;
mod plans;
mod relay;
mod runner_api;
mod storage;
mod ui;
mod usage;
mod warm_instances;
