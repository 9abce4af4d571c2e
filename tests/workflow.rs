//! `.github/workflows/registry.yml`, run as GitHub would run it as far as
//! this machine can: every `run:` step, in order, with bash as GitHub
//! starts it, in a fresh clone of a fixture registry checked out at the
//! pull request's head, with the variables GitHub sets (`GITHUB_BASE_REF`,
//! `GITHUB_STEP_SUMMARY`, `GITHUB_ENV`, `RUNNER_TEMP`, …). The `uses:` steps
//! are GitHub's own actions; their inputs must name what the steps before
//! them wrote. A step that cannot run here fails this test.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use yaml_rust2::{Yaml, YamlLoader};

/// The actions the workflow may use, and the input that must name a file
/// or directory the `run:` steps produced (if any).
const KNOWN_ACTIONS: &[(&str, Option<&str>)] = &[
    ("actions/checkout@", None),
    ("actions/cache@", None),
    ("actions/upload-artifact@", Some("path")),
    ("marocchino/sticky-pull-request-comment@", Some("path")),
];

struct Step {
    name: String,
    run: Option<String>,
    uses: Option<String>,
    with: BTreeMap<String, String>,
}

struct Workflow {
    /// The workflow's `env:`, with `${{ vars.… }}` read as unset.
    env: BTreeMap<String, String>,
    steps: Vec<Step>,
}

fn text(yaml: &Yaml) -> String {
    match yaml {
        Yaml::String(text) => text.clone(),
        Yaml::Integer(number) => number.to_string(),
        Yaml::Boolean(flag) => flag.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn map(yaml: &Yaml) -> BTreeMap<String, String> {
    match yaml {
        Yaml::Hash(hash) => hash.iter().map(|(key, value)| (text(key), text(value))).collect(),
        Yaml::BadValue => BTreeMap::new(),
        other => panic!("not a mapping: {other:?}"),
    }
}

fn read_workflow() -> Workflow {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".github/workflows/registry.yml");
    let source = std::fs::read_to_string(&path).unwrap();
    let document = YamlLoader::load_from_str(&source).unwrap().remove(0);
    assert!(
        !document["on"]["pull_request"].is_badvalue(),
        "the workflow must run on pull requests"
    );
    let env = map(&document["env"])
        .into_iter()
        .map(|(name, value)| {
            let value = if value.starts_with("${{ vars.") {
                String::new()
            } else {
                value
            };
            assert!(
                !value.contains("${{"),
                "env {name}: only repository variables are understood here"
            );
            (name, value)
        })
        .collect();
    let steps = document["jobs"]["review"]["steps"]
        .as_vec()
        .expect("jobs.review.steps")
        .iter()
        .map(|step| Step {
            name: step["name"]
                .as_str()
                .or(step["uses"].as_str())
                .unwrap_or("(unnamed)")
                .to_string(),
            run: step["run"].as_str().map(str::to_string),
            uses: step["uses"].as_str().map(str::to_string),
            with: map(&step["with"]),
        })
        .collect();
    Workflow { env, steps }
}

/// main: Alice and Bob. `feature`: Alice's description improved (mergeable).
/// `draft`: a persona fresh from `personas new` (must not be merged).
fn fixture() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("registry/registry.toml", SETTINGS);
    repo.write("registry/personas/alice.toml", &persona(ID_A, "Alice"));
    repo.write("registry/personas/bob.toml", &persona(ID_B, "Bob"));
    repo.commit("alice and bob");
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.write(
        "registry/personas/alice.toml",
        &edit(
            &persona(ID_A, "Alice"),
            "A test persona.",
            "A physicist who explains by experiment.",
        ),
    );
    repo.commit("alice: a real description");
    repo.git(&["checkout", "-q", "-b", "draft", "main"]);
    let (code, _, errors) = personas(&["new", "Carol Draft", "--registry", "registry"], repo.path());
    assert_eq!(code, 0, "{errors}");
    repo.commit("carol, not finished");
    repo.git(&["checkout", "-q", "main"]);
    repo
}

