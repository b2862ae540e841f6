//! `sni::inspect` on arbitrary bytes: the first bytes of a CONNECT tunnel, which the agent
//! controls. It must classify anything without panicking, and its answer must agree with
//! what the bytes can be.
#![no_main]

use corral_proxy::sni::{FirstBytes, MAX_HELLO_BYTES, inspect};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match inspect(data) {
        FirstBytes::NotTls => assert!(data.first().is_some_and(|&b| b != 0x16)),
        FirstBytes::Incomplete => assert!(data.is_empty() || data.len() < MAX_HELLO_BYTES),
        FirstBytes::ClientHello(_) | FirstBytes::Malformed => assert_eq!(data[0], 0x16),
    }
});
