//! Command-line interface: argument parsing and exit codes. Each command's
//! work lives in `commands/`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::commands;
use crate::config::{self, Config};
use crate::persona::OutputFormat;
use crate::persona::search_filter::{SearchFilter, TraitRange};

#[derive(Debug, Parser)]
#[command(name = "personas", version, about = "A git-versioned registry of AI personas")]
pub struct Cli {
    /// Configuration file (default: `personas.toml` in the working directory, if present).
    #[arg(long, global = true, env = "PERSONAS_CONFIG")]
    pub config: Option<PathBuf>,
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
    /// Citations: check that each URL source is alive and holds its belief.
    Cite {
        #[command(subcommand)]
        action: CiteAction,
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
    /// Export one version of a persona as a Character Card (V2/V3) or the registry's JSON.
    Export {
        /// Slug (current or former) or id, optionally pinned: `ada-lovelace@3`, `ada-lovelace@sha256:…`.
        persona: String,
        #[arg(long, value_enum)]
        format: commands::interchange::ExportFormat,
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Write here instead of to standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Import Character Cards (JSON or PNG) and seed persona JSON as registry files.
    Import {
        /// Files, or directories whose *.json and *.png files are all imported.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// File name / URL name for the persona (only with one file).
        #[arg(long)]
        slug: Option<String>,
        /// The registry directory.
        #[arg(long, default_value = "registry")]
        registry: PathBuf,
        /// Overwrite an existing persona file of the same slug.
        #[arg(long)]
        force: bool,
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
    /// Render the system prompt for a persona (and mode, and profile) from the registry's template.
    Prompt {
        /// Slug, former slug or id, with an optional `@pin` (version number, commit, `sha256:…`, label or tag).
        reference: String,
        /// The mode to render (default: the persona's default mode).
        #[arg(long)]
        mode: Option<String>,
        /// Apply a registry profile first.
        #[arg(long)]
        profile: Option<String>,
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Print the whole record (hashes, template commit) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The variant of an experiment a unit is served, from git alone (the same answer as the API's assign).
    Assign {
        /// The experiment's name (`registry/experiments/<name>.toml`).
        experiment: String,
        /// The unit: a user, session or account id.
        unit: String,
        /// Evaluate the experiment and its labels as they stood at this commit (default: HEAD).
        #[arg(long)]
        at: Option<String>,
        /// Include the rendered system prompt.
        #[arg(long)]
        include_prompt: bool,
        #[arg(long, default_value = ".")]
        repo: PathBuf,
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
    /// Review a pull request from git alone: problems, each changed persona's diff and prompt diffs,
    /// policy notes, placeholders left in, and the labels and experiments it affects.
    Review {
        /// `BASE..HEAD`; an empty side means HEAD.
        range: String,
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[arg(long, value_enum, default_value = "markdown")]
        format: ReviewFormat,
    },
    /// Measure the registry against references taken in the same run.
    Bench {
        #[command(subcommand)]
        target: BenchTarget,
    },
    /// Project the branch's history into PostgreSQL: every revision of every persona.
    Sync {
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
        /// Leave the vector index alone (its updates wait in the outbox).
        #[arg(long)]
        no_vectors: bool,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Serve the website and the JSON API (and, on the embedded defaults, sync in-process).
    Serve {
        #[arg(long, default_value = "main")]
        branch: String,
        /// Address to listen on.
        #[arg(long, env = "PERSONAS_LISTEN", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Follow a hosted repository (fetched into a mirror under the data directory).
        #[arg(long, env = "PERSONAS_REMOTE")]
        remote: Option<String>,
        #[arg(long, default_value = "10", value_parser = parse_seconds)]
        fetch_interval: std::time::Duration,
        /// Run the sync in this process (the default without DATABASE_URL).
        #[arg(long, conflicts_with = "no_sync")]
        sync: bool,
        /// Only read the projection; another process runs `personas sync --watch`
        /// (the default with DATABASE_URL).
        #[arg(long)]
        no_sync: bool,
        /// Answers kept in memory between two changes of the projection, at most (MiB of bodies; 0 keeps none).
        #[arg(long, env = "PERSONAS_KEPT_ANSWERS_MIB", default_value = "32")]
        kept_answers_mib: usize,
        #[command(flatten)]
        access: AccessArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Make an API token: prints the token once, and the hash to configure.
    Token {
        #[arg(long)]
        role: crate::access::Role,
        /// The commit author's name for changes made with this token.
        #[arg(long)]
        name: String,
        #[arg(long)]
        email: String,
    },
    /// Write a static copy of the website and the read API (for any static host, or file://).
    BuildSite {
        /// Where the copy goes. A copy made there before by the same program with the same
        /// options is updated in place (only what changed is rendered and rewritten, removed
        /// personas' files are deleted); any other previous copy is replaced.
        #[arg(long)]
        out: PathBuf,
        /// The address the copy will be served from (absolute links in the Atom feed).
        #[arg(long)]
        base_url: Option<String>,
        #[arg(long, default_value = "main")]
        branch: String,
        /// Render the projection as it is, without syncing the repository first.
        #[arg(long, conflicts_with = "preview")]
        no_sync: bool,
        /// A pull request's preview: the site of HEAD with a banner naming HEAD and BASE, the
        /// changed personas first and compare pages from BASE's versions; projected into a
        /// temporary database and index, never the configured ones.
        #[arg(long, value_name = "BASE..HEAD", conflicts_with = "branch")]
        preview: Option<String>,
        /// Render every file through the database reads `serve` makes, one request at a time,
        /// and always in full (slow: for checking that the bulk path renders the same bytes).
        #[arg(long, hide = true)]
        through_database: bool,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Rebuild the vector index from the current versions (e.g. after a model change).
    Reindex {
        /// Drop the collection first (needed when the new model's vectors have another size).
        #[arg(long)]
        recreate: bool,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Find personas: full text by default, by meaning with --semantic, both merged with --hybrid.
    Search {
        query: String,
        #[arg(long, conflicts_with = "hybrid")]
        semantic: bool,
        #[arg(long)]
        hybrid: bool,
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, default_value = "10", value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: u16,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// The personas most like one persona (by the vector index).
    Similar {
        /// Current or former slug, or id.
        persona: String,
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, default_value = "5", value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: u16,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: TargetArgs,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct FilterArgs {
    /// Only personas with this domain.
    #[arg(long)]
    pub domain: Option<String>,
    /// Only personas with this mode enabled.
    #[arg(long)]
    pub mode: Option<String>,
    /// Only real people.
    #[arg(long, conflicts_with = "fictional")]
    pub real: bool,
    /// Only fictional characters.
    #[arg(long)]
    pub fictional: bool,
    /// A trait range, e.g. `ocean.openness=0.6..1` (repeatable).
    #[arg(long = "trait", value_name = "TYPE.NAME=MIN..MAX")]
    pub traits: Vec<TraitRange>,
}

impl FilterArgs {
    pub fn filter(&self) -> SearchFilter {
        SearchFilter {
            domain: self.domain.clone(),
            mode: self.mode.clone(),
            is_real: match (self.real, self.fictional) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            traits: self.traits.clone(),
        }
    }
}

/// Where embeddings come from and where vectors are kept.
#[derive(Debug, Clone, clap::Args)]
pub struct VectorArgs {
    /// The offline embedding model directory (what `scripts/fetch-model` prints).
    #[arg(long, env = "PERSONAS_EMBED_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,
    /// A model to download by name instead, e.g. BGESmallENV15 (builds with `--features online-models`).
    #[arg(long, env = "PERSONAS_EMBED_MODEL")]
    pub model: Option<String>,
    /// The ONNX Runtime library (default: the libonnxruntime.so* in the model directory).
    #[arg(long, env = "PERSONAS_ORT_LIBRARY")]
    pub ort_library: Option<PathBuf>,
    /// How the model's working memory is kept between batches: released (the default: a server
    /// stays small) or arena (kept for reuse: ~25% faster bulk indexing, ~230 MiB more resident).
    #[arg(long, env = "PERSONAS_EMBED_MEMORY")]
    pub embed_memory: Option<crate::vectors::embed::SessionMemory>,
    /// A Qdrant server or cluster (gRPC, e.g. http://qdrant:6334); unset: embedded qdrant-edge.
    #[arg(long, env = "QDRANT_URL")]
    pub qdrant_url: Option<String>,
    #[arg(long, env = "QDRANT_API_KEY", hide_env_values = true)]
    pub qdrant_api_key: Option<String>,
    /// The collection (default: personas).
    #[arg(long, env = "PERSONAS_QDRANT_COLLECTION")]
    pub collection: Option<String>,
}

/// The registry a command works on and where its projection lives.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// The registry's git repository.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub vectors: VectorArgs,
}

impl TargetArgs {
    /// These flags (and their environment variables) as a configuration layer.
    pub fn config(&self) -> Config {
        let (store, vectors) = (self.store.clone(), self.vectors.clone());
        Config {
            database_url: store.database_url,
            data_dir: store.data_dir,
            model_dir: vectors.model_dir,
            model: vectors.model,
            ort_library: vectors.ort_library,
            embed_memory: vectors.embed_memory,
            qdrant_url: vectors.qdrant_url,
            qdrant_api_key: vectors.qdrant_api_key,
            collection: vectors.collection,
            ..Config::default()
        }
    }
}

/// Who may read and write, and where writes go (`personas serve`).
#[derive(Debug, Clone, clap::Args)]
pub struct AccessArgs {
    /// API tokens, one per line or `;`-separated: `ROLE sha256:HASH Name <email>`
    /// (what `personas token` prints). Replaces `[[access.tokens]]` of the file.
    // Parsed after clap: clap repeats a rejected value in its error, and this one holds secrets.
    #[arg(long = "tokens", env = "PERSONAS_TOKENS", hide_env_values = true)]
    pub tokens: Option<String>,
    /// Reads need a token too (any role).
    #[arg(long, env = "PERSONAS_PRIVATE")]
    pub private: Option<bool>,
    /// Commit settings changes on the branch, or on a new `settings/…` branch for review.
    #[arg(long, value_enum, env = "PERSONAS_WRITE_MODE")]
    pub write_mode: Option<config::WriteMode>,
    /// The committer of settings changes, as `Name <email>`.
    #[arg(long, env = "PERSONAS_BOT", value_parser = parse_identity)]
    pub bot: Option<crate::access::Identity>,
}

fn parse_identity(text: &str) -> Result<crate::access::Identity, String> {
    text.parse()
}

impl AccessArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let tokens = self
            .tokens
            .as_deref()
            .map(crate::access::parse_token_list)
            .transpose()
            .map_err(anyhow::Error::msg)?;
        Ok(Config {
            tokens,
            private: self.private,
            write_mode: self.write_mode,
            bot: self.bot.clone(),
            ..Config::default()
        })
    }
}

/// The synthetic registry a benchmark generates.
#[derive(Debug, Clone, clap::Args)]
pub struct ShapeArgs {
    #[arg(long, default_value = "10000")]
    personas: usize,
    /// Versions per persona.
    #[arg(long, default_value = "10")]
    revisions: usize,
    /// Personas one commit adds or edits.
    #[arg(long, default_value = "10")]
    per_commit: usize,
}

impl ShapeArgs {
    fn shape(&self) -> crate::synthetic::SyntheticRegistry {
        crate::synthetic::SyntheticRegistry {
            personas: self.personas,
            revisions: self.revisions,
            personas_per_commit: self.per_commit,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// The server under wrk vs. nginx serving the same bytes (the pinned JSON, the persona page); the database path on a replica that keeps no answers; semantic search latency; RSS.
    Http {
        #[command(flatten)]
        shape: ShapeArgs,
        /// Keep (and reuse) the repository, database and index in this directory.
        #[arg(long)]
        keep: Option<PathBuf>,
        /// Seconds per wrk run.
        #[arg(long, default_value = "10")]
        seconds: u32,
        #[arg(long, default_value = "32")]
        connections: u32,
    },
    /// `PATCH …/settings` on a running server vs. the same change by `git commit`, each until the API shows it.
    Write {
        #[command(flatten)]
        shape: ShapeArgs,
        /// Keep (and reuse) the repository and database in this directory (the bench adds commits).
        #[arg(long)]
        keep: Option<PathBuf>,
        /// Changes made each way.
        #[arg(long, default_value = "50")]
        rounds: usize,
        /// Concurrent writers in the throughput run.
        #[arg(long, default_value = "4")]
        writers: usize,
    },
    /// Everything at once on one server for a while: wrk on pinned and current answers, a git commit every second, PATCH writers, the vector worker; fails on any error answer or lost version.
    Soak {
        #[command(flatten)]
        shape: ShapeArgs,
        /// Keep (and reuse) the repository and database in this directory (the bench adds commits).
        #[arg(long)]
        keep: Option<PathBuf>,
        /// How long (fractions allowed: 0.5 is 30 s).
        #[arg(long, default_value = "10")]
        minutes: f64,
        #[arg(long, default_value = "16")]
        connections: u32,
        /// Concurrent PATCH writers, each on its own persona.
        #[arg(long, default_value = "2")]
        writers: usize,
    },
    /// A commit until its webhook is delivered to a local receiver vs. the same commit until the API shows it.
    Webhook {
        #[command(flatten)]
        shape: ShapeArgs,
        /// Keep (and reuse) the repository and database in this directory (the bench adds commits).
        #[arg(long)]
        keep: Option<PathBuf>,
        /// Commits made, one after another.
        #[arg(long, default_value = "50")]
        rounds: usize,
    },
    /// A label move committed until every replica answers the new version vs. a new version committed the same way.
    Label {
        #[command(flatten)]
        shape: ShapeArgs,
        /// Keep (and reuse) the repository and database in this directory (the bench adds commits).
        #[arg(long)]
        keep: Option<PathBuf>,
        /// Moves made each way, one after another.
        #[arg(long, default_value = "50")]
        rounds: usize,
        /// Replicas (`serve --no-sync`) on the writer's database.
        #[arg(long, default_value = "2")]
        replicas: usize,
    },
    /// `build-site` on a synthetic registry vs. `cp -r` of the files it wrote.
    Site {
        #[command(flatten)]
        shape: ShapeArgs,
        /// Keep (and reuse) the repository, database and index in this directory.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
    /// Indexing a synthetic registry after a full sync vs. the model's forward pass alone.
    Vectors {
        #[command(flatten)]
        shape: ShapeArgs,
        /// Keep (and reuse) the generated repository in this directory.
        #[arg(long)]
        keep: Option<PathBuf>,
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        #[arg(long, env = "PERSONAS_EMBED_MODEL_DIR")]
        model_dir: Option<PathBuf>,
        #[arg(long, env = "PERSONAS_ORT_LIBRARY")]
        ort_library: Option<PathBuf>,
        /// A Python with onnxruntime, tokenizers and numpy (`$(scripts/bench-python)`): it times
        /// the forward pass alone.
        #[arg(long, default_value = "python3")]
        python: PathBuf,
    },
    /// Embedding throughput and memory per session setting vs. a plain Python onnxruntime loop on the same model and texts.
    Embed {
        #[arg(long, default_value = "512")]
        texts: usize,
        #[arg(long, env = "PERSONAS_EMBED_MODEL_DIR")]
        model_dir: PathBuf,
        /// A Python with onnxruntime, tokenizers and numpy: `$(scripts/bench-python)`.
        #[arg(long, default_value = "python3")]
        python: PathBuf,
        /// Session memory modes to compare (released, arena).
        #[arg(long, value_delimiter = ',', default_value = "released,arena")]
        memory: Vec<crate::vectors::embed::SessionMemory>,
        /// Batch sizes to compare.
        #[arg(long, value_delimiter = ',', default_value = "32")]
        batch: Vec<usize>,
        /// Whether ONNX Runtime folds constants (false is what `personas` uses).
        #[arg(long, value_delimiter = ',', default_value = "false,true")]
        constant_folding: Vec<bool>,
        /// Measure the one setting given in this process and print JSON (what the bench runs per setting).
        #[arg(long, hide = true)]
        probe: bool,
    },
    /// Full sync of a generated registry vs. reading its history with git.
    Sync {
        #[command(flatten)]
        shape: ShapeArgs,
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

#[derive(Debug, Subcommand)]
pub enum CiteAction {
    /// Fetch every URL source, search it for its belief, record the outcome in
    /// registry/citations.json and report the citations that do not hold.
    Check {
        /// The registry directory.
        #[arg(long, default_value = "registry")]
        registry: PathBuf,
        /// Report from registry/citations.json alone; fetch nothing.
        #[arg(long)]
        offline: bool,
        /// Seconds a page may take (connecting, then answering).
        #[arg(long, default_value = "10", value_parser = parse_seconds)]
        timeout: std::time::Duration,
        /// Pages larger than this are not read (bytes).
        #[arg(long, default_value = "5000000")]
        max_bytes: usize,
        #[arg(long, value_enum, default_value = "human")]
        format: OutputFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReviewFormat {
    /// For a sticky pull-request comment or a job summary.
    Markdown,
    /// GitHub Actions annotations.
    Github,
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
        // qdrant-edge warns on every start about process-wide flags that only
        // the Qdrant server binary initializes; they say nothing about our data.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,personas=info,qdrant_edge=error"));
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
    if cli.command.is_batch_work() {
        crate::allocator::choose_mimalloc_for_batch_work();
    }
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

impl Command {
    /// Commands that run through a large amount of work and exit, whose heap
    /// is better served by mimalloc (see [`crate::allocator`]). The long-lived
    /// `serve` and `sync --watch`, and the benches of what a server does,
    /// keep glibc's malloc.
    fn is_batch_work(&self) -> bool {
        match self {
            Command::Check { .. } | Command::Review { .. } | Command::BuildSite { .. } | Command::Reindex { .. } => {
                true
            }
            Command::Sync { watch, .. } => !watch,
            Command::Bench {
                target: BenchTarget::Sync { .. },
            } => true,
            _ => false,
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    // Flags and environment first, then the file.
    let layered = |target: &TargetArgs| -> anyhow::Result<Config> {
        Ok(target.config().or(config::load(cli.config.as_deref())?))
    };
    match &cli.command {
        Command::Check { paths, format } => commands::check::run(paths, *format),
        Command::Cite {
            action:
                CiteAction::Check {
                    registry,
                    offline,
                    timeout,
                    max_bytes,
                    format,
                },
        } => commands::cite::run(commands::cite::CiteCheck {
            registry,
            offline: *offline,
            timeout: *timeout,
            max_bytes: *max_bytes,
            format: *format,
        }),
        Command::New {
            name,
            slug,
            registry,
            real,
        } => commands::new::run(name, slug.as_deref(), registry, *real),
        Command::Export {
            persona,
            format,
            repo,
            out,
        } => commands::interchange::export(commands::interchange::ExportCommand {
            reference: persona,
            format: *format,
            repository: repo,
            out: out.as_deref(),
        }),
        Command::Import {
            files,
            slug,
            registry,
            force,
        } => commands::interchange::import(commands::interchange::ImportCommand {
            inputs: files,
            slug: slug.as_deref(),
            registry,
            force: *force,
        }),
        Command::Log {
            slug,
            repo,
            branch,
            format,
        } => commands::log::run(repo, branch, slug.as_deref(), *format),
        Command::Diff { range, repo, format } => commands::diff::run(repo, range, *format),
        Command::Review { range, repo, format } => commands::review::run(repo, range, *format),
        Command::Assign {
            experiment,
            unit,
            at,
            include_prompt,
            repo,
        } => commands::assign::run(commands::assign::AssignCommand {
            repository: repo,
            experiment,
            unit,
            at: at.as_deref(),
            include_prompt: *include_prompt,
        }),
        Command::Prompt {
            reference,
            mode,
            profile,
            repo,
            json,
        } => commands::prompt::run(commands::prompt::PromptCommand {
            repository: repo,
            reference,
            mode: mode.as_deref(),
            profile: profile.as_deref(),
            json: *json,
        }),
        Command::Bench {
            target:
                BenchTarget::Embed {
                    texts,
                    model_dir,
                    python,
                    memory,
                    batch,
                    constant_folding,
                    probe,
                },
        } => commands::bench::embed(commands::bench::EmbedBench {
            texts: *texts,
            model_dir,
            python,
            tunings: memory
                .iter()
                .flat_map(|memory| {
                    batch.iter().flat_map(move |batch_size| {
                        constant_folding
                            .iter()
                            .map(move |folding| crate::vectors::embed::SessionTuning {
                                memory: *memory,
                                batch_size: *batch_size,
                                constant_folding: *folding,
                            })
                    })
                })
                .collect(),
            probe: *probe,
        }),
        Command::Bench {
            target:
                BenchTarget::Sync {
                    shape,
                    keep,
                    database_url,
                },
        } => commands::bench::sync(commands::bench::SyncBench {
            shape: shape.shape(),
            keep: keep.as_deref(),
            database_url: database_url.as_deref(),
        }),
        Command::Bench {
            target:
                BenchTarget::Http {
                    shape,
                    keep,
                    seconds,
                    connections,
                },
        } => commands::bench_http::http(commands::bench_http::HttpBench {
            shape: shape.shape(),
            keep: keep.as_deref(),
            seconds: *seconds,
            connections: *connections,
        }),
        Command::Bench {
            target:
                BenchTarget::Write {
                    shape,
                    keep,
                    rounds,
                    writers,
                },
        } => commands::bench_write::write(commands::bench_write::WriteBench {
            shape: shape.shape(),
            keep: keep.as_deref(),
            rounds: *rounds,
            writers: *writers,
        }),
        Command::Bench {
            target:
                BenchTarget::Soak {
                    shape,
                    keep,
                    minutes,
                    connections,
                    writers,
                },
        } => commands::bench_soak::soak(commands::bench_soak::SoakBench {
            shape: shape.shape(),
            keep: keep.as_deref(),
            minutes: *minutes,
            connections: *connections,
            writers: *writers,
        }),
        Command::Bench {
            target: BenchTarget::Webhook { shape, keep, rounds },
        } => commands::bench_webhook::webhook(commands::bench_webhook::WebhookBench {
            shape: shape.shape(),
            keep: keep.as_deref(),
            rounds: *rounds,
        }),
        Command::Bench {
            target:
                BenchTarget::Label {
                    shape,
                    keep,
                    rounds,
                    replicas,
                },
        } => commands::bench_label::label(commands::bench_label::LabelBench {
            shape: shape.shape(),
            keep: keep.as_deref(),
            rounds: *rounds,
            replicas: *replicas,
        }),
        Command::Bench {
            target: BenchTarget::Site { shape, keep },
        } => commands::bench_site::site(commands::bench_site::SiteBench {
            shape: shape.shape(),
            keep: keep.as_deref(),
        }),
        Command::Bench {
            target:
                BenchTarget::Vectors {
                    shape,
                    keep,
                    database_url,
                    model_dir,
                    ort_library,
                    python,
                },
        } => commands::bench::vectors(commands::bench::VectorBench {
            shape: shape.shape(),
            keep: keep.as_deref(),
            database_url: database_url.as_deref(),
            model_dir: model_dir.as_deref(),
            ort_library: ort_library.as_deref(),
            python,
        }),
        Command::Sync {
            branch,
            once: _,
            watch,
            wait,
            remote,
            fetch_interval,
            no_vectors,
            target,
        } => commands::sync::run(commands::sync::SyncCommand {
            repository: &target.repo,
            branch,
            watch: *watch,
            wait: *wait,
            remote: remote.as_deref(),
            fetch_interval: *fetch_interval,
            vectors: !no_vectors,
            config: &layered(target)?,
        }),
        Command::BuildSite {
            out,
            base_url,
            branch,
            no_sync,
            preview,
            through_database,
            target,
        } => commands::build_site::run(commands::build_site::BuildSiteCommand {
            repository: &target.repo,
            branch,
            out,
            base_url: base_url.as_deref(),
            no_sync: *no_sync,
            preview: preview.as_deref(),
            through_database: *through_database,
            config: &layered(target)?,
        }),
        Command::Serve {
            branch,
            listen,
            remote,
            fetch_interval,
            sync,
            no_sync,
            kept_answers_mib,
            access,
            target,
        } => commands::serve::run(commands::serve::ServeCommand {
            kept_answers_bytes: kept_answers_mib.saturating_mul(1024 * 1024),
            repository: &target.repo,
            branch,
            listen: *listen,
            remote: remote.as_deref(),
            fetch_interval: *fetch_interval,
            sync: match (sync, no_sync) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            config: &access.config()?.or(layered(target)?),
        }),
        Command::Token { role, name, email } => commands::token::run(*role, name, email),
        Command::Reindex { recreate, target } => commands::vectors::reindex(&target.repo, *recreate, &layered(target)?),
        Command::Search {
            query,
            semantic,
            hybrid,
            filter,
            limit,
            json,
            target,
        } => commands::vectors::search(commands::vectors::SearchCommand {
            query,
            kind: match (semantic, hybrid) {
                (true, _) => commands::vectors::SearchKind::Semantic,
                (_, true) => commands::vectors::SearchKind::Hybrid,
                _ => commands::vectors::SearchKind::FullText,
            },
            filter: filter.filter(),
            limit: usize::from(*limit),
            json: *json,
            repository: &target.repo,
            config: &layered(target)?,
        }),
        Command::Similar {
            persona,
            filter,
            limit,
            json,
            target,
        } => commands::vectors::similar(commands::vectors::SimilarCommand {
            persona,
            filter: filter.filter(),
            limit: usize::from(*limit),
            json: *json,
            repository: &target.repo,
            config: &layered(target)?,
        }),
    }
}
