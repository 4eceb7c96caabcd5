/* coordinator/cli/cli_opts.c: the options every consort command takes
 * (--help, --version) and what they do; see commands.h. */
#include "coordinator/cli/commands.h"

const opt_spec cli_std_options[] = {OPT_HELP_SPEC, OPT_VERSION_SPEC, OPT_SPEC_END};

int cli_std_option(int id, void (*usage)(FILE *)) {
    if (id == OPT_ERROR) return 2;
    if (id == OPT_ID_HELP) {
        usage(stdout);
        return 0;
    }
    if (id == OPT_ID_VERSION) {
        printf("consort %s\n", CONSORT_VERSION);
        return 0;
    }
    return -1;
}
