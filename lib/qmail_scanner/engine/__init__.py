"""The resident engine: a master process and pre-forked workers behind a unix socket in the spool.

The setuid wrapper is its client. It hands qmail-smtpd's fds to a worker over the socket and
exits with the worker's answer; when the engine is not there, it runs the standalone program.
"""
