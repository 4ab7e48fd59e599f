//! Packaging: the soname, and the top-level Makefile's `make install` as a C programmer uses it.
//!
//! `make install` runs without cargo here (`CARGO=true`, `RUST_OUT=` the libraries this test was
//! built with): a nested cargo build would wait for the build lock `cargo test` holds. Into a
//! temporary PREFIX it must install the versioned library and its two symlinks, the static
//! library, the headers, the adapters and `mmxa.pc`; then `cc prog.c $(pkg-config --cflags --libs
//! mmxa)` must build a program that runs against the installed library, an installed adapter
//! must find the library through its `$ORIGIN` runpath, and `pkg-config --static` must be enough
//! to link `libmmxa.a`. DESTDIR staging is checked too.

mod common;

use common::{describe, lib_dir, root};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tool_available(name: &str, arg: &str) -> bool {
    Command::new(name)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[track_caller]
fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed:\n{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `make install` (or another target) with the test's libraries and a private build directory.
fn make(target: &str, tmp: &Path, vars: &[(&str, &Path)]) -> Output {
    // The Makefile leaves an existing soname link alone; tests running in parallel must not
    // replace it under each other.
    common::soname_link(&lib_dir());
    let mut cmd = Command::new("make");
    cmd.arg("-C")
        .arg(root())
        .arg(target)
        .arg("CARGO=true")
        .arg(format!("RUST_OUT={}", lib_dir().display()))
        .arg(format!(
            "BIN_OUT={}",
            Path::new(env!("CARGO_BIN_EXE_mmxa"))
                .parent()
                .expect("the tool's directory")
                .display()
        ))
        .arg(format!("BUILD={}", tmp.join("build").display()));
    for (k, v) in vars {
        cmd.arg(format!("{k}={}", v.display()));
    }
    cmd.output().expect("run make")
}

const PROG: &str = r#"
#include <stdio.h>
#include <string.h>
#include "xa.h"
#include "mmxa.h"

int main(int argc, char **argv)
{
    char info[256], buf[16];
    size_t len = 0;
    XID x;
    struct xa_switch_t *sw = mmxa_get_xa_switch();
    if (argc != 2)
        return 2;
    snprintf(info, sizeof info, "dir=%s", argv[1]);
    memset(&x, 0, sizeof x);
    x.formatID = 1;
    x.gtrid_length = 1;
    x.bqual_length = 1;
    memcpy(x.data, "gb", 2);
    if (sw->xa_open_entry(info, 0, TMNOFLAGS) != XA_OK ||
        sw->xa_start_entry(&x, 0, TMNOFLAGS) != XA_OK ||
        mmxa_put(0, "k", 1, "installed", 9) != MMXA_OK ||
        sw->xa_end_entry(&x, 0, TMSUCCESS) != XA_OK ||
        sw->xa_commit_entry(&x, 0, TMONEPHASE) != XA_OK ||
        mmxa_get(0, "k", 1, buf, sizeof buf, &len) != MMXA_OK ||
        sw->xa_close_entry("", 0, TMNOFLAGS) != XA_OK) {
        printf("failed: %s\n", mmxa_last_error());
        return 1;
    }
    printf("value=%.*s switch=%s\n", (int)len, buf, sw->name);
    return 0;
}
"#;

const ADAPTER_PROBE: &str = r#"
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

struct xa_switch_head { char name[32]; long flags; };

int main(int argc, char **argv)
{
    void *h;
    struct xa_switch_head *(*get)(void);
    if (argc != 3)
        return 2;
    h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        printf("dlopen: %s\n", dlerror());
        return 1;
    }
    *(void **)(&get) = dlsym(h, argv[2]);
    if (get == NULL)
        return 1;
    printf("name=%s flags=%ld\n", get()->name, get()->flags);
    return 0;
}
"#;

/// Runs `sh -c script` in `dir` with `PKG_CONFIG_PATH` and no inherited `LD_LIBRARY_PATH`
/// (cargo's points at the build tree).
fn sh(script: &str, dir: &Path, pkgconfig: &Path, ld_path: Option<&Path>) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("PKG_CONFIG_PATH", pkgconfig)
        .env_remove("PKG_CONFIG_LIBDIR")
        .env_remove("LD_LIBRARY_PATH");
    if let Some(p) = ld_path {
        cmd.env("LD_LIBRARY_PATH", p);
    }
    cmd.output().expect("run sh")
}

