//! Profiles through the router (no network): the sample registry's profiles
//! in a real git repository, changed and deleted in later commits, synced
//! into a real PostgreSQL; the list and detail answers, their history, the
//! profile pages, the picker on the persona page and the persona with a
//! profile applied.

mod common;

use std::sync::Arc;

use axum::Router;
use axum::http::{Method, StatusCode, header};
use common::app::{get, request};
use common::db::{TestDatabase, fresh};
use common::*;
use personas::sync::{SyncOptions, sync_once};
use personas::web::{Shared, router};
use scraper::{Html, Selector};
use serde_json::Value;

const DEBATE_READY: &str = "registry/profiles/debate-ready.toml";

/// The commits of [`registry`], by what they did.
struct Story {
    repo: TestRepo,
    /// The sample registry, with its three profiles.
    first: String,
    /// Debate Ready's humor raised and Interviewer switched on.
    edited: String,
    /// Quick Advisor removed.
    removed: String,
}

/// The sample registry, then a change of one profile, the deletion of
/// another, and a change of the registry's settings (which makes the walk
/// present every profile again, unchanged).
fn registry() -> Story {
    let repo = sample_repository();
    let first = repo.git(&["rev-parse", "HEAD"]);
    let text = std::fs::read_to_string(repo.path().join(DEBATE_READY)).unwrap();
    repo.write(
        DEBATE_READY,
        &edit(
            &edit(&text, "humor_usage = \"low\"", "humor_usage = \"medium\""),
            "Critic = true",
            "Critic = true\nInterviewer = true",
        ),
    );
    let edited = repo.commit("debate-ready: a little humor, and interviews");
    repo.remove("registry/profiles/quick-advisor.toml");
    let removed = repo.commit("drop the quick advisor profile");
    let settings = std::fs::read_to_string(repo.path().join("registry/registry.toml")).unwrap();
    repo.write("registry/registry.toml", &format!("{settings}\n# reviewed\n"));
    repo.commit("registry settings: a comment");
    Story {
        repo,
        first,
        edited,
        removed,
    }
}

async fn synced(repo: &TestRepo) -> (Router, TestDatabase) {
    let database = fresh().await;
    sync_once(&database.pool, &SyncOptions::new(repo.path(), "main"))
        .await
        .unwrap();
    let state = Arc::new(Shared::new(database.pool.clone(), None, None));
    (router(state), database)
}

