"""The core every axis may import, torch-free: errors, the registry, plug-ins, class and seed names."""
