/*
 * A monitor-style host for the adapters in adapters/ (LIXA switch file, Enduro/X driver).
 *
 * The program is linked against libmmxa.so, as an application that calls the data API is. Like
 * the monitor, it dlopens the adapter (LIXA: RTLD_LAZY|RTLD_LOCAL, as GModule does; Enduro/X:
 * RTLD_NOW), calls its getter and drives a branch through the switch it returns. In the same
 * thread, the program's own mmxa_put and mmxa_get (reached through its link, not the adapter)
 * must work in that branch: proof that the adapter and the program share one copy of mmxa.
 * Then the adapter is dlclosed, and everything is repeated: earlier rounds' commits are still
 * there.
 *
 * Usage: adapter_host ADAPTER.so GETTER lixa|ndrx static|dynamic DATA_DIR
 * With "dynamic" the getter must return mmxa_switch_dynamic; its xa_open must fail with
 * XAER_RMERR, since this program exports no ax_reg.
 * Exit status 0 when every check passed.
 */
#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xa.h"
#include "mmxa.h"

#define RMID 7
#define ROUNDS 3

static int failures;

#define CHK(call, want)                                                                        \
    do {                                                                                       \
        long got_ = (long)(call);                                                              \
        long want_ = (long)(want);                                                             \
        if (got_ != want_) {                                                                   \
            printf("%s:%d: %s: got %ld, expected %ld (mmxa_last_error: \"%s\")\n", __FILE__, \
                   __LINE__, #call, got_, want_, mmxa_last_error());                           \
            failures++;                                                                        \
        }                                                                                      \
    } while (0)

typedef struct xa_switch_t *(*getter_fn)(void);

/* MMXA_OK with the value `want`, or the code (99: a different value). */
static int get_is(const char *k, const char *want)
{
    char buf[64];
    size_t len = 0;
    int rc = mmxa_get(RMID, k, strlen(k), buf, sizeof buf, &len);
    if (rc == MMXA_OK && (len != strlen(want) || memcmp(buf, want, len) != 0))
        return 99;
    return rc;
}

static void round_static(struct xa_switch_t *sw, char *info, int round)
{
    XID x;
    char key[16], value[16];
    int r;
    memset(&x, 0, sizeof x);
    x.formatID = 0x4d4d5841;
    x.gtrid_length = 6;
    x.bqual_length = 1;
    snprintf(x.data, sizeof x.data, "round%dB", round);
    snprintf(key, sizeof key, "key%d", round);
    snprintf(value, sizeof value, "value%d", round);

    CHK(sw->xa_open_entry(info, RMID, TMNOFLAGS), XA_OK);
    CHK(sw->xa_start_entry(&x, RMID, TMNOFLAGS), XA_OK);
    /* The program's own data calls act in the branch the adapter's switch started. */
    CHK(mmxa_put(RMID, key, strlen(key), value, strlen(value)), MMXA_OK);
    CHK(get_is(key, value), MMXA_OK);
    CHK(sw->xa_end_entry(&x, RMID, TMSUCCESS), XA_OK);
    CHK(sw->xa_prepare_entry(&x, RMID, TMNOFLAGS), XA_OK);
    CHK(sw->xa_commit_entry(&x, RMID, TMNOFLAGS), XA_OK);
    for (r = 0; r <= round; r++) {
        snprintf(key, sizeof key, "key%d", r);
        snprintf(value, sizeof value, "value%d", r);
        CHK(get_is(key, value), MMXA_OK);
    }
    /* Every other round unloads without xa_close, as LIXA does after failures; the store stays
     * open in the program's copy, which is the same copy. */
    if (round % 2 == 0)
        CHK(sw->xa_close_entry("", RMID, TMNOFLAGS), XA_OK);
}

int main(int argc, char **argv)
{
    char info[300];
    int mode, round, dynamic;
    if (argc != 6) {
        fprintf(stderr, "usage: %s ADAPTER.so GETTER lixa|ndrx static|dynamic DATA_DIR\n",
                argv[0]);
        return 2;
    }
    alarm(60);
    setvbuf(stdout, NULL, _IONBF, 0);
    mode = strcmp(argv[3], "lixa") == 0 ? RTLD_LAZY | RTLD_LOCAL : RTLD_NOW;
    dynamic = strcmp(argv[4], "dynamic") == 0;
    snprintf(info, sizeof info, "dir=%s;segment_mb=4", argv[5]);

    for (round = 0; round < ROUNDS; round++) {
        void *h = dlopen(argv[1], mode);
        getter_fn get;
        struct xa_switch_t *sw;
        if (h == NULL) {
            printf("dlopen(%s): %s\n", argv[1], dlerror());
            return 1;
        }
        *(void **)(&get) = dlsym(h, argv[2]);
        if (get == NULL) {
            printf("dlsym(%s): %s\n", argv[2], dlerror());
            return 1;
        }
        sw = get();
        /* The very object the program is linked to: one copy of mmxa in the process. */
        CHK(sw == (dynamic ? &mmxa_switch_dynamic : &mmxa_switch), 1);
        CHK(strcmp(sw->name, "mmxa"), 0);
        CHK(sw->flags, dynamic ? TMREGISTER : TMNOFLAGS);
        if (dynamic) {
            CHK(sw->xa_open_entry(info, RMID, TMNOFLAGS), XAER_RMERR);
            CHK(strstr(mmxa_last_error(), "ax_reg") != NULL, 1);
        } else {
            round_static(sw, info, round);
        }
        CHK(dlclose(h), 0);
        printf("round %d: %s via %s (%s) done\n", round, argv[4], argv[2], argv[3]);
    }
    /* The program's copy is still loaded: through its own switch, every round's commit. */
    if (!dynamic) {
        CHK(mmxa_switch.xa_open_entry(info, RMID, TMNOFLAGS), XA_OK);
        CHK(get_is("key0", "value0"), MMXA_OK);
        CHK(get_is("key2", "value2"), MMXA_OK);
        CHK(mmxa_switch.xa_close_entry("", RMID, TMNOFLAGS), XA_OK);
    }
    printf("%d failed\n", failures);
    if (failures == 0)
        printf("all checks passed\n");
    return failures == 0 ? 0 : 1;
}
