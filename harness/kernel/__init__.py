"""Kernel side: source tree, patches, config, build and cache."""
