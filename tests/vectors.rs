//! Keeping the vector index in step with PostgreSQL, on real parts: git
//! repositories built here, a real PostgreSQL, the real embedding model
//! (provisioned by `scripts/fetch-model`; `scripts/test` exports its
//! directory), on both indexes: a real qdrant-edge shard always, and a real
//! Qdrant server when `QDRANT_URL` is set (each test under `qdrant_edge` and
//! `qdrant_server`).

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::db::{TestDatabase, count, fresh};
use common::qdrant::{Backend, TestIndex};
use common::*;
use personas::persona::search_filter::SearchFilter;
use personas::search::{self, Found, Semantic};
use personas::sync::{SyncOptions, sync_once};
use personas::synthetic::SyntheticRegistry;
use personas::vectors::embed::Embedder;
use personas::vectors::index::VectorIndex;
use personas::vectors::projector::VectorProjector;
use personas::vectors::server::QdrantIndex;
use personas::vectors::setup::AnyIndex;
use sqlx::PgPool;
use tokio::sync::OnceCell;

fn model_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("PERSONAS_EMBED_MODEL_DIR").expect(
        "PERSONAS_EMBED_MODEL_DIR is not set: run `scripts/fetch-model` and export the directory it prints \
         (scripts/test does both)",
    ))
}

/// One loaded model per test binary: loading costs a second or two.
async fn embedder() -> Arc<Embedder> {
    static EMBEDDER: OnceCell<Arc<Embedder>> = OnceCell::const_new();
    EMBEDDER
        .get_or_init(|| async {
            tokio::task::spawn_blocking(|| Arc::new(Embedder::load(&model_dir(), None).expect("the model loads")))
                .await
                .unwrap()
        })
        .await
        .clone()
}

async fn live_personas(pool: &PgPool) -> i64 {
    count(pool, "SELECT count(*) FROM personas WHERE NOT deleted").await
}

async fn outbox_rows(pool: &PgPool) -> i64 {
    count(pool, "SELECT count(*) FROM vector_outbox").await
}

async fn sync(pool: &PgPool, repo: &TestRepo) {
    sync_once(pool, &SyncOptions::new(repo.path(), "main")).await.unwrap();
}

/// Fields drop in order: the shard flushes on drop, so it must go before its directory.
struct Setup {
    projector: VectorProjector<AnyIndex>,
    directory: tempfile::TempDir,
    database: TestDatabase,
    _repo: TestRepo,
    _collection: Option<common::qdrant::ServerCollection>,
}

/// The sample registry synced into a fresh database and projected into a
/// fresh index; `None` when the backend is not at hand.
async fn sample_setup(backend: Backend, test: &str) -> Option<Setup> {
    let directory = tempfile::tempdir().unwrap();
    let embedder = embedder().await;
    let TestIndex { index, collection } =
        TestIndex::open(backend, test, directory.path(), embedder.dimension()).await?;
    let repo = sample_repository();
    let database = fresh().await;
    sync(&database.pool, &repo).await;
    let projector = VectorProjector::new(database.pool.clone(), index, embedder);
    projector.drain().await.unwrap();
    Some(Setup {
        _collection: collection,
        _repo: repo,
        database,
        directory,
        projector,
    })
}

/// Each test body runs twice: on qdrant-edge, and on the Qdrant server
/// (SKIPPED without `QDRANT_URL`), as `<test>::qdrant_edge` and `<test>::qdrant_server`.
macro_rules! on_both_indexes {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test]
            async fn qdrant_edge() {
                super::$test(super::Backend::Edge).await;
            }

            #[tokio::test]
            async fn qdrant_server() {
                super::$test(super::Backend::Server).await;
            }
        }
    )*};
}

on_both_indexes!(
    a_sync_leaves_one_point_per_live_persona_and_search_makes_sense,
    filters_hold_on_every_semantic_result,
    the_model_runs_once_per_current_persona_and_never_for_an_unchanged_one,
    edits_and_deletions_reach_the_index,
    an_index_outage_delays_updates_and_loses_none,
    a_model_change_reindexes_every_persona,
);

