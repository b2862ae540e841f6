//! Node in a sandbox is pointed at corral's CA certificate alone (`NODE_EXTRA_CA_CERTS` adds to
//! Node's own roots; the whole system bundle there cost every Node start tens of milliseconds),
//! while OpenSSL-style clients keep the full bundle; Node loads the file without complaint.

use corral_testkit::{Caller, Corral, OutputExt, TestDir};

const SCRIPT: &str = r#"echo "node=$NODE_EXTRA_CA_CERTS ssl=$SSL_CERT_FILE"
cat "$NODE_EXTRA_CA_CERTS" > node-roots.pem
grep -c 'BEGIN CERTIFICATE' "$SSL_CERT_FILE" > bundle-count
node -e 'process.exit(0)'"#;

#[test]
fn node_gets_corrals_ca_alone_and_other_clients_the_bundle() {
    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        let ca_dir = ws.path().join("ca");
        let out = Corral::new(env!("CARGO_BIN_EXE_corral"), caller)
            .args(["run", "--profile", "full", "--ca-dir"])
            .args([&ca_dir])
            .args(["--", "sh", "-c", SCRIPT])
            .current_dir(ws.path())
            .output();
        assert_eq!(out.code(), 0, "{caller:?}: {}", out.stderr_text());
        assert_eq!(
            out.stdout_text(),
            "node=/run/corral/ca.pem ssl=/run/corral/ca-bundle.pem\n",
            "{caller:?}"
        );
        assert!(
            !out.stderr_text().contains("extra certs"),
            "{caller:?}: Node could not load its extra roots: {}",
            out.stderr_text()
        );
        let ca = std::fs::read_to_string(ca_dir.join("ca.pem")).unwrap();
        let node_roots = std::fs::read_to_string(ws.path().join("node-roots.pem")).unwrap();
        assert_eq!(node_roots, ca, "{caller:?}");
        let in_bundle: usize = std::fs::read_to_string(ws.path().join("bundle-count"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            in_bundle > 1,
            "{caller:?}: the bundle keeps the system roots"
        );
    }
}
