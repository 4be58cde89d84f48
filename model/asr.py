"""The ASR branch: encoder on the frozen front end + CTC head + attention decoder.

Its targets are "<sentiment> transcript", so the encoder learns both tone
and words; after this stage the encoder is frozen and reused by the
classifier, and the decoder is only needed to produce transcripts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ModelConfig
from model.layers import BiLSTMStack, DecoderLayer, TransformerStack, sinusoidal_positions
from model.tokenizer import BOS, EOS, PAD


def build_asr_encoder(cfg: ModelConfig) -> nn.Module:
    if cfg.asr_encoder == "transformer":
        return TransformerStack(cfg.asr_layers, cfg.d_model, cfg.heads, cfg.ffn_mult, cfg.dropout)
    if cfg.asr_encoder == "lstm":
        return BiLSTMStack(cfg.asr_layers, cfg.d_model, cfg.dropout)
    raise ValueError(f"unknown asr_encoder {cfg.asr_encoder!r}; expected 'transformer' or 'lstm'")


class AttentionDecoder(nn.Module):
    def __init__(self, vocab_size: int, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.embed = nn.Embedding(vocab_size, d, padding_idx=PAD)
        self.layers = nn.ModuleList(DecoderLayer(d, cfg.heads, cfg.ffn_mult, cfg.dropout)
                                    for _ in range(cfg.decoder_layers))
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, vocab_size)
        self.scale = d ** 0.5

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor, mem_mask: torch.Tensor) -> torch.Tensor:
        """tokens [B, L] (teacher forcing input) -> logits [B, L, V]."""
        y = self.embed(tokens) * self.scale
        y = y + sinusoidal_positions(y.shape[1], y.shape[2], y.device, y.dtype)
        tgt_mask = tokens != PAD
        tgt_mask[:, 0] = True
        for layer in self.layers:
            y = layer(y, tgt_mask, memory, mem_mask)
        return self.out(self.norm(y))


class ASRModel(nn.Module):
    def __init__(self, cfg: ModelConfig, in_dim: int, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        d = cfg.d_model
        self.proj = nn.Linear(in_dim, d) if in_dim != d else nn.Identity()
        self.encoder = build_asr_encoder(cfg)
        self.ctc_head = nn.Linear(d, vocab_size)
        self.decoder = AttentionDecoder(vocab_size, cfg)

    def encode(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.proj(h), mask)

    def loss(self, enc: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """tokens: [B, L] padded with <pad>, each row <bos> <sentiment> chars <eos>.

        CTC predicts the rows without <bos>/<eos> from every encoder frame; the
        decoder predicts each next token. Loss = w * CTC + (1 - w) * CE.
        """
        cfg = self.cfg
        tok_len = (tokens != PAD).sum(1)
        # CTC: drop <bos> and <eos>; blank = <pad>
        ctc_tgt = tokens[:, 1:].clone()
        ctc_tgt[ctc_tgt == EOS] = PAD
        ctc_len = tok_len - 2
        logp = F.log_softmax(self.ctc_head(enc).float(), dim=-1).transpose(0, 1)
        ctc = F.ctc_loss(logp, ctc_tgt, mask.sum(1), ctc_len, blank=PAD, reduction="mean", zero_infinity=True)
        dec_in = tokens[:, :-1].clone()
        dec_in[dec_in == EOS] = PAD
        logits = self.decoder(dec_in, enc, mask)
        target = tokens[:, 1:]
        att = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1),
                              ignore_index=PAD, label_smoothing=cfg.label_smoothing)
        with torch.no_grad():
            valid = target != PAD
            acc = ((logits.argmax(-1) == target) & valid).sum() / valid.sum().clamp(min=1)
            sent_acc = (logits[:, 0].argmax(-1) == target[:, 0]).float().mean()
        loss = cfg.ctc_weight * ctc + (1 - cfg.ctc_weight) * att
        return {"loss": loss, "ctc": ctc.detach(), "att": att.detach(), "token_acc": acc, "sentiment_acc": sent_acc}

    @torch.no_grad()
    def greedy_decode(self, enc: torch.Tensor, mask: torch.Tensor, sentiment_ids: list[int],
                      max_len: int | None = None) -> list[list[int]]:
        """Autoregressive greedy decoding; the first step is restricted to the sentiment tokens."""
        max_len = max_len or self.cfg.max_text_len
        b = enc.shape[0]
        tokens = torch.full((b, 1), BOS, dtype=torch.long, device=enc.device)
        done = torch.zeros(b, dtype=torch.bool, device=enc.device)
        restrict = torch.full((self.vocab_size,), float("-inf"), device=enc.device)
        restrict[sentiment_ids] = 0.0
        for step in range(max_len + 1):
            logits = self.decoder(tokens, enc, mask)[:, -1].float()
            if step == 0:
                logits = logits + restrict
            nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            done |= nxt == EOS
            if bool(done.all()):
                break
        return [row[1:].tolist() for row in tokens]

    @torch.no_grad()
    def beam_decode(self, enc: torch.Tensor, mask: torch.Tensor, sentiment_ids: list[int],
                    beam: int = 3, max_len: int | None = None) -> list[list[int]]:
        """Small beam search, one utterance at a time (length-normalised log-probabilities)."""
        max_len = max_len or self.cfg.max_text_len
        results = []
        for i in range(enc.shape[0]):
            e, m = enc[i:i + 1], mask[i:i + 1]
            hyps = [([BOS], 0.0)]
            finished: list[tuple[list[int], float]] = []
            for step in range(max_len + 1):
                seqs = torch.tensor([h for h, _ in hyps], device=enc.device)
                logp = F.log_softmax(self.decoder(seqs, e.expand(len(hyps), -1, -1),
                                                  m.expand(len(hyps), -1))[:, -1].float(), -1)
                if step == 0:
                    allowed = torch.full_like(logp, float("-inf"))
                    allowed[:, sentiment_ids] = 0.0
                    logp = logp + allowed
                cand = []
                top = logp.topk(beam, dim=-1)
                for j, (seq, score) in enumerate(hyps):
                    for lp, tok in zip(top.values[j].tolist(), top.indices[j].tolist()):
                        cand.append((seq + [tok], score + lp))
                cand.sort(key=lambda c: c[1], reverse=True)
                hyps = []
                for seq, score in cand:
                    if seq[-1] == EOS:
                        finished.append((seq, score / len(seq)))
                    elif len(hyps) < beam:
                        hyps.append((seq, score))
                if not hyps or len(finished) >= beam:
                    break
            if not finished:
                finished = [(s, sc / len(s)) for s, sc in hyps]
            best = max(finished, key=lambda c: c[1])[0]
            results.append(best[1:])
        return results