fn slugs(found: &[Found]) -> Vec<&str> {
    found.iter().map(|found| found.slug.as_str()).collect()
}

async fn domains_of(pool: &PgPool, slug: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT ARRAY(SELECT jsonb_array_elements_text(v.document->'domains'))
         FROM personas p JOIN persona_versions v ON v.id = p.current_version_id WHERE p.slug = $1",
    )
    .bind(slug)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn a_sync_leaves_one_point_per_live_persona_and_search_makes_sense(backend: Backend) {
    let Some(setup) = sample_setup(
        backend,
        "a_sync_leaves_one_point_per_live_persona_and_search_makes_sense",
    )
    .await
    else {
        return;
    };
    let pool = &setup.database.pool;
    let index = setup.projector.index();
    let embedder = embedder().await;
    let live = live_personas(pool).await;
    assert!(live >= 20, "the sample registry has {live} personas");
    assert_eq!(index.count().await.unwrap(), live as u64);
    assert_eq!(outbox_rows(pool).await, 0, "a confirmed write removes its outbox rows");

    // Each point carries the current version's identity.
    let current: Vec<(uuid::Uuid, i32, String)> = sqlx::query_as(
        "SELECT p.id, v.version_no, v.content_hash FROM personas p
         JOIN persona_versions v ON v.id = p.current_version_id WHERE NOT p.deleted",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for (id, version_no, hash) in &current {
        let point = index.point(*id).await.unwrap().expect("every live persona has a point");
        assert_eq!(
            (point.payload.version_no, &point.payload.content_hash),
            (*version_no, hash)
        );
        assert_eq!(point.payload.model_id, embedder.model_id());
        assert_eq!(point.vector.len(), embedder.dimension());
    }

    let semantic = Semantic {
        embedder: Some(&embedder),
        index: Some(index),
    };
    // Physicists rank above painters and musicians for a question about relativity.
    let found = search::semantic(
        &semantic,
        "the theory of relativity, space and time",
        &SearchFilter::default(),
        30,
    )
    .await
    .unwrap();
    let position = |slug: &str| slugs(&found).iter().position(|found| *found == slug).unwrap();
    assert_eq!(found[0].slug, "albert-einstein", "{:?}", slugs(&found));
    for physicist in ["albert-einstein", "marie-curie"] {
        for artist in ["frida-kahlo", "ludwig-van-beethoven", "nina-simone", "jane-austen"] {
            assert!(position(physicist) < position(artist), "{:?}", slugs(&found));
        }
    }

    // The personas most like a physicist are mostly scientists.
    let scientific: HashSet<&str> = [
        "physics",
        "chemistry",
        "mathematics",
        "computing",
        "biology",
        "ecology",
        "medicine",
        "engineering",
        "natural history",
        "marine biology",
        "radioactivity",
        "anatomy",
        "cryptanalysis",
        "geology",
    ]
    .into();
    let similar = search::similar(pool, Some(index), "marie-curie", &SearchFilter::default(), 5)
        .await
        .unwrap();
    assert_eq!(similar.len(), 5);
    assert!(
        !slugs(&similar).contains(&"marie-curie"),
        "a persona is not similar to itself"
    );
    let mut scientists = 0;
    for found in &similar {
        let domains = domains_of(pool, &found.slug).await;
        scientists += usize::from(domains.iter().any(|domain| scientific.contains(domain.as_str())));
    }
    assert!(
        scientists >= 3,
        "only {scientists} of {:?} are scientists",
        slugs(&similar)
    );

    // A former slug or the id work as references too; an unknown one is a clear error.
    let by_id = search::similar(pool, Some(index), &found[0].id.to_string(), &SearchFilter::default(), 3)
        .await
        .unwrap();
    assert_eq!(by_id.len(), 3);
    let error = search::similar(pool, Some(index), "nobody-at-all", &SearchFilter::default(), 3)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("nobody-at-all"), "{error}");

    // The stored embedding (the seed's `/personas/:id/embed`).
    let stored = search::stored_embedding(pool, Some(index), "albert-einstein")
        .await
        .unwrap();
    assert_eq!(stored.payload.slug, "albert-einstein");
    assert_eq!(stored.vector.len(), embedder.dimension());

    // Full text and the hybrid merge find a persona by a belief's words.
    let text = search::full_text(pool, "imagination knowledge", &SearchFilter::default(), 5)
        .await
        .unwrap();
    assert_eq!(slugs(&text).first(), Some(&"albert-einstein"), "{:?}", slugs(&text));
    let hybrid = search::hybrid(
        pool,
        &semantic,
        "imagination is more important than knowledge",
        &SearchFilter::default(),
        5,
    )
    .await
    .unwrap();
    assert_eq!(hybrid[0].slug, "albert-einstein", "{:?}", slugs(&hybrid));
}

