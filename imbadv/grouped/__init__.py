"""Grouped computation, torch-free at the top: same-shape models trained, attacked and selected
together. groups: the sweep's training groups (torch-free); jobs: a job's share of a group through
the store; train, adversarial, select: one fused step for K members; stacked: K models as one."""
