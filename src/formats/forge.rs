//! GitHub, Gitea, Forgejo and Gogs native webhooks (senders-delivery-events A.9; GitLab's in
//! [`super::gitlab`]): a headline
//! per event, read from the body's shape (the `X-GitHub-Event`/`X-Gitea-Event` header names the
//! same thing): push with its commits, issues, pull requests and their reviews, comments,
//! releases, CI outcomes, deployments, stars, forks, labels and milestones, and the ping
//! sent when a hook is created, which is confirmed in one line.
//!
//! Everything but the URLs is written by people who can push or open an issue (commit
//! messages, author names, titles, comments, labels): it is shown as typed
//! ([`literal_text`]), so a `<https://evil|Approve>` in it is no Chat link. Only the links
//! made here with [`link`], and the Markdown links of comments, are links.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::markup::{link, literal_text, markdown_text};
use super::{FormatError, text_field};

/// A field written by people, as text to show (see the module's notes).
fn said<'a>(map: &'a Map<String, Value>, key: &str) -> Option<Cow<'a, str>> {
    text_field(map, key).map(literal_text)
}

/// Commits listed under a push headline.
const COMMITS_SHOWN: usize = 5;

/// Whether the body is a forge's: a repository with a full name, and who acted; or GitHub's
/// `ping`, which an organisation's or an app's hook sends without a repository.
pub fn looks_like(message: &Map<String, Value>) -> bool {
    super::gitlab::looks_like(message)
        || is_ping(message)
        || is_without_repository(message)
        || message
            .get("repository")
            .and_then(Value::as_object)
            .is_some_and(|r| text_field(r, "full_name").is_some())
            && ["sender", "pusher"]
                .iter()
                .any(|k| message.contains_key(*k))
}

/// A forge's event about an organisation, an app installation or an enterprise rather than
/// a repository (GitHub's `membership`, `organization`, `installation`, `projects_v2_item`...):
/// who acted, and the organisation, installation or enterprise, and no repository.
fn is_without_repository(message: &Map<String, Value>) -> bool {
    !message.contains_key("repository")
        && message
            .get("sender")
            .and_then(Value::as_object)
            .is_some_and(|sender| text_field(sender, "login").is_some())
        && ["organization", "installation", "enterprise"]
            .iter()
            .any(|key| message.get(*key).is_some_and(Value::is_object))
}

/// GitHub's `ping` when a hook is created: `zen` and `hook_id`.
fn is_ping(message: &Map<String, Value>) -> bool {
    message.contains_key("zen") && message.contains_key("hook_id")
}

