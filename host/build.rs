//! Builds the WebAssembly plugins that ship with Switchyard, in the style of
//! wasmtime's `test-programs` artifacts build script.
//!
//! * Every crate under `plugins/*/` whose `Cargo.toml` declares a `cdylib` is
//!   built for `wasm32-wasip2` (profile `wasm`) and copied to
//!   `plugins/dist/<crate-name>.wasm`, where the default `router.toml` loads it.
//! * Every crate under `tests/plugins/*/` is built the same way but left in
//!   `target/wasm/wasm32-wasip2/wasm/`; its directory is exported to the host's
//!   tests and benches as `SWITCHYARD_TEST_PLUGIN_DIR`.
//!
//! One nested `cargo build` does all of it, with its own target directory
//! (`target/wasm`) so it never waits on the outer build's lock. Set
//! `SWITCHYARD_SKIP_PLUGIN_BUILD=1` to skip the nested build (the paths are
//! still exported).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "wasm";

struct GuestCrate {
    name: String,
    dir: PathBuf,
}

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let target_dir = root.join("target").join("wasm");
    let artifact_dir = target_dir.join(TARGET).join(PROFILE);
    let dist_dir = root.join("plugins").join("dist");

    println!("cargo:rerun-if-env-changed=SWITCHYARD_SKIP_PLUGIN_BUILD");
    println!(
        "cargo:rustc-env=SWITCHYARD_TEST_PLUGIN_DIR={}",
        artifact_dir.display()
    );
    println!(
        "cargo:rustc-env=SWITCHYARD_PLUGIN_DIST_DIR={}",
        dist_dir.display()
    );

    // Watch the sources of the guests, never `plugins/dist` (we write it, and
    // watching it would rerun this script on every build).
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.toml").display()
    );
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!(
        "cargo:rerun-if-changed={}",
        root.join("guest-sdk").display()
    );
    // A new plugin crate is also a new workspace member, so watching the
    // workspace manifest picks it up.
    let workspace = fs::read_to_string(root.join("Cargo.toml")).unwrap_or_default();
    let bundled = discover(&root.join("plugins"), "plugins", &workspace);
    let tests = discover(
        &root.join("tests").join("plugins"),
        "tests/plugins",
        &workspace,
    );
    for c in bundled.iter().chain(&tests) {
        println!(
            "cargo:rerun-if-changed={}",
            c.dir.join("Cargo.toml").display()
        );
        println!("cargo:rerun-if-changed={}", c.dir.join("src").display());
    }

    if env::var("SWITCHYARD_SKIP_PLUGIN_BUILD").is_ok_and(|v| v == "1" || v == "true") {
        println!("cargo:warning=SWITCHYARD_SKIP_PLUGIN_BUILD set: plugins not rebuilt");
        return;
    }
    if bundled.is_empty() && tests.is_empty() {
        return;
    }
    ensure_wasm_target();

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .arg("build")
        .arg("--profile")
        .arg(PROFILE)
        .arg("--target")
        .arg(TARGET)
        .arg("--target-dir")
        .arg(&target_dir);
    for c in bundled.iter().chain(&tests) {
        cmd.arg("-p").arg(&c.name);
    }
    // The host's flags and wrappers must not leak into the guest build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_TARGET_DIR",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "__CARGO_FIX_PLZ",
    ] {
        cmd.env_remove(var);
    }
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PROFILE_")
            || (key.starts_with("CARGO_TARGET_") && key.ends_with("_RUSTFLAGS"))
        {
            cmd.env_remove(key.as_ref());
        }
    }

    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run the nested cargo for the plugins: {e}"));
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        for line in stderr.lines() {
            println!("cargo:warning={line}");
        }
        panic!(
            "building the wasm plugins failed ({:?}); nested cargo stderr:\n{stderr}\n\
             (set SWITCHYARD_SKIP_PLUGIN_BUILD=1 to build the host without them)",
            cmd
        );
    }

    fs::create_dir_all(&dist_dir).expect("create plugins/dist");
    for c in &bundled {
        let built = artifact_dir.join(format!("{}.wasm", c.name.replace('-', "_")));
        let dest = dist_dir.join(format!("{}.wasm", c.name));
        copy_if_changed(&built, &dest);
    }
}

