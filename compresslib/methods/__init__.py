"""Compression methods, one module per paper."""
