/* coordinator/cli/commands.h: the subcommands of `consort` (coordinator/cli/main.c).
 * Each takes argc/argv starting at the command name (argv[0] = "generate")
 * and returns the process exit status: 0 ok, 1 runtime failure, 2 usage. */
#ifndef CONSORT_COMMANDS_H
#define CONSORT_COMMANDS_H

#include "common/version.h"

int cmd_generate(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_run(int argc, char **argv);
int ev_cmd_ppl(int argc, char **argv); /* cmd_ppl.c */
int ev_cmd_ab(int argc, char **argv);  /* cmd_ab.c */

#endif
