//! What only a Qdrant server can do to us: an API key, a collection someone
//! else made, a restart in the middle of a drain, two writer processes and
//! two `serve` replicas on one collection. On real servers: the shared one
//! (`QDRANT_URL`) and servers of the test's own (`PERSONAS_QDRANT_BIN`), a
//! real PostgreSQL, real git repositories and the real model. Each test
//! prints SKIPPED when its server is not at hand.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::db::{TestDatabase, count, fresh};
use common::qdrant::{OwnServer, shared_url, unique_collection};
use common::server::{Server, http_get};
use common::*;
use personas::sync::{SyncOptions, sync_once};
use personas::synthetic::SyntheticRegistry;
use personas::vectors::embed::Embedder;
use personas::vectors::index::{IndexError, VectorIndex};
use personas::vectors::projector::VectorProjector;
use personas::vectors::server::QdrantIndex;
use qdrant_client::Qdrant;
use qdrant_client::qdrant::{CreateCollectionBuilder, Distance, PointStruct, UpsertPointsBuilder, VectorParamsBuilder};
use sqlx::PgPool;
use uuid::Uuid;

fn model_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("PERSONAS_EMBED_MODEL_DIR").expect(
        "PERSONAS_EMBED_MODEL_DIR is not set: run `scripts/fetch-model` and export the directory it prints \
         (scripts/test does both)",
    ))
}

async fn embedder() -> Arc<Embedder> {
    static EMBEDDER: tokio::sync::OnceCell<Arc<Embedder>> = tokio::sync::OnceCell::const_new();
    EMBEDDER
        .get_or_init(|| async {
            tokio::task::spawn_blocking(|| Arc::new(Embedder::load(&model_dir(), None).expect("the model loads")))
                .await
                .unwrap()
        })
        .await
        .clone()
}

/// The `personas` binary against `database_url` and a server collection.
fn personas_command(arguments: &[&str], database_url: &str, qdrant_url: &str, collection: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_personas"));
    command
        .args(arguments)
        .env("DATABASE_URL", database_url)
        .env("QDRANT_URL", qdrant_url)
        .env("PERSONAS_QDRANT_COLLECTION", collection)
        .env_remove("QDRANT_API_KEY")
        .env("RUST_LOG", "warn");
    command
}

