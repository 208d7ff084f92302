//! The JSON Schema and the Rust loader must agree: the committed schema is what
//! `fluxlit schema` prints, and every config we ship passes both.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::path::PathBuf;

use common::cli;
use common::schema::{repo_file, schema_errors, validator};

fn shipped_configs() -> Vec<PathBuf> {
    let mut files = vec![repo_file("fluxlit.toml")];
    let mut examples: Vec<PathBuf> = std::fs::read_dir(repo_file("examples"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    examples.sort();
    assert!(!examples.is_empty(), "examples/ has no .toml files");
    files.extend(examples);
    files
}

#[test]
fn the_committed_schema_is_what_fluxlit_schema_prints() {
    let committed = std::fs::read_to_string(repo_file("schema/fluxlit.schema.json")).unwrap();
    let output = cli::run(&["schema"], &repo_file(""), &[]);
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(
        printed == committed,
        "schema/fluxlit.schema.json is stale: run `cargo run -- schema > schema/fluxlit.schema.json`"
    );
    assert_eq!(printed, fluxlit::config::schema::to_pretty_json());
}

#[test]
fn every_shipped_config_passes_the_schema_and_the_loader() {
    let validator = validator();
    for path in shipped_configs() {
        let text = std::fs::read_to_string(&path).unwrap();
        let errors = schema_errors(&validator, &text);
        assert!(
            errors.is_empty(),
            "{}: schema says {errors:#?}",
            path.display()
        );
        if let Err(error) = fluxlit::config::load(&path) {
            panic!("{}: loader says {:#?}", path.display(), error.render());
        }
    }
}

#[test]
fn every_shipped_config_points_editors_at_the_schema() {
    for path in shipped_configs() {
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap_or_default();
        let relative = first
            .strip_prefix("#:schema ")
            .unwrap_or_else(|| panic!("{} must start with a #:schema line", path.display()));
        let target = path.parent().unwrap().join(relative.trim());
        assert!(
            target.canonicalize().ok()
                == repo_file("schema/fluxlit.schema.json").canonicalize().ok(),
            "{}: #:schema {relative} does not lead to schema/fluxlit.schema.json",
            path.display()
        );
    }
}

/// Files the schema refuses, the loader refuses too (and the other way round for the
/// structural mistakes a schema can express).
#[test]
fn the_schema_and_the_loader_refuse_the_same_structural_mistakes() {
    let validator = validator();
    let route = "[[routes]]\nname = \"ui\"\npath_prefix = \"/\"\nupstream = \"ui\"\n";
    let upstream = "[upstreams.ui]\nurl = \"http://127.0.0.1:8501\"\n";
    let cases = [
        (
            "unknown top-level key",
            format!("colour = 1\n{upstream}{route}"),
        ),
        (
            "unknown server key",
            format!("[server]\nlistn = \"x\"\n{upstream}{route}"),
        ),
        (
            "unknown route key",
            format!("{upstream}{route}strip = true\n"),
        ),
        (
            "wrong type",
            format!("[server]\nsecurity_headers = \"yes\"\n{upstream}{route}"),
        ),
        (
            "bad duration",
            format!("{upstream}timeout = \"soon\"\n{route}"),
        ),
        (
            "bare number duration",
            format!("{upstream}timeout = \"30\"\n{route}"),
        ),
        (
            "bad size",
            format!("[server]\nmax_header_size = \"big\"\n{upstream}{route}"),
        ),
        (
            "missing route name",
            format!("{upstream}[[routes]]\npath_prefix = \"/\"\nupstream = \"ui\"\n"),
        ),
        (
            "unknown builtin",
            format!("[upstreams.ui]\nbuiltin = \"mirror\"\n{route}"),
        ),
        (
            "url and builtin",
            format!("{upstream}builtin = \"echo\"\n{route}"),
        ),
        (
            "neither url nor builtin",
            format!("[upstreams.ui]\ntimeout = \"5s\"\n{route}"),
        ),
        (
            "an accepted finding that is not an id",
            format!("[doctor]\naccept = [\"admin not loopback\"]\n{upstream}{route}"),
        ),
    ];
    for (what, text) in cases {
        let schema_refuses = !schema_errors(&validator, &text).is_empty();
        let loader_refuses = fluxlit::config::load::parse(&text)
            .map(|parsed| {
                fluxlit::config::validate::validate(&parsed.config)
                    .iter()
                    .any(|d| d.is_error())
            })
            .unwrap_or(true);
        assert!(schema_refuses, "{what}: the schema accepts\n{text}");
        assert!(loader_refuses, "{what}: the loader accepts\n{text}");
    }
}

#[test]
fn durations_and_sizes_the_parser_accepts_the_schema_accepts() {
    let validator = validator();
    let upstream = |timeout: &str| {
        format!(
            "[upstreams.ui]\nurl = \"http://127.0.0.1:1\"\ntimeout = \"{timeout}\"\n[[routes]]\nname = \"ui\"\npath_prefix = \"/\"\nupstream = \"ui\"\n"
        )
    };
    for timeout in [
        "30s",
        "250ms",
        "2m",
        "1h 30m",
        "1m 30s",
        "2 minutes",
        "1hour",
        "45sec",
    ] {
        let text = upstream(timeout);
        assert!(
            schema_errors(&validator, &text).is_empty(),
            "schema refuses {timeout}"
        );
        assert!(
            fluxlit::config::load::parse(&text).is_ok(),
            "parser refuses {timeout}"
        );
    }
    let server = |size: &str| format!("[server]\nmax_header_size = \"{size}\"\n");
    for size in ["16KiB", "10MiB", "64kb", "1 MiB", "8192", "1.5MiB"] {
        let text = server(size);
        assert!(
            schema_errors(&validator, &text).is_empty(),
            "schema refuses {size}"
        );
        assert!(
            fluxlit::config::load::parse(&text).is_ok(),
            "parser refuses {size}"
        );
    }
}
