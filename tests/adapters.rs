//! The monitor adapters in `adapters/`: the LIXA switch file (`lixa_get_xa_switch`) and the
//! Enduro/X driver (`ndrx_get_xa_switch`), each built for `mmxa_switch` and, with
//! `-DMMXA_ADAPTER_DYNAMIC`, for `mmxa_switch_dynamic`.
//!
//! `tests/c/adapter_host.c`, linked against libmmxa.so like an application, dlopens an adapter
//! the way its monitor does (LIXA `RTLD_LAZY|RTLD_LOCAL`, Enduro/X `RTLD_NOW`), drives a branch
//! through the switch it returns, and reads the branch's write with its own `mmxa_get`: one copy
//! of mmxa in the process. Three dlopen/dlclose rounds per adapter.

mod common;

use common::{build_program, compile_c, describe, mmxa_link_flags, root, run, tmp_dir, Lang};
use std::path::{Path, PathBuf};

/// Builds `adapters/<source>` as the shared object `name`.
fn build_adapter(source: &str, name: &str, dynamic: bool) -> PathBuf {
    let out = tmp_dir().join(name);
    let mut flags = vec!["-shared".to_owned(), "-fPIC".to_owned()];
    if dynamic {
        flags.push("-DMMXA_ADAPTER_DYNAMIC".to_owned());
    }
    flags.extend(mmxa_link_flags());
    if let Err(e) = compile_c(&[&root().join("adapters").join(source)], &out, &flags) {
        panic!("{e}");
    }
    out
}

#[track_caller]
fn host_runs(adapter: &Path, getter: &str, monitor: &str, variant: &str) {
    let host = build_program(
        Lang::C,
        &format!("adapter_host_{monitor}_{variant}"),
        &[&common::c_dir().join("adapter_host.c")],
        &["-ldl".to_owned()],
    );
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .expect("tempdir");
    let data = dir.path().join("data");
    let out = run(
        &host,
        &[
            adapter.to_str().unwrap(),
            getter,
            monitor,
            variant,
            data.to_str().unwrap(),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("all checks passed"),
        "{}",
        describe(&out)
    );
    assert_eq!(text.matches(" done").count(), 3, "{}", describe(&out));
}

#[test]
fn lixa_switch_file_static() {
    let so = build_adapter("lixa_switch.c", "libmmxa_lixa.so", false);
    host_runs(&so, "lixa_get_xa_switch", "lixa", "static");
}

#[test]
fn lixa_switch_file_dynamic() {
    let so = build_adapter("lixa_switch.c", "libmmxa_lixa_dynamic.so", true);
    host_runs(&so, "lixa_get_xa_switch", "lixa", "dynamic");
}

#[test]
fn ndrx_driver_static() {
    let so = build_adapter("ndrx_switch.c", "libmmxa_ndrx.so", false);
    host_runs(&so, "ndrx_get_xa_switch", "ndrx", "static");
}

#[test]
fn ndrx_driver_dynamic() {
    let so = build_adapter("ndrx_switch.c", "libmmxa_ndrx_dynamic.so", true);
    host_runs(&so, "ndrx_get_xa_switch", "ndrx", "dynamic");
}

/// The adapters export their getter and nothing of mmxa's: the symbols stay in libmmxa.so, so
/// there is only one definition to bind to.
#[test]
fn adapters_export_only_their_getter() {
    let so = build_adapter("lixa_switch.c", "libmmxa_lixa_symbols.so", false);
    let Ok(out) = std::process::Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&so)
        .output()
    else {
        eprintln!("note: nm is not installed; skipping adapters_export_only_their_getter");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(" T lixa_get_xa_switch"), "{text}");
    assert!(!text.contains("mmxa_"), "{text}");
    let needed = std::process::Command::new("readelf")
        .args(["-d"])
        .arg(&so)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !needed.is_empty() {
        assert!(needed.contains("[libmmxa.so.0]"), "{needed}");
    }
}
