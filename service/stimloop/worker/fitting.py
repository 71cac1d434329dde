"""From a recording's trials and cached activations to fitted readouts (the between-phase fit).

The shell around ``service.science``: it matches trial stimulus ids to activation rows, applies
the inclusion criteria, fits the included channels together and writes the results.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass

from stimloop_contract.configs import AnalysisConfig

from stimloop.science.metrics import fit_flag
from stimloop.science.readout import FittedReadout, ReadoutConfig, fit_readouts, make_split
from stimloop.science.responses import (
    ChannelInclusion,
    InclusionConfig,
    ResponseTable,
    Trials,
    include_channels,
    response_table,
)
from stimloop.storage.activations import Activations


@dataclass
class FitResult:
    """Inclusion verdicts for every channel, and readouts for the included ones (or None)."""

    table: ResponseTable
    inclusion: list[ChannelInclusion]
    readout: FittedReadout | None

    @property
    def included(self) -> list[str]:
        return [v.channel for v in self.inclusion if v.included]


def fit_recording(
    activations: Activations,
    trials: Trials,
    *,
    silhouettes: Activations | None = None,
    inclusion: InclusionConfig = InclusionConfig(),
    readout: ReadoutConfig = ReadoutConfig(),
    seed: int = 0,
    device: str = "cpu",
    progress: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FitResult:
    """Inclusion criteria on every channel, then one batched fit of the included ones.

    Bodies are the stimuli in ``trials``, in the activation file's order; every one must have
    activations (a ``KeyError`` names the ones that do not).
    """
    shown = set(trials.stimulus)
    unknown = sorted(shown - set(activations.ids))
    if unknown:
        raise KeyError(
            f"{len(unknown)} stimuli in the trials have no activations, e.g. {unknown[:5]}"
        )
    body_ids = [i for i in activations.ids if i in shown]
    table = response_table(trials, stimuli=body_ids)
    verdicts = include_channels(table, inclusion, seed)
    included = [v.channel for v in verdicts if v.included]
    if not included:
        return FitResult(table, verdicts, None)
    maps = activations.features[activations.index(body_ids)]
    split = make_split(len(body_ids), readout.split, seed)
    sil = None
    if readout.silhouettes and silhouettes is not None:
        sil = silhouettes.features[silhouettes.index([body_ids[i] for i in split.train])]
    targets = table.mean[[table.channel_index(c) for c in included]].T
    fitted = fit_readouts(
        maps,
        targets,
        included,
        split,
        body_ids=body_ids,
        silhouette_maps=sil,
        config=readout,
        seed=seed,
        weights_sha256=activations.weights_sha256,
        device=device,
        progress=progress,
        should_stop=should_stop,
        progress_every=10,  # each report waits for the device (and touches Redis in a job)
    )
    fitted.extra["backbone"] = activations.backbone
    return FitResult(table, verdicts, fitted)


def channel_rows(result: FitResult, alpha: float = AnalysisConfig.alpha) -> list[dict[str, object]]:
    """One row per channel: inclusion statistics and p-values, the fit's metrics, and the
    fit's flag (``metrics.fit_flag``: held-out r not significantly positive at ``alpha``)."""
    rows = []
    fit = result.readout
    for verdict in result.inclusion:
        row: dict[str, object] = {
            "channel": verdict.channel,
            "included": verdict.included,
            "reason": verdict.reason,
        }
        for k in verdict.criteria:
            row[f"{k.name}_statistic"] = k.statistic
            row[f"{k.name}_p"] = k.p_value
        if fit is not None and verdict.channel in fit.channels:
            j = fit.channels.index(verdict.channel)
            row.update(mu_x=fit.mu[j, 0], mu_y=fit.mu[j, 1], best_epoch=int(fit.best_epoch[j]))
            for split in ("train", "val", "test"):
                row[f"r_{split}"] = fit.r[split][j]
                row[f"p_{split}"] = fit.p[split][j]
                row[f"mse_{split}"] = fit.loss[split][j]
            row["fit_flag"] = fit_flag(float(fit.r["test"][j]), float(fit.p["test"][j]), alpha)
        rows.append(row)
    return rows


def rows_to_csv(rows: list[dict[str, object]]) -> str:
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