/// The shared server's key, if it has one.
fn shared_key() -> Option<String> {
    std::env::var("QDRANT_API_KEY").ok()
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every live persona's current content hash, by id.
async fn current_hashes(pool: &PgPool) -> HashMap<Uuid, String> {
    sqlx::query_as::<_, (Uuid, String)>(
        "SELECT p.id, v.content_hash FROM personas p JOIN persona_versions v ON v.id = p.current_version_id
         WHERE NOT p.deleted",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// The index holds exactly one point per live persona, each of its current version.
async fn assert_index_matches(index: &impl VectorIndex, pool: &PgPool) {
    let expected = current_hashes(pool).await;
    assert!(!expected.is_empty(), "no live personas to compare with");
    let stamps = index.stamps().await.unwrap();
    let found: HashMap<Uuid, String> = stamps
        .iter()
        .map(|stamp| (stamp.id, stamp.content_hash.clone()))
        .collect();
    assert_eq!(found.len(), stamps.len(), "a point appears twice");
    assert_eq!(found, expected, "the index and the current versions differ");
    assert_eq!(index.count().await.unwrap(), expected.len() as u64);
}

#[tokio::test]
async fn the_api_key_is_required_checked_and_used() {
    let key = "personas-test-key-0123456789";
    let Some(server) = OwnServer::start("the_api_key_is_required_checked_and_used", Some(key)) else {
        return;
    };
    let url = server.url();
    let collection = unique_collection();
    for (given, says) in [
        (None, "needs an API key: set QDRANT_API_KEY"),
        (Some("not-the-key"), "refused the API key given (QDRANT_API_KEY)"),
    ] {
        let Err(IndexError::Unavailable(message)) = QdrantIndex::open(&url, given, &collection, 8).await else {
            panic!("a server with an API key let a client in with {given:?}");
        };
        assert!(message.contains(says) && message.contains(&url), "{message}");
    }

    // The right key opens the collection and carries every later request.
    let index = QdrantIndex::open(&url, Some(key), &collection, embedder().await.dimension())
        .await
        .unwrap();
    assert_eq!(index.count().await.unwrap(), 0);

    // The command line says the same, and the versions are still projected.
    let repo = sample_repository();
    let TestDatabase {
        url: database_url,
        pool,
    } = fresh().await;
    let repo_path = repo.path().to_str().unwrap();
    let refused = personas_command(&["sync", "--repo", repo_path], &database_url, &url, &collection)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = stderr_of(&refused);
    assert!(stderr.contains("needs an API key: set QDRANT_API_KEY"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let live = count(&pool, "SELECT count(*) FROM personas WHERE NOT deleted").await;
    assert!(live >= 20, "the versions were not projected: {live} personas");
    assert_eq!(
        count(&pool, "SELECT count(DISTINCT persona_id) FROM vector_outbox").await,
        live,
        "the outbox keeps every update for later"
    );

    let accepted = personas_command(&["sync", "--repo", repo_path], &database_url, &url, &collection)
        .env("QDRANT_API_KEY", key)
        .output()
        .unwrap();
    assert!(accepted.status.success(), "{}", stderr_of(&accepted));
    assert_index_matches(&index, &pool).await;
    assert_eq!(count(&pool, "SELECT count(*) FROM vector_outbox").await, 0);
}

#[tokio::test]
async fn a_collection_someone_else_made_with_another_size_is_refused_and_kept() {
    let Some(url) = shared_url("a_collection_someone_else_made_with_another_size_is_refused_and_kept") else {
        return;
    };
    let api_key = shared_key();
    // Someone else's collection, of 3-dimensional vectors, with a point of theirs.
    let collection = unique_collection();
    let client = Qdrant::from_url(&url)
        .api_key(api_key.clone())
        .skip_compatibility_check()
        .build()
        .unwrap();
    client
        .create_collection(
            CreateCollectionBuilder::new(&collection).vectors_config(VectorParamsBuilder::new(3, Distance::Dot)),
        )
        .await
        .unwrap();
    let theirs = PointStruct::new(7, vec![0.1, 0.2, 0.3], [("owner", "someone else".into())]);
    client
        .upsert_points(UpsertPointsBuilder::new(&collection, vec![theirs]).wait(true))
        .await
        .unwrap();

    let repo = sample_repository();
    let TestDatabase {
        url: database_url,
        pool,
    } = fresh().await;
    let output = personas_command(
        &["sync", "--repo", repo.path().to_str().unwrap()],
        &database_url,
        &url,
        &collection,
    )
    .envs(api_key.as_deref().map(|key| ("QDRANT_API_KEY", key)))
    .output()
    .unwrap();
    assert!(!output.status.success(), "a collection of another size was written to");
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains(&format!("{collection:?}")) && stderr.contains("holds vectors of size 3"),
        "{stderr}"
    );
    assert!(stderr.contains("personas reindex --recreate"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Nothing of theirs was dropped or changed, and our updates wait.
    let info = client.collection_info(&collection).await.unwrap().result.unwrap();
    assert_eq!(info.points_count, Some(1));
    let size = info
        .config
        .and_then(|config| config.params)
        .and_then(|params| params.vectors_config)
        .and_then(|vectors| vectors.config);
    assert!(
        matches!(size, Some(qdrant_client::qdrant::vectors_config::Config::Params(ref params)) if params.size == 3),
        "{size:?}"
    );
    let live = count(&pool, "SELECT count(*) FROM personas WHERE NOT deleted").await;
    assert!(live >= 20);
    assert_eq!(
        count(&pool, "SELECT count(DISTINCT persona_id) FROM vector_outbox").await,
        live
    );
    client.delete_collection(&collection).await.unwrap();
}

#[tokio::test]
async fn a_server_restarted_mid_drain_loses_no_update() {
    let Some(mut server) = OwnServer::start("a_server_restarted_mid_drain_loses_no_update", None) else {
        return;
    };
    // Enough personas for several steps of the drain.
    let shape = SyntheticRegistry {
        personas: 900,
        revisions: 1,
        personas_per_commit: 300,
    };
    let directory = tempfile::tempdir().unwrap();
    let repository = directory.path().join("registry.git");
    shape.write_repository(&repository, "main").unwrap();
    let TestDatabase { pool, .. } = fresh().await;
    sync_once(&pool, &SyncOptions::new(&repository, "main")).await.unwrap();
    let queued = count(&pool, "SELECT count(*) FROM vector_outbox").await;
    assert_eq!(queued, 900);

    let embedder = embedder().await;
    let collection = unique_collection();
    let index = QdrantIndex::open(&server.url(), None, &collection, embedder.dimension())
        .await
        .unwrap();
    let projector = Arc::new(VectorProjector::new(pool.clone(), index, embedder.clone()));
    let draining = tokio::spawn({
        let projector = Arc::clone(&projector);
        async move { projector.drain().await }
    });
    // Killed once the first step is confirmed (its outbox rows gone), while later steps run.
    let started = Instant::now();
    while count(&pool, "SELECT count(*) FROM vector_outbox").await == queued {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the first step never landed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    let error = draining
        .await
        .unwrap()
        .expect_err("the drain went on without its server");
    assert!(error.to_string().contains("unavailable"), "{error}");
    let left = count(&pool, "SELECT count(*) FROM vector_outbox").await;
    assert!(left > 0 && left < queued, "{left} of {queued} rows left");
    assert!(
        count(&pool, "SELECT count(*) FROM vector_outbox WHERE attempts > 0").await > 0,
        "the failed step is counted against its rows"
    );

    // Back on the same storage: what was confirmed survived, and the rest lands.
    server.start_again();
    let kept = projector.index().count().await.unwrap();
    assert!(
        kept >= (queued - left) as u64,
        "{kept} points survived, {} were confirmed",
        queued - left
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let summary = projector.drain().await.unwrap();
    assert!(summary.upserted > 0, "{summary}");
    assert_eq!(count(&pool, "SELECT count(*) FROM vector_outbox").await, 0);
    assert_index_matches(projector.index(), &pool).await;
}

#[tokio::test]
async fn two_writer_processes_share_one_collection() {
    let Some(url) = shared_url("two_writer_processes_share_one_collection") else {
        return;
    };
    let collection = unique_collection();
    let repo = sample_repository();
    let TestDatabase {
        url: database_url,
        pool,
    } = fresh().await;
    let repo_path = repo.path().to_str().unwrap().to_string();
    let run_two = |arguments: &[&str]| {
        let children: Vec<_> = (0..2)
            .map(|_| {
                personas_command(arguments, &database_url, &url, &collection)
                    .envs(shared_key().map(|key| ("QDRANT_API_KEY", key)))
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let output = child.wait_with_output().unwrap();
            assert!(output.status.success(), "{arguments:?}: {}", stderr_of(&output));
        }
    };
    // Two syncs at once (one waits for the other's lock), each then updating the index.
    run_two(&["sync", "--wait", "--repo", &repo_path]);
    let index = QdrantIndex::open(&url, shared_key().as_deref(), &collection, embedder().await.dimension())
        .await
        .unwrap();
    assert_index_matches(&index, &pool).await;

    // A change, again from two writers at once: one point per persona, the new version's.
    let path = repo.path().join("registry/personas/albert-einstein.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen("description = \"", "description = \"Changed by the writers test. ", 1);
    assert_ne!(edited, text);
    std::fs::write(&path, edited).unwrap();
    repo.remove("registry/personas/ada-lovelace.toml");
    repo.commit("einstein changes, ada leaves");
    run_two(&["sync", "--wait", "--repo", &repo_path]);
    assert_index_matches(&index, &pool).await;
    // And two full rebuilds at once leave the same.
    run_two(&["reindex", "--repo", &repo_path]);
    assert_index_matches(&index, &pool).await;
    assert_eq!(count(&pool, "SELECT count(*) FROM vector_outbox").await, 0);
    index.drop_collection().await.unwrap();
}

#[tokio::test]
async fn serve_replicas_read_one_collection() {
    let Some(url) = shared_url("serve_replicas_read_one_collection") else {
        return;
    };
    let collection = unique_collection();
    let repo = sample_repository();
    let TestDatabase {
        url: database_url,
        pool,
    } = fresh().await;
    let repo_path = repo.path().to_str().unwrap().to_string();
    let writer_sync = || {
        let output = personas_command(&["sync", "--repo", &repo_path], &database_url, &url, &collection)
            .envs(shared_key().map(|key| ("QDRANT_API_KEY", key)))
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr_of(&output));
    };
    writer_sync();
    let environment = [
        ("DATABASE_URL", database_url.as_str()),
        ("QDRANT_URL", url.as_str()),
        ("PERSONAS_QDRANT_COLLECTION", collection.as_str()),
    ];
    let replicas: Vec<Server> = (0..2)
        .map(|_| Server::start_args(repo.path(), &["--no-sync"], &environment))
        .collect();
    let answers = |path: &str| -> Vec<serde_json::Value> {
        replicas
            .iter()
            .map(|replica| {
                let (status, body) = http_get(&replica.url(path));
                assert_eq!(status, 200, "{path}: {body}");
                serde_json::from_str(&body).unwrap()
            })
            .collect()
    };
    let slugs = |answer: &serde_json::Value| -> Vec<String> {
        answer["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|found| found["slug"].as_str().unwrap().to_string())
            .collect()
    };
    let sea = "A marine biologist of coral reefs and the ocean, who dives to count the fish of the reef.";
    let semantic = format!(
        "/api/personas/search?semantic=true&limit=3&q={}",
        sea.replace(' ', "+").replace(',', "%2C")
    );
    let semantic = semantic.as_str();
    let before = answers(semantic);
    assert_eq!(slugs(&before[0]), slugs(&before[1]), "the replicas disagree");
    assert_eq!(slugs(&before[0]).len(), 3);
    let similar = answers("/api/personas/marie-curie/similar?limit=4");
    assert_eq!(similar[0], similar[1]);
    assert_eq!(slugs(&similar[0]).len(), 4);
    let embedded = answers("/api/personas/marie-curie/embed");
    assert_eq!(embedded[0], embedded[1]);

    // The writer turns a painter into a marine biologist: both replicas
    // answer from the collection as the writer left it, at once.
    let path = repo.path().join("registry/personas/frida-kahlo.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let description = text
        .lines()
        .find(|line| line.starts_with("description = "))
        .expect("a description line")
        .to_string();
    let edited = text
        .replacen(&description, &format!("description = \"{sea}\""), 1)
        .replacen(
            "domains = [\"art\", \"painting\", \"mexican culture\"]",
            "domains = [\"marine biology\", \"oceanography\", \"coral reefs\"]",
            1,
        );
    assert_eq!(
        edited.matches("oceanography").count(),
        1,
        "the sample's Frida Kahlo has changed"
    );
    std::fs::write(&path, edited).unwrap();
    repo.commit("frida takes up the sea");
    let old_hash = embedded[0]["content_hash"].clone();
    writer_sync();
    let new_hash: String = sqlx::query_scalar(
        "SELECT v.content_hash FROM personas p JOIN persona_versions v ON v.id = p.current_version_id
         WHERE p.slug = 'frida-kahlo'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    for answer in answers("/api/personas/frida-kahlo/embed") {
        assert_eq!(
            answer["content_hash"],
            new_hash.as_str(),
            "a replica serves the old vector"
        );
    }
    assert_ne!(old_hash, new_hash.as_str());
    let index = QdrantIndex::connect(&url, shared_key().as_deref(), &collection).unwrap();
    let query = embedder().await.embed(&[sea]).unwrap().remove(0);
    let direct: Vec<String> = index
        .search(query, &personas::persona::search_filter::SearchFilter::default(), 3)
        .await
        .unwrap()
        .into_iter()
        .map(|hit| hit.payload.slug)
        .collect();
    assert!(direct.contains(&"frida-kahlo".to_string()), "{direct:?}");
    assert!(!slugs(&before[0]).contains(&"frida-kahlo".to_string()), "{before:?}");
    for answer in answers(semantic) {
        assert_eq!(
            slugs(&answer),
            direct,
            "a replica's semantic answer is not the collection's"
        );
    }
    assert_index_matches(&index, &pool).await;
    drop(replicas);
    index.drop_collection().await.unwrap();
}

/// A collection another writer is still creating is visible before its shard
/// is readable ("0 of 0 read operations failed"): opening waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_collection_opened_by_many_at_once_is_readable_by_each() {
    let Some(url) = shared_url("a_collection_opened_by_many_at_once_is_readable_by_each") else {
        return;
    };
    let dimension = embedder().await.dimension();
    for _ in 0..20 {
        let collection = unique_collection();
        let openers: Vec<_> = (0..8)
            .map(|_| {
                let url = url.clone();
                let collection = collection.clone();
                tokio::spawn(async move {
                    let index = QdrantIndex::open(&url, shared_key().as_deref(), &collection, dimension).await?;
                    index.stamps().await.map(|_| index)
                })
            })
            .collect();
        let mut opened = Vec::new();
        for opener in openers {
            match opener.await.unwrap() {
                Ok(index) => opened.push(index),
                Err(error) => panic!("{collection}: {error}"),
            }
        }
        assert_eq!(opened.len(), 8);
        opened[0].drop_collection().await.unwrap();
    }
}
