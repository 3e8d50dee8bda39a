"""The config layer, torch-free: errors, registries, settings, gradient sources, cluster checks."""
