/* coordinator/cli/commands.h: the subcommands of `consort` (coordinator/cli/main.c).
 * Each takes argc/argv starting at the command name (argv[0] = "generate")
 * and returns the process exit status: 0 ok, 1 runtime failure, 2 usage. */
#ifndef CONSORT_COMMANDS_H
#define CONSORT_COMMANDS_H

#include "common/opt.h"
#include "common/version.h"

#include <stdio.h>

int cmd_generate(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_run(int argc, char **argv);
int ev_cmd_ppl(int argc, char **argv); /* cmd_ppl.c */
int ev_cmd_ab(int argc, char **argv);  /* cmd_ab.c */


/* --help and --version, which every command lists in its option tables. */
extern const opt_spec cli_std_options[];

/* For an id from opt_next: OPT_ERROR gives 2 (the message is printed),
 * --help prints usage on stdout and gives 0, --version prints
 * "consort VERSION" and gives 0; any other id gives -1 (go on). */
int cli_std_option(int id, void (*usage)(FILE *));

#endif
