"""The application: everything a user runs (the ``steepest`` command, the main comparison job,
the seed reproductions, tasks, reports and run directories). It imports the library; the library
never imports it.

    app/cli.py        ``steepest`` entry point; app/commands/ one module per subcommand
    app/compare/      the main job (job, loop, runner, optimizers, monitor, report, sweep, data_parallel)
    app/reproduce/    one module per seed experiment; app/tasks/ charlm and mnist
    app/report/       figures and HTML; app/runs.py configs, environment capture, run directories
    app/launch.py     process-group launch for data-parallel runs (torchrun-compatible)
    app/guard.py      run-directory lock, temp-file cleanup, checked JSON reads, SIGTERM
    app/checkpoint.py the one checkpoint API (a .pt file or a DCP directory), loaded as data only
"""