/// What one run of the job left behind.
struct JobRun {
    /// Each step's name, exit status (`None` for a GitHub action) and output.
    steps: Vec<(String, Option<i32>, String)>,
    summary: String,
    runner_temp: PathBuf,
    _scratch: tempfile::TempDir,
}

impl JobRun {
    fn output_of(&self, name: &str) -> &str {
        &self
            .steps
            .iter()
            .find(|(step, _, _)| step == name)
            .unwrap_or_else(|| panic!("no step {name}"))
            .2
    }
}

/// Lines of a `GITHUB_ENV` file: `NAME=value`, or `NAME<<DELIMITER` … `DELIMITER`.
fn read_github_env(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines = text.lines();
    let mut found = Vec::new();
    while let Some(line) = lines.next() {
        if let Some((name, delimiter)) = line.split_once("<<") {
            let value: Vec<&str> = lines.by_ref().take_while(|line| *line != delimiter).collect();
            found.push((name.to_string(), value.join("\n")));
        } else if let Some((name, value)) = line.split_once('=') {
            found.push((name.to_string(), value.to_string()));
        }
    }
    found
}

/// Runs the job for a pull request of `head` into `main`, the way
/// `actions/checkout` leaves it: a clone with the history, at the head.
fn run_job(workflow: &Workflow, origin: &TestRepo, head: &str) -> JobRun {
    let scratch = tempfile::tempdir().unwrap();
    let workspace = scratch.path().join("workspace");
    let clone = Command::new("git")
        .args(["clone", "-q", "--no-local"])
        .arg(origin.path())
        .arg(&workspace)
        .status()
        .unwrap();
    assert!(clone.success());
    let checkout = Command::new("git")
        .args(["checkout", "-q", "--detach", &format!("origin/{head}")])
        .current_dir(&workspace)
        .status()
        .unwrap();
    assert!(checkout.success());
    let runner_temp = scratch.path().join("runner-temp");
    std::fs::create_dir_all(&runner_temp).unwrap();
    let (summary, output, github_env) = (
        scratch.path().join("step-summary.md"),
        scratch.path().join("github-output"),
        scratch.path().join("github-env"),
    );
    let binary_dir = Path::new(env!("CARGO_BIN_EXE_personas")).parent().unwrap();
    let path = format!("{}:{}", binary_dir.display(), std::env::var("PATH").unwrap_or_default());
    let head_sha = origin.git(&["rev-parse", head]);
    let mut env: BTreeMap<String, String> = workflow.env.clone();
    for (name, value) in [
        ("CI", "true"),
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_EVENT_NAME", "pull_request"),
        ("GITHUB_BASE_REF", "main"),
        ("GITHUB_HEAD_REF", head),
        ("GITHUB_REF", "refs/pull/1/merge"),
        ("GITHUB_SHA", head_sha.trim()),
        ("GITHUB_REPOSITORY", "example/registry"),
        ("RUNNER_OS", "Linux"),
    ] {
        env.insert(name.to_string(), value.to_string());
    }
    env.insert("PATH".to_string(), path);
    env.insert("GITHUB_WORKSPACE".to_string(), workspace.display().to_string());
    env.insert("RUNNER_TEMP".to_string(), runner_temp.display().to_string());
    env.insert("GITHUB_STEP_SUMMARY".to_string(), summary.display().to_string());
    env.insert("GITHUB_OUTPUT".to_string(), output.display().to_string());
    env.insert("GITHUB_ENV".to_string(), github_env.display().to_string());

    let mut steps = Vec::new();
    for (index, step) in workflow.steps.iter().enumerate() {
        if let Some(action) = &step.uses {
            let known = KNOWN_ACTIONS
                .iter()
                .find(|(prefix, _)| action.starts_with(prefix))
                .unwrap_or_else(|| panic!("step {}: {action} is not an action this test knows", step.name));
            if let Some(input) = known.1 {
                let named = step.with[input].replace("${{ runner.temp }}", &runner_temp.display().to_string());
                assert!(!named.contains("${{"), "step {}: {input} = {named}", step.name);
                assert!(
                    Path::new(&named).exists(),
                    "step {}: {input} names {named}, which the steps before it did not write",
                    step.name
                );
            }
            steps.push((step.name.clone(), None, String::new()));
            continue;
        }
        let script = step
            .run
            .as_ref()
            .unwrap_or_else(|| panic!("step {} has neither run nor uses", step.name));
        assert!(
            !script.contains("${{"),
            "step {}: a run step must read variables, not expressions, to be runnable here",
            step.name
        );
        let file = scratch.path().join(format!("step-{index}.sh"));
        std::fs::write(&file, script).unwrap();
        // GitHub's default shell on Linux runners.
        let result = Command::new("bash")
            .args(["--noprofile", "--norc", "-eo", "pipefail"])
            .arg(&file)
            .current_dir(&workspace)
            .env_clear()
            .envs(std::env::vars().filter(|(name, _)| {
                // What a runner has besides GitHub's variables: HOME, the
                // provisioned model and database binaries, and cargo.
                matches!(name.as_str(), "HOME" | "USER" | "LANG" | "TMPDIR") || name.starts_with("PERSONAS_")
            }))
            .envs(&env)
            .envs(read_github_env(&github_env))
            .output()
            .unwrap();
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        );
        let code = result.status.code().unwrap_or(-1);
        steps.push((step.name.clone(), Some(code), printed.clone()));
        if code != 0 {
            // As on GitHub, a failed step ends the job; it must be the last one.
            assert_eq!(
                index + 1,
                workflow.steps.len(),
                "step {} failed and would skip the steps after it:\n{printed}",
                step.name
            );
        }
    }
    JobRun {
        steps,
        summary: std::fs::read_to_string(&summary).unwrap_or_default(),
        runner_temp,
        _scratch: scratch,
    }
}

