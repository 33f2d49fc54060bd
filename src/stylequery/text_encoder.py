"""TextEncoder: padded token ids (B, L) + lengths (B,) -> embeddings (B, D).

Word embedding, a one-layer LSTM, the LSTM output at each sequence's last real token,
dropout, then a linear projection. Id 0 is ``<UNK>`` (the vocabulary maps unknown words to it)
and is also the padding value; padding after the last real token never reaches the output
because the LSTM runs left to right and the output is read at ``length - 1``.
"""

from __future__ import annotations

import logging

from torch import Tensor, nn

logger = logging.getLogger(__name__)


class TextEncoder(nn.Module):
    """Embedding -> LSTM -> last real token -> dropout -> linear.

    Args:
        vocab_size: Number of token ids, including ``<UNK>`` (id 0).
        word_dim: Word embedding size.
        hidden_dim: LSTM hidden size.
        embed_dim: Output embedding size.
        dropout: Dropout before the output projection.
    """

    def __init__(
        self,
        vocab_size: int,
        word_dim: int = 512,
        hidden_dim: int = 512,
        embed_dim: int = 512,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, word_dim)
        self.lstm = nn.LSTM(word_dim, hidden_dim, num_layers=1, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(hidden_dim, embed_dim)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Embed padded token sequences.

        Args:
            tokens: (B, L) long token ids, padded with 0 after each sequence.
            lengths: (B,) long number of real tokens per row, 1 <= length <= L.

        Returns:
            (B, D) text embeddings, not normalised.
        """
        words = self.embedding(tokens)  # (B, L, W)
        outputs, _ = self.lstm(words)  # (B, L, H)
        # Gathering at length - 1 (rather than packing) needs no host sync on the lengths.
        last = (lengths.to(tokens.device).long() - 1).clamp(min=0)  # (B,)
        index = last.view(-1, 1, 1).expand(-1, 1, outputs.size(-1))  # (B, 1, H)
        final = outputs.gather(1, index).squeeze(1)  # (B, H)
        return self.projection(self.dropout(final))  # (B, D)