async fn filters_hold_on_every_semantic_result(backend: Backend) {
    let Some(setup) = sample_setup(backend, "filters_hold_on_every_semantic_result").await else {
        return;
    };
    let pool = &setup.database.pool;
    let embedder = embedder().await;
    let semantic = Semantic {
        embedder: Some(&embedder),
        index: Some(setup.projector.index()),
    };
    let filters = [
        SearchFilter {
            domain: Some("philosophy".into()),
            ..SearchFilter::default()
        },
        SearchFilter {
            is_real: Some(false),
            ..SearchFilter::default()
        },
        SearchFilter {
            mode: Some("Debater".into()),
            ..SearchFilter::default()
        },
        SearchFilter {
            traits: vec!["ocean.openness=0.8..".parse().unwrap()],
            ..SearchFilter::default()
        },
    ];
    for filter in filters {
        let found = search::semantic(&semantic, "a wise teacher", &filter, 100)
            .await
            .unwrap();
        // The expected set, from PostgreSQL's copy of the documents.
        let expected: Vec<String> = sqlx::query_scalar(
            "SELECT p.slug FROM personas p JOIN persona_versions v ON v.id = p.current_version_id
             WHERE NOT p.deleted
               AND ($1::text IS NULL OR v.document->'domains' ? $1)
               AND ($2::boolean IS NULL OR (v.document->>'is_real')::boolean = $2)
               AND ($3::text IS NULL OR coalesce((v.document->'modes'->>$3)::boolean, false))
               AND ($4::float8 IS NULL OR (v.document->'traits'->'ocean'->>'openness')::float8 >= $4)
             ORDER BY p.slug",
        )
        .bind(filter.domain.as_deref())
        .bind(filter.is_real)
        .bind(filter.mode.as_deref())
        .bind(filter.traits.first().and_then(|range| range.min))
        .fetch_all(pool)
        .await
        .unwrap();
        assert!(!expected.is_empty(), "{filter:?} matches nobody in the sample registry");
        let mut got: Vec<String> = found.iter().map(|found| found.slug.clone()).collect();
        got.sort();
        assert_eq!(got, expected, "{filter:?}");
        // Full text honours the same filter: a word several personas of
        // every filter use ("people"), so the check has hits to look at.
        let mentioning: Vec<String> = sqlx::query_scalar(
            "SELECT slug FROM personas WHERE NOT deleted
               AND search_vector @@ websearch_to_tsquery('english', 'people')",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        let mut expected_text: Vec<&String> = expected.iter().filter(|slug| mentioning.contains(slug)).collect();
        expected_text.sort();
        assert!(
            expected_text.len() >= 2,
            "{filter:?}: the sample registry has only {expected_text:?} saying \"people\""
        );
        let text = search::full_text(pool, "people", &filter, 100).await.unwrap();
        let mut got_text: Vec<&String> = text.iter().map(|found| &found.slug).collect();
        got_text.sort();
        assert_eq!(got_text, expected_text, "full text under {filter:?}");
    }
}

async fn the_model_runs_once_per_current_persona_and_never_for_an_unchanged_one(backend: Backend) {
    // 12 personas, each revised 4 times: 48 versions, 12 current.
    let shape = SyntheticRegistry {
        personas: 12,
        revisions: 4,
        personas_per_commit: 3,
    };
    let directory = tempfile::tempdir().unwrap();
    let repository = directory.path().join("registry.git");
    shape.write_repository(&repository, "main").unwrap();
    let TestDatabase { pool, .. } = fresh().await;
    let options = SyncOptions::new(&repository, "main");
    let synced = sync_once(&pool, &options).await.unwrap();
    assert_eq!(synced.versions, 48);
    assert_eq!(outbox_rows(&pool).await, 48, "one outbox row per version");

    let model = embedder().await;
    let Some(TestIndex { index, collection }) = TestIndex::open(
        backend,
        "the_model_runs_once_per_current_persona_and_never_for_an_unchanged_one",
        directory.path(),
        model.dimension(),
    )
    .await
    else {
        return;
    };
    let projector = VectorProjector::new(pool.clone(), index, model.clone());
    let first = projector.drain().await.unwrap();
    assert_eq!((first.embedded, first.upserted), (12, 12), "{first}");
    assert_eq!(projector.index().count().await.unwrap(), 12);

    // Nothing changed: no model pass, no write.
    sync_once(&pool, &options).await.unwrap();
    let again = projector.drain().await.unwrap();
    assert_eq!((again.embedded, again.upserted), (0, 0), "{again}");
    let reconciled = projector
        .reconcile(false, &indicatif::ProgressBar::hidden())
        .await
        .unwrap();
    assert_eq!(
        (reconciled.embedded, reconciled.upserted, reconciled.deleted),
        (0, 0, 0),
        "{reconciled}"
    );

    // Deleting the index and rebuilding it from PostgreSQL needs no model pass either.
    let emptied = TestIndex {
        index: projector.into_index(),
        collection,
    }
    .wipe(directory.path(), model.dimension())
    .await;
    assert_eq!(emptied.index.count().await.unwrap(), 0);
    let projector = VectorProjector::new(pool.clone(), emptied.index, model);
    let rebuilt = projector
        .reconcile(false, &indicatif::ProgressBar::hidden())
        .await
        .unwrap();
    assert_eq!(
        (rebuilt.embedded, rebuilt.reused, rebuilt.upserted),
        (0, 12, 12),
        "{rebuilt}"
    );
    assert_eq!(projector.index().count().await.unwrap(), 12);
}

async fn edits_and_deletions_reach_the_index(backend: Backend) {
    let directory = tempfile::tempdir().unwrap();
    let embedder = embedder().await;
    let Some(TestIndex {
        index,
        collection: _collection,
    }) = TestIndex::open(
        backend,
        "edits_and_deletions_reach_the_index",
        directory.path(),
        embedder.dimension(),
    )
    .await
    else {
        return;
    };
    let repo = TestRepo::new();
    repo.write("registry/registry.toml", SETTINGS);
    repo.write("registry/personas/alice.toml", &persona(ID_A, "Alice"));
    repo.write("registry/personas/bob.toml", &persona(ID_B, "Bob"));
    repo.commit("alice and bob");
    let TestDatabase { pool, .. } = fresh().await;
    sync(&pool, &repo).await;
    let projector = VectorProjector::new(pool.clone(), index, embedder);
    projector.drain().await.unwrap();
    let id_a: uuid::Uuid = ID_A.parse().unwrap();
    let id_b: uuid::Uuid = ID_B.parse().unwrap();
    let before = projector.index().point(id_a).await.unwrap().unwrap();

    repo.write(
        "registry/personas/alice.toml",
        &edit(
            &persona(ID_A, "Alice"),
            "A test persona.",
            "A marine biologist who studies coral reefs.",
        ),
    );
    repo.remove("registry/personas/bob.toml");
    repo.commit("alice changes field, bob leaves");
    sync(&pool, &repo).await;
    let step = projector.drain().await.unwrap();
    assert_eq!((step.embedded, step.upserted, step.deleted), (1, 1, 1), "{step}");
    let after = projector.index().point(id_a).await.unwrap().unwrap();
    assert_eq!(after.payload.version_no, 2);
    assert_ne!(after.payload.content_hash, before.payload.content_hash);
    assert!(projector.index().point(id_b).await.unwrap().is_none());
    assert_eq!(projector.index().count().await.unwrap(), 1);
}

async fn an_index_outage_delays_updates_and_loses_none(backend: Backend) {
    let directory = tempfile::tempdir().unwrap();
    let embedder = embedder().await;
    let Some(TestIndex {
        index,
        collection: _collection,
    }) = TestIndex::open(
        backend,
        "an_index_outage_delays_updates_and_loses_none",
        directory.path(),
        embedder.dimension(),
    )
    .await
    else {
        return;
    };
    let repo = sample_repository();
    let TestDatabase { pool, .. } = fresh().await;
    sync(&pool, &repo).await;
    let rows = outbox_rows(&pool).await;
    let live = live_personas(&pool).await;
    assert_eq!(rows, live);

    // The index is a Qdrant server that is down (nothing listens on the port).
    let down = QdrantIndex::connect("http://127.0.0.1:9", None, "personas").unwrap();
    let failing = VectorProjector::new(pool.clone(), down, embedder.clone());
    let error = failing.drain().await.unwrap_err();
    assert!(error.to_string().contains("unavailable"), "{error}");
    assert_eq!(outbox_rows(&pool).await, rows, "a failed write keeps every outbox row");
    let (attempts, last_error): (i32, Option<String>) =
        sqlx::query_as("SELECT min(attempts), min(last_error) FROM vector_outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(attempts >= 1, "the failure is counted");
    assert!(last_error.is_some_and(|error| error.contains("127.0.0.1:9")));
    // Backed off: an immediate retry does not hammer the index.
    let waiting: i64 = count(
        &pool,
        "SELECT count(*) FROM vector_outbox WHERE next_attempt_at > now()",
    )
    .await;
    assert!(waiting > 0);

    // The index comes back: once the backoff has passed, every update lands.
    let recovered = VectorProjector::new(pool.clone(), index, embedder);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let summary = recovered.drain().await.unwrap();
    assert_eq!(summary.upserted, live as u64, "{summary}");
    assert_eq!(outbox_rows(&pool).await, 0);
    assert_eq!(recovered.index().count().await.unwrap(), live as u64);
}

async fn a_model_change_reindexes_every_persona(backend: Backend) {
    let Some(Setup {
        database,
        directory,
        projector,
        _collection,
        ..
    }) = sample_setup(backend, "a_model_change_reindexes_every_persona").await
    else {
        return;
    };
    let pool = &database.pool;
    let live = live_personas(pool).await as u64;
    let old_model = embedder().await.model_id().to_string();

    // Another model: the same files under another name is enough for the id
    // (directory name + weights digest) to change, which is what is stored.
    let other = directory.path().join("another-model");
    std::fs::create_dir_all(&other).unwrap();
    for entry in std::fs::read_dir(model_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, other.join(path.file_name().unwrap())).unwrap();
        }
    }
    let other_embedder = Arc::new(
        tokio::task::spawn_blocking(move || Embedder::load(&other, None).unwrap())
            .await
            .unwrap(),
    );
    assert_ne!(other_embedder.model_id(), old_model);
    let new_model = other_embedder.model_id().to_string();

    let index = projector.into_index();
    let switched = VectorProjector::new(pool.clone(), index, other_embedder);
    let summary = switched
        .reconcile(false, &indicatif::ProgressBar::hidden())
        .await
        .unwrap();
    assert_eq!((summary.embedded, summary.upserted), (live, live), "{summary}");
    let stamps = switched.index().stamps().await.unwrap();
    assert_eq!(stamps.len() as u64, live);
    assert!(
        stamps.iter().all(|stamp| stamp.model_id == new_model),
        "a mix of vector spaces"
    );
}
