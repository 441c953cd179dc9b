//! The NAS over HTTPS with a self-signed certificate: verified by default (refused), trusted
//! through `upstream.tls.ca_file`, or accepted blindly only with the explicit insecure switch.

use std::sync::Arc;

use syno_chat_gateway::sim::SimConfig;

use crate::helpers::spawn_app_with;

struct SelfSigned {
    /// Holds the certificate file; removed with it when the test ends.
    _dir: tempfile::TempDir,
    pem_path: std::path::PathBuf,
    server: Arc<rustls::ServerConfig>,
}

fn self_signed() -> SelfSigned {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pem_path = dir.path().join("nas.pem");
    std::fs::write(&pem_path, certified.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    SelfSigned {
        _dir: dir,
        pem_path,
        server: Arc::new(server),
    }
}

fn https_sim(cert: &SelfSigned) -> SimConfig {
    SimConfig {
        tls: Some(cert.server.clone()),
        ..SimConfig::default()
    }
}

#[actix_web::test]
async fn a_self_signed_nas_is_refused_by_default() {
    let cert = self_signed();
    let app = spawn_app_with(https_sim(&cert), |_| {}).await;
    // The start-up warm-up may have failed first and started the back-off: either way the
    // caller is told that the NAS could not be reached.
    let answer = app.get("/api/v1/channels").await;
    let problem = match answer.status.as_u16() {
        503 => answer.assert_problem(503, "upstream_login_backoff"),
        _ => answer.assert_problem(502, "upstream_unreachable"),
    };
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("could not reach DSM"),
        "{problem}"
    );
    assert_eq!(
        app.sim.login_attempts(),
        0,
        "no password went to an unverified server"
    );
}

#[actix_web::test]
async fn a_ca_file_makes_the_self_signed_nas_trusted() {
    let cert = self_signed();
    let path = cert.pem_path.clone();
    let app = spawn_app_with(https_sim(&cert), move |s| {
        s.upstream.tls.ca_file = Some(path)
    })
    .await;
    let answer = app.get("/api/v1/channels").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[actix_web::test]
async fn the_insecure_switch_accepts_any_certificate() {
    let cert = self_signed();
    let app = spawn_app_with(https_sim(&cert), |s| {
        s.upstream.tls.insecure_skip_verify = true
    })
    .await;
    assert_eq!(app.get("/api/v1/channels").await.status, 200);
}