/// Makes sure the active toolchain can build for [`TARGET`] before the
/// long host build gets anywhere. rustup does not apply
/// `rust-toolchain.toml`'s `targets` to every toolchain (a linked one, or
/// one installed before the file named the target), so the target may be
/// missing on a fresh machine: add it with rustup when rustup is there,
/// saying so; otherwise stop now with the command to run.
fn ensure_wasm_target() {
    println!("cargo:rerun-if-env-changed=RUSTUP_TOOLCHAIN");
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = |sysroot: &Option<PathBuf>| {
        sysroot
            .as_ref()
            .is_some_and(|s| s.join("lib").join("rustlib").join(TARGET).is_dir())
    };
    if installed(&sysroot) {
        return;
    }
    let toolchain = env::var("RUSTUP_TOOLCHAIN").ok();
    let where_ = sysroot
        .as_ref()
        .map(|s| s.display().to_string())
        .unwrap_or_else(|| "the active toolchain".into());
    let rustup_there = Command::new("rustup")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !rustup_there {
        panic!(
            "\n\nThe {TARGET} target is not installed for {where_}, and rustup is not on PATH.\n\
             Switchyard builds its bundled plugins for it. Install it, then build again:\n\n    \
             rustup target add {TARGET}\n\n\
             (or, to build the router without its bundled plugins: SWITCHYARD_SKIP_PLUGIN_BUILD=1)\n"
        );
    }
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", TARGET]);
    if let Some(t) = &toolchain {
        cmd.args(["--toolchain", t]);
    }
    println!(
        "cargo:warning=the {TARGET} target was missing from {where_}: running `rustup target add {TARGET}{}`",
        toolchain
            .as_ref()
            .map(|t| format!(" --toolchain {t}"))
            .unwrap_or_default()
    );
    let out = cmd.output();
    let ok = out.as_ref().is_ok_and(|o| o.status.success());
    if !ok || !installed(&sysroot) {
        let detail = match &out {
            Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
            Err(e) => e.to_string(),
        };
        panic!(
            "\n\nThe {TARGET} target is not installed for {where_}, and `rustup target add {TARGET}` \
             did not install it:\n{detail}\n\
             Install it by hand and build again (or set SWITCHYARD_SKIP_PLUGIN_BUILD=1 to build \
             without the bundled plugins).\n"
        );
    }
}

/// The `members = [...]` list of the workspace manifest.
fn workspace_members(workspace: &str) -> Vec<String> {
    let Some(start) = workspace.find("members") else {
        return Vec::new();
    };
    let rest = &workspace[start..];
    let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) else {
        return Vec::new();
    };
    rest[open + 1..close]
        .split(',')
        .map(|m| m.trim().trim_matches('"').trim_end_matches('/').to_string())
        .filter(|m| !m.is_empty() && !m.starts_with('#'))
        .collect()
}

/// Crates directly under `dir` (`rel` from the workspace root) that build a
/// `cdylib` (a component) and are workspace members; a crate that is not a
/// member yet is skipped with a warning.
fn discover(dir: &Path, rel: &str, workspace: &str) -> Vec<GuestCrate> {
    let members = workspace_members(workspace);
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let crate_dir = entry.path();
        let Ok(manifest) = fs::read_to_string(crate_dir.join("Cargo.toml")) else {
            continue;
        };
        if !is_cdylib(&manifest) {
            continue;
        }
        let dir_name = entry.file_name().to_string_lossy().into_owned();
        let member = format!("{rel}/{dir_name}");
        let glob = format!("{rel}/*");
        if !members.iter().any(|m| *m == member || *m == glob) {
            println!(
                "cargo:warning=plugin crate {member} is not a workspace member (add it to \
                 `members` in Cargo.toml); not built"
            );
            continue;
        }
        if let Some(name) = package_name(&manifest) {
            found.push(GuestCrate {
                name,
                dir: crate_dir,
            });
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

fn is_cdylib(manifest: &str) -> bool {
    manifest
        .lines()
        .any(|l| l.trim_start().starts_with("crate-type") && l.contains("\"cdylib\""))
}

/// `name = "..."` in the `[package]` table.
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
            continue;
        }
        if !in_package {
            continue;
        }
        if let Some(rest) = line.strip_prefix("name") {
            let rest = rest.trim_start();
            if let Some(value) = rest.strip_prefix('=') {
                return Some(value.trim().trim_matches('"').to_string());
            }
        }
    }
    None
}

/// Copies only when the bytes differ, so an unchanged plugin keeps its mtime
/// (and a running router's watcher is not woken for nothing).
fn copy_if_changed(from: &Path, to: &Path) {
    let new = fs::read(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
    if fs::read(to).ok().as_deref() == Some(new.as_slice()) {
        return;
    }
    // Write then rename, so a watcher never sees a half-written plugin.
    let tmp = to.with_extension("wasm.tmp");
    fs::write(&tmp, &new).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    fs::rename(&tmp, to).unwrap_or_else(|e| panic!("rename to {}: {e}", to.display()));
}
