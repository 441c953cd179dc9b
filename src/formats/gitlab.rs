//! GitLab's native webhooks (`object_kind`; docs.gitlab.com, "Webhook events"): a headline per
//! event in the forges' words ([`super::forge`]): pushes with their commits, tags, merge
//! requests, issues, comments, pipelines and deployments once they are over, releases and wiki
//! pages. Read with the forges' format (`format = "forge"`, or detected from `object_kind` and
//! `project.path_with_namespace`).
//!
//! As for the other forges, what people wrote (titles, commit messages, comments, names) is
//! shown as typed; only the links made here are links.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::forge::{outcome_mark, push, with_quote};
use super::markup::{link, literal_text};
use super::{FormatError, text_field};

/// A commit id of zeros: GitLab's `before` of a new branch or tag, `after` of a deleted one.
const NO_COMMIT: &str = "0000000000000000000000000000000000000000";

pub fn looks_like(message: &Map<String, Value>) -> bool {
    text_field(message, "object_kind").is_some() && project(message).is_some()
}

/// The project's path (`group/project`).
fn project(message: &Map<String, Value>) -> Option<&str> {
    message
        .get("project")
        .and_then(Value::as_object)
        .and_then(|p| text_field(p, "path_with_namespace"))
}

pub fn render(message: &Map<String, Value>) -> Result<String, FormatError> {
    let kind = text_field(message, "object_kind").unwrap_or_default();
    let repo = literal_text(project(message).unwrap_or_default()).into_owned();
    let repo = &*repo;
    let who = actor(message);
    let object = |key: &str| message.get(key).and_then(Value::as_object);
    let attributes = object("object_attributes");
    let attribute = |key: &str| attributes.and_then(|a| text_field(a, key));
    match kind {
        "push" | "tag_push" => Ok(pushed(message, repo, &who)),
        "merge_request" | "issue" | "work_item" => {
            let action = attribute("action").unwrap_or("updated");
            // Sent for every edit and every push to the branch: the opening, closing and
            // merging are the news (as GitHub's `synchronize` is not posted).
            if action == "update" {
                return Err(FormatError::NotPosted(
                    "an update of a merge request or issue is not posted",
                ));
            }
            let noun = match kind {
                "merge_request" => "merge request",
                _ => "issue",
            };
            let verb = match action {
                "open" => "opened",
                "close" => "closed",
                "reopen" => "reopened",
                "merge" => "merged",
                "approved" | "approval" => "approved",
                "unapproved" | "unapproval" => "withdrew approval of",
                other => other,
            };
            Ok(format!(
                "[{repo}] {who} {verb} {noun} {}",
                numbered(attributes, kind)
            ))
        }
        "note" => {
            let on = match attribute("noteable_type").unwrap_or_default() {
                "MergeRequest" => format!(
                    "merge request {}",
                    numbered(object("merge_request"), "merge_request")
                ),
                "Issue" => format!("issue {}", numbered(object("issue"), "issue")),
                "Commit" => {
                    let id = object("commit")
                        .and_then(|c| text_field(c, "id"))
                        .unwrap_or_default();
                    format!("commit {}", id.get(..8).unwrap_or(id))
                }
                _ => "a snippet".to_owned(),
            };
            let headline = match attribute("url") {
                Some(url) => format!("[{repo}] {who} {} on {on}", link(url, "commented")),
                None => format!("[{repo}] {who} commented on {on}"),
            };
            Ok(with_quote(headline, attribute("note")))
        }
        "pipeline" | "deployment" => finished_run(message, repo, kind, attributes),
        "release" => {
            let action = text_field(message, "action").unwrap_or("updated");
            let name = text_field(message, "name")
                .or_else(|| text_field(message, "tag"))
                .unwrap_or("a release");
            let name = match text_field(message, "url") {
                Some(url) => link(url, name),
                None => literal_text(name).into_owned(),
            };
            let verb = match action {
                "create" => "published",
                "delete" => "deleted",
                _ => "updated",
            };
            Ok(format!("[{repo}] {verb} release {name}"))
        }
        "wiki_page" => {
            let title = attribute("title").unwrap_or("a page");
            let title = match attribute("url") {
                Some(url) => link(url, title),
                None => literal_text(title).into_owned(),
            };
            let verb = match attribute("action").unwrap_or_default() {
                "create" => "created",
                "delete" => "deleted",
                _ => "updated",
            };
            Ok(format!("[{repo}] {who} {verb} wiki page {title}"))
        }
        // A job's states come with its pipeline's, which says how the run ended.
        "build" => Err(FormatError::NotPosted(
            "a GitLab job is not posted: its pipeline says how the run ended",
        )),
        _ => Ok(format!("[{repo}] {who}: {}", literal_text(kind))),
    }
}

