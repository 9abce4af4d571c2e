//! The history reader on real git repositories built in the test: add,
//! modify, reformat-only, unrelated commits, rename, broken file then fixed,
//! delete, merge, duplicate ids and a settings change.

mod common;

use common::*;
use personas::git::history::{ChangeKind, CommitRecord, HistoryWalk, WalkOptions};
use personas::git::open_repository;
use personas::git::replay::Replay;
use personas::persona::{Code, PersonaId};

fn walk(repo: &TestRepo, after: Option<&str>) -> Vec<CommitRecord> {
    let walk = HistoryWalk::new(
        open_repository(repo.path()).unwrap(),
        &WalkOptions {
            tip: "main".into(),
            after: after.map(str::to_string),
        },
    )
    .unwrap();
    walk.collect::<Result<Vec<_>, _>>().unwrap()
}

fn id(text: &str) -> PersonaId {
    text.parse().unwrap()
}

fn kinds(record: &CommitRecord) -> Vec<(ChangeKind, &str)> {
    record
        .changes
        .iter()
        .map(|change| (change.kind, change.path.as_str()))
        .collect()
}

fn record_for<'a>(records: &'a [CommitRecord], commit: &str) -> &'a CommitRecord {
    records
        .iter()
        .find(|record| record.commit.id == commit)
        .unwrap_or_else(|| panic!("commit {commit} not walked"))
}

#[test]
fn the_walk_follows_first_parents_oldest_first() {
    let repo = TestRepo::new();
    let commits = build_story(&repo);
    let records = walk(&repo, None);
    // 9 story commits on main before the merge, plus 'bob: medium humor', the merge and two after it.
    assert_eq!(records.len(), commits.len() + 1);
    assert_eq!(records[0].commit.id, commits[0]);
    assert_eq!(records.last().unwrap().commit.id, *commits.last().unwrap());
    assert!(records.iter().all(|record| !record.commit.message.starts_with("side:")));
    let first = &records[0];
    assert_eq!(first.commit.author_name, "Ada Author");
    assert_eq!(first.commit.author_email, "ada@example.org");
    assert_eq!(first.commit.summary(), "add alice and bob");
}

#[test]
fn each_kind_of_change_is_recognised() {
    let repo = TestRepo::new();
    let commits = build_story(&repo);
    let records = walk(&repo, None);

    let added = record_for(&records, &commits[0]);
    assert_eq!(
        kinds(added),
        vec![
            (ChangeKind::Added, "registry/personas/alice.toml"),
            (ChangeKind::Added, "registry/personas/bob.toml")
        ]
    );

    let modified = record_for(&records, &commits[1]);
    assert_eq!(
        kinds(modified),
        vec![(ChangeKind::Modified, "registry/personas/alice.toml")]
    );
    let change = &modified.changes[0];
    assert_eq!(change.persona_id, id(ID_A));
    // The walk remembers what the replaced version was, not its content.
    let added = &record_for(&records, &commits[0]).changes[0];
    let previous = change.previous.as_ref().unwrap();
    assert_eq!(Some(previous.content_hash), added.content_hash);
    assert_eq!(previous.slug, added.persona.as_ref().unwrap().slug.to_string());
    assert_ne!(change.content_hash, added.content_hash);
    assert_eq!(change.persona.as_ref().unwrap().traits["ocean"]["openness"], 0.95);

    assert!(
        record_for(&records, &commits[2]).changes.is_empty(),
        "a reformat is not a change"
    );
    let docs = record_for(&records, &commits[3]);
    assert!(docs.changes.is_empty() && docs.problems.is_empty() && docs.checked_paths.is_empty());

    let renamed = record_for(&records, &commits[4]);
    assert_eq!(
        kinds(renamed),
        vec![(ChangeKind::Renamed, "registry/personas/alicia.toml")]
    );
    assert_eq!(
        renamed.changes[0].previous_path.as_deref(),
        Some("registry/personas/alice.toml")
    );
    assert_eq!(renamed.changes[0].persona.as_ref().unwrap().slug.as_str(), "alicia");

    let broken = record_for(&records, &commits[5]);
    assert!(
        broken.changes.is_empty(),
        "a broken file changes nothing: {:?}",
        broken.changes
    );
    assert_eq!(broken.problems.len(), 1);
    assert_eq!(
        broken.problems[0].persona_id,
        Some(id(ID_B)),
        "the broken file stays attached to bob"
    );
    assert_eq!(broken.problems[0].diagnostics[0].code, Code::Syntax);
    assert_eq!(broken.problems[0].diagnostics[0].line, 2);

    let fixed = record_for(&records, &commits[6]);
    assert_eq!(kinds(fixed), vec![(ChangeKind::Modified, "registry/personas/bob.toml")]);
    assert!(fixed.problems.is_empty());
    assert!(fixed.checked_paths.contains(&"registry/personas/bob.toml".to_string()));

    let deleted = record_for(&records, &commits[7]);
    assert_eq!(
        kinds(deleted),
        vec![(ChangeKind::Deleted, "registry/personas/alicia.toml")]
    );
    assert!(deleted.changes[0].persona.is_none());

    // The merge brings carol in as one change against the first parent: the
    // side branch's intermediate revision is not a version on main.
    let merge = record_for(&records, &commits[8]);
    assert_eq!(kinds(merge), vec![(ChangeKind::Added, "registry/personas/carol.toml")]);
    assert_eq!(merge.changes[0].persona.as_ref().unwrap().traits["humor"]["wit"], 0.6);

    let clash = record_for(&records, &commits[9]);
    assert!(clash.changes.is_empty(), "nobody wins an id clash");
    let mut clashing: Vec<&str> = clash.problems.iter().map(|problem| problem.path.as_str()).collect();
    clashing.sort();
    assert_eq!(
        clashing,
        vec!["registry/personas/bob-copy.toml", "registry/personas/bob.toml"]
    );
    assert!(
        clash
            .problems
            .iter()
            .all(|problem| problem.diagnostics.iter().any(|d| d.code == Code::DuplicateId))
    );

    // Dropping a mode from the vocabulary invalidates every persona using it,
    // and none of them is deleted or changed for it.
    let settings = record_for(&records, &commits[10]);
    assert!(settings.settings.is_some());
    assert!(settings.changes.is_empty(), "{:?}", settings.changes);
    let invalid: Vec<&str> = settings.problems.iter().map(|problem| problem.path.as_str()).collect();
    assert_eq!(
        invalid,
        vec!["registry/personas/bob.toml", "registry/personas/carol.toml"]
    );
    assert!(
        settings.problems[0]
            .diagnostics
            .iter()
            .any(|d| d.code == Code::UnknownMode)
    );
}

