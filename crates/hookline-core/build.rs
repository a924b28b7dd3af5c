//! Writes the storage conformance suite's macro (`store_conformance_suite!`) from the
//! checks themselves: every `pub async fn NAME(store: Arc<dyn Store>)` in
//! `src/conformance/` becomes one test of each backend, so adding a check is writing the
//! function, with no list of names to keep by hand.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = Path::new("src/conformance");
    println!("cargo::rerun-if-changed={}", dir.display());
    let mut checks: Vec<(String, String)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut paths: Vec<_> = entries
            .filter_map(|entry| entry.ok())
            .map(|e| e.path())
            .collect();
        paths.sort();
        for path in paths {
            let Some(module) = path.file_stem().and_then(|stem| stem.to_str()) else {
                continue;
            };
            if path.extension().is_none_or(|ext| ext != "rs") || module == "mod" {
                continue;
            }
            println!("cargo::rerun-if-changed={}", path.display());
            let text = std::fs::read_to_string(&path).expect("read a conformance module");
            for line in text.lines() {
                let Some(rest) = line.strip_prefix("pub async fn ") else {
                    continue;
                };
                if let Some((name, args)) = rest.split_once('(')
                    && args.starts_with("store: Arc<dyn Store>")
                {
                    checks.push((module.to_owned(), name.to_owned()));
                }
            }
        }
    }
    let mut tests = String::new();
    for (_module, name) in &checks {
        writeln!(
            tests,
            "        #[tokio::test]
        async fn {name}() {{
            let store: std::sync::Arc<dyn $crate::Store> = std::sync::Arc::new($open);
            $crate::conformance::{name}(store).await;
        }}"
        )
        .expect("write to a string");
    }
    let suite = format!(
        "/// Instantiates every conformance check as a `#[tokio::test]`; `$open` is an
/// expression (it may `.await`) that yields a fresh store implementing [`Store`].
#[macro_export]
macro_rules! store_conformance_suite {{
    ($open:expr) => {{
{tests}    }};
}}
"
    );
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("conformance_suite.rs");
    std::fs::write(out, suite).expect("write the generated suite");
}
