"""Where a claimed job's runner process runs. `local`: a child process on this machine."""
