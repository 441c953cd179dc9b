//! Bench-only: actix-web answering one file's bytes from memory, the ceiling for a cached
//! answer in `make bench` (tests/bench/proxy_overhead.sh). Not part of the gateway's build.
//!   cargo run --release --example bench_static -- 127.0.0.1:8080 body.json

use actix_web::{App, HttpResponse, HttpServer, web};
use bytes::Bytes;

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(bind), Some(file)) = (args.next(), args.next()) else {
        eprintln!("usage: bench_static <addr:port> <file>");
        std::process::exit(2);
    };
    let body = Bytes::from(std::fs::read(file)?);
    HttpServer::new(move || {
        let body = body.clone();
        App::new().default_service(web::to(move || {
            let body = body.clone();
            async move {
                HttpResponse::Ok()
                    .content_type("application/json")
                    .body(body)
            }
        }))
    })
    .workers(1)
    .bind(bind)?
    .run()
    .await
}
