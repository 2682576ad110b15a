"""Corpus readers and makers (TIMIT layout)."""