#[test]
fn walking_after_a_commit_yields_only_later_commits_with_the_same_outcome() {
    let repo = TestRepo::new();
    let commits = build_story(&repo);
    let full = walk(&repo, None);
    let resumed = walk(&repo, Some(&commits[4]));
    let position = full.iter().position(|record| record.commit.id == commits[4]).unwrap();
    assert_eq!(resumed.len(), full.len() - position - 1);
    assert_eq!(&full[position + 1..], &resumed[..]);
}

#[test]
fn a_commit_off_the_first_parent_line_is_refused() {
    let repo = TestRepo::new();
    build_story(&repo);
    let side = repo.git(&["rev-parse", "side~1"]);
    let result = HistoryWalk::new(
        open_repository(repo.path()).unwrap(),
        &WalkOptions {
            tip: "main".into(),
            after: Some(side),
        },
    );
    assert!(matches!(result, Err(personas::git::GitError::NotAnAncestor { .. })));
}

#[test]
fn a_missing_branch_or_repository_is_a_clear_error() {
    let repo = TestRepo::new();
    repo.commit("empty registry");
    let error = HistoryWalk::new(
        open_repository(repo.path()).unwrap(),
        &WalkOptions {
            tip: "no-such-branch".into(),
            after: None,
        },
    )
    .err()
    .expect("an unknown branch fails");
    assert!(error.to_string().contains("no-such-branch"), "{error}");
    let missing = tempfile::tempdir().unwrap();
    let error = open_repository(&missing.path().join("nope")).expect_err("no repository there");
    assert!(error.to_string().contains("cannot open git repository"), "{error}");
}

#[test]
fn replay_numbers_versions_per_persona() {
    let repo = TestRepo::new();
    build_story(&repo);
    let replay = Replay::of(repo.path(), "main").unwrap();
    let alice = &replay.personas[&id(ID_A)];
    let kinds: Vec<(u32, ChangeKind)> = alice.versions.iter().map(|v| (v.number, v.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            (1, ChangeKind::Added),
            (2, ChangeKind::Modified),
            (3, ChangeKind::Renamed),
            (4, ChangeKind::Deleted)
        ]
    );
    assert!(alice.current().is_none());
    let bob = &replay.personas[&id(ID_B)];
    assert_eq!(bob.versions.len(), 3, "added, fixed+funnier, medium humor");
    // bob.toml and carol.toml are invalid at the tip (Critic was dropped).
    assert_eq!(replay.open_problems.len(), 2, "{:?}", replay.open_problems.keys());
}

