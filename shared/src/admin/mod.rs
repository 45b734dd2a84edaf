//! Control-plane operations (installs, config, secrets) and, in time, the admin API router.
//! The operations are plain functions over the [`Platform`](crate::Platform) so `kelp up`,
//! the admin API and tests share one implementation of every rule.

pub mod service;
