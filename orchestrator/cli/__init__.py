"""The command line: the command table, what a person sees in the terminal, and machine checks."""
