//! The website and the read API through the router itself (no network): a
//! real git repository built here, synced into a real PostgreSQL, and for the
//! semantic routes the real model and a real qdrant-edge shard. Pages are
//! checked through CSS selectors, API answers through insta snapshots with
//! ids, times, commits and hashes redacted.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::http::{Method, StatusCode, header};
use common::app::{Answer, get, request};
use common::db::{TestDatabase, fresh};
use common::*;
use personas::sync::{SyncOptions, sync_once};
use personas::vectors::embed::Embedder;
use personas::vectors::index::VectorIndex;
use personas::vectors::projector::VectorProjector;
use personas::vectors::setup::Vectors;
use personas::web::{Shared, router};
use scraper::{Html, Selector};
use serde_json::Value;

struct Site {
    app: Router,
    state: Option<Arc<Shared>>,
    database: TestDatabase,
    repo: TestRepo,
    _vectors_dir: Option<tempfile::TempDir>,
}

async fn embedder() -> Arc<Embedder> {
    static EMBEDDER: tokio::sync::OnceCell<Arc<Embedder>> = tokio::sync::OnceCell::const_new();
    EMBEDDER
        .get_or_init(|| async {
            let dir = PathBuf::from(
                std::env::var_os("PERSONAS_EMBED_MODEL_DIR")
                    .expect("PERSONAS_EMBED_MODEL_DIR is not set: run scripts/fetch-model (scripts/test does)"),
            );
            tokio::task::spawn_blocking(move || Arc::new(Embedder::load(&dir, None).expect("the model loads")))
                .await
                .unwrap()
        })
        .await
        .clone()
}

/// The sample registry plus a second version of Einstein and a tag, synced.
async fn site(with_vectors: bool) -> Site {
    let repo = sample_repository();
    let path = "registry/personas/albert-einstein.toml";
    let text = std::fs::read_to_string(repo.path().join(path)).unwrap();
    repo.git(&["tag", "v1.0"]);
    repo.write(path, &replace_value(&text, "extraversion", "0.41"));
    repo.commit("einstein: a little more outgoing");
    synced(repo, with_vectors).await
}

/// `repo` synced into a fresh database (and, with vectors, indexed).
async fn synced(repo: TestRepo, with_vectors: bool) -> Site {
    let site = Site {
        app: Router::new(),
        state: None,
        database: fresh().await,
        repo,
        _vectors_dir: None,
    };
    finish(site, with_vectors).await
}

/// Replaces the value of the first `name = …` line.
fn replace_value(text: &str, name: &str, value: &str) -> String {
    let start = text.find(&format!("{name} = ")).expect("trait present");
    let end = start + text[start..].find('\n').unwrap();
    format!("{}{name} = {value}{}", &text[..start], &text[end..])
}

async fn finish(mut site: Site, with_vectors: bool) -> Site {
    let pool = site.database.pool.clone();
    sync_once(&pool, &SyncOptions::new(site.repo.path(), "main"))
        .await
        .unwrap();
    let vectors = if with_vectors {
        let embedder = embedder().await;
        let (directory, index) = indexed_on_edge(&pool, &embedder).await;
        site._vectors_dir = Some(directory);
        Some(Vectors { embedder, index })
    } else {
        None
    };
    let state = Arc::new(Shared::new(
        pool,
        vectors,
        Some((site.repo.path().to_path_buf(), "main".to_string())),
    ));
    site.app = router(Arc::clone(&state));
    site.state = Some(state);
    site
}

fn select<'a>(html: &'a Html, selector: &str) -> Vec<scraper::ElementRef<'a>> {
    html.select(&Selector::parse(selector).unwrap()).collect()
}

fn text_of(element: &scraper::ElementRef<'_>) -> String {
    element.text().collect::<Vec<_>>().join("").trim().to_string()
}

async fn live_personas(site: &Site) -> usize {
    common::db::count(&site.database.pool, "SELECT count(*) FROM personas WHERE NOT deleted").await as usize
}

