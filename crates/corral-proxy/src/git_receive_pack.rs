//! The git push guard's protocol half (used once TLS interception lands; tested against the
//! real git client now): read the ref updates at the head of a
//! `git-receive-pack` request, and answer a refused push the way a git server would.
//!
//! Threat model: the request comes from the sandboxed agent, so every length and field is
//! checked and the parser never reads past what it was given. A push is decided on its
//! command list alone, which precedes the pack; a refused push is answered with a valid
//! receive-pack result, so the real git client prints
//! `! [remote rejected] main -> main (corral: <policy>)` and exits non-zero, and nothing of it
//! reaches the remote.
//!
//! Hand-written because no maintained crate parses the receive-pack command list on its own
//! (gix's protocol crates cover the client side of the exchange): the format is the pkt-line
//! framing of `gitprotocol-common(5)` and the command list of `gitprotocol-pack(5)`.

use std::fmt::Write as _;

/// Longest pkt-line git sends (`LARGE_PACKET_MAX`).
const MAX_PKT_LEN: usize = 65520;

/// Most ref updates one push may carry before the guard refuses to read further.
pub const MAX_REF_UPDATES: usize = 10_000;

/// Why a receive-pack request could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceivePackError {
    /// A pkt-line length is not four hex digits, or out of range.
    #[error("malformed pkt-line length {0:?}")]
    BadLength(String),
    /// A command line is not `<old-oid> <new-oid> <ref>`.
    #[error("malformed ref update {0:?}")]
    BadCommand(String),
    /// More ref updates than [`MAX_REF_UPDATES`].
    #[error("more than {MAX_REF_UPDATES} ref updates in one push")]
    TooManyUpdates,
    /// Signed pushes are not supported by the guard.
    #[error("signed pushes (push certificates) are not supported through corral")]
    PushCertificate,
}

/// One ref a push would update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    /// The object id the client believes the ref has now (all zeros: creating it).
    pub old: String,
    /// The object id it wants (all zeros: deleting the ref).
    pub new: String,
    /// The full ref name, e.g. `refs/heads/main`.
    pub name: String,
}

impl RefUpdate {
    /// The branch as policies see it: the short name for `refs/heads/*`, the full ref name
    /// for anything else (tags, notes).
    pub fn branch(&self) -> &str {
        self.name.strip_prefix("refs/heads/").unwrap_or(&self.name)
    }

    /// Whether the push deletes this ref.
    pub fn is_delete(&self) -> bool {
        self.new.bytes().all(|b| b == b'0')
    }
}

/// The head of a receive-pack request: the ref updates and the capabilities the client asked
/// for, and how many bytes they took (the pack, if any, follows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushCommands {
    /// The ref updates, in the order sent.
    pub updates: Vec<RefUpdate>,
    /// Capabilities from the first command (`report-status`, `side-band-64k`, …).
    pub capabilities: Vec<String>,
    /// Bytes of the request the command list occupied, up to and including its flush-pkt.
    pub length: usize,
}

impl PushCommands {
    fn wants(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }
}

/// Reads the command list at the start of `body`. `Ok(None)`: more bytes are needed.
pub fn parse_commands(body: &[u8]) -> Result<Option<PushCommands>, ReceivePackError> {
    let mut at = 0;
    let mut updates = Vec::new();
    let mut capabilities = Vec::new();
    loop {
        let Some(header) = body.get(at..at + 4) else {
            return Ok(None);
        };
        let header = std::str::from_utf8(header)
            .ok()
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| ReceivePackError::BadLength(String::from_utf8_lossy(header).into()))?;
        let len = usize::from_str_radix(header, 16)
            .map_err(|_| ReceivePackError::BadLength(header.into()))?;
        if len == 0 {
            return Ok(Some(PushCommands {
                updates,
                capabilities,
                length: at + 4,
            }));
        }
        if !(5..=MAX_PKT_LEN).contains(&len) {
            return Err(ReceivePackError::BadLength(header.into()));
        }
        let Some(payload) = body.get(at + 4..at + len) else {
            return Ok(None);
        };
        at += len;
        let payload = payload.strip_suffix(b"\n").unwrap_or(payload);
        let (line, caps) = match payload.iter().position(|&b| b == 0) {
            Some(nul) => (&payload[..nul], Some(&payload[nul + 1..])),
            None => (payload, None),
        };
        let line = String::from_utf8_lossy(line);
        if line.starts_with("shallow ") {
            continue;
        }
        if line.starts_with("push-cert") {
            return Err(ReceivePackError::PushCertificate);
        }
        if let Some(caps) = caps
            && updates.is_empty()
        {
            capabilities = String::from_utf8_lossy(caps)
                .split(' ')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
        }
        updates.push(parse_update(&line)?);
        if updates.len() > MAX_REF_UPDATES {
            return Err(ReceivePackError::TooManyUpdates);
        }
    }
}

