"""Settings field for the LLM's memory budget: the value, and how the model is held under it
(mode, budget, resident bytes, bytes read per token), worked out off the GUI thread."""

from __future__ import annotations

import threading

from mneme.app.qt import QLabel, QLineEdit, QVBoxLayout, QWidget, Signal


class LlmMemoryField(QWidget):
    report_ready = Signal(str)

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.edit = QLineEdit(config["llm_memory_budget"], placeholderText="auto, 50% or 1.5G")
        self.edit.setToolTip("Memory the answer model may use: a size (1.5G), a share of RAM (50%) "
                             "or auto. A model larger than this streams its weights from the file.")
        self.status = QLabel("…", wordWrap=True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit)
        layout.addWidget(self.status)
        self.report_ready.connect(self.status.setText)
        self.refresh()

    def apply(self, config) -> None:
        """Validates and sets the value (BadInputError names what is wrong); the caller saves."""
        config.set("llm_memory_budget", self.edit.text().strip() or "auto")

    def refresh(self) -> None:
        def work():
            from mneme.models.registry import describe_memory, memory_report

            try:
                text = describe_memory(memory_report(self.config))
            except Exception as exc:  # noqa: BLE001 - shown, not raised: the field stays usable
                text = f"cannot tell how the model would be held: {exc}"
            self.report_ready.emit(text)

        threading.Thread(target=work, name="mneme-llm-memory", daemon=True).start()
