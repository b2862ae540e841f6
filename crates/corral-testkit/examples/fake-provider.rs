//! The fake model provider as a process, for benchmarks:
//! `fake-provider ADDR [CHUNKS [CHUNK_DELAY_MS]]` serves until killed.

fn main() {
    let mut args = std::env::args().skip(1);
    let address = args
        .next()
        .and_then(|a| a.parse().ok())
        .expect("usage: fake-provider ADDR [CHUNKS [CHUNK_DELAY_MS]]");
    let chunks = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let delay = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    corral_testkit::fake_provider::serve_forever(
        address,
        corral_testkit::fake_provider::Behaviour {
            chunks,
            chunk_delay: std::time::Duration::from_millis(delay),
        },
    );
}
