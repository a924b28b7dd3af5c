//! Writes the storage conformance suite's macro (`store_conformance_suite!`) from the
//! checks themselves: every `pub async fn NAME(store: Arc<dyn Store>)` in
//! `src/conformance/` becomes one test of each backend (whether rustfmt keeps the signature
//! on one line or wraps it), so adding a check is writing the function, with no list of
//! names to keep by hand.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = Path::new("src/conformance");
    println!("cargo::rerun-if-changed={}", dir.display());
    let mut checks: Vec<String> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut paths: Vec<_> = entries
            .filter_map(|entry| entry.ok())
            .map(|e| e.path())
            .collect();
        paths.sort();
        for path in paths {
            let is_mod = path.file_stem().is_some_and(|stem| stem == "mod");
            if path.extension().is_none_or(|ext| ext != "rs") || is_mod {
                continue;
            }
            println!("cargo::rerun-if-changed={}", path.display());
            let text = std::fs::read_to_string(&path).expect("read a conformance module");
            let mut lines = text.lines().peekable();
            while let Some(line) = lines.next() {
                let Some((name, args)) = line
                    .strip_prefix("pub async fn ")
                    .and_then(|rest| rest.split_once('('))
                else {
                    continue;
                };
                // rustfmt wraps a long signature: the parameter is then on the next line.
                let args = match args.trim() {
                    "" => lines.peek().map_or("", |next| next.trim()),
                    args => args,
                };
                if args.starts_with("store: Arc<dyn Store>") {
                    checks.push(name.to_owned());
                }
            }
        }
    }
    let mut tests = String::new();
    for name in &checks {
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
