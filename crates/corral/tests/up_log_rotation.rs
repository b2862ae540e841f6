//! `corral up` keeps each sandbox's agent log bounded: past `log_max_size` it is copied to
//! `agent.log.1` and truncated, while the sandbox keeps appending to it, and a reader
//! following the logs gets every line, in order, across the rotations.
//!
//! The lines are appended the way the sandbox's own `corral run` writes the log (`O_APPEND`
//! on the same file), so the test knows exactly what was written and when.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use corral_testkit::Gateway;
use corral_testkit::gateway::{SandboxReaper, call, get_text, post};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_corral");

/// `count` numbered lines starting at `first`, about 50 bytes each.
fn lines(first: usize, count: usize) -> Vec<String> {
    (first..first + count)
        .map(|n| format!("line-{n:05} {}", "x".repeat(38)))
        .collect()
}

fn append(log: &Path, lines: &[String]) {
    let mut file = std::fs::OpenOptions::new().append(true).open(log).unwrap();
    for line in lines {
        writeln!(file, "{line}").unwrap();
    }
}

/// Polls `check` every 20 ms until it holds; panics after 20 s (a hang guard).
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting until {what}");
}

#[test]
fn the_log_is_rotated_at_its_limit_and_a_follower_reads_across_rotations() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("gateway.toml");
    std::fs::write(&config, "log_max_size = \"4K\"\n").unwrap();
    let data = root.path().join("data");
    let gw = Gateway::start(
        Path::new(BIN),
        &data,
        &["--config", config.to_str().unwrap()],
        &[],
    );
    let _reaper = SandboxReaper(data.clone());
    let admin = gw.printed_token.clone().unwrap();
    let (status, body) = post(&gw.api("/sandboxes"), &admin, json!({}));
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let act = |action: &str| {
        let url = gw.api(&format!("/sandboxes/{id}/{action}"));
        call("POST", &url, Some(&admin), &[], None)
    };
    assert_eq!(act("start").0, 200);
    let log = data.join("sandboxes").join(&id).join("agent.log");
    let previous = data.join("sandboxes").join(&id).join("agent.log.1");

    // The follower hands over each of our lines as it reads it.
    let url = gw.api(&format!("/sandboxes/{id}/logs?follow=true"));
    let response = ureq::get(&url)
        .set("Authorization", &format!("Bearer {admin}"))
        .call()
        .unwrap();
    let (lines_tx, followed) = mpsc::channel();
    let follower = std::thread::spawn(move || {
        for line in BufReader::new(response.into_reader()).lines() {
            let line = line.unwrap();
            if line.starts_with("line-") && lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut read_up_to = |last: &String| {
        while seen.last() != Some(last) {
            let line = followed
                .recv_timeout(Duration::from_secs(20))
                .expect("the follower reads on");
            seen.push(line);
        }
    };

    // Each batch is over the limit: the gateway rotates after each one.
    let mut written = Vec::new();
    for batch in 0..3 {
        let batch = lines(batch * 100, 100);
        append(&log, &batch);
        written.extend(batch.iter().cloned());
        read_up_to(batch.last().unwrap());
        wait_until("the log is rotated", || {
            std::fs::read_to_string(&previous).is_ok_and(|p| p.contains(batch.last().unwrap()))
                && std::fs::metadata(&log).unwrap().len() < 4096
        });
    }
    // Lines appended right after a rotation land at the start of the emptied log.
    let tail = lines(300, 3);
    append(&log, &tail);
    written.extend(tail.iter().cloned());
    read_up_to(tail.last().unwrap());
    assert_eq!(seen, written, "every line once, in order");
    assert_eq!(act("stop").0, 200);
    follower.join().unwrap();

    // Only the last rotated batch and what followed are kept; a plain read gives both.
    let (status, text) = get_text(&gw.api(&format!("/sandboxes/{id}/logs")), &admin);
    assert_eq!(status, 200);
    let kept: Vec<&str> = text.lines().filter(|l| l.starts_with("line-")).collect();
    assert_eq!(kept, written[200..]);
    assert!(std::fs::metadata(&previous).unwrap().len() < 8192);
}
