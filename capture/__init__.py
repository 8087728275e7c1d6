"""What flows into memory: screen capture, OCR, redaction and chat importers."""
