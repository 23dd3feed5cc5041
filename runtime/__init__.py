"""OCI runtime driving: run a prepared bundle with runc and report how it ended.

types.py (the seam: Runtime/Task/Process, IOSpec, ExitStatus), runc.py + runc_cli.py (runc),
stdio.py (pipes, console socket), reaper.py (subreaper, pidfds), cgroups.py (stats, OOM,
freezer), bundle.py (bundle layout), fake.py + fake_programs.py (FakeRuntime for tests).
Imports nothing from the project but engine.errdefs and storage.jsonfile.
"""
