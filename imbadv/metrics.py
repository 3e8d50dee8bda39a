"""Metrics stage: accuracies, relative drop, confusion rows and intervals from predictions (pure numpy)."""

from __future__ import annotations

import math

import numpy as np

from imbadv.attacks import MASKING_METHODS


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes): row = true class, column = predicted class."""
    flat = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of predictions equal to the labels (NaN for no samples)."""
    y_true = np.asarray(y_true)
    return float(np.mean(y_true == np.asarray(y_pred))) if y_true.size else math.nan


def per_class_accuracy(cm: np.ndarray) -> list[float]:
    """Recall of each class from a confusion matrix (NaN for a class with no samples)."""
    totals = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return [float(v) for v in np.diag(cm) / totals]


def relative_drop(clean: float, adversarial: float) -> float:
    """(clean - adversarial) / clean: the share of the clean accuracy an attack removes (Fig. 5)."""
    return (clean - adversarial) / clean if clean > 0 else math.nan


def success_rate(y_true: np.ndarray, clean_pred: np.ndarray, adv_pred: np.ndarray) -> float:
    """Among the images classified correctly before the attack, the fraction misclassified after."""
    right = np.asarray(clean_pred) == np.asarray(y_true)
    if not right.any():
        return math.nan
    return float(np.mean(np.asarray(adv_pred)[right] != np.asarray(y_true)[right]))


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion (better than +/- 1.96 sd near 0 and 1)."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # min/max with p: rounding must not put p outside its own interval (p = 0 or 1 exactly)
    return (max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


def prediction_row(y_pred: np.ndarray, num_classes: int) -> list[int]:
    """How many of a class's images went to each predicted class (one row of the confusion matrix)."""
    return np.bincount(np.asarray(y_pred, dtype=np.int64), minlength=num_classes).tolist()


def model_summary(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict:
    """Clean accuracy of a model on the whole test set: overall, per class and the confusion matrix."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    return {
        "acc": accuracy(y_true, y_pred),
        "per_class_acc": per_class_accuracy(cm),
        "confusion": cm.tolist(),
    }


def attack_summary(
    y_true: np.ndarray, clean_pred: np.ndarray, adv_pred: np.ndarray, num_classes: int
) -> dict:
    """Target-class numbers for one attack: accuracies with intervals, drop, success, where images go."""
    n = int(np.asarray(y_true).size)
    clean, adv = accuracy(y_true, clean_pred), accuracy(y_true, adv_pred)
    adv_right = int(np.sum(np.asarray(adv_pred) == np.asarray(y_true)))
    clean_right = int(np.sum(np.asarray(clean_pred) == np.asarray(y_true)))
    return {
        "n": n,
        "clean_acc": clean,
        "clean_acc_ci95": wilson_interval(clean_right, n),
        "adv_acc": adv,
        "adv_acc_ci95": wilson_interval(adv_right, n),
        "relative_drop": relative_drop(clean, adv),
        "success_rate": success_rate(y_true, clean_pred, adv_pred),
        "clean_row": prediction_row(clean_pred, num_classes),
        "adv_row": prediction_row(adv_pred, num_classes),
    }


# RoBal (CVPR 2021, Sec. 3.3): cross-entropy PGD is fooled by the logits' scale; a margin attack
# is not. Either symptom below means the row's robustness numbers are not to be trusted.
MASKING_GAP = 0.03  # PGD-CE accuracy above the margin attack's by more than 3 points
MASKING_ZERO_GRADIENTS = 0.05  # more than 5 % of images with an all-zero input gradient


def gradient_masking(ce_acc: float | None, margin_acc: float | None, zero_fraction: float) -> bool:
    """True when PGD-CE accuracy exceeds the margin attack's by > 3 points (when both were run)
    or more than 5 % of the input gradients are exactly zero."""
    gap = ce_acc - margin_acc if ce_acc is not None and margin_acc is not None else math.nan
    return bool(gap > MASKING_GAP or zero_fraction > MASKING_ZERO_GRADIENTS)


def masking_pair(rows: list[dict], source: str, eps: float, goal: tuple) -> tuple | None:
    """(PGD-CE accuracy, PGD-margin accuracy) for one gradient source, eps and direction: each
    loss at its strongest setting, for the PGD norm (pgd, pgd_l2) where the two differ most;
    None when no PGD norm ran with both losses."""
    pairs = []
    for method in MASKING_METHODS:
        best: dict[str, float] = {}
        for r in rows:
            if (r["method"], r["source"], r["eps"], _goal(r)) == (method, source, eps, goal):
                loss = r["params"].get("loss", "ce")
                best[loss] = min(best.get(loss, math.inf), r["adv_acc"])
        if {"ce", "margin"} <= set(best):
            pairs.append((best["ce"], best["margin"]))
    return max(pairs, key=lambda p: p[0] - p[1]) if pairs else None


def _goal(row: dict) -> tuple:
    return row.get("direction"), row.get("target_class")


def flag_gradient_masking(rows: list[dict]) -> list[dict]:
    """Every attack row with `gradient_masking` (bool) and `masking_gap` (PGD-CE minus PGD-margin
    accuracy; None when PGD did not run with both losses for its source, eps and direction)."""
    out = []
    for r in rows:
        pair = masking_pair(rows, r["source"], r["eps"], _goal(r)) or (None, None)
        flag = gradient_masking(*pair, r.get("zero_grad_fraction", 0.0))
        gap = pair[0] - pair[1] if pair[0] is not None else None
        out.append({**r, "masking_gap": gap, "gradient_masking": flag})
    return out


def stratified_subset(y: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Sorted indices of `per_class` images of every class, drawn with default_rng(seed) (a class
    with fewer keeps them all); every index when `per_class` is None."""
    y = np.asarray(y)
    if per_class is None:
        return np.arange(y.size)
    rng = np.random.default_rng(seed)
    picks = [
        rng.choice(np.flatnonzero(y == c), min(per_class, int(np.sum(y == c))), replace=False)
        for c in np.unique(y)
    ]
    return np.sort(np.concatenate(picks)) if picks else np.arange(0)


def class_summary(
    y_true: np.ndarray, clean_pred: np.ndarray, adv_pred: np.ndarray, num_classes: int
) -> dict:
    """Every class measured: per-class clean and adversarial accuracy with 95 % intervals, both
    confusion matrices, the worst class under attack and balanced (mean per-class) accuracies.

    Classes without images get NaN accuracies and are left out of the worst class and the means.
    """
    clean_cm = confusion_matrix(y_true, clean_pred, num_classes)
    adv_cm = confusion_matrix(y_true, adv_pred, num_classes)
    n = clean_cm.sum(axis=1)
    per_class = [
        {
            "class": c,
            "n": int(n[c]),
            "clean_acc": float(clean_cm[c, c] / n[c]) if n[c] else math.nan,
            "clean_acc_ci95": wilson_interval(int(clean_cm[c, c]), int(n[c])),
            "adv_acc": float(adv_cm[c, c] / n[c]) if n[c] else math.nan,
            "adv_acc_ci95": wilson_interval(int(adv_cm[c, c]), int(n[c])),
        }
        for c in range(num_classes)
    ]
    seen = [row for row in per_class if row["n"]]
    worst = min(seen, key=lambda row: row["adv_acc"]) if seen else None
    return {
        "per_class": per_class,
        "clean_confusion": clean_cm.tolist(),
        "adv_confusion": adv_cm.tolist(),
        "worst_class": worst["class"] if worst else None,
        "worst_class_adv_acc": worst["adv_acc"] if worst else math.nan,
        "balanced_clean_acc": float(np.mean([r["clean_acc"] for r in seen])) if seen else math.nan,
        "balanced_adv_acc": float(np.mean([r["adv_acc"] for r in seen])) if seen else math.nan,
    }
