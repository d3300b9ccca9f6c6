"""What a training run shows and keeps as it goes: ``log.jsonl`` (one JSON object per step and per
evaluation) and a progress bar. Rank 0 logs; on other ranks every method does nothing."""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm

__all__ = ["RunLog"]

#: Evaluation metrics the progress bar prints (when present).
SHOWN = ("loss", "concept_auc", "util_sib", "spread_ratio", "jaccard")


class RunLog:
    def __init__(self, out_dir: Path, *, lead: bool, progress: bool, total: int, initial: int, desc: str):
        self.total = total
        self._file = (out_dir / "log.jsonl").open("a", encoding="utf-8") if lead else None
        self._bar = None
        if progress and lead:
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)

    def step(self, *, step: int, epoch: int, losses: dict[str, float]) -> None:
        if self._file is not None:
            self._file.write(json.dumps({"step": step, "epoch": epoch, **losses}) + "\n")
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix({k.removeprefix("loss_") or "loss": f"{x:.4f}" for k, x in losses.items()},
                                  refresh=False)

    def evaluation(self, *, step: int, metrics: dict[str, float]) -> None:
        if self._file is not None:
            self._file.write(json.dumps({"step": step, "eval": metrics}) + "\n")
            self._file.flush()
        if self._bar is not None:
            shown = {k: metrics[k] for k in SHOWN if k in metrics}
            self._bar.write(f"step {step}/{self.total}: " + ", ".join(f"{k} {x:.4f}" for k, x in shown.items()))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._bar is not None:
            self._bar.close()
