"""Which character n-grams decide a text's class: explanations for seed 004's character CNN (``char-cnn``).

Two readings of one decision, both for the log-odds of the predicted class, log(p / (1 - p)), which unlike
the probability does not flatten out for a confident decision:

- n-grams: each convolution channel keeps only its strongest window (max over time), so the decision rests
  on the windows that win a channel. A channel's share is its pooled value times the gradient of the
  log-odds with respect to it (exact for a linear head, first order through the MLP); a window's score
  is the sum over the channels it wins. Positive scores push towards the predicted class.
- characters: integrated gradients (captum) on the embeddings, from the all-boundary input (an empty text) to
  the text; each character's attributions sum over its embedding, and all of them add up to the change of the
  log-odds up to ``attribution_delta``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # no screen here or on most servers; must precede pyplot
import matplotlib.pyplot as plt
import torch
from captum.attr import LayerIntegratedGradients
from torch import nn

from convscope.data.modalities.text import Vocabulary
from convscope.errors import UserError
from convscope.explain.figures import save_figure
from convscope.models.charcnn import CharWindows

if TYPE_CHECKING:
    from convscope.run import LoadedRun

NGRAMS_SHOWN = 5  # per text, in the printed line and the figure
IG_STEPS = 64


def explain_texts(run: LoadedRun, texts: list[str], out: Path | None = None) -> list[dict[str, Any]]:
    """For each text: its encoding, predicted class and probabilities, the n-grams that won the max-pool
    ranked by their share of the decision, and per-character integrated gradients. Prints one line per text
    and, with ``out``, draws the figure there."""
    model = run.model
    if not isinstance(getattr(model, "features", None), CharWindows):
        raise UserError(
            f"text explanations read the character windows of a 'char-cnn'; this run's model is "
            f"{run.recipe.model.name!r}"
        )
    tokens = run.modality.load_inputs(run.recipe, run.info, texts, run.device)
    probs, scores = window_scores(model, tokens)
    predicted = probs.argmax(dim=1)
    characters, delta = character_attributions(model, tokens, predicted)
    vocabulary, context = Vocabulary(run.info["vocabulary"]), model.features.context
    results = []
    for i, text in enumerate(texts):
        encoded = vocabulary.decode(tokens[i])
        length = int((tokens[i, 1:] != 0).sum())  # characters kept (the padding and start token are 0)
        ngrams = [
            {"ngram": encoded[t : t + context], "start": t, "score": score}
            for t, score in enumerate(scores[i].tolist())
            if score != 0.0
        ]
        results.append(
            {
                "text": text,
                "encoded": encoded,
                "predicted": run.classes[int(predicted[i])],
                "probabilities": dict(zip(run.classes, probs[i].tolist(), strict=True)),
                "ngrams": sorted(ngrams, key=lambda g: g["score"], reverse=True),
                "characters": [
                    {"character": encoded[t], "attribution": value}
                    for t, value in enumerate(characters[i, 1 : length + 1].tolist(), start=1)
                ],
                "attribution_delta": float(delta[i]),
            }
        )
    for result in results:
        shown = "  ".join(f"{g['ngram']!r} {g['score']:+.2f}" for g in result["ngrams"][:NGRAMS_SHOWN])
        p = result["probabilities"][result["predicted"]]
        print(f"{result['text']}: {result['predicted']} (p={p:.3f}); n-grams: {shown}")
    if out is not None:
        draw_text_explanations(results, Path(out))
        print(f"written: {out}")
    return results


def log_odds(logits: torch.Tensor) -> torch.Tensor:
    """log(p_k / (1 - p_k)) for every class k: its logit minus the log-sum-exp of the other logits."""
    n = logits.shape[1]
    itself = torch.eye(n, dtype=torch.bool, device=logits.device)
    others = logits.unsqueeze(1).expand(-1, n, -1).masked_fill(itself, float("-inf"))
    return logits - others.logsumexp(dim=2)


def window_scores(model: nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities N x classes, window scores N x windows) for each text's predicted class."""
    with torch.enable_grad():
        pooled, winner = model.features.windows(tokens).detach().max(dim=2)  # each channel's best window
        pooled.requires_grad_(True)
        logits = model.head(pooled).float()
        chosen = log_odds(logits).gather(1, logits.argmax(dim=1, keepdim=True)).sum()
        (gradient,) = torch.autograd.grad(chosen, pooled)
    share = pooled.detach() * gradient  # a channel at 0 (no window fired) has no share
    windows = tokens.shape[1] - model.features.context + 1
    scores = torch.zeros(len(tokens), windows, device=tokens.device).scatter_add_(1, winner, share)
    return logits.detach().softmax(dim=1).cpu(), scores.cpu()


def character_attributions(
    model: nn.Module, tokens: torch.Tensor, predicted: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrated gradients per token position (N x L) and the convergence delta (N), against the all-boundary
    baseline; the boundary and padding positions equal the baseline, so they get none."""
    ig = LayerIntegratedGradients(lambda x: log_odds(model(x).float()), model.features.embedding)
    with torch.enable_grad():
        attributions, delta = ig.attribute(
            tokens, baselines=torch.zeros_like(tokens), target=predicted, n_steps=IG_STEPS,
            return_convergence_delta=True,
        )  # fmt: skip
    return attributions.sum(dim=2).detach().cpu(), delta.detach().cpu()


def draw_text_explanations(results: list[dict[str, Any]], out: Path) -> None:
    """One row per text: its characters coloured by attribution (red: towards the predicted class, blue:
    against it), and the n-grams with the largest shares of the decision."""
    fig, axes = plt.subplots(len(results), 2, figsize=(11, 1.3 * len(results) + 0.6), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 2]})  # fmt: skip
    width = max(len(result["characters"]) for result in results)  # one cell per character in every row
    for (chars_ax, ngram_ax), result in zip(axes, results, strict=True):
        values = [c["attribution"] for c in result["characters"]]
        scale = max(max(map(abs, values), default=0.0), 1e-8)
        chars_ax.imshow([values], cmap="RdBu_r", vmin=-scale, vmax=scale, aspect="auto")
        for x, (c, value) in enumerate(zip(result["characters"], values, strict=True)):
            colour = "white" if abs(value) > 0.6 * scale else "black"  # readable on the darkest cells
            chars_ax.text(x, 0, c["character"], ha="center", va="center", fontsize=12, family="monospace",
                          color=colour)  # fmt: skip
        chars_ax.set_xlim(-0.5, width - 0.5)
        chars_ax.set_xticks([])
        chars_ax.set_yticks([])
        p = result["probabilities"][result["predicted"]]
        chars_ax.set_title(f"{result['text']!r}: {result['predicted']} (p={p:.3f})", fontsize=10, loc="left")
        top = result["ngrams"][:NGRAMS_SHOWN][::-1]
        ngram_ax.barh(range(len(top)), [g["score"] for g in top],
                      color=["tab:red" if g["score"] > 0 else "tab:blue" for g in top])  # fmt: skip
        ngram_ax.set_yticks(range(len(top)), [repr(g["ngram"]) for g in top], family="monospace")
        ngram_ax.axvline(0, color="black", linewidth=0.5)
        ngram_ax.set_title("n-grams that won the max-pool: share of the log-odds", fontsize=9)
    fig.suptitle("characters: integrated gradients of the log-odds (red: towards the predicted class, blue: "
                 "against)", fontsize=9)  # fmt: skip
    fig.tight_layout()
    save_figure(fig, out, dpi=120)
