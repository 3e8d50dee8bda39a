"""The config layer, torch-free, above the axes: settings, gradient sources, training groups, cluster checks."""