/// A push or a tag push, in the forges' words: GitLab's fields put where [`push`] reads them.
fn pushed(message: &Map<String, Value>, repo: &str, who: &str) -> String {
    let before = text_field(message, "before").unwrap_or_default();
    let after = text_field(message, "after").unwrap_or_default();
    let mut read = Map::new();
    for key in ["ref"] {
        if let Some(value) = message.get(key) {
            read.insert(key.into(), value.clone());
        }
    }
    if let Some(total) = message.get("total_commits_count") {
        read.insert("total_commits".into(), total.clone());
    }
    read.insert("deleted".into(), Value::Bool(after == NO_COMMIT));
    read.insert("created".into(), Value::Bool(before == NO_COMMIT));
    if let Some(web) = message
        .get("project")
        .and_then(Value::as_object)
        .and_then(|p| text_field(p, "web_url"))
        && before != NO_COMMIT
        && after != NO_COMMIT
        && !before.is_empty()
    {
        read.insert(
            "compare_url".into(),
            Value::String(format!("{web}/-/compare/{before}...{after}")),
        );
    }
    let commits = message
        .get("commits")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    push(&read, repo, who, commits)
}

/// A pipeline or a deployment once it is over; the states before are not posted.
fn finished_run(
    message: &Map<String, Value>,
    repo: &str,
    kind: &str,
    attributes: Option<&Map<String, Value>>,
) -> Result<String, FormatError> {
    let status = match kind {
        "deployment" => text_field(message, "status"),
        _ => attributes.and_then(|a| text_field(a, "status")),
    }
    .unwrap_or_default();
    let outcome = match status {
        "success" => "success",
        "failed" => "failure",
        "canceled" => "cancelled",
        _ => {
            return Err(FormatError::NotPosted(
                "a GitLab pipeline or deployment that is not over is not posted",
            ));
        }
    };
    let mark = outcome_mark(outcome);
    let verb = match outcome {
        "success" => "passed",
        "failure" => "failed",
        _ => "was cancelled",
    };
    Ok(match kind {
        "deployment" => {
            let environment = text_field(message, "environment").unwrap_or("an environment");
            let what = match text_field(message, "deployable_url") {
                Some(url) => link(url, "deployment"),
                None => "deployment".to_owned(),
            };
            format!(
                "[{repo}] {mark} {what} to {} {verb}",
                literal_text(environment)
            )
        }
        _ => {
            let id = attributes
                .and_then(|a| a.get("id"))
                .and_then(Value::as_u64)
                .map(|id| format!("#{id}"))
                .unwrap_or_default();
            let name = format!("pipeline {id}").trim_end().to_owned();
            let name = match attributes.and_then(|a| text_field(a, "url")) {
                Some(url) => link(url, &name),
                None => name,
            };
            let on = attributes
                .and_then(|a| text_field(a, "ref"))
                .map(|r| format!(" on {}", literal_text(r)))
                .unwrap_or_default();
            format!("[{repo}] {mark} {name}{on} {verb}")
        }
    })
}

/// Who acted: `user_username` or `user_name` (pushes), else `user`'s username or name.
fn actor(message: &Map<String, Value>) -> String {
    let who = text_field(message, "user_username")
        .or_else(|| text_field(message, "user_name"))
        .or_else(|| {
            message
                .get("user")
                .and_then(Value::as_object)
                .and_then(|u| text_field(u, "username").or_else(|| text_field(u, "name")))
        })
        .unwrap_or("someone");
    literal_text(who).into_owned()
}

