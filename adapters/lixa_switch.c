/*
 * LIXA switch file for mmxa.
 *
 * LIXA's client (lixac) loads the `switch_file` of each <rsrmgr> in lixac_conf.xml and calls
 * its `lixa_get_xa_switch()`. This file is that switch file: a tiny shared object linked against
 * libmmxa.so.0, so the monitor and the application (which calls mmxa_put/mmxa_get/mmxa_delete)
 * reach the same, single copy of mmxa in the process.
 *
 * Built by the top-level Makefile twice:
 *   libmmxa_lixa.so          mmxa_switch          (static registration: LIXA calls xa_start)
 *   libmmxa_lixa_dynamic.so  mmxa_switch_dynamic  (-DMMXA_ADAPTER_DYNAMIC: mmxa calls LIXA's
 *                                                  ax_reg on the first data call)
 * By hand: cc -shared -fPIC -I include adapters/lixa_switch.c -o libmmxa_lixa.so \
 *              -L target/release -lmmxa -Wl,-rpath,'$ORIGIN'
 *
 * mmxa itself does not export lixa_get_xa_switch: two resource managers in one process would
 * clash on the name.
 */
#include "mmxa.h"

struct xa_switch_t *lixa_get_xa_switch(void);

struct xa_switch_t *lixa_get_xa_switch(void)
{
#ifdef MMXA_ADAPTER_DYNAMIC
    return mmxa_get_xa_switch_dynamic();
#else
    return mmxa_get_xa_switch();
#endif
}
