/*
 * dlopen_switch.c - load libmmxa.so the way transaction monitors do, and drive one branch
 * through the switch's function pointers only.
 *
 * Monitors do not link against an RM: they read the library path and the switch name from
 * their configuration (Tuxedo's RM file, LIXA's switch file, Enduro/X's NDRX_XA_RMLIB), open
 * the library with dlopen(RTLD_NOW | RTLD_LOCAL) and look the switch up by name with dlsym.
 * This program does the same with "mmxa_switch", checks what a monitor checks (the RM name,
 * version 0, every entry point present), and then runs: xa_open, xa_recover (restart
 * recovery), xa_start, work, xa_end, xa_prepare, xa_recover, xa_commit, xa_close. The work
 * uses mmxa_put/mmxa_get, also found with dlsym: nothing here is linked against libmmxa.
 *
 * Usage: dlopen_switch [LIBMMXA_SO [DATA_DIR]]
 *   LIBMMXA_SO  path of libmmxa.so (default: MMXA_LIB, set at build time by the Makefile)
 *   DATA_DIR    the store's directory (default ./dlopen-data)
 * Exit status: 0 when every call answered as expected, 1 otherwise.
 */
#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xa.h"
#include "mmxa.h"

/* The data API's signatures, for the pointers dlsym returns. */
typedef int (*put_fn)(int, const void *, size_t, const void *, size_t);
typedef int (*get_fn)(int, const void *, size_t, void *, size_t, size_t *);
typedef const char *(*last_error_fn)(void);
typedef struct xa_switch_t *(*getter_fn)(void);

static last_error_fn last_error;

/* This example's own XID format: "MMXA" in ASCII. */
#define EXAMPLE_FORMAT_ID 0x4d4d5841L
#define RMID 0 /* LIXA numbers RMs from 0, by their position in the profile */

static const char *xa_name(int rc)
{
    switch (rc) {
    case XA_OK: return "XA_OK";
    case XA_RDONLY: return "XA_RDONLY";
    case XA_RETRY: return "XA_RETRY";
    case XAER_ASYNC: return "XAER_ASYNC";
    case XAER_RMERR: return "XAER_RMERR";
    case XAER_NOTA: return "XAER_NOTA";
    case XAER_INVAL: return "XAER_INVAL";
    case XAER_PROTO: return "XAER_PROTO";
    case XAER_RMFAIL: return "XAER_RMFAIL";
    case XAER_DUPID: return "XAER_DUPID";
    default:
        if (rc >= XA_RBBASE && rc <= XA_RBEND)
            return "XA_RB*";
        return rc > 0 ? "positive code" : "unknown XA code";
    }
}

/* Prints the call and its answer; stops the program if the answer is not `want`. */
static int expect(const char *call, int rc, int want)
{
    printf("  %-34s -> %s", call, xa_name(rc));
    if (rc != want) {
        printf("\n");
        fprintf(stderr, "dlopen_switch: %s returned %s (%d), expected %s (%d): %s\n", call,
                xa_name(rc), rc, xa_name(want), want, last_error ? last_error() : "");
        exit(1);
    }
    printf("\n");
    return rc;
}

/*
 * dlsym returns an object pointer; ISO C has no conversion from it to a function pointer, so
 * copy the bits (the POSIX-sanctioned way, and quiet under -pedantic).
 */
static void *must_dlsym(void *lib, const char *name)
{
    void *p;
    const char *err;
    dlerror();
    p = dlsym(lib, name);
    err = dlerror();
    if (err != NULL || p == NULL) {
        fprintf(stderr, "dlopen_switch: dlsym(\"%s\"): %s\n", name, err ? err : "NULL");
        exit(1);
    }
    return p;
}

#define LOAD_FN(var, lib, name)                        \
    do {                                               \
        void *p_ = must_dlsym((lib), (name));          \
        memcpy(&(var), &p_, sizeof(var));              \
    } while (0)