/// `!12 <url|title>` for a merge request, `#5 <url|title>` for an issue.
fn numbered(item: Option<&Map<String, Value>>, kind: &str) -> String {
    let sign = if kind == "merge_request" { '!' } else { '#' };
    let Some(item) = item else {
        return String::new();
    };
    let number = item
        .get("iid")
        .and_then(Value::as_u64)
        .map(|n| format!("{sign}{n} "))
        .unwrap_or_default();
    let title: Cow<'_, str> = text_field(item, "title").unwrap_or("(untitled)").into();
    match text_field(item, "url") {
        Some(url) => format!("{number}{}", link(url, &title)),
        None => format!("{number}{}", literal_text(&title)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rendered(body: Value) -> Result<String, FormatError> {
        render(body.as_object().unwrap())
    }

    fn project() -> Value {
        json!({"path_with_namespace": "ops/nas", "web_url": "https://gitlab.example/ops/nas"})
    }

    #[test]
    fn a_push_lists_its_commits_and_a_new_or_deleted_branch_says_so() {
        let body = json!({"object_kind": "push", "user_name": "Jane Doe", "user_username": "jane",
        "ref": "refs/heads/main", "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
        "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "total_commits_count": 2,
        "project": project(),
        "commits": [
            {"id": "b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327", "message": "Update README\n\nbody",
             "url": "https://gitlab.example/ops/nas/-/commit/b6568db1", "author": {"name": "Jane Doe"}},
            {"id": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "message": "Fix <https://evil|x>",
             "url": "https://gitlab.example/ops/nas/-/commit/da156088", "author": {"name": "Jane Doe"}},
        ]});
        let text = rendered(body).unwrap();
        assert!(
            text.starts_with("[ops/nas:main] jane pushed 2 commits <https://gitlab.example/ops/nas/-/compare/95790bf891e76fee5e1747ab589903a6a1f80f22...da1560886d4f094c3e6c9ef40349f7d38b5d27d7|compare>"),
            "{text}"
        );
        assert!(text.contains("• <https://gitlab.example/ops/nas/-/commit/b6568db1|b6568db> Update README — Jane Doe"), "{text}");
        // A commit message's markup is shown as typed, not a live link.
        assert!(!text.contains("<https://evil|x>"), "{text}");
        let deleted = json!({"object_kind": "push", "user_username": "jane", "ref": "refs/heads/old",
            "before": "95790bf891e76fee5e1747ab589903a6a1f80f22", "after": NO_COMMIT,
            "total_commits_count": 0, "commits": [], "project": project()});
        assert_eq!(
            rendered(deleted).unwrap(),
            "[ops/nas] jane deleted branch old"
        );
        let tag = json!({"object_kind": "tag_push", "user_username": "jane", "ref": "refs/tags/v1.0",
            "before": NO_COMMIT, "after": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
            "total_commits_count": 0, "commits": [], "project": project()});
        assert_eq!(rendered(tag).unwrap(), "[ops/nas] jane created tag v1.0");
    }

    #[test]
    fn merge_requests_issues_and_comments_have_headlines_and_updates_are_not_posted() {
        let mr = |action: &str| {
            json!({"object_kind": "merge_request", "user": {"username": "jane", "name": "Jane"},
                "project": project(), "object_attributes": {"iid": 12, "title": "Faster backups",
                "url": "https://gitlab.example/ops/nas/-/merge_requests/12", "action": action}})
        };
        assert_eq!(
            rendered(mr("open")).unwrap(),
            "[ops/nas] jane opened merge request !12 <https://gitlab.example/ops/nas/-/merge_requests/12|Faster backups>"
        );
        assert!(
            rendered(mr("merge"))
                .unwrap()
                .contains("jane merged merge request !12")
        );
        assert!(matches!(
            rendered(mr("update")),
            Err(FormatError::NotPosted(_))
        ));
        let issue = json!({"object_kind": "issue", "user": {"username": "bob"}, "project": project(),
            "object_attributes": {"iid": 5, "title": "Disk full", "action": "close",
            "url": "https://gitlab.example/ops/nas/-/issues/5"}});
        assert_eq!(
            rendered(issue).unwrap(),
            "[ops/nas] bob closed issue #5 <https://gitlab.example/ops/nas/-/issues/5|Disk full>"
        );
        let note = json!({"object_kind": "note", "user": {"username": "bob"}, "project": project(),
            "object_attributes": {"note": "Looks good\nsecond line", "noteable_type": "MergeRequest",
            "url": "https://gitlab.example/ops/nas/-/merge_requests/12#note_1"},
            "merge_request": {"iid": 12, "title": "Faster backups",
            "url": "https://gitlab.example/ops/nas/-/merge_requests/12"}});
        let text = rendered(note).unwrap();
        assert!(text.starts_with("[ops/nas] bob <https://gitlab.example/ops/nas/-/merge_requests/12#note_1|commented> on merge request !12"), "{text}");
        assert!(text.contains("> Looks good"), "{text}");
    }

    #[test]
    fn pipelines_and_deployments_are_posted_once_over() {
        let pipeline = |status: &str| {
            json!({"object_kind": "pipeline", "user": {"username": "jane"}, "project": project(),
                "object_attributes": {"id": 31, "status": status, "ref": "main",
                "url": "https://gitlab.example/ops/nas/-/pipelines/31"}})
        };
        let failed = rendered(pipeline("failed")).unwrap();
        assert!(
            failed.contains(
                "<https://gitlab.example/ops/nas/-/pipelines/31|pipeline #31> on main failed"
            ),
            "{failed}"
        );
        assert!(
            rendered(pipeline("success"))
                .unwrap()
                .ends_with("on main passed")
        );
        for status in ["running", "pending", "created"] {
            assert!(matches!(
                rendered(pipeline(status)),
                Err(FormatError::NotPosted(_))
            ));
        }
        let deployment = json!({"object_kind": "deployment", "status": "success",
            "environment": "production", "project": project(), "user": {"username": "jane"}});
        assert!(
            rendered(deployment)
                .unwrap()
                .ends_with("deployment to production passed")
        );
        let job = json!({"object_kind": "build", "project": project()});
        assert!(matches!(rendered(job), Err(FormatError::NotPosted(_))));
    }
}
