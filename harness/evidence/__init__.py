"""Evidence: what the kernel said during a test (dmesg slices, splats, tracepoints, RMP dumps)."""
