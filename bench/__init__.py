"""The benchmark of the job (issue 6): ``python -m bench``; see ``bench/README.md``."""
