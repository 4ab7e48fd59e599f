/*
 * Enduro/X XA driver for mmxa.
 *
 * Enduro/X loads the library named by NDRX_XA_DRIVERLIB (with RTLD_NOW) and calls its
 * `ndrx_get_xa_switch()`. This file is that driver: a tiny shared object linked against
 * libmmxa.so.0, so the monitor and the application (which calls mmxa_put/mmxa_get/mmxa_delete)
 * reach the same, single copy of mmxa in the process.
 *
 * Built by the top-level Makefile twice:
 *   libmmxa_ndrx.so          mmxa_switch          (static registration)
 *   libmmxa_ndrx_dynamic.so  mmxa_switch_dynamic  (-DMMXA_ADAPTER_DYNAMIC: mmxa calls the
 *                                                  monitor's ax_reg on the first data call)
 * By hand: cc -shared -fPIC -I include adapters/ndrx_switch.c -o libmmxa_ndrx.so \
 *              -L target/release -lmmxa -Wl,-rpath,'$ORIGIN'
 *
 * mmxa itself does not export ndrx_get_xa_switch: two resource managers in one process would
 * clash on the name.
 *
 * Reconnect only on XAER_RMFAIL: NDRX_XA_FLAGS="RECON:-7:3:100". With RECON:* the monitor
 * closes and reopens the RM after any failure code of xa_start, including the XA_RB* and
 * XAER_PROTO answers that leave the thread associated (a suspended branch), and those xa_close
 * calls then fail with XAER_PROTO. XAER_RMFAIL is the one code after which mmxa needs a reopen.
 */
#include "mmxa.h"

struct xa_switch_t *ndrx_get_xa_switch(void);

struct xa_switch_t *ndrx_get_xa_switch(void)
{
#ifdef MMXA_ADAPTER_DYNAMIC
    return mmxa_get_xa_switch_dynamic();
#else
    return mmxa_get_xa_switch();
#endif
}
