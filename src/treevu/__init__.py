"""Treevü Engage: real-time notifications and financial-wellness segmentation."""

__version__ = "0.1.0"