pub fn render(message: &Map<String, Value>) -> Result<String, FormatError> {
    if super::gitlab::looks_like(message) {
        return super::gitlab::render(message);
    }
    let object = |key: &str| message.get(key).and_then(Value::as_object);
    let repo = object("repository").and_then(|r| said(r, "full_name"));
    // The ping when a hook is made (a repository's, an organisation's, an app's) is answered
    // 2xx, which is all GitHub checks, and not posted: it is no event of the repository.
    if is_ping(message) {
        return Err(FormatError::NotPosted(
            "GitHub's ping is answered, not posted",
        ));
    }
    // Answered 2xx, so the forge does not list every one as a failed delivery.
    if repo.is_none() && is_without_repository(message) {
        return Err(FormatError::NotPosted(
            "a forge's event about an organisation rather than a repository is not posted",
        ));
    }
    let repo = repo.ok_or_else(|| {
        FormatError::InvalidPayload("a forge payload names its repository".into())
    })?;
    if let Some(reason) = not_posted(message) {
        return Err(FormatError::NotPosted(reason));
    }
    let repo = &*repo;
    let who = actor(message);
    let action = said(message, "action").unwrap_or(Cow::Borrowed("updated"));
    let action = &*action;
    if let Some(run) = object("workflow_run") {
        return Ok(workflow_run(repo, run));
    }
    if let Some(status) = object("deployment_status") {
        return Ok(deployment_status(repo, status, object("deployment")));
    }
    // GitHub's `star` (`starred_at`, null when unstarred) and its older `watch` (`started`).
    if message.contains_key("starred_at") || action == "started" {
        return Ok(if action == "deleted" {
            format!("[{repo}] {who} unstarred the repository")
        } else {
            format!("[{repo}] ⭐ {who} starred the repository")
        });
    }
    if let Some(fork) = object("forkee") {
        let name = text_field(fork, "full_name").unwrap_or("a fork");
        let name = match text_field(fork, "html_url") {
            Some(url) => link(url, name),
            None => literal_text(name).into_owned(),
        };
        return Ok(format!("[{repo}] {who} forked the repository to {name}"));
    }
    if is_commit_status(message) {
        return Ok(commit_status(repo, message));
    }
    if let Some(commits) = message.get("commits").and_then(Value::as_array) {
        return Ok(push(message, repo, &who, commits));
    }
    // `create` and `delete` events: a branch or tag by name. GitHub's `create` carries
    // `master_branch` and Gitea's `sha`; the `delete` events of both carry neither.
    if let (Some(kind), Some(name)) = (said(message, "ref_type"), said(message, "ref")) {
        let verb = if message.contains_key("master_branch") || message.contains_key("sha") {
            "created"
        } else {
            "deleted"
        };
        return Ok(format!("[{repo}] {who} {verb} {kind} {name}"));
    }
    // A review, and a comment on a pull request's code (GitHub's `pull_request_review` and
    // `pull_request_review_comment`, Gitea's `pull_request_review_*`): they carry the pull
    // request too, but say what was done to it.
    if let (Some(pull), Some(review)) = (object("pull_request"), object("review")) {
        // Its text was posted with the review; a dismissal is news without it.
        if action == "dismissed" {
            return Ok(format!(
                "[{repo}] {who} dismissed a review of pull request {}",
                numbered(pull)
            ));
        }
        let state = text_field(review, "state")
            .or_else(|| text_field(review, "type"))
            .unwrap_or_default()
            .to_ascii_lowercase();
        let verb = if state.contains("approved") {
            "approved"
        } else if state.contains("changes_requested") || state.contains("rejected") {
            "requested changes on"
        } else {
            "reviewed"
        };
        return Ok(with_quote(
            format!("[{repo}] {who} {verb} pull request {}", numbered(pull)),
            text_field(review, "body").or_else(|| text_field(review, "content")),
        ));
    }
    if let (Some(pull), Some(comment)) = (object("pull_request"), object("comment")) {
        return Ok(with_quote(
            format!(
                "[{repo}] {who} commented on pull request {}",
                numbered(pull)
            ),
            text_field(comment, "body"),
        ));
    }
    if let Some(pull) = object("pull_request") {
        let merged = pull.get("merged").and_then(Value::as_bool) == Some(true);
        let action = if action == "closed" && merged {
            "merged"
        } else {
            action
        };
        return Ok(format!(
            "[{repo}] {who} {} pull request {}",
            readable(action),
            numbered(pull)
        ));
    }
    if let (Some(issue), Some(comment)) = (object("issue"), object("comment")) {
        return Ok(with_quote(
            format!("[{repo}] {who} commented on {}", numbered(issue)),
            text_field(comment, "body"),
        ));
    }
    if let Some(issue) = object("issue") {
        return Ok(format!(
            "[{repo}] {who} {} issue {}",
            readable(action),
            numbered(issue)
        ));
    }
    // A comment on a discussion (GitHub's `discussion_comment`): the discussion is named too.
    if let (Some(discussion), Some(comment)) = (object("discussion"), object("comment")) {
        return Ok(with_quote(
            format!(
                "[{repo}] {who} commented on discussion {}",
                numbered(discussion)
            ),
            text_field(comment, "body"),
        ));
    }
    // A comment on a commit (`commit_comment`): no issue or pull request, the commit's id.
    if let Some(comment) = object("comment")
        && let Some(commit) = text_field(comment, "commit_id")
    {
        let short = commit.get(..7).unwrap_or(commit);
        let name = match text_field(comment, "html_url") {
            Some(url) => link(url, short),
            None => literal_text(short).into_owned(),
        };
        return Ok(with_quote(
            format!("[{repo}] {who} commented on commit {name}"),
            text_field(comment, "body"),
        ));
    }
    if let Some(release) = object("release") {
        let name = text_field(release, "name")
            .or_else(|| text_field(release, "tag_name"))
            .unwrap_or("a release");
        let name = match text_field(release, "html_url") {
            Some(url) => link(url, name),
            None => literal_text(name).into_owned(),
        };
        return Ok(format!("[{repo}] {who} {action} release {name}"));
    }
    // Events named by one object: what was done, to which (a label, a milestone, a member...).
    for (kind, key) in NAMED_OBJECTS {
        if let Some(name) = object(kind).and_then(|o| said(o, key)) {
            let kind = kind.replace('_', " ");
            return Ok(format!("[{repo}] {who} {action} {kind} {name}"));
        }
    }
    Ok(format!("[{repo}] {who} {action}"))
}

