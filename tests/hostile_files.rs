//! Registry files that break naive readers: a symbolic link, a submodule,
//! CRLF line ends, a UTF-8 byte-order mark, a case-only rename and a file
//! name that is not UTF-8. Each is read correctly or refused with an error
//! naming its path, and the sync goes on for every other persona. On real
//! git repositories (built with git's own plumbing) and a real PostgreSQL.

mod common;

use std::io::Write as _;

use common::db::{count, fresh};
use common::*;
use personas::sync::{SyncOptions, sync_once};
use sqlx::PgPool;

const ID_C: &str = "0e4b6c7d-1f2a-4b3c-8d9e-0a1b2c3d4e5f";
const ID_D: &str = "6a7b8c9d-0e1f-4a2b-9c3d-4e5f6a7b8c9d";

/// Adds `path` to the index with `mode` and object `id`, the way git
/// records links and submodules (no working-tree file needed).
fn add_entry(repo: &TestRepo, mode: &str, id: &str, path: &str) {
    repo.git(&["update-index", "--add", "--cacheinfo", &format!("{mode},{id},{path}")]);
}

fn blob(repo: &TestRepo, bytes: &[u8]) -> String {
    let file = repo.path().join(".blob");
    std::fs::write(&file, bytes).unwrap();
    let id = repo.git(&["hash-object", "-w", file.to_str().unwrap()]);
    std::fs::remove_file(file).unwrap();
    id
}

