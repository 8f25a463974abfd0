/* Subcommands of the thinkscale program, one file each (cmd_NAME.c).
 * Each returns the process exit status. */
#ifndef TS_COMMANDS_H
#define TS_COMMANDS_H

typedef struct ts_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv); /* argv[0] is the command name */
} ts_command;

int ts_cmd_version(int argc, char **argv);
int ts_cmd_data(int argc, char **argv);
int ts_cmd_train(int argc, char **argv);
int ts_cmd_eval(int argc, char **argv);
int ts_cmd_free_letters(int argc, char **argv);
int ts_cmd_campaign(int argc, char **argv);

#endif