#[tokio::test]
async fn every_page_renders_what_it_promises() {
    let site = site(false).await;
    let app = &site.app;

    let index = get(app, "/").await;
    assert_eq!(index.status, StatusCode::OK);
    let html = index.html();
    assert_eq!(select(&html, "article.card").len(), live_personas(&site).await);
    assert!(!select(&html, ".facets a[href='/?domain=physics']").is_empty());
    let physics = get(app, "/?domain=physics").await.html();
    let names: Vec<String> = select(&physics, "article.card h2").iter().map(text_of).collect();
    assert!(
        names.contains(&"Albert Einstein".to_string()) && names.contains(&"Marie Curie".to_string()),
        "{names:?}"
    );
    assert!(!names.contains(&"Frida Kahlo".to_string()));
    let fictional = get(app, "/?is_real=false").await.html();
    let cards = select(&fictional, "article.card").len();
    assert!(cards > 0, "the fictional filter lists nobody");
    assert_eq!(select(&fictional, "article.card .badge.fictional").len(), cards);
    assert!(select(&fictional, "article.card .badge.real").is_empty());

    let page = get(app, "/p/albert-einstein").await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.html();
    assert_eq!(text_of(&select(&html, "h1")[0]), "Albert Einstein");
    assert!(
        !select(&html, "svg.trait-chart rect.trait-bar").is_empty(),
        "trait chart"
    );
    let citations = select(&html, ".beliefs a.citation");
    assert!(!citations.is_empty());
    for citation in &citations {
        assert!(citation.value().attr("href").unwrap().starts_with("http"));
    }
    assert!(text_of(&select(&html, ".version-badge")[0]).contains("v2"));
    assert_eq!(
        select(&html, ".version-badge a")[0].value().attr("href"),
        Some("/p/albert-einstein/v/2")
    );
    assert!(!select(&html, ".mode-list li.enabled").is_empty());
    assert!(!select(&html, ".config dd").is_empty());
    assert!(
        select(&html, ".similar .note")
            .iter()
            .any(|note| text_of(note).contains("not configured"))
    );

    let history = get(app, "/p/albert-einstein/history").await.html();
    let versions = select(&history, "ol.timeline > li");
    assert_eq!(versions.len(), 2);
    let newest = text_of(&versions[0]);
    assert!(newest.contains("a little more outgoing"), "{newest}");
    assert!(newest.contains("traits.ocean.extraversion"), "{newest}");
    assert!(!select(&history, "ul.diff svg.delta").is_empty(), "trait delta bars");

    let pinned = get(app, "/p/albert-einstein/v/1").await;
    assert_eq!(pinned.status, StatusCode::OK);
    // A pinned page still shows what changes (the current version), so it revalidates.
    assert_eq!(
        pinned.headers[header::CACHE_CONTROL],
        "public, max-age=5, must-revalidate"
    );
    let html = pinned.html();
    assert!(text_of(&select(&html, ".pinned-banner")[0]).contains("current version is v2"));

    let compare = get(app, "/p/albert-einstein/compare/1...2").await.html();
    assert!(
        select(&compare, "ul.diff li")
            .iter()
            .any(|item| text_of(item).contains("extraversion"))
    );
    assert_eq!(
        get(app, "/p/albert-einstein/compare/1-2").await.status,
        StatusCode::BAD_REQUEST
    );

    let search = get(app, "/search?q=imagination").await.html();
    let found: Vec<String> = select(&search, ".full-text li a").iter().map(text_of).collect();
    assert!(found.contains(&"Albert Einstein".to_string()), "{found:?}");
    assert!(text_of(&select(&search, ".semantic .note")[0]).contains("not configured"));

    let changes = get(app, "/changes").await.html();
    assert!(text_of(&select(&changes, "ol.timeline > li")[0]).contains("a little more outgoing"));
    let feed = get(app, "/changes.atom").await;
    assert!(
        feed.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/atom+xml")
    );
    assert!(feed.body.contains("<feed xmlns=\"http://www.w3.org/2005/Atom\">"));
    assert!(feed.body.contains("Albert Einstein v2: modified"));

    let status = get(app, "/status").await.html();
    assert!(text_of(&select(&status, ".status")[0]).contains(&site.repo.git(&["rev-parse", "HEAD"])));
    assert!(text_of(&select(&status, ".status")[0]).contains("0 s behind"));

    assert_eq!(
        get(app, "/?page=9223372036854775807").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(get(app, "/?page=0").await.status, StatusCode::BAD_REQUEST);

    let css = get(app, "/style.css").await;
    assert!(
        css.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );

    // Errors are real pages.
    let missing = get(app, "/p/nobody").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(text_of(&select(&missing.html(), "h1")[0]).contains("404"));
    let nowhere = get(app, "/no/such/page").await;
    assert_eq!(nowhere.status, StatusCode::NOT_FOUND);
    nowhere.html();
    let bad_pin = get(app, "/p/albert-einstein/v/a..b").await;
    assert_eq!(bad_pin.status, StatusCode::BAD_REQUEST);
    assert!(text_of(&select(&bad_pin.html(), ".message")[0]).contains("malformed pin"));
}

#[tokio::test]
async fn renamed_personas_redirect_and_deleted_ones_are_gone() {
    let mut site = site(false).await;
    site.repo.git(&[
        "mv",
        "registry/personas/socrates.toml",
        "registry/personas/socrates-of-athens.toml",
    ]);
    let path = site.repo.path().join("registry/personas/socrates-of-athens.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("slug = \"socrates\"", "slug = \"socrates-of-athens\""),
    )
    .unwrap();
    site.repo.remove("registry/personas/jane-austen.toml");
    site.repo.commit("rename socrates, remove austen");
    site = finish(site, false).await;
    let app = &site.app;
    let moved = get(app, "/p/socrates").await;
    assert_eq!(moved.status, StatusCode::TEMPORARY_REDIRECT, "{}", moved.body);
    assert_eq!(moved.headers[header::LOCATION], "/p/socrates-of-athens");
    assert_eq!(get(app, "/p/socrates-of-athens").await.status, StatusCode::OK);
    assert_eq!(
        get(app, "/api/personas/socrates").await.json()["slug"],
        "socrates-of-athens"
    );
    let gone = get(app, "/api/personas/jane-austen").await;
    assert_eq!(gone.status, StatusCode::GONE);
    assert_eq!(gone.error_code(), "deleted");
    // Its earlier version stays readable by pin.
    assert_eq!(get(app, "/api/personas/jane-austen@1").await.status, StatusCode::OK);
}

/// The value of one counter on `/metrics`.
async fn counter(app: &Router, name: &str) -> u64 {
    let metrics = get(app, "/metrics").await.body;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no counter {name} in {metrics}"))
}

/// Pins by id asked for together are answered by shared queries, and each
/// asker gets its own version: the same pin twice, missing versions, an
/// unknown id, a deleted persona and a slug mixed in.
#[tokio::test]
async fn concurrent_pinned_reads_share_queries_and_each_gets_its_own_version() {
    let mut site = site(false).await;
    site.repo.remove("registry/personas/jane-austen.toml");
    site.repo.commit("remove austen");
    site = finish(site, false).await;
    let app = &site.app;

    // What each pin must answer, read one at a time from each persona's history.
    let mut expected: Vec<(String, Option<(i64, String)>)> = Vec::new();
    let list = get(app, "/api/personas?limit=100").await.json();
    let mut ids: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_string())
        .collect();
    let austen = site.database.pool.clone();
    let austen: uuid::Uuid = sqlx::query_scalar("SELECT id FROM personas WHERE slug = 'jane-austen'")
        .fetch_one(&austen)
        .await
        .unwrap();
    ids.push(austen.to_string());
    for id in &ids {
        let history = get(app, &format!("/api/personas/{id}/versions")).await.json();
        for version in history["versions"].as_array().unwrap() {
            let (Some(number), Some(hash)) = (version["version"].as_i64(), version["content_hash"].as_str()) else {
                continue; // the deletion: no content to pin
            };
            expected.push((format!("/api/personas/{id}@{number}"), Some((number, hash.to_string()))));
        }
        expected.push((format!("/api/personas/{id}@99"), None));
    }
    expected.push(("/api/personas/00000000-0000-4000-8000-0000000000aa@1".to_string(), None));
    let by_slug = get(app, "/api/personas/albert-einstein@1").await.json();
    let by_id_count = expected.len() * 2;
    expected.push((
        "/api/personas/albert-einstein@1".to_string(),
        Some((1, by_slug["content_hash"].as_str().unwrap().to_string())),
    ));
    let asks: Vec<(String, Option<(i64, String)>)> = expected.iter().chain(expected.iter()).cloned().collect();
    assert!(asks.len() > 40, "enough pins to share queries: {}", asks.len());

    let (pins_before, queries_before) = (
        counter(app, "personas_pinned_reads_total").await,
        counter(app, "personas_pinned_read_queries_total").await,
    );
    // All asked at once: spawned before any of them runs.
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (uri, _)) in asks.iter().enumerate() {
        let (app, uri) = (app.clone(), uri.clone());
        tasks.spawn(async move { (index, get(&app, &uri).await) });
    }
    let answers = tasks.join_all().await;
    assert_eq!(answers.len(), asks.len());
    for (index, answer) in answers {
        let (uri, wanted) = &asks[index];
        match wanted {
            Some((number, hash)) => {
                assert_eq!(answer.status, StatusCode::OK, "{uri}: {}", answer.body);
                let body = answer.json();
                assert_eq!(body["version"].as_i64(), Some(*number), "{uri}");
                assert_eq!(body["content_hash"].as_str(), Some(hash.as_str()), "{uri}");
                assert_eq!(body["pinned"], true, "{uri}");
            }
            None => {
                assert_eq!(answer.status, StatusCode::NOT_FOUND, "{uri}: {}", answer.body);
                assert_eq!(answer.error_code(), "not_found", "{uri}");
            }
        }
    }
    let pins = counter(app, "personas_pinned_reads_total").await - pins_before;
    let queries = counter(app, "personas_pinned_read_queries_total").await - queries_before;
    assert_eq!(
        pins as usize, by_id_count,
        "every pin by id, and only those, went to the shared reads"
    );
    assert!(
        queries * 4 <= pins,
        "{pins} pins took {queries} queries: they did not share"
    );
}

