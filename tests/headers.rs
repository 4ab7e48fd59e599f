//! The public C headers: committed copies match the Rust sources, they compile as C99 and
//! C++11 (twice included, next to a monitor's own xa.h), and their layouts and values match the
//! XA reference and the switch exported by libmmxa.so.

mod common;

use common::{compile, include_dir, run_ok, tmp_dir, Lang};
use std::path::{Path, PathBuf};

const HEADERS: [&str; 2] = ["xa.h", "mmxa.h"];

/// build.rs writes fresh headers to OUT_DIR on every build but leaves include/ alone under CI,
/// so a header changed in Rust and not regenerated, or edited by hand, shows up here.
#[test]
fn committed_headers_match_rust_sources() {
    let fresh_dir = Path::new(env!("OUT_DIR"));
    for name in HEADERS {
        let committed = include_dir().join(name);
        let fresh = fresh_dir.join(name);
        let fresh_bytes = std::fs::read(&fresh)
            .unwrap_or_else(|e| panic!("build.rs did not generate {}: {e}", fresh.display()));
        let committed_bytes = std::fs::read(&committed).unwrap_or_default();
        assert!(
            committed_bytes == fresh_bytes,
            "include/{name} differs from the header generated from the Rust sources ({}).\n\
             Run `cargo build` (without CI set) to regenerate include/, then commit include/.",
            fresh.display()
        );
    }
}

/// Compiles `text` as a translation unit into an object file; panics with the compiler output.
#[track_caller]
fn compile_tu(lang: Lang, name: &str, text: &str) {
    let ext = match lang {
        Lang::C => "c",
        Lang::Cxx => "cpp",
    };
    let src = common::write_source(&format!("{name}.{ext}"), text);
    let obj = tmp_dir().join(format!("{name}.{ext}.o"));
    if let Err(e) = compile(lang, &[&src], &obj, &["-c".to_owned()]) {
        panic!("{e}");
    }
}

/// Uses every kind of declaration, so an incomplete or wrong one fails to compile.
const USE_BOTH: &str = r#"
#include "xa.h"
#include "mmxa.h"
#include "xa.h"
#include "mmxa.h"

int probe(void);
int probe(void)
{
    XID xid;
    struct xa_switch_t *sw = mmxa_get_xa_switch();
    char buf[8];
    size_t len = 0;
    const char *msg;
    xid.formatID = NULLXID;
    xid.gtrid_length = MAXGTRIDSIZE;
    xid.bqual_length = MAXBQUALSIZE;
    xid.data[0] = 0;
    if (sw != &mmxa_switch || sw->xa_start_entry(&xid, 0, TMNOFLAGS | TMJOIN) != XA_OK)
        return XAER_PROTO;
    if (mmxa_put(0, "k", 1, "v", 1) != MMXA_OK || mmxa_delete(0, "k", 1) != MMXA_OK)
        return XA_RBEND;
    msg = mmxa_strerror(mmxa_get(0, "k", 1, buf, sizeof buf, &len));
    return msg[0] + mmxa_last_error()[0] + RMNAMESZ + MMXA_MAX_KEY + MMXA_MAX_VALUE / 1024 +
           (int)len;
}
"#;

#[test]
fn headers_compile_as_c99_included_twice() {
    compile_tu(Lang::C, "use_both", USE_BOTH);
}

#[test]
fn headers_compile_as_cxx11_included_twice() {
    compile_tu(Lang::Cxx, "use_both", USE_BOTH);
}

/// mmxa.h on its own: the data API needs no xa.h, and mmxa.h defines no XA name.
const MMXA_ALONE: &str = r#"
#include "mmxa.h"
#include "mmxa.h"

#if defined(XA_H) || defined(XIDDATASIZE) || defined(RMNAMESZ) || defined(NULLXID) || \
    defined(TMNOFLAGS) || defined(TMASYNC) || defined(XA_OK) || defined(XA_RBBASE) || \
    defined(XAER_RMERR)
#error "mmxa.h must not define any xa.h name"
#endif

int probe(void);
int probe(void)
{
    size_t len;
    if (mmxa_get_xa_switch() != &mmxa_switch)
        return MMXA_EINTERNAL;
    return mmxa_get(0, "k", 1, NULL, 0, &len);
}
"#;

#[test]
fn mmxa_h_compiles_without_xa_h() {
    compile_tu(Lang::C, "mmxa_alone", MMXA_ALONE);
    compile_tu(Lang::Cxx, "mmxa_alone", MMXA_ALONE);
}

/// A monitor includes its own xa.h (own guard, `L` suffixes) and mmxa.h, in either order.
fn with_monitor_xa_h(monitor_first: bool) -> String {
    let includes = if monitor_first {
        "#include \"monitor_xa.h\"\n#include \"mmxa.h\"\n"
    } else {
        "#include \"mmxa.h\"\n#include \"monitor_xa.h\"\n"
    };
    format!(
        "{includes}{includes}{}",
        r#"
int probe(void);
int probe(void)
{
    XID xid;
    struct xa_switch_t *sw = &mmxa_switch;
    xid.formatID = NULLXID;
    if (sw != mmxa_get_xa_switch() || sw->version != 0)
        return XAER_RMERR;
    if (sw->xa_end_entry(&xid, 0, TMSUSPEND | TMMIGRATE) != XA_OK)
        return XAER_PROTO;
    return mmxa_delete(0, "k", 1) == MMXA_OK ? XA_OK : XA_RBBASE+1;
}
"#
    )
}

#[test]
fn mmxa_h_compiles_next_to_a_monitors_xa_h() {
    for (lang, tag) in [(Lang::C, "c"), (Lang::Cxx, "cxx")] {
        compile_tu(
            lang,
            &format!("monitor_first_{tag}"),
            &with_monitor_xa_h(true),
        );
        compile_tu(
            lang,
            &format!("mmxa_first_{tag}"),
            &with_monitor_xa_h(false),
        );
    }
}

#[track_caller]
fn abi_layout(name: &str, extra: &[&str]) {
    let src: PathBuf = common::c_dir().join("abi_layout.c");
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let bin = common::build_program(Lang::C, name, &[&src], &extra);
    let out = run_ok(&bin, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("all checks passed"),
        "unexpected output: {stdout}"
    );
}

/// Sizes, offsets and constant values of include/xa.h, and the exported switch.
#[test]
fn abi_layout_of_xa_h_and_exported_switch() {
    abi_layout("abi_layout", &[]);
}

/// The same checks through a monitor's own xa.h: both definitions describe one layout.
#[test]
fn abi_layout_of_a_monitors_xa_h_matches() {
    abi_layout("abi_layout_monitor", &["-DUSE_MONITOR_XA_H"]);
}
