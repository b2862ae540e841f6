//! The git push guard's command-list parser on arbitrary bytes (a push body, which the agent
//! controls), and the refusal built from whatever it accepts.
//!
//! Invariants: no panic; an accepted list ends in a flush-pkt inside the input and parses
//! the same from that prefix alone; every update has hex object ids and a `refs/` name; the
//! refusal is a well-formed pkt-line stream.
#![no_main]

use corral_proxy::git_receive_pack::{parse_commands, refusal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some(commands)) = parse_commands(data) else {
        return;
    };
    assert!(commands.length <= data.len());
    assert!(data[..commands.length].ends_with(b"0000"));
    assert_eq!(
        parse_commands(&data[..commands.length]),
        Ok(Some(commands.clone()))
    );
    let is_oid = |s: &str| matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit());
    for update in &commands.updates {
        assert!(is_oid(&update.old) && is_oid(&update.new), "{update:?}");
        assert!(update.name.starts_with("refs/"), "{update:?}");
    }
    // Deny every other ref (and one index past the end) with a reason made of the input.
    let reason = String::from_utf8_lossy(&data[..data.len().min(1000)]).into_owned();
    let denied: Vec<(usize, String)> = (0..=commands.updates.len())
        .step_by(2)
        .map(|i| (i, reason.clone()))
        .collect();
    assert_pkt_lines(&refusal(&commands, &denied));
});

/// Walks a pkt-line stream to its end, which must be a flush-pkt.
fn assert_pkt_lines(mut bytes: &[u8]) {
    assert!(bytes.ends_with(b"0000"));
    while !bytes.is_empty() {
        let header = std::str::from_utf8(&bytes[..4]).expect("pkt-line length is ASCII");
        let len = usize::from_str_radix(header, 16).expect("pkt-line length is hex");
        assert!(
            len == 0 || (5..=65520).contains(&len),
            "pkt-line length {len}"
        );
        assert!(len <= bytes.len(), "pkt-line longer than the stream");
        bytes = &bytes[len.max(4)..];
    }
}