#[test]
fn library_has_the_versioned_soname() {
    let Ok(out) = Command::new("readelf")
        .arg("-d")
        .arg(lib_dir().join("libmmxa.so"))
        .output()
    else {
        eprintln!("note: readelf is not installed; skipping library_has_the_versioned_soname");
        return;
    };
    let text = ok(out, "readelf -d libmmxa.so");
    assert!(
        text.contains("Library soname: [libmmxa.so.0]"),
        "no soname libmmxa.so.0:\n{text}"
    );
}

#[test]
fn make_install_and_pkg_config() {
    if !tool_available("make", "--version") || !tool_available("pkg-config", "--version") {
        eprintln!(
            "note: make or pkg-config is not installed; skipping make_install_and_pkg_config"
        );
        return;
    }
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let prefix = tmp.path().join("prefix");
    ok(
        make("install", tmp.path(), &[("PREFIX", &prefix)]),
        "make install",
    );

    let lib = prefix.join("lib");
    let version = env!("CARGO_PKG_VERSION");
    let real = format!("libmmxa.so.{version}");
    assert!(lib.join(&real).is_file());
    for (link, target) in [
        ("libmmxa.so.0", real.as_str()),
        ("libmmxa.so", "libmmxa.so.0"),
    ] {
        assert_eq!(
            std::fs::read_link(lib.join(link)).unwrap(),
            PathBuf::from(target),
            "{link}"
        );
    }
    for f in [
        "lib/libmmxa.a",
        "lib/libmmxa_lixa.so",
        "lib/libmmxa_lixa_dynamic.so",
        "lib/libmmxa_ndrx.so",
        "lib/libmmxa_ndrx_dynamic.so",
        "lib/pkgconfig/mmxa.pc",
        "lib/pkgconfig/mmxa-rpath.pc",
        "include/mmxa/xa.h",
        "include/mmxa/mmxa.h",
        "bin/mmxa",
    ] {
        assert!(prefix.join(f).is_file(), "{f} not installed");
    }
    let help = Command::new(prefix.join("bin/mmxa"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("usage: mmxa"));
    let v = Command::new(prefix.join("bin/mmxa"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&v.stdout),
        format!("mmxa {}\n", env!("CARGO_PKG_VERSION"))
    );

    let pkgconfig = lib.join("pkgconfig");
    let modversion = ok(
        sh("pkg-config --modversion mmxa", tmp.path(), &pkgconfig, None),
        "pkg-config --modversion",
    );
    assert_eq!(modversion.trim(), version);

    // Dynamic: exactly the command a C programmer types.
    std::fs::write(tmp.path().join("prog.c"), PROG).unwrap();
    ok(
        sh(
            "cc -Wall -Wextra -Werror prog.c $(pkg-config --cflags --libs mmxa) -o prog",
            tmp.path(),
            &pkgconfig,
            None,
        ),
        "cc prog.c $(pkg-config --cflags --libs mmxa)",
    );
    let out = ok(
        sh("./prog data-dyn", tmp.path(), &pkgconfig, Some(&lib)),
        "prog (shared)",
    );
    assert_eq!(out.trim(), "value=installed switch=mmxa");
    let ldd = ok(
        sh("ldd ./prog", tmp.path(), &pkgconfig, Some(&lib)),
        "ldd prog",
    );
    let lib_real = std::fs::canonicalize(&lib).unwrap();
    assert!(
        ldd.contains(&format!(
            "libmmxa.so.0 => {}",
            lib.join("libmmxa.so.0").display()
        )) || ldd.contains(&format!(
            "libmmxa.so.0 => {}",
            lib_real.join("libmmxa.so.0").display()
        )),
        "prog does not use the installed library:\n{ldd}"
    );

    // mmxa-rpath: the program finds the library in libdir on its own (no LD_LIBRARY_PATH).
    let rpath_libs = ok(
        sh("pkg-config --libs mmxa-rpath", tmp.path(), &pkgconfig, None),
        "pkg-config --libs mmxa-rpath",
    );
    assert!(
        rpath_libs.contains(&format!("-Wl,-rpath,{}", lib.display()))
            && rpath_libs.contains("-lmmxa"),
        "{rpath_libs}"
    );
    ok(
        sh(
            "cc -Wall -Wextra -Werror prog.c $(pkg-config --cflags --libs mmxa-rpath) -o prog-rpath",
            tmp.path(),
            &pkgconfig,
            None,
        ),
        "cc prog.c $(pkg-config --cflags --libs mmxa-rpath)",
    );
    let out = ok(
        sh("./prog-rpath data-rpath", tmp.path(), &pkgconfig, None),
        "prog-rpath without LD_LIBRARY_PATH",
    );
    assert_eq!(out.trim(), "value=installed switch=mmxa");
    if let Ok(out) = Command::new("readelf")
        .arg("-d")
        .arg(tmp.path().join("prog-rpath"))
        .output()
    {
        let text = ok(out, "readelf -d prog-rpath");
        assert!(
            text.contains(&format!("path: [{}]", lib.display())),
            "no run-time path to {} in prog-rpath:\n{text}",
            lib.display()
        );
    }

    // Static: libmmxa.a plus the system libraries pkg-config --static lists.
    ok(
        sh(
            "cc prog.c $(pkg-config --cflags mmxa) -o prog-static \"$(pkg-config \
             --variable=libdir mmxa)/libmmxa.a\" $(pkg-config --static --libs mmxa | \
             sed 's/-lmmxa//')",
            tmp.path(),
            &pkgconfig,
            None,
        ),
        "static link with pkg-config --static",
    );
    let out = ok(
        sh("./prog-static data-static", tmp.path(), &pkgconfig, None),
        "prog-static",
    );
    assert_eq!(out.trim(), "value=installed switch=mmxa");

    // An installed adapter finds libmmxa.so.0 next to itself ($ORIGIN), with no search path.
    std::fs::write(tmp.path().join("probe.c"), ADAPTER_PROBE).unwrap();
    ok(
        sh("cc probe.c -o probe -ldl", tmp.path(), &pkgconfig, None),
        "cc probe.c",
    );
    for (so, getter, flags) in [
        ("libmmxa_lixa.so", "lixa_get_xa_switch", 0),
        ("libmmxa_lixa_dynamic.so", "lixa_get_xa_switch", 1),
        ("libmmxa_ndrx.so", "ndrx_get_xa_switch", 0),
        ("libmmxa_ndrx_dynamic.so", "ndrx_get_xa_switch", 1),
    ] {
        let script = format!("./probe {} {getter}", lib.join(so).display());
        let out = ok(sh(&script, tmp.path(), &pkgconfig, None), &script);
        assert_eq!(out.trim(), format!("name=mmxa flags={flags}"), "{so}");
    }

    ok(
        make("uninstall", tmp.path(), &[("PREFIX", &prefix)]),
        "make uninstall",
    );
    let left: Vec<_> = walk(&prefix);
    assert!(
        left.is_empty(),
        "make uninstall left files behind: {left:?}"
    );
}

/// The adapters `make` leaves in its build directory load on their own, as installed ones do:
/// a process that has loaded nothing of mmxa (and has no search path) `dlopen`s each with
/// `RTLD_NOW` and calls its getter, as LIXA's `lixar` or an Enduro/X server does. Their runpath
/// is `$ORIGIN` alone, so no build-tree path is installed with them.
#[test]
fn build_tree_adapters_load_on_their_own() {
    if !tool_available("make", "--version") {
        eprintln!("note: make is not installed; skipping build_tree_adapters_load_on_their_own");
        return;
    }
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    ok(make("adapters", tmp.path(), &[]), "make adapters");
    let build = tmp.path().join("build");
    std::fs::write(tmp.path().join("probe.c"), ADAPTER_PROBE).unwrap();
    ok(
        sh("cc probe.c -o probe -ldl", tmp.path(), tmp.path(), None),
        "cc probe.c",
    );
    for (so, getter, flags) in [
        ("libmmxa_lixa.so", "lixa_get_xa_switch", 0),
        ("libmmxa_lixa_dynamic.so", "lixa_get_xa_switch", 1),
        ("libmmxa_ndrx.so", "ndrx_get_xa_switch", 0),
        ("libmmxa_ndrx_dynamic.so", "ndrx_get_xa_switch", 1),
    ] {
        let script = format!("./probe {} {getter}", build.join(so).display());
        let out = ok(sh(&script, tmp.path(), tmp.path(), None), &script);
        assert_eq!(out.trim(), format!("name=mmxa flags={flags}"), "{so}");
        if let Ok(out) = Command::new("readelf")
            .arg("-d")
            .arg(build.join(so))
            .output()
        {
            let text = ok(out, "readelf -d");
            assert!(text.contains("path: [$ORIGIN]"), "{so}:\n{text}");
        }
    }
}

/// Regular files and symlinks under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn make_install_honours_destdir() {
    if !tool_available("make", "--version") {
        eprintln!("note: make is not installed; skipping make_install_honours_destdir");
        return;
    }
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let stage = tmp.path().join("stage");
    ok(
        make(
            "install",
            tmp.path(),
            &[("DESTDIR", &stage), ("PREFIX", Path::new("/opt/mmxa"))],
        ),
        "make install DESTDIR=",
    );
    let pc = std::fs::read_to_string(stage.join("opt/mmxa/lib/pkgconfig/mmxa.pc")).unwrap();
    assert!(pc.contains("prefix=/opt/mmxa\n"), "{pc}");
    assert!(pc.contains("libdir=${prefix}/lib\n"), "{pc}");
    assert!(pc.contains("Cflags: -I${includedir}/mmxa"), "{pc}");
    assert!(!pc.contains(&stage.display().to_string()), "{pc}");
    assert!(stage.join("opt/mmxa/include/mmxa/mmxa.h").is_file());
    assert_eq!(
        std::fs::read_link(stage.join("opt/mmxa/lib/libmmxa.so")).unwrap(),
        PathBuf::from("libmmxa.so.0")
    );
}

