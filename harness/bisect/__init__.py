"""Kernel regression bisect: steps, driver, and the report of a bisect directory."""
