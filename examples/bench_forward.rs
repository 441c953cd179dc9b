//! Bench-only: the bare actix-web + awc forwarder, with no JSON work, no middleware and no DSM
//! session: what the gateway's stack costs before the gateway does anything (`make bench`,
//! tests/bench/proxy_overhead.sh). Not part of the gateway's build.
//!   cargo run --release --example bench_forward -- 127.0.0.1:8080 http://127.0.0.1:5000

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(bind), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bench_forward <addr:port> <upstream base URL>");
        std::process::exit(2);
    };
    HttpServer::new(move || {
        let upstream = upstream.clone();
        // One client per worker, as the gateway has: awc's connection pool keeps the NAS
        // connections alive.
        let client = awc::Client::default();
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            let url = format!("{upstream}{}", req.uri());
            let request = client.request(req.method().clone(), url);
            async move {
                let mut answer = match request.send_body(body).await {
                    Ok(answer) => answer,
                    Err(error) => return HttpResponse::BadGateway().body(error.to_string()),
                };
                match answer.body().limit(1 << 20).await {
                    Ok(bytes) => HttpResponse::build(answer.status())
                        .content_type("application/json")
                        .body(bytes),
                    Err(error) => HttpResponse::BadGateway().body(error.to_string()),
                }
            }
        }))
    })
    .workers(1)
    .bind(bind)?
    .run()
    .await
}
