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

/// Texts per forward pass: on CPU larger batches barely help, and this
/// bounds the padding waste when lengths differ.
pub const BATCH_SIZE: usize = 32;
/// Tokens per text: what all-MiniLM-L6-v2 was trained on
/// (`sentence_bert_config.json`); longer input only adds cost.
pub const MAX_TOKENS: usize = 256;

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
        let model_id = format!("{name}@sha256:{}", hex(&digest[..8]));
        let definition = UserDefinedEmbeddingModel::new(onnx, tokenizer_files).with_pooling(Pooling::Mean);
        let model = TextEmbedding::try_new_from_user_defined(
            definition,
            InitOptionsUserDefined::default().with_max_length(MAX_TOKENS),
        )
        .map_err(|error| EmbedError::Model(error.to_string()))?;
        Embedder::from_model(model, model_id)
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
            .with_max_length(MAX_TOKENS);
        let model = TextEmbedding::try_new(options).map_err(|error| EmbedError::Model(error.to_string()))?;
        Embedder::from_model(model, format!("fastembed:{name}"))
    }

    fn from_model(mut model: TextEmbedding, model_id: String) -> Result<Embedder, EmbedError> {
        let probe = model
            .embed(["dimension probe"], None)
            .map_err(|error| EmbedError::Model(error.to_string()))?;
        let dimension = probe.first().map(Vec::len).unwrap_or(0);
        Ok(Embedder {
            model: Mutex::new(model),
            model_id,
            dimension,
        })
    }

    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// One L2-normalized vector per text, in order.
    pub fn embed<S: AsRef<str> + Send + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let mut model = self.model.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        model
            .embed(texts, Some(BATCH_SIZE))
            .map_err(|error| EmbedError::Model(error.to_string()))
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