/// A pull request's or issue's action (GitHub's and Gitea's spellings) as a verb before it.
fn readable(action: &str) -> std::borrow::Cow<'_, str> {
    let verb = match action {
        "review_requested" => "requested a review on",
        "review_request_removed" => "withdrew a review request on",
        "ready_for_review" => "marked as ready for review",
        "converted_to_draft" => "converted to a draft",
        "labeled" | "label_updated" => "labelled",
        "unlabeled" | "label_cleared" => "removed labels from",
        "milestoned" => "set a milestone on",
        "demilestoned" => "removed the milestone from",
        "auto_merge_enabled" => "enabled auto-merge on",
        "auto_merge_disabled" => "disabled auto-merge on",
        "enqueued" => "queued for merging",
        "dequeued" => "took out of the merge queue",
        other => return other.replace('_', " ").into(),
    };
    verb.into()
}

/// Objects whose event is said as "<action> <object> <its name>", with the field naming it.
const NAMED_OBJECTS: [(&str, &str); 6] = [
    ("label", "name"),
    ("milestone", "title"),
    ("member", "login"),
    ("discussion", "title"),
    ("branch_protection_rule", "name"),
    ("package", "name"),
];

/// Events that would say nothing a channel needs, or say it again (senders-delivery-events
/// A.9): GitHub sends `created`, `published` and `released` for one release (Gitea sends only
/// `published`, which is posted), and CI reports every step (a workflow run is posted once it
/// has completed, a commit status once it is not pending).
fn not_posted(message: &Map<String, Value>) -> Option<&'static str> {
    let action = text_field(message, "action");
    // GitHub's `synchronize` (Gitea's `synchronized`) comes with every push to an open pull
    // request's branch; the push event says it already.
    if message.contains_key("pull_request")
        && !message.contains_key("review")
        && !message.contains_key("comment")
        && matches!(action, Some("synchronize" | "synchronized"))
    {
        return Some("a push to a pull request's branch is posted by its push event");
    }
    // A comment or review edited or deleted: it was posted when it was made, and one deleted
    // (spam, say) must not be posted again under the name of whoever deleted it.
    if (message.contains_key("comment") || message.contains_key("review"))
        && matches!(action, Some("edited" | "deleted"))
    {
        return Some("an edited or deleted comment or review was posted when it was made");
    }
    if message.contains_key("release")
        && matches!(action, Some("created" | "released" | "prereleased"))
    {
        return Some("the release is posted once, when it is published");
    }
    if ["check_run", "check_suite", "workflow_job"]
        .iter()
        .any(|key| message.contains_key(*key))
    {
        return Some("CI is posted once its workflow run has completed");
    }
    if message.contains_key("workflow_run") && action != Some("completed") {
        return Some("a workflow run is posted once it has completed");
    }
    if is_commit_status(message) && text_field(message, "state") == Some("pending") {
        return Some("a commit status is posted once it is not pending");
    }
    // A deployment is said once, by its final status; the statuses before it say it starts.
    let deployment_state = message
        .get("deployment_status")
        .and_then(Value::as_object)
        .and_then(|status| text_field(status, "state"));
    match deployment_state {
        Some("pending" | "queued" | "in_progress" | "waiting") => {
            return Some("a deployment is posted once it has finished");
        }
        None if message.contains_key("deployment") && !message.contains_key("workflow_run") => {
            return Some("a deployment is posted once it has finished");
        }
        _ => {}
    }
    None
}

/// GitHub's and Gitea's `status` event: a commit's `sha`, `state` and `context`.
fn is_commit_status(message: &Map<String, Value>) -> bool {
    ["sha", "state", "context"]
        .iter()
        .all(|key| message.contains_key(*key))
}

/// The mark of a run's or a status's outcome.
pub(super) fn outcome_mark(outcome: &str) -> &'static str {
    match outcome {
        "success" => "✅",
        "failure" | "error" | "timed_out" | "startup_failure" => "❌",
        "cancelled" | "skipped" => "⚪",
        _ => "ℹ️",
    }
}

/// `[owner/repo] ❌ workflow CI failure on main <url|run>`.
fn workflow_run(repo: &str, run: &Map<String, Value>) -> String {
    let name = said(run, "name").unwrap_or(Cow::Borrowed("workflow"));
    let conclusion = said(run, "conclusion").unwrap_or(Cow::Borrowed("completed"));
    let branch = said(run, "head_branch")
        .map(|branch| format!(" on {branch}"))
        .unwrap_or_default();
    let url = text_field(run, "html_url")
        .map(|url| format!(" {}", link(url, "run")))
        .unwrap_or_default();
    format!(
        "[{repo}] {} workflow {name} {conclusion}{branch}{url}",
        outcome_mark(&conclusion)
    )
}

