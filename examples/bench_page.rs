//! Bench-only: the posts page's translation (DSM's `Post.list` bytes to the API's page) timed
//! in-process, apart from the HTTP, the middleware and the DSM call around it, so `make bench`
//! can say how much of the gateway's CPU per posts request is the page. Not part of the
//! gateway's build.
//!   cargo run --release --example bench_page -- [post_list.json] [translations per round]
//! Prints the median over seven rounds in µs per page.

use std::hint::black_box;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let file = args
        .next()
        .unwrap_or_else(|| "tests/bench/data/post_list.json".to_owned());
    let per_round: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let body = std::fs::read(&file).unwrap_or_else(|error| {
        eprintln!("bench_page: {file}: {error}");
        std::process::exit(2);
    });
    let Some((page, posts)) = syno_chat_gateway::upstream::posts_page_translation(&body, 1000)
    else {
        eprintln!("bench_page: {file} is not a page the one-pass reader takes");
        std::process::exit(1);
    };
    // Warm-up: caches, branch predictors, the allocator.
    for _ in 0..per_round / 4 {
        black_box(syno_chat_gateway::upstream::posts_page_translation(
            black_box(&body),
            1000,
        ));
    }
    let mut rounds: Vec<f64> = (0..7)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..per_round {
                black_box(syno_chat_gateway::upstream::posts_page_translation(
                    black_box(&body),
                    1000,
                ));
            }
            started.elapsed().as_secs_f64() * 1e6 / f64::from(per_round)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    println!(
        "{:.2} µs per page ({posts} posts, {} bytes in, {} out; median of 7 rounds of {per_round})",
        rounds[3],
        body.len(),
        page.len()
    );
}
