//! `personas build-site`, run as the real binary on a real repository (the
//! sample registry plus a rename, a deletion and a hostile persona) into a
//! real PostgreSQL, with the real model: every internal link of the copy
//! must resolve to a file, the same commit must give byte-identical files,
//! and a real browser must render it from a static file server under a
//! sub-path and from file://.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::db::fresh;
use common::*;
use scraper::{Html, Selector};

const EVIL: &str = "<script>alert(1)</script>";

/// The sample registry, then Mallory (hostile text), a rename and a deletion.
fn registry_with_history() -> TestRepo {
    let repo = sample_repository();
    let mallory = persona(ID_A, "Mallory")
        .replace("name = \"Mallory\"", &format!("name = \"Mallory {EVIL}\""))
        .replace("A test persona.", &format!("Evil {EVIL} \\\" onmouseover=\\\"alert(2)"))
        .replace("domains = [\"testing\", \"physics\"]", "domains = [\"testing\"]")
        // The sample's policy wants a real person's phrase sourced or marked.
        .replace(
            "signature_phrases = [\"Test everything.\"]",
            &format!("signature_phrases = [{{ text = \"Test {EVIL}\", marking = \"attributed\" }}]"),
        )
        .replace(
            "Tests should fail when the code is wrong.",
            &format!("I believe {EVIL}"),
        )
        .replace("Debater = false", "Debater = false\nMentor = false");
    repo.write("registry/personas/mallory.toml", &mallory);
    repo.commit("add mallory");
    let old = std::fs::read_to_string(repo.path().join("registry/personas/juniper-hale.toml")).unwrap();
    repo.remove("registry/personas/juniper-hale.toml");
    repo.write(
        "registry/personas/juniper-hale-ceo.toml",
        &edit(&old, "slug = \"juniper-hale\"", "slug = \"juniper-hale-ceo\""),
    );
    repo.commit("rename juniper-hale");
    repo.remove("registry/personas/sable-9.toml");
    repo.commit("remove sable-9");
    repo
}

/// Runs `personas build-site` into `out` against `database_url`, with a
/// data directory of its own.
fn build_site(repo: &Path, database_url: &str, out: &Path, extra: &[&str]) -> String {
    let data_dir = tempfile::tempdir().unwrap();
    build_site_with(repo, database_url, data_dir.path(), out, extra)
}

/// Runs `personas build-site` with `data_dir` (kept by the caller between builds).
fn build_site_with(repo: &Path, database_url: &str, data_dir: &Path, out: &Path, extra: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_personas"))
        .args(["build-site", "--repo"])
        .arg(repo)
        .arg("--out")
        .arg(out)
        .args(extra)
        // The static build's own index (qdrant-edge under the data directory), never a
        // server collection another test writes to.
        .env_remove("QDRANT_URL")
        .env("DATABASE_URL", database_url)
        .env("PERSONAS_DATA_DIR", data_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "build-site failed: {stderr}");
    stderr
}

/// Fails unless the two copies hold the same files with the same bytes.
fn assert_same_copies(one: &BTreeMap<String, Vec<u8>>, other: &BTreeMap<String, Vec<u8>>, what: &str) {
    assert_eq!(
        one.keys().collect::<Vec<_>>(),
        other.keys().collect::<Vec<_>>(),
        "{what}: the copies hold different files"
    );
    let differing: Vec<&String> = one.keys().filter(|file| one[*file] != other[*file]).collect();
    assert!(differing.is_empty(), "{what}: the copies differ in {differing:?}");
}

