//! Any bytes through the config loader: parse + validate (+ compile when valid) must
//! answer with errors, never panic. A file that loads must also survive what
//! `fluxlit config` does with it: printed as TOML and loaded again, it is the same config.
#![no_main]

use std::path::PathBuf;
use std::sync::Arc;

use fluxlit::auth::secrets::Environment;
use fluxlit::compile::{CompileContext, compile};
use fluxlit::config::{self, ConfigSource, SourceHash};
use libfuzzer_sys::fuzz_target;

/// Every variable is set, so `{ env = "..." }` secrets resolve without the real environment.
#[derive(Debug)]
struct AnyVariable;

impl Environment for AnyVariable {
    fn var(&self, _name: &str) -> Option<String> {
        Some("fuzz-secret-that-is-long-enough-for-hs256".to_owned())
    }
}

fn source(text: &str) -> ConfigSource {
    ConfigSource {
        // A directory that does not exist: `{ file = ... }` secrets fail to resolve.
        path: PathBuf::from("fuzz-nonexistent-dir/fluxlit.toml"),
        text: text.to_owned(),
        hash: SourceHash::of(text.as_bytes()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(checked) = config::check(source(text)) else {
        return;
    };
    let printed = match toml::to_string_pretty(&checked.config) {
        Ok(printed) => printed,
        Err(err) => panic!("a loaded config cannot be printed: {err}"),
    };
    match config::check(source(&printed)) {
        Ok(again) => assert_eq!(
            again.config, checked.config,
            "the printed config loads as a different config:\n{printed}"
        ),
        Err(err) => panic!(
            "the printed config does not load: {:?}\n{printed}",
            err.render()
        ),
    }
    let ctx = CompileContext::for_config(&checked.source.path, Arc::new(AnyVariable));
    let _ = compile(checked, &ctx);
});
