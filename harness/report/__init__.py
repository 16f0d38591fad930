"""Reports from a run directory, offline: nothing here talks to a transport or a target.

- `junit`: enrich pytest's JUnit XML with the run's metadata and `[[ATTACHMENT|path]]`
  lines, merge several hosts' reports into one, and read testcases back as `Case`s;
- `summary`: summary.md and a self-contained summary.html for a run directory;
- `rmp_map`: a PNG map of the RMP state of a guest's GPA window.

Every reader here tolerates missing and malformed files: it records a problem string
and carries on with what it could read.
"""
