//! Several gateway replicas sharing one DSM account (and, by default, one `session_name`).

use std::net::SocketAddr;

use syno_chat_gateway::sim::{SimConfig, Simulator};
use syno_chat_gateway::startup::Application;

use crate::helpers::{READ_KEY, settings_for, store_url};

/// Starts `n` gateways against one simulator, each with the given session name and its own
/// store in the returned temporary directory (which must outlive them).
async fn replicas(sim: &Simulator, session_names: &[&str]) -> (tempfile::TempDir, Vec<String>) {
    let stores = tempfile::tempdir().expect("temporary directory");
    let mut bases = Vec::new();
    for (i, name) in session_names.iter().enumerate() {
        let mut settings = settings_for(&sim.base_url());
        settings.upstream.session_name = (*name).to_owned();
        let store_dir = stores.path().join(format!("replica-{i}"));
        std::fs::create_dir(&store_dir).expect("a replica's store directory");
        settings.store.url = store_url(&store_dir);
        let app = Application::build(settings).await.expect("gateway starts");
        bases.push(format!("http://{}", app.address()));
        actix_web::rt::spawn(app.run_until_stopped());
    }
    (stores, bases)
}

async fn read_posts(base: &str) -> u16 {
    awc::Client::new()
        .get(format!("{base}/api/v1/channels/1/posts"))
        .insert_header(("Authorization", format!("Bearer {READ_KEY}")))
        .send()
        .await
        .expect("gateway answers")
        .status()
        .as_u16()
}

/// Alternates reads between the replicas; answers the logins DSM saw.
async fn alternate(sim: &Simulator, bases: &[String]) -> usize {
    for base in bases {
        assert_eq!(read_posts(base).await, 200);
    }
    let settled = sim.control().login_attempts();
    for _ in 0..5 {
        for base in bases {
            assert_eq!(read_posts(base).await, 200, "callers never see it");
        }
    }
    sim.control().login_attempts() - settled
}

#[actix_web::test]
async fn replicas_sharing_one_session_name_keep_their_own_sessions() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Simulator::start(SimConfig::default(), SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let (_stores, bases) = replicas(&sim, &["Chat", "Chat", "Chat"]).await;
    assert_eq!(
        alternate(&sim, &bases).await,
        0,
        "a login with the same session name does not end another replica's session"
    );
    assert_eq!(sim.control().active_sessions().len(), 3);
}

#[actix_web::test]
async fn a_nas_that_ends_older_sessions_of_the_account_makes_replicas_log_each_other_out() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Simulator::start(
        SimConfig {
            kill_previous_session_on_relogin: true,
            ..SimConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    // Different session names do not help: DSM's "duplicate login" (107) is per account.
    let (_stores, bases) = replicas(&sim, &["Chat-a", "Chat-b"]).await;
    assert!(
        alternate(&sim, &bases).await >= 5,
        "each switch of replica costs a login: give each replica its own DSM account"
    );
}