async fn errors_at(pool: &PgPool, path: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT code || ': ' || message FROM sync_errors WHERE path = $1 ORDER BY id")
        .bind(path)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn live_slugs(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT slug FROM personas WHERE NOT deleted ORDER BY slug")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Stages a blob under a path given as raw bytes (git's index takes any).
fn add_raw_path(repo: &TestRepo, id: &str, path: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    let mut entry = format!("100644,{id},").into_bytes();
    entry.extend_from_slice(path);
    let status = std::process::Command::new("git")
        .current_dir(repo.path())
        .args(["update-index", "--add", "--cacheinfo"])
        .arg(std::ffi::OsStr::from_bytes(&entry))
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn hostile_registry_files_are_read_or_refused_by_path_and_the_rest_syncs() {
    let repo = TestRepo::new();
    repo.write("registry/registry.toml", SETTINGS);
    repo.write("registry/personas/alice.toml", &persona(ID_A, "Alice"));
    // CRLF line ends and a byte-order mark: both are TOML, read as such.
    repo.write(
        "registry/personas/bob.toml",
        &persona(ID_B, "Bob").replace('\n', "\r\n"),
    );
    repo.write(
        "registry/personas/carol.toml",
        &format!("\u{feff}{}", persona(ID_C, "Carol")),
    );
    repo.commit("alice, bob in CRLF, carol with a BOM");

    // A symbolic link and a submodule named like persona files, and a file
    // name that is not UTF-8.
    let target = blob(&repo, b"alice.toml");
    add_entry(&repo, "120000", &target, "registry/personas/link.toml");
    add_entry(&repo, "160000", &"ab".repeat(20), "registry/personas/module.toml");
    let dave = blob(&repo, persona(ID_D, "Dave").as_bytes());
    add_raw_path(&repo, &dave, b"registry/personas/dave-\xff.toml");
    repo.git(&["commit", "-q", "-m", "a link, a submodule and a name that is not UTF-8"]);

    let database = fresh().await;
    let pool = &database.pool;
    sync_once(pool, &SyncOptions::new(repo.path(), "main")).await.unwrap();
    assert_eq!(live_slugs(pool).await, ["alice", "bob", "carol"]);
    // CRLF and the BOM change nothing but the bytes: the same persona as plain LF.
    let plain = personas::persona::validate::validate_persona(
        "registry/personas/bob.toml",
        persona(ID_B, "Bob").as_bytes(),
        "bob",
        &personas::persona::settings::RegistrySettings::permissive(),
    );
    let plain_hash = personas::persona::canonical::content_hash(&plain.persona.unwrap()).to_string();
    let stored: String = sqlx::query_scalar(
        "SELECT v.content_hash FROM personas p JOIN persona_versions v ON v.id = p.current_version_id WHERE p.slug = 'bob'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(stored, plain_hash);
    for (path, says) in [
        (
            "registry/personas/link.toml",
            "is a symbolic link in git, not a regular file",
        ),
        (
            "registry/personas/module.toml",
            "is a submodule in git, not a regular file",
        ),
    ] {
        let errors = errors_at(pool, path).await;
        assert_eq!(errors.len(), 1, "{path}: {errors:?}");
        assert!(
            errors[0].starts_with("not-a-file: ") && errors[0].contains(says),
            "{errors:?}"
        );
    }
    let odd: Vec<(String, String)> =
        sqlx::query_as("SELECT path, message FROM sync_errors WHERE path LIKE 'registry/personas/dave-%'")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(odd.len(), 1, "{odd:?}");
    assert!(
        odd[0].0.contains('\u{fffd}') && odd[0].1.contains("rename the file"),
        "{odd:?}"
    );

    // A case-only rename: Bob.toml does not give a valid slug, so it is
    // refused by path and bob keeps his last good version.
    repo.git(&["mv", "registry/personas/bob.toml", "registry/personas/Bob.toml"]);
    repo.commit("bob, capitalized");
    sync_once(pool, &SyncOptions::new(repo.path(), "main")).await.unwrap();
    let errors = errors_at(pool, "registry/personas/Bob.toml").await;
    assert!(
        errors.iter().any(|error| error.contains("rename the file")),
        "{errors:?}"
    );
    assert_eq!(live_slugs(pool).await, ["alice", "bob", "carol"]);
    assert_eq!(
        count(pool, "SELECT count(*) FROM persona_versions WHERE slug = 'alice'").await,
        1
    );
}

/// A 1×1 grey PNG whose `chara` card is `text`, in a zTXt or a compressed iTXt chunk.
fn png_with_compressed_card(text: String, international: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, 1, 1);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    if !international {
        encoder.add_ztxt_chunk("chara".to_string(), text.clone()).unwrap();
    }
    let mut writer = encoder.write_header().unwrap();
    if international {
        let mut chunk = png::text_metadata::ITXtChunk::new("chara".to_string(), text);
        chunk.compressed = true;
        writer.write_text_chunk(&chunk).unwrap();
    }
    writer.write_image_data(&[128]).unwrap();
    writer.finish().unwrap();
    out
}

/// Kibibytes of `field` (`VmRSS`, `VmHWM`) in this process's status.
fn memory_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|line| line.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_card_chunk_that_inflates_past_the_limit_is_refused_without_inflating_it() {
    let settings = personas::persona::settings::RegistrySettings::permissive();
    let options = personas::interchange::import::ImportOptions::default();
    for (international, chunk) in [(false, "zTXt"), (true, "iTXt")] {
        // 64 MiB of text, 8 times the limit, in a file of a few hundred KiB.
        let bomb = png_with_compressed_card("A".repeat(64 * 1024 * 1024), international);
        assert!(bomb.len() < 1024 * 1024, "{} bytes", bomb.len());
        // Only what the import itself allocates counts: reset the peak first.
        std::fs::write("/proc/self/clear_refs", "5").unwrap();
        let before = memory_kib("VmRSS:");
        let error = personas::interchange::import::import_persona("bomb.png", &bomb, &options, &settings)
            .map(|_| ())
            .unwrap_err();
        let grown_mib = memory_kib("VmHWM:").saturating_sub(before) / 1024;
        assert!(
            error
                .message
                .contains(&format!("{chunk} chunk `chara` that cannot be read")),
            "{}",
            error.message
        );
        assert!(
            grown_mib < 40,
            "importing the {chunk} bomb grew the peak by {grown_mib} MiB"
        );
        let _ = writeln!(
            std::io::stderr(),
            "{chunk} bomb of 64 MiB refused; peak grew {grown_mib} MiB"
        );
    }
}

#[test]
fn a_card_whose_embedded_registry_persona_was_edited_says_so() {
    use base64::Engine as _;
    use personas::interchange::card::{CardMeta, CardSpec, export_card};
    let settings = personas::persona::settings::RegistrySettings::permissive();
    let parsed = personas::persona::validate::validate_persona(
        "registry/personas/alice.toml",
        persona(ID_A, "Alice").as_bytes(),
        "alice",
        &settings,
    );
    let alice = parsed.persona.unwrap();
    let meta = CardMeta {
        version: 1,
        system_prompt: None,
        creator: None,
        created_at: None,
        modified_at: None,
    };
    let mut card = export_card(&alice, CardSpec::V2, &meta);
    // The registry's own copy inside the card, edited without its hash.
    card["data"]["extensions"]["persona-registry"]["persona"]["description"] =
        serde_json::json!("Quietly rewritten after export.");
    let text = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&card).unwrap());
    let mut png = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut png, 1, 1);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.add_text_chunk("chara".to_string(), text).unwrap();
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&[128]).unwrap();
    }
    let options = personas::interchange::import::ImportOptions::default();
    let imported = personas::interchange::import::import_persona("alice.png", &png, &options, &settings).unwrap();
    assert!(imported.from_png);
    assert!(
        imported
            .notes
            .iter()
            .any(|note| note.contains("no longer matches its recorded content hash")),
        "{:?}",
        imported.notes
    );
}
