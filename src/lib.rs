//! The persona registry: one library behind the `personas` binary.
#![deny(unsafe_code)]

pub mod access;
pub mod allocator;
pub mod citations;
pub mod cli;
pub mod commands;
pub mod config;
pub mod export;
pub mod git;
pub mod heap;
pub mod interchange;
pub mod persona;
pub mod search;
pub mod store;
pub mod sync;
pub mod synthetic;
pub mod vectors;
pub mod web;
pub mod webhooks;