/// The debug-information sections of `file` (of every member, for an archive), by `readelf -S`.
/// `.debug_gdb_scripts` is not debug information (it names pretty-printer scripts) and stays.
fn debug_sections(file: &Path) -> Vec<String> {
    let out = Command::new("readelf")
        .args(["-S", "-W"])
        .arg(file)
        .output()
        .expect("run readelf");
    let text = ok(out, &format!("readelf -S {}", file.display()));
    let mut names: Vec<String> = text
        .split_whitespace()
        .filter(|w| w.starts_with(".debug_") && *w != ".debug_gdb_scripts")
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `make install` strips what it installs (the shared library, the static library, the
/// adapters and the tool) of their debug information; `STRIP=` keeps it. The installed files
/// still work: the tool runs, the library keeps its exported symbols.
#[test]
fn make_install_strips_unless_asked_not_to() {
    if !tool_available("make", "--version")
        || !tool_available("strip", "--version")
        || !tool_available("readelf", "--version")
    {
        eprintln!("note: make, strip or readelf is missing; skipping make_install_strips_unless_asked_not_to");
        return;
    }
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let files = [
        format!("usr/lib/libmmxa.so.{version}"),
        "usr/lib/libmmxa.a".to_owned(),
        "usr/lib/libmmxa_ndrx.so".to_owned(),
        "usr/bin/mmxa".to_owned(),
    ];
    let mut sizes = Vec::new();
    for (stage, strip) in [("stripped", None), ("unstripped", Some(""))] {
        let dest = tmp.path().join(stage);
        let mut vars: Vec<(&str, &Path)> = vec![("DESTDIR", &dest), ("PREFIX", Path::new("/usr"))];
        if let Some(s) = strip {
            vars.push(("STRIP", Path::new(s)));
        }
        ok(
            make("install", tmp.path(), &vars),
            &format!("make install ({stage})"),
        );
        for f in &files {
            let path = dest.join(f);
            let size = std::fs::metadata(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .len();
            let debug = debug_sections(&path);
            if strip.is_none() {
                assert!(debug.is_empty(), "{f} installed with {debug:?}");
            } else {
                assert!(
                    debug.contains(&".debug_info".to_owned()),
                    "{f} ({stage}): {debug:?}"
                );
            }
            sizes.push((stage, f.clone(), size));
        }
        let v = Command::new(dest.join("usr/bin/mmxa"))
            .arg("--version")
            .output()
            .unwrap();
        assert!(
            v.status.success(),
            "{stage} mmxa --version: {}",
            describe(&v)
        );
        let syms = Command::new("readelf")
            .args(["--dyn-syms", "-W"])
            .arg(dest.join(&files[0]))
            .output()
            .unwrap();
        let syms = ok(syms, "readelf --dyn-syms");
        for sym in ["mmxa_switch", "mmxa_put", "mmxa_version"] {
            assert!(syms.contains(sym), "{stage}: {sym} not exported");
        }
    }
    for (stage, f, size) in &sizes {
        eprintln!("{stage:>10} {f:<32} {size:>10} bytes");
    }
    for f in &files {
        let size = |stage: &str| sizes.iter().find(|s| s.0 == stage && &s.1 == f).unwrap().2;
        assert!(size("stripped") < size("unstripped"), "{f}: {sizes:?}");
    }
}