static int same_xid(const XID *a, const XID *b)
{
    return a->formatID == b->formatID && a->gtrid_length == b->gtrid_length &&
           a->bqual_length == b->bqual_length &&
           memcmp(a->data, b->data, (size_t)(a->gtrid_length + a->bqual_length)) == 0;
}

static void print_xid(const XID *x)
{
    long i, n = x->gtrid_length + x->bqual_length;
    printf("formatID %#lx, gtrid \"", x->formatID);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)x->data[i];
        if (i == x->gtrid_length)
            printf("\", bqual \"");
        if (c >= 0x20 && c < 0x7f)
            putchar(c);
        else
            printf("\\x%02x", c);
    }
    printf("\"");
}

/* One full recovery scan; returns how many listed XIDs equal `mine` (NULL: just print them). */
static int scan(struct xa_switch_t *sw, const XID *mine)
{
    XID xids[8];
    long flags = TMSTARTRSCAN;
    int n, i, hits = 0, total = 0;
    do {
        n = sw->xa_recover_entry(xids, 8, RMID, flags);
        if (n < 0) {
            fprintf(stderr, "dlopen_switch: xa_recover returned %s (%d): %s\n", xa_name(n), n,
                    last_error());
            exit(1);
        }
        for (i = 0; i < n; i++) {
            printf("      in doubt: ");
            print_xid(&xids[i]);
            printf("\n");
            if (mine != NULL && same_xid(&xids[i], mine))
                hits++;
            if (mine == NULL && xids[i].formatID == EXAMPLE_FORMAT_ID) {
                /* Ours, left by an earlier run that stopped after prepare. This TM logs no
                 * decisions, so by presumed abort it rolls the branch back. */
                int rc = sw->xa_rollback_entry(&xids[i], RMID, TMNOFLAGS);
                expect("xa_rollback (presumed abort)", rc, XA_OK);
            }
        }
        total += n;
        flags = TMNOFLAGS;
    } while (n == 8);
    if (total == 0)
        printf("      (nothing in doubt)\n");
    return hits;
}

