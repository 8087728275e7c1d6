"""Mneme's engine: a headless library the CLI, the GUI, the local API and the tests all call.

Never imports Qt, llama_cpp, pytesseract or mss: the embedder and the LLM are handed in
(see :class:`mneme.core.memory.Memory`).
"""

from mneme.core.errors import UserError
from mneme.core.memory import Memory, open_memory
from mneme.core.records import Chunk, Hit, Message, Source

__all__ = ["Chunk", "Hit", "Memory", "Message", "Source", "UserError", "open_memory"]
