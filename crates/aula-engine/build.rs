//! Put llama.cpp's shared libraries and CPU-variant modules beside the
//! binaries (`target/<profile>/`), where `aula` finds them (its RUNPATH is
//! `$ORIGIN`, see .cargo/config.toml) — so the directory can be copied to
//! another machine as it is. llama-cpp-sys-2 builds them in its OUT_DIR and
//! says where through `DEP_LLAMA_BACKENDS_DIR` (its `links = "llama"`).

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_LLAMA_BACKENDS_DIR");
    let Some(backends) = std::env::var_os("DEP_LLAMA_BACKENDS_DIR").map(PathBuf::from) else {
        // A build without llama-cpp-2's dynamic-backends: nothing to place.
        return;
    };
    let Some(out_dir) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    // OUT_DIR is target/<profile>/build/aula-engine-HASH/out.
    let Some(profile_dir) = out_dir.ancestors().nth(3).map(Path::to_path_buf) else {
        return;
    };
    let mut placed = 0;
    // The names the binaries ask for: libX.so.N (the soname).
    let soname = |name: &str| {
        name.starts_with("lib")
            && name
                .rsplit_once(".so.")
                .is_some_and(|(_, v)| !v.contains('.'))
    };
    if let Some(llama_out) = backends.parent() {
        for lib_dir in [llama_out.join("lib"), llama_out.join("lib64")] {
            placed += place(&lib_dir, &profile_dir, soname);
            // Also into deps/ and examples/: llama-cpp-sys-2 hard-links its
            // `libX.so` symlinks (-> libX.so.N) there too, and a later
            // rebuild of it (another compiler, other features) panics on
            // such a link left dangling ("File exists").
            for sub in ["deps", "examples"] {
                if profile_dir.join(sub).is_dir() {
                    place(&lib_dir, &profile_dir.join(sub), soname);
                }
            }
        }
    }
    placed += place(&backends, &profile_dir, |name| name.ends_with(".so"));
    println!("cargo:rerun-if-changed={}", backends.display());
    if placed == 0 {
        println!(
            "cargo:warning=no llama.cpp libraries found to place beside the binaries (from {})",
            backends.display()
        );
    }
}

/// Copy (following symlinks) every file in `from` whose name passes `want`
/// into `to`, unless an identical-size copy is already there. Copies, not
/// links: the result must survive `cargo clean -p llama-cpp-sys-2`-style
/// rebuilds and being copied elsewhere.
fn place(from: &Path, to: &Path, want: impl Fn(&str) -> bool) -> usize {
    let Ok(rd) = std::fs::read_dir(from) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !want(&name) {
            continue;
        }
        let src = e.path();
        let Ok(meta) = std::fs::metadata(&src) else {
            continue;
        };
        let dst = to.join(&name);
        // A dangling link (llama-cpp-sys-2 hard-links symlinks) is replaced.
        let same = std::fs::metadata(&dst)
            .is_ok_and(|d| d.len() == meta.len() && d.modified().ok() >= meta.modified().ok());
        if !same {
            let _ = std::fs::remove_file(&dst);
            let tmp = to.join(format!(".{name}.tmp"));
            if std::fs::copy(&src, &tmp).is_ok() && std::fs::rename(&tmp, &dst).is_ok() {
                n += 1;
            } else {
                let _ = std::fs::remove_file(&tmp);
                println!("cargo:warning=could not place {} in {}", name, to.display());
            }
        } else {
            n += 1;
        }
    }
    n
}