/// `[owner/repo] ✅ deployment to production success <url|production>`.
fn deployment_status(
    repo: &str,
    status: &Map<String, Value>,
    deployment: Option<&Map<String, Value>>,
) -> String {
    let state = said(status, "state").unwrap_or(Cow::Borrowed("finished"));
    let environment = text_field(status, "environment")
        .or_else(|| deployment.and_then(|d| text_field(d, "environment")))
        .unwrap_or("an environment");
    let reference = deployment
        .and_then(|d| said(d, "ref"))
        .map(|r| format!(" of {r}"))
        .unwrap_or_default();
    let description = said(status, "description")
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    let url = text_field(status, "environment_url")
        .map(|url| format!(" {}", link(url, environment)))
        .or_else(|| {
            text_field(status, "target_url").map(|url| format!(" {}", link(url, "details")))
        })
        .unwrap_or_default();
    let mark = match &*state {
        "inactive" => "⚪",
        other => outcome_mark(other),
    };
    let environment = literal_text(environment);
    format!("[{repo}] {mark} deployment{reference} to {environment} {state}{description}{url}")
}

/// `[owner/repo] ❌ ci/build failure: tests failed <url|details>`.
fn commit_status(repo: &str, message: &Map<String, Value>) -> String {
    let state = said(message, "state").unwrap_or_default();
    let context = said(message, "context").unwrap_or(Cow::Borrowed("status"));
    let description = said(message, "description")
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    let url = text_field(message, "target_url")
        .map(|url| format!(" {}", link(url, "details")))
        .unwrap_or_default();
    format!(
        "[{repo}] {} {context} {state}{description}{url}",
        outcome_mark(&state)
    )
}

/// `[owner/repo:main] alice pushed 2 commits <compare|compare>` and the commits.
pub(super) fn push(
    message: &Map<String, Value>,
    repo: &str,
    who: &str,
    commits: &[Value],
) -> String {
    let reference = said(message, "ref").unwrap_or_default();
    let reference = &*reference;
    let place = match (
        reference.strip_prefix("refs/heads/"),
        reference.strip_prefix("refs/tags/"),
    ) {
        (Some(branch), _) => format!("{repo}:{branch}"),
        (_, Some(tag)) => format!("{repo} tag {tag}"),
        _ => repo.to_owned(),
    };
    // Gitea counts commits beyond those it lists in `total_commits`.
    let total = message
        .get("total_commits")
        .and_then(Value::as_u64)
        .map_or(commits.len(), |n| n as usize)
        .max(commits.len());
    let compare = text_field(message, "compare_url")
        .or_else(|| text_field(message, "compare"))
        .map(|url| format!(" {}", link(url, "compare")))
        .unwrap_or_default();
    let flag = |key: &str| message.get(key).and_then(Value::as_bool) == Some(true);
    let (kind, name) = match (
        reference.strip_prefix("refs/heads/"),
        reference.strip_prefix("refs/tags/"),
    ) {
        (Some(branch), _) => ("branch", branch),
        (_, Some(tag)) => ("tag", tag),
        _ => ("ref", reference),
    };
    // A push that removes a branch or tag lists no commits; one that creates it may.
    if flag("deleted") {
        return format!("[{repo}] {who} deleted {kind} {name}");
    }
    if flag("created") && total == 0 {
        return format!("[{repo}] {who} created {kind} {name}{compare}");
    }
    // A forced push rewrote history: worth saying.
    let pushed = if flag("forced") {
        "force-pushed"
    } else {
        "pushed"
    };
    let mut lines = vec![match total {
        0 => format!("[{place}] {who} {pushed}{compare}"),
        1 => format!("[{place}] {who} {pushed} 1 commit{compare}"),
        n => format!("[{place}] {who} {pushed} {n} commits{compare}"),
    }];
    for commit in commits
        .iter()
        .filter_map(Value::as_object)
        .take(COMMITS_SHOWN)
    {
        let id = text_field(commit, "id").unwrap_or_default();
        let short = id.get(..7).unwrap_or(id);
        let sha = match text_field(commit, "url") {
            Some(url) => link(url, short),
            None => literal_text(short).into_owned(),
        };
        let subject = text_field(commit, "message")
            .and_then(|m| m.lines().next())
            .map(literal_text)
            .unwrap_or_default();
        let author = commit
            .get("author")
            .and_then(Value::as_object)
            .and_then(|a| said(a, "name"))
            .map(|name| format!(" — {name}"))
            .unwrap_or_default();
        lines.push(format!("• {sha} {subject}{author}"));
    }
    if total > COMMITS_SHOWN {
        lines.push(format!("…and {} more", total - COMMITS_SHOWN));
    }
    lines.join("\n")
}

/// Who acted: the sender's or pusher's login, username or name.
fn actor(message: &Map<String, Value>) -> String {
    let who = ["sender", "pusher"]
        .iter()
        .filter_map(|key| message.get(*key).and_then(Value::as_object))
        .find_map(|who| {
            ["login", "username", "name"]
                .iter()
                .find_map(|k| text_field(who, k))
        })
        .unwrap_or("someone");
    literal_text(who).into_owned()
}

