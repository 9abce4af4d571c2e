//! Search relevance on the sample registry: the queries in
//! `tests/fixtures/relevance.toml` (written from the persona files before
//! the ranking was tuned) through full text, meaning and the merged ranking,
//! with the real model and a real qdrant-edge index. Prints each ranking's hit
//! rate (expected personas found in the top 3), and fails below the bars
//! the rankings are held to.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use common::db::{TestDatabase, fresh};
use common::*;
use personas::persona::search_filter::SearchFilter;
use personas::search::{self, Found, Semantic};
use personas::sync::{SyncOptions, sync_once};
use personas::vectors::embed::Embedder;

const TOP: usize = 3;

struct Query {
    text: String,
    kind: String,
    expect: Vec<String>,
}

fn relevance_set() -> Vec<Query> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/relevance.toml");
    let document: toml_edit::DocumentMut = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let queries: Vec<Query> = document["query"]
        .as_array_of_tables()
        .expect("[[query]] tables")
        .iter()
        .map(|table| Query {
            text: table["q"].as_str().unwrap().to_string(),
            kind: table["kind"].as_str().unwrap().to_string(),
            expect: table["expect"]
                .as_array()
                .unwrap()
                .iter()
                .map(|slug| slug.as_str().unwrap().to_string())
                .collect(),
        })
        .collect();
    assert!(queries.len() >= 15, "the set has {} queries", queries.len());
    queries
}

/// Hits and expected personas, per kind of query; and how many queries
/// had an expected persona first, of how many.
#[derive(Default)]
struct Tally(BTreeMap<String, (usize, usize)>, (usize, usize));

impl Tally {
    fn add(&mut self, query: &Query, found: &[Found]) -> Vec<String> {
        let first_expected = found.first().is_some_and(|first| query.expect.contains(&first.slug));
        self.1.0 += usize::from(first_expected);
        self.1.1 += 1;
        let top: Vec<&str> = found.iter().take(TOP).map(|found| found.slug.as_str()).collect();
        let missed: Vec<String> = query
            .expect
            .iter()
            .filter(|slug| !top.contains(&slug.as_str()))
            .cloned()
            .collect();
        let entry = self.0.entry(query.kind.clone()).or_default();
        entry.0 += query.expect.len() - missed.len();
        entry.1 += query.expect.len();
        missed
    }

    fn rate(&self, kinds: &[&str]) -> f64 {
        let (hits, expected) = self
            .0
            .iter()
            .filter(|(kind, _)| kinds.is_empty() || kinds.contains(&kind.as_str()))
            .fold((0, 0), |(hits, expected), (_, (h, e))| (hits + h, expected + e));
        hits as f64 / expected.max(1) as f64
    }

    fn line(&self, ranking: &str) -> String {
        let mut line = format!(
            "{ranking:>9}: {:5.1}% of all (first result expected in {} of {} queries)",
            100.0 * self.rate(&[]),
            self.1.0,
            self.1.1
        );
        for (kind, (hits, expected)) in &self.0 {
            line.push_str(&format!(", {kind} {hits}/{expected}"));
        }
        line
    }
}

#[tokio::test]
async fn the_rankings_find_what_a_reader_expects() {
    let model_dir = PathBuf::from(
        std::env::var_os("PERSONAS_EMBED_MODEL_DIR")
            .expect("PERSONAS_EMBED_MODEL_DIR is not set: run scripts/fetch-model (scripts/test does)"),
    );
    let embedder = tokio::task::spawn_blocking(move || Arc::new(Embedder::load(&model_dir, None).unwrap()))
        .await
        .unwrap();
    let repo = sample_repository();
    let TestDatabase { pool, .. } = fresh().await;
    sync_once(&pool, &SyncOptions::new(repo.path(), "main")).await.unwrap();
    let (_directory, index) = indexed_on_edge(&pool, &embedder).await;
    let semantic = Semantic {
        embedder: Some(&embedder),
        index: Some(index.as_ref()),
    };
    let filter = SearchFilter::default();

    let (mut text, mut meaning, mut merged) = (Tally::default(), Tally::default(), Tally::default());
    // A name or a word from a persona's own text must bring that persona first.
    let mut text_not_first = Vec::new();
    for query in relevance_set() {
        let by_text = search::full_text(&pool, &query.text, &filter, 10).await.unwrap();
        let by_meaning = search::semantic(&semantic, &query.text, &filter, 10).await.unwrap();
        let by_both = search::hybrid(&pool, &semantic, &query.text, &filter, 10)
            .await
            .unwrap();
        if ["name", "word"].contains(&query.kind.as_str())
            && !by_text.first().is_some_and(|first| query.expect.contains(&first.slug))
        {
            text_not_first.push(query.text.clone());
        }
        let misses = [
            ("text", text.add(&query, &by_text), &by_text),
            ("semantic", meaning.add(&query, &by_meaning), &by_meaning),
            ("merged", merged.add(&query, &by_both), &by_both),
        ];
        for (ranking, missed, found) in misses {
            let first_expected = found.first().is_some_and(|first| query.expect.contains(&first.slug));
            if !missed.is_empty() || !first_expected {
                let top: Vec<&str> = found.iter().take(TOP).map(|found| found.slug.as_str()).collect();
                println!(
                    "{ranking:>9} {:?} ({}): missed {missed:?}, top {top:?}",
                    query.text, query.kind
                );
            }
        }
    }
    println!("hit rate in the top {TOP}:");
    println!("{}", text.line("text"));
    println!("{}", meaning.line("semantic"));
    println!("{}", merged.line("merged"));

    // The bars. Full text must find every name and word query's personas
    // (those words are in the files); meaning must carry the paraphrases;
    // the merged ranking, shown first, must be at least as good as either.
    assert_eq!(text.rate(&["name", "word"]), 1.0, "{}", text.line("text"));
    assert!(
        text_not_first.is_empty(),
        "full text put another persona first for {text_not_first:?}"
    );
    assert!(meaning.rate(&["meaning"]) >= 0.7, "{}", meaning.line("semantic"));
    assert!(
        merged.rate(&[]) >= text.rate(&[]).max(meaning.rate(&[])),
        "merged is worse than one of its sides:\n{}\n{}\n{}",
        text.line("text"),
        meaning.line("semantic"),
        merged.line("merged")
    );

    // The issue's own case: "relativity" is Einstein's word, not a stem of Ada Lovelace's "relations".
    let relativity = search::full_text(&pool, "relativity", &filter, 3).await.unwrap();
    assert_eq!(
        relativity.first().map(|found| found.slug.as_str()),
        Some("albert-einstein")
    );
}