fn files_of(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut directories = vec![root.to_path_buf()];
    while let Some(directory) = directories.pop() {
        for entry in std::fs::read_dir(&directory).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                directories.push(path);
            } else {
                let relative = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                files.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Every link, script, stylesheet and form target of every page must be
/// relative and name a file of the copy (a directory would not open from
/// file://). Returns how many links were checked.
fn check_links(root: &Path, files: &BTreeMap<String, Vec<u8>>) -> usize {
    let selector = Selector::parse("a[href], link[href], script[src], img[src], form[action]").unwrap();
    let mut checked = 0;
    let mut broken = Vec::new();
    for (file, bytes) in files.iter().filter(|(file, _)| file.ends_with(".html")) {
        let page = Html::parse_document(std::str::from_utf8(bytes).unwrap());
        for element in page.select(&selector) {
            let value = element
                .value()
                .attr("href")
                .or(element.value().attr("src"))
                .or(element.value().attr("action"))
                .unwrap();
            if value.starts_with("http://") || value.starts_with("https://") || value.starts_with('#') {
                continue;
            }
            checked += 1;
            if value.starts_with('/') {
                broken.push(format!("{file}: {value} is absolute; it breaks under a sub-path"));
                continue;
            }
            let path = value.split(['?', '#']).next().unwrap();
            let mut resolved: Vec<&str> = file.split('/').collect();
            resolved.pop();
            let mut escapes = false;
            for segment in path.split('/') {
                match segment {
                    ".." => escapes |= resolved.pop().is_none(),
                    "." | "" => {}
                    other => resolved.push(other),
                }
            }
            let target = root.join(resolved.join("/"));
            if escapes || !target.is_file() {
                broken.push(format!("{file}: {value} does not resolve to a file"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "{} broken links:\n{}",
        broken.len(),
        broken.join("\n")
    );
    checked
}

#[tokio::test]
async fn the_static_copy_is_complete_linked_reproducible_and_escaped() {
    let repo = registry_with_history();
    let work = tempfile::tempdir().unwrap();
    let first = work.path().join("first");
    let second = work.path().join("second");
    let database = fresh().await;
    let url = database.url.clone();
    let repo_path = repo.path().to_path_buf();
    let (first_out, second_out) = (first.clone(), second.clone());
    let other = fresh().await;
    let other_url = other.url.clone();
    tokio::task::spawn_blocking(move || {
        let report = build_site(
            &repo_path,
            &url,
            &first_out,
            &["--base-url", "https://example.org/registry/"],
        );
        assert!(report.contains("build-site:"), "{report}");
        // A second build of the same commit into another database: same bytes.
        build_site(
            &repo_path,
            &other_url,
            &second_out,
            &["--base-url", "https://example.org/registry/"],
        );
    })
    .await
    .unwrap();

    let files = files_of(&first);
    let again = files_of(&second);
    assert_same_copies(&files, &again, "the same commit built twice");

    // Everything the issue lists is there.
    let live = common::db::count(&database.pool, "SELECT count(*) FROM personas WHERE NOT deleted").await;
    for file in [
        "index.html",
        "404.html",
        "search/index.html",
        "changes/index.html",
        "changes.atom",
        "status/index.html",
        "style.css",
        "search.js",
        "search-index.json",
        "search-index.js",
        "api/personas.json",
        "api/openapi.json",
        "p/albert-einstein/index.html",
        "p/albert-einstein/history/index.html",
        "p/albert-einstein/v/1/index.html",
        "api/personas/albert-einstein.json",
        "api/personas/albert-einstein/versions.json",
        "api/personas/albert-einstein@1.json",
        "api/personas/albert-einstein@1/prompt.json",
        "api/personas/albert-einstein/card.json",
        "p/juniper-hale-ceo/compare/1...2/index.html",
        "p/sable-9/v/1/index.html",
        "profiles/index.html",
        "profiles/debate-ready/index.html",
        "api/profiles.json",
        "api/profiles/debate-ready.json",
        "p/albert-einstein/profile/debate-ready/index.html",
    ] {
        assert!(files.contains_key(file), "{file} is missing");
    }
    // Every live persona with every profile applied, and nothing for the others.
    let profiles: serde_json::Value = serde_json::from_slice(&files["api/profiles.json"]).unwrap();
    let profiles: Vec<&str> = profiles["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|profile| profile["slug"].as_str().unwrap())
        .collect();
    assert_eq!(profiles, ["debate-ready", "gentle-tutor", "quick-advisor"]);
    let applied = files.keys().filter(|file| file.contains("/profile/")).count() as i64;
    assert_eq!(applied, live * 3);
    assert!(!files.contains_key("p/sable-9/profile/debate-ready/index.html"));
    let detail: serde_json::Value = serde_json::from_slice(&files["api/profiles/debate-ready.json"]).unwrap();
    assert_eq!(detail["history"][0]["change"], "added");
    let applied_page = String::from_utf8(files["p/albert-einstein/profile/debate-ready/index.html"].clone()).unwrap();
    assert!(applied_page.contains("class=\"prompt-text\""), "{applied_page}");
    let listing: serde_json::Value = serde_json::from_slice(&files["api/personas.json"]).unwrap();
    assert_eq!(listing["items"].as_array().unwrap().len() as i64, live);
    let pinned: serde_json::Value = serde_json::from_slice(&files["api/personas/albert-einstein@1.json"]).unwrap();
    assert_eq!(pinned["version"], 1);
    assert_eq!(pinned["persona"]["name"], "Albert Einstein");
    let index: serde_json::Value = serde_json::from_slice(&files["search-index.json"]).unwrap();
    assert_eq!(index["personas"].as_array().unwrap().len() as i64, live);
    assert!(
        !files.keys().any(|file| file.starts_with("p/juniper-hale/")),
        "the former slug has no pages"
    );
    // The 404 page is served at any depth: with a base URL its links are absolute.
    let not_found = String::from_utf8(files["404.html"].clone()).unwrap();
    assert!(
        not_found.contains("href=\"https://example.org/registry/style.css\""),
        "{not_found}"
    );
    let feed = String::from_utf8(files["changes.atom"].clone()).unwrap();
    assert!(
        feed.contains("https://example.org/registry/p/"),
        "the feed links to --base-url"
    );
    // "Similar personas" was computed at build time from the vector index.
    let einstein = Html::parse_document(std::str::from_utf8(&files["p/albert-einstein/index.html"]).unwrap());
    let similar = Selector::parse(".similar a").unwrap();
    assert!(
        einstein.select(&similar).count() >= 3,
        "no similar personas on the page"
    );

    let checked = check_links(&first, &files);
    assert!(checked > 500, "only {checked} links checked");

    // The hostile persona's text is escaped in every file it reaches.
    let mallory = String::from_utf8(files["p/mallory/index.html"].clone()).unwrap();
    let page = Html::parse_document(&mallory);
    assert_eq!(
        texts(&page, "h1"),
        [format!("Mallory {EVIL}")],
        "the name is text, not markup"
    );
    assert!(texts(&page, "script").is_empty(), "no script element on the page");
    for (file, bytes) in files
        .iter()
        .filter(|(file, _)| file.ends_with(".html") || file.ends_with(".atom"))
    {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains(EVIL), "{file} holds the raw script");
        assert!(!text.contains("onmouseover=\"alert"), "{file} holds a raw attribute");
    }

    // A directory that is not a copy is never replaced.
    let precious = work.path().join("precious");
    std::fs::create_dir(&precious).unwrap();
    std::fs::write(precious.join("notes.txt"), "mine").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_personas"))
        .args(["build-site", "--no-sync", "--repo"])
        .arg(repo.path())
        .arg("--out")
        .arg(&precious)
        .env_remove("QDRANT_URL")
        .env("DATABASE_URL", &database.url)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a copy made by build-site"));
    assert_eq!(std::fs::read_to_string(precious.join("notes.txt")).unwrap(), "mine");

    browse(&first, &files);
}

/// A static file server (Python's) on a free port, serving `root`.
struct StaticServer {
    child: Child,
    port: u16,
}

impl StaticServer {
    fn start(root: &Path) -> StaticServer {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
                "--directory",
            ])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 serves the copy");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the static server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        StaticServer { child, port }
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dump_dom(profile: &Path, url: &str) -> Html {
    let output = chromium(profile)
        .arg("--virtual-time-budget=5000")
        .arg("--dump-dom")
        .arg(url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Html::parse_document(&String::from_utf8_lossy(&output.stdout))
}

fn texts(page: &Html, selector: &str) -> Vec<String> {
    page.select(&Selector::parse(selector).unwrap())
        .map(|element| element.text().collect::<String>().trim().to_string())
        .collect()
}

/// Written into the persona page's copy: once the page has loaded, what the
/// browser computed from style.css, as the text of `#computed-style`.
const COMPUTED_STYLE: &str = r#"<script>
addEventListener("load", () => {
  const body = getComputedStyle(document.body);
  const h1 = getComputedStyle(document.querySelector("h1"));
  const probe = document.createElement("output");
  probe.id = "computed-style";
  probe.textContent = `margin ${body.marginTop}, background ${body.backgroundColor}, h1 ${h1.fontSize}`;
  document.body.append(probe);
});
</script>
"#;

/// Opens the copy in headless Chromium, under `/registry/` on a static
/// server and from file://, and finds the rendered content.
fn browse(copy: &Path, files: &BTreeMap<String, Vec<u8>>) {
    let www = tempfile::tempdir().unwrap();
    let mounted = www.path().join("registry");
    copy_tree(copy, &mounted);
    // The persona page as built, beside itself (its relative links resolve the
    // same), with a script that writes what the browser computed into the DOM.
    let page = std::str::from_utf8(&files["p/albert-einstein/index.html"]).unwrap();
    std::fs::write(
        mounted.join("p/albert-einstein/computed-style.html"),
        edit(page, "</body>", &format!("{COMPUTED_STYLE}</body>")),
    )
    .unwrap();
    let server = StaticServer::start(www.path());
    let profile = tempfile::tempdir().unwrap();
    let base = format!("http://127.0.0.1:{}/registry/", server.port);
    let file_base = format!("file://{}/", mounted.display());
    for root in [&base, &file_base] {
        let index = dump_dom(profile.path(), &format!("{root}index.html"));
        let names = texts(&index, "a");
        assert!(
            names.iter().any(|name| name == "Albert Einstein"),
            "{root}: index lists no Einstein: {names:?}"
        );

        let page = dump_dom(profile.path(), &format!("{root}p/albert-einstein/index.html"));
        assert_eq!(texts(&page, "h1"), ["Albert Einstein"], "{root}");
        // The stylesheet resolved and the browser applied it: without it the
        // body has an 8px margin and no background, and the h1 is 32px.
        let styled = dump_dom(profile.path(), &format!("{root}p/albert-einstein/computed-style.html"));
        assert_eq!(
            texts(&styled, "#computed-style"),
            ["margin 0px, background rgb(251, 252, 254), h1 28.8px"],
            "{root}: the browser did not apply style.css"
        );

        // The search page searches the prebuilt index in the browser.
        let search = dump_dom(profile.path(), &format!("{root}search/index.html?q=relativity"));
        let found = texts(&search, "#static-results a");
        assert_eq!(
            found.first().map(String::as_str),
            Some("Albert Einstein"),
            "{root}: {found:?}"
        );
        let filtered = dump_dom(profile.path(), &format!("{root}search/index.html?domain=testing"));
        let found = texts(&filtered, "#static-results a");
        assert_eq!(found.len(), 1, "{root}: {found:?}");
        assert!(found[0].starts_with("Mallory <script>"), "shown as text: {found:?}");
        assert!(
            !filtered.html().contains(&format!("Mallory {EVIL}")),
            "the hostile name became markup"
        );
    }
    let screenshots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let shot = screenshots.join("static-persona.png");
    // An earlier run's screenshot must not pass for this one's.
    match std::fs::remove_file(&shot) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => panic!("cannot remove {}: {error}", shot.display()),
    }
    let status = chromium(profile.path())
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("{base}p/albert-einstein/index.html"))
        .output()
        .unwrap();
    assert!(status.status.success(), "screenshot of the static persona page failed");
    let png = std::fs::read(&shot).unwrap_or_else(|error| panic!("no screenshot {}: {error}", shot.display()));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} is not a rendered page",
        shot.display()
    );
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// `build-site --preview BASE..HEAD`: the copy is of the head, every page
/// names the head and the base and lists the changes first, a changed
/// persona's compare page runs from the base's version to the head's, and
/// the configured database is never written.
#[tokio::test]
async fn a_preview_shows_the_change_and_leaves_production_alone() {
    let repo = TestRepo::new();
    repo.write("registry/registry.toml", SETTINGS);
    repo.write("registry/personas/alice.toml", &persona(ID_A, "Alice"));
    repo.write("registry/personas/bob.toml", &persona(ID_B, "Bob"));
    repo.commit("alice and bob");
    repo.write(
        "registry/personas/alice.toml",
        &edit(&persona(ID_A, "Alice"), "A test persona.", "Alice, second draft."),
    );
    repo.commit("alice v2 on main");
    repo.git(&["checkout", "-q", "-b", "feature/carol"]);
    repo.write(
        "registry/personas/alice.toml",
        &edit(&persona(ID_A, "Alice"), "A test persona.", "Alice, reviewed."),
    );
    repo.write("registry/personas/carol.toml", &persona(ID_C, "Carol"));
    repo.remove("registry/personas/bob.toml");
    repo.commit("alice reviewed, carol added, bob removed");

    let production = fresh().await;
    let out = tempfile::tempdir().unwrap();
    let copy = out.path().join("preview");
    let report = build_site(
        repo.path(),
        &production.url,
        &copy,
        &["--preview", "main..feature/carol"],
    );
    assert!(
        report.contains("the configured database and Qdrant are not used"),
        "{report}"
    );
    for table in ["persona_versions", "sync_commits", "sync_state"] {
        assert_eq!(
            db::count(&production.pool, &format!("SELECT count(*) FROM {table}")).await,
            0,
            "the preview wrote {table} of the configured database"
        );
    }

    let files = files_of(&copy);
    let checked = check_links(&copy, &files);
    assert!(checked > 100, "only {checked} links checked");
    let marker = String::from_utf8(files[".personas-site"].clone()).unwrap();
    assert!(
        marker.contains("A preview") && marker.contains("(feature/carol) against"),
        "{marker}"
    );
    let pages: Vec<&String> = files.keys().filter(|file| file.ends_with(".html")).collect();
    assert!(pages.len() > 10, "{pages:?}");
    for page in &pages {
        let html = Html::parse_document(std::str::from_utf8(&files[*page]).unwrap());
        let banner = texts(&html, "main > aside.preview-banner");
        assert_eq!(banner.len(), 1, "{page} has no banner");
        assert!(
            banner[0].contains("feature/carol") && banner[0].contains("main"),
            "{page}: {}",
            banner[0]
        );
    }
    let index = Html::parse_document(std::str::from_utf8(&files["index.html"]).unwrap());
    let changes = texts(&index, "aside.preview-banner li");
    assert_eq!(changes.len(), 3, "{changes:?}");
    let alice = changes.iter().find(|change| change.contains("Alice")).unwrap();
    // Alice is v2 on main and v3 at the head: the compare page runs 2...3.
    assert!(
        alice.contains("modified") && alice.contains("compare v2 → v3"),
        "{alice}"
    );
    assert!(
        changes
            .iter()
            .any(|change| change.contains("Carol") && change.contains("new in this change"))
    );
    assert!(
        changes
            .iter()
            .any(|change| change.contains("Bob") && change.contains("deleted"))
    );
    // Changed personas' cards are marked; the head no longer lists Bob.
    let marked = texts(&index, "article.card h2 .preview-change");
    assert_eq!(marked.len(), 2, "{marked:?}");
    let compare = String::from_utf8(files["p/alice/compare/2...3/index.html"].clone()).unwrap();
    assert!(
        compare.contains("Alice, second draft.") && compare.contains("Alice, reviewed."),
        "{compare}"
    );
    let head_page = String::from_utf8(files["p/alice/index.html"].clone()).unwrap();
    assert!(head_page.contains("Alice, reviewed."));
}

/// Near-identical personas (pairs whose texts differ in one word score
/// within a hair of each other): the copy of one commit must not depend on
/// how the vector index got there — built once from scratch, or updated
/// from an earlier commit's build.
#[tokio::test]
async fn similar_lists_do_not_depend_on_the_index_history() {
    let repo = TestRepo::new();
    repo.write("registry/registry.toml", SETTINGS);
    let id = |n: usize| format!("{n:08x}-0000-4000-8000-{n:012x}");
    let generated = |n: usize, note: &str| {
        edit(
            &persona(&id(n), &format!("Gen {}", n % 40)),
            "A test persona.",
            &format!("A generated test persona{note}, one of many alike."),
        )
    };
    for n in 1..=160 {
        repo.write(&format!("registry/personas/gen-{n}.toml"), &generated(n, ""));
    }
    repo.commit("160 near-identical personas");
    let history = fresh().await;
    let data_dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let incremental = out.path().join("incremental");
    build_site_with(repo.path(), &history.url, data_dir.path(), &incremental, &[]);
    for n in [7, 47, 87] {
        repo.write(&format!("registry/personas/gen-{n}.toml"), &generated(n, " (revised)"));
    }
    repo.commit("three revised");
    build_site_with(repo.path(), &history.url, data_dir.path(), &incremental, &[]);

    let fresh_database = fresh().await;
    let fresh_data_dir = tempfile::tempdir().unwrap();
    let from_scratch = out.path().join("from-scratch");
    build_site_with(
        repo.path(),
        &fresh_database.url,
        fresh_data_dir.path(),
        &from_scratch,
        &[],
    );

    let (one, other) = (files_of(&incremental), files_of(&from_scratch));
    assert_same_copies(&one, &other, "built through two index histories");
    // The lists are there, and full of near-ties.
    let page = Html::parse_document(std::str::from_utf8(&one["p/gen-7/index.html"]).unwrap());
    let scores = texts(&page, ".similar .score");
    assert_eq!(scores.len(), 5, "{scores:?}");
}

/// The build in place after a commit (an edit that moves a vector, a
/// deletion, a new persona) renders only what the commit reaches, leaves
/// every other file untouched, removes what no longer exists, and equals a
/// full build of the same commit from another database and index, byte for
/// byte; a change of options rebuilds in full.
#[tokio::test]
async fn a_build_in_place_equals_a_full_build_and_rewrites_only_what_changed() {
    let repo = registry_with_history();
    let database = fresh().await;
    let data_dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let site = work.path().join("site");
    let first = build_site_with(repo.path(), &database.url, data_dir.path(), &site, &[]);
    assert!(!first.contains("updated in place"), "{first}");
    let inode_and_time = |file: &str| {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(site.join(file)).unwrap();
        (metadata.ino(), metadata.mtime_nsec(), metadata.mtime())
    };
    let untouched = "p/ada-lovelace/v/1/index.html";
    let untouched_before = inode_and_time(untouched);
    let einstein_v1 = std::fs::read(site.join("p/albert-einstein/v/1/index.html")).unwrap();
    assert!(site.join("p/mallory/index.html").is_file());

    let einstein_path = repo.path().join("registry/personas/albert-einstein.toml");
    let einstein = std::fs::read_to_string(&einstein_path).unwrap();
    let description = einstein
        .lines()
        .find(|line| line.starts_with("description = "))
        .unwrap();
    repo.write(
        "registry/personas/albert-einstein.toml",
        &einstein.replace(
            description,
            "description = \"A patent clerk who rewrote physics, here described anew.\"",
        ),
    );
    repo.remove("registry/personas/mallory.toml");
    // The sample's policy wants a real person's phrase sourced or marked.
    let newcomer = persona(ID_C, "Newcomer").replace(
        "signature_phrases = [\"Test everything.\"]",
        "signature_phrases = [{ text = \"Test everything.\", marking = \"attributed\" }]",
    );
    repo.write("registry/personas/newcomer.toml", &newcomer);
    repo.commit("edit einstein, remove mallory, add a newcomer");
    let second = build_site_with(repo.path(), &database.url, data_dir.path(), &site, &[]);
    assert!(second.contains("updated in place"), "{second}");

    let other = fresh().await;
    let fresh_copy = work.path().join("fresh");
    build_site(repo.path(), &other.url, &fresh_copy, &[]);
    let (updated, full) = (files_of(&site), files_of(&fresh_copy));
    assert_same_copies(&updated, &full, "updated in place against a full build");

    // Only what the commit reaches was written.
    assert_eq!(inode_and_time(untouched), untouched_before, "{untouched} was rewritten");
    assert_ne!(
        std::fs::read(site.join("p/albert-einstein/v/1/index.html")).unwrap(),
        einstein_v1,
        "Einstein's first version now points at a newer one"
    );
    assert!(
        !site.join("api/personas/mallory.json").exists(),
        "the deleted persona's current answer is gone"
    );
    assert!(
        String::from_utf8_lossy(&updated["p/mallory/index.html"]).contains("deleted"),
        "its page now says it was deleted"
    );
    assert!(!second.contains(", 0 removed"), "nothing removed: {second}");
    assert!(
        site.join("p/mallory/v/1/index.html").is_file(),
        "its versions stay readable"
    );
    assert!(site.join("p/newcomer/index.html").is_file());
    let written: usize = second
        .split("updated in place: ")
        .nth(1)
        .and_then(|rest| rest.split(" rewritten").next())
        .and_then(|counts| counts.rsplit(", ").next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no count of rewritten files in {second}"));
    assert!(
        written > 0 && written * 4 < updated.len(),
        "{written} of {} files rewritten",
        updated.len()
    );

    // A change of profiles: one edited, one removed, one added. Every live
    // persona's pages with a profile applied follow, and nothing else does.
    let untouched_before = inode_and_time(untouched);
    let einstein_tutor = updated["p/albert-einstein/profile/gentle-tutor/index.html"].clone();
    let tutor_path = repo.path().join("registry/profiles/gentle-tutor.toml");
    let tutor = std::fs::read_to_string(&tutor_path).unwrap();
    repo.write(
        "registry/profiles/gentle-tutor.toml",
        &edit(&tutor, "humor_usage = \"medium\"", "humor_usage = \"high\""),
    );
    repo.remove("registry/profiles/quick-advisor.toml");
    repo.write(
        "registry/profiles/plain-speaker.toml",
        "schema = 1\nname = \"Plain Speaker\"\n\n[config]\nlanguage_style = \"concise\"\n",
    );
    repo.commit("profiles: a livelier tutor, no quick advisor, a plain speaker");
    let with_profiles = build_site_with(repo.path(), &database.url, data_dir.path(), &site, &[]);
    assert!(with_profiles.contains("updated in place"), "{with_profiles}");
    let again = fresh().await;
    let fresh_copy = work.path().join("fresh-profiles");
    build_site(repo.path(), &again.url, &fresh_copy, &[]);
    let (updated, full) = (files_of(&site), files_of(&fresh_copy));
    assert_same_copies(
        &updated,
        &full,
        "updated in place after a profile change against a full build",
    );
    assert_eq!(inode_and_time(untouched), untouched_before, "{untouched} was rewritten");
    assert_ne!(
        updated["p/albert-einstein/profile/gentle-tutor/index.html"], einstein_tutor,
        "the edited profile's pages were rendered again"
    );
    assert!(!updated.contains_key("p/albert-einstein/profile/quick-advisor/index.html"));
    assert!(updated.contains_key("p/albert-einstein/profile/plain-speaker/index.html"));
    assert!(updated.contains_key("p/newcomer/profile/plain-speaker/index.html"));
    let picker = String::from_utf8_lossy(&updated["p/ada-lovelace/index.html"]).into_owned();
    assert!(
        picker.contains("Plain Speaker") && !picker.contains("Quick Advisor"),
        "the persona pages list the profiles now"
    );
    assert!(
        !updated.contains_key("api/profiles/quick-advisor.json")
            && updated.contains_key("api/profiles/plain-speaker.json"),
        "the mirror holds the profiles there are now"
    );

    // Other options: a full build, not an update.
    let third = build_site_with(
        repo.path(),
        &database.url,
        data_dir.path(),
        &site,
        &["--no-sync", "--base-url", "https://example.org/registry/"],
    );
    assert!(!third.contains("updated in place"), "{third}");
}

/// The bulk path (versions read per batch, lists and facets read once)
/// renders the bytes the database reads `serve` makes would render.
#[tokio::test]
async fn the_bulk_path_renders_what_the_database_reads_render() {
    let repo = registry_with_history();
    let database = fresh().await;
    let data_dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let bulk = work.path().join("bulk");
    let through_database = work.path().join("through-database");
    build_site_with(repo.path(), &database.url, data_dir.path(), &bulk, &[]);
    build_site_with(
        repo.path(),
        &database.url,
        data_dir.path(),
        &through_database,
        &["--no-sync", "--through-database"],
    );
    let (mut one, other) = (files_of(&bulk), files_of(&through_database));
    assert!(
        one.remove(".personas-site.json").is_some(),
        "the bulk build leaves its manifest"
    );
    assert_same_copies(&one, &other, "the bulk path against the database reads");
    assert!(one.len() > 200, "only {} files", one.len());
    // The reference path rewrites links with the HTML parser, the bulk path
    // with the scan, which leaves to the parser any page whose markup it
    // cannot read: none of these may be, or the comparison above compared
    // the parser with itself. (The copy's links are rewritten, but its
    // markup is the templates'.)
    for (file, bytes) in one.iter().filter(|(file, _)| file.ends_with(".html")) {
        let html = std::str::from_utf8(bytes).unwrap();
        assert!(
            personas::export::tag_scan::link_values(html).is_some(),
            "{file}: the link scan leaves this page to the HTML parser"
        );
    }
    // Neither rewrites inside a noscript (its content is text to a parser
    // with scripting on): the static search page's link there must be relative.
    let search = std::str::from_utf8(&one["search/index.html"]).unwrap();
    let noscript = search
        .split_once("<noscript>")
        .and_then(|(_, rest)| rest.split_once("</noscript>"))
        .map(|(inside, _)| inside)
        .expect("the static search page says what it needs without JavaScript");
    assert!(
        noscript.contains("href=") && !noscript.contains("href=\"/"),
        "{noscript}"
    );
}