/// `#12 <url|title>` for an issue or a pull request.
fn numbered(item: &Map<String, Value>) -> String {
    let number = item
        .get("number")
        .and_then(Value::as_u64)
        .map(|n| format!("#{n} "))
        .unwrap_or_default();
    let title = text_field(item, "title").unwrap_or("(untitled)");
    match text_field(item, "html_url") {
        Some(url) => format!("{number}{}", link(url, title)),
        None => format!("{number}{}", literal_text(title)),
    }
}

/// The first lines of a comment or review, quoted; its Markdown links (`[t](u)`, as GitHub's
/// and Gitea's comments are written) become Chat links, and the rest is text as typed.
/// A headline, and under it the first lines of what was written (a comment, a review), if
/// anything was.
pub(super) fn with_quote(mut headline: String, body: Option<&str>) -> String {
    if let Some(body) = body {
        headline.push('\n');
        headline.push_str(&quoted(body));
    }
    headline
}

fn quoted(body: &str) -> String {
    const LINES: usize = 3;
    let mut lines: Vec<String> = body
        .lines()
        .take(LINES)
        .map(|l| format!("> {}", markdown_text(l)))
        .collect();
    if body.lines().count() > LINES {
        lines.push("> …".to_owned());
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn edited_or_deleted_comments_are_not_posted_again_and_a_dismissal_is_a_headline() {
        let repo = json!({"full_name": "o/r"});
        for action in ["edited", "deleted"] {
            let on_issue = map(json!({"action": action, "repository": repo,
                "sender": {"login": "mod"}, "issue": {"number": 3, "title": "t"},
                "comment": {"body": "spam link"}}));
            let on_code = map(json!({"action": action, "repository": repo,
                "sender": {"login": "mod"}, "pull_request": {"number": 9, "title": "t"},
                "comment": {"body": "spam link"}}));
            let review = map(json!({"action": action, "repository": repo,
                "sender": {"login": "lead"}, "pull_request": {"number": 9, "title": "t"},
                "review": {"state": "approved", "body": "LGTM"}}));
            for payload in [on_issue, on_code, review] {
                assert!(
                    matches!(render(&payload), Err(FormatError::NotPosted(_))),
                    "{action}: {:?}",
                    render(&payload)
                );
            }
        }
        let created = map(json!({"action": "created", "repository": repo,
            "sender": {"login": "bob"}, "issue": {"number": 3, "title": "t"},
            "comment": {"body": "hello"}}));
        assert_eq!(
            render(&created).unwrap(),
            "[o/r] bob commented on #3 t\n> hello"
        );
        let dismissed = map(json!({"action": "dismissed", "repository": repo,
            "sender": {"login": "lead"}, "pull_request": {"number": 9, "title": "t"},
            "review": {"state": "dismissed", "body": "LGTM"}}));
        assert_eq!(
            render(&dismissed).unwrap(),
            "[o/r] lead dismissed a review of pull request #9 t"
        );
        // An edited issue is still news (its title may have changed).
        let issue = map(json!({"action": "edited", "repository": repo,
            "sender": {"login": "bob"}, "issue": {"number": 3, "title": "t"}}));
        assert_eq!(render(&issue).unwrap(), "[o/r] bob edited issue #3 t");
    }

    #[test]
    fn comments_on_commits_and_discussions_name_what_they_are_on() {
        let repo = json!({"full_name": "o/r"});
        let on_commit = map(json!({"action": "created", "repository": repo,
            "sender": {"login": "bob"},
            "comment": {"commit_id": "abc1234567890", "body": "nice fix",
                "html_url": "https://g.example/o/r/commit/abc1234567890#r1"}}));
        assert_eq!(
            render(&on_commit).unwrap(),
            "[o/r] bob commented on commit <https://g.example/o/r/commit/abc1234567890#r1|abc1234>\n> nice fix"
        );
        let on_discussion = map(json!({"action": "created", "repository": repo,
            "sender": {"login": "bob"}, "discussion": {"number": 5, "title": "Release plan"},
            "comment": {"body": "agreed"}}));
        assert_eq!(
            render(&on_discussion).unwrap(),
            "[o/r] bob commented on discussion #5 Release plan\n> agreed"
        );
        // The discussion itself is still named as before.
        let discussion = map(json!({"action": "created", "repository": repo,
            "sender": {"login": "bob"}, "discussion": {"number": 5, "title": "Release plan"}}));
        assert_eq!(
            render(&discussion).unwrap(),
            "[o/r] bob created discussion Release plan"
        );
    }

    #[test]
    fn an_organisations_event_without_a_repository_is_answered_not_posted() {
        let membership = map(json!({"action": "added", "scope": "team",
            "member": {"login": "carol"}, "sender": {"login": "admin"},
            "team": {"name": "ops"}, "organization": {"login": "acme"}}));
        assert!(looks_like(&membership));
        assert!(matches!(
            render(&membership),
            Err(FormatError::NotPosted(_))
        ));
        // Not a forge's: no one who acted.
        let other = map(json!({"organization": {"login": "acme"}, "text": "hi"}));
        assert!(!looks_like(&other));
    }

    #[test]
    fn a_forced_push_says_so() {
        let push = map(json!({"ref": "refs/heads/main", "forced": true,
            "repository": {"full_name": "o/r"}, "sender": {"login": "bob"},
            "commits": [{"id": "abc1234567", "message": "rewrite",
                "url": "https://g.example/o/r/commit/abc1234567", "author": {"name": "bob"}}]}));
        assert!(
            render(&push)
                .unwrap()
                .starts_with("[o/r:main] bob force-pushed 1 commit"),
            "{:?}",
            render(&push)
        );
    }

    #[test]
    fn comments_are_quoted_with_their_markdown_links_as_chat_links() {
        assert_eq!(
            quoted("see [the log](https://ci.example/1)\nsecond\nthird\nfourth"),
            "> see <https://ci.example/1|the log>\n> second\n> third\n> …"
        );
    }

    /// What Chat would show, the word joiner made visible.
    fn shown(text: &str) -> String {
        text.replace(crate::formats::markup::LINK_BREAK, "[WJ]")
    }

    #[test]
    fn links_typed_by_people_are_text_and_the_gateways_links_are_links() {
        let evil = "<https://evil.example/login|Approve deploy #42>";
        let repo = json!({"full_name": "o/r"});
        let push = map(json!({"ref": "refs/heads/main", "repository": repo,
            "sender": {"login": evil},
            "commits": [{"id": "abc1234567", "message": format!("{evil}\nmore"),
                "url": "https://g.example/o/r/commit/abc1234567",
                "author": {"name": evil}}]}));
        assert_eq!(
            shown(&render(&push).unwrap()),
            "[o/r:main] <[WJ]https://evil.example/login|Approve deploy #42> pushed 1 commit\n\
             • <https://g.example/o/r/commit/abc1234567|abc1234> \
             <[WJ]https://evil.example/login|Approve deploy #42> — \
             <[WJ]https://evil.example/login|Approve deploy #42>"
        );
        let issue = |html_url: Value| {
            map(
                json!({"action": "opened", "repository": repo, "sender": {"login": "m"},
                "issue": {"number": 3, "title": evil, "html_url": html_url}}),
            )
        };
        assert_eq!(
            shown(&render(&issue(Value::Null)).unwrap()),
            "[o/r] m opened issue #3 <[WJ]https://evil.example/login|Approve deploy #42>"
        );
        assert_eq!(
            shown(&render(&issue(json!("https://g.example/o/r/issues/3"))).unwrap()),
            "[o/r] m opened issue #3 \
             <https://g.example/o/r/issues/3|<[WJ]https://evil.example/login¦Approve deploy #42›>"
        );
        let comment = map(json!({"action": "created", "repository": repo,
            "sender": {"login": "m"}, "issue": {"number": 3, "title": "t"},
            "comment": {"body": format!("see [the log](https://ci.example/1) {evil}")}}));
        assert_eq!(
            shown(&render(&comment).unwrap()),
            "[o/r] m commented on #3 t\n\
             > see <https://ci.example/1|the log> <[WJ]https://evil.example/login|Approve deploy #42>"
        );
        let label = map(json!({"action": "created", "repository": repo,
            "sender": {"login": "m"}, "label": {"name": "<mailto:x@evil.example|bug>"}}));
        assert_eq!(
            shown(&render(&label).unwrap()),
            "[o/r] m created label <[WJ]mailto:x@evil.example|bug>"
        );
        let status = map(json!({"sha": "1b2c", "state": "failure", "context": "ci",
            "description": evil, "target_url": "https://ci/1",
            "repository": repo, "sender": {"login": "m"}}));
        assert_eq!(
            shown(&render(&status).unwrap()),
            "[o/r] ❌ ci failure: <[WJ]https://evil.example/login|Approve deploy #42> \
             <https://ci/1|details>"
        );
    }

    #[test]
    fn pull_request_actions_read_as_verbs_and_pushes_to_them_are_not_posted() {
        let pr = |action: &str| {
            let body = serde_json::json!({
                "action": action,
                "repository": {"full_name": "o/r"},
                "sender": {"login": "al"},
                "pull_request": {"number": 12, "title": "Fix", "html_url": "https://g.example/o/r/pull/12"}
            });
            render(body.as_object().unwrap())
        };
        assert!(
            pr("review_requested")
                .unwrap()
                .starts_with("[o/r] al requested a review on pull request ")
        );
        assert!(
            pr("label_updated")
                .unwrap()
                .starts_with("[o/r] al labelled pull request ")
        );
        assert!(
            pr("some_new_action")
                .unwrap()
                .starts_with("[o/r] al some new action pull request ")
        );
        for push in ["synchronize", "synchronized"] {
            assert!(matches!(pr(push), Err(FormatError::NotPosted(_))), "{push}");
        }
        assert!(
            pr("opened")
                .unwrap()
                .starts_with("[o/r] al opened pull request ")
        );
    }

    #[test]
    fn only_forge_shapes_are_taken_for_a_forge() {
        let repo = json!({"full_name": "o/r"});
        assert!(looks_like(&map(json!({"repository": repo, "sender": {}}))));
        assert!(looks_like(&map(json!({"repository": repo, "pusher": {}}))));
        assert!(!looks_like(&map(json!({"repository": repo}))));
        assert!(!looks_like(&map(
            json!({"repository": "o/r", "sender": {}})
        )));
        assert!(!looks_like(&map(json!({"text": "hi", "sender": {}}))));
    }

    #[test]
    fn deployments_are_posted_once_finished_and_stars_both_ways() {
        let event = |extra: Value| {
            let mut body = map(json!({"repository": {"full_name": "o/r"},
                "sender": {"login": "al"}}));
            body.extend(map(extra));
            render(&body)
        };
        let deployment = json!({"ref": "v2", "environment": "staging"});
        for state in ["pending", "queued", "in_progress"] {
            let status = json!({"deployment_status": {"state": state}, "deployment": deployment});
            assert!(
                matches!(event(status), Err(FormatError::NotPosted(_))),
                "{state}"
            );
        }
        let created = json!({"action": "created", "deployment": deployment});
        assert!(matches!(event(created), Err(FormatError::NotPosted(_))));
        let done = json!({"deployment_status": {"state": "success",
            "environment_url": "https://staging.example"}, "deployment": deployment});
        assert_eq!(
            event(done).unwrap(),
            "[o/r] ✅ deployment of v2 to staging success <https://staging.example|staging>"
        );
        let unstarred = json!({"action": "deleted", "starred_at": null});
        assert_eq!(
            event(unstarred).unwrap(),
            "[o/r] al unstarred the repository"
        );
        let watched = json!({"action": "started"});
        assert_eq!(
            event(watched).unwrap(),
            "[o/r] ⭐ al starred the repository"
        );
        let milestone = json!({"action": "closed", "milestone": {"title": "v1.0"}});
        assert_eq!(event(milestone).unwrap(), "[o/r] al closed milestone v1.0");
    }

    #[test]
    fn long_pushes_are_counted_and_tags_named() {
        let commits: Vec<Value> = (0..7)
            .map(|n| json!({"id": format!("{n:040}"), "message": format!("change {n}")}))
            .collect();
        let text = render(&map(json!({"ref": "refs/tags/v2", "commits": commits,
            "total_commits": 9, "repository": {"full_name": "o/r"},
            "pusher": {"username": "bob"}})))
        .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "[o/r tag v2] bob pushed 9 commits");
        assert_eq!(lines[1], "• 0000000 change 0");
        assert_eq!(lines.len(), 7, "{text}");
        assert_eq!(lines[6], "…and 4 more");
        let empty = render(&map(json!({"ref": "refs/heads/old", "commits": [],
            "repository": {"full_name": "o/r"}, "sender": {"login": "al"}})))
        .unwrap();
        assert_eq!(empty, "[o/r:old] al pushed");
        let deleted = render(&map(json!({"ref": "refs/heads/old", "commits": [],
            "deleted": true, "created": false,
            "repository": {"full_name": "o/r"}, "sender": {"login": "al"}})))
        .unwrap();
        assert_eq!(deleted, "[o/r] al deleted branch old");
    }

    #[test]
    fn branches_and_tags_made_or_removed_are_named() {
        let repo = json!({"full_name": "o/r"});
        let github_create = json!({"ref": "release/v2.0", "ref_type": "branch",
            "master_branch": "main", "description": null, "pusher_type": "user",
            "repository": repo, "sender": {"login": "al"}});
        assert_eq!(
            render(&map(github_create)).unwrap(),
            "[o/r] al created branch release/v2.0"
        );
        let gitea_create = json!({"sha": "1b2c", "ref": "v2.0", "ref_type": "tag",
            "repository": repo, "sender": {"login": "al"}});
        assert_eq!(
            render(&map(gitea_create)).unwrap(),
            "[o/r] al created tag v2.0"
        );
        let delete = json!({"ref": "release/v2.0", "ref_type": "branch",
            "pusher_type": "user", "repository": repo, "sender": {"login": "al"}});
        assert_eq!(
            render(&map(delete)).unwrap(),
            "[o/r] al deleted branch release/v2.0"
        );
    }

    #[test]
    fn reviews_and_review_comments_say_what_was_done_to_the_pull_request() {
        let base = json!({"repository": {"full_name": "o/r"}, "sender": {"login": "al"},
            "pull_request": {"number": 12, "title": "Fix", "html_url": "https://g/o/r/pull/12"}});
        let with = |key: &str, value: Value, action: &str| {
            let mut m = map(base.clone());
            m.insert(key.into(), value);
            m.insert("action".into(), json!(action));
            render(&m).unwrap()
        };
        assert_eq!(
            with("comment", json!({"body": "nit: typo"}), "created"),
            "[o/r] al commented on pull request #12 <https://g/o/r/pull/12|Fix>\n> nit: typo"
        );
        assert_eq!(
            with(
                "review",
                json!({"state": "approved", "body": "LGTM"}),
                "submitted"
            ),
            "[o/r] al approved pull request #12 <https://g/o/r/pull/12|Fix>\n> LGTM"
        );
        assert_eq!(
            with("review", json!({"state": "changes_requested"}), "submitted"),
            "[o/r] al requested changes on pull request #12 <https://g/o/r/pull/12|Fix>"
        );
        // Gitea: the review's `type` and `content`.
        assert_eq!(
            with(
                "review",
                json!({"type": "pull_request_review_rejected", "content": "not yet"}),
                "reviewed"
            ),
            "[o/r] al requested changes on pull request #12 <https://g/o/r/pull/12|Fix>\n> not yet"
        );
        assert_eq!(
            with("review", json!({"state": "commented"}), "submitted"),
            "[o/r] al reviewed pull request #12 <https://g/o/r/pull/12|Fix>"
        );
    }

    #[test]
    fn ci_is_posted_when_it_has_an_outcome_and_a_release_once() {
        let repo = json!({"full_name": "o/r"});
        let sender = json!({"login": "al"});
        let run = |action: &str, conclusion: Value| {
            map(
                json!({"action": action, "repository": repo, "sender": sender,
                "workflow_run": {"name": "CI", "conclusion": conclusion, "head_branch": "main",
                    "html_url": "https://g/o/r/actions/runs/9"}}),
            )
        };
        assert_eq!(
            render(&run("completed", json!("failure"))).unwrap(),
            "[o/r] ❌ workflow CI failure on main <https://g/o/r/actions/runs/9|run>"
        );
        for action in ["requested", "in_progress"] {
            assert!(matches!(
                render(&run(action, Value::Null)),
                Err(FormatError::NotPosted(_))
            ));
        }
        for step in ["check_run", "check_suite", "workflow_job"] {
            let event = map(json!({"action": "completed", "repository": repo,
                "sender": sender, step: {"conclusion": "success"}}));
            assert!(looks_like(&event));
            assert!(
                matches!(render(&event), Err(FormatError::NotPosted(_))),
                "{step}"
            );
        }
        let status = |state: &str| {
            map(json!({"sha": "1b2c", "state": state, "context": "ci/build",
                "description": "tests", "target_url": "https://ci/1",
                "repository": repo, "sender": sender}))
        };
        assert_eq!(
            render(&status("success")).unwrap(),
            "[o/r] ✅ ci/build success: tests <https://ci/1|details>"
        );
        assert!(matches!(
            render(&status("pending")),
            Err(FormatError::NotPosted(_))
        ));
        let release = |action: &str| {
            map(
                json!({"action": action, "repository": repo, "sender": sender,
                "release": {"tag_name": "v2"}}),
            )
        };
        assert_eq!(
            render(&release("published")).unwrap(),
            "[o/r] al published release v2"
        );
        for repeat in ["created", "released", "prereleased"] {
            assert!(matches!(
                render(&release(repeat)),
                Err(FormatError::NotPosted(_))
            ));
        }
    }

    #[test]
    fn pings_are_answered_and_not_posted() {
        let repo = map(json!({"zen": "Design for failure.", "hook_id": 6,
            "hook": {"type": "Repository"}, "repository": {"full_name": "o/r"},
            "sender": {"login": "al"}}));
        let org = map(json!({"zen": "Keep it logically awesome.", "hook_id": 7,
            "hook": {"type": "Organization"}, "organization": {"login": "acme"},
            "sender": {"login": "al"}}));
        let app = map(json!({"zen": "Speak like a human.", "hook_id": 8,
            "hook": {"type": "App"}}));
        for ping in [repo, org, app] {
            assert!(looks_like(&ping));
            assert!(matches!(render(&ping), Err(FormatError::NotPosted(_))));
        }
    }
}