#[test]
fn every_step_of_the_registry_workflow_runs_on_a_pull_request() {
    let workflow = read_workflow();
    assert!(workflow.steps.iter().filter(|step| step.run.is_some()).count() >= 5);
    let origin = fixture();

    // A mergeable change: every step passes.
    let run = run_job(&workflow, &origin, "feature");
    for (name, code, printed) in &run.steps {
        assert!(
            matches!(code, None | Some(0)),
            "step {name} exited {code:?}:\n{printed}"
        );
    }
    assert!(run.summary.contains("ready for review"), "{}", run.summary);
    assert!(
        run.summary.contains("Alice (`alice`): modified, becomes v2"),
        "{}",
        run.summary
    );
    assert!(run.summary.contains("artifact `preview-site`"), "{}", run.summary);
    let review = std::fs::read_to_string(run.runner_temp.join("personas/review.md")).unwrap();
    assert!(run.summary.starts_with(&review), "the comment is the summary's review");
    let index = std::fs::read_to_string(run.runner_temp.join("personas/preview-site/index.html")).unwrap();
    assert!(
        index.contains("preview-banner") && index.contains("origin/main"),
        "the preview names the base: {index}"
    );
    assert!(run.output_of("Verdict").contains("check and review passed"));

    // A change that must not be merged: the steps still report everything,
    // and the verdict fails the job.
    let run = run_job(&workflow, &origin, "draft");
    let (name, code, printed) = run.steps.last().unwrap();
    assert_eq!((name.as_str(), *code), ("Verdict", Some(1)), "{printed}");
    assert!(printed.contains("::error::this change must not be merged"), "{printed}");
    assert!(run.summary.contains("must not be merged"), "{}", run.summary);
    assert!(
        run.output_of("Review")
            .contains("::error file=registry/personas/carol-draft.toml,line=1,col=1,title=placeholder::"),
        "{}",
        run.output_of("Review")
    );
}
