//! Helpers for tests that compile and run C or C++ programs against `include/` and the built
//! `libmmxa.so`.
//!
//! Compilers are the system `cc` and `c++`, always with warnings as errors, so a header that
//! compiles with a warning fails. Outputs go under `CARGO_TARGET_TMPDIR`, one name per caller.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The language a translation unit is compiled as.
#[derive(Clone, Copy, Debug)]
pub enum Lang {
    /// `cc -std=c99 -pedantic`.
    C,
    /// `c++ -std=c++11`.
    Cxx,
}

/// The crate root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The committed public headers.
pub fn include_dir() -> PathBuf {
    root().join("include")
}

/// C fixtures and test programs.
pub fn c_dir() -> PathBuf {
    root().join("tests").join("c")
}

/// A scratch directory for compiled programs, kept after the run for debugging.
pub fn tmp_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c");
    std::fs::create_dir_all(&dir).expect("create CARGO_TARGET_TMPDIR/c");
    dir
}

/// The directory holding the `libmmxa.so` built with this test binary.
///
/// Cargo builds the cdylib into `target/<profile>/deps` (next to the test binary) and copies
/// it to `target/<profile>`; either is the same build.
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a parent directory");
    for dir in [Some(deps), deps.parent()].into_iter().flatten() {
        if dir.join("libmmxa.so").is_file() {
            return dir.to_path_buf();
        }
    }
    panic!("libmmxa.so not found in {} or its parent", deps.display());
}

/// Programs linked with `-lmmxa` record the library's soname, `libmmxa.so.0` (build.rs), and
/// load that name at run time; cargo only writes `libmmxa.so`. Makes the symlink `ldconfig` (or
/// `make install`) would, next to the library in `dir`.
pub fn soname_link(dir: &Path) {
    let link = dir.join("libmmxa.so.0");
    if link.symlink_metadata().is_ok() {
        return;
    }
    match std::os::unix::fs::symlink("libmmxa.so", &link) {
        Ok(()) => {}
        // Another test binary made it meanwhile.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => panic!("cannot create {}: {e}", link.display()),
    }
}

/// Linker flags for `libmmxa.so`, with an rpath so the program runs without `LD_LIBRARY_PATH`.
///
/// `--disable-new-dtags` writes DT_RPATH, which wins over `LD_LIBRARY_PATH`: `cargo test` sets
/// that to a list where a stale `target/<profile>/libmmxa.so` can come first.
pub fn mmxa_link_flags() -> Vec<String> {
    let dir = lib_dir();
    soname_link(&dir);
    vec![
        format!("-L{}", dir.display()),
        "-lmmxa".to_owned(),
        format!("-Wl,-rpath,{}", dir.display()),
        "-Wl,--disable-new-dtags".to_owned(),
    ]
}

/// Writes a translation unit into the scratch directory and returns its path.
pub fn write_source(name: &str, text: &str) -> PathBuf {
    let path = tmp_dir().join(name);
    std::fs::write(&path, text).expect("write test source");
    path
}

/// Compiles `sources` into `out` with `include/` and `tests/c/` on the include path.
///
/// `extra` comes after the sources, so it may hold `-c`, `-D...` as well as libraries
/// (`-ldl`, `-lpthread`, [`mmxa_link_flags`]). Returns the compiler's output on failure.
pub fn compile(lang: Lang, sources: &[&Path], out: &Path, extra: &[String]) -> Result<(), String> {
    let (compiler, std_flags): (&str, &[&str]) = match lang {
        Lang::C => ("cc", &["-std=c99", "-pedantic"]),
        Lang::Cxx => ("c++", &["-std=c++11"]),
    };
    let mut cmd = Command::new(compiler);
    cmd.args(std_flags)
        .args(["-Wall", "-Wextra", "-Werror", "-g"])
        .arg("-I")
        .arg(include_dir())
        .arg("-I")
        .arg(c_dir())
        .args(sources)
        .args(extra)
        .arg("-o")
        .arg(out);
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed:\n{}", describe(&output)))
    }
}

/// [`compile`] for C sources.
pub fn compile_c(sources: &[&Path], out: &Path, extra: &[String]) -> Result<(), String> {
    compile(Lang::C, sources, out, extra)
}

/// Compiles `sources` into the program `name` linked against `libmmxa.so` and returns its path;
/// panics with the compiler's output on failure.
#[track_caller]
pub fn build_program(lang: Lang, name: &str, sources: &[&Path], extra: &[String]) -> PathBuf {
    let out = tmp_dir().join(name);
    let mut flags = extra.to_vec();
    flags.extend(mmxa_link_flags());
    if let Err(e) = compile(lang, sources, &out, &flags) {
        panic!("{e}");
    }
    out
}

/// Runs a program and returns its output.
pub fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

/// Runs a program and panics, showing its output, unless it exits with status 0.
#[track_caller]
pub fn run_ok(bin: &Path, args: &[&str]) -> Output {
    let output = run(bin, args);
    assert!(
        output.status.success(),
        "{} {args:?} failed:\n{}",
        bin.display(),
        describe(&output)
    );
    output
}

/// Exit status (or signal), stdout and stderr, for failure messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
