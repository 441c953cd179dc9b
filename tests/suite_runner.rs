//! `make test` (tests/run_all.sh): every suite runs even after one failed or could not run;
//! the verdict comes at the end, and under CI=true a skip fails it too.

use std::path::Path;
use std::process::{Command, Output};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run_all(suites: &[String], ci: bool) -> Output {
    Command::new("bash")
        .arg(Path::new(ROOT).join("tests/run_all.sh"))
        .args(suites)
        .env("CI", if ci { "true" } else { "false" })
        .output()
        .expect("bash runs")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_suite_runs_and_a_failure_fails_at_the_end() {
    let dir = std::env::temp_dir().join(format!("synochat-run-all-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("last-suite-ran");
    let _ = std::fs::remove_file(&marker);
    let suites = [
        "deploy=echo 'FAIL: something'; exit 1".to_owned(),
        "e2e=echo \"!!!! e2e: SKIPPING 'swagger-ui' (no chromium)\"; echo 'e2e: 3 passed, 0 failed, 1 skipped'".to_owned(),
        format!("rust=touch '{}'", marker.display()),
    ];
    let out = run_all(&suites, false);
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(
        marker.exists(),
        "the suite after a failure did not run: {printed}"
    );
    assert!(printed.contains("deploy   FAIL (exit 1)"), "{printed}");
    assert!(printed.contains("e2e      ok, 1 skipped"), "{printed}");
    assert!(printed.contains("rust     ok"), "{printed}");
    // The failed suite's output comes again after the last suite's, where a reader of only the
    // end of the output sees it.
    let last_suite = printed.find("==== make test: suite rust").unwrap();
    assert!(
        printed.rfind("FAIL: something").unwrap() > last_suite,
        "{printed}"
    );
    assert!(
        printed.contains("!!!! SKIPPED e2e: !!!! e2e: SKIPPING 'swagger-ui' (no chromium)"),
        "{printed}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_skip_fails_only_under_ci() {
    let suites = ["deploy=echo 'skip: caddy (tool missing)'; echo '5 passed, 0 failed, 1 skipped, 2 not applicable'".to_owned()];
    let local = run_all(&suites, false);
    assert_eq!(local.status.code(), Some(0), "{}", text(&local));
    assert!(text(&local).contains("!!!! SKIPPED deploy: skip: caddy"));
    let ci = run_all(&suites, true);
    assert_eq!(ci.status.code(), Some(1), "{}", text(&ci));
    assert!(text(&ci).contains("under CI=true every skip is a failure"));
    let clean = run_all(
        &["rust=echo '1 passed, 0 failed, 0 skipped'".to_owned()],
        true,
    );
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));
}

#[test]
fn make_test_goes_through_the_runner() {
    let makefile = std::fs::read_to_string(Path::new(ROOT).join("Makefile")).unwrap();
    let recipe = makefile
        .split("\ntest:")
        .nth(1)
        .expect("a test target")
        .lines()
        .take(2)
        .collect::<Vec<_>>();
    // No prerequisites (make would stop at the first failing one) and the runner as recipe.
    assert_eq!(recipe[0].trim(), "", "{recipe:?}");
    assert!(recipe[1].contains("tests/run_all.sh"), "{recipe:?}");
}