/// A pin by id is answered with the document text the sync stored, passed
/// through unparsed; the bytes and the ETag must be those of the answer
/// built from the parsed document: the same pin by slug (which parses), and
/// the same pin by id once the stored text is gone (a version projected
/// before it was stored).
#[tokio::test]
async fn a_pinned_answer_passes_the_stored_document_through_unchanged() {
    let site = site(false).await;
    let pool = site.database.pool.clone();
    let unstored = common::db::count(
        &pool,
        "SELECT count(*) FROM persona_versions WHERE document IS NOT NULL AND document_json IS NULL",
    )
    .await;
    assert_eq!(unstored, 0, "the sync stores each document's text");
    // Every request reads the database: nothing is answered from memory.
    let state = Arc::new(
        Shared::new(
            pool.clone(),
            None,
            Some((site.repo.path().to_path_buf(), "main".to_string())),
        )
        .with_kept_answers(0),
    );
    let app = router(state);
    let pins: Vec<(uuid::Uuid, String, i32)> = sqlx::query_as(
        "SELECT v.persona_id, v.slug, v.version_no FROM persona_versions v
         WHERE v.document IS NOT NULL ORDER BY v.persona_id, v.version_no",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(pins.len() > 20, "the sample registry's versions: {}", pins.len());
    let answer_of = |answer: Answer, uri: &str| {
        assert_eq!(answer.status, StatusCode::OK, "{uri}: {}", answer.body);
        let etag = answer.headers.get(header::ETAG).expect("an ETag").clone();
        (answer.body, etag)
    };
    let mut stored = Vec::new();
    for (id, slug, number) in &pins {
        let by_id = format!("/api/personas/{id}@{number}");
        let (body, etag) = answer_of(get(&app, &by_id).await, &by_id);
        let by_slug = format!("/api/personas/{slug}@{number}");
        let parsed = answer_of(get(&app, &by_slug).await, &by_slug);
        assert_eq!((&body, &etag), (&parsed.0, &parsed.1), "{by_id} against {by_slug}");
        stored.push((by_id, body, etag));
    }
    let pinned_reads = counter(&app, "personas_pinned_reads_total").await;
    assert_eq!(
        pinned_reads as usize,
        pins.len(),
        "each pin by id took the pinned reads"
    );

    sqlx::query("UPDATE persona_versions SET document_json = NULL")
        .execute(&pool)
        .await
        .unwrap();
    for (by_id, body, etag) in stored {
        let parsed = answer_of(get(&app, &by_id).await, &by_id);
        assert_eq!(
            (body, etag),
            parsed,
            "{by_id} from the stored text against the parsed document"
        );
    }
}

#[tokio::test]
async fn pins_into_rewritten_history_still_answer_and_say_so() {
    let repo = TestRepo::new();
    repo.write("registry/registry.toml", SETTINGS);
    repo.write("registry/personas/alice.toml", &persona(ID_A, "Alice"));
    let first = repo.commit("add alice");
    repo.write(
        "registry/personas/alice.toml",
        &edit(&persona(ID_A, "Alice"), "openness = 0.9", "openness = 0.95"),
    );
    let doomed = repo.commit("alice: more open");
    repo.write("README.md", "unrelated\n");
    let unrelated = repo.commit("docs");
    let mut site = synced(repo, false).await;
    // A commit that did not touch alice pins her version at that point.
    let at_docs = get(&site.app, &format!("/api/personas/alice@{}", &unrelated[..10]))
        .await
        .json();
    assert_eq!(
        (at_docs["version"].as_i64(), at_docs["retracted"].as_bool()),
        (Some(2), Some(false))
    );

    // Force-push: v2's commit leaves the branch; a different edit replaces it.
    site.repo.git(&["reset", "-q", "--hard", &first]);
    site.repo.write(
        "registry/personas/alice.toml",
        &edit(&persona(ID_A, "Alice"), "openness = 0.9", "openness = 0.5"),
    );
    let replacement = site.repo.commit("alice: less open");
    site = finish(site, false).await;
    let app = &site.app;
    let current = get(app, "/api/personas/alice").await.json();
    assert_eq!(current["version"], 3, "versions are never renumbered");
    assert_eq!(current["persona"]["traits"]["ocean"]["openness"], 0.5);
    let old = get(app, &format!("/api/personas/alice@{doomed}")).await.json();
    assert_eq!(
        (old["version"].as_i64(), old["retracted"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(old["persona"]["traits"]["ocean"]["openness"], 0.95);
    let old_docs = get(app, &format!("/api/personas/alice@{unrelated}")).await.json();
    assert_eq!(
        old_docs["version"], 2,
        "a retracted commit pins the history it belonged to"
    );
    assert_eq!(
        get(app, &format!("/api/personas/alice@{replacement}")).await.json()["version"],
        3
    );
    assert_eq!(
        get(app, &format!("/api/personas/alice@{first}")).await.json()["version"],
        1
    );
    let history = get(app, "/p/alice/history").await.html();
    assert_eq!(select(&history, "ol.timeline > li.retracted").len(), 1);
}

#[tokio::test]
async fn the_api_answers_every_route_with_cacheable_json() {
    let site = site(false).await;
    let app = &site.app;
    let redactions = |value: &mut Value| {
        for key in [
            "id",
            "commit",
            "committed_at",
            "authored_at",
            "created_at",
            "updated_at",
            "content_hash",
        ] {
            redact(value, key);
        }
    };

    let list = get(app, "/api/personas?domain=physics&sort=name").await;
    assert_eq!(list.status, StatusCode::OK);
    let mut body = list.json();
    assert_eq!(body["total"], 2);
    redactions(&mut body);
    insta::assert_json_snapshot!("list_physics", body);
    let page = get(app, "/api/personas?limit=5&offset=5").await.json();
    assert_eq!(page["items"].as_array().unwrap().len(), 5);
    assert_eq!(page["total"].as_i64().unwrap() as usize, live_personas(&site).await);

    // Current version: revalidating; pinned: immutable; the ETag is the content hash.
    let current = get(app, "/api/personas/albert-einstein").await;
    assert_eq!(
        current.headers[header::CACHE_CONTROL],
        "public, max-age=5, must-revalidate"
    );
    let current_body = current.json();
    assert_eq!(current_body["version"], 2);
    assert_eq!(current_body["pinned"], false);
    let etag = current.headers[header::ETAG].to_str().unwrap().to_string();
    // Unpinned: content hash and version (a revert brings old content back as a new version).
    assert_eq!(
        etag,
        format!("\"{}@v2\"", current_body["content_hash"].as_str().unwrap())
    );
    let again = request(
        app,
        Method::GET,
        "/api/personas/albert-einstein",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());

    let first = get(app, "/api/personas/albert-einstein@1").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(
        first.headers[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    let mut first_body = first.json();
    assert_eq!(first_body["version"], 1);
    // The persona's first and last commit times: created with version 1,
    // changed last by version 2, in a later commit; the list says the same.
    assert_eq!(first_body["created_at"], first_body["committed_at"]);
    assert_eq!(current_body["created_at"], first_body["committed_at"]);
    assert_ne!(current_body["committed_at"], first_body["committed_at"]);
    let listed = get(app, "/api/personas?domain=physics&sort=name").await.json();
    let einstein = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["slug"] == "albert-einstein")
        .expect("Einstein is listed")
        .clone();
    assert_eq!(einstein["created_at"], first_body["committed_at"]);
    assert_eq!(einstein["updated_at"], current_body["committed_at"]);
    // Every way to pin version 1 names the same content.
    let hash = first_body["content_hash"].as_str().unwrap().to_string();
    let tag_commit = site.repo.git(&["rev-parse", "v1.0"]);
    let id = current_body["id"].as_str().unwrap().to_string();
    for uri in [
        "/api/personas/albert-einstein?version=1".to_string(),
        format!("/api/personas/{id}@{hash}"),
        format!("/api/personas/albert-einstein@{}", &tag_commit[..7]),
        format!("/api/personas/albert-einstein@{tag_commit}"),
        "/api/personas/albert-einstein@v1.0".to_string(),
    ] {
        let answer = get(app, &uri).await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}: {}", answer.body);
        assert_eq!(answer.json()["content_hash"], hash.as_str(), "{uri}");
    }
    // A commit that did not touch the persona pins the version current then.
    let head = site.repo.git(&["rev-parse", "HEAD"]);
    assert_eq!(
        get(app, &format!("/api/personas/marie-curie@{head}")).await.json()["version"],
        1
    );
    redactions(&mut first_body);
    assert_eq!(
        first.headers[header::ETAG],
        format!("\"{hash}\"").as_str(),
        "pinned: the content hash"
    );
    // Immutable only when the pin names one version forever.
    for (uri, policy) in [
        (
            format!("/api/personas/albert-einstein@{hash}"),
            "public, max-age=31536000, immutable",
        ),
        (
            format!("/api/personas/albert-einstein@{tag_commit}"),
            "public, max-age=31536000, immutable",
        ),
        (
            format!("/api/personas/albert-einstein@{}", &tag_commit[..8]),
            "public, max-age=5, must-revalidate",
        ),
        (
            "/api/personas/albert-einstein@v1.0".to_string(),
            "public, max-age=5, must-revalidate",
        ),
    ] {
        assert_eq!(get(app, &uri).await.headers[header::CACHE_CONTROL], policy, "{uri}");
    }
    assert_eq!(first_body["permalink"], format!("{id}@1"));
    redact(&mut first_body, "persona");
    redact(&mut first_body, "permalink");
    insta::assert_json_snapshot!("pinned_einstein", first_body);

    // Bad input: clear errors with the right status, in the JSON error shape.
    for (uri, status, code) in [
        ("/api/personas/nobody", StatusCode::NOT_FOUND, "not_found"),
        ("/api/personas/albert-einstein@0", StatusCode::BAD_REQUEST, "bad_pin"),
        (
            "/api/personas/albert-einstein@sha256:12",
            StatusCode::BAD_REQUEST,
            "bad_pin",
        ),
        ("/api/personas/albert-einstein@9", StatusCode::NOT_FOUND, "not_found"),
        (
            "/api/personas/albert-einstein@no-such-tag",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/api/personas/albert-einstein@1?version=2",
            StatusCode::BAD_REQUEST,
            "bad_pin",
        ),
        (
            "/api/personas/albert-einstein@deadbee",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        ("/api/personas?limit=abc", StatusCode::BAD_REQUEST, "bad_query"),
        ("/api/personas?limit=100000", StatusCode::BAD_REQUEST, "bad_limit"),
        (
            "/api/personas?traits=ocean.openness",
            StatusCode::BAD_REQUEST,
            "bad_filter",
        ),
        ("/api/personas/search?q=", StatusCode::BAD_REQUEST, "empty_query"),
        ("/api/personas/search", StatusCode::BAD_REQUEST, "bad_query"),
        (
            "/api/personas/search?q=x&semantic=true",
            StatusCode::SERVICE_UNAVAILABLE,
            "semantic_not_configured",
        ),
        (
            "/api/personas/search?q=x&ranking=merged",
            StatusCode::SERVICE_UNAVAILABLE,
            "semantic_not_configured",
        ),
        (
            "/api/personas/albert-einstein/similar",
            StatusCode::SERVICE_UNAVAILABLE,
            "semantic_not_configured",
        ),
        // Nothing was ever embedded here: the embedding cache is empty.
        (
            "/api/personas/albert-einstein/embed",
            StatusCode::NOT_FOUND,
            "not_embedded",
        ),
        (
            "/api/personas/albert-einstein/diff",
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        (
            "/api/personas/albert-einstein?profile=nope",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        ("/api/nothing-here", StatusCode::NOT_FOUND, "not_found"),
        ("/api/personas/a%00b", StatusCode::BAD_REQUEST, "bad_request"),
        ("/api/personas/search?q=x%00y", StatusCode::BAD_REQUEST, "bad_request"),
        ("/api/personas/%FF%FE", StatusCode::BAD_REQUEST, "bad_path"),
    ] {
        let answer = get(app, uri).await;
        assert_eq!(answer.status, status, "{uri}: {}", answer.body);
        assert_eq!(answer.error_code(), code, "{uri}: {}", answer.body);
        assert!(!answer.json()["error"]["message"].as_str().unwrap().is_empty());
    }
    // A site without tokens accepts no changes, and says why.
    let patch = request(app, Method::PATCH, "/api/personas/albert-einstein/settings", &[]).await;
    assert_eq!(patch.status, StatusCode::UNAUTHORIZED);
    assert!(patch.body.contains("none configured"), "{}", patch.body);
    let wrong_method = request(app, Method::DELETE, "/api/personas/albert-einstein", &[]).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.error_code(), "method_not_allowed");

    // An ambiguous commit prefix: two projected commits that share 7 digits.
    sqlx::query("INSERT INTO sync_commits (sha, committed_at) VALUES ($1, now()), ($2, now())")
        .bind(format!("abcdef0{}", "1".repeat(33)))
        .bind(format!("abcdef0{}", "2".repeat(33)))
        .execute(&site.database.pool)
        .await
        .unwrap();
    let ambiguous = get(app, "/api/personas/albert-einstein@abcdef0").await;
    assert_eq!(ambiguous.status, StatusCode::CONFLICT);
    assert!(
        ambiguous.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 commits")
    );

    // Versions, diff, changes, profile, search.
    let versions = get(app, "/api/personas/albert-einstein/versions").await.json();
    let numbers: Vec<i64> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, vec![2, 1]);
    let diff = get(app, "/api/personas/albert-einstein/diff?from=1&to=2").await;
    assert_eq!(
        diff.headers[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    let mut diff_body = diff.json();
    assert_eq!(diff_body["changes"][0]["kind"], "trait_changed");
    redactions(&mut diff_body);
    insta::assert_json_snapshot!("diff_einstein", diff_body);
    let changes = get(app, "/api/changes?limit=3").await.json();
    assert_eq!(changes["changes"][0]["message"], "einstein: a little more outgoing");
    let profiled = get(app, "/api/personas/albert-einstein?profile=debate-ready").await;
    let profiled_body = profiled.json();
    assert_eq!(profiled_body["profile"], "debate-ready");
    assert_eq!(profiled_body["persona"]["default_mode"], "Debater");
    assert_ne!(profiled.headers[header::ETAG], current.headers[header::ETAG]);
    let found = get(app, "/api/personas/search?q=imagination%20knowledge&is_real=true")
        .await
        .json();
    assert_eq!(found["results"][0]["slug"], "albert-einstein");
    // Without a model the default ranking is full text, and the answer says so.
    assert_eq!(found["ranking"], "text");
    assert_eq!(found["semantic"], false);

    // The OpenAPI document describes every route.
    let openapi = get(app, "/api/openapi.json").await.json();
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/api/personas",
        "/api/personas/search",
        "/api/personas/{reference}",
        "/api/personas/{reference}/versions",
        "/api/personas/{reference}/diff",
        "/api/personas/{reference}/similar",
        "/api/personas/{reference}/embed",
        "/api/personas/{reference}/settings",
        "/api/changes",
    ] {
        assert!(openapi["paths"][path].is_object(), "{path} is not documented");
    }

    // Compressed when asked for.
    let compressed = request(
        app,
        Method::GET,
        "/api/personas?limit=50",
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(compressed.headers[header::CONTENT_ENCODING], "gzip");

    // Operations endpoints.
    assert_eq!(get(app, "/healthz").await.status, StatusCode::OK);
    let ready = get(app, "/readyz").await.json();
    assert_eq!(ready["database"], "ok");
    assert_eq!(ready["sync_lag_seconds"], 0.0);
    let metrics = get(app, "/metrics").await.body;
    assert!(metrics.contains("personas_http_requests_total{"), "{metrics}");
    assert!(metrics.contains("route=\"/api/personas/{reference}\""));
    assert!(metrics.contains("personas_vector_outbox_depth"));
    assert!(metrics.contains("personas_sync_lag_seconds 0.0"));
}

#[tokio::test]
async fn semantic_routes_use_the_real_model_and_index() {
    let site = site(true).await;
    let app = &site.app;
    let found = get(
        app,
        "/api/personas/search?q=the%20theory%20of%20relativity&semantic=true&limit=5",
    )
    .await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert_eq!(found.json()["results"][0]["slug"], "albert-einstein");
    let filtered = get(
        app,
        "/api/personas/search?q=a%20wise%20teacher&semantic=true&is_real=false",
    )
    .await;
    assert_eq!(filtered.status, StatusCode::OK, "{}", filtered.body);
    let filtered = filtered.json();
    let results = filtered["results"].as_array().unwrap();
    assert!(!results.is_empty(), "no fictional persona found: {filtered}");
    for result in results {
        assert_eq!(result["is_real"], false);
    }
    let similar = get(app, "/api/personas/marie-curie/similar?limit=3").await.json();
    let slugs: Vec<&str> = similar["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs.len(), 3);
    assert!(!slugs.contains(&"marie-curie"));
    let embedding = get(app, "/api/personas/albert-einstein/embed").await.json();
    assert_eq!(embedding["dimension"], 384);
    assert_eq!(embedding["vector"].as_array().unwrap().len(), 384);
    assert_eq!(embedding["version"], 2);
    let page = get(app, "/p/marie-curie").await.html();
    assert_eq!(select(&page, ".similar li").len(), 5);
    let search = get(app, "/search?q=space%20and%20time").await.html();
    assert!(!select(&search, ".semantic li").is_empty());

    // One merged ranking first: the API's default with a model, and the page's first list.
    let merged = get(app, "/api/personas/search?q=relativity").await.json();
    assert_eq!(merged["ranking"], "merged");
    assert_eq!(merged["results"][0]["slug"], "albert-einstein", "{merged}");
    for (ranking, semantic) in [("text", false), ("semantic", true), ("merged", true)] {
        let answer = get(app, &format!("/api/personas/search?q=relativity&ranking={ranking}")).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        let body = answer.json();
        assert_eq!(body["ranking"], ranking);
        assert_eq!(body["semantic"], semantic);
        assert!(!body["results"].as_array().unwrap().is_empty(), "{ranking}: {body}");
    }
    // Both spellings: `ranking` wins, and the answer says so.
    let both = get(app, "/api/personas/search?q=relativity&ranking=text&semantic=true").await;
    assert_eq!(both.status, StatusCode::OK, "{}", both.body);
    assert_eq!(both.json()["ranking"], "text");
    let unknown = get(app, "/api/personas/search?q=relativity&ranking=best").await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.body);
    let page = get(app, "/search?q=relativity").await;
    let html = page.html();
    let best = select(&html, ".merged li a");
    assert!(!best.is_empty(), "{}", page.body);
    assert_eq!(best[0].value().attr("href"), Some("/p/albert-einstein"));
    let merged_at = page.body.find("class=\"merged\"").unwrap();
    let words_at = page.body.find("class=\"full-text\"").unwrap();
    assert!(merged_at < words_at, "the merged list comes first");
}

#[tokio::test]
async fn persona_content_is_escaped_everywhere() {
    let repo = TestRepo::new();
    repo.write("registry/registry.toml", SETTINGS);
    let evil = "<script>alert(1)</script>";
    let text = persona(ID_A, "Mallory")
        .replace("name = \"Mallory\"", &format!("name = \"Mallory {evil}\""))
        .replace("A test persona.", &format!("Evil {evil} \\\" onmouseover=\\\"alert(2)"))
        .replace("\"Test everything.\"", &format!("\"{evil}\""))
        .replace(
            "Tests should fail when the code is wrong.",
            &format!("I believe {evil}"),
        );
    repo.write("registry/personas/mallory.toml", &text);
    repo.commit(&format!("add mallory {evil}"));
    let site = synced(repo, false).await;
    for uri in [
        "/",
        "/p/mallory",
        "/p/mallory/history",
        "/p/mallory/v/1",
        "/changes",
        "/search?q=mallory",
    ] {
        let answer = get(&site.app, uri).await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}");
        assert!(!answer.body.contains("<script>"), "{uri} has a raw <script>");
        assert!(!answer.body.contains("\" onmouseover"), "{uri} lets an attribute out");
        assert!(
            answer.body.contains("&lt;script&gt;") || answer.body.contains("&#60;script&#62;"),
            "{uri}"
        );
    }
    let feed = get(&site.app, "/changes.atom").await;
    assert!(!feed.body.contains("<script>"));
    let missing = get(&site.app, "/p/%3Cscript%3E").await;
    assert!(!missing.body.contains("<script>"));
}

#[tokio::test]
async fn answers_are_kept_in_memory_until_the_projection_changes() {
    let site = site(false).await;
    let state = site.state.clone().unwrap();
    let pool = site.database.pool.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn({
        let state = Arc::clone(&state);
        let pool = pool.clone();
        async move {
            let mut stopped = stopped;
            let stop = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            state.answers.follow_changes(&pool, stop).await;
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !state.answers.is_listening() {
        assert!(std::time::Instant::now() < deadline, "never started listening");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let uri = "/api/personas/albert-einstein";
    assert_eq!(get(&site.app, uri).await.json()["author"], "Ada Author");

    // Changed behind the server's back, without the notification every writer
    // sends: the answer comes from memory.
    let silently = "UPDATE persona_versions SET author_name = 'Someone Else'
                    WHERE id = (SELECT current_version_id FROM personas WHERE slug = 'albert-einstein')";
    sqlx::query(silently).execute(&pool).await.unwrap();
    assert_eq!(
        get(&site.app, uri).await.json()["author"],
        "Ada Author",
        "not kept in memory"
    );

    // The notification drops it.
    personas::store::projection::notify_change(&pool).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while get(&site.app, uri).await.json()["author"] != "Someone Else" {
        assert!(
            std::time::Instant::now() < deadline,
            "the notification did not drop the answer"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    // A real commit, synced: the sync's own notification brings the new version.
    let path = "registry/personas/albert-einstein.toml";
    let text = std::fs::read_to_string(site.repo.path().join(path)).unwrap();
    site.repo.write(path, &replace_value(&text, "extraversion", "0.5"));
    site.repo.commit("einstein: livelier still");
    sync_once(&pool, &SyncOptions::new(site.repo.path(), "main"))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while get(&site.app, uri).await.json()["version"] != 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sync's notification did not arrive"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stop.send(true).unwrap();
    follower.await.unwrap();
    assert!(!state.answers.is_listening());
}

#[tokio::test]
async fn a_database_gone_away_is_a_clear_503_and_no_panic() {
    let site = site(false).await;
    let einstein = get(&site.app, "/api/personas/albert-einstein").await.json();
    let pinned_by_id = format!("/api/personas/{}@1", einstein["id"].as_str().unwrap());
    site.database.pool.close().await;
    for uri in [
        "/api/personas",
        "/api/personas/albert-einstein",
        "/api/changes",
        pinned_by_id.as_str(),
    ] {
        let answer = get(&site.app, uri).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{uri}: {}", answer.body);
        assert_eq!(answer.error_code(), "unavailable");
        assert!(answer.json()["error"]["message"].as_str().unwrap().contains("database"));
    }
    let page = get(&site.app, "/p/albert-einstein").await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text_of(&select(&page.html(), ".message")[0]).contains("database is unavailable"));
    let ready = get(&site.app, "/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["database"], "unreachable");
    assert_eq!(
        get(&site.app, "/healthz").await.status,
        StatusCode::OK,
        "the process itself is alive"
    );
}

#[tokio::test]
async fn prompts_render_each_version_with_the_template_of_its_commit() {
    let site = site(false).await;
    let template_path = "registry/prompt.jinja";
    let template = std::fs::read(site.repo.path().join(template_path)).unwrap();
    let sha256 = |bytes: &[u8]| personas::persona::prompt::sha256(bytes).to_string();

    let pinned = get(&site.app, "/api/personas/albert-einstein@1/prompt").await;
    assert_eq!(pinned.status, StatusCode::OK, "{}", pinned.body);
    assert!(
        pinned.headers[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    let record = pinned.json();
    let text = record["prompt"].as_str().unwrap();
    assert!(text.starts_with("You are Albert Einstein"), "{text}");
    assert!(text.contains("Current mode: Educator."), "{text}");
    assert!(text.contains("- openness: very high (0.95)"), "{text}");
    assert_eq!(record["prompt_hash"], sha256(text.as_bytes()));
    assert_eq!(record["template"]["hash"], sha256(&template));
    assert_eq!(record["version"], 1);
    // The same request answers the same bytes.
    assert_eq!(
        get(&site.app, "/api/personas/albert-einstein@1/prompt").await.body,
        pinned.body
    );

    let debating = get(&site.app, "/api/personas/albert-einstein/prompt?version=1&mode=Debater")
        .await
        .json();
    assert_eq!(debating["mode"], "Debater");
    assert_ne!(debating["prompt_hash"], record["prompt_hash"]);
    let refused = get(&site.app, "/api/personas/albert-einstein@1/prompt?mode=Mentor").await;
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (StatusCode::NOT_FOUND, "mode_not_enabled")
    );
    assert!(refused.body.contains("Mentor"), "{}", refused.body);
    let profiled = get(
        &site.app,
        "/api/personas/albert-einstein@1/prompt?mode=Mentor&profile=gentle-tutor",
    )
    .await;
    assert_eq!(profiled.status, StatusCode::OK, "{}", profiled.body);
    assert_eq!(profiled.json()["profile"], "gentle-tutor");
    assert!(
        profiled.json()["prompt"]
            .as_str()
            .unwrap()
            .contains("Session profile: Gentle Tutor")
    );
    assert!(
        profiled.headers[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("must-revalidate")
    );
    let unknown = get(&site.app, "/api/personas/albert-einstein/prompt?profile=nope").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    // The card of a version carries that version's prompt and the whole persona.
    let card = get(&site.app, "/api/personas/albert-einstein@1/card?spec=v3").await;
    assert_eq!(card.status, StatusCode::OK, "{}", card.body);
    let card = card.json();
    assert_eq!(card["spec"], "chara_card_v3");
    assert_eq!(card["data"]["system_prompt"], record["prompt"]);
    assert_eq!(card["data"]["tags"], serde_json::json!(["physics", "philosophy"]));
    assert!(
        card["data"]["source"]
            .as_array()
            .unwrap()
            .iter()
            .any(|source| source == "https://en.wikipedia.org/wiki/EPR_paradox")
    );
    assert_eq!(
        card["data"]["extensions"]["persona-registry"]["content_hash"],
        record["content_hash"]
    );
    assert_eq!(
        get(&site.app, "/api/personas/albert-einstein/card").await.json()["spec"],
        "chara_card_v2"
    );
    let bad = get(&site.app, "/api/personas/albert-einstein/card?spec=v9").await;
    assert_eq!(
        (bad.status, bad.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "bad_spec")
    );

    // A new template: the pin keeps the prompt it had, the current version takes the new one.
    site.repo.write(template_path, "Be {{ persona.name }} ({{ mode }}).\n");
    let changed_at = site.repo.commit("prompt: shorter");
    let options = SyncOptions::new(site.repo.path(), "main");
    let sync = || sync_once(&site.database.pool, &options);
    sync().await.unwrap();
    assert_eq!(
        get(&site.app, "/api/personas/albert-einstein@1/prompt").await.body,
        pinned.body
    );
    let current = get(&site.app, "/api/personas/albert-einstein/prompt").await.json();
    assert_eq!(current["prompt"], "Be Albert Einstein (Educator).\n");
    assert_eq!(current["template"]["commit"], changed_at.trim());

    // A broken template is a sync problem and changes nothing that is served.
    site.repo.write(template_path, "{% if %}");
    site.repo.commit("prompt: broken");
    sync().await.unwrap();
    assert_eq!(
        get(&site.app, "/api/personas/albert-einstein/prompt").await.json()["prompt"],
        current["prompt"]
    );

    // Without a template there is nothing to render, and the answer says so.
    site.repo.remove(template_path);
    site.repo.commit("prompt: removed");
    sync().await.unwrap();
    let missing = get(&site.app, "/api/personas/albert-einstein/prompt").await;
    assert_eq!(
        (missing.status, missing.error_code().as_str()),
        (StatusCode::NOT_FOUND, "no_template")
    );
    assert_eq!(
        get(&site.app, "/api/personas/albert-einstein@1/prompt").await.body,
        pinned.body
    );
}

#[tokio::test]
async fn a_version_older_than_the_first_template_renders_with_that_template() {
    let repo = TestRepo::new();
    repo.write("registry/registry.toml", SETTINGS);
    repo.write("registry/personas/ada.toml", &persona(ID_A, "Ada"));
    repo.commit("add ada");
    let site = synced(repo, false).await;
    let before = get(&site.app, "/api/personas/ada@1/prompt").await;
    assert_eq!(
        (before.status, before.error_code().as_str()),
        (StatusCode::NOT_FOUND, "no_template")
    );
    site.repo.write("registry/prompt.jinja", "I am {{ persona.name }}.\n");
    let first = site.repo.commit("prompt: first template");
    sync_once(&site.database.pool, &SyncOptions::new(site.repo.path(), "main"))
        .await
        .unwrap();
    let pinned = get(&site.app, "/api/personas/ada@1/prompt").await.json();
    assert_eq!(pinned["prompt"], "I am Ada.\n");
    assert_eq!(pinned["template"]["commit"], first.trim());
    // A later template does not change what the pin renders.
    site.repo
        .write("registry/prompt.jinja", "Call me {{ persona.name }}.\n");
    site.repo.commit("prompt: second template");
    sync_once(&site.database.pool, &SyncOptions::new(site.repo.path(), "main"))
        .await
        .unwrap();
    assert_eq!(
        get(&site.app, "/api/personas/ada@1/prompt").await.json()["prompt"],
        "I am Ada.\n"
    );
    assert_eq!(
        get(&site.app, "/api/personas/ada/prompt").await.json()["prompt"],
        "Call me Ada.\n"
    );
}

fn redact(value: &mut Value, key: &str) {
    match value {
        Value::Object(map) => {
            for (name, child) in map.iter_mut() {
                if name == key {
                    *child = Value::String(format!("[{key}]"));
                } else {
                    redact(child, key);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| redact(item, key)),
        _ => {}
    }
}

/// What contract fuzzing (`scripts/contract`, schemathesis against the
/// OpenAPI document) found, kept fixed: each case the document and the server
/// disagreed on.
#[tokio::test]
async fn the_cases_contract_fuzzing_found_stay_fixed() {
    let site = site(false).await;
    let app = &site.app;
    let refused = |answer: &Answer, code: &str| {
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
        assert_eq!(answer.error_code(), code, "{}", answer.body);
    };

    // An empty number is not a number (the document says integer/boolean).
    for uri in [
        "/api/personas?limit=",
        "/api/personas?offset=",
        "/api/personas/search?q=x&limit=",
        "/api/personas/search?q=x&semantic=",
        "/api/webhooks/deliveries?limit=",
    ] {
        refused(&get(app, uri).await, "bad_query");
    }
    // A limit past i64 is refused as JSON, and /similar lists its 400.
    refused(
        &get(app, "/api/personas/albert-einstein/similar?limit=99999999999999999999").await,
        "bad_query",
    );

    // An empty pin is malformed even when the unpinned answer is kept in memory.
    for route in ["/api/personas/albert-einstein", "/api/personas/albert-einstein/prompt"] {
        assert_eq!(get(app, route).await.status, StatusCode::OK);
        refused(&get(app, &format!("{route}?version=")).await, "bad_pin");
        let unprofiled = get(app, &format!("{route}?profile=")).await;
        assert_eq!(unprofiled.status, StatusCode::NOT_FOUND, "{}", unprofiled.body);
    }

    // A mode the version does not enable: its prompt does not exist.
    let mentor = get(app, "/api/personas/albert-einstein/prompt?mode=Mentor").await;
    assert_eq!(
        (mentor.status, mentor.error_code().as_str()),
        (StatusCode::NOT_FOUND, "mode_not_enabled")
    );

    // A trait range whose minimum is above its maximum is empty, not an error.
    let empty = get(app, "/api/personas?traits=ocean.openness=0.9..0.1").await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.body);
    assert_eq!(empty.json()["items"].as_array().unwrap().len(), 0);

    // A NUL byte in a query value is refused before any handler, as JSON.
    let nul = get(app, "/api/personas/albert-einstein?profile=%00x").await;
    assert_eq!(nul.status, StatusCode::BAD_REQUEST);
    assert!(nul.body.contains("NUL"), "{}", nul.body);

    // The document states each of those constraints.
    let document = get(app, "/api/openapi.json").await.json();
    let parameter = |path: &str, method: &str, name: &str| -> Value {
        document["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|parameter| parameter["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))["schema"]
            .clone()
    };
    for (path, maximum) in [
        ("/api/personas", 500),
        ("/api/personas/search", 100),
        ("/api/personas/{reference}/similar", 50),
        ("/api/changes", 500),
        ("/api/webhooks/deliveries", 500),
    ] {
        let limit = parameter(path, "get", "limit");
        assert_eq!(
            (limit["minimum"].clone(), limit["maximum"].clone()),
            (serde_json::json!(1), serde_json::json!(maximum)),
            "{path}"
        );
    }
    assert!(document["paths"]["/api/personas/{reference}/similar"]["get"]["responses"]["400"].is_object());
    let pin = parameter("/api/personas/{reference}", "get", "version");
    let pattern = regex::Regex::new(pin["pattern"].as_str().unwrap()).unwrap();
    // Every pin the README shows matches the documented pattern and parses;
    // the malformed ones do not match.
    let content_pin = format!("sha256:{}", "0a".repeat(32));
    for good in [
        "3",
        "007",
        "4c1d2e9",
        &content_pin,
        "production",
        "label:production",
        "tag:v1.0",
        "v1.0",
    ] {
        assert!(pattern.is_match(good), "{good}");
        assert!(good.parse::<personas::persona::pin::Pin>().is_ok(), "{good}");
    }
    for bad in ["", "0", "label:abc", "a b", "x..y", "@3"] {
        assert!(!pattern.is_match(bad), "{bad}");
    }
    // A reference is a slug or an id, as the document says.
    let reference = parameter("/api/personas/{reference}", "get", "reference");
    let pattern = regex::Regex::new(reference["pattern"].as_str().unwrap()).unwrap();
    let einstein = get(app, "/api/personas/albert-einstein").await.json();
    let id = einstein["id"].as_str().unwrap().to_string();
    for good in ["x", "a1-b2"] {
        assert!(pattern.is_match(good), "{good}");
    }
    // Every form the server finds a persona by is one the pattern admits.
    for found in ["albert-einstein", &id, &id.replace('-', ""), &id.to_uppercase()] {
        assert!(pattern.is_match(found), "{found}");
        let answer = get(app, &format!("/api/personas/{found}")).await;
        assert_eq!(answer.status, StatusCode::OK, "{found}: {}", answer.body);
    }
    for bad in ["", "Albert", "a--b", "-a", "a-", "a b", "a@3", "a_b"] {
        assert!(!pattern.is_match(bad), "{bad}");
    }
    let if_match = parameter("/api/personas/{reference}/settings", "patch", "If-Match");
    assert!(
        !regex::Regex::new(if_match["pattern"].as_str().unwrap())
            .unwrap()
            .is_match("*")
    );
}

/// The seed's endpoint table, path for path: each answers with a permanent
/// redirect (308, which keeps the method and body) to the same path under
/// `/api`, and the API answers there.
#[tokio::test]
async fn the_seed_endpoints_lead_to_the_api() {
    let site = site(false).await;
    let app = &site.app;
    let cases = [
        (Method::GET, "/personas", "/api/personas"),
        (
            Method::GET,
            "/personas?domain=physics&limit=2",
            "/api/personas?domain=physics&limit=2",
        ),
        (
            Method::GET,
            "/personas/albert-einstein",
            "/api/personas/albert-einstein",
        ),
        (
            Method::GET,
            "/personas/search?q=relativity",
            "/api/personas/search?q=relativity",
        ),
        (
            Method::GET,
            "/personas/albert-einstein/embed",
            "/api/personas/albert-einstein/embed",
        ),
        (
            Method::PATCH,
            "/personas/albert-einstein/settings",
            "/api/personas/albert-einstein/settings",
        ),
    ];
    for (method, seed_path, api_path) in cases {
        let answer = request(app, method.clone(), seed_path, &[]).await;
        assert_eq!(answer.status, StatusCode::PERMANENT_REDIRECT, "{method} {seed_path}");
        assert_eq!(answer.headers[header::LOCATION], api_path, "{method} {seed_path}");
    }
    // Following the redirect reaches the API's own answer.
    for (seed_path, expected_items) in [
        ("/personas?domain=physics", 2usize),
        ("/personas/search?q=relativity", 1),
    ] {
        let location = request(app, Method::GET, seed_path, &[]).await.headers[header::LOCATION]
            .to_str()
            .unwrap()
            .to_string();
        let answer = get(app, &location).await;
        assert_eq!(answer.status, StatusCode::OK, "{location}: {}", answer.body);
        let body = answer.json();
        let items = body.get("items").or_else(|| body.get("results")).unwrap();
        assert!(items.as_array().unwrap().len() >= expected_items, "{location}: {body}");
    }
    let einstein = get(app, "/api/personas/albert-einstein").await.json();
    assert_eq!(einstein["persona"]["name"], "Albert Einstein");
}

/// A server without the model still reads stored vectors: similar personas
/// come from the index, and `/embed` from the embedding cache, for the
/// current version and for a pinned one whose content was ever embedded.
#[tokio::test]
async fn stored_vectors_answer_without_a_model() {
    let path = "registry/personas/albert-einstein.toml";
    // Version 1 is indexed before version 2 is committed, so the cache holds both.
    let site = synced(sample_repository(), true).await;
    let pool = site.database.pool.clone();
    let state = site.state.as_ref().unwrap();
    let vectors = state.vectors.as_ref().unwrap();
    let index = Arc::clone(&vectors.index);
    let projector = VectorProjector::new(pool.clone(), Arc::clone(&index), Arc::clone(&vectors.embedder));
    // The description is part of the text the model reads (trait values are not).
    let text = std::fs::read_to_string(site.repo.path().join(path)).unwrap();
    site.repo.write(
        path,
        &edit(&text, "the theory of relativity", "the theories of relativity"),
    );
    site.repo.commit("einstein: both theories");
    sync_once(&pool, &SyncOptions::new(site.repo.path(), "main"))
        .await
        .unwrap();
    projector.drain().await.unwrap();

    let without_model = router(Arc::new(
        Shared::new(pool.clone(), None, None).with_stored_index(Some(Arc::clone(&index))),
    ));
    let app = &without_model;

    let similar = get(app, "/api/personas/marie-curie/similar?limit=3").await;
    assert_eq!(similar.status, StatusCode::OK, "{}", similar.body);
    let similar = similar.json();
    let slugs: Vec<&str> = similar["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|found| found["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs.len(), 3, "{similar}");
    assert!(!slugs.contains(&"marie-curie"));

    let einstein_id = get(app, "/api/personas/albert-einstein").await.json()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let point = index.point(einstein_id).await.unwrap().expect("Einstein is indexed");
    let current = get(app, "/api/personas/albert-einstein/embed").await;
    assert_eq!(current.status, StatusCode::OK, "{}", current.body);
    let current = current.json();
    assert_eq!(current["version"], 2);
    assert_eq!(current["pinned"], false);
    let vector = |answer: &Value| -> Vec<f32> { serde_json::from_value(answer["vector"].clone()).unwrap() };
    assert_eq!(
        vector(&current),
        point.vector,
        "the index's vector, read from the cache"
    );
    assert_eq!(current["model_id"], point.payload.model_id.as_str());

    for pinned_uri in [
        "/api/personas/albert-einstein@1/embed",
        "/api/personas/albert-einstein/embed?version=1",
    ] {
        let first = get(app, pinned_uri).await;
        assert_eq!(first.status, StatusCode::OK, "{pinned_uri}: {}", first.body);
        let first = first.json();
        assert_eq!(first["version"], 1);
        assert_eq!(first["pinned"], true);
        assert_ne!(first["content_hash"], current["content_hash"]);
        assert_eq!(vector(&first).len(), point.vector.len());
        assert_ne!(vector(&first), point.vector, "version 1's own vector");
    }

    // A version committed and projected but not yet embedded says so.
    let text = std::fs::read_to_string(site.repo.path().join(path)).unwrap();
    site.repo.write(
        path,
        &edit(&text, "the theories of relativity", "special and general relativity"),
    );
    site.repo.commit("einstein: named theories");
    sync_once(&pool, &SyncOptions::new(site.repo.path(), "main"))
        .await
        .unwrap();
    let queued = get(app, "/api/personas/albert-einstein/embed").await;
    assert_eq!(queued.status, StatusCode::NOT_FOUND, "{}", queued.body);
    assert_eq!(queued.error_code(), "not_embedded");
    assert!(
        queued.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("version 3"),
        "{}",
        queued.body
    );
    let missing_pin = get(app, "/api/personas/albert-einstein@9/embed").await;
    assert_eq!(missing_pin.status, StatusCode::NOT_FOUND, "{}", missing_pin.body);

    // Searching by meaning does need the model, and says so.
    let semantic = get(app, "/api/personas/search?q=space%20and%20time&semantic=true").await;
    assert_eq!(semantic.status, StatusCode::SERVICE_UNAVAILABLE, "{}", semantic.body);
    assert_eq!(semantic.error_code(), "semantic_not_configured");
}
