/* mmxa_version() from C: a static "mmxa X.Y.Z" string, the same on every call, equal to
 * EXPECTED_VERSION (Cargo's version, passed by the test). */
#include <stdio.h>
#include <string.h>

#include "mmxa.h"

int main(void)
{
    const char *v = mmxa_version();
    if (v == NULL) {
        printf("mmxa_version() returned NULL\n");
        return 1;
    }
    printf("mmxa_version() = \"%s\"\n", v);
    if (strcmp(v, EXPECTED_VERSION) != 0) {
        printf("expected \"%s\"\n", EXPECTED_VERSION);
        return 1;
    }
    if (mmxa_version() != v) {
        printf("a second call returned another pointer\n");
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
