//! Sentence embeddings with fastembed over a local ONNX model directory, the
//! ONNX Runtime library loaded at run time (`ort-load-dynamic`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fastembed::{InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel};
use sha2::{Digest, Sha256};

/// The files a model directory must hold (what `scripts/fetch-model` writes).
pub const MODEL_FILES: [&str; 5] = [
    "model.onnx",
    "tokenizer.json",
    "config.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
];

/// Where a sentence-transformers model directory says how token vectors
/// become one sentence vector.
pub const POOLING_CONFIG: &str = "1_Pooling/config.json";

/// How a model's token vectors become one vector per text. Models differ:
/// all-MiniLM-L6-v2 averages the tokens, bge-small-en-v1.5 takes the first
/// (CLS) token; pooling a model the other way gives vectors that still look
/// fine and rank worse, so the model directory's own word decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolingChoice {
    /// The mean of the token vectors (`pooling_mode_mean_tokens`), also the
    /// choice when the directory has no pooling config.
    Mean,
    /// The first token's vector (`pooling_mode_cls_token`).
    Cls,
}

impl PoolingChoice {
    /// The pooling `model_dir` asks for in its `1_Pooling/config.json`; mean
    /// when there is none. A config asking for a pooling fastembed cannot do
    /// (max, weighted mean, last token), or for none or several, is an error.
    pub fn of_model_dir(model_dir: &Path) -> Result<PoolingChoice, EmbedError> {
        let path = model_dir.join(POOLING_CONFIG);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(PoolingChoice::Mean),
            Err(error) => return Err(pooling_error(&path, &error.to_string())),
        };
        let config: serde_json::Value =
            serde_json::from_str(&text).map_err(|error| pooling_error(&path, &format!("not JSON: {error}")))?;
        let asked: Vec<&str> = config
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(key, value)| key.starts_with("pooling_mode_") && value.as_bool() == Some(true))
            .map(|(key, _)| key.as_str())
            .collect();
        match asked.as_slice() {
            ["pooling_mode_mean_tokens"] => Ok(PoolingChoice::Mean),
            ["pooling_mode_cls_token"] => Ok(PoolingChoice::Cls),
            [] => Err(pooling_error(&path, "no pooling_mode_* is true")),
            [one] => Err(pooling_error(
                &path,
                &format!("{one} is not supported (only pooling_mode_mean_tokens and pooling_mode_cls_token are)"),
            )),
            several => Err(pooling_error(
                &path,
                &format!("asks for several poolings at once ({})", several.join(", ")),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PoolingChoice::Mean => "mean",
            PoolingChoice::Cls => "cls",
        }
    }

    fn fastembed(self) -> Pooling {
        match self {
            PoolingChoice::Mean => Pooling::Mean,
            PoolingChoice::Cls => Pooling::Cls,
        }
    }
}

fn pooling_error(path: &Path, reason: &str) -> EmbedError {
    EmbedError::Model(format!("{}: {reason}", path.display()))
}

/// Texts per forward pass. On two cores `bench embed` found 8 the fastest
/// (larger batches pad more: lengths differ) and its working memory about a
/// third of 32's (peak 291 MiB against 1,036 with the memory released).
pub const BATCH_SIZE: usize = 8;
/// Tokens per text: what all-MiniLM-L6-v2 was trained on
/// (`sentence_bert_config.json`); longer input only adds cost.
pub const MAX_TOKENS: usize = 256;

/// How ONNX Runtime allocates the working memory of a forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionMemory {
    /// Every pass allocates and frees its own buffers, and the freed pages go
    /// back to the system. The default: with the arena a process keeps the
    /// peak of its largest batch for good (310 MiB resident after batches of
    /// 8, against 79 released, in `bench embed`), and a server embeds rarely.
    Released,
    /// ONNX Runtime's CPU arena: buffers are reused across passes and never
    /// returned to the system.
    Arena,
}

/// The session's memory mode, how many texts go through it at once, and
/// whether ONNX Runtime folds constants when it optimizes the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionTuning {
    pub memory: SessionMemory,
    pub batch_size: usize,
    /// Off by default: on the int8 model, folding turns the quantized
    /// weights into float copies at load, about 125 MiB more resident for
    /// the same vectors and no gain in speed (measured by `bench embed`).
    pub constant_folding: bool,
}

