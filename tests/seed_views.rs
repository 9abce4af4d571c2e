//! The seed documents' tables as SQL views (`seed.*`), read back on a real
//! PostgreSQL after a real sync of the sample registry.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::db::{TestDatabase, count, fresh};
use common::*;
use personas::git::replay::Replay;
use personas::persona::Persona;
use personas::sync::{SyncOptions, sync_once};
use sqlx::PgPool;
use uuid::Uuid;

const EINSTEIN: &str = "registry/personas/albert-einstein.toml";

async fn synced(repo: &TestRepo) -> PgPool {
    let TestDatabase { pool, .. } = fresh().await;
    sync_once(&pool, &SyncOptions::new(repo.path(), "main")).await.unwrap();
    pool
}

/// Each live persona as git holds it at the branch head, by slug.
fn current_personas(repo: &TestRepo) -> BTreeMap<String, Persona> {
    let replay = Replay::of(repo.path(), "main").unwrap();
    replay
        .personas
        .into_values()
        .filter_map(|history| history.versions.last()?.persona.clone())
        .map(|persona| (persona.slug.to_string(), persona))
        .collect()
}

/// A row of `seed.personas`, typed as the seed's table types it.
#[derive(sqlx::FromRow)]
struct SeedPersona {
    id: Uuid,
    name: String,
    slug: String,
    birth_date: Option<chrono::NaiveDate>,
    description: String,
    domain: Vec<String>,
    is_real: bool,
    avatar_url: Option<String>,
    created_at: chrono::NaiveDateTime,
}

