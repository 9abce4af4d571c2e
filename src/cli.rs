//! Command-line interface: argument parsing and exit codes. Each command's
//! work lives in `commands/`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::commands;
use crate::persona::OutputFormat;

#[derive(Debug, Parser)]
#[command(name = "personas", version, about = "A git-versioned registry of AI personas")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate registry files; every error is reported as file:line:col.
    Check {
        /// Registry directories or single files (default: `registry`).
        paths: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "human")]
        format: OutputFormat,
    },
    /// Create a new persona file with a fresh id, ready to edit.
    New {
        /// The persona's display name, e.g. "Grace Hopper".
        name: String,
        /// File name / URL name; derived from the name when left out.
        #[arg(long)]
        slug: Option<String>,
        /// The registry directory.
        #[arg(long, default_value = "registry")]
        registry: PathBuf,
        /// Mark the persona as a real person (beliefs then need sources).
        #[arg(long)]
        real: bool,
    },
    /// Show each persona's version history, read straight from git.
    Log {
        /// Only this persona (current or former slug, or id).
        slug: Option<String>,
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Branch or revision whose first-parent history is read.
        #[arg(long, default_value = "HEAD")]
        branch: String,
        #[arg(long, value_enum, default_value = "text")]
        format: LogFormat,
    },
    /// Semantic diff of every persona a revision range touches (`main..feature`).
    Diff {
        /// `FROM..TO`; an empty side means HEAD.
        range: String,
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        format: DiffFormat,
    },
    /// Measure the registry against references taken in the same run.
    Bench {
        #[command(subcommand)]
        target: BenchTarget,
    },
    /// Project the branch's history into PostgreSQL: every revision of every persona.
    Sync {
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[arg(long, default_value = "main")]
        branch: String,
        /// Sync up to the current tip and exit (the default).
        #[arg(long, conflicts_with = "watch")]
        once: bool,
        /// Keep running and project new commits as they land.
        #[arg(long)]
        watch: bool,
        /// Wait for another running sync instead of exiting.
        #[arg(long)]
        wait: bool,
        /// Follow a hosted repository: fetch the branch from this URL into a
        /// mirror under the data directory and sync from it.
        #[arg(long, env = "PERSONAS_REMOTE")]
        remote: Option<String>,
        /// Seconds between fetches of --remote in --watch mode.
        #[arg(long, default_value = "10", value_parser = parse_seconds)]
        fetch_interval: std::time::Duration,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// Embedding throughput vs. a plain Python onnxruntime loop on the same model and texts.
    Embed {
        #[arg(long, default_value = "512")]
        texts: usize,
        #[arg(long, env = "PERSONAS_EMBED_MODEL_DIR")]
        model_dir: PathBuf,
        /// A Python with onnxruntime, tokenizers and numpy: `$(scripts/bench-python)`.
        #[arg(long, default_value = "python3")]
        python: PathBuf,
    },
    /// Full sync of a generated registry vs. reading its history with git.
    Sync {
        #[arg(long, default_value = "10000")]
        personas: usize,
        /// Versions per persona.
        #[arg(long, default_value = "10")]
        revisions: usize,
        /// Personas one commit adds or edits.
        #[arg(long, default_value = "10")]
        per_commit: usize,
        /// Keep the generated repository and database in this directory.
        #[arg(long)]
        keep: Option<PathBuf>,
        /// An empty database to sync into; by default a managed cluster in a temporary directory.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// PostgreSQL to project into; when unset, a private cluster is run under --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Where the managed PostgreSQL cluster lives (default: <repo>/.personas).
    #[arg(long, env = "PERSONAS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    Text,
    /// For pasting into a pull request review.
    Markdown,
    Json,
}

/// Structured logs on stderr, filtered by `RUST_LOG` (default: warnings, and
/// this crate's own info lines).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,personas=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn parse_seconds(text: &str) -> Result<std::time::Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if seconds.is_finite() && seconds > 0.0 {
        Ok(std::time::Duration::from_secs_f64(seconds))
    } else {
        Err(format!("{text:?}: the interval must be a positive number of seconds"))
    }
}

/// Exit status: 0 clean, 1 validation errors found, 2 usage or I/O error.
pub enum Outcome {
    Clean,
    Invalid,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Invalid) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Check { paths, format } => commands::check::run(&paths, format),
        Command::New {
            name,
            slug,
            registry,
            real,
        } => commands::new::run(&name, slug.as_deref(), &registry, real),
        Command::Log {
            slug,
            repo,
            branch,
            format,
        } => commands::log::run(&repo, &branch, slug.as_deref(), format),
        Command::Diff { range, repo, format } => commands::diff::run(&repo, &range, format),
        Command::Bench {
            target:
                BenchTarget::Embed {
                    texts,
                    model_dir,
                    python,
                },
        } => commands::bench::embed(commands::bench::EmbedBench {
            texts,
            model_dir: &model_dir,
            python: &python,
        }),
        Command::Bench {
            target:
                BenchTarget::Sync {
                    personas,
                    revisions,
                    per_commit,
                    keep,
                    database_url,
                },
        } => commands::bench::sync(commands::bench::SyncBench {
            shape: crate::synthetic::SyntheticRegistry {
                personas,
                revisions,
                personas_per_commit: per_commit,
            },
            keep: keep.as_deref(),
            database_url: database_url.as_deref(),
        }),
        Command::Sync {
            repo,
            branch,
            once: _,
            watch,
            wait,
            remote,
            fetch_interval,
            store,
        } => commands::sync::run(commands::sync::SyncCommand {
            repository: &repo,
            branch: &branch,
            watch,
            wait,
            remote: remote.as_deref(),
            fetch_interval,
            store: &store,
        }),
    }
}
