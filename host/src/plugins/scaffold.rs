//! `switchyard plugin new <name> --lang rust|python|js`: writes a ready
//! plugin project. Every file it writes is compiled into the binary
//! (`include_str!`): the WIT contract from the router's own `wit/`, the
//! language's helpers (`guest-sdk/`), a working example filter, a README
//! whose first shell block builds it, a sample event and a config.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The toolchain versions the READMEs install (checked in CI).
pub const COMPONENTIZE_PY: &str = "0.25.1";
pub const COMPONENTIZE_JS: &str = "0.23.0";

const WIT: &str = include_str!("../../../wit/plugin.wit");
const EVENT: &str = include_str!("../../../examples/events/license.expired.json");
const CONFIG: &str = include_str!("../../scaffold/config.json");

const RUST_CARGO: &str = include_str!("../../scaffold/rust/Cargo.toml");
const RUST_LIB: &str = include_str!("../../scaffold/rust/lib.rs");
const RUST_README: &str = include_str!("../../scaffold/rust/README.md");
const GUEST_CARGO: &str = include_str!("../../scaffold/rust/guest-Cargo.toml");
/// The workspace's lock file: pins the SDK's dependencies to the versions
/// the router was tested with (cargo drops the entries the plugin does not use).
const CARGO_LOCK: &str = include_str!("../../../Cargo.lock");
const GUEST_SDK: [(&str, &str); 5] = [
    ("lib.rs", include_str!("../../../guest-sdk/src/lib.rs")),
    (
        "base64.rs",
        include_str!("../../../guest-sdk/src/base64.rs"),
    ),
    (
        "document.rs",
        include_str!("../../../guest-sdk/src/document.rs"),
    ),
    ("log.rs", include_str!("../../../guest-sdk/src/log.rs")),
    (
        "testing.rs",
        include_str!("../../../guest-sdk/src/testing.rs"),
    ),
];

const PY_APP: &str = include_str!("../../scaffold/python/app.py");
const PY_README: &str = include_str!("../../scaffold/python/README.md");
const PY_HELPER: &str = include_str!("../../../guest-sdk/python/switchyard_plugin.py");

const JS_PLUGIN: &str = include_str!("../../scaffold/js/plugin.mjs");
const JS_README: &str = include_str!("../../scaffold/js/README.md");
const JS_HELPER: &str = include_str!("../../../guest-sdk/js/switchyard-plugin.mjs");

/// A plugin language `plugin new` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl std::str::FromStr for Lang {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rust" | "rs" => Ok(Lang::Rust),
            "python" | "py" => Ok(Lang::Python),
            "js" | "javascript" => Ok(Lang::Js),
            _ => Err(format!("unknown language {s:?}: use rust, python or js")),
        }
    }
}

/// Plugin names become file names and (for Rust) crate names.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        bail!(
            "invalid plugin name {name:?}: use 1 to 64 lowercase letters, digits, `-` or `_`, \
             starting with a letter (e.g. `my-filter`); the name is also the .wasm file's stem"
        );
    }
    Ok(())
}

fn fill(template: &str, name: &str) -> String {
    template
        .replace("{{name}}", name)
        .replace("{{crate}}", &name.replace('-', "_"))
        .replace("{{version}}", env!("CARGO_PKG_VERSION"))
        .replace("{{componentize_py}}", COMPONENTIZE_PY)
        .replace("{{componentize_js}}", COMPONENTIZE_JS)
}

/// The files of a new project, as (relative path, contents).
pub fn files(name: &str, lang: Lang) -> anyhow::Result<Vec<(PathBuf, String)>> {
    check_name(name)?;
    let mut out: Vec<(PathBuf, String)> = vec![
        ("wit/plugin.wit".into(), WIT.to_string()),
        ("event.json".into(), EVENT.to_string()),
        ("config.json".into(), CONFIG.to_string()),
    ];
    match lang {
        Lang::Rust => {
            out.push(("Cargo.toml".into(), fill(RUST_CARGO, name)));
            out.push(("Cargo.lock".into(), CARGO_LOCK.to_string()));
            out.push(("src/lib.rs".into(), fill(RUST_LIB, name)));
            out.push(("README.md".into(), fill(RUST_README, name)));
            out.push((
                "switchyard-guest/Cargo.toml".into(),
                fill(GUEST_CARGO, name),
            ));
            for (file, text) in GUEST_SDK {
                out.push((
                    format!("switchyard-guest/src/{file}").into(),
                    text.to_string(),
                ));
            }
            out.push((".gitignore".into(), "/target\n*.wasm\n".into()));
        }
        Lang::Python => {
            out.push(("app.py".into(), fill(PY_APP, name)));
            out.push(("switchyard_plugin.py".into(), PY_HELPER.to_string()));
            out.push(("README.md".into(), fill(PY_README, name)));
            out.push((".gitignore".into(), "*.wasm\n__pycache__/\n".into()));
        }
        Lang::Js => {
            out.push(("plugin.mjs".into(), fill(JS_PLUGIN, name)));
            out.push(("switchyard-plugin.mjs".into(), JS_HELPER.to_string()));
            out.push(("README.md".into(), fill(JS_README, name)));
            out.push((".gitignore".into(), "*.wasm\nnode_modules/\n".into()));
        }
    }
    Ok(out)
}

/// `switchyard plugin new`: writes the project into `dir` (default
/// `./<name>`), which must not exist or be empty. Returns the folder.
pub fn create(name: &str, lang: Lang, dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let files = files(name, lang)?;
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    if dir.exists() {
        let empty = std::fs::read_dir(&dir)
            .with_context(|| format!("{} exists and is not a readable folder", dir.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "{} already exists and is not empty: pick another --dir or remove it",
                dir.display()
            );
        }
    }
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SDK copy a Rust scaffold builds against depends on what the
    /// SDK itself depends on (a new SDK dependency must be added to the
    /// scaffold's manifest too).
    #[test]
    fn the_scaffolds_sdk_has_the_sdks_dependencies() {
        let deps = |manifest: &str| -> Vec<String> {
            let v: toml::Value = toml::from_str(manifest).expect("a manifest");
            let mut names: Vec<String> = v["dependencies"]
                .as_table()
                .expect("[dependencies]")
                .keys()
                .cloned()
                .collect();
            names.sort();
            names
        };
        assert_eq!(
            deps(GUEST_CARGO),
            deps(include_str!("../../../guest-sdk/Cargo.toml"))
        );
    }

    #[test]
    fn names_and_languages() {
        assert!(files("my-filter", Lang::Python).is_ok());
        for bad in ["", "My", "1x", "a/b", "a.b", "../x"] {
            assert!(files(bad, Lang::Js).is_err(), "{bad}");
        }
        assert_eq!("py".parse::<Lang>(), Ok(Lang::Python));
        assert!("go".parse::<Lang>().is_err());
    }

    #[test]
    fn every_template_is_filled() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            for (path, text) in files("my-filter", lang).unwrap() {
                assert!(!text.contains("{{"), "{lang:?} {}", path.display());
            }
        }
    }

    #[test]
    fn refuses_a_non_empty_folder() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("keep"), "x").unwrap();
        let e = create("x", Lang::Js, Some(tmp.path())).unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
    }
}
