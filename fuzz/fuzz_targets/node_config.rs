//! A node's configuration file as the node loads it (TOML: upstreams, limits, federation):
//! nothing may panic, whatever the text; a bad file is an error that says why.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = shardgate_node::config::NodeFile::parse(text);
    }
});