impl Default for SessionTuning {
    fn default() -> SessionTuning {
        SessionTuning {
            memory: SessionMemory::Released,
            batch_size: BATCH_SIZE,
            constant_folding: false,
        }
    }
}

/// ONNX Runtime's session option naming the graph optimizers to skip.
const DISABLED_OPTIMIZERS_KEY: &str = "optimization.disable_specified_optimizers";

impl SessionMemory {
    pub const ALL: [(&'static str, SessionMemory); 2] =
        [("released", SessionMemory::Released), ("arena", SessionMemory::Arena)];

    pub fn name(self) -> &'static str {
        match self {
            SessionMemory::Released => SessionMemory::ALL[0].0,
            SessionMemory::Arena => SessionMemory::ALL[1].0,
        }
    }
}

impl std::str::FromStr for SessionMemory {
    type Err = String;
    fn from_str(text: &str) -> Result<SessionMemory, String> {
        SessionMemory::ALL
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, memory)| *memory)
            .ok_or_else(|| format!("{text:?} is not an embedding memory mode (released or arena)"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(
        "no embedding model at {dir}: {reason}. Run scripts/fetch-model and set \
         PERSONAS_EMBED_MODEL_DIR (or embed.model_dir) to the directory it prints"
    )]
    MissingModel { dir: String, reason: String },
    #[error(
        "cannot load the ONNX Runtime library {path}: {reason}. scripts/fetch-model puts \
         libonnxruntime.so.* in the model directory; or set PERSONAS_ORT_LIBRARY"
    )]
    Runtime { path: String, reason: String },
    #[error("the embedding model failed: {0}")]
    Model(String),
}

/// A loaded model. Embedding takes `&self`: the session is used by one
/// caller at a time (the model saturates the cores by itself).
pub struct Embedder {
    model: Mutex<TextEmbedding>,
    model_id: String,
    dimension: usize,
    batch_size: usize,
    memory: SessionMemory,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Embedder")
            .field("model_id", &self.model_id)
            .field("dimension", &self.dimension)
            .finish()
    }
}

impl Embedder {
    /// Loads the model in `model_dir`. The ONNX Runtime library is
    /// `runtime_library` if given, else the `libonnxruntime.so*` found in the
    /// model directory.
    pub fn load(model_dir: &Path, runtime_library: Option<&Path>) -> Result<Embedder, EmbedError> {
        Embedder::load_with(model_dir, runtime_library, SessionTuning::default())
    }

    /// [`Embedder::load`] with a choice of memory mode and batch size (the
    /// benchmark compares them).
    pub fn load_with(
        model_dir: &Path,
        runtime_library: Option<&Path>,
        tuning: SessionTuning,
    ) -> Result<Embedder, EmbedError> {
        let missing = |reason: String| EmbedError::MissingModel {
            dir: model_dir.display().to_string(),
            reason,
        };
        let read =
            |name: &str| std::fs::read(model_dir.join(name)).map_err(|error| missing(format!("{name}: {error}")));
        let onnx = read("model.onnx")?;
        let tokenizer_files = TokenizerFiles {
            tokenizer_file: read("tokenizer.json")?,
            config_file: read("config.json")?,
            special_tokens_map_file: read("special_tokens_map.json")?,
            tokenizer_config_file: read("tokenizer_config.json")?,
        };
        let library = match runtime_library {
            Some(path) => path.to_path_buf(),
            None => find_runtime_library(model_dir).ok_or_else(|| EmbedError::Runtime {
                path: model_dir.join("libonnxruntime.so*").display().to_string(),
                reason: "not found".to_string(),
            })?,
        };
        init_runtime(&library)?;
        // The model id names the exact weights, so a changed model is noticed
        // (and re-indexed) even when its directory keeps the same name.
        let digest = Sha256::digest(&onnx);
        let name = model_dir.file_name().and_then(|name| name.to_str()).unwrap_or("model");
        let pooling = PoolingChoice::of_model_dir(model_dir)?;
        // Mean pooling keeps the ids indexes were built with; another pooling
        // makes other vectors from the same weights, so it is part of the id.
        let model_id = match pooling {
            PoolingChoice::Mean => format!("{name}@sha256:{}", hex(&digest[..8])),
            other => format!("{name}@sha256:{}+{}", hex(&digest[..8]), other.name()),
        };
        let definition = UserDefinedEmbeddingModel::new(onnx, tokenizer_files).with_pooling(pooling.fastembed());
        let mut options = InitOptionsUserDefined::default()
            .with_max_length(MAX_TOKENS)
            .with_execution_providers(vec![cpu_provider(tuning.memory)]);
        if !tuning.constant_folding {
            options = options.with_session_config(DISABLED_OPTIMIZERS_KEY, "ConstantFolding");
        }
        let model = TextEmbedding::try_new_from_user_defined(definition, options)
            .map_err(|error| EmbedError::Model(error.to_string()))?;
        Embedder::from_model(model, model_id, tuning)
    }

