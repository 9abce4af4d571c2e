//! One module per CLI command: reads inputs, calls the library, prints.

pub mod assign;
pub mod bench;
pub mod bench_http;
pub mod bench_label;
pub mod bench_site;
pub mod bench_webhook;
pub mod bench_write;
pub mod build_site;
pub mod check;
pub mod check_labels;
pub mod cite;
pub mod diff;
pub mod http_probe;
pub mod interchange;
pub mod log;
pub mod near_duplicates;
pub mod new;
pub mod process_memory;
pub mod prompt;
pub mod registry_files;
pub mod review;
pub mod serve;
pub mod session;
pub mod sync;
pub mod token;
pub mod vectors;
