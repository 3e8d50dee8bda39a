"""imbadv: how class imbalance changes a CNN's vulnerability to adversarial examples."""

__version__ = "0.1.0"