#[tokio::test]
async fn the_seed_einstein_example_reads_back_as_the_seed_shows_it() {
    let repo = sample_repository();
    let pool = synced(&repo).await;

    // The seed's `personas` table, column for column.
    let SeedPersona {
        id,
        name,
        slug,
        birth_date,
        description,
        domain,
        is_real,
        avatar_url,
        created_at,
    } = sqlx::query_as(
        "SELECT id, name, slug, birth_date, description, domain, is_real, avatar_url, created_at
         FROM seed.personas WHERE slug = 'albert-einstein'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(name, "Albert Einstein");
    assert_eq!(slug, "albert-einstein");
    assert_eq!(description, "Theoretical physicist known for the theory of relativity.");
    assert_eq!(domain, ["physics", "philosophy"]);
    assert!(is_real);
    assert_eq!(birth_date, chrono::NaiveDate::from_ymd_opt(1879, 3, 14));
    assert_eq!(avatar_url, None);
    let first_commit: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT min(committed_at) FROM persona_versions WHERE persona_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(created_at, first_commit.naive_utc());

    // The seed's example traits: `"OCEAN": {"openness": 0.95, …}`.
    let ocean: Vec<(String, f64)> = sqlx::query_as(
        "SELECT trait_name, value FROM seed.persona_traits
         WHERE persona_id = $1 AND trait_type = 'OCEAN' ORDER BY trait_name",
    )
    .bind(id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        ocean,
        [
            ("agreeableness".to_string(), 0.7),
            ("conscientiousness".to_string(), 0.72),
            ("extraversion".to_string(), 0.3),
            ("neuroticism".to_string(), 0.25),
            ("openness".to_string(), 0.95),
        ]
    );

    // `"humor_usage": "low", "emotional_style": "reserved"`, `"voice_enabled": false`.
    let config: (String, String, bool, String, Option<String>) = sqlx::query_as(
        "SELECT humor_usage, emotional_style, voice_enabled, language_style, default_mode
         FROM seed.persona_config WHERE persona_id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        config,
        (
            "low".into(),
            "reserved".into(),
            false,
            "verbose".into(),
            Some("Educator".into())
        )
    );

    // `"modes": ["Educator", "Critic", "Debater"]`: the enabled ones.
    let enabled: Vec<String> =
        sqlx::query_scalar("SELECT mode FROM seed.persona_modes WHERE persona_id = $1 AND enabled ORDER BY mode")
            .bind(id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(enabled, ["Critic", "Debater", "Educator"]);

    // Two of the seed's three beliefs kept their words (the registry added a
    // full stop); the pacifism one was rewritten with its history, so it is
    // not expected verbatim. Each carries its source, as the seed asks.
    let beliefs: Vec<(Uuid, String, Option<String>)> =
        sqlx::query_as("SELECT id, belief, source FROM seed.persona_beliefs WHERE persona_id = $1")
            .bind(id)
            .fetch_all(&pool)
            .await
            .unwrap();
    for seed_belief in [
        "Imagination is more important than knowledge",
        "The universe is comprehensible through science",
    ] {
        let found = beliefs.iter().find(|(_, text, _)| text.starts_with(seed_belief));
        let (_, _, source) = found.unwrap_or_else(|| panic!("{seed_belief:?} in {beliefs:?}"));
        assert!(source.as_deref().is_some_and(|url| url.starts_with("https://")));
    }
}

#[tokio::test]
async fn the_seed_shaped_queries_agree_with_the_registry_files() {
    let repo = sample_repository();
    let pool = synced(&repo).await;
    let personas = current_personas(&repo);
    assert!(personas.len() > 10, "the sample registry is read");

    // Every live persona, once.
    let slugs: BTreeSet<String> = sqlx::query_scalar("SELECT slug FROM seed.personas")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(slugs, personas.keys().cloned().collect());

    // "Tags like ['science', 'art']": who is tagged physics.
    let physicists: BTreeSet<String> =
        sqlx::query_scalar("SELECT slug FROM seed.personas WHERE 'physics' = ANY(domain)")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let expected: BTreeSet<String> = personas
        .iter()
        .filter(|(_, persona)| persona.domains.iter().any(|domain| domain == "physics"))
        .map(|(slug, _)| slug.clone())
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(physicists, expected);

    // A trait filter joined back to names, as an analyst would write it.
    let open: BTreeSet<String> = sqlx::query_scalar(
        "SELECT p.slug FROM seed.personas p JOIN seed.persona_traits t ON t.persona_id = p.id
         WHERE t.trait_type = 'OCEAN' AND t.trait_name = 'openness' AND t.value >= 0.9",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let expected: BTreeSet<String> = personas
        .iter()
        .filter(|(_, persona)| persona.traits["ocean"]["openness"] >= 0.9)
        .map(|(slug, _)| slug.clone())
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(open, expected);

    // Every belief with its source, every trait, mode and config row: the
    // same counts as the files.
    let rows = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap() as usize }
    };
    let beliefs: usize = personas.values().map(|persona| persona.beliefs.len()).sum();
    let traits: usize = personas
        .values()
        .map(|persona| persona.traits.values().map(|table| table.len()).sum::<usize>())
        .sum();
    let modes: usize = personas.values().map(|persona| persona.modes.len()).sum();
    assert_eq!(rows("SELECT count(*) FROM seed.persona_beliefs").await, beliefs);
    assert_eq!(
        rows("SELECT count(DISTINCT id) FROM seed.persona_beliefs").await,
        beliefs
    );
    assert_eq!(rows("SELECT count(*) FROM seed.persona_traits").await, traits);
    assert_eq!(rows("SELECT count(*) FROM seed.persona_modes").await, modes);
    assert_eq!(rows("SELECT count(*) FROM seed.persona_config").await, personas.len());
}

#[tokio::test]
async fn versions_read_back_and_belief_ids_are_derived_not_drawn() {
    let repo = sample_repository();
    let original = std::fs::read_to_string(repo.path().join(EINSTEIN)).unwrap();
    // The second version moves the first belief to the end and rewords the description.
    let first_belief = "[[beliefs]]\ntext = \"Imagination is more important than knowledge.\"\nsource = \"https://en.wikiquote.org/wiki/Albert_Einstein#1920s\"\n\n";
    assert!(original.contains(first_belief));
    let reordered = format!(
        "{}\n{}",
        edit(
            &original.replacen(first_belief, "", 1),
            "known for the theory of relativity.",
            "known for the theories of relativity."
        ),
        first_belief.trim_end()
    );
    repo.write(EINSTEIN, &reordered);
    repo.commit("Einstein: plural theories, the imagination belief last");

    let pool = synced(&repo).await;
    let again = synced(&repo).await;

    let versions: Vec<(i32, String)> = sqlx::query_as(
        "SELECT version_no, description FROM seed.personas_versions
         WHERE slug = 'albert-einstein' ORDER BY version_no",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        versions,
        [
            (
                1,
                "Theoretical physicist known for the theory of relativity.".to_string()
            ),
            (
                2,
                "Theoretical physicist known for the theories of relativity.".to_string()
            ),
        ]
    );
    let current: String = sqlx::query_scalar("SELECT description FROM seed.personas WHERE slug = 'albert-einstein'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(current, versions[1].1);

    let ids = |pool: PgPool, version: i32| async move {
        let rows: Vec<(String, Uuid)> = sqlx::query_as(
            "SELECT b.belief, b.id FROM seed.persona_beliefs_versions b
             JOIN seed.personas_versions p ON p.id = b.persona_id AND p.version_no = b.version_no
             WHERE p.slug = 'albert-einstein' AND b.version_no = $1",
        )
        .bind(version)
        .fetch_all(&pool)
        .await
        .unwrap();
        rows.into_iter().collect::<BTreeMap<String, Uuid>>()
    };
    let (first, second) = (ids(pool.clone(), 1).await, ids(pool.clone(), 2).await);
    assert!(first.len() >= 3, "{first:?}");
    // The same beliefs, moved: the same ids in both versions.
    assert_eq!(first, second);
    // Another projection of the same history derives the same ids.
    assert_eq!(ids(again.clone(), 2).await, second);
    let current: BTreeMap<String, Uuid> = sqlx::query_as::<_, (String, Uuid)>(
        "SELECT b.belief, b.id FROM seed.persona_beliefs b JOIN seed.personas p ON p.id = b.persona_id
         WHERE p.slug = 'albert-einstein'",
    )
    .fetch_all(&again)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert_eq!(current, second);
    // Distinct beliefs, distinct ids.
    assert_eq!(second.values().collect::<BTreeSet<_>>().len(), second.len());

    // The per-version config and traits are there for the old version too.
    let old_config = count(
        &pool,
        "SELECT count(*) FROM seed.persona_config_versions c JOIN seed.personas_versions p
         ON p.id = c.persona_id AND p.version_no = c.version_no
         WHERE p.slug = 'albert-einstein' AND c.version_no = 1 AND c.humor_usage = 'low'",
    )
    .await;
    assert_eq!(old_config, 1);
    let old_traits = count(
        &pool,
        "SELECT count(*) FROM seed.persona_traits_versions t JOIN seed.personas_versions p
         ON p.id = t.persona_id AND p.version_no = t.version_no
         WHERE p.slug = 'albert-einstein' AND t.version_no = 1 AND t.trait_type = 'OCEAN'",
    )
    .await;
    assert_eq!(old_traits, 5);
}

#[tokio::test]
async fn a_deleted_persona_leaves_the_current_views_and_keeps_its_versions() {
    let repo = sample_repository();
    repo.remove(EINSTEIN);
    repo.commit("Einstein leaves");
    let pool = synced(&repo).await;
    let current: i64 = sqlx::query_scalar("SELECT count(*) FROM seed.personas WHERE slug = 'albert-einstein'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(current, 0);
    for view in [
        "seed.persona_traits",
        "seed.persona_beliefs",
        "seed.persona_modes",
        "seed.persona_config",
    ] {
        let orphans: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {view} v WHERE NOT EXISTS (SELECT 1 FROM seed.personas p WHERE p.id = v.persona_id)"
        ))
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(orphans, 0, "{view} reads a persona that is gone");
    }
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM seed.personas_versions WHERE slug = 'albert-einstein'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        kept, 1,
        "the deletion has no content; the version before it stays readable"
    );
}