int main(int argc, char **argv)
{
#ifdef MMXA_LIB
    const char *lib_path = argc > 1 ? argv[1] : MMXA_LIB;
#else
    const char *lib_path = argc > 1 ? argv[1] : NULL;
#endif
    const char *dir = argc > 2 ? argv[2] : "./dlopen-data";
    void *lib;
    struct xa_switch_t *sw;
    getter_fn getter;
    put_fn put;
    get_fn get;
    char info[MAXINFOSIZE];
    XID xid;
    static const char key[] = "greeting";
    static const char value[] = "hello from a dlopen'd resource manager";
    char buf[64];
    size_t len = 0;
    int n;

    if (lib_path == NULL || argc > 3) {
        fprintf(stderr, "usage: %s LIBMMXA_SO [DATA_DIR]\n", argv[0]);
        return 2;
    }
    n = snprintf(info, sizeof info, "dir=%s", dir);
    if (n < 0 || (size_t)n >= sizeof info) {
        fprintf(stderr, "dlopen_switch: DATA_DIR is too long for an open string\n");
        return 2;
    }

    printf("dlopen(\"%s\", RTLD_NOW | RTLD_LOCAL)\n", lib_path);
    lib = dlopen(lib_path, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        fprintf(stderr, "dlopen_switch: %s\n", dlerror());
        return 1;
    }

    /* The switch is a data symbol: dlsym's object pointer converts to it directly. */
    sw = (struct xa_switch_t *)must_dlsym(lib, "mmxa_switch");
    LOAD_FN(getter, lib, "mmxa_get_xa_switch");
    LOAD_FN(put, lib, "mmxa_put");
    LOAD_FN(get, lib, "mmxa_get");
    LOAD_FN(last_error, lib, "mmxa_last_error");

    if (memchr(sw->name, '\0', RMNAMESZ) == NULL || strcmp(sw->name, "mmxa") != 0) {
        fprintf(stderr, "dlopen_switch: the switch's name is not \"mmxa\"\n");
        return 1;
    }
    if (sw->version != 0 || getter() != sw) {
        fprintf(stderr, "dlopen_switch: version %ld (want 0), getter %s the data symbol\n",
                sw->version, getter() == sw ? "matches" : "does not match");
        return 1;
    }
    if (!sw->xa_open_entry || !sw->xa_close_entry || !sw->xa_start_entry || !sw->xa_end_entry ||
        !sw->xa_rollback_entry || !sw->xa_prepare_entry || !sw->xa_commit_entry ||
        !sw->xa_recover_entry || !sw->xa_forget_entry || !sw->xa_complete_entry) {
        fprintf(stderr, "dlopen_switch: the switch has a NULL entry point\n");
        return 1;
    }
    printf("dlsym(\"mmxa_switch\"): name \"%s\", version %ld, flags %#lx (%s%s%s%s)\n", sw->name,
           sw->version, sw->flags, sw->flags == TMNOFLAGS ? "TMNOFLAGS: static registration" : "",
           sw->flags & TMREGISTER ? " TMREGISTER" : "", sw->flags & TMNOMIGRATE ? " TMNOMIGRATE" : "",
           sw->flags & TMUSEASYNC ? " TMUSEASYNC" : "");
    printf("  mmxa_get_xa_switch() returns the same switch; all ten entry points present\n");

    printf("open string \"%s\", rmid %d\n", info, RMID);
    expect("xa_open", sw->xa_open_entry(info, RMID, TMNOFLAGS), XA_OK);

    printf("restart recovery (a TM always asks first):\n");
    scan(sw, NULL);

    memset(&xid, 0, sizeof xid);
    xid.formatID = EXAMPLE_FORMAT_ID;
    xid.gtrid_length = 17;
    xid.bqual_length = 3;
    memcpy(xid.data, "dlopen-example-tx" "rm0", 20);
    printf("one branch, XID ");
    print_xid(&xid);
    printf(":\n");
    expect("xa_start(TMNOFLAGS)", sw->xa_start_entry(&xid, RMID, TMNOFLAGS), XA_OK);
    n = put(RMID, key, strlen(key), value, strlen(value));
    if (n != MMXA_OK) {
        fprintf(stderr, "dlopen_switch: mmxa_put returned %d: %s\n", n, last_error());
        return 1;
    }
    printf("  %-34s -> MMXA_OK\n", "mmxa_put(\"greeting\") in the branch");
    expect("xa_end(TMSUCCESS)", sw->xa_end_entry(&xid, RMID, TMSUCCESS), XA_OK);
    expect("xa_prepare", sw->xa_prepare_entry(&xid, RMID, TMNOFLAGS), XA_OK);
    printf("  xa_recover(TMSTARTRSCAN) lists the prepared branch:\n");
    if (scan(sw, &xid) != 1) {
        fprintf(stderr, "dlopen_switch: the prepared branch is not listed exactly once\n");
        return 1;
    }
    expect("xa_commit(TMNOFLAGS)", sw->xa_commit_entry(&xid, RMID, TMNOFLAGS), XA_OK);
    printf("  xa_recover after the commit:\n");
    if (scan(sw, &xid) != 0) {
        fprintf(stderr, "dlopen_switch: the committed branch is still listed\n");
        return 1;
    }

    n = get(RMID, key, strlen(key), buf, sizeof buf, &len);
    if (n != MMXA_OK || len != strlen(value) || memcmp(buf, value, len) != 0) {
        fprintf(stderr, "dlopen_switch: mmxa_get after commit returned %d: %s\n", n,
                last_error());
        return 1;
    }
    printf("committed value: greeting = \"%.*s\"\n", (int)len, buf);

    expect("xa_close", sw->xa_close_entry(info, RMID, TMNOFLAGS), XA_OK);
    if (dlclose(lib) != 0) {
        fprintf(stderr, "dlopen_switch: dlclose: %s\n", dlerror());
        return 1;
    }
    printf("dlclose: done\n");
    return 0;
}
