"""What a text-level evaluation is about to cost, said before it starts.

The attack sets are the part of a text-level evaluation that grows with the user's input: each
prompt is embedded by the base encoder (unless cached) and by the aligned one, and that is most
of the time (measured on ``sage eval minilm`` with a 20,000-row attack CSV and
``attack_samples=null``: 399 of 480 s embedding the attack prompts, 28 s the bootstrap). Past
:data:`LARGE` prompts, the evaluator says how many and about how long before it starts, from one
batch it times on this machine, and shows a progress bar for each set.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from ..encoders import TextEncoder

__all__ = ["LARGE", "attack_workload"]

#: Attack prompts in all above which the size and the expected time are said first (the
#: defaults embed 2 x 128; a thousand more add well under a minute on a laptop CPU).
LARGE = 1_000


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def attack_workload(base: TextEncoder, attacks: Mapping[str, Sequence[str]], *, uncached: Sequence[str],
                    attack_samples: int | None, batch_size: int) -> str | None:
    """One line for a large evaluation (None below :data:`LARGE` prompts): the size of each
    attack set and the expected time of embedding them, timed on one batch of the largest set.

    ``uncached``: the sets whose base embeddings are not cached yet (embedded twice).
    """
    total = sum(len(p) for p in attacks.values())
    if total <= LARGE:
        return None
    largest = max(attacks.values(), key=len)
    sample = list(largest[:min(batch_size, 64)])
    start = time.perf_counter()
    base.embed_pooled(sample, batch_size=batch_size)
    per_prompt = (time.perf_counter() - start) / len(sample)
    embeds = total + sum(len(attacks[name]) for name in uncached)
    sizes = ", ".join(f"'{name}' {len(p):,}" for name, p in attacks.items())
    taken = ("every prompt (attack_samples=null)" if attack_samples is None
             else f"up to attack_samples={attack_samples:,} a set")
    return (f"attack sets: {sizes} prompts, {total:,} in all ({taken}); embedding them "
            f"({embeds:,} encoder passes) takes about {_duration(per_prompt * embeds)} here "
            f"({per_prompt * 1e3:.1f} ms a prompt, timed on {len(sample)}); "
            "--set attack_samples=N evaluates a seeded sample of N a set")