fn parse_update(line: &str) -> Result<RefUpdate, ReceivePackError> {
    let bad = || ReceivePackError::BadCommand(line.chars().take(200).collect());
    let mut parts = line.splitn(3, ' ');
    let (Some(old), Some(new), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let is_oid = |s: &str| matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_oid(old) || !is_oid(new) || !name.starts_with("refs/") || name.contains(['\0', ' ']) {
        return Err(bad());
    }
    Ok(RefUpdate {
        old: old.into(),
        new: new.into(),
        name: name.into(),
    })
}

/// The body of a receive-pack result that refuses the whole push: each denied ref with its
/// reason, every other ref as refused because the push was (pushes are all-or-nothing here,
/// so nothing reaches the remote). `denied` pairs an index into `commands.updates` with the
/// reason, e.g. `corral: restricted/git/push-deny:main`.
pub fn refusal(commands: &PushCommands, denied: &[(usize, String)]) -> Vec<u8> {
    let mut report = Vec::new();
    push_pkt(&mut report, b"unpack ok\n");
    for (i, update) in commands.updates.iter().enumerate() {
        let reason = denied
            .iter()
            .find(|(d, _)| *d == i)
            .map(|(_, r)| one_line(r))
            .unwrap_or_else(|| "corral: another ref in this push was refused".into());
        push_pkt(
            &mut report,
            format!("ng {} {reason}\n", update.name).as_bytes(),
        );
    }
    report.extend_from_slice(b"0000");

    let band = if commands.wants("side-band-64k") {
        Some(MAX_PKT_LEN - 5)
    } else if commands.wants("side-band") {
        Some(999 - 5)
    } else {
        None
    };
    let Some(chunk) = band else {
        return if commands.wants("report-status") || commands.wants("report-status-v2") {
            report
        } else {
            b"0000".to_vec()
        };
    };
    let mut out = Vec::new();
    let mut message = String::new();
    for (i, reason) in denied {
        if let Some(update) = commands.updates.get(*i) {
            let _ = writeln!(message, "{} refused: {}", update.name, one_line(reason));
        }
    }
    for piece in message.as_bytes().chunks(chunk) {
        push_band(&mut out, 2, piece);
    }
    if commands.wants("report-status") || commands.wants("report-status-v2") {
        for piece in report.chunks(chunk) {
            push_band(&mut out, 1, piece);
        }
    }
    out.extend_from_slice(b"0000");
    out
}

fn one_line(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(400).collect()
}

fn push_pkt(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(format!("{:04x}", payload.len() + 4).as_bytes());
    out.extend_from_slice(payload);
}

fn push_band(out: &mut Vec<u8>, band: u8, payload: &[u8]) {
    out.extend_from_slice(format!("{:04x}", payload.len() + 5).as_bytes());
    out.push(band);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZERO: &str = "0000000000000000000000000000000000000000";
    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    fn pkt(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        push_pkt(&mut out, text.as_bytes());
        out
    }

    fn request(lines: &[String]) -> Vec<u8> {
        let mut body: Vec<u8> = lines.iter().flat_map(|l| pkt(l)).collect();
        body.extend_from_slice(b"0000PACK....");
        body
    }

    #[test]
    fn reads_updates_and_capabilities_and_stops_at_the_flush() {
        let body = request(&[
            format!("{A} {B} refs/heads/main\0report-status side-band-64k agent=git/2.47\n"),
            format!("{ZERO} {A} refs/heads/ai/x\n"),
            format!("{B} {ZERO} refs/tags/v1\n"),
        ]);
        let commands = parse_commands(&body).unwrap().unwrap();
        assert_eq!(&body[commands.length..], b"PACK....");
        let branches: Vec<&str> = commands.updates.iter().map(RefUpdate::branch).collect();
        assert_eq!(branches, ["main", "ai/x", "refs/tags/v1"]);
        assert!(commands.updates[2].is_delete());
        assert!(commands.wants("side-band-64k") && commands.wants("report-status"));
    }

    #[test]
    fn a_partial_request_asks_for_more_bytes_at_every_cut() {
        let body = request(&[format!("{A} {B} refs/heads/main\0report-status\n")]);
        for cut in 0..body.len() - 8 {
            assert_eq!(parse_commands(&body[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn garbage_is_refused_not_guessed() {
        for body in [
            b"zzzz".to_vec(),
            b"0003".to_vec(),
            b"fff1xxxx".to_vec(),
            pkt("not a command\n"),
            pkt(&format!("{A} {B} main\n")),
            pkt(&format!("{A} {B}\n")),
            pkt("push-cert\0report-status\n"),
        ] {
            assert!(
                parse_commands(&body).is_err(),
                "{:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn shallow_lines_before_the_commands_are_skipped() {
        let body = request(&[
            format!("shallow {A}\n"),
            format!("{A} {B} refs/heads/fix/y\0report-status\n"),
        ]);
        let commands = parse_commands(&body).unwrap().unwrap();
        assert_eq!(commands.updates.len(), 1);
        assert_eq!(commands.capabilities, ["report-status"]);
    }

    #[test]
    fn the_refusal_without_side_band_is_a_plain_report() {
        let commands = parse_commands(&request(&[
            format!("{A} {B} refs/heads/main\0report-status\n"),
            format!("{A} {B} refs/heads/ai/x\n"),
        ]))
        .unwrap()
        .unwrap();
        let body = refusal(
            &commands,
            &[(0, "corral: restricted/git/push-deny:main".into())],
        );
        let expected = [
            pkt("unpack ok\n"),
            pkt("ng refs/heads/main corral: restricted/git/push-deny:main\n"),
            pkt("ng refs/heads/ai/x corral: another ref in this push was refused\n"),
            b"0000".to_vec(),
        ]
        .concat();
        assert_eq!(
            String::from_utf8_lossy(&body),
            String::from_utf8_lossy(&expected)
        );
    }
}
