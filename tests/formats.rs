//! Golden files for the sender formats: `tests/formats/<sender>/<case>.{json,form,body}` is a
//! body as the sender documents it (JSON, a `payload=` form, or raw text), `<case>.tmpl` an
//! optional hook template, and `<case>.txt` the Chat text expected. Each body must be detected
//! as its sender's format and give the same text when the format is forced.
//! `UPDATE_GOLDEN=1 cargo test --test formats` rewrites the `.txt` files (review the diff).

use std::path::Path;

use syno_chat_gateway::formats::{Format, parse_body, render};

fn expected_format(sender: &str) -> (Format, Format) {
    // (detected, forced): Mattermost's payload is Slack's, so it is detected as Slack.
    match sender {
        "slack" => (Format::Slack, Format::Slack),
        "mattermost" => (Format::Slack, Format::Mattermost),
        "alertmanager" => (Format::Alertmanager, Format::Alertmanager),
        "grafana" => (Format::Grafana, Format::Grafana),
        "discord" => (Format::Discord, Format::Discord),
        "sonarr" | "radarr" => (Format::Arr, Format::Arr),
        "github" | "gitea" => (Format::Forge, Format::Forge),
        "teams" => (Format::Teams, Format::Teams),
        "webex" => (Format::Webex, Format::Webex),
        "google_chat" => (Format::GoogleChat, Format::GoogleChat),
        "matrix" => (Format::Matrix, Format::Matrix),
        "telegram" => (Format::Telegram, Format::Telegram),
        "teams_workflows" => (Format::TeamsWorkflows, Format::TeamsWorkflows),
        "generic" => (Format::Generic, Format::Generic),
        "text" => (Format::Text, Format::Text),
        other => panic!("unknown sender directory {other}"),
    }
}

#[test]
fn every_golden_case_renders_as_expected() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/formats");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut cases = 0;
    let mut failures = Vec::new();
    for sender in std::fs::read_dir(&root).unwrap() {
        let sender = sender.unwrap().path();
        let name = sender.file_name().unwrap().to_str().unwrap().to_owned();
        let (detected, forced) = expected_format(&name);
        for entry in std::fs::read_dir(&sender).unwrap() {
            let input = entry.unwrap().path();
            let content_type = match input.extension().and_then(|e| e.to_str()) {
                Some("json") => "application/json",
                Some("form") => "application/x-www-form-urlencoded",
                // Raw text under shoutrrr's label: the format must not trust the header.
                Some("body") => "application/json",
                _ => continue,
            };
            cases += 1;
            let body = std::fs::read(&input).unwrap();
            let template = std::fs::read_to_string(input.with_extension("tmpl")).ok();
            let payload = parse_body(Some(content_type), &body).unwrap();
            let auto = render(&payload, None, template.as_deref())
                .unwrap_or_else(|e| panic!("{}: {e}", input.display()));
            assert_eq!(auto.format, detected, "{}", input.display());
            let by_force = render(&payload, Some(forced), template.as_deref()).unwrap();
            assert_eq!(by_force.text, auto.text, "{}", input.display());
            let golden = input.with_extension("txt");
            if update {
                std::fs::write(&golden, format!("{}\n", auto.text)).unwrap();
                continue;
            }
            let expected = std::fs::read_to_string(&golden)
                .unwrap_or_else(|_| panic!("{} is missing", golden.display()));
            if expected.trim_end_matches('\n') != auto.text {
                failures.push(format!(
                    "{}:\n--- expected\n{expected}\n--- got\n{}\n",
                    input.display(),
                    auto.text
                ));
            }
        }
    }
    assert!(cases >= 15, "only {cases} golden cases found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A sender's numbers and sizes decide no allocation: a list indented 2^40 or u64::MAX deep
/// renders at Slack's deepest indent (it once asked for 2 TiB and aborted the process).
#[test]
fn a_hostile_list_indent_renders_at_the_deepest_indent() {
    for indent in [
        u64::MAX.to_string(),
        (1u64 << 40).to_string(),
        "9".to_owned(),
    ] {
        let body = format!(
            r#"{{"blocks":[{{"type":"rich_text","elements":[{{"type":"rich_text_list","indent":{indent},
              "elements":[{{"type":"rich_text_section","elements":[{{"type":"text","text":"deep"}}]}}]}}]}}]}}"#
        );
        let payload = parse_body(Some("application/json"), body.as_bytes()).unwrap();
        let rendered = render(&payload, None, None).unwrap();
        assert_eq!(
            rendered.text,
            format!("{}• deep", "  ".repeat(8)),
            "indent {indent}"
        );
    }
}