fn texts(html: &Html, selector: &str) -> Vec<String> {
    html.select(&Selector::parse(selector).unwrap())
        .map(|element| {
            element
                .text()
                .collect::<String>()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn hrefs(html: &Html, selector: &str) -> Vec<String> {
    html.select(&Selector::parse(selector).unwrap())
        .filter_map(|element| element.value().attr("href").map(str::to_string))
        .collect()
}

#[tokio::test]
async fn the_api_lists_profiles_with_what_they_set_and_their_history() {
    let story = registry();
    let (app, database) = synced(&story.repo).await;

    let list = get(&app, "/api/profiles").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert_eq!(
        list.headers[header::CACHE_CONTROL],
        "public, max-age=5, must-revalidate"
    );
    let etag = list.headers[header::ETAG].to_str().unwrap().to_string();
    assert_eq!(
        request(&app, Method::GET, "/api/profiles", &[("if-none-match", &etag)])
            .await
            .status,
        StatusCode::NOT_MODIFIED
    );
    let list = list.json();
    let slugs: Vec<&str> = list["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|profile| profile["slug"].as_str().unwrap())
        .collect();
    assert_eq!(
        slugs,
        ["debate-ready", "gentle-tutor"],
        "the deleted profile is not listed"
    );
    let debate = &list["profiles"][0];
    assert_eq!(debate["name"], "Debate Ready");
    assert!(
        debate["description"]
            .as_str()
            .unwrap()
            .starts_with("Short, pointed answers")
    );
    assert_eq!(
        debate["sets"],
        serde_json::json!({
            "config": {"humor_usage": "medium", "emotional_style": "expressive", "language_style": "concise"},
            "modes": {"Critic": true, "Debater": true, "Interviewer": true, "Storyteller": false},
            "default_mode": "Debater",
        }),
        "only what the profile names, as it is now"
    );
    assert_eq!(list["profiles"][1]["sets"]["config"]["voice_enabled"], true);

    let detail = get(&app, "/api/profiles/debate-ready").await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.body);
    assert_eq!(
        detail.headers[header::CACHE_CONTROL],
        "public, max-age=5, must-revalidate"
    );
    let detail = detail.json();
    assert_eq!(detail["deleted"], false);
    assert_eq!(detail["sets"], debate["sets"]);
    let history = detail["history"].as_array().unwrap();
    // The settings commit presented the profile again, unchanged: no revision.
    assert_eq!(history.len(), 2, "{history:#?}");
    assert_eq!(history[0]["change"], "modified");
    assert_eq!(history[0]["commit"], story.edited.as_str());
    assert_eq!(history[0]["message"], "debate-ready: a little humor, and interviews");
    assert_eq!(history[0]["author_name"], "Ada Author");
    assert_eq!(history[0]["author_email"], "ada@example.org");
    assert_eq!(history[0]["sets"]["config"]["humor_usage"], "medium");
    assert_eq!(history[1]["change"], "added");
    assert_eq!(history[1]["commit"], story.first.as_str());
    assert_eq!(history[1]["sets"]["config"]["humor_usage"], "low");
    assert!(
        history[0]["committed_at"].as_str().unwrap() > history[1]["committed_at"].as_str().unwrap(),
        "newest first"
    );

    let removed = get(&app, "/api/profiles/quick-advisor").await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.body);
    let removed = removed.json();
    assert_eq!(removed["deleted"], true);
    assert_eq!(removed["name"], "Quick Advisor", "described as it was");
    let changes: Vec<(&str, &str)> = removed["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|revision| {
            (
                revision["change"].as_str().unwrap(),
                revision["commit"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [("deleted", story.removed.as_str()), ("added", story.first.as_str())]
    );
    assert_eq!(removed["history"][0]["sets"], Value::Null);

    // One row per real change: the three profiles added, one edited, one
    // removed; the settings commit, which presented them all again, wrote none.
    assert_eq!(
        common::db::count(&database.pool, "SELECT count(*) FROM profile_revisions").await,
        5
    );

    let unknown = get(&app, "/api/profiles/no-such-profile").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["error"]["code"], "not_found");
    let malformed = get(&app, "/api/profiles/Not_A_Slug").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.json()["error"]["code"], "bad_name");

    // Applying one by name is what the list is for.
    let applied = get(&app, "/api/personas/albert-einstein?profile=debate-ready")
        .await
        .json();
    assert_eq!(applied["profile"], "debate-ready");
    assert_eq!(applied["persona"]["config"]["humor_usage"], "medium");
    assert_eq!(applied["persona"]["default_mode"], "Debater");
}

#[tokio::test]
async fn the_openapi_document_states_the_profile_routes_and_their_answers() {
    let story = registry();
    let (app, _database) = synced(&story.repo).await;
    let document = get(&app, "/api/openapi.json").await.json();
    let list = &document["paths"]["/api/profiles"]["get"];
    assert!(list["responses"]["200"].is_object(), "{list:#}");
    let detail = &document["paths"]["/api/profiles/{slug}"]["get"];
    for status in ["200", "304", "400", "404", "503"] {
        assert!(detail["responses"][status].is_object(), "{status} missing: {detail:#}");
    }
    let slug = &detail["parameters"][0];
    assert_eq!(slug["name"], "slug");
    assert_eq!(slug["schema"]["pattern"], "^[a-z0-9]+(?:-[a-z0-9]+)*$");
    assert_eq!(slug["schema"]["maxLength"], 64);
    for schema in ["ProfileList", "ProfileDetail", "ProfileSets", "RevisionView"] {
        assert!(
            document["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }
}

#[tokio::test]
async fn the_pages_list_profiles_and_show_a_persona_with_one_applied() {
    let story = registry();
    let (app, database) = synced(&story.repo).await;

    let index = get(&app, "/").await.html();
    assert!(hrefs(&index, "header.site nav a").contains(&"/profiles".to_string()));

    let list = get(&app, "/profiles").await;
    assert_eq!(list.status, StatusCode::OK);
    let list = list.html();
    assert_eq!(
        hrefs(&list, "ul.profiles header a"),
        ["/profiles/debate-ready", "/profiles/gentle-tutor"]
    );
    let sets = texts(&list, "ul.profiles .sets");
    assert!(
        sets[0].contains("humor usage medium") && sets[0].contains("mode Storyteller off"),
        "{sets:?}"
    );

    let page = get(&app, "/profiles/debate-ready").await;
    assert_eq!(page.status, StatusCode::OK);
    let page = page.html();
    let history = texts(&page, "ol.timeline > li");
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(
        history[0].starts_with("modified") && history[0].contains("a little humor"),
        "{history:?}"
    );
    assert!(history[1].starts_with("added"), "{history:?}");
    assert!(texts(&page, "table.sets td").contains(&"mode Interviewer".to_string()));
    let applied_links = hrefs(&page, ".applied-personas a");
    assert!(
        applied_links.contains(&"/p/albert-einstein/profile/debate-ready".to_string()),
        "{applied_links:?}"
    );
    let live = common::db::count(&database.pool, "SELECT count(*) FROM personas WHERE NOT deleted").await;
    assert_eq!(applied_links.len() as i64, live);

    let removed = get(&app, "/profiles/quick-advisor").await.html();
    assert_eq!(texts(&removed, "h1 .badge"), ["deleted"]);
    assert!(texts(&removed, "ol.timeline > li")[0].starts_with("deleted"));
    assert!(hrefs(&removed, ".applied-personas a").is_empty());
    assert_eq!(
        get(&app, "/profiles/no-such-profile").await.status,
        StatusCode::NOT_FOUND
    );

    // The picker on the current persona page; a pinned page has none.
    let persona = get(&app, "/p/albert-einstein").await.html();
    assert_eq!(texts(&persona, ".profile-picker a"), ["Debate Ready", "Gentle Tutor"]);
    assert_eq!(
        hrefs(&persona, ".profile-picker a"),
        [
            "/p/albert-einstein/profile/debate-ready",
            "/p/albert-einstein/profile/gentle-tutor"
        ]
    );
    let pinned = get(&app, "/p/albert-einstein/v/1").await.html();
    assert!(texts(&pinned, ".profile-picker a").is_empty());

    let applied = get(&app, "/p/albert-einstein/profile/debate-ready").await;
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.body);
    let html = applied.html();
    assert_eq!(texts(&html, "h1"), ["Albert Einstein · Debate Ready"]);
    // Einstein is low-humor, reserved, verbose, Educator by default; the profile changes that.
    let changes = texts(&html, ".profile-changes li");
    for expected in [
        "default_mode: \"Educator\" → \"Debater\"",
        "config.humor_usage: \"low\" → \"medium\"",
        "config.emotional_style: \"reserved\" → \"expressive\"",
        "config.language_style: \"verbose\" → \"concise\"",
    ] {
        assert!(
            changes.iter().any(|change| change == expected),
            "{expected} not in {changes:?}"
        );
    }
    assert_eq!(
        texts(&html, ".config dd.changed"),
        ["medium", "expressive", "concise"],
        "the changed config values are marked"
    );
    let modes = texts(&html, ".mode-list li.enabled");
    assert!(modes.iter().any(|mode| mode == "Debater default"), "{modes:?}");
    assert!(
        texts(&html, ".mode-list li.changed")
            .iter()
            .any(|mode| mode.starts_with("Interviewer"))
    );
    // The prompt is the API's, rendered from the applied persona.
    let prompt = get(&app, "/api/personas/albert-einstein/prompt?profile=debate-ready")
        .await
        .json();
    assert_eq!(prompt["mode"], "Debater");
    let shown = html
        .select(&Selector::parse("pre.prompt-text").unwrap())
        .next()
        .expect("the page shows the prompt")
        .text()
        .collect::<String>();
    assert_eq!(shown, prompt["prompt"].as_str().unwrap());
    assert!(texts(&html, ".prompt .version-badge")[0].contains(&prompt["prompt_hash"].as_str().unwrap()[..19]));

    let missing = get(&app, "/p/albert-einstein/profile/quick-advisor").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(texts(&missing.html(), "h1")[0].contains("404"));
    assert_eq!(
        get(&app, "/p/nobody/profile/debate-ready").await.status,
        StatusCode::NOT_FOUND
    );
}

/// A projection made before migration 0009 has no revisions; the
/// migration seeds each current profile's from `registry_profiles` and has
/// the history replayed. Both halves, run here from the migration's file:
/// at once every current profile answers with one revision, and after the
/// next sync the full history is there, the seeded row counting as no change.
#[tokio::test]
async fn a_registry_synced_before_the_migration_answers_and_a_resync_fills_the_history() {
    let story = registry();
    let (app, database) = synced(&story.repo).await;
    sqlx::query("DELETE FROM profile_revisions")
        .execute(&database.pool)
        .await
        .unwrap();
    let migration = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/0009_profile_revisions.sql"),
    )
    .unwrap();
    let code: String = migration
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    let statements: Vec<&str> = code
        .split(';')
        .map(str::trim)
        .filter(|statement| !statement.is_empty() && !statement.starts_with("CREATE"))
        .collect();
    assert_eq!(statements.len(), 2, "the seed and the replay: {statements:?}");
    for statement in statements {
        sqlx::raw_sql(statement).execute(&database.pool).await.unwrap();
    }

    let detail = get(&app, "/api/profiles/debate-ready").await.json();
    let history = detail["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(history[0]["change"], "added");
    assert_eq!(history[0]["sets"], detail["sets"]);
    assert_eq!(
        get(&app, "/api/profiles").await.json()["profiles"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    sync_once(&database.pool, &SyncOptions::new(story.repo.path(), "main"))
        .await
        .unwrap();
    let fresh_state = Arc::new(Shared::new(database.pool.clone(), None, None));
    let replayed = get(&router(fresh_state), "/api/profiles/debate-ready").await.json();
    let changes: Vec<&str> = replayed["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|revision| revision["commit"].as_str().unwrap())
        .collect();
    assert_eq!(changes, [story.edited.as_str(), story.first.as_str()]);
}