    /// Downloads (once, into `cache_dir`) and loads a model fastembed knows
    /// by name, such as `BGESmallENV15`: the online path, for machines that
    /// reach the model hub. Needs the `online-models` build feature.
    #[cfg(feature = "online-models")]
    pub fn load_named(name: &str, cache_dir: &Path, runtime_library: &Path) -> Result<Embedder, EmbedError> {
        let model: fastembed::EmbeddingModel = name.parse().map_err(EmbedError::Model)?;
        init_runtime(runtime_library)?;
        let options = fastembed::TextInitOptions::new(model)
            .with_cache_dir(cache_dir.to_path_buf())
            .with_max_length(MAX_TOKENS)
            .with_execution_providers(vec![cpu_provider(SessionMemory::Released)])
            .with_session_config(DISABLED_OPTIMIZERS_KEY, "ConstantFolding");
        let model = TextEmbedding::try_new(options).map_err(|error| EmbedError::Model(error.to_string()))?;
        Embedder::from_model(model, format!("fastembed:{name}"), SessionTuning::default())
    }

    fn from_model(mut model: TextEmbedding, model_id: String, tuning: SessionTuning) -> Result<Embedder, EmbedError> {
        let probe = model
            .embed(["dimension probe"], None)
            .map_err(|error| EmbedError::Model(error.to_string()))?;
        let dimension = probe.first().map(Vec::len).unwrap_or(0);
        Ok(Embedder {
            model: Mutex::new(model),
            model_id,
            dimension,
            batch_size: tuning.batch_size.max(1),
            memory: tuning.memory,
        })
    }

    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// One L2-normalized vector per text, in order.
    pub fn embed<S: AsRef<str> + Send + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let mut model = self.model.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut vectors = Vec::with_capacity(texts.len());
        // One batch at a time, trimmed after each, so the peak is one batch's
        // working memory rather than what the allocator kept from all of them.
        for batch in texts.chunks(self.batch_size) {
            let embedded = model.embed(batch, Some(self.batch_size));
            if self.memory == SessionMemory::Released {
                // A forward pass frees its buffers, but the C allocator keeps
                // freed pages of its heaps resident (several hundred MiB after
                // one batch of long texts, measured by `bench embed`). A server
                // embeds in bursts, so the trim's cost (milliseconds) is rare.
                crate::heap::return_freed_heap();
            }
            vectors.extend(embedded.map_err(|error| EmbedError::Model(error.to_string()))?);
        }
        Ok(vectors)
    }
}

impl Embedder {
    /// Tokenizes `texts` the way [`Embedder::embed`] does, without running the
    /// model; returns the number of tokens. The benchmark uses it to split
    /// the model's time into tokenizing and the forward pass.
    pub fn tokenize<S: AsRef<str>>(&self, texts: &[S]) -> Result<usize, EmbedError> {
        let model = self.model.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let inputs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let encodings = model
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|error| EmbedError::Model(error.to_string()))?;
        Ok(encodings.iter().map(|encoding| encoding.len()).sum())
    }
}

fn cpu_provider(memory: SessionMemory) -> fastembed::ExecutionProviderDispatch {
    ort::ep::CPU::default()
        .with_arena_allocator(memory == SessionMemory::Arena)
        .build()
}

fn init_runtime(library: &Path) -> Result<(), EmbedError> {
    // Loading twice in one process is fine: ort keeps the first library.
    ort::init_from(library).map_err(|error| EmbedError::Runtime {
        path: library.display().to_string(),
        reason: error.to_string(),
    })?;
    Ok(())
}

/// `libonnxruntime.so.<version>` (or plain `.so`) inside `directory`.
pub fn find_runtime_library(directory: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(directory)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("libonnxruntime.so"))
        })
        .collect();
    found.sort();
    found.pop()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