#[test]
fn log_and_diff_commands_read_the_same_history() {
    let repo = TestRepo::new();
    let commits = build_story(&repo);
    let repo_path = repo.path().to_str().unwrap();

    let (code, stdout, stderr) = personas(&["log", "--repo", repo_path, "--branch", "main"], repo.path());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("alicia — Alice"), "{stdout}");
    assert!(stdout.contains("[deleted]"), "{stdout}");
    assert!(stdout.contains("openness 0.90→0.95"), "{stdout}");

    // A former slug finds the persona too.
    let (code, stdout, _) = personas(&["log", "alice", "--repo", repo_path], repo.path());
    assert_eq!(code, 0);
    assert!(
        stdout.contains("v4") && stdout.contains("v1") && !stdout.contains("bob"),
        "{stdout}"
    );
    let (code, _, stderr) = personas(&["log", "nobody", "--repo", repo_path], repo.path());
    assert_eq!(code, 2);
    assert!(stderr.contains("nobody"), "{stderr}");

    let range = format!("{}..{}", commits[0], commits[1]);
    let (code, stdout, _) = personas(
        &["diff", &range, "--repo", repo_path, "--format", "markdown"],
        repo.path(),
    );
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("#### Alice (`alice`): modified, becomes **v2**"),
        "{stdout}"
    );
    assert!(
        stdout.contains("traits.ocean.openness: 0.90 → 0.95 (+0.05)"),
        "{stdout}"
    );

    let range = format!("{}..main", commits[7]);
    let (code, stdout, _) = personas(&["diff", &range, "--repo", repo_path, "--format", "json"], repo.path());
    assert_eq!(code, 1, "invalid files at the tip make the diff fail");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let slugs: Vec<&str> = json["personas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, vec!["bob", "carol"]);
    let carol = &json["personas"][1];
    assert_eq!(carol["kind"], "added");
    assert_eq!(carol["next_version"], 1);
    assert_eq!(json["problems"].as_array().unwrap().len(), 2);

    let (code, _, stderr) = personas(&["diff", "main", "--repo", repo_path], repo.path());
    assert_eq!(code, 2);
    assert!(stderr.contains("FROM..TO"), "{stderr}");
}

#[test]
fn this_repository_history_is_a_valid_registry_history() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    if !root.join(".git").exists() {
        println!("skipped: {} is not a git checkout", root.display());
        return;
    }
    let replay = Replay::of(root, "HEAD").unwrap();
    assert!(
        replay.personas.len() >= 24,
        "{} personas in history",
        replay.personas.len()
    );
    assert!(replay.open_problems.is_empty(), "{:?}", replay.open_problems);
}

#[test]
fn when_one_side_of_an_id_clash_goes_the_other_file_becomes_the_version() {
    // The walk keeps no persona content between commits, so the survivor,
    // untouched by the commit that settles the clash, is read again from git.
    let repo = TestRepo::new();
    repo.write("registry/personas/bob.toml", &persona(ID_B, "Bob"));
    let added = repo.commit("add bob");
    repo.write(
        "registry/personas/bob-copy.toml",
        &edit(&persona(ID_B, "Bob copy"), "wit = 0.5", "wit = 0.8"),
    );
    let clash = repo.commit("copy bob (same id)");
    repo.remove("registry/personas/bob.toml");
    let settled = repo.commit("remove the original");

    // (A walk primed at the clash itself knows no version of bob: the sync
    // restores it from the projection, see `restore_current`.)
    for after in [None, Some(added.as_str())] {
        let records = walk(&repo, after);
        assert!(record_for(&records, &clash).changes.is_empty(), "nobody wins a clash");
        let record = record_for(&records, &settled);
        assert_eq!(
            kinds(record),
            vec![(ChangeKind::Renamed, "registry/personas/bob-copy.toml")],
            "walked after {after:?}"
        );
        let change = &record.changes[0];
        assert_eq!(change.persona_id, id(ID_B));
        assert_eq!(change.previous_path.as_deref(), Some("registry/personas/bob.toml"));
        let survivor = change.persona.as_ref().unwrap();
        assert_eq!(survivor.name, "Bob copy");
        assert_eq!(survivor.traits["humor"]["wit"], 0.8);
        assert_eq!(change.previous.as_ref().unwrap().name, "Bob");
        assert!(record.problems.is_empty(), "{:?}", record.problems);
    }
}
